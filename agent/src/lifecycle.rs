//! Auto Scaling termination hooks: while a drain runs the hook is kept alive with heartbeats,
//! and afterwards completed with CONTINUE so the group terminates the instance without waiting
//! for the hook's timeout.

use std::time::Duration;

use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::error::DisplayErrorContext;
use spotwise_core::action::{DrainTerms, LifecycleHook};
use tokio::sync::watch;
use tracing::warn;

use crate::execute::ExecuteError;

/// Well inside the smallest heartbeat timeout Auto Scaling allows (30 s).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(20);

/// Heartbeats the drain's hook, once it has one, until dropped.
pub async fn keep_alive(client: Option<&Client>, terms: &watch::Receiver<DrainTerms>) {
    let Some(client) = client else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        let Some(hook) = terms.borrow().lifecycle_hook.clone() else {
            continue;
        };
        let sent = client
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&hook.auto_scaling_group)
            .lifecycle_hook_name(&hook.hook_name)
            .lifecycle_action_token(&hook.token)
            .instance_id(&hook.instance_id)
            .send()
            .await;
        if let Err(err) = sent {
            warn!(hook = %hook.hook_name, error = %DisplayErrorContext(&err), "lifecycle heartbeat failed");
        }
    }
}

pub async fn complete(client: &Client, hook: &LifecycleHook) -> Result<(), ExecuteError> {
    client
        .complete_lifecycle_action()
        .auto_scaling_group_name(&hook.auto_scaling_group)
        .lifecycle_hook_name(&hook.hook_name)
        .lifecycle_action_token(&hook.token)
        .instance_id(&hook.instance_id)
        .lifecycle_action_result("CONTINUE")
        .send()
        .await
        .map_err(|e| ExecuteError::Lifecycle(DisplayErrorContext(&e).to_string()))?;
    Ok(())
}

//! Under Lambda: the SQS handler. Locally also `optimizer invoke --event FILE`, and
//! `optimizer put-snapshot --tenant ID --cluster ID --file FILE`, which stores a
//! `kubectl get nodes,pods,pdb -A -o json` list as the cluster's snapshot (what the agent
//! uploads), so a cluster can be planned before its agent is installed.

use spotwise_core::config::Env;
use spotwise_core::telemetry::{self, LogSettings};
use spotwise_core::{ClusterId, TenantId};

#[tokio::main]
async fn main() -> Result<(), spotwise_lambda::Error> {
    let env = Env::process();
    telemetry::init(&LogSettings::from_env(&env));
    let config = optimizer::Config::from_env(&env)?;
    let sdk = spotwise_aws::sdk::load().await;
    let deps = optimizer::Deps::new(&sdk, &config);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("put-snapshot") {
        return put_snapshot(&deps, &args[1..]).await;
    }
    spotwise_lambda::run(|event| optimizer::handle(&deps, event)).await
}

async fn put_snapshot(
    deps: &optimizer::Deps,
    args: &[String],
) -> Result<(), spotwise_lambda::Error> {
    const USAGE: &str = "usage: optimizer put-snapshot --tenant ID --cluster ID --file FILE";
    let [flag_tenant, tenant, flag_cluster, cluster, flag_file, file] = args else {
        return Err(USAGE.into());
    };
    if flag_tenant != "--tenant" || flag_cluster != "--cluster" || flag_file != "--file" {
        return Err(USAGE.into());
    }
    let tenant = TenantId::new(tenant)?;
    let cluster = ClusterId::new(cluster)?;
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    let snapshot = spotwise_core::snapshot::parse_list(&bytes)?;
    let id = spotwise_store::snapshots::put(
        &deps.store,
        &deps.snapshots,
        &tenant,
        &cluster,
        &snapshot,
        time::OffsetDateTime::now_utc(),
    )
    .await?;
    println!(
        "{}",
        serde_json::json!({"cluster": cluster.to_string(), "snapshot_id": id,
                           "nodes": snapshot.nodes.len(), "pods": snapshot.pods.len()})
    );
    Ok(())
}

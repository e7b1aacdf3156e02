//! Installing a cluster's agent: its own FIFO action queue (readable only by the agent's role
//! in the cluster's account), the HMAC secret actions are signed with, and an agent key bound
//! to the cluster. The secret and the key are shown once, in the answer.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spotwise_core::domain::{Cluster, ClusterSecret, Principal, Role, RoleArn};
use spotwise_core::{ClusterId, TenantId};
use spotwise_store::keys;
use spotwise_store::{PutCondition, Write, accounts, actions};
use time::OffsetDateTime;
use tracing::info;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::{self, snapshot};
use crate::auth::{self, Caller};
use crate::error::{ApiError, ErrorResponse, JsonBody};
use crate::paging::PathParams;

/// Actions expire within minutes (a spot drain) to half an hour (hibernation); a day is ample.
const QUEUE_RETENTION_SECONDS: &str = "86400";
const SECRET_BYTES: usize = 32;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallInput {
    /// The IAM role the agent runs as (IRSA), in the cluster's account; only it may read the
    /// queue. Left out, only principals of the Spotwise account can.
    pub agent_role_arn: Option<String>,
    /// Issue a new secret and key for an installed agent; actions signed with the old secret
    /// are refused from then on, and the cluster's old agent keys are revoked.
    #[serde(default)]
    pub rotate: bool,
}

/// What the agent's manifest needs, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstalledAgent {
    pub cluster_id: String,
    pub queue_url: String,
    /// The `cluster-secret` of the agent's Kubernetes Secret (hex).
    pub cluster_secret: String,
    /// The `agent-key` of the agent's Kubernetes Secret.
    pub agent_key: String,
    pub key_id: String,
}

/// SQS names allow 80 characters of `[A-Za-z0-9_-]`; cluster ids are longer and have dots.
/// The tenant is part of the name: a tenant that links an account another tenant unlinked gets
/// its own queue, never the one the other tenant's agent read.
fn agent_queue_name(stage: &str, tenant: &TenantId, cluster: &ClusterId) -> String {
    let digest = Sha256::digest(format!("{tenant}#{cluster}").as_bytes());
    format!("spotwise-{stage}-agent-{}.fifo", &hex::encode(digest)[..20])
}

#[utoipa::path(post, path = "/v1/clusters/{id}/agent", tag = "clusters", params(("id" = String, Path)),
    request_body = InstallInput,
    responses((status = 201, body = InstalledAgent), (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn install(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonBody(input): JsonBody<InstallInput>,
) -> Result<(StatusCode, Json<InstalledAgent>), ApiError> {
    caller.require(Role::Admin)?;
    let cluster_key = keys::cluster(&caller.tenant, &crate::clusters::cluster_id(&id)?);
    let mut item = state
        .store
        .get::<Cluster>(&cluster_key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("cluster {id}")))?;
    let cluster = item.body.id.clone();
    let agent_role = input
        .agent_role_arn
        .as_deref()
        .map(|arn| {
            let role =
                RoleArn::parse(arn).map_err(|e| ApiError::field("agent_role_arn", e.reason))?;
            if role.account_id() != item.body.account_id {
                return Err(ApiError::field(
                    "agent_role_arn",
                    format!(
                        "the agent's role must be in the cluster's account {}",
                        item.body.account_id
                    ),
                ));
            }
            Ok(role)
        })
        .transpose()?;
    let secret_key = keys::cluster_secret(&caller.tenant, &cluster);
    let installed = state
        .store
        .get::<ClusterSecret>(&secret_key)
        .await?
        .is_some();
    if installed && !input.rotate {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_installed",
            "the cluster's agent is installed; send `rotate: true` for a new secret and key",
        ));
    }

    let queue_url = create_queue(&state, &caller.tenant, &cluster, agent_role.as_ref()).await?;
    let mut secret = [0_u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let secret_hex = hex::encode(secret);
    let now = OffsetDateTime::now_utc();
    // A rotation answers a leak: the old key goes with the old secret. A first install finds
    // none, unless keys outlived their secret.
    let revoked = accounts::agent_keys_to_revoke(
        &state.store,
        &caller.tenant,
        std::slice::from_ref(&cluster),
        now,
    )
    .await?;
    let issued = auth::issue(
        &caller.tenant,
        &format!("agent {cluster}"),
        Principal::Agent {
            cluster_id: cluster.clone(),
        },
        now,
    );
    let before = item.body.agent_queue_url.clone();
    item.body.agent_queue_url = Some(queue_url.clone());
    let secret_item = actions::secret_item(&state.vault, &caller.tenant, &cluster, &secret)
        .await
        .map_err(|e| ApiError::internal("sealing the cluster secret", &e))?;
    let mut writes = vec![
        Write::put(&secret_item, PutCondition::Always)?,
        Write::put(&auth::key_item(&issued.key), PutCondition::IfAbsent)?,
        Write::versioned(&item)?,
    ];
    for key in &revoked {
        writes.push(Write::versioned(key)?);
    }
    let revoked_ids: Vec<&str> = revoked.iter().map(|k| k.body.id.as_str()).collect();
    let entry = audit::entry(
        &caller,
        if installed {
            "cluster.agent_rotate"
        } else {
            "cluster.agent_install"
        },
        format!("cluster/{cluster}"),
        snapshot(&serde_json::json!({ "agent_queue_url": before })),
        snapshot(&serde_json::json!({
            "agent_queue_url": queue_url,
            "agent_role_arn": agent_role.as_ref().map(RoleArn::as_str),
            "key_id": issued.key.id,
            "revoked_key_ids": revoked_ids,
        })),
    )?;
    // The secret, the key, the queue on the cluster, the revocations and the audit event: all
    // or none, so an agent never holds a secret its key does not match.
    audit::commit(&state, writes, entry).await?;
    for key in &revoked {
        state.keys.forget(&key.body.id);
    }
    info!(%cluster, rotated = installed, "agent installed");
    Ok((
        StatusCode::CREATED,
        Json(InstalledAgent {
            cluster_id: cluster.to_string(),
            queue_url,
            cluster_secret: secret_hex,
            agent_key: issued.secret,
            key_id: issued.key.id,
        }),
    ))
}

/// Creates the queue, or finds it with the same attributes (CreateQueue is idempotent then),
/// and grants the agent's role what the agent calls.
async fn create_queue(
    state: &AppState,
    tenant: &TenantId,
    cluster: &ClusterId,
    agent_role: Option<&RoleArn>,
) -> Result<String, ApiError> {
    let name = agent_queue_name(&state.stage, tenant, cluster);
    let attributes = HashMap::from([
        (QueueAttributeName::FifoQueue, "true".to_owned()),
        (QueueAttributeName::VisibilityTimeout, "60".to_owned()),
        (
            QueueAttributeName::MessageRetentionPeriod,
            QUEUE_RETENTION_SECONDS.to_owned(),
        ),
        (QueueAttributeName::SqsManagedSseEnabled, "true".to_owned()),
    ]);
    let created = state
        .sqs
        .create_queue()
        .queue_name(&name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(|e| ApiError::internal("creating the agent queue", &e))?;
    let url = created
        .queue_url
        .ok_or_else(|| ApiError::internal("creating the agent queue", &"no queue URL"))?;
    if let Some(role) = agent_role {
        let arn = state
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| ApiError::internal("reading the agent queue", &e))?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .unwrap_or_default();
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "AgentReadsItsQueue",
                "Effect": "Allow",
                "Principal": {"AWS": role.as_str()},
                "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
                "Resource": arn,
            }],
        });
        state
            .sqs
            .set_queue_attributes()
            .queue_url(&url)
            .attributes(QueueAttributeName::Policy, policy.to_string())
            .send()
            .await
            .map_err(|e| ApiError::internal("granting the agent its queue", &e))?;
    }
    Ok(url)
}

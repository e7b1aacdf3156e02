//! Linking customer accounts.
//!
//! 1. [`issue_external_id`] gives the tenant a fresh ExternalId (random, ours, so a customer
//!    cannot pick one another tenant uses) to put in the role's trust policy
//!    (`infra/customer-role.yaml`).
//! 2. [`link`] assumes the role with that ExternalId, checks the identity's account is the one
//!    the ARN names, and stores the account as healthy and listed for discovery.
//! 3. [`unlink`] ends the link and revokes whatever could still act on the account's clusters,
//!    so the next tenant that links the account starts clean.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use spotwise_aws::Queue;
use spotwise_aws::cross_account::{CrossAccount, LinkError};
use spotwise_aws::queue::QueueError;
use spotwise_core::action::{ActionRecord, ActionStatus};
use spotwise_core::domain::{Account, AccountHealth, ApiKey, Cluster, Node, Principal, RoleArn};
use spotwise_core::{Classify, ClusterId, Disposition, TenantId};
use spotwise_schedule::model::ScheduledRun;
use time::OffsetDateTime;

use crate::keys::{self, Key};
use crate::table::{Item, PutCondition, Query, Store, StoreError, Write};
use crate::{actions, audit};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("no ExternalId was issued to this tenant; request one first")]
    NoExternalId,
    #[error("account {0} is already linked to this tenant")]
    AlreadyLinked(String),
    #[error("account {0} is linked by another Spotwise tenant")]
    LinkedElsewhere(String),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The ExternalId a tenant must put in its role's trust policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingExternalId {
    pub external_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

/// Returns the tenant's ExternalId, creating it on first use (audited as `actor`'s). It stays
/// the same afterwards so every role the tenant creates can use it.
pub async fn issue_external_id(
    store: &Store,
    tenant: &TenantId,
    now: OffsetDateTime,
    actor: &str,
) -> Result<String, StoreError> {
    if let Some(existing) = store
        .get::<PendingExternalId>(&keys::external_id(tenant))
        .await?
    {
        return Ok(existing.body.external_id);
    }
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let fresh = PendingExternalId {
        external_id: format!("sw-{}", hex::encode(bytes)),
        issued_at: now,
    };
    let change = audit::Change {
        action: "account.external_id",
        target: format!("tenant/{tenant}"),
        before: None,
        after: None,
    };
    let writes = vec![
        Write::put(
            &Item::new(keys::external_id(tenant), fresh.clone()),
            PutCondition::IfAbsent,
        )?,
        audit::write_of(tenant, actor, change, now)?,
    ];
    match store.transact(writes).await {
        Ok(()) => Ok(fresh.external_id),
        // Lost a race with a concurrent request: use the winner's.
        Err(StoreError::AlreadyExists { .. }) => Ok(store
            .get::<PendingExternalId>(&keys::external_id(tenant))
            .await?
            .map_or(fresh.external_id, |winner| winner.body.external_id)),
        Err(err) => Err(err),
    }
}

/// Validates and stores a link, audited as `actor`'s. Regions are those discovery will inventory.
pub async fn link(
    store: &Store,
    accounts: &CrossAccount,
    tenant: &TenantId,
    role: &RoleArn,
    regions: Vec<String>,
    now: OffsetDateTime,
    actor: &str,
) -> Result<Account, AccountError> {
    let external_id = store
        .get::<PendingExternalId>(&keys::external_id(tenant))
        .await?
        .ok_or(AccountError::NoExternalId)?
        .body
        .external_id;
    let account_id = accounts.verify_link(role, &external_id).await?;
    let account = Account {
        tenant_id: tenant.clone(),
        account_id: account_id.clone(),
        role_arn: role.clone(),
        external_id,
        regions,
        health: AccountHealth::Healthy,
        linked_at: now,
        event_forwarding: None,
    };
    claim_account(store, tenant, &account_id).await?;
    let item = Item::new(keys::account(tenant, &account_id), account.clone())
        .with_gsi1(keys::linked_accounts_index(tenant, &account_id));
    let change = audit::Change {
        action: "account.link",
        target: format!("account/{account_id}"),
        before: None,
        after: serde_json::to_value(&account).ok(),
    };
    let writes = vec![
        Write::put(&item, PutCondition::IfAbsent)?,
        audit::write_of(tenant, actor, change, now)?,
    ];
    match store.transact(writes).await {
        Ok(()) => Ok(account),
        Err(StoreError::AlreadyExists { .. }) => Err(AccountError::AlreadyLinked(account_id)),
        Err(err) => Err(err.into()),
    }
}

/// The tenant that owns an account's link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountOwner {
    pub tenant_id: TenantId,
}

/// Makes `tenant` the account's one owner; refused when another tenant is.
async fn claim_account(
    store: &Store,
    tenant: &TenantId,
    account_id: &str,
) -> Result<(), AccountError> {
    let owner = Item::new(
        keys::account_owner(account_id),
        AccountOwner {
            tenant_id: tenant.clone(),
        },
    );
    match store.put(&owner, PutCondition::IfAbsent).await {
        Ok(()) => Ok(()),
        Err(StoreError::AlreadyExists { .. }) => {
            let current = store
                .get::<AccountOwner>(&keys::account_owner(account_id))
                .await?;
            match current {
                Some(current) if &current.body.tenant_id != tenant => {
                    Err(AccountError::LinkedElsewhere(account_id.to_owned()))
                }
                _ => Ok(()),
            }
        }
        Err(err) => Err(err.into()),
    }
}

/// What unlinking an account took from the tenant, for the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Unlinked {
    pub clusters: Vec<ClusterId>,
    pub revoked_key_ids: Vec<String>,
    pub deleted_queues: usize,
    pub cancelled_actions: usize,
    pub deleted_schedules: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum UnlinkError {
    /// Hibernation has these clusters asleep, and nothing would be left to wake them.
    #[error("hibernation has {} asleep", .0.iter().map(ClusterId::as_str).collect::<Vec<_>>().join(", "))]
    Asleep(Vec<ClusterId>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl Classify for UnlinkError {
    fn disposition(&self) -> Disposition {
        match self {
            UnlinkError::Asleep(_) => Disposition::NonRetryable,
            UnlinkError::Store(e) => e.disposition(),
            UnlinkError::Queue(e) => e.disposition(),
        }
    }
}

/// Ends a tenant's link to an account and everything that acts on the account's clusters for
/// that tenant: agent keys are revoked, agent queues deleted with the actions on them, open
/// actions cancelled, schedules and hibernation removed, and the cluster partitions (secret,
/// snapshot, nodes, interruption records), the nodes' instance locations and the cluster records
/// deleted. Cost, plans, pod history and audit stay in the
/// tenant's partition as history. The account's items go last, so an unlink that fails part way
/// can be sent again. A cluster hibernation has asleep refuses the unlink
/// ([`UnlinkError::Asleep`]) unless `leave_asleep`.
pub async fn unlink(
    store: &Store,
    sqs: &aws_sdk_sqs::Client,
    tenant: &TenantId,
    account: &Item<Account>,
    now: OffsetDateTime,
    actor: &str,
    leave_asleep: bool,
) -> Result<Unlinked, UnlinkError> {
    let account_id = account.body.account_id.as_str();
    let tenant_partition = keys::tenant_partition(tenant);
    let clusters: Vec<Item<Cluster>> = store
        .query_all::<Cluster>(
            &Query::partition(&tenant_partition).prefix(keys::account_clusters_prefix(account_id)),
        )
        .await?
        .into_iter()
        .filter(|c| c.body.account_id == account_id)
        .collect();
    let ids: Vec<ClusterId> = clusters.iter().map(|c| c.body.id.clone()).collect();
    if !leave_asleep {
        let mut asleep = Vec::new();
        for cluster in &ids {
            let state = keys::hibernation_state(tenant, cluster);
            if store.get::<serde::de::IgnoredAny>(&state).await?.is_some() {
                asleep.push(cluster.clone());
            }
        }
        if !asleep.is_empty() {
            return Err(UnlinkError::Asleep(asleep));
        }
    }
    let mut unlinked = Unlinked::default();
    for key in agent_keys_to_revoke(store, tenant, &ids, now).await? {
        store.update_versioned(&key).await?;
        unlinked.revoked_key_ids.push(key.body.id);
    }
    for url in clusters
        .iter()
        .filter_map(|c| c.body.agent_queue_url.as_deref())
    {
        Queue::new(sqs.clone(), url).delete().await?;
        unlinked.deleted_queues += 1;
    }
    unlinked.cancelled_actions = cancel_open_actions(store, tenant, &ids, now).await?;

    let schedules: Vec<Key> = store
        .query_all::<ScheduledRun>(
            &Query::partition(&tenant_partition).prefix(keys::prefix::SCHEDULE),
        )
        .await?
        .into_iter()
        .filter(|s| ids.contains(&s.body.settings.cluster_id))
        .map(|s| s.key)
        .collect();
    unlinked.deleted_schedules = schedules.len();
    let mut doomed = schedules;
    for cluster in &ids {
        doomed.extend([
            keys::hibernation_schedule(tenant, cluster),
            keys::hibernation_state(tenant, cluster),
            keys::agent_status(tenant, cluster),
        ]);
        let partition = keys::cluster_partition(tenant, cluster);
        doomed.extend(
            store
                .query_all::<Node>(&Query::partition(&partition).prefix(keys::prefix::NODE))
                .await?
                .into_iter()
                .filter_map(|n| n.body.instance_id.map(|id| keys::instance(&id))),
        );
        doomed.extend(store.query_keys(&Query::partition(partition)).await?);
        doomed.extend(
            store
                .query_keys(
                    &Query::partition(&tenant_partition).prefix(keys::nodegroups_prefix(cluster)),
                )
                .await?,
        );
    }
    store.batch_delete(&doomed).await?;
    store
        .batch_delete(&clusters.iter().map(|c| c.key.clone()).collect::<Vec<_>>())
        .await?;

    unlinked.clusters = ids;
    let mut writes = vec![Write::delete(&account.key)];
    let owner = store
        .get::<AccountOwner>(&keys::account_owner(account_id))
        .await?;
    if owner.is_some_and(|o| &o.body.tenant_id == tenant) {
        writes.push(Write::delete(&keys::account_owner(account_id)));
    }
    let change = audit::Change {
        action: "account.unlink",
        target: format!("account/{account_id}"),
        before: serde_json::to_value(&account.body).ok(),
        after: serde_json::to_value(&unlinked).ok(),
    };
    writes.push(audit::write_of(tenant, actor, change, now)?);
    store.transact(writes).await?;
    Ok(unlinked)
}

/// The tenant's live agent keys bound to one of `clusters`, marked revoked at `now`; the caller
/// stores them (alone, or in a transaction with what replaces them).
pub async fn agent_keys_to_revoke(
    store: &Store,
    tenant: &TenantId,
    clusters: &[ClusterId],
    now: OffsetDateTime,
) -> Result<Vec<Item<ApiKey>>, StoreError> {
    Ok(store
        .query_all::<ApiKey>(&Query::gsi1(keys::api_keys_partition(tenant)))
        .await?
        .into_iter()
        .filter(|item| {
            item.body.revoked_at.is_none()
                && matches!(&item.body.principal,
                    Principal::Agent { cluster_id } if clusters.contains(cluster_id))
        })
        .map(|mut item| {
            item.body.revoked_at = Some(now);
            item
        })
        .collect())
}

/// Marks the queued (and undeliverable) actions of `clusters` cancelled, so an agent that
/// still holds one and asks refuses it; returns how many.
async fn cancel_open_actions(
    store: &Store,
    tenant: &TenantId,
    clusters: &[ClusterId],
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let records = store
        .query_all::<ActionRecord>(
            &Query::partition(keys::tenant_partition(tenant)).prefix(keys::prefix::ACTION),
        )
        .await?
        .into_iter()
        .filter(|a| clusters.contains(&a.body.action.cluster_id))
        .collect();
    actions::withdraw_open(
        store,
        records,
        ActionStatus::Cancelled,
        "the cluster's account was unlinked",
        now,
    )
    .await
}

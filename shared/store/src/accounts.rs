//! Linking customer accounts.
//!
//! 1. [`issue_external_id`] gives the tenant a fresh ExternalId (random, ours, so a customer
//!    cannot pick one another tenant uses) to put in the role's trust policy
//!    (`infra/customer-role.yaml`).
//! 2. [`link`] assumes the role with that ExternalId, checks the identity's account is the one
//!    the ARN names, and stores the account as healthy and listed for discovery.

use crate::keys;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use spotwise_core::TenantId;
use spotwise_core::domain::{Account, AccountHealth, RoleArn};
use time::OffsetDateTime;

use crate::table::{Item, PutCondition, Store, StoreError};
use spotwise_aws::cross_account::{CrossAccount, LinkError};

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

/// Returns the tenant's ExternalId, creating it on first use. It stays the same afterwards so
/// every role the tenant creates can use it.
pub async fn issue_external_id(
    store: &Store,
    tenant: &TenantId,
    now: OffsetDateTime,
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
    match store
        .put(
            &Item::new(keys::external_id(tenant), fresh.clone()),
            PutCondition::IfAbsent,
        )
        .await
    {
        Ok(()) => Ok(fresh.external_id),
        // Lost a race with a concurrent request: use the winner's.
        Err(StoreError::AlreadyExists { .. }) => Ok(store
            .get::<PendingExternalId>(&keys::external_id(tenant))
            .await?
            .map_or(fresh.external_id, |winner| winner.body.external_id)),
        Err(err) => Err(err),
    }
}

/// Validates and stores a link. Regions are those discovery will inventory.
pub async fn link(
    store: &Store,
    accounts: &CrossAccount,
    tenant: &TenantId,
    role: &RoleArn,
    regions: Vec<String>,
    now: OffsetDateTime,
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
    };
    claim_account(store, tenant, &account_id).await?;
    let item = Item::new(keys::account(tenant, &account_id), account.clone())
        .with_gsi1(keys::linked_accounts_index(tenant, &account_id));
    match store.put(&item, PutCondition::IfAbsent).await {
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

/// Removes a tenant's link and its claim on the account.
pub async fn unlink(store: &Store, tenant: &TenantId, account_id: &str) -> Result<(), StoreError> {
    store.delete(&keys::account(tenant, account_id)).await?;
    let owner = store
        .get::<AccountOwner>(&keys::account_owner(account_id))
        .await?;
    if owner.is_some_and(|o| &o.body.tenant_id == tenant) {
        store.delete(&keys::account_owner(account_id)).await?;
    }
    Ok(())
}

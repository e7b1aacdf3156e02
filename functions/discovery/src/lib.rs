//! Discovery: on its schedule, fans out one message per linked account onto the discovery
//! queue, so thousands of accounts are inventoried by parallel invocations instead of one long
//! sequential run.

use aws_config::SdkConfig;
use serde::{Deserialize, Serialize};
use spotwise_aws::queue::QueueError;
use spotwise_aws::store::Query;
use spotwise_aws::{Queue, Store, StoreError};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::messages::{DiscoverAccount, ScheduleTrigger};
use spotwise_core::{Classify, Disposition, TenantId, keys};
use tracing::info;

pub struct Config {
    pub common: CommonConfig,
    pub discovery_queue_url: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            discovery_queue_url: env.required("DISCOVERY_QUEUE_URL")?,
        })
    }
}

pub struct Deps {
    pub store: Store,
    pub discovery_queue: Queue,
}

impl Deps {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
            discovery_queue: Queue::new(aws_sdk_sqs::Client::new(sdk), &config.discovery_queue_url),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("listing linked accounts: {0}")]
    Store(#[from] StoreError),
    #[error("enqueueing account discovery: {0}")]
    Queue(#[from] QueueError),
}

impl Classify for DiscoveryError {
    fn disposition(&self) -> Disposition {
        match self {
            DiscoveryError::Store(e) => e.disposition(),
            DiscoveryError::Queue(e) => e.disposition(),
        }
    }
}

/// What one fan-out did.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FanOut {
    pub run_id: String,
    pub accounts: usize,
    pub enqueued: usize,
}

/// Only the fields the fan-out needs, so account schema changes never break it.
#[derive(Debug, Deserialize)]
struct LinkedAccount {
    tenant_id: TenantId,
    account_id: String,
}

pub async fn fan_out(deps: &Deps, trigger: ScheduleTrigger) -> Result<FanOut, DiscoveryError> {
    let run_id = ulid::Ulid::new().to_string();
    let linked = deps
        .store
        .query_all::<LinkedAccount>(&Query::gsi1(keys::LINKED_ACCOUNTS_PARTITION))
        .await?;
    let messages: Vec<DiscoverAccount> = linked
        .into_iter()
        .map(|item| DiscoverAccount {
            tenant_id: item.body.tenant_id,
            account_id: item.body.account_id,
            run_id: run_id.clone(),
        })
        .collect();
    let enqueued = deps.discovery_queue.send_all(&messages).await?;
    info!(%run_id, accounts = messages.len(), enqueued, scheduled_at = ?trigger.time, "discovery fan-out");
    Ok(FanOut {
        run_id,
        accounts: messages.len(),
        enqueued,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use spotwise_aws::store::{Item, PutCondition};
    use spotwise_core::domain::{Account, AccountHealth, RoleArn};
    use spotwise_testkit::LocalStack;
    use time::OffsetDateTime;

    use super::*;

    async fn deps(stack: &LocalStack) -> Deps {
        let config =
            Config::from_env(&Env::from_map(stack.function_env("DiscoveryFunction"))).unwrap();
        Deps::new(&stack.sdk_config().await, &config)
    }

    fn account(tenant: &str, id: &str) -> Item<Account> {
        let tenant_id = TenantId::new(tenant).unwrap();
        Item::new(
            keys::account(&tenant_id, id),
            Account {
                tenant_id: tenant_id.clone(),
                account_id: id.into(),
                role_arn: RoleArn::parse(&format!("arn:aws:iam::{id}:role/SpotwiseAccess"))
                    .unwrap(),
                external_id: "sw-ext-1".into(),
                regions: vec!["us-east-1".into()],
                health: AccountHealth::Healthy,
                linked_at: OffsetDateTime::UNIX_EPOCH,
            },
        )
        .with_gsi1(keys::linked_accounts_index(&tenant_id, id))
    }

    #[tokio::test]
    async fn one_message_per_linked_account() {
        let stack = LocalStack::start();
        let deps = deps(&stack).await;
        // 23 accounts: more than two SendMessageBatch calls.
        for i in 0..23 {
            let tenant = if i % 2 == 0 { "t-even" } else { "t-odd" };
            deps.store
                .put(
                    &account(tenant, &format!("{:012}", 100_000 + i)),
                    PutCondition::IfAbsent,
                )
                .await
                .unwrap();
        }
        let event: ScheduleTrigger =
            serde_json::from_str(&spotwise_testkit::fixture("events/discovery/schedule.json"))
                .unwrap();
        let result = fan_out(&deps, event).await.unwrap();
        assert_eq!((result.accounts, result.enqueued), (23, 23));

        let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config().await);
        let mut received: HashMap<String, DiscoverAccount> = HashMap::new();
        while received.len() < 23 {
            let out = sqs
                .receive_message()
                .queue_url(stack.resource("DiscoveryQueue"))
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            let batch = out.messages.unwrap_or_default();
            assert!(
                !batch.is_empty(),
                "queue ran dry after {} messages",
                received.len()
            );
            for m in batch {
                let msg: DiscoverAccount = serde_json::from_str(m.body().unwrap()).unwrap();
                assert_eq!(msg.run_id, result.run_id);
                received.insert(msg.account_id.clone(), msg);
            }
        }
        assert_eq!(received.len(), 23, "no duplicates, none missing");
        assert_eq!(received["000000100001"].tenant_id.as_str(), "t-odd");
    }

    #[tokio::test]
    async fn no_accounts_means_no_messages() {
        let stack = LocalStack::start();
        let result = fan_out(&deps(&stack).await, ScheduleTrigger::default())
            .await
            .unwrap();
        assert_eq!((result.accounts, result.enqueued), (0, 0));
    }
}

//! The DynamoDB store against the local stack's real DynamoDB endpoint.

// Test helpers outside #[test] functions may panic on setup failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spotwise_core::{ClusterId, TenantId};
use spotwise_store::keys::{self, Gsi1Key};
use spotwise_store::{Claim, Item, PutCondition, Query, Store, StoreError, Write};
use spotwise_testkit::LocalStack;
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Doc {
    name: String,
    n: u32,
    #[serde(default)]
    padding: String,
}

fn doc(name: &str, n: u32) -> Doc {
    Doc {
        name: name.into(),
        n,
        padding: String::new(),
    }
}

fn t1() -> TenantId {
    TenantId::new("t1").unwrap()
}

fn c1() -> ClusterId {
    ClusterId::new("c1").unwrap()
}

async fn store(stack: &LocalStack) -> Store {
    let sdk = stack.sdk_config().await;
    Store::new(aws_sdk_dynamodb::Client::new(&sdk), stack.table())
}

#[tokio::test]
async fn conditional_create_detects_an_existing_item() {
    let stack = LocalStack::start();
    let store = store(&stack).await;
    let item = Item::new(keys::webhook(&t1(), "1"), doc("first", 1));
    store.put(&item, PutCondition::IfAbsent).await.unwrap();

    let again = Item::new(keys::webhook(&t1(), "1"), doc("second", 2));
    let err = store.put(&again, PutCondition::IfAbsent).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { ref pk, .. } if pk == "T#t1"),
        "{err}"
    );

    let stored = store.get::<Doc>(&item.key).await.unwrap().unwrap();
    assert_eq!(
        stored.body,
        doc("first", 1),
        "the losing write must not change the item"
    );
    assert!(
        store
            .get::<Doc>(&keys::webhook(&t1(), "missing"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn optimistic_locking_rejects_a_stale_version() {
    let stack = LocalStack::start();
    let store = store(&stack).await;
    let key = keys::policy(&t1(), &c1());
    store
        .put(
            &Item::new(key.clone(), doc("v1", 1)),
            PutCondition::IfAbsent,
        )
        .await
        .unwrap();

    // Two writers read version 1.
    let mut writer_a = store.get::<Doc>(&key).await.unwrap().unwrap();
    let mut writer_b = writer_a.clone();
    assert_eq!(writer_a.version, 1);

    writer_a.body.n = 2;
    assert_eq!(store.update_versioned(&writer_a).await.unwrap(), 2);

    writer_b.body.n = 99;
    let err = store.update_versioned(&writer_b).await.unwrap_err();
    assert!(
        matches!(err, StoreError::StaleVersion { expected: 1, .. }),
        "{err}"
    );

    let current = store.get::<Doc>(&key).await.unwrap().unwrap();
    assert_eq!((current.version, current.body.n), (2, 2));

    // Updating a deleted item is a conflict too, not a silent re-create.
    store.delete(&key).await.unwrap();
    assert!(matches!(
        store.update_versioned(&current).await,
        Err(StoreError::StaleVersion { .. })
    ));
}

#[tokio::test]
async fn query_returns_every_item_across_pages() {
    let stack = LocalStack::start();
    let store = store(&stack).await;
    // 60 items of ~30 KB: 1.8 MB, more than one DynamoDB response page.
    let items: Vec<Item<Doc>> = (0..60)
        .map(|i| {
            let mut body = doc(&format!("node-{i:03}"), i);
            body.padding = "x".repeat(30_000);
            Item::new(keys::node(&t1(), &c1(), &format!("{i:03}")), body)
        })
        .collect();
    store.batch_put(&items).await.unwrap();

    let all = store
        .query_all::<Doc>(
            &Query::partition(keys::cluster_partition(&t1(), &c1())).prefix(keys::prefix::NODE),
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 60);
    let names: Vec<u32> = all.iter().map(|i| i.body.n).collect();
    assert_eq!(
        names,
        (0..60).collect::<Vec<_>>(),
        "ascending sort-key order, no gaps"
    );

    // Client-driven paging with a small limit visits every item exactly once.
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .query::<Doc>(
                &Query::partition(keys::cluster_partition(&t1(), &c1()))
                    .prefix(keys::prefix::NODE)
                    .limit(7)
                    .after(cursor),
            )
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.items.into_iter().map(|i| i.body.n));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (0..60).collect::<Vec<_>>());
    assert!(
        pages >= 9,
        "60 items at 7 per page take at least 9 pages, got {pages}"
    );

    let newest = store
        .query::<Doc>(
            &Query::partition(keys::cluster_partition(&t1(), &c1()))
                .prefix(keys::prefix::NODE)
                .limit(1)
                .newest_first(),
        )
        .await
        .unwrap();
    assert_eq!(newest.items[0].body.n, 59);
}

#[tokio::test]
async fn batch_put_writes_more_than_one_batch_and_last_duplicate_wins() {
    let stack = LocalStack::start();
    let store = store(&stack).await;
    let mut items: Vec<Item<Doc>> = (0..73)
        .map(|i| Item::new(keys::silence(&t1(), &format!("{i:03}")), doc("a", i)))
        .collect();
    items.push(Item::new(keys::silence(&t1(), "005"), doc("replaced", 5)));
    store.batch_put(&items).await.unwrap();

    let all = store
        .query_all::<Doc>(
            &Query::partition(keys::tenant_partition(&t1())).prefix(keys::prefix::SILENCE),
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 73);
    assert_eq!(all[5].body.name, "replaced");
}

#[tokio::test]
async fn idempotency_claim_blocks_the_second_claim_until_it_expires() {
    let stack = LocalStack::start();
    let store = store(&stack).await;
    let key = keys::idempotency("interruption", "7fb65329-1628-4cf3-a740-95fg457h1402");
    let now = OffsetDateTime::now_utc();
    let hold = Duration::from_secs(3600);

    assert_eq!(store.claim(&key, hold, now).await.unwrap(), Claim::Claimed);
    assert_eq!(
        store.claim(&key, hold, now).await.unwrap(),
        Claim::AlreadyClaimed
    );
    assert_eq!(
        store
            .claim(&key, hold, now + Duration::from_secs(1800))
            .await
            .unwrap(),
        Claim::AlreadyClaimed
    );
    // Past the TTL the claim is free even though DynamoDB has not swept the item yet.
    assert_eq!(
        store
            .claim(&key, hold, now + Duration::from_secs(3601))
            .await
            .unwrap(),
        Claim::Claimed
    );
}

#[tokio::test]
async fn one_tenants_keys_never_return_another_tenants_items() {
    let stack = LocalStack::start();
    let store = store(&stack).await;
    let tenant_a = TenantId::new("tenant-a").unwrap();
    let tenant_b = TenantId::new("tenant-ab").unwrap(); // shares a prefix with tenant-a on purpose
    let mut items = Vec::new();
    for i in 0..5 {
        items.push(Item::new(
            keys::account(&tenant_a, &format!("11111111111{i}")),
            doc("a", i),
        ));
        items.push(Item::new(
            keys::account(&tenant_b, &format!("22222222222{i}")),
            doc("b", i),
        ));
    }
    store.batch_put(&items).await.unwrap();

    let partition_a = keys::tenant_partition(&tenant_a);
    let listed = store
        .query_all::<Doc>(&Query::partition(&partition_a).prefix(keys::prefix::ACCOUNT))
        .await
        .unwrap();
    assert_eq!(listed.len(), 5);
    assert!(
        listed
            .iter()
            .all(|i| i.body.name == "a" && i.key.pk() == "T#tenant-a")
    );

    // A's key for B's account id does not exist: ids are scoped by tenant partition.
    assert!(
        store
            .get::<Doc>(&keys::account(&tenant_a, "222222222220"))
            .await
            .unwrap()
            .is_none()
    );

    // A cursor issued for tenant A's listing is refused on tenant B's partition.
    let page = store
        .query::<Doc>(
            &Query::partition(&partition_a)
                .prefix(keys::prefix::ACCOUNT)
                .limit(2),
        )
        .await
        .unwrap();
    let cursor = page.next.expect("more than one page");
    let err = store
        .query::<Doc>(&Query::partition(keys::tenant_partition(&tenant_b)).after(Some(cursor)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidCursor(_)), "{err}");
}

#[tokio::test]
async fn gsi1_reverse_lookup_finds_only_its_own_entries() {
    let stack = LocalStack::start();
    let store = store(&stack).await;
    let index = Gsi1Key {
        gsi1pk: "NODEACTIONS#i-0abc".into(),
        gsi1sk: "NODE".into(),
    };
    let item = Item::new(
        keys::node(&t1(), &c1(), "ip-10-0-0-1"),
        doc("ip-10-0-0-1", 1),
    )
    .with_gsi1(index.clone());
    store.put(&item, PutCondition::Always).await.unwrap();
    let other = Item::new(
        keys::node(&t1(), &c1(), "ip-10-0-0-2"),
        doc("ip-10-0-0-2", 2),
    )
    .with_gsi1(Gsi1Key {
        gsi1pk: "NODEACTIONS#i-0def".into(),
        gsi1sk: "NODE".into(),
    });
    store.put(&other, PutCondition::Always).await.unwrap();

    let found = store
        .query_all::<Doc>(&Query::gsi1(index.gsi1pk))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, item.key);
}

mod cross_account {
    use spotwise_aws::cross_account::{CrossAccount, LinkError};
    use spotwise_core::domain::RoleArn;
    use spotwise_testkit::LocalStack;

    #[tokio::test]
    async fn link_check_assumes_the_role_and_confirms_its_account() {
        let stack = LocalStack::start();
        let accounts = CrossAccount::new(stack.sdk_config().await, "spotwise-test");
        let role = RoleArn::parse("arn:aws:iam::111122223333:role/SpotwiseAccess").unwrap();
        let account = accounts.verify_link(&role, "sw-3f9c2a").await.unwrap();
        assert_eq!(account, "111122223333");

        // The cached cross-account configuration works for real calls as that account.
        let config = accounts.config_for(&role, "sw-3f9c2a").await.unwrap();
        let who = aws_sdk_sts::Client::new(&config)
            .get_caller_identity()
            .send()
            .await
            .unwrap();
        assert_eq!(who.account(), Some("111122223333"));
    }

    #[tokio::test]
    async fn link_check_reports_sts_failures() {
        let stack = LocalStack::start();
        let accounts = CrossAccount::new(stack.sdk_config().await, "spotwise-test");
        drop(stack);
        let role = RoleArn::parse("arn:aws:iam::111122223333:role/SpotwiseAccess").unwrap();
        let err = accounts.verify_link(&role, "sw-3f9c2a").await.unwrap_err();
        assert!(
            matches!(&err, LinkError::Aws(f) if f.operation == "sts:AssumeRole" && f.retryable),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_transaction_writes_everything_or_nothing_and_names_the_write_that_failed() {
    let stack = LocalStack::start();
    let store = store(&stack).await;
    let (first, second) = (keys::silence(&t1(), "a"), keys::silence(&t1(), "b"));
    store
        .put(
            &Item::new(second.clone(), doc("b", 1)),
            PutCondition::Always,
        )
        .await
        .unwrap();

    // The second put finds its item present: the first is not written either.
    let refused = store
        .transact(vec![
            Write::put(
                &Item::new(first.clone(), doc("a", 1)),
                PutCondition::IfAbsent,
            )
            .unwrap(),
            Write::put(
                &Item::new(second.clone(), doc("b", 2)),
                PutCondition::IfAbsent,
            )
            .unwrap(),
        ])
        .await;
    assert!(
        matches!(&refused, Err(StoreError::AlreadyExists { sk, .. }) if sk == second.sk()),
        "{refused:?}"
    );
    assert!(store.get::<Doc>(&first).await.unwrap().is_none());

    // A stale version is that write's StaleVersion; a current one goes through with the rest.
    let stored = store.get::<Doc>(&second).await.unwrap().unwrap();
    let mut stale = stored.clone();
    stale.version = 7;
    let refused = store
        .transact(vec![
            Write::delete(&first),
            Write::versioned(&stale).unwrap(),
        ])
        .await;
    assert!(
        matches!(refused, Err(StoreError::StaleVersion { expected: 7, .. })),
        "{refused:?}"
    );
    let mut current = stored;
    current.body.n = 3;
    store
        .transact(vec![
            Write::versioned(&current).unwrap(),
            Write::put(
                &Item::new(first.clone(), doc("a", 1)),
                PutCondition::IfAbsent,
            )
            .unwrap(),
        ])
        .await
        .unwrap();
    let after = store.get::<Doc>(&second).await.unwrap().unwrap();
    assert_eq!((after.body.n, after.version), (3, 2));
    assert!(store.get::<Doc>(&first).await.unwrap().is_some());
}

#[tokio::test]
async fn a_sealed_secret_opens_only_under_its_own_context() {
    let stack = LocalStack::start();
    let vault = spotwise_aws::Vault::new(&stack.sdk_config().await, stack.resource("SecretsKey"));
    let context = |tenant, resource| spotwise_aws::SecretContext {
        purpose: "cluster-secret",
        tenant,
        resource,
    };
    let secret = b"0123456789abcdef0123456789abcdef";
    let sealed = vault.seal(secret, context("t1", "c1")).await.unwrap();
    let stored = serde_json::to_string(&sealed).unwrap();
    assert!(
        !stored.contains(&hex::encode(secret)) && !stored.contains("0123456789abcdef"),
        "the stored form reveals nothing: {stored}"
    );
    assert_eq!(
        vault.open(&sealed, context("t1", "c1")).await.unwrap(),
        secret
    );

    // Another tenant's or another resource's item: KMS refuses the data key.
    let elsewhere =
        spotwise_aws::Vault::new(&stack.sdk_config().await, stack.resource("SecretsKey"));
    for (tenant, resource) in [("t2", "c1"), ("t1", "c2")] {
        assert!(
            elsewhere
                .open(&sealed, context(tenant, resource))
                .await
                .is_err(),
            "{tenant}/{resource}"
        );
    }
    // A changed ciphertext fails authentication.
    let mut tampered = sealed.clone();
    tampered.ciphertext.replace_range(
        0..2,
        if tampered.ciphertext.starts_with("00") {
            "01"
        } else {
            "00"
        },
    );
    assert!(matches!(
        vault.open(&tampered, context("t1", "c1")).await,
        Err(spotwise_aws::SealError::Corrupt(_))
    ));
}

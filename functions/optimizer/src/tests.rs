use aws_sdk_sqs::types::QueueAttributeName;
use spotwise_core::action::AgentAction;
use spotwise_core::domain::{NodeTemplateSpec, Notification, Pool};
use spotwise_core::snapshot::{Snapshot, SnapshotPod};
use spotwise_core::{ClusterId, TenantId};
use spotwise_optimizer::rollout::{Rollout, RolloutStatus};
use spotwise_optimizer::synth;
use spotwise_store::Item;
use spotwise_testkit::{LocalStack, fixture, records};

use super::*;

struct Setup {
    stack: LocalStack,
    stack_queue_reader: LocalStackReader,
    deps: Deps,
    tenant: TenantId,
    cluster: ClusterId,
    agent_queue: String,
}

/// Reads messages the test's agent queue received.
struct LocalStackReader {
    sqs: aws_sdk_sqs::Client,
}

impl LocalStackReader {
    async fn actions(&self, queue_url: &str) -> Vec<AgentAction> {
        let mut all = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                return all;
            }
            for m in messages {
                all.push(serde_json::from_str(m.body.as_deref().unwrap()).unwrap());
                self.sqs
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(m.receipt_handle.unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

async fn setup(mode: PolicyMode) -> Setup {
    let stack = LocalStack::start();
    let config = Config::from_env(&Env::from_map(stack.function_env("OptimizerFunction"))).unwrap();
    let sdk = stack.sdk_config().await;
    let deps = Deps::new(&sdk, &config);
    let agent_queue = deps
        .sqs
        .create_queue()
        .queue_name("spotwise-agent-prod.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let tenant = TenantId::new("t1").unwrap();
    // The cluster the sample event names.
    let cluster = ClusterId::new("111122223333.us-east-1.prod-us-east-1").unwrap();
    let record = records::cluster(&tenant, &cluster, Some(agent_queue.clone()));
    let store = &deps.store;
    store
        .put(
            &Item::new(keys::cluster(&tenant, &cluster), record),
            PutCondition::IfAbsent,
        )
        .await
        .unwrap();
    let policy = Policy {
        mode,
        max_interruption_band: 2,
        min_spot_pools: 2,
        max_disrupted_nodes: 1,
        ..Policy::default()
    };
    store
        .put(
            &Item::new(keys::policy(&tenant, &cluster), policy),
            PutCondition::Always,
        )
        .await
        .unwrap();
    let mut pools = Vec::new();
    for zone in ["use1-az1", "use1-az2"] {
        pools.push(records::pool(zone, "m5.large", 2, 8192, 0.035, 0.096, 1));
        pools.push(records::pool(zone, "m5.xlarge", 4, 16384, 0.07, 0.192, 1));
        pools.push(records::pool(zone, "m5.2xlarge", 8, 32768, 0.14, 0.384, 2));
        pools.push(records::pool(zone, "c5.xlarge", 4, 8192, 0.065, 0.17, 2));
        pools.push(records::pool(zone, "r5.large", 2, 16384, 0.04, 0.126, 1));
    }
    let items: Vec<Item<&Pool>> = pools.iter().map(snapshots::current_pool_item).collect();
    store.batch_put(&items).await.unwrap();
    Setup {
        stack_queue_reader: LocalStackReader {
            sqs: deps.sqs.clone(),
        },
        stack,
        deps,
        tenant,
        cluster,
        agent_queue,
    }
}

fn sample_snapshot() -> Snapshot {
    spotwise_core::snapshot::parse_list(
        fixture("events/optimizer/kubectl-snapshot.json").as_bytes(),
    )
    .unwrap()
}

fn request(s: &Setup) -> OptimizeRequest {
    OptimizeRequest {
        tenant_id: s.tenant.clone(),
        cluster_id: s.cluster.clone(),
        trigger: "test".into(),
        scheduled: None,
    }
}

async fn latest(s: &Setup) -> Recommendation {
    let page = s
        .deps
        .store
        .query::<Recommendation>(
            &Query::partition(keys::tenant_partition(&s.tenant))
                .prefix(keys::recommendations_prefix(&s.cluster))
                .newest_first()
                .limit(1),
        )
        .await
        .unwrap();
    page.items.into_iter().next().unwrap().body
}

#[tokio::test]
async fn recommend_mode_stores_versioned_plans_and_sends_nothing() {
    let s = setup(PolicyMode::Recommend).await;
    let now = OffsetDateTime::now_utc();
    snapshots::put(
        &s.deps.store,
        &s.deps.snapshots,
        &s.tenant,
        &s.cluster,
        &sample_snapshot(),
        now,
    )
    .await
    .unwrap();

    let event: SqsEvent =
        serde_json::from_str(&fixture("events/optimizer/sqs-optimize-request.json")).unwrap();
    let response = handle_batch(&s.deps, event).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    let first = latest(&s).await;
    assert_eq!(
        (first.revision, first.status, first.trigger.as_str()),
        (1, RecommendationStatus::Proposed, "schedule")
    );
    assert_eq!(
        first.summary.pods, first.summary.placed_pods,
        "{:?}",
        first.unschedulable
    );
    // Zones come back as the names the cluster uses, not pool zone ids.
    assert!(
        first
            .node_mix
            .iter()
            .all(|m| m.zone.starts_with("us-east-1")),
        "{:?}",
        first.node_mix
    );
    let savings = first.summary.monthly_savings.unwrap();
    assert!(
        savings > 0.0,
        "the sample cluster is over-provisioned on on-demand: {savings}"
    );
    assert!(
        first
            .consolidation
            .as_ref()
            .is_some_and(|c| !c.steps.is_empty())
    );

    let outcome = optimize(&s.deps, &request(&s), now).await.unwrap();
    assert!(
        matches!(
            outcome,
            Outcome::Planned {
                revision: 2,
                rollout: None,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(
        s.stack_queue_reader
            .actions(&s.agent_queue)
            .await
            .is_empty()
    );
    // The first plan is news; the same node mix an hour later is not.
    let told: Vec<Notification> = s.stack.drain(s.deps.notifications.url()).await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].event_type, "recommendation_ready");
    assert_eq!(
        told[0].labels["savings"],
        format!("${savings:.2}/month"),
        "`{{savings}}` in templates"
    );
    assert!(
        told[0].body.contains("waiting for approval"),
        "{}",
        told[0].body
    );
}

#[tokio::test]
async fn auto_mode_rolls_a_worthwhile_plan_out_once() {
    let s = setup(PolicyMode::Auto).await;
    let now = OffsetDateTime::now_utc();
    snapshots::put(
        &s.deps.store,
        &s.deps.snapshots,
        &s.tenant,
        &s.cluster,
        &sample_snapshot(),
        now,
    )
    .await
    .unwrap();

    let Outcome::Planned {
        rollout, revision, ..
    } = optimize(&s.deps, &request(&s), now).await.unwrap()
    else {
        panic!("not planned");
    };
    assert_eq!(rollout, Some(revision));
    let started = s
        .deps
        .store
        .get::<Rollout>(&keys::rollout(&s.tenant, &s.cluster, revision))
        .await
        .unwrap()
        .unwrap()
        .body;
    assert_eq!(started.status, RolloutStatus::Provisioning);
    assert!(!started.replaced.is_empty(), "{started:?}");
    assert_eq!(latest(&s).await.status, RecommendationStatus::Applying);
    // The scheduler's rollout acts on the cluster, not the optimizer.
    assert!(
        s.stack_queue_reader
            .actions(&s.agent_queue)
            .await
            .is_empty()
    );

    // The next run, with the rollout still going, starts no other.
    let Outcome::Planned { rollout, .. } = optimize(&s.deps, &request(&s), now).await.unwrap()
    else {
        panic!("not planned");
    };
    assert_eq!(rollout, None);
}

#[tokio::test]
async fn clusters_without_a_usable_snapshot_are_skipped() {
    let s = setup(PolicyMode::Recommend).await;
    let now = OffsetDateTime::now_utc();
    let unknown = OptimizeRequest {
        cluster_id: ClusterId::new("nope").unwrap(),
        ..request(&s)
    };
    assert_eq!(
        optimize(&s.deps, &unknown, now).await.unwrap(),
        Outcome::Skipped(Skipped::UnknownCluster)
    );
    assert_eq!(
        optimize(&s.deps, &request(&s), now).await.unwrap(),
        Outcome::Skipped(Skipped::Snapshot(Unusable::Missing))
    );
    snapshots::put(
        &s.deps.store,
        &s.deps.snapshots,
        &s.tenant,
        &s.cluster,
        &sample_snapshot(),
        now - time::Duration::hours(7),
    )
    .await
    .unwrap();
    assert!(matches!(
        optimize(&s.deps, &request(&s), now).await.unwrap(),
        Outcome::Skipped(Skipped::Snapshot(Unusable::Stale { .. }))
    ));
}

#[tokio::test]
async fn schedule_fans_out_one_request_per_cluster_with_a_fresh_snapshot() {
    let s = setup(PolicyMode::Recommend).await;
    let now = OffsetDateTime::now_utc();
    snapshots::put(
        &s.deps.store,
        &s.deps.snapshots,
        &s.tenant,
        &s.cluster,
        &sample_snapshot(),
        now,
    )
    .await
    .unwrap();
    let other_tenant = TenantId::new("t2").unwrap();
    let quiet = ClusterId::new("444455556666.eu-west-1.batch").unwrap();
    snapshots::put(
        &s.deps.store,
        &s.deps.snapshots,
        &other_tenant,
        &quiet,
        &sample_snapshot(),
        now - time::Duration::hours(7),
    )
    .await
    .unwrap();

    let event: OptimizerEvent =
        serde_json::from_str(&fixture("events/optimizer/schedule.json")).unwrap();
    let OptimizerResponse::FanOut(fan_out) = handle(&s.deps, event).await.unwrap() else {
        panic!("a schedule event is not a batch");
    };
    assert_eq!(
        fan_out,
        FanOut {
            clusters: 2,
            stale: 1,
            enqueued: 1
        }
    );
    let sent: Vec<OptimizeRequest> = s.stack.drain(s.deps.optimize_queue.url()).await;
    assert_eq!(
        sent,
        vec![OptimizeRequest {
            trigger: "schedule".into(),
            ..request(&s)
        }]
    );

    let event: OptimizerEvent =
        serde_json::from_str(&fixture("events/optimizer/sqs-optimize-request.json")).unwrap();
    assert!(matches!(
        handle(&s.deps, event).await.unwrap(),
        OptimizerResponse::Batch(_)
    ));
}

#[tokio::test]
async fn a_large_snapshot_is_one_object_and_only_the_latest_two_are_kept() {
    let s = setup(PolicyMode::Recommend).await;
    let mut snapshot = sample_snapshot();
    let template = snapshot.pods[0].clone();
    snapshot.pods = synth::pods(3, 2_500)
        .into_iter()
        .map(|spec| {
            let (namespace, name) = spec.name.split_once('/').unwrap();
            let workload = spotwise_optimizer::eligibility::WorkloadPod {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                ..template.workload.clone()
            };
            SnapshotPod {
                workload,
                spec,
                usage: None,
                containers: Vec::new(),
            }
        })
        .collect();
    let now = OffsetDateTime::now_utc();
    let store = (&s.deps.store, &s.deps.snapshots);
    let first = snapshots::put(store.0, store.1, &s.tenant, &s.cluster, &snapshot, now)
        .await
        .unwrap();
    let (head, loaded) = snapshots::load(
        store.0,
        store.1,
        &s.tenant,
        &s.cluster,
        now,
        snapshots::MAX_USABLE_AGE,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(head.id, first);
    assert_eq!(head.pods, 2_500 + snapshot.daemon_pods.len());
    assert_eq!(loaded, snapshot);

    let second = snapshots::put(store.0, store.1, &s.tenant, &s.cluster, &snapshot, now)
        .await
        .unwrap();
    let third = snapshots::put(store.0, store.1, &s.tenant, &s.cluster, &snapshot, now)
        .await
        .unwrap();
    let head = snapshots::head(store.0, &s.tenant, &s.cluster)
        .await
        .unwrap()
        .unwrap()
        .body;
    assert_eq!(
        (head.id.as_str(), head.previous.as_deref()),
        (third.as_str(), Some(second.as_str()))
    );
    let object = |id: &str| keys::snapshot_object(&s.tenant, &s.cluster, id);
    assert!(
        store
            .1
            .get(&object(&first), u64::MAX)
            .await
            .unwrap()
            .is_none(),
        "the oldest object is deleted"
    );
    assert!(
        store
            .1
            .get(&object(&second), u64::MAX)
            .await
            .unwrap()
            .is_some(),
        "the previous one is kept"
    );
    assert!(object(&third).starts_with(&format!("tenants/{}/", s.tenant)));
}

#[test]
fn cooldown_drops_spot_pools_and_interruptions_are_counted() {
    let data = spotwise_optimizer::catalog::PriceData::shipped().unwrap();
    let mut offerings = data.offerings(
        "us-east-1",
        &["us-east-1a".to_owned()],
        &TypeFilter::default(),
    );
    let before = offerings.len();
    let risk = BTreeMap::from([
        (
            ("m5.large".to_owned(), "us-east-1a".to_owned()),
            PoolRisk {
                interruptions: 0,
                cooling_down: true,
            },
        ),
        (
            ("c5.xlarge".to_owned(), "us-east-1a".to_owned()),
            PoolRisk {
                interruptions: 3,
                cooling_down: false,
            },
        ),
    ]);
    apply_risk(&mut offerings, &risk);
    assert_eq!(offerings.len(), before - 1);
    assert!(
        offerings
            .iter()
            .any(|o| o.instance_type == "m5.large" && !o.is_spot()),
        "on-demand stays"
    );
    let c5 = offerings
        .iter()
        .find(|o| o.instance_type == "c5.xlarge" && o.is_spot())
        .unwrap();
    assert_eq!(c5.observed_interruptions, 3);
}

#[tokio::test]
async fn invalid_request_fails_only_itself() {
    let s = setup(PolicyMode::Recommend).await;
    let mut event: SqsEvent =
        serde_json::from_str(&fixture("events/optimizer/sqs-optimize-request.json")).unwrap();
    let mut bad = event.records[0].clone();
    bad.message_id = Some("bad".into());
    bad.body = Some(r#"{"tenant_id":"t#1","cluster_id":"c1"}"#.into());
    event.records.push(bad);
    let response = handle_batch(&s.deps, event).await.unwrap();
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["bad"]);
}

fn node_template(s: &Setup, id: &str, families: &[&str], zones: &[&str]) -> Item<NodeTemplate> {
    Item::new(
        keys::node_template(&s.tenant, &s.cluster, id),
        NodeTemplate {
            id: id.into(),
            tenant_id: s.tenant.clone(),
            cluster_id: s.cluster.clone(),
            spec: NodeTemplateSpec {
                name: id.into(),
                instance_families: families.iter().map(|f| (*f).to_owned()).collect(),
                exclude_instance_types: vec!["*.2xlarge".into()],
                zones: zones.iter().map(|z| (*z).to_owned()).collect(),
                labels: BTreeMap::from([("pool".to_owned(), id.to_owned())]),
                ..NodeTemplateSpec::default()
            },
        },
    )
}

#[tokio::test]
async fn node_templates_bound_what_plans_may_use() {
    let s = setup(PolicyMode::Recommend).await;
    let now = OffsetDateTime::now_utc();
    snapshots::put(
        &s.deps.store,
        &s.deps.snapshots,
        &s.tenant,
        &s.cluster,
        &sample_snapshot(),
        now,
    )
    .await
    .unwrap();
    let general = node_template(&s, "general", &["m5", "r5"], &[]);
    s.deps
        .store
        .put(&general, PutCondition::Always)
        .await
        .unwrap();

    let planned = optimize(&s.deps, &request(&s), now).await.unwrap();
    assert!(matches!(planned, Outcome::Planned { .. }), "{planned:?}");
    let plan = latest(&s).await;
    assert!(!plan.node_mix.is_empty());
    for line in &plan.node_mix {
        assert!(
            ["m5.large", "m5.xlarge", "r5.large"].contains(&line.instance_type.as_str()),
            "{} is outside the template",
            line.instance_type
        );
    }

    // A template that opens nothing priced: the cluster is not planned, and says why.
    s.deps.store.delete(&general.key).await.unwrap();
    let elsewhere = node_template(&s, "elsewhere", &["m5"], &["eu-west-1a"]);
    s.deps
        .store
        .put(&elsewhere, PutCondition::Always)
        .await
        .unwrap();
    assert_eq!(
        optimize(&s.deps, &request(&s), now).await.unwrap(),
        Outcome::Skipped(Skipped::NoTemplateOfferings)
    );
}

/// A sketch of 12 samples at `cpu_m` and `mem_mib`, as the agent makes one an hour.
fn hour_of_usage(hour: i64, cpu_m: u64, mem_mib: u64) -> spotwise_core::rightsizing::UsageHour {
    let mut sketch = spotwise_core::rightsizing::UsageSketch::default();
    for _ in 0..12 {
        sketch.add(cpu_m, mem_mib);
    }
    spotwise_core::rightsizing::UsageHour {
        hour,
        containers: BTreeMap::from([("shop/Deployment/web/main".to_owned(), sketch)]),
    }
}

#[tokio::test]
async fn usage_hours_become_history_and_auto_mode_asks_for_the_ready_changes() {
    let s = setup(PolicyMode::Recommend).await;
    let store = &s.deps.store;
    let mut policy = store
        .get::<Policy>(&keys::policy(&s.tenant, &s.cluster))
        .await
        .unwrap()
        .unwrap();
    policy.body.right_sizing.mode = RightSizingMode::Auto;
    store.put(&policy, PutCondition::Always).await.unwrap();
    // A whole weekday of history already kept (the last weekday before today)...
    let now = OffsetDateTime::now_utc();
    let mut day = now.date().previous_day().unwrap();
    while matches!(
        day.weekday(),
        time::Weekday::Saturday | time::Weekday::Sunday
    ) {
        day = day.previous_day().unwrap();
    }
    let start = day.midnight().assume_utc().unix_timestamp();
    let mut history = spotwise_optimizer::usage::UsageHistory::default();
    let hours: Vec<_> = (0..24)
        .map(|h| hour_of_usage(start + h * 3600, 50, 100))
        .collect();
    history.fold(&hours);
    resize::save_history(&s.deps.snapshots, &s.tenant, &s.cluster, &history)
        .await
        .unwrap();
    // ...and the snapshot carries the hour just over.
    let this_hour = now.unix_timestamp() - now.unix_timestamp().rem_euclid(3600);
    let mut snapshot = sample_snapshot();
    snapshot.usage_hours = vec![hour_of_usage(this_hour - 3600, 60, 120)];
    snapshots::put(
        store,
        &s.deps.snapshots,
        &s.tenant,
        &s.cluster,
        &snapshot,
        now,
    )
    .await
    .unwrap();

    optimize(&s.deps, &request(&s), now).await.unwrap();
    let kept = resize::history(&s.deps.snapshots, &s.tenant, &s.cluster)
        .await
        .unwrap();
    assert_eq!(
        kept.last_hour,
        Some(this_hour - 3600),
        "the new hour is folded"
    );
    let summary = kept.summary("shop/Deployment/web/main").unwrap();
    assert_eq!((summary.hours, summary.mem_peak_mib), (25, 120));
    let rec = latest(&s).await;
    let right_sizing = rec.right_sizing.unwrap();
    let web = right_sizing
        .workloads
        .iter()
        .find(|w| w.key == "shop/Deployment/web")
        .unwrap();
    assert_eq!(
        (web.status, web.mode),
        (WorkloadStatus::Ready, RightSizingMode::Auto),
        "{}",
        web.reason
    );
    assert_eq!(web.replicas, 6);
    assert!(web.monthly_saving > 0.0);
    assert!(right_sizing.projected_monthly_saving >= 0.0);
    // Workloads without history say so.
    let coredns = right_sizing
        .workloads
        .iter()
        .find(|w| w.key == "kube-system/Deployment/coredns")
        .unwrap();
    assert_eq!(
        coredns.status,
        WorkloadStatus::Skipped,
        "kube-system is excluded by default"
    );

    // Auto mode asked for the change, once, audited.
    let changes = resize::recent(store, &s.tenant, &s.cluster, 10)
        .await
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].workload.to_string(), "shop/Deployment/web");
    assert_eq!(changes[0].requested_by, resize::AUTO_ACTOR);
    assert_eq!(
        changes[0].containers[0].after.mem_request_mib, 138,
        "peak 120 MiB + 15%"
    );
    optimize(&s.deps, &request(&s), now + time::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        resize::recent(store, &s.tenant, &s.cluster, 10)
            .await
            .unwrap()
            .len(),
        1,
        "one change at a time per workload"
    );
    let audit = store
        .query::<spotwise_core::domain::AuditEvent>(
            &Query::partition(keys::tenant_partition(&s.tenant)).prefix(keys::prefix::AUDIT),
        )
        .await
        .unwrap();
    assert!(
        audit
            .items
            .iter()
            .any(|e| e.body.action == "rightsizing.request" && e.body.actor == resize::AUTO_ACTOR)
    );
}

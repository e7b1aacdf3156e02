#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_eks::types::{NodegroupScalingConfig, VpcConfigRequest};
use spotwise_core::action::{ActionKind, ActionRecord, ActionSpec, ActionStatus, AgentAction};
use spotwise_core::domain::{CapacityType, Nodegroup, Notification, RoleArn};
use spotwise_core::messages::OptimizeRequest;
use spotwise_core::{ClusterId, TenantId};
use spotwise_store::accounts;
use spotwise_store::runs::{self, RunOutcome};
use spotwise_store::{Item, PutCondition};

use spotwise_schedule::WeekMatrix;
use spotwise_schedule::model::{
    HibernationSchedule, HibernationSettings, HibernationState, RunKind, ScheduleSettings,
    SleepRecord,
};
use spotwise_testkit::{LocalStack, fixture, records};
use time::Duration;

use super::*;

const ROLE: &str = "arn:aws:iam::111122223333:role/SpotwiseAccess";
const SECRET: &[u8] = b"scheduler-test-secret";

struct Setup {
    stack: LocalStack,
    deps: Deps,
    tenant: TenantId,
    cluster: ClusterId,
    eks: aws_sdk_eks::Client,
    agent_queue: String,
}

/// A linked account whose EKS cluster `prod` has node groups `general` (2/5/3) and `system`
/// (1/3/2), an installed agent and a snapshot of the sample workloads.
async fn setup() -> Setup {
    let stack = LocalStack::start();
    let config = Config::from_env(&Env::from_map(stack.function_env("SchedulerFunction"))).unwrap();
    let sdk = stack.sdk_config().await;
    let deps = Deps::new(&sdk, &config);
    let tenant = TenantId::new("t1").unwrap();
    let cluster = ClusterId::new("c1").unwrap();
    let now = OffsetDateTime::now_utc();

    let role = RoleArn::parse(ROLE).unwrap();
    let external_id = accounts::issue_external_id(&deps.store, &tenant, now, "test")
        .await
        .unwrap();
    accounts::link(
        &deps.store,
        &deps.accounts,
        &tenant,
        &role,
        vec!["us-east-1".into()],
        now,
        "test",
    )
    .await
    .unwrap();
    let customer = deps.accounts.config_for(&role, &external_id).await.unwrap();
    let eks = customer_eks(&customer);
    eks.create_cluster()
        .name("prod")
        .role_arn("arn:aws:iam::111122223333:role/eks-cluster")
        .resources_vpc_config(
            VpcConfigRequest::builder()
                .subnet_ids("subnet-0a1b2c3d")
                .build(),
        )
        .send()
        .await
        .unwrap();
    for (name, (min, max, desired)) in [("general", (2, 5, 3)), ("system", (1, 3, 2))] {
        eks.create_nodegroup()
            .cluster_name("prod")
            .nodegroup_name(name)
            .node_role("arn:aws:iam::111122223333:role/eks-node")
            .subnets("subnet-0a1b2c3d")
            .scaling_config(scaling(min, max, desired))
            .send()
            .await
            .unwrap();
        deps.store
            .put(
                &Item::new(
                    keys::nodegroup(&tenant, &cluster, name),
                    Nodegroup {
                        cluster_id: cluster.clone(),
                        name: name.into(),
                        capacity_type: CapacityType::OnDemand,
                        instance_types: vec!["m5.large".into()],
                        min_size: min,
                        max_size: max,
                        desired_size: desired,
                        status: "ACTIVE".into(),
                        vanished_at: None,
                    },
                ),
                PutCondition::Always,
            )
            .await
            .unwrap();
    }

    let agent_queue = deps
        .sqs
        .create_queue()
        .queue_name("spotwise-local-agent-c1")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let record = records::cluster(&tenant, &cluster, Some(agent_queue.clone()));
    deps.store
        .put(
            &Item::new(keys::cluster(&tenant, &cluster), record),
            PutCondition::Always,
        )
        .await
        .unwrap();
    deps.store
        .put(
            &spotwise_store::actions::secret_item(&deps.vault, &tenant, &cluster, SECRET)
                .await
                .unwrap(),
            PutCondition::Always,
        )
        .await
        .unwrap();
    let snapshot = spotwise_core::snapshot::parse_list(
        fixture("events/optimizer/kubectl-snapshot.json").as_bytes(),
    )
    .unwrap();
    spotwise_store::snapshots::put(
        &deps.store,
        &deps.snapshots,
        &tenant,
        &cluster,
        &snapshot,
        now,
    )
    .await
    .unwrap();
    Setup {
        stack,
        deps,
        tenant,
        cluster,
        eks,
        agent_queue,
    }
}

fn customer_eks(customer: &SdkConfig) -> aws_sdk_eks::Client {
    aws_sdk_eks::Client::new(
        &customer
            .to_builder()
            .region(aws_config::Region::new("us-east-1"))
            .build(),
    )
}

fn scaling(min: i32, max: i32, desired: i32) -> NodegroupScalingConfig {
    NodegroupScalingConfig::builder()
        .min_size(min)
        .max_size(max)
        .desired_size(desired)
        .build()
}

async fn sizes(s: &Setup, group: &str) -> (i32, i32, i32) {
    let described = s
        .eks
        .describe_nodegroup()
        .cluster_name("prod")
        .nodegroup_name(group)
        .send()
        .await
        .unwrap();
    let c = described.nodegroup().unwrap().scaling_config().unwrap();
    (
        c.min_size().unwrap(),
        c.max_size().unwrap(),
        c.desired_size().unwrap(),
    )
}

async fn put_schedule(s: &Setup, schedule: &HibernationSchedule) {
    s.deps
        .store
        .put(
            &Item::new(
                keys::hibernation_schedule(&s.tenant, &s.cluster),
                schedule.clone(),
            )
            .with_gsi1(keys::hibernation_schedules_index(&s.tenant, &s.cluster)),
            PutCondition::Always,
        )
        .await
        .unwrap();
}

fn always_asleep(s: &Setup, now: OffsetDateTime) -> HibernationSchedule {
    HibernationSchedule {
        tenant_id: s.tenant.clone(),
        cluster_id: s.cluster.clone(),
        settings: HibernationSettings {
            enabled: true,
            time_zone: "Europe/Berlin".into(),
            awake: WeekMatrix::parse(&vec!["0".repeat(24); 7]).unwrap(),
            scale_node_groups: true,
            exclude_node_groups: vec!["system".into(), "ng-spot".into()],
            scale_workloads: true,
            exclude_namespaces: vec!["data".into()],
            exclude_labels: BTreeMap::new(),
            cordon_nodes: true,
        },
        wake_until: None,
        updated_at: now,
    }
}

fn scale_target(action: &AgentAction) -> (String, i64) {
    let ActionSpec::Scale { workload, replicas } = &action.spec else {
        panic!("not a workload action: {action:?}");
    };
    (
        format!("{}/{}/{}", workload.namespace, workload.kind, workload.name),
        i64::from(*replicas),
    )
}

#[tokio::test]
async fn sleep_then_wake_restores_node_groups_and_workloads_exactly() {
    let s = setup().await;
    let now = OffsetDateTime::now_utc();
    put_schedule(&s, &always_asleep(&s, now)).await;

    let first = tick(&s.deps, now).await.unwrap();
    assert_eq!(first.hibernation.slept, vec![s.cluster.clone()]);
    assert_eq!(sizes(&s, "general").await, (0, 5, 0));
    assert_eq!(sizes(&s, "system").await, (1, 3, 2), "excluded");

    let sent: Vec<AgentAction> = s.stack.drain(&s.agent_queue).await;
    let (down, cordons): (Vec<AgentAction>, Vec<AgentAction>) = sent
        .into_iter()
        .partition(|a| a.kind() == ActionKind::Scale);
    let mut cordoned: Vec<&str> = cordons
        .iter()
        .inspect(|a| assert_eq!(a.kind(), ActionKind::Cordon))
        .map(AgentAction::target_name)
        .collect();
    cordoned.sort_unstable();
    assert_eq!(
        cordoned,
        [
            "ip-10-0-1-10.ec2.internal",
            "ip-10-0-1-12.ec2.internal",
            "ip-10-0-2-11.ec2.internal"
        ],
        "the node of the excluded group keeps taking pods"
    );
    let mut targets: Vec<(String, i64)> = down.iter().map(scale_target).collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            ("shop/Deployment/api".to_owned(), 0),
            ("shop/Deployment/legacy".to_owned(), 0),
            ("shop/Deployment/web".to_owned(), 0),
            ("shop/StatefulSet/checkout".to_owned(), 0),
        ],
        "kube-system, the excluded namespace and non-scalable owners are left alone"
    );
    let secret = SECRET.to_vec();
    for action in &down {
        action.verify(&s.cluster, &secret, now).unwrap();
    }

    let again = tick(&s.deps, now + Duration::minutes(1)).await.unwrap();
    assert!(again.hibernation.slept.is_empty() && again.hibernation.woke.is_empty());
    assert!(
        s.stack
            .drain::<AgentAction>(&s.agent_queue)
            .await
            .is_empty()
    );

    // The agent reports what it replaced, except for one workload it never got to.
    let reported = BTreeMap::from([("api", 3), ("web", 6), ("checkout", 1)]);
    for action in &down {
        let key = keys::action(&s.tenant, &action.action_id);
        let mut record = s
            .deps
            .store
            .get::<ActionRecord>(&key)
            .await
            .unwrap()
            .unwrap();
        if let Some(replicas) = reported.get(action.target_name()) {
            record.body.status = ActionStatus::Succeeded;
            record.body.previous_replicas = Some(*replicas);
            s.deps.store.update_versioned(&record).await.unwrap();
        }
    }

    // Woken by hand an hour later, until the evening.
    let later = now + Duration::hours(1);
    let mut woken = always_asleep(&s, now);
    woken.wake_until = Some(now + Duration::hours(8));
    put_schedule(&s, &woken).await;
    let wake = tick(&s.deps, later).await.unwrap();
    assert_eq!(wake.hibernation.woke, vec![s.cluster.clone()]);
    assert_eq!(sizes(&s, "general").await, (2, 5, 3));
    assert_eq!(sizes(&s, "system").await, (1, 3, 2));

    let sent: Vec<AgentAction> = s.stack.drain(&s.agent_queue).await;
    let (up, uncordons): (Vec<AgentAction>, Vec<AgentAction>) = sent
        .into_iter()
        .partition(|a| a.kind() == ActionKind::Scale);
    assert_eq!(uncordons.len(), 3);
    assert!(uncordons.iter().all(|a| a.kind() == ActionKind::Uncordon));
    let mut targets: Vec<(String, i64)> = up.iter().map(scale_target).collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            ("shop/Deployment/api".to_owned(), 3),
            ("shop/Deployment/web".to_owned(), 6),
            ("shop/StatefulSet/checkout".to_owned(), 1),
        ]
    );

    let state = s
        .deps
        .store
        .get::<HibernationState>(&keys::hibernation_state(&s.tenant, &s.cluster))
        .await
        .unwrap();
    assert!(state.is_none(), "awake again");
    let sleeps = s
        .deps
        .store
        .query_all::<SleepRecord>(
            &Query::partition(keys::tenant_partition(&s.tenant))
                .prefix(keys::sleeps_prefix(&s.cluster)),
        )
        .await
        .unwrap();
    assert_eq!(sleeps.len(), 1);
    let sleep = &sleeps[0].body;
    assert!((sleep.hours - 1.0).abs() < 1e-6);
    assert_eq!(sleep.node_groups.len(), 1);
    assert_eq!(sleep.workloads, 4);
    assert!(sleep.problems.is_empty(), "{:?}", sleep.problems);
    // The scale-down the agent never got to is withdrawn, so it cannot run after the wake.
    let legacy = down.iter().find(|a| a.target_name() == "legacy").unwrap();
    let withdrawn = s
        .deps
        .store
        .get::<ActionRecord>(&keys::action(&s.tenant, &legacy.action_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(withdrawn.body.status, ActionStatus::Cancelled);

    let notifications: Vec<Notification> = s.stack.drain(s.deps.notifications.url()).await;
    let titles: Vec<&str> = notifications.iter().map(|n| n.title.as_str()).collect();
    assert_eq!(titles, ["Cluster hibernating", "Cluster awake"]);
    assert!(!notifications[1].body.contains("Not restored"));
    let audit = s
        .deps
        .store
        .query_all::<spotwise_core::domain::AuditEvent>(
            &Query::partition(keys::tenant_partition(&s.tenant)).prefix(keys::prefix::AUDIT),
        )
        .await
        .unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e.body.action.as_str())
        .filter(|a| a.starts_with("hibernation."))
        .collect();
    assert_eq!(actions, ["hibernation.sleep", "hibernation.wake"]);
}

#[tokio::test]
async fn a_disabled_schedule_wakes_a_cluster_it_left_asleep() {
    let s = setup().await;
    let now = OffsetDateTime::now_utc();
    let mut schedule = always_asleep(&s, now);
    schedule.settings.scale_workloads = false;
    put_schedule(&s, &schedule).await;
    tick(&s.deps, now).await.unwrap();
    assert_eq!(sizes(&s, "general").await, (0, 5, 0));

    schedule.settings.enabled = false;
    put_schedule(&s, &schedule).await;
    let woke = tick(&s.deps, now + Duration::minutes(5)).await.unwrap();
    assert_eq!(woke.hibernation.woke, vec![s.cluster.clone()]);
    assert_eq!(sizes(&s, "general").await, (2, 5, 3));
    let quiet = tick(&s.deps, now + Duration::minutes(6)).await.unwrap();
    assert!(
        quiet.hibernation.slept.is_empty(),
        "a disabled schedule never puts to sleep"
    );
}

fn scheduled(s: &Setup, kind: RunKind, pause_after: u32, next: OffsetDateTime) -> ScheduledRun {
    ScheduledRun {
        id: "nightly".into(),
        tenant_id: s.tenant.clone(),
        settings: ScheduleSettings {
            cluster_id: s.cluster.clone(),
            name: "nightly plan".into(),
            kind,
            cron: "*/5 * * * *".into(),
            time_zone: "UTC".into(),
            pause_after,
        },
        status: ScheduleStatus::Active,
        paused_reason: None,
        consecutive_failures: 0,
        next_run_at: Some(next),
        last_run_id: None,
        created_at: next,
        updated_at: next,
    }
}

async fn schedule_now(s: &Setup) -> ScheduledRun {
    s.deps
        .store
        .get::<ScheduledRun>(&keys::scheduled_run(&s.tenant, "nightly"))
        .await
        .unwrap()
        .unwrap()
        .body
}

async fn run_record(s: &Setup, run_id: &str) -> RunRecord {
    s.deps
        .store
        .get::<RunRecord>(&keys::run(&s.tenant, "nightly", run_id))
        .await
        .unwrap()
        .unwrap()
        .body
}

/// The optimizer function, handed what the scheduler queued, as Lambda would.
async fn optimizer_consumes(s: &Setup) {
    let config =
        optimizer::Config::from_env(&Env::from_map(s.stack.function_env("OptimizerFunction")))
            .unwrap();
    let optimizer = optimizer::Deps::new(&s.stack.sdk_config().await, &config);
    let event = s.stack.poll(optimizer.optimize_queue.url()).await;
    assert_eq!(event.records.len(), 1);
    let response = optimizer::handle_batch(&optimizer, event.clone())
        .await
        .unwrap();
    s.stack
        .settle(optimizer.optimize_queue.url(), &event, &response)
        .await;
}

#[tokio::test]
async fn due_runs_start_once_never_overlap_and_pause_after_repeated_failures() {
    let s = setup().await;
    let now = datetime_at_minute(OffsetDateTime::now_utc());
    s.deps
        .store
        .put(
            &runs::schedule_item(
                scheduled(&s, RunKind::Optimize, 2, now - Duration::minutes(1)),
                0,
            ),
            PutCondition::IfAbsent,
        )
        .await
        .unwrap();

    let first = tick(&s.deps, now).await.unwrap();
    assert_eq!(first.runs_started, 1);
    let schedule = schedule_now(&s).await;
    let next = schedule.next_run_at.unwrap();
    assert!(next > now && next <= now + Duration::minutes(5));
    let run1 = schedule.last_run_id.clone().unwrap();
    assert_eq!(run_record(&s, &run1).await.state, RunState::Running);
    assert_eq!(
        tick(&s.deps, now).await.unwrap().runs_started,
        0,
        "claimed once"
    );

    // The next occurrence comes while the first run is still going: skipped.
    let overlapping = tick(&s.deps, next).await.unwrap();
    assert_eq!((overlapping.runs_started, overlapping.runs_skipped), (0, 1));

    // The optimizer gets the request; with no pools for the region it cannot plan: a failure.
    optimizer_consumes(&s).await;
    let finished = run_record(&s, &run1).await;
    assert_eq!(finished.state, RunState::Failed);
    assert!(
        finished
            .detail
            .unwrap()
            .contains("not planned: no priced pools for region")
    );
    assert!(finished.duration_ms.is_some());
    assert_eq!(schedule_now(&s).await.consecutive_failures, 1);

    let second_at = schedule_now(&s).await.next_run_at.unwrap();
    assert_eq!(tick(&s.deps, second_at).await.unwrap().runs_started, 1);
    optimizer_consumes(&s).await;
    let paused = schedule_now(&s).await;
    assert_eq!(paused.status, ScheduleStatus::Paused);
    assert!(
        paused
            .paused_reason
            .unwrap()
            .contains("2 failed runs in a row")
    );
    let notices: Vec<Notification> = s.stack.drain(s.deps.notifications.url()).await;
    assert_eq!(
        notices
            .iter()
            .filter(|n| n.event_type == "schedule_paused")
            .count(),
        1
    );
    let after = tick(&s.deps, second_at + Duration::hours(1)).await.unwrap();
    assert_eq!(after.runs_started, 0, "a paused schedule is not due");
}

#[tokio::test]
async fn a_run_without_an_outcome_times_out_and_discovery_runs_go_to_the_account() {
    let s = setup().await;
    let now = datetime_at_minute(OffsetDateTime::now_utc());
    s.deps
        .store
        .put(
            &runs::schedule_item(scheduled(&s, RunKind::Discovery, 3, now), 0),
            PutCondition::IfAbsent,
        )
        .await
        .unwrap();
    assert_eq!(tick(&s.deps, now).await.unwrap().runs_started, 1);
    let run1 = schedule_now(&s).await.last_run_id.unwrap();
    let requests: Vec<spotwise_core::messages::DiscoverAccount> =
        s.stack.drain(s.deps.run_queues.discovery.url()).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].account_id, "111122223333");
    assert_eq!(requests[0].scheduled.as_ref().unwrap().run_id, run1);

    let much_later = now + Duration::hours(2);
    let late = tick(&s.deps, much_later).await.unwrap();
    assert_eq!((late.runs_timed_out, late.runs_started), (1, 1));
    assert_eq!(run_record(&s, &run1).await.state, RunState::TimedOut);
    assert_eq!(schedule_now(&s).await.consecutive_failures, 1);

    // A success resets the count; a redelivered outcome changes nothing.
    let run2 = RunRef {
        tenant_id: s.tenant.clone(),
        schedule_id: "nightly".into(),
        run_id: schedule_now(&s).await.last_run_id.unwrap(),
    };
    for _ in 0..2 {
        runs::finish(
            &s.deps.store,
            &s.deps.notifications,
            &run2,
            RunOutcome::Succeeded("1 cluster".into()),
            much_later + Duration::seconds(30),
        )
        .await
        .unwrap();
    }
    let done = run_record(&s, &run2.run_id).await;
    assert_eq!(
        (done.state, done.duration_ms),
        (RunState::Succeeded, Some(30_000))
    );
    assert_eq!(schedule_now(&s).await.consecutive_failures, 0);
}

#[test]
fn scheduled_optimize_requests_carry_their_run() {
    let raw = r#"{"tenant_id":"t1","cluster_id":"c1","trigger":"schedule:nightly",
        "scheduled":{"tenant_id":"t1","schedule_id":"nightly","run_id":"01j"}}"#;
    let request: OptimizeRequest = serde_json::from_str(raw).unwrap();
    assert_eq!(request.scheduled.unwrap().schedule_id, "nightly");
}

fn datetime_at_minute(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_second(0).unwrap().replace_nanosecond(0).unwrap()
}

#[tokio::test]
async fn a_sleep_cut_short_is_finished_by_the_next_tick_and_a_lost_node_group_is_told_not_retried()
{
    let s = setup().await;
    let now = OffsetDateTime::now_utc();
    let mut schedule = always_asleep(&s, now);
    schedule.settings.scale_workloads = false;
    schedule.settings.cordon_nodes = false;
    put_schedule(&s, &schedule).await;
    // What a tick that died right after saving the state leaves: nothing scaled yet, and one
    // of the saved node groups has since been deleted.
    let saved = |name: &str, (min, max, desired)| spotwise_schedule::model::SavedNodegroup {
        name: name.into(),
        min_size: min,
        max_size: max,
        desired_size: desired,
    };
    s.deps
        .store
        .put(
            &Item::new(
                keys::hibernation_state(&s.tenant, &s.cluster),
                HibernationState {
                    asleep_since: now,
                    awake_cost_hr: 1.0,
                    node_groups: vec![saved("general", (2, 5, 3)), saved("gone", (1, 2, 1))],
                    workloads: vec![],
                    cordoned_nodes: vec![],
                    complete: false,
                    problems: vec![],
                },
            ),
            PutCondition::Always,
        )
        .await
        .unwrap();

    let next = tick(&s.deps, now + Duration::minutes(1)).await.unwrap();
    assert_eq!(next.hibernation.slept, vec![s.cluster.clone()]);
    assert!(next.hibernation.failures.is_empty(), "{next:?}");
    assert_eq!(
        sizes(&s, "general").await,
        (0, 5, 0),
        "the missing step taken"
    );
    let state = s
        .deps
        .store
        .get::<HibernationState>(&keys::hibernation_state(&s.tenant, &s.cluster))
        .await
        .unwrap()
        .unwrap()
        .body;
    assert!(state.complete);
    assert_eq!(
        state
            .node_groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["general"],
        "only what was scaled is restored later"
    );
    assert_eq!(state.problems.len(), 1, "{:?}", state.problems);
    assert!(state.problems[0].starts_with("node group gone"));
    let told: Vec<Notification> = s.stack.drain(s.deps.notifications.url()).await;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].severity, spotwise_core::domain::Severity::Warning);
    assert!(
        told[0].body.contains("not done: node group gone"),
        "{}",
        told[0].body
    );

    // Complete: later ticks leave it alone.
    let quiet = tick(&s.deps, now + Duration::minutes(2)).await.unwrap();
    assert!(quiet.hibernation.slept.is_empty() && quiet.hibernation.failures.is_empty());

    let mut awake = schedule.clone();
    awake.wake_until = Some(now + Duration::hours(1));
    put_schedule(&s, &awake).await;
    let woke = tick(&s.deps, now + Duration::minutes(3)).await.unwrap();
    assert_eq!(woke.hibernation.woke, vec![s.cluster.clone()]);
    assert_eq!(sizes(&s, "general").await, (2, 5, 3));
}

#[tokio::test]
async fn an_agent_silent_for_five_minutes_is_declared_offline_once() {
    let s = setup().await;
    let now = OffsetDateTime::now_utc();
    let beat = |cluster: ClusterId, at: OffsetDateTime| {
        let store = s.deps.store.clone();
        let tenant = s.tenant.clone();
        async move {
            spotwise_store::agents::beat(&store, &tenant, &cluster, "0.1.0".into(), false, at)
                .await
                .unwrap()
        }
    };
    let quiet = ClusterId::new("c-quiet").unwrap();
    // Every 30 s for a while; the quiet one stops eleven minutes ago (past any window).
    for i in (0..40).rev() {
        let at = now - Duration::seconds(30 * i + 40);
        beat(s.cluster.clone(), at).await;
        if at < now - Duration::minutes(11) {
            beat(quiet.clone(), at).await;
        }
    }

    let first = tick(&s.deps, now).await.unwrap();
    assert_eq!(first.agents_offline, vec![quiet.clone()]);
    let told: Vec<Notification> = s.stack.drain(s.deps.notifications.url()).await;
    assert_eq!(told.len(), 1);
    assert_eq!(
        (
            told[0].event_type.as_str(),
            told[0].severity,
            told[0].cluster_id.as_ref()
        ),
        (
            "agent_offline",
            spotwise_core::domain::Severity::Critical,
            Some(&quiet)
        )
    );
    let status_of_quiet = || async {
        s.deps
            .store
            .get::<spotwise_core::domain::AgentStatus>(&keys::agent_status(&s.tenant, &quiet))
            .await
            .unwrap()
            .unwrap()
            .body
    };
    assert_eq!(status_of_quiet().await.offline_since, Some(now));

    let second = tick(&s.deps, now + Duration::minutes(1)).await.unwrap();
    assert!(second.agents_offline.is_empty(), "told once");
    assert!(
        s.stack
            .drain::<Notification>(s.deps.notifications.url())
            .await
            .is_empty()
    );

    // It comes back: the beat says it was offline, and it is watched again.
    let back = beat(quiet.clone(), now + Duration::minutes(2))
        .await
        .unwrap();
    assert_eq!(back.offline_since, Some(now));
    let later = now + Duration::minutes(20);
    let found = spotwise_store::agents::silent(&s.deps.store, later, agents::OFFLINE_AFTER)
        .await
        .unwrap();
    assert_eq!(found.len(), 2, "both silent by then: {found:?}");
    // A beat between finding and declaring wins.
    beat(quiet.clone(), later).await;
    for entry in &found {
        let declared = spotwise_store::agents::declare_offline(&s.deps.store, entry, later)
            .await
            .unwrap();
        assert_eq!(declared.is_some(), entry.cluster_id != quiet, "{entry:?}");
    }
    let status = status_of_quiet().await;
    assert_eq!(
        (status.offline_since, status.last_heartbeat_at),
        (None, later)
    );
}

#[tokio::test]
async fn a_right_sizing_patch_the_agent_cannot_apply_fails_and_frees_its_workload() {
    use spotwise_core::rightsizing::{ContainerResources, ControllerRef, RightSizingMode};
    use spotwise_optimizer::resize::{ChangeStatus, ResizeChange};
    use spotwise_optimizer::rightsizing::{ContainerChange, WorkloadRightSizing, WorkloadStatus};
    use spotwise_store::resize;

    let s = setup().await;
    let now = OffsetDateTime::now_utc();
    let resources = |cpu_request_m, mem_request_mib| ContainerResources {
        name: "main".into(),
        cpu_request_m,
        mem_request_mib,
        cpu_limit_m: None,
        mem_limit_mib: None,
    };
    let recommendation = WorkloadRightSizing {
        workload: ControllerRef::parse("shop/Deployment/web").unwrap(),
        key: "shop/Deployment/web".into(),
        replicas: 3,
        mode: RightSizingMode::Recommend,
        status: WorkloadStatus::Ready,
        reason: "main: cpu 250m -> 60m".into(),
        containers: vec![ContainerChange {
            before: resources(250, 512),
            after: resources(60, 200),
            usage: None,
            held: Vec::new(),
        }],
        monthly_saving: 9.0,
    };
    let change = ResizeChange::new(
        "01jchange".into(),
        (s.tenant.clone(), s.cluster.clone()),
        &recommendation,
        &spotwise_core::snapshot::Snapshot::default(),
        "key:k1",
        60,
        now,
    );
    let audit = spotwise_store::audit::write_of(
        &s.tenant,
        "key:k1",
        spotwise_store::audit::Change {
            action: "rightsizing.request",
            target: "cluster/c1/workload/shop/Deployment/web".into(),
            before: None,
            after: None,
        },
        now,
    )
    .unwrap();
    resize::request(&s.deps.store, &change, audit)
        .await
        .unwrap();

    // The patch goes to the agent, signed, for that workload.
    let tick = super::tick(&s.deps, now).await.unwrap();
    assert_eq!(tick.resizes.advanced, ["c1/shop/Deployment/web: applying"]);
    let key = keys::resize_change(&s.tenant, &s.cluster, "01jchange");
    let stored = s
        .deps
        .store
        .get::<ResizeChange>(&key)
        .await
        .unwrap()
        .unwrap();
    let action_id = stored.body.action_id.clone().unwrap();
    let mut record = s
        .deps
        .store
        .get::<ActionRecord>(&keys::action(&s.tenant, &action_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.body.status, ActionStatus::Queued);
    assert!(matches!(
        &record.body.action.spec,
        ActionSpec::SetResources { workload, containers }
            if workload.name == "web" && containers[0].cpu_request_m == 60
    ));
    // A second tick before the agent answers changes nothing.
    super::tick(&s.deps, now).await.unwrap();

    // The agent could not apply it (the template has no such container).
    record.body.status = ActionStatus::Failed;
    record.body.status_reason =
        Some("resources of shop/Deployment/web: its pod template has no container main".into());
    s.deps.store.update_versioned(&record).await.unwrap();
    let tick = super::tick(&s.deps, now + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(tick.resizes.advanced, ["c1/shop/Deployment/web: failed"]);
    let failed = s
        .deps
        .store
        .get::<ResizeChange>(&key)
        .await
        .unwrap()
        .unwrap()
        .body;
    assert_eq!(failed.status, ChangeStatus::Failed);
    assert!(
        failed.reason.contains("no container main"),
        "{}",
        failed.reason
    );
    let (state, _) = resize::state(&s.deps.store, &s.tenant, &s.cluster)
        .await
        .unwrap();
    assert_eq!(
        state.active("shop/Deployment/web"),
        None,
        "the workload is free again"
    );
    assert!(
        state.extra_mem_headroom().is_empty(),
        "only a revert raises headroom"
    );
    // No longer in the scheduler's index.
    let tick = super::tick(&s.deps, now + Duration::minutes(2))
        .await
        .unwrap();
    assert!(tick.resizes.advanced.is_empty());
}

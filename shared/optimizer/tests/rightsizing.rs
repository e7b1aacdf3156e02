//! Right-sizing from usage history: when a recommendation appears, what it recommends, and
//! what is left alone; and the watch that decides whether a change stands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use serde_json::json;
use spotwise_core::rightsizing::{
    LimitPolicy, RightSizingMode, RightSizingSettings, UsageHour, UsageSketch,
};
use spotwise_core::snapshot::{Snapshot, parse_list};
use spotwise_optimizer::model::RightSizingPolicy;
use spotwise_optimizer::resize::{ChangeStatus, ResizeChange, ResizeState};
use spotwise_optimizer::rightsizing::{
    WorkloadRightSizing, WorkloadStatus, pod_changes, recommend_workloads,
};
use spotwise_optimizer::usage::UsageHistory;
use time::OffsetDateTime;

/// 2026-11-30, a Monday, 00:00 UTC.
const MONDAY: i64 = 1_795_996_800;

fn deployment_pod(name: &str, index: u32, extra: serde_json::Value) -> serde_json::Value {
    let mut pod = json!({"kind": "Pod", "metadata": {"name": format!("{name}-7f9c-{index}"), "namespace": "shop",
        "labels": {"app": name, "pod-template-hash": "7f9c"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": format!("{name}-7f9c"), "controller": true}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "app",
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}}}]},
        "status": {"containerStatuses": [{"name": "app", "restartCount": 1}]}});
    merge(&mut pod, &extra);
    pod
}

fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn snapshot(items: Vec<serde_json::Value>) -> Snapshot {
    let mut all = vec![json!({"kind": "Node", "metadata": {"name": "n1"},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}}})];
    all.extend(items);
    parse_list(&serde_json::to_vec(&json!({"items": all})).unwrap()).unwrap()
}

/// `hours` hours of 12 samples each from `start`, cpu cycling over `cpu` and memory at `mem`.
fn history(key: &str, start: i64, hours: i64, cpu: &[u64], mem: u64) -> UsageHistory {
    let mut history = UsageHistory::default();
    let hours: Vec<UsageHour> = (0..hours)
        .map(|h| {
            let mut sketch = UsageSketch::default();
            for i in 0..12 {
                sketch.add(cpu[(h as usize * 12 + i) % cpu.len()], mem);
            }
            UsageHour {
                hour: start + h * 3600,
                containers: BTreeMap::from([(key.to_owned(), sketch)]),
            }
        })
        .collect();
    history.fold(&hours);
    history
}

fn recommend(
    snapshot: &Snapshot,
    history: &UsageHistory,
    settings: &RightSizingSettings,
) -> Vec<WorkloadRightSizing> {
    recommend_workloads(
        snapshot,
        history,
        settings,
        &RightSizingPolicy::default(),
        &BTreeMap::new(),
    )
}

const WEB: &str = "shop/Deployment/web/app";

#[test]
fn a_recommendation_appears_only_with_a_day_of_history_that_covers_a_weekday() {
    let cluster = snapshot(vec![
        deployment_pod("web", 0, json!({})),
        deployment_pod("web", 1, json!({})),
    ]);
    let settings = RightSizingSettings::default();
    // Twenty hours of a Monday: not a day yet.
    let short = recommend(
        &cluster,
        &history(WEB, MONDAY, 20, &[150, 180, 200], 400),
        &settings,
    );
    assert_eq!(short[0].status, WorkloadStatus::InsufficientHistory);
    assert!(short[0].reason.contains("has 20 h"), "{}", short[0].reason);
    // A whole weekend: enough hours, no weekday peak.
    let weekend = recommend(
        &cluster,
        &history(WEB, MONDAY - 2 * 86_400, 48, &[150], 400),
        &settings,
    );
    assert_eq!(weekend[0].status, WorkloadStatus::InsufficientHistory);
    assert!(
        weekend[0].reason.contains("no full weekday"),
        "{}",
        weekend[0].reason
    );
    // Saturday to Monday evening: ready.
    let ready = recommend(
        &cluster,
        &history(WEB, MONDAY - 2 * 86_400, 68, &[150, 180, 200], 400),
        &settings,
    );
    let web = &ready[0];
    assert_eq!(web.status, WorkloadStatus::Ready, "{}", web.reason);
    assert_eq!(web.replicas, 2);
    let change = &web.containers[0];
    let usage = change.usage.as_ref().unwrap();
    // p95 cpu (200m, read ≤4% high) + 10%; peak memory 400 MiB + 15%.
    assert!(
        (220..=230).contains(&change.after.cpu_request_m),
        "{:?}",
        change.after
    );
    assert_eq!(change.after.mem_request_mib, 460);
    assert!(usage.cpu_p95_m >= 200 && usage.cpu_p50_m >= 180);
    // Limits keep their ratio to the request (2x cpu, 1.5x memory).
    assert_eq!(
        change.after.cpu_limit_m,
        Some(change.after.cpu_request_m * 2)
    );
    assert_eq!(change.after.mem_limit_mib, Some(690));
    // The plan input gets each pod's change.
    let pods = pod_changes(&cluster, &ready);
    assert_eq!(pods.len(), 2);
    assert_eq!(pods[0].recommended_mem_mib, 460);
}

#[test]
fn autoscaled_resources_annotations_and_exclusions_are_left_alone() {
    let enough = history(WEB, MONDAY - 2 * 86_400, 68, &[150], 400);
    let hpa = |metric: &str| {
        json!({"kind": "HorizontalPodAutoscaler", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                 "metrics": [{"type": "Resource", "resource": {"name": metric}}]}})
    };
    let settings = RightSizingSettings::default();

    let on_cpu = recommend(
        &snapshot(vec![deployment_pod("web", 0, json!({})), hpa("cpu")]),
        &enough,
        &settings,
    );
    assert_eq!(on_cpu[0].status, WorkloadStatus::Ready);
    let change = &on_cpu[0].containers[0];
    assert_eq!(
        change.after.cpu_request_m, 1000,
        "the HPA's cpu target stays"
    );
    assert_eq!(change.after.mem_request_mib, 460);
    assert_eq!(change.held, ["cpu: an HPA scales on it"]);

    let both = recommend(
        &snapshot(vec![
            deployment_pod("web", 0, json!({})),
            hpa("cpu"),
            hpa("memory"),
        ]),
        &enough,
        &settings,
    );
    assert_eq!(both[0].status, WorkloadStatus::Skipped);

    let annotated = deployment_pod(
        "web",
        0,
        json!({"metadata": {"annotations": {"spotwise.io/rightsizing": "off"}}}),
    );
    let off = recommend(&snapshot(vec![annotated]), &enough, &settings);
    assert_eq!(
        (off[0].status, off[0].mode),
        (WorkloadStatus::Skipped, RightSizingMode::Off)
    );
    assert!(off[0].reason.contains("spotwise.io/rightsizing"));

    let bad = deployment_pod(
        "web",
        0,
        json!({"metadata": {"annotations": {"spotwise.io/rightsizing": "yes"}}}),
    );
    assert_eq!(
        recommend(&snapshot(vec![bad]), &enough, &settings)[0].mode,
        RightSizingMode::Off
    );

    let auto = deployment_pod(
        "web",
        0,
        json!({"metadata": {"annotations": {"spotwise.io/rightsizing": "auto"}}}),
    );
    assert_eq!(
        recommend(&snapshot(vec![auto]), &enough, &settings)[0].mode,
        RightSizingMode::Auto
    );

    let plain = snapshot(vec![deployment_pod("web", 0, json!({}))]);
    let excluded_ns = RightSizingSettings {
        excluded_namespaces: vec!["shop".into()],
        ..settings.clone()
    };
    assert!(
        recommend(&plain, &enough, &excluded_ns)[0]
            .reason
            .contains("namespace shop is excluded")
    );
    let excluded_label = RightSizingSettings {
        excluded_labels: BTreeMap::from([("app".into(), "web".into())]),
        ..settings.clone()
    };
    assert_eq!(
        recommend(&plain, &enough, &excluded_label)[0].status,
        WorkloadStatus::Skipped
    );
    let per_workload = RightSizingSettings {
        workloads: BTreeMap::from([("shop/Deployment/web".into(), RightSizingMode::Off)]),
        ..settings.clone()
    };
    assert_eq!(
        recommend(&plain, &enough, &per_workload)[0].mode,
        RightSizingMode::Off
    );
    let cluster_off = RightSizingSettings {
        mode: RightSizingMode::Off,
        ..settings
    };
    assert_eq!(
        recommend(&plain, &enough, &cluster_off)[0].status,
        WorkloadStatus::Skipped
    );
}

#[test]
fn small_changes_limits_policy_and_raised_headroom() {
    let enough = |cpu: u64, mem: u64| history(WEB, MONDAY - 2 * 86_400, 68, &[cpu], mem);
    let cluster = snapshot(vec![deployment_pod("web", 0, json!({}))]);
    let settings = RightSizingSettings::default();
    // p95 + 10% within 10% of 1000m, peak + 15% within 10% of 2 GiB.
    let close = recommend(&cluster, &enough(880, 1_800), &settings);
    assert_eq!(
        close[0].status,
        WorkloadStatus::Unchanged,
        "{}",
        close[0].reason
    );
    // Under-requested memory goes up; with limits unchanged, not above the limit.
    let unchanged_limits = RightSizingSettings {
        limits: LimitPolicy::Unchanged,
        ..settings.clone()
    };
    let up = recommend(&cluster, &enough(900, 3_000), &unchanged_limits);
    let change = &up[0].containers[0];
    assert_eq!(
        change.after.mem_request_mib, 3_072,
        "clamped at the 3 GiB limit"
    );
    assert_eq!(change.after.mem_limit_mib, Some(3_072));
    // A reverted workload gets 25% more memory headroom.
    let boosted = recommend_workloads(
        &cluster,
        &enough(150, 400),
        &settings,
        &RightSizingPolicy::default(),
        &BTreeMap::from([("shop/Deployment/web".to_owned(), 25)]),
    );
    assert_eq!(boosted[0].containers[0].after.mem_request_mib, 560);
}

#[test]
fn a_change_is_reverted_on_an_oom_kill_or_new_restarts_of_pods_on_the_new_requests() {
    let before = snapshot(vec![
        deployment_pod("web", 0, json!({})),
        deployment_pod("web", 1, json!({})),
    ]);
    let recs = recommend(
        &before,
        &history(WEB, MONDAY - 2 * 86_400, 68, &[150], 400),
        &RightSizingSettings::default(),
    );
    let tenant = spotwise_core::TenantId::new("t1").unwrap();
    let cluster = spotwise_core::ClusterId::new("c1").unwrap();
    let now = OffsetDateTime::now_utc();
    let change = ResizeChange::new(
        "01j".into(),
        (tenant, cluster),
        &recs[0],
        &before,
        "key:k1",
        60,
        now,
    );
    assert_eq!(change.status, ChangeStatus::Pending);
    assert_eq!(change.baseline_restarts, 1);
    let (cpu, mem) = (
        change.after()[0].cpu_request_m,
        change.after()[0].mem_request_mib,
    );
    let rolled = |extra: serde_json::Value| {
        deployment_pod(
            "web",
            0,
            merge_into(
                json!({"spec": {"containers": [{"name": "app",
            "resources": {"requests": {"cpu": format!("{cpu}m"), "memory": format!("{mem}Mi")}}}]}}),
                extra,
            ),
        )
    };
    // Half rolled, healthy: nothing to undo.
    let healthy = snapshot(vec![
        rolled(json!({"status": {"containerStatuses": [{"name": "app", "restartCount": 0}]}})),
        deployment_pod("web", 1, json!({})),
    ]);
    assert_eq!(change.rolled(&healthy), (1, 2));
    assert_eq!(change.regression(&healthy), None);
    // An old pod's restarts do not count against the change.
    let old_restarts = snapshot(vec![deployment_pod(
        "web",
        1,
        json!({"status": {"containerStatuses": [{"name": "app", "restartCount": 9}]}}),
    )]);
    assert_eq!(change.regression(&old_restarts), None);
    let oom = snapshot(vec![rolled(
        json!({"status": {"containerStatuses": [{"name": "app", "restartCount": 1,
        "lastState": {"terminated": {"reason": "OOMKilled"}}}]}}),
    )]);
    assert!(change.regression(&oom).unwrap().contains("OOMKilled"));
    let restarting = snapshot(vec![rolled(
        json!({"status": {"containerStatuses": [{"name": "app", "restartCount": 2}]}}),
    )]);
    assert!(
        change
            .regression(&restarting)
            .unwrap()
            .contains("restarted 2 times")
    );

    // Kept only once a snapshot from the end of the watch has been read.
    let mut watched = change.clone();
    assert!(!watched.watched_through(), "not applied yet");
    watched.watch_until = Some(now + time::Duration::minutes(60));
    watched.checked_taken_at = Some(now + time::Duration::minutes(55));
    assert!(!watched.watched_through());
    watched.checked_taken_at = Some(now + time::Duration::minutes(60));
    assert!(watched.watched_through());

    let mut state = ResizeState::default();
    state
        .workloads
        .entry("shop/Deployment/web".into())
        .or_default()
        .active = Some("01j".into());
    assert!(!state.auto_allowed("shop/Deployment/web", now));
    state.finish("shop/Deployment/web", true, now);
    assert_eq!(state.extra_mem_headroom()["shop/Deployment/web"], 25);
    assert!(
        !state.auto_allowed("shop/Deployment/web", now + time::Duration::days(1)),
        "a week between changes"
    );
    assert!(state.auto_allowed("shop/Deployment/web", now + time::Duration::days(8)));
    for _ in 0..10 {
        state.finish("shop/Deployment/web", true, now);
    }
    assert_eq!(
        state.extra_mem_headroom()["shop/Deployment/web"],
        100,
        "capped"
    );
}

fn merge_into(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    merge(&mut base, &extra);
    base
}

//! The whole flow on a fresh local stack, with assertions at each step.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use spotwise_flow::{ACCOUNT, PROD, REGION};
use spotwise_testkit::LocalStack;

#[tokio::test]
async fn discovery_to_savings_report_on_the_local_stack() {
    let stack = LocalStack::start();
    let report = spotwise_flow::run(&stack).await.unwrap();

    // Discovery found both clusters and every instance of both.
    assert_eq!(
        report.clusters_discovered,
        [
            format!("{ACCOUNT}.{REGION}.prod"),
            format!("{ACCOUNT}.{REGION}.staging")
        ]
    );
    let prod_nodes: i32 = PROD.iter().map(|g| g.count).sum();
    assert_eq!(
        report.nodes_discovered,
        usize::try_from(prod_nodes).unwrap() + 2
    );
    assert!(
        report.pools > 1000,
        "the shipped feeds price us-east-1: {}",
        report.pools
    );

    // The agent's snapshot holds every node and pod of the simulated cluster.
    assert_eq!(report.snapshot_nodes, usize::try_from(prod_nodes).unwrap());
    assert_eq!(report.snapshot_pods, 23 + report.snapshot_nodes);

    // The plan is cheaper, mostly spot, and places every pod.
    let summary = &report.recommendation["summary"];
    let (now, planned) = (
        report.monthly("current_monthly_cost"),
        report.monthly("monthly_cost"),
    );
    assert!(planned < now * 0.5, "{planned} vs {now}");
    assert!(
        (report.monthly("monthly_savings") - (now - planned)).abs() < 0.01,
        "{summary}"
    );
    assert_eq!(summary["placed_pods"], summary["pods"]);
    assert!(report.monthly("spot_cost_share") > 0.3, "{summary}");
    assert_eq!(report.recommendation["status"], "applying", "approved");

    // The rollout realised the plan: the planned mix runs, at the planned cost, every pod
    // Running, and no disruption budget was broken by any eviction or node removal.
    let rollout = &report.rollout;
    assert_eq!(rollout["status"], "completed", "{rollout:#}");
    let mut planned = std::collections::BTreeMap::new();
    for entry in report.recommendation["node_mix"].as_array().unwrap() {
        *planned
            .entry((
                entry["instance_type"].as_str().unwrap().to_owned(),
                entry["capacity_type"].as_str().unwrap().to_owned(),
            ))
            .or_insert(0_u32) += u32::try_from(entry["nodes"].as_u64().unwrap()).unwrap();
    }
    assert_eq!(report.mix_after, planned, "{rollout:#}");
    let (planned_hr, realised_hr) = (
        rollout["planned"]["cost_hr"].as_f64().unwrap(),
        rollout["realised"]["cost_hr"].as_f64().unwrap(),
    );
    assert!(
        (realised_hr / planned_hr - 1.0).abs() <= 0.03,
        "realised {realised_hr} vs planned {planned_hr}"
    );
    assert!(realised_hr < rollout["before"]["cost_hr"].as_f64().unwrap() * 0.6);
    assert_eq!(report.pods_pending, 0);
    assert_eq!(rollout["realised"]["pods_pending"], 0);
    assert!(report.evictions > 0);
    assert!(
        report.pdb_violations.is_empty(),
        "{:?}",
        report.pdb_violations
    );
    assert!(rollout["aws_calls"].as_u64().unwrap() > 0);

    // The interrupted spot node's group launched a replacement before the drain started; the
    // drained pods all run again, and once EC2 reclaimed the instance the group is back to its
    // size.
    assert_eq!(report.replacement_nodes.len(), 1, "{report:?}");
    assert_eq!(report.pods_after_interruption, 0);
    assert_eq!(report.group_after_reclaim.0, report.group_after_reclaim.1);
    assert_eq!(report.executed.len(), 1, "{:?}", report.executed);
    assert!(
        report.interruption_drain.starts_with("done: node "),
        "{}",
        report.interruption_drain
    );
    assert_eq!(report.node_after_drain["spec"]["unschedulable"], true);
    assert_eq!(
        report.node_after_drain["spec"]["taints"][0]["key"], "spotwise.io/interruption",
        "{}",
        report.node_after_drain
    );

    // Right-sizing: after a weekday of usage each workload is sized; an HPA's resource stays.
    use spotwise_flow::Report;
    use spotwise_flow::rightsize::{AUTOSCALED, KEPT, REVERTED};
    let ready = &report.rightsizing_ready;
    for workload in [KEPT, REVERTED, AUTOSCALED] {
        let w = Report::rightsizing_workload(ready, workload);
        assert_eq!(w["status"], "ready", "{workload}: {w}");
    }
    let reports = Report::rightsizing_workload(ready, AUTOSCALED);
    assert_eq!(
        reports["containers"][0]["after"]["cpu_request_m"], 250,
        "{reports}"
    );
    assert_eq!(
        reports["containers"][0]["held"][0],
        "cpu: an HPA scales on it"
    );
    let web = Report::rightsizing_workload(ready, KEPT);
    let (cpu, mem) = (
        web["containers"][0]["after"]["cpu_request_m"]
            .as_u64()
            .unwrap(),
        web["containers"][0]["after"]["mem_request_mib"]
            .as_u64()
            .unwrap(),
    );
    assert!(
        (66..=70).contains(&cpu) && mem == 345,
        "p95 60m + 10%, peak 300 MiB + 15%: {web}"
    );
    assert!(ready["ready_monthly_saving"].as_f64().unwrap() > 0.0);
    // The kept change is what the simulated cluster runs: template and every pod.
    let kept = &report.rightsized[KEPT];
    assert_eq!(kept["template"]["requests"]["memory"], "345Mi", "{kept}");
    assert!(
        kept["pods"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p == &kept["template"])
    );
    assert_eq!(report.rightsizing_change(KEPT)["status"], "kept");
    // The OOM-killed cache went back to its requests, and its next sizing has more headroom.
    let cache = report.rightsizing_change(REVERTED);
    assert_eq!(cache["status"], "reverted", "{cache}");
    assert!(
        cache["reason"].as_str().unwrap().contains("OOMKilled"),
        "{cache}"
    );
    assert_eq!(
        report.rightsized[REVERTED]["template"]["requests"]["memory"], "6144Mi",
        "6 GiB again"
    );
    let resized = Report::rightsizing_workload(&report.rightsizing, REVERTED);
    assert!(
        resized["reason"]
            .as_str()
            .unwrap()
            .contains("peak 1400 MiB + 40%"),
        "{resized}"
    );
    for action in [
        "rightsizing.request",
        "rightsizing.apply",
        "rightsizing.revert",
        "rightsizing.reverted",
        "rightsizing.keep",
    ] {
        assert!(
            report.rightsizing_audit.iter().any(|a| a == action),
            "{action}: {:?}",
            report.rightsizing_audit
        );
    }
    assert!(report.rightsizing_saving > 0.0);
    // The revert and the kept change were each announced once.
    assert_eq!(report.webhook_event_types.get("rightsizing"), Some(&2));
    assert!(
        report.plan_after_rightsizing < report.plan_before_rightsizing,
        "{} -> {}",
        report.plan_before_rightsizing,
        report.plan_after_rightsizing
    );
    assert_eq!(
        report.savings_report["rightsizing"][0]["workload"], KEPT,
        "{}",
        report.savings_report
    );

    // Every notification reached the receiver once, signed.
    assert_eq!(report.webhooks_received, report.webhooks_verified);
    for kind in [
        "rollout",
        "discovery_change",
        "recommendation_ready",
        "action_result",
        "interruption",
        "savings_report",
        "rightsizing",
    ] {
        assert!(
            report.webhook_event_types.contains_key(kind),
            "{kind}: {:?}",
            report.webhook_event_types
        );
    }

    // The hour's cost is split over the namespaces, and the month has its report.
    let names: Vec<&str> = report
        .namespace_costs
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    for namespace in ["shop", "payments", "batch", "data", "kube-system"] {
        assert!(names.contains(&namespace), "{names:?}");
    }
    assert!(
        report
            .namespace_costs
            .windows(2)
            .all(|pair| pair[0].1 >= pair[1].1),
        "the largest namespace first: {:?}",
        report.namespace_costs
    );
    assert!(report.savings_report["hours_covered"].as_u64().unwrap() >= 1);
    // The savings report shows the realised plan beside its projection.
    let realised = &report.savings_report["rollouts"][0];
    assert_eq!(
        realised["revision"], rollout["revision"],
        "{}",
        report.savings_report
    );
    let saving: f64 = realised["monthly_saving"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(saving > 0.0, "{realised}");

    let page = spotwise_flow::html::render(&report);
    assert!(page.contains("<svg") && page.contains(&report.cluster_id));
}

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

    // The approved wave and the interruption drain were executed by the agent.
    assert!(!report.approved_actions.is_empty());
    assert_eq!(
        report.executed.len(),
        report.approved_actions.len() + 1,
        "{:?}",
        report.executed
    );
    assert_eq!(
        report.executed_ok(),
        report.executed.len(),
        "{:?}",
        report.executed
    );
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

    // Every notification reached the receiver once, signed.
    assert_eq!(report.webhooks_received, report.webhooks_verified);
    for kind in [
        "discovery_change",
        "recommendation_ready",
        "action_result",
        "interruption",
        "savings_report",
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
    assert_eq!(names[0], "shop", "the largest namespace first");
    assert!(report.savings_report["hours_covered"].as_u64().unwrap() >= 1);

    let page = spotwise_flow::html::render(&report);
    assert!(page.contains("<svg") && page.contains(&report.cluster_id));
}

//! Rollouts on a cluster that Karpenter runs: Spotwise applies its NodePools through the
//! agent, holds the planned nodes with placeholder pods that the simulated Karpenter launches
//! them for, drains the replaced nodes into them, and Karpenter removes the emptied ones; a customer NodePool that has a name Spotwise would
//! use is never touched; a cluster without Karpenter falls back to managed node groups.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use serde_json::{Value, json};
use spotwise_core::ClusterId;
use spotwise_core::domain::CapacityType;
use spotwise_flow::{Report, Shape, run_karpenter, setup, setup_shaped};
use spotwise_optimizer::rollout::group_name;
use spotwise_testkit::LocalStack;
use time::OffsetDateTime;

/// The planned mix as (instance type, zone, capacity type) → nodes.
fn mix(figures: &Value) -> BTreeMap<(String, String, String), u64> {
    let mut mix = BTreeMap::new();
    for entry in figures["mix"].as_array().unwrap() {
        *mix.entry((
            entry["instance_type"].as_str().unwrap().to_owned(),
            entry["zone"].as_str().unwrap().to_owned(),
            entry["capacity_type"].as_str().unwrap().to_owned(),
        ))
        .or_default() += entry["nodes"].as_u64().unwrap();
    }
    mix
}

/// Whether one of the rollout's events says `text`.
fn has_event(rollout: &Value, text: &str) -> bool {
    rollout["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["message"].as_str().unwrap().contains(text))
}

fn customer_pools(pools: &BTreeMap<String, Value>) -> BTreeMap<String, Vec<u8>> {
    pools
        .iter()
        .filter(|(_, p)| p["metadata"]["labels"]["spotwise.io/managed"] != "true")
        .map(|(name, p)| (name.clone(), serde_json::to_vec(p).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_is_realised_through_karpenter_node_pools() {
    let stack = LocalStack::start();
    let pools_before = customer_pools(&initial_pools());
    assert_eq!(pools_before.len(), 3);

    let (report, rig) = run_karpenter(&stack).await.unwrap();
    let rollout = &report.rollout;
    assert_eq!(rollout["backend"], "karpenter", "{rollout:#}");
    assert_eq!(rollout["status"], "completed", "{rollout:#}");
    // The placeholders had Karpenter launch the planned nodes before the drains, and the pods
    // took their places: the realised mix is the plan's, and so is the cost.
    assert_eq!(
        mix(&rollout["realised"]),
        mix(&rollout["planned"]),
        "{rollout:#}"
    );
    let realised = rollout["realised"]["cost_hr"].as_f64().unwrap();
    let planned = rollout["planned"]["cost_hr"].as_f64().unwrap();
    assert!(
        (realised - planned).abs() <= planned * 0.03,
        "realised ${realised}/h for ${planned}/h planned"
    );
    assert!(realised < rollout["before"]["cost_hr"].as_f64().unwrap());
    // Every placeholder is gone: preempted by the pods or released at the end.
    assert!(
        !rig.fake
            .state()
            .pods
            .values()
            .any(|p| p["metadata"]["labels"]["spotwise.io/reservation"].is_string()),
        "placeholders left"
    );
    assert!(
        rig.fake.state().preemptions > 0,
        "the pods took the placeholders' places"
    );
    assert_eq!(report.pods_pending, 0);
    assert!(
        report.pdb_violations.is_empty(),
        "{:?}",
        report.pdb_violations
    );
    assert!(report.evictions > 0);

    let state = rig.fake.state();
    let karpenter = state.karpenter.as_ref().unwrap();
    // The customer's own NodePools are untouched, byte for byte; Spotwise's carry its label
    // and Spotwise's node template, weighed above the customer's.
    let pools = customer_pools(&karpenter.node_pools);
    assert_eq!(
        pools.keys().collect::<Vec<_>>(),
        ["compute", "general", "spot"]
    );
    let ours: Vec<&Value> = karpenter
        .node_pools
        .values()
        .filter(|p| p["metadata"]["labels"]["spotwise.io/managed"] == "true")
        .collect();
    assert_eq!(ours.len(), rollout["groups"].as_array().unwrap().len());
    for pool in &ours {
        assert!(pool["spec"]["weight"].as_u64().unwrap() > 0);
        assert_eq!(
            pool["spec"]["template"]["spec"]["nodeClassRef"]["name"],
            "default"
        );
        assert!(pool["spec"]["limits"]["cpu"].is_string());
    }
    // Every node of the cluster now is Karpenter's, from Spotwise's pools or kept.
    let replaced: Vec<&str> = rollout["replaced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(!replaced.is_empty());
    for name in &replaced {
        assert!(
            !state.nodes.contains_key(*name),
            "{name} was removed by Karpenter"
        );
    }
    assert_eq!(
        customer_pools(&state.karpenter.as_ref().unwrap().node_pools),
        pools_before,
        "the customer's NodePools changed"
    );
}

/// The customer NodePools a Karpenter cluster of the flow starts with.
fn initial_pools() -> BTreeMap<String, Value> {
    let mut state = spotwise_testkit::kube::KubeState::default();
    spotwise_flow::cluster::karpenterize(&mut state, spotwise_flow::PROD);
    state.karpenter.unwrap().node_pools
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_node_pool_with_a_spotwise_name_is_refused_and_the_rollout_rolled_back() {
    let stack = LocalStack::start();
    let mut report = Report::default();
    let mut rig = setup_shaped(&stack, &mut report, &Shape::karpenter())
        .await
        .unwrap();
    // The customer made a NodePool of the name Spotwise gives the plan's first pool.
    let first = &report.recommendation["node_mix"][0];
    let name = group_name(
        &ClusterId::new(&report.cluster_id).unwrap(),
        rig.revision,
        if first["capacity_type"] == "spot" {
            CapacityType::Spot
        } else {
            CapacityType::OnDemand
        },
        first["zone"].as_str().unwrap(),
        first["instance_type"].as_str().unwrap(),
        false,
    );
    let theirs = json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": name, "resourceVersion": "3", "labels": {"team": "data"}},
        "spec": {"template": {"spec": {"requirements": [],
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}}}}
    });
    rig.fake
        .state()
        .karpenter
        .as_mut()
        .unwrap()
        .node_pools
        .insert(name.clone(), theirs.clone());
    let before = customer_pools(&rig.fake.state().karpenter.as_ref().unwrap().node_pools);

    rig.approve().await.unwrap();
    let rollout = rig.drive(10, |_| OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(rollout["status"], "rolled_back", "{rollout:#}");
    let reason = rollout["reason"].as_str().unwrap();
    assert!(
        reason.contains(&name) && reason.contains("is not Spotwise's"),
        "{reason}"
    );
    let state = rig.fake.state();
    let pools = &state.karpenter.as_ref().unwrap().node_pools;
    assert_eq!(pools[&name], theirs, "their NodePool is left as it was");
    assert_eq!(customer_pools(pools), before);
    assert!(
        pools
            .values()
            .all(|p| p["metadata"]["labels"]["spotwise.io/managed"] != "true"),
        "every NodePool Spotwise applied is deleted again"
    );
    assert!(
        state
            .nodes
            .values()
            .all(|n| n["spec"]["unschedulable"] != true),
        "no node left cordoned"
    );
    assert_eq!(state.evictions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_karpenter_the_karpenter_backend_is_refused_and_auto_uses_node_groups() {
    let stack = LocalStack::start();
    let mut report = Report::default();
    let rig = setup(&stack, &mut report).await.unwrap();
    let policy_path = format!("/v1/clusters/{}/policy", rig.cluster);
    let mut policy = rig.api.get(&policy_path).await.unwrap();
    assert_eq!(policy["rollout_backend"], "auto");
    policy["rollout_backend"] = json!("karpenter");
    rig.api.put(&policy_path, policy.clone()).await.unwrap();
    let approve = format!(
        "/v1/clusters/{}/recommendations/{}/approve",
        rig.cluster, rig.revision
    );
    let (status, body) = rig
        .api
        .send(reqwest::Method::POST, &approve, Some(json!({})))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"]["code"], "rollout_backend_unavailable",
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Karpenter not installed"),
        "{body}"
    );

    policy["rollout_backend"] = json!("auto");
    rig.api.put(&policy_path, policy).await.unwrap();
    let approved = rig.approve().await.unwrap();
    assert_eq!(approved["rollout"]["backend"], "managed-node-groups");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_fall_to_the_customers_pools_without_spot_go_back_to_spot_later() {
    let stack = LocalStack::start();
    let mut report = Report::default();
    let mut rig = setup_shaped(&stack, &mut report, &Shape::karpenter())
        .await
        .unwrap();
    {
        let mut state = rig.fake.state();
        let karpenter = state.karpenter.as_mut().unwrap();
        karpenter.no_capacity = karpenter
            .offerings
            .iter()
            .filter(|o| o.capacity_type == "spot")
            .map(|o| {
                (
                    o.instance_type.clone(),
                    o.zone.clone(),
                    o.capacity_type.clone(),
                )
            })
            .collect();
    }
    rig.approve().await.unwrap();
    // Two minutes a round: the spot placeholders wait for nodes that never come, and after
    // the capacity timeout the drains go on without them.
    let start = OffsetDateTime::now_utc();
    let minutes = |round: usize| time::Duration::minutes(2 * i64::try_from(round).unwrap());
    let rollout = rig.drive(40, |round| start + minutes(round)).await.unwrap();
    assert_eq!(rollout["status"], "completed", "{rollout:#}");
    assert!(
        has_event(&rollout, "planned node(s) launched after 10 min"),
        "{rollout:#}"
    );
    assert_eq!(rollout["realised"]["spot_nodes"], 0, "{rollout:#}");
    let reason = rollout["reason"].as_str().unwrap();
    assert!(
        reason.contains("came from the customer's NodePools"),
        "{reason}"
    );
    assert!(rollout["spot_retry_at"].is_string());
    let on_demand = rollout["realised"]["cost_hr"].as_f64().unwrap();
    assert_eq!(report.pods_pending, 0);

    // Spot is back; an hour later the fallback nodes' pods move to Spotwise's spot pools.
    rig.fake
        .state()
        .karpenter
        .as_mut()
        .unwrap()
        .no_capacity
        .clear();
    let later = |round| start + time::Duration::hours(2) + minutes(round);
    let rollout = rig.drive(40, later).await.unwrap();
    assert_eq!(rollout["status"], "completed", "{rollout:#}");
    assert!(has_event(&rollout, "trying spot again"), "{rollout:#}");
    assert!(
        rollout["realised"]["spot_nodes"].as_u64().unwrap() > 0,
        "{rollout:#}"
    );
    assert!(rollout["realised"]["cost_hr"].as_f64().unwrap() < on_demand);
    assert!(rig.fake.state().pending().is_empty());
    assert!(rig.fake.state().pdb_violations.is_empty());
}

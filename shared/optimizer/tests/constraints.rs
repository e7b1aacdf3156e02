#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Placement constraints in the plan and in consolidation. Each case is one where ignoring the
//! constraint gives a cheaper plan, so a planner that ignored it would be caught.

use std::collections::{BTreeMap, BTreeSet};

use spotwise_core::domain::CapacityType;
use spotwise_core::placement::{
    AffinityKind, LabelSelector, PodAffinityTerm, SpreadConstraint, Topology, ZONE, ZonalVolume,
};
use spotwise_optimizer::Plan;
use spotwise_optimizer::consolidation::{self, Step};
use spotwise_optimizer::model::{CurrentNode, Offering, PlanInput, PlanPolicy, PodSpec};
use spotwise_optimizer::plan::PlannedNode;
use spotwise_optimizer::plan::plan as planned;

const ZONES: [(&str, f64); 3] = [
    ("us-east-1a", 1.0),
    ("us-east-1b", 1.05),
    ("us-east-1c", 1.1),
];

fn offering(itype: &str, zone: &str, capacity: CapacityType, cpu_m: u64, price: f64) -> Offering {
    serde_json::from_value(serde_json::json!({
        "instance_type": itype, "zone": zone, "capacity_type": capacity,
        "cpu_m": cpu_m, "mem_mib": cpu_m * 4, "max_pods": 29, "price_hr": price,
        "interruption_band": 0
    }))
    .unwrap()
}

/// m5 sizes in three zones, spot cheapest in zone a; on-demand alike everywhere.
fn catalogue() -> Vec<Offering> {
    let mut all = Vec::new();
    for (zone, factor) in ZONES {
        for (itype, cpu_m, on_demand) in [
            ("m5.large", 1930, 0.096),
            ("m5.xlarge", 3920, 0.192),
            ("m5.2xlarge", 7910, 0.384),
        ] {
            all.push(offering(
                itype,
                zone,
                CapacityType::Spot,
                cpu_m,
                on_demand * 0.4 * factor,
            ));
            all.push(offering(
                itype,
                zone,
                CapacityType::OnDemand,
                cpu_m,
                on_demand,
            ));
        }
    }
    all
}

fn pod(name: &str, cpu_m: u64, app: &str) -> PodSpec {
    PodSpec {
        name: name.into(),
        cpu_m,
        mem_mib: cpu_m,
        spot_ok: true,
        labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        ..PodSpec::default()
    }
}

fn replicas(app: &str, n: usize, cpu_m: u64) -> Vec<PodSpec> {
    (0..n)
        .map(|i| pod(&format!("shop/{app}-{i}"), cpu_m, app))
        .collect()
}

fn selector(app: &str) -> LabelSelector {
    LabelSelector {
        match_labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        ..LabelSelector::default()
    }
}

fn term(kind: AffinityKind, topology: Topology, app: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        kind,
        topology,
        selector: selector(app),
        namespaces: Vec::new(),
        weight: None,
    }
}

fn spread(topology: Topology, max_skew: u32, app: &str) -> SpreadConstraint {
    SpreadConstraint {
        max_skew,
        topology,
        selector: selector(app),
        hard: true,
        min_domains: None,
    }
}

fn input(pods: Vec<PodSpec>) -> PlanInput {
    PlanInput {
        pods,
        offerings: catalogue(),
        policy: PlanPolicy {
            max_interruption_band: 4,
            min_spot_pools: 1,
            ..PlanPolicy::default()
        },
        ..PlanInput::default()
    }
}

/// The same input with every placement constraint dropped.
fn ignoring_constraints(input: &PlanInput) -> PlanInput {
    let mut plain = input.clone();
    for pod in &mut plain.pods {
        pod.affinity.clear();
        pod.spread.clear();
        pod.volumes.clear();
    }
    plain
}

fn node_of<'a>(plan: &'a Plan, pod: &str) -> &'a PlannedNode {
    plan.nodes
        .iter()
        .find(|n| n.pods.iter().any(|p| p == pod))
        .unwrap_or_else(|| panic!("{pod} is not placed: {:?}", plan.unschedulable))
}

/// Plans both ways and checks that the constraint is what costs the difference.
fn plan_dearer_than_ignoring(input: &PlanInput) -> Plan {
    let constrained = planned(input);
    let ignoring = planned(&ignoring_constraints(input));
    assert!(
        constrained.cost_hr > ignoring.cost_hr + 1e-9,
        "ignoring the constraint must be cheaper: {} vs {}",
        constrained.cost_hr,
        ignoring.cost_hr
    );
    constrained
}

fn per_zone(plan: &Plan, app: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in &plan.nodes {
        let n = node
            .pods
            .iter()
            .filter(|p| p.contains(&format!("/{app}-")))
            .count();
        if n > 0 {
            *counts.entry(node.zone.clone()).or_default() += n;
        }
    }
    counts
}

#[test]
fn hostname_anti_affinity_puts_each_replica_on_its_own_node() {
    let mut pods = replicas("web", 3, 300);
    for p in &mut pods {
        p.affinity
            .push(term(AffinityKind::AntiAffinity, Topology::Hostname, "web"));
    }
    pods.extend(replicas("batch", 4, 300));
    let plan = plan_dearer_than_ignoring(&input(pods));
    let nodes: BTreeSet<*const PlannedNode> = (0..3)
        .map(|i| node_of(&plan, &format!("shop/web-{i}")) as *const _)
        .collect();
    assert_eq!(nodes.len(), 3, "three replicas, three nodes");
    assert!(plan.unschedulable.is_empty());
}

#[test]
fn a_pod_that_anti_affinity_keeps_out_does_not_join_the_node() {
    // The guard's term names the batch pods; the batch pods have no term of their own, yet
    // they may not join the guard's node (the scheduler checks the term both ways).
    let mut guard = pod("shop/guard-0", 300, "guard");
    guard.affinity.push(term(
        AffinityKind::AntiAffinity,
        Topology::Hostname,
        "batch",
    ));
    let mut pods = vec![guard];
    pods.extend(replicas("batch", 2, 300));
    let plan = plan_dearer_than_ignoring(&input(pods));
    let guard_node = node_of(&plan, "shop/guard-0");
    assert_eq!(guard_node.pods, ["shop/guard-0"]);
}

#[test]
fn zone_anti_affinity_uses_a_zone_per_replica_and_names_the_rule_when_zones_run_out() {
    let mut pods = replicas("db", 4, 300);
    for p in &mut pods {
        p.affinity
            .push(term(AffinityKind::AntiAffinity, Topology::Zone, "db"));
    }
    let plan = plan_dearer_than_ignoring(&input(pods));
    let zones = per_zone(&plan, "db");
    assert_eq!(zones.len(), 3, "{zones:?}");
    assert!(zones.values().all(|&n| n == 1));
    assert_eq!(plan.unschedulable.len(), 1, "four replicas, three zones");
    assert!(
        plan.unschedulable[0]
            .reason
            .starts_with("podAntiAffinity on topology.kubernetes.io/zone (app=db)"),
        "{}",
        plan.unschedulable[0].reason
    );
}

#[test]
fn zone_spread_keeps_the_skew_and_prefers_cheap_zones_within_it() {
    let mut pods = replicas("api", 7, 300);
    for p in &mut pods {
        p.spread.push(spread(Topology::Zone, 1, "api"));
    }
    let plan = plan_dearer_than_ignoring(&input(pods));
    let zones = per_zone(&plan, "api");
    assert_eq!(zones.len(), 3);
    let (min, max) = (
        zones.values().min().copied().unwrap_or(0),
        zones.values().max().copied().unwrap_or(0),
    );
    assert!(max - min <= 1, "{zones:?}");
    assert_eq!(
        zones["us-east-1a"], 3,
        "the extra replica goes to the cheapest zone"
    );
}

#[test]
fn min_domains_counts_missing_zones_as_empty() {
    // Two zones offered, three required: the lowest count is taken as zero, so each zone holds
    // at most maxSkew replicas and the third cannot run.
    let mut input = input(replicas("queue", 3, 300));
    input.offerings.retain(|o| o.zone != "us-east-1c");
    for p in &mut input.pods {
        p.spread.push(SpreadConstraint {
            min_domains: Some(3),
            ..spread(Topology::Zone, 1, "queue")
        });
    }
    let plan = planned(&input);
    assert_eq!(plan.unschedulable.len(), 1);
    assert!(
        plan.unschedulable[0].reason.contains("minDomains 3"),
        "{}",
        plan.unschedulable[0].reason
    );
    assert_eq!(per_zone(&plan, "queue").len(), 2);
}

#[test]
fn hostname_spread_caps_replicas_per_node() {
    let mut pods = replicas("worker", 6, 200);
    for p in &mut pods {
        p.spread.push(spread(Topology::Hostname, 2, "worker"));
    }
    let plan = plan_dearer_than_ignoring(&input(pods));
    for node in &plan.nodes {
        assert!(node.pods.len() <= 2, "{:?}", node.pods);
    }
}

#[test]
fn required_pod_affinity_on_hostname_shares_a_node_with_a_matching_pod() {
    // The cache runs on-demand and fills most of an m5.large; the proxy may run on spot, which
    // alone would be cheapest, but must sit beside a cache pod: the cache's node grows.
    let mut cache = pod("shop/cache-0", 1800, "cache");
    cache.spot_ok = false;
    let mut proxy = pod("shop/proxy-0", 600, "proxy");
    proxy
        .affinity
        .push(term(AffinityKind::Affinity, Topology::Hostname, "cache"));
    let plan = plan_dearer_than_ignoring(&input(vec![cache, proxy]));
    let node = node_of(&plan, "shop/proxy-0");
    assert!(node.pods.iter().any(|p| p == "shop/cache-0"), "{node:?}");
    assert_eq!(node.instance_type, "m5.xlarge");

    let mut lonely = pod("shop/proxy-1", 100, "proxy");
    lonely
        .affinity
        .push(term(AffinityKind::Affinity, Topology::Hostname, "missing"));
    let plan = planned(&input(vec![lonely]));
    assert_eq!(plan.unschedulable.len(), 1);
    assert!(
        plan.unschedulable[0]
            .reason
            .starts_with("podAffinity on kubernetes.io/hostname (app=missing)"),
        "{}",
        plan.unschedulable[0].reason
    );
}

#[test]
fn a_group_that_selects_itself_starts_on_one_node_and_stays_together() {
    let mut pods = replicas("shard", 3, 400);
    for p in &mut pods {
        p.affinity
            .push(term(AffinityKind::Affinity, Topology::Hostname, "shard"));
    }
    let plan = planned(&input(pods));
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    let node = node_of(&plan, "shop/shard-0");
    assert_eq!(node.pods.len(), 3, "{node:?}");
}

#[test]
fn zone_affinity_follows_the_matching_pods_zone() {
    let mut server = pod("shop/server-0", 1800, "server");
    server
        .node_selector
        .insert(ZONE.into(), "us-east-1c".into());
    let mut client = pod("shop/client-0", 300, "client");
    client
        .affinity
        .push(term(AffinityKind::Affinity, Topology::Zone, "server"));
    let mut pods = vec![server, client];
    // The server's node has no room left; beside these, in the cheap zone, the client would fit.
    pods.extend(replicas("filler", 5, 300));
    let plan = plan_dearer_than_ignoring(&input(pods));
    assert_eq!(node_of(&plan, "shop/client-0").zone, "us-east-1c");
}

#[test]
fn a_pod_bound_to_a_zonal_volume_stays_in_its_zone() {
    let mut db = pod("shop/db-0", 1500, "db");
    db.volumes.push(ZonalVolume {
        claim: "data-db-0".into(),
        zones: vec!["us-east-1c".into()],
    });
    let mut pods = vec![db];
    pods.extend(replicas("web", 2, 200));
    let plan = plan_dearer_than_ignoring(&input(pods));
    assert_eq!(node_of(&plan, "shop/db-0").zone, "us-east-1c");

    let mut stranded = pod("shop/db-1", 300, "db");
    stranded.volumes.push(ZonalVolume {
        claim: "data-db-1".into(),
        zones: vec!["us-east-1f".into()],
    });
    let plan = planned(&input(vec![stranded]));
    assert_eq!(
        plan.unschedulable[0].reason,
        "bound to volume data-db-1 in us-east-1f, where no allowed offering is"
    );
}

#[test]
fn preferred_terms_only_break_ties() {
    // On-demand prices the same in every zone: the preference spreads the two replicas. On spot,
    // zone a is cheaper, so the preference does not move a replica to a dearer zone.
    let preferred = |spot_ok: bool| {
        let mut pods = replicas("cache", 2, 300);
        for p in &mut pods {
            p.spot_ok = spot_ok;
            p.affinity.push(PodAffinityTerm {
                weight: Some(50),
                ..term(AffinityKind::AntiAffinity, Topology::Zone, "cache")
            });
        }
        planned(&input(pods))
    };
    assert_eq!(per_zone(&preferred(false), "cache").len(), 2);
    assert_eq!(per_zone(&preferred(true), "cache").len(), 1);
}

#[test]
fn burstable_and_previous_generation_types_follow_the_policy_switches() {
    let mut offerings = catalogue();
    offerings.push(offering(
        "t3.large",
        "us-east-1a",
        CapacityType::Spot,
        1930,
        0.02,
    ));
    offerings.push(offering(
        "m3.large",
        "us-east-1a",
        CapacityType::Spot,
        1930,
        0.021,
    ));
    let with = |exclude_burstable: bool, exclude_previous_generation: bool| {
        planned(&PlanInput {
            offerings: offerings.clone(),
            policy: PlanPolicy {
                exclude_burstable,
                exclude_previous_generation,
                ..input(Vec::new()).policy
            },
            ..input(replicas("web", 4, 400))
        })
    };
    let types = |plan: &Plan| -> BTreeSet<String> {
        plan.nodes.iter().map(|n| n.instance_type.clone()).collect()
    };
    assert_eq!(
        types(&with(false, false)),
        BTreeSet::from(["t3.large".into()])
    );
    assert!(PlanPolicy::default().exclude_burstable, "on by default");
    let default = with(true, false);
    assert_eq!(types(&default), BTreeSet::from(["m3.large".into()]));
    let current = with(true, true);
    assert!(current.cost_hr > default.cost_hr);
    assert!(types(&current).iter().all(|t| t.starts_with("m5.")));

    let only_burstable = planned(&PlanInput {
        offerings: vec![offering(
            "t3.large",
            "us-east-1a",
            CapacityType::Spot,
            1930,
            0.02,
        )],
        ..input(replicas("web", 1, 100))
    });
    assert_eq!(
        only_burstable.unschedulable[0].reason,
        "every offering is excluded: burstable types are excluded by policy (exclude_burstable)"
    );
}

fn current_node(name: &str, zone: &str) -> CurrentNode {
    CurrentNode {
        name: name.into(),
        instance_id: None,
        instance_type: "m5.large".into(),
        zone: zone.into(),
        capacity_type: CapacityType::OnDemand,
        cpu_m: 1930,
        mem_mib: 7720,
        max_pods: 29,
        gpus: 0,
        price_hr: Some(0.096),
        labels: BTreeMap::from([(ZONE.to_owned(), zone.to_owned())]),
        taints: Vec::new(),
        unschedulable: false,
        not_ready: false,
        do_not_disrupt: false,
    }
}

fn on(mut pod: PodSpec, node: &str) -> PodSpec {
    pod.node = Some(node.into());
    pod
}

fn removed(c: &consolidation::Consolidation) -> Vec<String> {
    c.steps
        .iter()
        .filter(|s| matches!(s, Step::Remove { .. }))
        .map(|s| s.node().to_owned())
        .collect()
}

/// Consolidation with the pods' constraints, checking that ignoring them would drain more.
fn removals(input: &PlanInput) -> (Vec<String>, consolidation::Consolidation) {
    let ignoring = consolidation::plan(&ignoring_constraints(input));
    let constrained = consolidation::plan(input);
    assert!(
        removed(&ignoring).len() > removed(&constrained).len(),
        "ignoring the constraint must drain more"
    );
    (removed(&constrained), constrained)
}

#[test]
fn consolidation_never_drains_replicas_onto_one_node_against_anti_affinity() {
    let mut web = replicas("web", 2, 300);
    for p in &mut web {
        p.affinity
            .push(term(AffinityKind::AntiAffinity, Topology::Hostname, "web"));
    }
    let input = PlanInput {
        pods: vec![on(web[0].clone(), "n1"), on(web[1].clone(), "n2")],
        current_nodes: vec![
            current_node("n1", "us-east-1a"),
            current_node("n2", "us-east-1a"),
        ],
        ..input(Vec::new())
    };
    let (removed, consolidation) = removals(&input);
    assert!(removed.is_empty());
    assert_eq!(consolidation.blocked.len(), 2);
    assert!(
        consolidation.blocked[0]
            .reason
            .ends_with("would break podAntiAffinity on kubernetes.io/hostname (app=web)"),
        "{}",
        consolidation.blocked[0].reason
    );
}

#[test]
fn consolidation_keeps_pods_with_their_volumes_and_the_zone_spread() {
    let mut db = pod("shop/db-0", 300, "db");
    db.volumes.push(ZonalVolume {
        claim: "data-db-0".into(),
        zones: vec!["us-east-1b".into()],
    });
    // The emptiest node runs the database; ignoring its volume, the database would move to the
    // other zone and its node would go. Respecting it, the other node's pod moves instead.
    let input_volume = PlanInput {
        pods: vec![on(db, "n1"), on(pod("shop/web-0", 1000, "web"), "n2")],
        current_nodes: vec![
            current_node("n1", "us-east-1b"),
            current_node("n2", "us-east-1a"),
        ],
        ..input(Vec::new())
    };
    assert_eq!(
        removed(&consolidation::plan(&ignoring_constraints(&input_volume))),
        ["n1"]
    );
    let consolidation = consolidation::plan(&input_volume);
    assert_eq!(removed(&consolidation), ["n2"]);
    assert!(
        consolidation
            .blocked
            .iter()
            .any(|b| b.node == "n1" && b.reason.contains("volume data-db-0 (only in us-east-1b)")),
        "{:?}",
        consolidation.blocked
    );

    // One replica per zone with minDomains 3: moving the third zone's replica away would leave
    // two zones, so the skew counts against an empty third zone.
    let mut api = replicas("api", 3, 300);
    for p in &mut api {
        p.spread.push(SpreadConstraint {
            min_domains: Some(3),
            ..spread(Topology::Zone, 1, "api")
        });
    }
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let input_spread = PlanInput {
        pods: api
            .into_iter()
            .zip(["n1", "n2", "n3"])
            .map(|(p, n)| on(p, n))
            .collect(),
        current_nodes: zones
            .iter()
            .zip(["n1", "n2", "n3"])
            .map(|(z, n)| current_node(n, z))
            .collect(),
        ..input(Vec::new())
    };
    let (removed, consolidation) = removals(&input_spread);
    assert!(removed.is_empty(), "{removed:?}");
    assert!(
        consolidation.blocked[0]
            .reason
            .contains("topologySpreadConstraint maxSkew 1 on topology.kubernetes.io/zone (app=api), minDomains 3"),
        "{:?}",
        consolidation.blocked
    );
}

//! Node and workload actions: cordon, label, taint, scale; dry runs and final failures.

use super::*;

#[tokio::test]
async fn cordon_is_visible_on_the_next_get_and_uncordon_reverts_it() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, false);
    let node = "ip-10-0-1-17.ec2.internal";
    let now = OffsetDateTime::now_utc();

    let outcome = agent.handle(&signed(action(cordon_node(node))), now).await;
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
    assert_eq!(kube.node(node)["spec"]["unschedulable"], true);

    // Duplicate delivery is harmless.
    let outcome = agent.handle(&signed(action(cordon_node(node))), now).await;
    assert!(matches!(outcome, Outcome::Done { .. }));

    agent
        .handle(&signed(action(uncordon_node(node))), now)
        .await;
    assert_eq!(kube.node(node)["spec"]["unschedulable"], false);
    assert_eq!(
        kube.node("ip-10-0-2-9.ec2.internal")["spec"].get("unschedulable"),
        None,
        "other nodes untouched"
    );
}

#[tokio::test]
async fn label_and_taint_are_applied_once() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, false);
    let node = "ip-10-0-2-9.ec2.internal";
    let now = OffsetDateTime::now_utc();

    let label = action(ActionSpec::Label {
        node: node.into(),
        labels: BTreeMap::from([("spotwise.io/managed".into(), Some("true".into()))]),
    });
    assert!(matches!(
        agent.handle(&signed(label), now).await,
        Outcome::Done { .. }
    ));
    assert_eq!(
        kube.node(node)["metadata"]["labels"]["spotwise.io/managed"],
        "true"
    );
    assert_eq!(
        kube.node(node)["metadata"]["labels"]["kubernetes.io/hostname"],
        node,
        "merge keeps other labels"
    );

    for _ in 0..2 {
        let taint = ActionSpec::Taint {
            node: node.into(),
            taint: interruption_taint(),
        };
        let outcome = agent.handle(&signed(action(taint)), now).await;
        assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
    }
    let taints = kube.node(node)["spec"]["taints"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(taints.len(), 1);
    assert_eq!(taints[0]["key"], "spotwise.io/interruption");

    // A typed label cannot carry a number; an earlier-form message that does is refused by name.
    let bad = legacy_signed(
        "label",
        json!({"type": "node", "name": node}),
        json!({"labels": {"x": 1}}),
    );
    assert!(
        matches!(agent.handle(&bad, now).await, Outcome::Rejected { reason, .. } if reason.contains("params.labels"))
    );
}

#[tokio::test]
async fn scale_sets_replicas_through_the_scale_subresource() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, false);
    let outcome = agent
        .handle(&signed(action(scale_web(0))), OffsetDateTime::now_utc())
        .await;
    assert!(
        matches!(outcome, Outcome::Done { ref detail, previous_replicas: Some(3), .. } if detail.contains("scaled from 3 to 0")),
        "{outcome:?}"
    );
    assert_eq!(kube.state().replicas["shop/web"], 0);
}

#[tokio::test]
async fn dry_run_reports_without_calling_the_api() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, true);
    let outcome = agent
        .handle(
            &signed(action(cordon_node("ip-10-0-1-17.ec2.internal"))),
            OffsetDateTime::now_utc(),
        )
        .await;
    assert!(
        matches!(outcome, Outcome::WouldDo { ref detail, .. } if detail == "cordon node ip-10-0-1-17.ec2.internal"),
        "{outcome:?}"
    );
    assert!(kube.requests().is_empty());
}

#[tokio::test]
async fn missing_node_is_a_final_failure() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, false);
    let outcome = agent
        .handle(
            &signed(action(cordon_node("gone"))),
            OffsetDateTime::now_utc(),
        )
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                retryable: false,
                ..
            }
        ),
        "{outcome:?}"
    );
}

fn reservation(nodes: u32) -> spotwise_core::karpenter::NodeReservation {
    spotwise_core::karpenter::NodeReservation {
        node_pool: "spotwise-spot-00aa11bb22".into(),
        capacity_type: spotwise_core::domain::CapacityType::Spot,
        nodes,
        placeholders: vec![
            spotwise_core::karpenter::Placeholder {
                cpu_m: 1_900,
                mem_mib: 5_800,
                count: nodes,
            },
            spotwise_core::karpenter::Placeholder {
                cpu_m: 450,
                mem_mib: 950,
                count: 3 * nodes,
            },
        ],
    }
}

#[tokio::test]
async fn reserved_nodes_are_placeholder_pods_of_the_reservation_class_until_released() {
    let kube = Cluster::start().await;
    kube.state()
        .priority_classes
        .insert("spotwise-reservation-spot".into(), -20);
    let agent = agent(&kube, false);
    let now = OffsetDateTime::now_utc();
    let reserve = || ActionSpec::ReserveNodes {
        reservation: reservation(2),
    };

    let outcome = agent.handle(&signed(action(reserve())), now).await;
    assert!(
        matches!(outcome, Outcome::Done { ref detail, .. } if detail.contains("8 placeholder pod(s) created")),
        "{outcome:?}"
    );
    let placeholders = |kube: &Cluster| -> Vec<(String, Value)> {
        kube.state()
            .pods
            .iter()
            .filter(|(_, p)| {
                p["metadata"]["labels"]["spotwise.io/reservation"] == "spotwise-spot-00aa11bb22"
            })
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect()
    };
    let held = placeholders(&kube);
    assert_eq!(held.len(), 8, "one for each pod planned onto the nodes");
    assert_eq!(
        held[0].0, "default/spotwise-spot-00aa11bb22-hold-0",
        "in the namespace the agent's client defaults to"
    );
    assert_eq!(held[0].1["spec"]["priority"], -20);
    let requests =
        |index: usize| held[index].1["spec"]["containers"][0]["resources"]["requests"].clone();
    assert_eq!(requests(0), json!({"cpu": "1900m", "memory": "5800Mi"}));
    // Keys sort as text: hold-0, hold-1, hold-2, ...
    assert_eq!(requests(2), json!({"cpu": "450m", "memory": "950Mi"}));

    // A repeated reservation (a step retried after a crash) finds the pods it made.
    let outcome = agent.handle(&signed(action(reserve())), now).await;
    assert!(
        matches!(outcome, Outcome::Done { ref detail, .. } if detail.contains("0 placeholder pod(s) created")),
        "{outcome:?}"
    );
    assert_eq!(placeholders(&kube).len(), 8);

    // One was preempted already; the release deletes the other, and a repeat finds none.
    kube.state()
        .pods
        .remove("default/spotwise-spot-00aa11bb22-hold-0");
    let release = || ActionSpec::ReleaseNodes {
        reservation: reservation(2),
    };
    let outcome = agent.handle(&signed(action(release())), now).await;
    assert!(
        matches!(outcome, Outcome::Done { ref detail, .. } if detail.contains("7 placeholder pod(s) deleted")),
        "{outcome:?}"
    );
    assert!(placeholders(&kube).is_empty());
    let outcome = agent.handle(&signed(action(release())), now).await;
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
}

#[tokio::test]
async fn a_reservation_without_the_priority_class_or_over_its_bound_fails_finally() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, false);
    let now = OffsetDateTime::now_utc();
    for (nodes, why) in [
        (1, "no PriorityClass with name spotwise-reservation-spot"),
        (1_001, "at most 1000 nodes"),
    ] {
        let reservation = reservation(nodes);
        let outcome = agent
            .handle(
                &signed(action(ActionSpec::ReserveNodes { reservation })),
                now,
            )
            .await;
        assert!(
            matches!(outcome, Outcome::Failed { retryable: false, ref reason, .. } if reason.contains(why)),
            "{outcome:?}"
        );
    }
    assert_eq!(
        kube.requests(),
        ["POST /api/v1/namespaces/default/pods"],
        "the refused create only: over the bound nothing is sent"
    );
}

fn set_resources(containers: Vec<ContainerResources>) -> ActionSpec {
    ActionSpec::SetResources {
        workload: ControllerRef::parse("shop/Deployment/api").unwrap(),
        containers,
    }
}

fn resources(
    name: &str,
    cpu_m: u64,
    mem_mib: u64,
    limits: Option<(u64, u64)>,
) -> ContainerResources {
    ContainerResources {
        name: name.into(),
        cpu_request_m: cpu_m,
        mem_request_mib: mem_mib,
        cpu_limit_m: limits.map(|l| l.0),
        mem_limit_mib: limits.map(|l| l.1),
    }
}

#[tokio::test]
async fn set_resources_patches_the_template_by_container_and_the_pods_roll() {
    let kube = Cluster::start().await;
    {
        let mut state = kube.state();
        state.add_workload(
            "shop",
            "Deployment",
            "api",
            json!([{"name": "app", "image": "x", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}}},
                   {"name": "sidecar", "image": "y", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]),
        );
        let (key, pod) = pod(
            "shop",
            "api-7f9c-a",
            "ip-10-0-2-9.ec2.internal",
            "ReplicaSet",
            json!({"metadata": {"labels": {"pod-template-hash": "7f9c"},
                                "ownerReferences": [{"kind": "ReplicaSet", "name": "api-7f9c", "uid": "u2"}]},
                   "spec": {"containers": [{"name": "app", "image": "x"}, {"name": "sidecar", "image": "y"}]}}),
        );
        state.pods.insert(key, pod);
    }
    let agent = agent(&kube, false);
    let now = OffsetDateTime::now_utc();
    let outcome = agent
        .handle(
            &signed(action(set_resources(vec![resources(
                "app",
                250,
                512,
                Some((500, 768)),
            )]))),
            now,
        )
        .await;
    assert!(
        matches!(outcome, Outcome::Done { ref detail, .. } if detail.contains("app: cpu 1 -> 250m, memory 2Gi -> 512Mi")),
        "{outcome:?}"
    );
    let template =
        kube.state().workloads["shop/Deployment/api"]["spec"]["template"]["spec"]["containers"]
            .clone();
    assert_eq!(
        template[0]["resources"]["requests"],
        json!({"cpu": "250m", "memory": "512Mi"})
    );
    assert_eq!(
        template[0]["resources"]["limits"],
        json!({"cpu": "500m", "memory": "768Mi"})
    );
    assert_eq!(
        template[1]["resources"]["requests"]["cpu"], "100m",
        "the sidecar is left as it was"
    );
    assert_eq!(
        template[0]["image"], "x",
        "a strategic merge keeps the rest of the container"
    );
    let rolled = kube.state().pods["shop/api-7f9c-a"]["spec"]["containers"][0]["resources"].clone();
    assert_eq!(rolled["requests"]["memory"], "512Mi");
    assert!(
        kube.requests()
            .contains(&"PATCH /apis/apps/v1/namespaces/shop/deployments/api".to_owned())
    );

    // A container the template lacks, or a limit below its request, is refused for good.
    for bad in [
        vec![resources("worker", 250, 512, None)],
        vec![resources("app", 250, 512, Some((100, 768)))],
        Vec::new(),
    ] {
        let outcome = agent.handle(&signed(action(set_resources(bad))), now).await;
        assert!(
            matches!(
                outcome,
                Outcome::Failed {
                    retryable: false,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
    // So is a workload that does not exist.
    let missing = ActionSpec::SetResources {
        workload: ControllerRef::parse("shop/StatefulSet/db").unwrap(),
        containers: vec![resources("app", 250, 512, None)],
    };
    let outcome = agent.handle(&signed(action(missing)), now).await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                retryable: false,
                ..
            }
        ),
        "{outcome:?}"
    );
}

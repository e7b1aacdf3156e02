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

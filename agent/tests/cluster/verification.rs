//! Only actions signed for this cluster with its secret, and not expired, are executed.

use super::*;

#[tokio::test]
async fn unverifiable_actions_never_reach_the_cluster() {
    let kube = Cluster::start().await;
    let agent = agent(&kube, false);
    let node = "ip-10-0-1-17.ec2.internal";
    let now = OffsetDateTime::now_utc();

    let mut wrong_cluster = action(cordon_node(node));
    wrong_cluster.cluster_id = ClusterId::new("c2").unwrap();
    let expired = action(cordon_node(node));
    let mut forged: AgentAction = serde_json::from_str(&signed(action(cordon_node(node)))).unwrap();
    forged.spec = cordon_node("ip-10-0-2-9.ec2.internal");

    let cases = [
        (signed(wrong_cluster), "serves c1"),
        (
            serde_json::to_string(&expired.clone().sign(SECRET)).unwrap(),
            "expired",
        ),
        (serde_json::to_string(&forged).unwrap(), "invalid signature"),
        (
            serde_json::to_string(&action(cordon_node(node)).sign(b"other-secret")).unwrap(),
            "invalid signature",
        ),
        ("{not json".to_owned(), "unreadable"),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let at = if i == 1 {
            now + Duration::minutes(3)
        } else {
            now
        };
        match agent.handle(body, at).await {
            Outcome::Rejected { reason, .. } => {
                assert!(reason.contains(expected), "case {i}: {reason}")
            }
            other => panic!("case {i}: expected rejection, got {other:?}"),
        }
    }
    assert!(
        kube.requests().is_empty(),
        "no Kubernetes call for rejected actions: {:?}",
        kube.requests()
    );
}

#[tokio::test]
async fn the_secret_file_holds_the_hex_the_platform_hands_out_and_signs_with() {
    let dir = std::env::temp_dir().join(format!("spotwise-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster-secret");
    // As `kubectl create secret --from-literal` stores it, with a trailing newline.
    std::fs::write(&file, format!("{}\n", hex::encode(SECRET))).unwrap();
    let key = read_cluster_secret(&file).unwrap();
    assert_eq!(
        key, SECRET,
        "the decoded bytes are the key the platform signs with"
    );

    let kube = Cluster::start().await;
    let agent = Agent::new(
        ClusterId::new("c1").unwrap(),
        key,
        kube.client.clone(),
        false,
    );
    let node = "ip-10-0-1-17.ec2.internal";
    let outcome = agent
        .handle(
            &signed(action(cordon_node(node))),
            OffsetDateTime::now_utc(),
        )
        .await;
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");

    std::fs::write(&file, "not-hex").unwrap();
    assert!(matches!(
        read_cluster_secret(&file),
        Err(SecretError::NotHex { .. })
    ));
    std::fs::write(&file, " \n").unwrap();
    assert!(matches!(
        read_cluster_secret(&file),
        Err(SecretError::Empty { .. })
    ));
    assert!(matches!(
        read_cluster_secret(&dir.join("missing")),
        Err(SecretError::Read { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

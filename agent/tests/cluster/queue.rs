//! The worker on the cluster's SQS queue: deletes, shutdown and visibility of a batch.

use super::*;

/// The cluster's agent queue on the local stack.
async fn agent_queue(stack: &LocalStack) -> (aws_sdk_sqs::Client, String) {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config().await);
    let queue_url = sqs
        .create_queue()
        .queue_name("spotwise-agent-c1")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    (sqs, queue_url)
}

#[tokio::test]
async fn worker_executes_queued_actions_and_removes_finished_messages() {
    let stack = LocalStack::start();
    let kube = Cluster::start().await;
    let (sqs, queue_url) = agent_queue(&stack).await;
    let node = "ip-10-0-1-17.ec2.internal";

    sqs.send_message()
        .queue_url(&queue_url)
        .message_body(signed(action(cordon_node(node))))
        .send()
        .await
        .unwrap();
    let mut forged = action(cordon_node("ip-10-0-2-9.ec2.internal"));
    forged.signature = "00".repeat(32);
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body(serde_json::to_string(&forged).unwrap())
        .send()
        .await
        .unwrap();

    let agent = agent(&kube, false);
    let worker = QueueWorker::new(sqs.clone(), &queue_url).with_wait_seconds(1);
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.extend(worker.poll_once(&agent).await.unwrap());
        if outcomes.len() == 2 {
            break;
        }
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Done { .. }))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Rejected { .. }))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(kube.node(node)["spec"]["unschedulable"], true);
    assert_eq!(
        kube.node("ip-10-0-2-9.ec2.internal")["spec"].get("unschedulable"),
        None
    );

    assert_eq!(
        stack.queue_depth(&queue_url).await,
        (0, 0),
        "both messages deleted"
    );

    // Shutdown future stops the loop.
    worker.run(&agent, async {}).await;
}

#[tokio::test]
async fn on_shutdown_the_action_in_hand_finishes_and_the_rest_of_the_batch_is_handed_back() {
    let stack = LocalStack::start();
    let kube = Cluster::start().await;
    let (sqs, queue_url) = agent_queue(&stack).await;
    let nodes = ["ip-10-0-1-17.ec2.internal", "ip-10-0-2-9.ec2.internal"];
    for node in nodes {
        let cordon = action(cordon_node(node));
        sqs.send_message()
            .queue_url(&queue_url)
            .message_body(signed(cordon))
            .send()
            .await
            .unwrap();
    }

    // The pod is told to stop while the first action of the batch runs.
    let cordoned = |state: &Arc<Mutex<KubeState>>| {
        let cluster = state.lock().unwrap();
        nodes
            .iter()
            .filter(|n| cluster.nodes[**n]["spec"]["unschedulable"] == true)
            .count()
    };
    // The condition is checked at every poll, so the worker's check after its first action sees
    // it at once; a timer only wakes the wait while the worker long-polls the queue.
    let watched = kube.state.clone();
    let mut tick = Box::pin(tokio::time::sleep(std::time::Duration::from_millis(5)));
    let shutdown = std::future::poll_fn(move |cx| {
        if cordoned(&watched) > 0 {
            return std::task::Poll::Ready(());
        }
        while tick.as_mut().poll(cx).is_ready() {
            tick.as_mut()
                .reset(tokio::time::Instant::now() + std::time::Duration::from_millis(5));
        }
        std::task::Poll::Pending
    });
    let agent = agent(&kube, false);
    QueueWorker::new(sqs.clone(), &queue_url)
        .with_wait_seconds(1)
        .run(&agent, shutdown)
        .await;

    assert_eq!(
        cordoned(&kube.state),
        1,
        "one action finished, the other never started"
    );
    assert_eq!(
        stack.queue_depth(&queue_url).await,
        (1, 0),
        "the unstarted action is visible again at once, the finished one deleted"
    );
}

#[tokio::test]
async fn the_rest_of_a_batch_stays_hidden_while_a_long_action_runs() {
    let stack = LocalStack::start();
    let kube = Cluster::start().await;
    guard(&kube, &["db-1"], 0);
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config().await);
    let queue_url = sqs
        .create_queue()
        .queue_name("spotwise-agent-c1-batch")
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "2",
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let node = "ip-10-0-1-17.ec2.internal";
    let mut drain = action(drain_node(node));
    drain.not_after = OffsetDateTime::now_utc() + Duration::seconds(5);
    let cordon = action(cordon_node("ip-10-0-2-9.ec2.internal"));
    sqs.send_message_batch()
        .queue_url(&queue_url)
        .entries(
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id("drain")
                .message_body(signed(drain))
                .build()
                .unwrap(),
        )
        .entries(
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id("cordon")
                .message_body(signed(cordon))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let agent = agent(&kube, false);
    let worker = QueueWorker::new(sqs.clone(), &queue_url)
        .with_wait_seconds(1)
        .with_extend_every(std::time::Duration::from_millis(500));
    // Another consumer polls while the drain (blocked by its PDB until the deadline) runs.
    let other = async {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        sqs.receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default()
            .len()
    };
    let (outcomes, stolen) = tokio::join!(worker.poll_once(&agent), other);
    let outcomes = outcomes.unwrap();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(
        stolen, 0,
        "both messages stayed hidden past the 2 s timeout"
    );
}

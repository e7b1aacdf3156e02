//! Against the local stack's DynamoDB and SQS, with real HTTP deliveries to a loopback
//! receiver (allowed because these tests run in dev mode).

use std::collections::BTreeMap;
use std::time::Duration;

use spotwise_core::TenantId;
use spotwise_core::domain::Severity;
use spotwise_notify::deliver::{DELIVERY_HEADER, Deliverer};
use spotwise_notify::endpoint::Endpoint;
use spotwise_notify::format::EndpointKind;
use spotwise_notify::record::{DeliveryOutcome, DeliveryRecord, FeedEntry, Suppression};
use spotwise_notify::routing::{Maintenance, MaintenanceWindow, MatchOp, Matcher, Route, Silence};
use spotwise_notify::sign::{SIGNATURE_HEADER, verify};
use spotwise_notify::ssrf::{SystemLookup, TargetPolicy};
use spotwise_store::keys::{self, prefix};
use spotwise_store::{Item, PutCondition, Query};
use spotwise_testkit::receiver::Receiver;
use spotwise_testkit::{LocalStack, fixture};

use super::deliver::Outcome as Delivered;
use super::route::Outcome;
use super::*;

const SECRET: &str = "whsec_0123456789abcdef";

struct Setup {
    stack: LocalStack,
    deps: Deps,
    receiver: Receiver,
}

async fn setup(overrides: &[(&str, &str)]) -> Setup {
    let stack = LocalStack::start();
    let mut env = stack.function_env("WebhookDispatcherFunction");
    env.insert("SPOTWISE_DEV_MODE".into(), "true".into());
    for (name, value) in overrides {
        env.insert((*name).into(), (*value).into());
    }
    let config = Config::from_env(&Env::from_map(env)).unwrap();
    let deps = Deps::new(&stack.sdk_config().await, &config).unwrap();
    Setup {
        stack,
        deps,
        receiver: Receiver::start().await,
    }
}

fn tenant() -> TenantId {
    TenantId::new("t1").unwrap()
}

fn endpoint(id: &str, kind: EndpointKind, url: String) -> Endpoint {
    Endpoint {
        id: id.into(),
        tenant_id: tenant(),
        name: format!("{id} receiver"),
        url,
        secret: SECRET.into(),
        route: Route {
            kind,
            enabled: true,
            min_severity: Severity::Info,
            event_types: vec![],
            label_selector: BTreeMap::new(),
        },
        template: None,
        rate_per_minute: 60,
        burst: 10,
        disabled_reason: None,
    }
}

async fn save<T: serde::Serialize>(deps: &Deps, key: keys::Key, body: T) {
    deps.store
        .put(&Item::new(key, body), PutCondition::Always)
        .await
        .unwrap();
}

/// Stores the endpoint as the API does, URL and secret sealed.
async fn save_endpoint(deps: &Deps, e: &Endpoint) {
    let sealed = spotwise_store::webhooks::seal(&deps.vault, e.clone())
        .await
        .unwrap();
    save(deps, keys::webhook(&e.tenant_id, &e.id), &sealed).await;
}

fn sample() -> (SqsEvent, Notification) {
    let event: SqsEvent =
        serde_json::from_str(&fixture("events/webhook-dispatcher/sqs-notification.json")).unwrap();
    let n = serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
    (event, n)
}

fn notification(dedup_key: &str) -> Notification {
    Notification {
        dedup_key: dedup_key.into(),
        ..sample().1
    }
}

fn request(endpoint_id: &str, n: Notification) -> DeliveryRequest {
    DeliveryRequest {
        tenant_id: n.tenant_id.clone(),
        endpoint_id: endpoint_id.into(),
        notification_id: format!("n-{}", n.dedup_key),
        notification: n,
        prior_attempts: 0,
    }
}

impl Setup {
    /// Routes a batch of notifications, every one of which must succeed.
    async fn route_all(&self, event: SqsEvent) {
        let response = handle_batch(&self.deps, event).await.unwrap();
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
    }

    /// The shipped sample event, as the notifications queue of this stack would hand it over.
    async fn sample(&self) -> (SqsEvent, Notification) {
        let (mut event, n) = sample();
        let arn = self.stack.queue_arn(self.deps.notifications.url()).await;
        for record in &mut event.records {
            record.event_source_arn = Some(arn.clone());
        }
        (event, n)
    }

    /// One round of the Lambda poller on a queue: receive, handle, delete what succeeded.
    async fn run(&self, queue_url: &str) -> SqsBatchResponse {
        let event = self.stack.poll(queue_url).await;
        let response = handle_batch(&self.deps, event.clone()).await.unwrap();
        self.stack.settle(queue_url, &event, &response).await;
        response
    }

    async fn run_until_empty(&self, queue_url: &str) {
        while self.stack.queue_depth(queue_url).await.0 > 0 {
            self.run(queue_url).await;
        }
    }

    async fn feed(&self) -> Vec<FeedEntry> {
        self.deps
            .store
            .query_all::<FeedEntry>(
                &Query::partition(keys::tenant_partition(&tenant())).prefix(prefix::NOTIFICATION),
            )
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.body)
            .collect()
    }

    async fn log(&self, endpoint: &str) -> Vec<DeliveryRecord> {
        self.deps
            .store
            .query_all::<DeliveryRecord>(
                &Query::partition(keys::tenant_partition(&tenant()))
                    .prefix(keys::webhook_deliveries_prefix(endpoint)),
            )
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.body)
            .collect()
    }

    async fn endpoint(&self, id: &str) -> Endpoint {
        let stored = self
            .deps
            .store
            .get::<spotwise_store::webhooks::StoredEndpoint>(&keys::webhook(&tenant(), id))
            .await
            .unwrap()
            .unwrap()
            .body;
        spotwise_store::webhooks::open(&self.deps.vault, stored)
            .await
            .unwrap()
    }

    /// Delivers `request` as attempt `attempt`, with a receipt handle from the real queue.
    async fn attempt(
        &self,
        request: &DeliveryRequest,
        attempt: u32,
    ) -> Result<Delivered, DispatchError> {
        self.deps.deliveries.send(request, None).await.unwrap();
        let event = self.stack.poll(self.deps.deliveries.url()).await;
        let receipt = event.records[0].receipt_handle.clone().unwrap();
        let outcome = deliver::deliver(
            &self.deps,
            request,
            attempt,
            &receipt,
            OffsetDateTime::now_utc(),
        )
        .await;
        if !matches!(outcome, Err(DispatchError::RetryScheduled { .. })) {
            self.stack
                .settle(
                    self.deps.deliveries.url(),
                    &event,
                    &SqsBatchResponse::default(),
                )
                .await;
        }
        outcome
    }

    /// First attempt of a request that must not fail or be retried.
    async fn attempt_once(&self, request: DeliveryRequest) -> Delivered {
        self.attempt(&request, 1).await.unwrap()
    }
}

#[tokio::test]
async fn a_notification_reaches_each_matching_endpoint_in_its_format() {
    let s = setup(&[]).await;
    let url = |path: &str| s.receiver.url(path);
    for e in [
        endpoint("slack", EndpointKind::Slack, url("slack")),
        endpoint("teams", EndpointKind::Teams, url("teams")),
        endpoint("discord", EndpointKind::Discord, url("discord")),
        endpoint("generic", EndpointKind::Generic, url("generic")),
        Endpoint {
            route: Route {
                min_severity: Severity::Critical,
                ..endpoint("pager", EndpointKind::Generic, url("pager")).route
            },
            ..endpoint("pager", EndpointKind::Generic, url("pager"))
        },
        Endpoint {
            route: Route {
                event_types: vec!["savings_report".into()],
                ..endpoint("finance", EndpointKind::Slack, url("finance")).route
            },
            ..endpoint("finance", EndpointKind::Slack, url("finance"))
        },
        Endpoint {
            template: Some("[{severity}] {cluster}: {title}".into()),
            ..endpoint("templated", EndpointKind::Discord, url("templated"))
        },
    ] {
        save_endpoint(&s.deps, &e).await;
    }

    let (event, n) = s.sample().await;
    s.route_all(event).await;
    let feed = s.feed().await;
    assert_eq!(feed.len(), 1);
    let mut routed = feed[0].endpoints.clone();
    routed.sort();
    assert_eq!(
        routed,
        ["discord", "generic", "slack", "teams", "templated"],
        "a warning is below the pager's threshold and not the finance endpoint's event type"
    );
    s.run_until_empty(s.deps.deliveries.url()).await;

    let requests = s.receiver.requests();
    assert_eq!(requests.len(), 5);
    let body = |path: &str| -> serde_json::Value {
        let r = requests.iter().find(|r| r.path == path).unwrap();
        assert_eq!(r.headers[DELIVERY_HEADER], feed[0].id.as_str());
        serde_json::from_slice(&r.body).unwrap()
    };
    assert_eq!(body("slack")["blocks"][0]["text"]["text"], n.title);
    assert_eq!(
        body("teams")["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(body("discord")["embeds"][0]["title"], n.title);
    assert_eq!(
        body("templated")["embeds"][0]["description"],
        format!("[warning] {}: {}", n.cluster_id.as_ref().unwrap(), n.title)
    );
    assert_eq!(body("generic")["dedup_key"], n.dedup_key);

    let generic = requests.iter().find(|r| r.path == "generic").unwrap();
    let signature = generic.headers[SIGNATURE_HEADER].to_str().unwrap();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(
        verify(SECRET.as_bytes(), signature, &generic.body, now, 300),
        Ok(())
    );
    let mut tampered = generic.body.to_vec();
    tampered[2] ^= 1;
    assert!(verify(SECRET.as_bytes(), signature, &tampered, now, 300).is_err());
    assert!(
        requests
            .iter()
            .find(|r| r.path == "slack")
            .unwrap()
            .headers
            .get(SIGNATURE_HEADER)
            .is_none()
    );

    let log = s.log("slack").await;
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].outcome, log[0].status, log[0].attempt),
        (DeliveryOutcome::Delivered, Some(200), 1)
    );
    assert_eq!(log[0].response, "ok");
}

#[tokio::test]
async fn duplicates_are_dropped_within_the_window_and_routed_after_it() {
    let s = setup(&[]).await;
    save_endpoint(
        &s.deps,
        &endpoint("ops", EndpointKind::Slack, s.receiver.url("ops")),
    )
    .await;
    let (event, n) = s.sample().await;
    for _ in 0..2 {
        let response = handle_batch(&s.deps, event.clone()).await.unwrap();
        assert!(response.batch_item_failures.is_empty());
    }
    let feed = s.feed().await;
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].notification, n);
    let deliveries: Vec<DeliveryRequest> = s.stack.drain(s.deps.deliveries.url()).await;
    assert_eq!(deliveries.len(), 1, "one delivery for the two copies");

    let later = OffsetDateTime::now_utc() + s.deps.limits.dedup_window + Duration::from_secs(1);
    assert!(matches!(
        route::dispatch(&s.deps, &n, later).await.unwrap(),
        Outcome::Routed { .. }
    ));
}

#[tokio::test]
async fn silences_and_maintenance_windows_suppress_and_say_so() {
    let s = setup(&[]).await;
    save_endpoint(
        &s.deps,
        &endpoint("ops", EndpointKind::Slack, s.receiver.url("ops")),
    )
    .await;
    let now = OffsetDateTime::now_utc();
    let silence = Silence {
        id: "sil1".into(),
        matchers: vec![Matcher {
            label: "env".into(),
            op: MatchOp::Equal,
            value: "prod".into(),
        }],
        starts_at: now - time::Duration::hours(1),
        expires_at: now + time::Duration::hours(1),
        comment: "game day".into(),
    };
    save(&s.deps, keys::silence(&tenant(), "sil1"), &silence).await;

    let silenced = route::dispatch(&s.deps, &notification("a"), now)
        .await
        .unwrap();
    assert!(
        matches!(silenced, Outcome::Suppressed { by: Suppression::Silence { ref id }, .. } if id == "sil1")
    );

    // Another environment is not silenced, but a maintenance window covering now is.
    let mut staging = notification("b");
    staging.labels.insert("env".into(), "staging".into());
    let window = Maintenance {
        id: "mw1".into(),
        name: "node patching".into(),
        window: MaintenanceWindow {
            rule: "FREQ=DAILY".into(),
            starts: now - time::Duration::minutes(30),
            duration_minutes: 60,
        },
        matchers: vec![],
    };
    save(&s.deps, keys::maintenance_window(&tenant(), "mw1"), &window).await;
    let in_window = route::dispatch(&s.deps, &staging, now).await.unwrap();
    assert!(
        matches!(in_window, Outcome::Suppressed { by: Suppression::Maintenance { ref id }, .. } if id == "mw1")
    );

    // After both end, the same kind of notification goes out.
    let after = now + time::Duration::hours(2);
    assert!(matches!(
        route::dispatch(&s.deps, &notification("c"), after).await.unwrap(),
        Outcome::Routed { ref endpoints, .. } if endpoints == &["ops"]
    ));

    let feed = s.feed().await;
    let suppressed: Vec<_> = feed.iter().filter_map(|e| e.suppressed.clone()).collect();
    assert_eq!(suppressed.len(), 2, "suppressions are recorded in the feed");
    assert!(
        feed.iter()
            .filter(|e| e.suppressed.is_some())
            .all(|e| e.endpoints.is_empty())
    );
    let deliveries: Vec<DeliveryRequest> = s.stack.drain(s.deps.deliveries.url()).await;
    assert_eq!(deliveries.len(), 1);
}

#[tokio::test]
async fn a_500_is_retried_after_a_backoff_and_delivered_once() {
    let s = setup(&[]).await;
    save_endpoint(
        &s.deps,
        &endpoint("flaky", EndpointKind::Generic, s.receiver.url("flaky")),
    )
    .await;
    s.deps
        .deliveries
        .send(&request("flaky", notification("a")), None)
        .await
        .unwrap();

    let first = s.run(s.deps.deliveries.url()).await;
    assert_eq!(
        first.batch_item_failures.len(),
        1,
        "kept on the queue for a retry"
    );
    let started = std::time::Instant::now();
    while s.receiver.hits("flaky") < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "retry never came"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let response = s.run(s.deps.deliveries.url()).await;
        assert!(response.batch_item_failures.is_empty());
    }
    assert_eq!(s.stack.queue_depth(s.deps.deliveries.url()).await, (0, 0));
    assert_eq!(
        s.receiver.hits("flaky"),
        2,
        "delivered once after one failure"
    );

    let mut log = s.log("flaky").await;
    log.sort_by_key(|r| r.attempt);
    let seen: Vec<_> = log
        .iter()
        .map(|r| (r.attempt, r.outcome, r.status))
        .collect();
    assert_eq!(
        seen,
        [
            (1, DeliveryOutcome::Retrying, Some(500)),
            (2, DeliveryOutcome::Delivered, Some(200))
        ]
    );
}

#[tokio::test]
async fn timeouts_and_throttling_are_retried_and_retry_after_is_honoured() {
    let mut s = setup(&[]).await;
    s.deps.deliverer = Deliverer::new(
        TargetPolicy { dev_mode: true },
        std::sync::Arc::new(SystemLookup),
        Duration::from_millis(500),
    )
    .unwrap();
    for (id, path) in [("slow", "slow"), ("throttled", "throttled")] {
        save_endpoint(
            &s.deps,
            &endpoint(id, EndpointKind::Slack, s.receiver.url(path)),
        )
        .await;
    }
    let slow = s.attempt(&request("slow", notification("a")), 1).await;
    assert!(
        matches!(&slow, Err(DispatchError::RetryScheduled { reason, .. }) if reason == "timed out"),
        "{slow:?}"
    );
    let throttled = s.attempt(&request("throttled", notification("b")), 3).await;
    assert!(
        matches!(throttled, Err(DispatchError::RetryScheduled { attempt: 3, delay, .. }) if delay >= Duration::from_secs(7)),
        "Retry-After: 7 is longer than any backoff of attempt 3: {throttled:?}"
    );
    assert_eq!(
        s.stack.queue_depth(s.deps.deliveries.url()).await,
        (0, 2),
        "both messages are hidden until their retry"
    );
    assert_eq!(s.log("slow").await[0].outcome, DeliveryOutcome::Retrying);
}

#[tokio::test]
async fn the_last_failed_attempt_goes_to_the_dead_letter_queue() {
    let s = setup(&[("WEBHOOK_MAX_ATTEMPTS", "3")]).await;
    save_endpoint(
        &s.deps,
        &endpoint("down", EndpointKind::Teams, s.receiver.url("down")),
    )
    .await;
    let req = request("down", notification("a"));
    let outcome = s.attempt(&req, 3).await.unwrap();
    assert!(matches!(outcome, Delivered::Failed { .. }), "{outcome:?}");

    let dead: Vec<DeliveryRequest> = s
        .stack
        .drain(&s.stack.function_env("WebhookDispatcherFunction")["DELIVERIES_DLQ_URL"])
        .await;
    assert_eq!(dead, [req], "replayable as it was first sent");
    assert_eq!(
        s.stack.queue_depth(s.deps.deliveries.url()).await,
        (0, 0),
        "acknowledged"
    );
    let log = s.log("down").await;
    assert_eq!(
        (log[0].outcome, log[0].status),
        (DeliveryOutcome::Failed, Some(503))
    );
    assert!(
        s.endpoint("down").await.route.enabled,
        "one failed delivery does not disable"
    );
}

#[tokio::test]
async fn gone_is_not_retried_and_an_endpoint_failing_in_a_row_is_disabled() {
    let s = setup(&[("WEBHOOK_DISABLE_AFTER", "3")]).await;
    let gone = endpoint("hook", EndpointKind::Generic, s.receiver.url("gone"));
    save_endpoint(&s.deps, &gone).await;
    save_endpoint(
        &s.deps,
        &endpoint("ops", EndpointKind::Slack, s.receiver.url("ops")),
    )
    .await;

    let attempt = |key: &'static str| s.attempt_once(request("hook", notification(key)));
    for key in ["a", "b"] {
        let outcome = attempt(key).await;
        assert!(
            matches!(outcome, Delivered::Rejected { ref reason } if reason.contains("410")),
            "{outcome:?}"
        );
    }
    // A success in between starts the count again.
    save_endpoint(
        &s.deps,
        &Endpoint {
            url: s.receiver.url("back"),
            ..gone.clone()
        },
    )
    .await;
    assert_eq!(attempt("ok").await, Delivered::Delivered);
    save_endpoint(&s.deps, &gone).await;
    for key in ["c", "d"] {
        assert!(matches!(attempt(key).await, Delivered::Rejected { .. }));
    }
    assert!(
        s.endpoint("hook").await.route.enabled,
        "two failures in a row"
    );
    assert!(matches!(attempt("e").await, Delivered::Rejected { .. }));
    assert_eq!(s.receiver.hits("gone"), 5, "a 410 is never retried");

    let disabled = s.endpoint("hook").await;
    assert!(!disabled.route.enabled);
    let reason = disabled.disabled_reason.unwrap();
    assert!(
        reason.starts_with("3 failed deliveries in a row"),
        "{reason}"
    );
    assert_eq!(
        attempt("f").await,
        Delivered::Skipped {
            reason: "endpoint disabled"
        }
    );
    assert_eq!(s.receiver.hits("gone"), 5);

    // The tenant hears of it through its other endpoints.
    s.run_until_empty(s.deps.notifications.url()).await;
    s.run_until_empty(s.deps.deliveries.url()).await;
    let told: Vec<serde_json::Value> = s
        .receiver
        .requests()
        .iter()
        .filter(|r| r.path == "ops")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(told.len(), 1);
    assert_eq!(
        told[0]["blocks"][0]["text"]["text"],
        "Webhook \"hook receiver\" was disabled"
    );
}

#[tokio::test]
async fn over_its_rate_an_endpoint_gets_the_delivery_later_not_now() {
    let s = setup(&[]).await;
    let slow_lane = Endpoint {
        rate_per_minute: 1,
        burst: 1,
        ..endpoint("ops", EndpointKind::Slack, s.receiver.url("ops"))
    };
    save_endpoint(&s.deps, &slow_lane).await;
    assert_eq!(
        s.attempt_once(request("ops", notification("a"))).await,
        Delivered::Delivered
    );
    let second = s.attempt_once(request("ops", notification("b"))).await;
    assert!(
        matches!(second, Delivered::RateLimited { wait } if wait > Duration::from_secs(55)),
        "{second:?}"
    );
    assert_eq!(s.receiver.hits("ops"), 1);
    assert_eq!(
        s.stack.queue_depth(s.deps.deliveries.url()).await,
        (0, 1),
        "re-queued with a delay"
    );
}

#[tokio::test]
async fn forbidden_targets_are_refused_at_delivery_time() {
    let s = setup(&[]).await;
    save_endpoint(
        &s.deps,
        &endpoint(
            "metadata",
            EndpointKind::Generic,
            "http://169.254.169.254/latest/meta-data".into(),
        ),
    )
    .await;
    let outcome = s.attempt_once(request("metadata", notification("a"))).await;
    assert!(
        matches!(outcome, Delivered::Rejected { ref reason } if reason.contains("link-local")),
        "{outcome:?}"
    );
    assert_eq!(s.log("metadata").await[0].status, None);
}

#[tokio::test]
async fn invalid_messages_fail_alone_with_a_reason() {
    let s = setup(&[]).await;
    let (mut event, mut n) = s.sample().await;
    n.title = "  ".into();
    assert!(matches!(
        route::dispatch(&s.deps, &n, OffsetDateTime::now_utc()).await,
        Err(DispatchError::Invalid("title is empty"))
    ));

    let mut bad = event.records[0].clone();
    bad.message_id = Some("bad".into());
    bad.body = Some(r#"{"tenant_id":"t1"}"#.into());
    let mut bad_delivery = event.records[0].clone();
    bad_delivery.message_id = Some("bad-delivery".into());
    bad_delivery.body = Some(r#"{"endpoint_id":"e1"}"#.into());
    bad_delivery.event_source_arn = Some(s.stack.queue_arn(s.deps.deliveries.url()).await);
    // A sound notification, but from a queue the dispatcher does not read.
    let mut stray = event.records[0].clone();
    stray.message_id = Some("stray".into());
    stray.event_source_arn = Some("arn:aws:sqs:us-east-1:123456789012:elsewhere".into());
    event.records.extend([bad, bad_delivery, stray]);
    let response = handle_batch(&s.deps, event).await.unwrap();
    let mut failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    failed.sort();
    assert_eq!(failed, ["bad", "bad-delivery", "stray"]);
}

#[tokio::test]
async fn an_endpoint_stored_before_sealing_is_still_delivered_and_signed() {
    let s = setup(&[]).await;
    let legacy = endpoint("generic", EndpointKind::Generic, s.receiver.url("generic"));
    // As items were written before URLs and secrets were sealed: plain strings.
    save(
        &s.deps,
        keys::webhook(&legacy.tenant_id, &legacy.id),
        &legacy,
    )
    .await;
    let (event, _) = s.sample().await;
    s.route_all(event).await;
    s.run_until_empty(s.deps.deliveries.url()).await;
    let requests = s.receiver.requests();
    assert_eq!(requests.len(), 1);
    let signature = requests[0].headers[SIGNATURE_HEADER].to_str().unwrap();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(
        verify(SECRET.as_bytes(), signature, &requests[0].body, now, 300),
        Ok(())
    );
}

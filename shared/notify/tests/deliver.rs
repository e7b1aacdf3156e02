#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Real HTTP deliveries to a receiver on 127.0.0.1 (allowed in dev mode only).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use spotwise_core::domain::{Notification, Severity};
use spotwise_core::{ClusterId, TenantId};
use spotwise_notify::deliver::{Deliverer, Verdict};
use spotwise_notify::format::{EndpointKind, render};
use spotwise_notify::sign::{SIGNATURE_HEADER, verify};
use spotwise_notify::ssrf::{Lookup, SystemLookup, TargetPolicy};
use time::OffsetDateTime;
use time::macros::datetime;

#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>,
    hits: Arc<Mutex<HashMap<String, u32>>>,
}

async fn receive(
    State(received): State<Received>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let hit = {
        let mut hits = received.hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    received
        .requests
        .lock()
        .unwrap()
        .push((path.clone(), headers, body));
    match (path.as_str(), hit) {
        ("flaky", 1) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        ("gone", _) => (StatusCode::GONE, "endpoint removed").into_response(),
        ("throttled", _) => {
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "7")]).into_response()
        }
        ("redirect", _) => (
            StatusCode::FOUND,
            [(header::LOCATION, "http://169.254.169.254/latest/meta-data")],
        )
            .into_response(),
        ("slow", _) => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }
        _ => (StatusCode::OK, "ok").into_response(),
    }
}

/// A receiver on a free loopback port; stops with the test's runtime.
async fn receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/{path}", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

fn dev() -> Deliverer {
    Deliverer::new(
        TargetPolicy { dev_mode: true },
        Arc::new(SystemLookup),
        Duration::from_secs(1),
    )
    .unwrap()
}

fn notification() -> Notification {
    Notification {
        tenant_id: TenantId::new("t1").unwrap(),
        event_type: "interruption".into(),
        severity: Severity::Critical,
        cluster_id: Some(ClusterId::new("111122223333.us-east-1.prod").unwrap()),
        labels: BTreeMap::new(),
        title: "Spot interruption on ip-10-0-1-17".into(),
        body: "Draining before 10:02Z.".into(),
        links: vec![],
        occurred_at: datetime!(2026-11-22 10:00 UTC),
        dedup_key: "i-0abc".into(),
    }
}

#[tokio::test]
async fn every_format_arrives_and_generic_webhooks_are_signed() {
    let (addr, received) = receiver().await;
    let deliverer = dev();
    let now = OffsetDateTime::now_utc();
    let n = notification();
    for kind in [
        EndpointKind::Slack,
        EndpointKind::Teams,
        EndpointKind::Discord,
        EndpointKind::Generic,
    ] {
        let body = serde_json::to_vec(&render(kind, &n, None)).unwrap();
        let secret = (kind == EndpointKind::Generic).then_some(&b"whsec_1"[..]);
        let delivery = deliverer
            .post(&format!("http://{addr}/{kind:?}"), body, secret, now)
            .await;
        assert_eq!(
            delivery.verdict,
            Verdict::Delivered,
            "{kind:?}: {}",
            delivery.snippet
        );
        assert_eq!(delivery.status, Some(200));
        assert_eq!(delivery.snippet, "ok");
    }
    let requests = received.requests.lock().unwrap().clone();
    let by_path: HashMap<&str, (&HeaderMap, serde_json::Value)> = requests
        .iter()
        .map(|(p, h, b)| (p.as_str(), (h, serde_json::from_slice(b).unwrap())))
        .collect();
    assert_eq!(by_path["Slack"].1["blocks"][0]["text"]["text"], n.title);
    assert_eq!(
        by_path["Teams"].1["attachments"][0]["content"]["type"],
        "AdaptiveCard"
    );
    assert_eq!(by_path["Discord"].1["embeds"][0]["title"], n.title);
    assert!(by_path["Slack"].0.get(SIGNATURE_HEADER).is_none());

    // The receiver's side: the signature verifies over the exact bytes, and not over others.
    let (_, headers, body) = requests.iter().find(|(p, ..)| p == "Generic").unwrap();
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let signature = headers[SIGNATURE_HEADER].to_str().unwrap();
    assert_eq!(
        verify(b"whsec_1", signature, body, now.unix_timestamp(), 300),
        Ok(())
    );
    let mut tampered = body.to_vec();
    tampered[10] ^= 1;
    assert!(verify(b"whsec_1", signature, &tampered, now.unix_timestamp(), 300).is_err());
}

#[tokio::test]
async fn failures_say_whether_to_retry() {
    let (addr, received) = receiver().await;
    let deliverer = dev();
    let now = OffsetDateTime::now_utc();
    let deliverer = &deliverer;
    let post = |path: &str| {
        let url = format!("http://{addr}/{path}");
        async move { deliverer.post(&url, b"{}".to_vec(), None, now).await }
    };

    let first = post("flaky").await;
    assert_eq!(
        (first.verdict, first.status),
        (Verdict::Retry { retry_after: None }, Some(500))
    );
    let second = post("flaky").await;
    assert_eq!(second.verdict, Verdict::Delivered, "delivered on the retry");

    let gone = post("gone").await;
    assert_eq!(
        gone.verdict,
        Verdict::Rejected {
            reason: "410 Gone".into()
        },
        "410 is final"
    );
    assert_eq!(gone.snippet, "endpoint removed");

    let throttled = post("throttled").await;
    assert_eq!(
        throttled.verdict,
        Verdict::Retry {
            retry_after: Some(Duration::from_secs(7))
        }
    );

    let redirect = post("redirect").await;
    assert!(
        matches!(&redirect.verdict, Verdict::Rejected { reason } if reason.contains("redirects are not followed")),
        "{redirect:?}"
    );

    let slow = post("slow").await;
    assert_eq!(slow.verdict, Verdict::Retry { retry_after: None });
    assert_eq!(slow.snippet, "timed out");

    let hits = received.hits.lock().unwrap().clone();
    assert_eq!(hits["flaky"], 2);
    assert_eq!(hits["gone"], 1);
    assert_eq!(hits["redirect"], 1, "the redirect was not followed");
}

struct FakeDns(HashMap<&'static str, Vec<IpAddr>>);

impl Lookup for FakeDns {
    fn lookup(
        &self,
        host: String,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let answer = self.0.get(host.as_str()).cloned();
        Box::pin(async move { answer.ok_or_else(|| std::io::Error::other("NXDOMAIN")) })
    }
}

#[tokio::test]
async fn outside_dev_mode_private_targets_are_refused_before_connecting() {
    let (addr, received) = receiver().await;
    let dns = FakeDns(HashMap::from([
        ("internal.example.com", vec!["10.0.0.5".parse().unwrap()]),
        ("rebind.example.com", vec!["127.0.0.1".parse().unwrap()]),
        ("v6.example.com", vec!["fd00::5".parse().unwrap()]),
    ]));
    let deliverer = Deliverer::new(
        TargetPolicy { dev_mode: false },
        Arc::new(dns),
        Duration::from_secs(1),
    )
    .unwrap();
    let now = OffsetDateTime::now_utc();
    let port = addr.port();
    for (url, expect) in [
        (format!("http://{addr}/ok"), "must use https"),
        (format!("https://127.0.0.1:{port}/ok"), "loopback"),
        (format!("https://[::1]:{port}/ok"), "loopback"),
        (
            "https://169.254.169.254/latest/meta-data".to_owned(),
            "link-local",
        ),
        ("https://10.1.2.3/hook".to_owned(), "private"),
        ("https://[fc00::1]/hook".to_owned(), "unique-local"),
        (
            format!("https://rebind.example.com:{port}/ok"),
            "127.0.0.1, a loopback address",
        ),
        (
            "https://internal.example.com/hook".to_owned(),
            "10.0.0.5, a private address",
        ),
        ("https://v6.example.com/hook".to_owned(), "unique-local"),
    ] {
        let delivery = deliverer.post(&url, b"{}".to_vec(), None, now).await;
        assert!(
            matches!(&delivery.verdict, Verdict::Rejected { reason } if reason.contains(expect)),
            "{url}: {delivery:?}"
        );
    }
    assert!(
        received.requests.lock().unwrap().is_empty(),
        "nothing reached the receiver"
    );
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Real HTTP deliveries to a receiver on 127.0.0.1 (allowed in dev mode only).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use spotwise_core::domain::{Notification, Severity};
use spotwise_core::{ClusterId, TenantId};
use spotwise_notify::deliver::{DELIVERY_HEADER, Deliverer, Verdict};
use spotwise_notify::format::{EndpointKind, render};
use spotwise_notify::sign::{SIGNATURE_HEADER, verify};
use spotwise_notify::ssrf::{Lookup, SystemLookup, TargetPolicy};
use spotwise_testkit::receiver::Receiver;
use time::OffsetDateTime;
use time::macros::datetime;

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
    let receiver = Receiver::start().await;
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
            .post(&receiver.url(&format!("{kind:?}")), body, secret, "n1", now)
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
    let requests = receiver.requests();
    let by_path: HashMap<&str, (&reqwest::header::HeaderMap, serde_json::Value)> = requests
        .iter()
        .map(|r| {
            (
                r.path.as_str(),
                (&r.headers, serde_json::from_slice(&r.body).unwrap()),
            )
        })
        .collect();
    assert_eq!(by_path["Slack"].1["blocks"][0]["text"]["text"], n.title);
    assert_eq!(
        by_path["Teams"].1["attachments"][0]["content"]["type"],
        "AdaptiveCard"
    );
    assert_eq!(by_path["Discord"].1["embeds"][0]["title"], n.title);
    assert!(by_path["Slack"].0.get(SIGNATURE_HEADER).is_none());
    assert_eq!(by_path["Discord"].0[DELIVERY_HEADER], "n1");

    // The receiver's side: the signature verifies over the exact bytes, and not over others.
    let generic = requests.iter().find(|r| r.path == "Generic").unwrap();
    let (headers, body) = (&generic.headers, &generic.body);
    assert_eq!(headers["content-type"], "application/json");
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
    let receiver = Receiver::start().await;
    let deliverer = dev();
    let now = OffsetDateTime::now_utc();
    let deliverer = &deliverer;
    let post = |path: &str| {
        let url = receiver.url(path);
        async move { deliverer.post(&url, b"{}".to_vec(), None, "n1", now).await }
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

    assert_eq!(receiver.hits("flaky"), 2);
    assert_eq!(receiver.hits("gone"), 1);
    assert_eq!(
        receiver.hits("redirect"),
        1,
        "the redirect was not followed"
    );
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
    let receiver = Receiver::start().await;
    let addr = receiver.addr;
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
        let delivery = deliverer.post(&url, b"{}".to_vec(), None, "n1", now).await;
        assert!(
            matches!(&delivery.verdict, Verdict::Rejected { reason } if reason.contains(expect)),
            "{url}: {delivery:?}"
        );
    }
    assert!(
        receiver.requests().is_empty(),
        "nothing reached the receiver"
    );
}

//! One HTTP delivery and what it means: delivered, retry (5xx, 408, 429, timeouts and
//! connection failures, with the receiver's `Retry-After`), or rejected for good (other 4xx,
//! redirects, refused targets). Retrying is the caller's: the dispatcher re-queues through SQS
//! visibility so a Lambda never sleeps.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{StatusCode, redirect};
use time::OffsetDateTime;

use crate::sign::{SIGNATURE_HEADER, sign};
use crate::ssrf::{self, GuardedResolver, Lookup, SsrfError, TargetPolicy};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A receiver that has not answered by then is retried later.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a response body the delivery log keeps.
const SNIPPET: usize = 256;
/// Carries the notification's id: the same on every retry, so a receiver can drop repeats.
pub const DELIVERY_HEADER: &str = "X-Spotwise-Delivery";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry { retry_after: Option<Duration> },
    Rejected { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub verdict: Verdict,
    pub status: Option<u16>,
    pub latency: Duration,
    /// The start of the response body (or the error), for the delivery log.
    pub snippet: String,
}

pub struct Deliverer {
    client: reqwest::Client,
    policy: TargetPolicy,
}

#[derive(Debug, thiserror::Error)]
#[error("HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

impl Deliverer {
    pub fn new(
        policy: TargetPolicy,
        lookup: Arc<dyn Lookup>,
        request_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            // A proxy from the environment would connect in our place and skip the guard.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT.min(request_timeout))
            .timeout(request_timeout)
            .https_only(!policy.dev_mode)
            .dns_resolver(Arc::new(GuardedResolver { policy, lookup }))
            .build()?;
        Ok(Self { client, policy })
    }

    /// Posts `body` to `url`; with a `secret`, signs it (generic webhooks).
    pub async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        secret: Option<&[u8]>,
        delivery_id: &str,
        now: OffsetDateTime,
    ) -> Delivery {
        let started = Instant::now();
        let rejected = |reason: String, started: Instant| Delivery {
            snippet: reason.clone(),
            verdict: Verdict::Rejected { reason },
            status: None,
            latency: started.elapsed(),
        };
        let url = match ssrf::check_url(url, self.policy) {
            Ok(url) => url,
            Err(e) => return rejected(e.to_string(), started),
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static("Spotwise-Webhooks/1"));
        if let Ok(value) = HeaderValue::from_str(delivery_id) {
            headers.insert(DELIVERY_HEADER, value);
        }
        if let Some(secret) = secret
            && let Ok(value) = HeaderValue::from_str(&sign(secret, now.unix_timestamp(), &body))
        {
            headers.insert(SIGNATURE_HEADER, value);
        }
        let response = match self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                if let Some(refused) = ssrf_cause(&e) {
                    return rejected(refused.to_string(), started);
                }
                let reason = if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    format!("request failed: {}", chain(&e))
                };
                return Delivery {
                    verdict: Verdict::Retry { retry_after: None },
                    status: None,
                    latency: started.elapsed(),
                    snippet: reason,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now));
        let text = response.text().await.unwrap_or_default();
        let snippet: String = text.chars().take(SNIPPET).collect();
        let verdict = match status {
            s if s.is_success() => Verdict::Delivered,
            s if s.is_server_error()
                || matches!(
                    s,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT
                ) =>
            {
                Verdict::Retry { retry_after }
            }
            s if s.is_redirection() => Verdict::Rejected {
                reason: format!("{s}: redirects are not followed"),
            },
            s => Verdict::Rejected {
                reason: format!("{s}"),
            },
        };
        Delivery {
            verdict,
            status: Some(status.as_u16()),
            latency: started.elapsed(),
            snippet,
        }
    }
}

/// The SSRF refusal behind a failed request, if that is what failed it.
fn ssrf_cause(e: &reqwest::Error) -> Option<&SsrfError> {
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<SsrfError>() {
            return Some(refused);
        }
        source = err.source();
    }
    None
}

fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // HTTP dates end in "GMT", which RFC 2822 parsers treat as obsolete.
    let date = value.trim().replace(" GMT", " +0000");
    let at = OffsetDateTime::parse(&date, &time::format_description::well_known::Rfc2822).ok()?;
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = datetime!(2026-11-22 10:00 UTC);
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 10:02:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 09:00:00 +0000", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

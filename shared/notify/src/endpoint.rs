//! A tenant's notification endpoint as stored, and the checks it passes before it is saved.

use serde::{Deserialize, Serialize};
use spotwise_core::TenantId;

use crate::format::{EndpointKind, Template};
use crate::routing::Route;
use crate::ssrf::{TargetPolicy, check_url};

fn default_rate() -> u32 {
    30
}

fn default_burst() -> u32 {
    10
}

/// `S` is how the URL and the secret are held: in plain text (`String`, the default) while the
/// endpoint is checked or used, sealed while it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint<S = String> {
    pub id: String,
    pub tenant_id: TenantId,
    pub name: String,
    pub url: S,
    /// Signs generic webhooks (HMAC-SHA256); shown to the tenant once, when created.
    pub secret: S,
    #[serde(flatten)]
    pub route: Route,
    #[serde(default)]
    pub template: Option<String>,
    /// Deliveries per minute on average, and the burst above it.
    #[serde(default = "default_rate")]
    pub rate_per_minute: u32,
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Why the platform disabled the endpoint (too many failed deliveries in a row).
    #[serde(default)]
    pub disabled_reason: Option<String>,
}

impl<S> Endpoint<S> {
    /// The same endpoint with its URL and secret held as `T`.
    pub fn with_secrets<T>(self, url: T, secret: T) -> Endpoint<T> {
        Endpoint {
            id: self.id,
            tenant_id: self.tenant_id,
            name: self.name,
            url,
            secret,
            route: self.route,
            template: self.template,
            rate_per_minute: self.rate_per_minute,
            burst: self.burst,
            disabled_reason: self.disabled_reason,
        }
    }
}

impl Endpoint {
    /// The URL with everything after the host hidden but for its last four characters: chat
    /// webhook URLs are credentials in themselves, in the path, the query or the fragment, so
    /// only the scheme, host and port are shown to who may not edit. The URL is read as a
    /// browser reads it, so a backslash or an odd form cannot move the token into the "host".
    pub fn redacted_url(&self) -> String {
        let Ok(url) = reqwest::Url::parse(&self.url) else {
            return "…".to_owned();
        };
        let origin = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
            (Some(host), None) => format!("{}://{host}", url.scheme()),
            (None, _) => return "…".to_owned(),
        };
        let mut rest = url.path().to_owned();
        for (mark, part) in [('?', url.query()), ('#', url.fragment())] {
            if let Some(part) = part {
                rest.push(mark);
                rest.push_str(part);
            }
        }
        let rest: Vec<char> = rest.chars().collect();
        match rest.len() {
            0 | 1 => origin,
            // Too short to hide anything by showing four characters of it.
            2..=8 => format!("{origin}/…"),
            n => {
                let tail: String = rest[n - 4..].iter().collect();
                format!("{origin}/…{tail}")
            }
        }
    }
}

/// A field that fails its check, for a 400 that names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

const MIN_SECRET: usize = 16;

impl Endpoint {
    pub fn validate(&self, policy: TargetPolicy) -> Result<(), FieldError> {
        let field = |field: &'static str, reason: String| Err(FieldError { field, reason });
        if self.name.trim().is_empty() || self.name.chars().count() > 100 {
            return field("name", "must be 1 to 100 characters".into());
        }
        if let Err(e) = check_url(&self.url, policy) {
            return field("url", e.to_string());
        }
        let plain = |text: &str, max: usize| {
            !text.is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control)
        };
        if self.route.event_types.len() > 50
            || !self
                .route
                .event_types
                .iter()
                .all(|t| plain(t, 64) && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        {
            return field(
                "event_types",
                "at most 50 event types, each lower-case letters and `_`".into(),
            );
        }
        if self.route.label_selector.len() > 20
            || !self
                .route
                .label_selector
                .iter()
                .all(|(k, v)| plain(k, 253) && plain(v, 253))
        {
            return field(
                "label_selector",
                "at most 20 labels, keys and values 1 to 253 printable characters".into(),
            );
        }
        if self.route.kind == EndpointKind::Generic && self.secret.len() < MIN_SECRET {
            return field(
                "secret",
                format!("generic webhooks need a secret of at least {MIN_SECRET} characters"),
            );
        }
        if let Some(template) = &self.template
            && let Err(e) = Template::parse(template)
        {
            return field("template", e.to_string());
        }
        if self.rate_per_minute == 0 || self.rate_per_minute > 600 {
            return field("rate_per_minute", "must be 1 to 600".into());
        }
        if self.burst == 0 || self.burst > 100 {
            return field("burst", "must be 1 to 100".into());
        }
        Ok(())
    }

    /// The parsed template; a stored template always parses (it was validated on save).
    pub fn template(&self) -> Option<Template> {
        self.template
            .as_deref()
            .and_then(|t| Template::parse(t).ok())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use spotwise_core::domain::Severity;

    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint {
            id: "wh1".into(),
            tenant_id: TenantId::new("t1").unwrap(),
            name: "ops".into(),
            url: "https://hooks.example.com/spotwise".into(),
            secret: "0123456789abcdef0123".into(),
            route: Route {
                kind: EndpointKind::Generic,
                enabled: true,
                min_severity: Severity::Info,
                event_types: vec![],
                label_selector: BTreeMap::new(),
            },
            template: None,
            rate_per_minute: 30,
            burst: 10,
            disabled_reason: None,
        }
    }

    #[test]
    fn redacted_urls_keep_scheme_host_and_the_last_four_characters() {
        let mut e = endpoint();
        e.url = "https://hooks.slack.com/services/T000/B000/XXXXsecretYYYY".into();
        assert_eq!(e.redacted_url(), "https://hooks.slack.com/…YYYY");
        e.url = "https://example.com/a".into();
        assert_eq!(e.redacted_url(), "https://example.com/…");
        e.url = "https://example.com".into();
        assert_eq!(e.redacted_url(), "https://example.com");
        e.url = "not a url".into();
        assert_eq!(e.redacted_url(), "…");
        // Wherever the token sits, only its last four characters show.
        for (url, shown) in [
            (
                "https://hooks.example.com?token=s3cr3tT0KENabcd",
                "https://hooks.example.com/…abcd",
            ),
            (
                "https://hooks.example.com/#s3cr3tT0KENabcd",
                "https://hooks.example.com/…abcd",
            ),
            (
                "https://hooks.example.com\\services\\T0\\s3cr3tabcd",
                "https://hooks.example.com/…abcd",
            ),
            (
                "https://hooks.example.com:8443/x/s3cr3tabcd",
                "https://hooks.example.com:8443/…abcd",
            ),
            (
                "https://user:pw@hooks.example.com/s3cr3tabcd",
                "https://hooks.example.com/…abcd",
            ),
        ] {
            e.url = url.into();
            let redacted = e.redacted_url();
            assert_eq!(redacted, shown, "{url}");
            assert!(
                !redacted.contains("s3cr3t") && !redacted.contains("pw"),
                "{url}"
            );
        }
    }

    #[test]
    fn invalid_fields_are_named() {
        let prod = TargetPolicy::default();
        assert_eq!(endpoint().validate(prod), Ok(()));
        let cases = [
            (
                Endpoint {
                    url: "https://10.0.0.8/x".into(),
                    ..endpoint()
                },
                "url",
            ),
            (
                Endpoint {
                    url: "http://hooks.example.com/".into(),
                    ..endpoint()
                },
                "url",
            ),
            (
                Endpoint {
                    secret: "short".into(),
                    ..endpoint()
                },
                "secret",
            ),
            (
                Endpoint {
                    template: Some("{nope}".into()),
                    ..endpoint()
                },
                "template",
            ),
            (
                Endpoint {
                    name: " ".into(),
                    ..endpoint()
                },
                "name",
            ),
            (
                Endpoint {
                    rate_per_minute: 0,
                    ..endpoint()
                },
                "rate_per_minute",
            ),
        ];
        for (endpoint, field) in cases {
            assert_eq!(endpoint.validate(prod).unwrap_err().field, field);
        }
        let stored = serde_json::to_value(endpoint()).unwrap();
        assert_eq!(
            stored["kind"], "generic",
            "the route is flattened into the item"
        );
    }
}

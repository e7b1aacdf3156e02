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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub tenant_id: TenantId,
    pub name: String,
    pub url: String,
    /// Signs generic webhooks (HMAC-SHA256); shown to the tenant once, when created.
    pub secret: String,
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

impl Endpoint {
    /// The URL with its path hidden but for the last four characters: chat webhook URLs are
    /// credentials in themselves, so only the scheme and host are shown to who may not edit.
    pub fn redacted_url(&self) -> String {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return "…".to_owned();
        };
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path: Vec<char> = path.chars().collect();
        if path.len() <= 4 {
            return self.url.clone();
        }
        let tail: String = path[path.len() - 4..].iter().collect();
        format!("{scheme}://{host}/…{tail}")
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
        assert_eq!(e.redacted_url(), "https://example.com/a");
        e.url = "https://example.com".into();
        assert_eq!(e.redacted_url(), "https://example.com");
        e.url = "not a url".into();
        assert_eq!(e.redacted_url(), "…");
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

//! Notification bodies per endpoint kind: Slack Block Kit, a Microsoft Teams message with an
//! Adaptive Card, Discord embeds, and generic JSON (the envelope itself, signed). A custom
//! template, when the endpoint has one, replaces the message text.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spotwise_core::domain::{Notification, Severity};
use spotwise_core::rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    Slack,
    Teams,
    Discord,
    Generic,
}

/// Variables a template may use.
pub const VARIABLES: [&str; 8] = [
    "cluster",
    "severity",
    "title",
    "body",
    "event_type",
    "tenant",
    "occurred_at",
    "savings",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown variable {{{0}}}: use one of {{cluster}}, {{severity}}, {{title}}, {{body}}, {{event_type}}, {{tenant}}, {{occurred_at}}, {{savings}} or {{label.<key>}}"
    )]
    UnknownVariable(String),
    #[error("unclosed `{{` at byte {0}")]
    Unclosed(usize),
    #[error("template is longer than {0} characters")]
    TooLong(usize),
}

const MAX_TEMPLATE: usize = 2_000;

/// A message template with `{variable}` placeholders, checked when the endpoint is saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Variable(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.chars().count() > MAX_TEMPLATE {
            return Err(TemplateError::TooLong(MAX_TEMPLATE));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or(TemplateError::Unclosed(offset + open))?;
            let name = rest[open + 1..open + close].trim();
            let known = VARIABLES.contains(&name)
                || name
                    .strip_prefix("label.")
                    .is_some_and(|key| !key.is_empty());
            if !known {
                return Err(TemplateError::UnknownVariable(name.to_owned()));
            }
            pieces.push(Piece::Variable(name.to_owned()));
            offset += open + close + 1;
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self(pieces))
    }

    pub fn render(&self, n: &Notification) -> String {
        self.0
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.clone(),
                Piece::Variable(name) => variable(n, name),
            })
            .collect()
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn variable(n: &Notification, name: &str) -> String {
    match name {
        "cluster" => n
            .cluster_id
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string),
        "severity" => severity_name(n.severity).to_owned(),
        "title" => n.title.clone(),
        "body" => n.body.clone(),
        "event_type" => n.event_type.clone(),
        "tenant" => n.tenant_id.to_string(),
        "occurred_at" => rfc3339(n.occurred_at),
        "savings" => n.labels.get("savings").cloned().unwrap_or_default(),
        other => other
            .strip_prefix("label.")
            .and_then(|key| n.labels.get(key))
            .cloned()
            .unwrap_or_default(),
    }
}

/// Cuts `text` to at most `max` characters, marking the cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// The JSON body for `kind`. Chat formats respect their services' field limits (Slack header
/// 150 and section 3,000 characters, Discord title 256 and description 4,096).
pub fn render(kind: EndpointKind, n: &Notification, template: Option<&Template>) -> Value {
    let text = template.map_or_else(|| n.body.clone(), |t| t.render(n));
    let cluster = variable(n, "cluster");
    let severity = severity_name(n.severity);
    match kind {
        EndpointKind::Slack => {
            let mut blocks = vec![
                json!({"type": "header", "text": {"type": "plain_text", "text": clip(&n.title, 150)}}),
                json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&text, 3_000)}}),
                json!({"type": "context", "elements": [{"type": "mrkdwn",
                    "text": format!("*{severity}* · {} · cluster `{cluster}` · {}", n.event_type, rfc3339(n.occurred_at))}]}),
            ];
            if !n.links.is_empty() {
                let buttons: Vec<Value> = n.links.iter().take(5).enumerate()
                    .map(|(i, url)| json!({"type": "button", "text": {"type": "plain_text", "text": format!("Open {}", i + 1)}, "url": url}))
                    .collect();
                blocks.push(json!({"type": "actions", "elements": buttons}));
            }
            // `text` is what notifications and screen readers show.
            json!({"text": format!("{}: {}", n.title, clip(&text, 200)), "blocks": blocks})
        }
        EndpointKind::Teams => {
            let color = match n.severity {
                Severity::Critical => "Attention",
                Severity::Warning => "Warning",
                Severity::Info => "Default",
            };
            let actions: Vec<Value> = n
                .links
                .iter()
                .take(5)
                .map(|url| json!({"type": "Action.OpenUrl", "title": "Open", "url": url}))
                .collect();
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": [
                            {"type": "TextBlock", "text": n.title, "weight": "Bolder", "size": "Medium", "wrap": true, "color": color},
                            {"type": "TextBlock", "text": text, "wrap": true},
                            {"type": "FactSet", "facts": [
                                {"title": "Severity", "value": severity},
                                {"title": "Cluster", "value": cluster},
                                {"title": "Event", "value": n.event_type},
                                {"title": "When", "value": rfc3339(n.occurred_at)}
                            ]}
                        ],
                        "actions": actions
                    }
                }]
            })
        }
        EndpointKind::Discord => {
            let color = match n.severity {
                Severity::Critical => 0xD0_2020,
                Severity::Warning => 0xE0_A000,
                Severity::Info => 0x20_70D0,
            };
            let mut embed = json!({
                "title": clip(&n.title, 256),
                "description": clip(&text, 4_096),
                "color": color,
                "timestamp": rfc3339(n.occurred_at),
                "fields": [
                    {"name": "Severity", "value": severity, "inline": true},
                    {"name": "Cluster", "value": cluster, "inline": true},
                    {"name": "Event", "value": n.event_type, "inline": true}
                ]
            });
            if let Some(url) = n.links.first() {
                embed["url"] = json!(url);
            }
            json!({"username": "Spotwise", "embeds": [embed]})
        }
        EndpointKind::Generic => {
            let mut body = serde_json::to_value(n).unwrap_or(Value::Null);
            if template.is_some() {
                body["text"] = json!(text);
            }
            body
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use spotwise_core::{ClusterId, TenantId};
    use time::macros::datetime;

    use super::*;

    pub(crate) fn notification() -> Notification {
        Notification {
            tenant_id: TenantId::new("t1").unwrap(),
            event_type: "interruption".into(),
            severity: Severity::Critical,
            cluster_id: Some(ClusterId::new("111122223333.us-east-1.prod").unwrap()),
            labels: BTreeMap::from([("savings".to_owned(), "$120.50".to_owned())]),
            title: "Spot interruption on ip-10-0-1-17".into(),
            body: "Draining ip-10-0-1-17 before 10:02:00Z.".into(),
            links: vec!["https://console.example.com/c/prod".into()],
            occurred_at: datetime!(2026-11-22 10:00 UTC),
            dedup_key: "i-0abc:interruption".into(),
        }
    }

    #[test]
    fn templates_fill_variables_and_reject_unknown_ones() {
        let t =
            Template::parse("[{severity}] {cluster}: {title} (saves {savings}, team {label.team})")
                .unwrap();
        assert_eq!(
            t.render(&notification()),
            "[critical] 111122223333.us-east-1.prod: Spot interruption on ip-10-0-1-17 (saves $120.50, team )"
        );
        assert_eq!(
            Template::parse("hi {clustr}"),
            Err(TemplateError::UnknownVariable("clustr".into()))
        );
        assert_eq!(
            Template::parse("oops {title"),
            Err(TemplateError::Unclosed(5))
        );
        assert!(matches!(
            Template::parse(&"x".repeat(3_000)),
            Err(TemplateError::TooLong(_))
        ));
    }

    #[test]
    fn each_kind_has_its_services_shape() {
        let n = notification();
        let slack = render(EndpointKind::Slack, &n, None);
        assert_eq!(slack["blocks"][0]["type"], "header");
        assert_eq!(slack["blocks"][0]["text"]["text"], n.title);
        assert_eq!(slack["blocks"][1]["text"]["type"], "mrkdwn");
        assert_eq!(slack["blocks"][3]["elements"][0]["url"], n.links[0]);
        let teams = render(EndpointKind::Teams, &n, None);
        let card = &teams["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(card["content"]["body"][0]["color"], "Attention");
        let discord = render(EndpointKind::Discord, &n, None);
        assert_eq!(discord["embeds"][0]["color"], 0xD0_2020);
        assert_eq!(discord["embeds"][0]["timestamp"], "2026-11-22T10:00:00Z");
        let generic = render(EndpointKind::Generic, &n, None);
        assert_eq!(generic["dedup_key"], "i-0abc:interruption");
        assert!(generic.get("text").is_none());

        let template = Template::parse("{title} / {cluster}").unwrap();
        let custom = render(EndpointKind::Discord, &n, Some(&template));
        assert_eq!(
            custom["embeds"][0]["description"],
            "Spot interruption on ip-10-0-1-17 / 111122223333.us-east-1.prod"
        );
        let long = Notification {
            title: "t".repeat(400),
            ..n
        };
        let clipped = render(EndpointKind::Slack, &long, None);
        assert_eq!(
            clipped["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            150
        );
    }
}

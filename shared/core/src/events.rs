//! EventBridge envelopes as they arrive on SQS.
//!
//! Only the envelope is typed here; `detail` stays JSON because its shape depends on the source.
//! Timestamps and ids are kept as strings: the published samples include a non-UUID id and
//! placeholder accounts, and neither may make an event unreadable.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventEnvelope {
    pub id: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub source: String,
    #[serde(default)]
    pub account: String,
    pub time: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub detail: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
#[error("not an EventBridge event: {0}")]
pub struct EnvelopeError(String);

impl EventEnvelope {
    pub fn parse(body: &str) -> Result<Self, EnvelopeError> {
        serde_json::from_str(body).map_err(|e| EnvelopeError(e.to_string()))
    }

    /// EC2 instance ids the event is about, in order, without duplicates.
    pub fn instance_ids(&self) -> Vec<String> {
        let detail = &self.detail;
        let mut ids: Vec<String> = Vec::new();
        let mut push = |id: Option<&str>| {
            if let Some(id) = id.filter(|id| id.starts_with("i-"))
                && !ids.iter().any(|known| known == id)
            {
                ids.push(id.to_owned());
            }
        };
        push(detail.get("instance-id").and_then(|v| v.as_str()));
        push(detail.get("EC2InstanceId").and_then(|v| v.as_str()));
        if let Some(entities) = detail.get("affectedEntities").and_then(|v| v.as_array()) {
            for entity in entities {
                push(entity.get("entityValue").and_then(|v| v.as_str()));
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> EventEnvelope {
        let raw = match name {
            "spot-interruption-warning.json" => {
                include_str!("../../../events/eventbridge/spot-interruption-warning.json")
            }
            "rebalance-recommendation.json" => {
                include_str!("../../../events/eventbridge/rebalance-recommendation.json")
            }
            "instance-state-change.json" => {
                include_str!("../../../events/eventbridge/instance-state-change.json")
            }
            "scheduled-change.json" => {
                include_str!("../../../events/eventbridge/scheduled-change.json")
            }
            "asg-lifecycle-termination.json" => {
                include_str!("../../../events/eventbridge/asg-lifecycle-termination.json")
            }
            other => panic!("no fixture {other}"),
        };
        EventEnvelope::parse(raw).unwrap()
    }

    #[test]
    fn every_published_sample_parses_and_names_its_instance() {
        for (file, instance) in [
            ("spot-interruption-warning.json", "i-0b662ef9931388ba0"),
            ("rebalance-recommendation.json", "i-0b662ef9931388ba0"),
            ("instance-state-change.json", "i-abcd1111"),
            ("scheduled-change.json", "i-12345678"),
            ("asg-lifecycle-termination.json", "i-0633ac2b0d9769723"),
        ] {
            let event = fixture(file);
            assert_eq!(
                event.instance_ids().first().map(String::as_str),
                Some(instance),
                "{file}"
            );
        }
    }

    #[test]
    fn non_uuid_ids_and_placeholder_accounts_are_kept() {
        let event = fixture("scheduled-change.json");
        assert_eq!(event.id, "7fb65329-1628-4cf3-a740-95fg457h1402");
        assert_eq!(
            fixture("spot-interruption-warning.json").account,
            "<account_number>"
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(EventEnvelope::parse("{").is_err());
        assert!(EventEnvelope::parse(r#"{"id":"x"}"#).is_err());
    }
}

//! Identifiers that become parts of store keys.
//!
//! Keys are built as `T#<tenant>#...`; an id containing `#` or other separators could address
//! another tenant's items, so ids are validated once at the edge and are opaque afterwards.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} id is longer than {MAX_ID_LEN} characters")]
    TooLong { kind: &'static str },
    #[error("{kind} id {value:?} contains {found:?}; allowed: letters, digits, '-', '_', '.'")]
    InvalidChar {
        kind: &'static str,
        value: String,
        found: char,
    },
}

fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind });
    }
    if let Some(found) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(IdError::InvalidChar {
            kind,
            value: value.to_owned(),
            found,
        });
    }
    Ok(())
}

macro_rules! key_safe_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            /// A fresh random id (ULID, lower-case so ids read well in URLs).
            pub fn generate() -> Self {
                Self(ulid::Ulid::new().to_string().to_ascii_lowercase())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

key_safe_id!(
    /// A tenant: the unit of isolation. Every tenant-owned key starts with `T#<tenant>`.
    TenantId,
    "tenant"
);
key_safe_id!(
    /// A cluster, unique across tenants (generated at discovery, not the EKS name).
    ClusterId,
    "cluster"
);

/// Whether `text` is 1 to 63 bytes of lowercase ASCII letters, digits and the `extra` bytes:
/// the shape of Kubernetes names and of instance families and zone names.
pub fn is_lowercase_token(text: &str, extra: &[u8]) -> bool {
    (1..=63).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

/// Whether `text` is a DNS label (RFC 1123), as Kubernetes requires of namespace names: 1 to 63
/// lowercase letters, digits and `-`, starting and ending with a letter or digit.
pub fn is_dns_label(text: &str) -> bool {
    is_lowercase_token(text, b"-") && !text.starts_with('-') && !text.ends_with('-')
}

/// Whether `text` is a DNS subdomain (RFC 1123), as Kubernetes requires of most object names:
/// at most 253 bytes of DNS labels joined by `.` (each label may be up to 63 bytes).
pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        assert_eq!(
            TenantId::new("acme-prod_1.eu").map(|t| t.to_string()),
            Ok("acme-prod_1.eu".into())
        );
    }

    #[test]
    fn rejects_key_separators_and_names_the_character() {
        let err = TenantId::new("t1#CLUSTER#x").unwrap_err();
        assert_eq!(
            err,
            IdError::InvalidChar {
                kind: "tenant",
                value: "t1#CLUSTER#x".into(),
                found: '#'
            }
        );
        assert!(ClusterId::new("a/b").is_err());
        assert!(ClusterId::new("a b").is_err());
    }

    #[test]
    fn rejects_empty_and_oversized() {
        assert_eq!(TenantId::new(""), Err(IdError::Empty { kind: "tenant" }));
        assert_eq!(
            TenantId::new("x".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong { kind: "tenant" })
        );
    }

    #[test]
    fn deserialization_validates() {
        assert!(serde_json::from_str::<TenantId>("\"t#1\"").is_err());
        assert_eq!(
            serde_json::from_str::<TenantId>("\"t1\"").ok(),
            TenantId::new("t1").ok()
        );
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = ClusterId::generate();
        let b = ClusterId::generate();
        assert_ne!(a, b);
        assert!(ClusterId::new(a.as_str()).is_ok());
    }

    #[test]
    fn dns_labels_are_what_kubernetes_accepts_as_namespace_names() {
        for good in ["a", "kube-system", "team-42", &"a".repeat(63)] {
            assert!(is_dns_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "Shop", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_lowercase_token("m5.*", b".*-"));
    }
}

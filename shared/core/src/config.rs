//! Configuration from environment variables, with errors that name the variable.
//!
//! Reading goes through [`Env`], a lookup function, so tests pass a map instead of mutating the
//! process environment.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {var} is required but not set")]
    Missing { var: String },
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Invalid {
        var: String,
        value: String,
        reason: String,
    },
}

type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A source of configuration values: the process environment, or a map in tests.
pub struct Env {
    lookup: Lookup,
}

impl Env {
    pub fn process() -> Self {
        Self {
            lookup: Box::new(|name| std::env::var(name).ok()),
        }
    }

    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Self {
            lookup: Box::new(move |name| vars.get(name).cloned()),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self::from_map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// The value, treating an empty or whitespace-only value as unset.
    pub fn optional(&self, var: &str) -> Option<String> {
        (self.lookup)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, var: &str) -> Result<String, ConfigError> {
        self.optional(var).ok_or_else(|| ConfigError::Missing {
            var: var.to_owned(),
        })
    }

    pub fn parse_or<T>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.optional(var) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|e: T::Err| ConfigError::Invalid {
                var: var.to_owned(),
                reason: e.to_string(),
                value,
            }),
        }
    }

    pub fn flag(&self, var: &str) -> Result<bool, ConfigError> {
        match self.optional(var).map(|v| v.to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(value) => Err(ConfigError::Invalid {
                var: var.to_owned(),
                value,
                reason: "expected true/false, yes/no, on/off or 1/0".into(),
            }),
        }
    }

    /// A duration written in whole seconds.
    pub fn seconds_or(&self, var: &str, default: Duration) -> Result<Duration, ConfigError> {
        self.parse_or(var, default.as_secs())
            .map(Duration::from_secs)
    }
}

/// Settings every function needs: where state lives and how it is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonConfig {
    pub table_name: String,
    /// The Spotwise stage (e.g. `prod`, `local`); only informational in logs and notifications.
    pub stage: String,
    /// Allows loopback webhook targets and plain-HTTP endpoints. Never set in a deployed stack.
    pub dev_mode: bool,
}

impl CommonConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: env.required("TABLE_NAME")?,
            stage: env
                .optional("SPOTWISE_STAGE")
                .unwrap_or_else(|| "dev".into()),
            dev_mode: env.flag("SPOTWISE_DEV_MODE")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_variable_is_named() {
        let err = CommonConfig::from_env(&Env::from_pairs([])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable TABLE_NAME is required but not set"
        );
    }

    #[test]
    fn blank_counts_as_missing() {
        let err = Env::from_pairs([("QUEUE_URL", "  ")]).required("QUEUE_URL");
        assert_eq!(
            err,
            Err(ConfigError::Missing {
                var: "QUEUE_URL".into()
            })
        );
    }

    #[test]
    fn invalid_value_names_variable_value_and_reason() {
        let env = Env::from_pairs([("MAX_CONCURRENCY", "lots")]);
        let err = env.parse_or("MAX_CONCURRENCY", 4usize).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("MAX_CONCURRENCY"), "{text}");
        assert!(text.contains("\"lots\""), "{text}");
        assert!(text.contains("invalid digit"), "{text}");
    }

    #[test]
    fn flags_accept_common_spellings_and_reject_others() {
        let env = Env::from_pairs([("A", "Yes"), ("B", "off"), ("C", "maybe")]);
        assert_eq!(env.flag("A"), Ok(true));
        assert_eq!(env.flag("B"), Ok(false));
        assert_eq!(env.flag("UNSET"), Ok(false));
        assert!(matches!(env.flag("C"), Err(ConfigError::Invalid { var, .. }) if var == "C"));
    }

    #[test]
    fn common_config_reads_defaults() {
        let cfg = CommonConfig::from_env(&Env::from_pairs([("TABLE_NAME", "spotwise")])).unwrap();
        assert_eq!(
            cfg,
            CommonConfig {
                table_name: "spotwise".into(),
                stage: "dev".into(),
                dev_mode: false
            }
        );
    }

    #[test]
    fn seconds_parse() {
        let env = Env::from_pairs([("T", "90")]);
        assert_eq!(
            env.seconds_or("T", Duration::ZERO),
            Ok(Duration::from_secs(90))
        );
        assert_eq!(
            env.seconds_or("U", Duration::from_secs(5)),
            Ok(Duration::from_secs(5))
        );
    }
}

//! Tracing set-up shared by every binary.
//!
//! In Lambda the log format follows `AWS_LAMBDA_LOG_FORMAT` (JSON lets CloudWatch Logs Insights
//! query fields) and the level follows `AWS_LAMBDA_LOG_LEVEL`; elsewhere `RUST_LOG` and a
//! human-readable format.

use tracing_subscriber::EnvFilter;

use crate::config::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

impl LogSettings {
    pub fn from_env(env: &Env) -> Self {
        let format = match env.optional("AWS_LAMBDA_LOG_FORMAT") {
            Some(f) if f.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some(_) => LogFormat::Text,
            None if env.optional("SPOTWISE_LOG_JSON").is_some() => LogFormat::Json,
            None => LogFormat::Text,
        };
        let filter = env
            .optional("AWS_LAMBDA_LOG_LEVEL")
            .map(|level| level.to_ascii_lowercase())
            .or_else(|| env.optional("RUST_LOG"))
            .unwrap_or_else(|| "info".into());
        Self { format, filter }
    }
}

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops), so
/// tests and binaries can both call it.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // stderr keeps stdout free for command output (local `invoke` prints the response there);
    // Lambda sends both streams to CloudWatch Logs.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .try_init(),
        // Lambda's text mode adds its own timestamps; keep lines short.
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_json_format_and_level() {
        let s = LogSettings::from_env(&Env::from_pairs([
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
            ("AWS_LAMBDA_LOG_LEVEL", "DEBUG"),
            ("RUST_LOG", "warn"),
        ]));
        assert_eq!(
            s,
            LogSettings {
                format: LogFormat::Json,
                filter: "debug".into()
            }
        );
    }

    #[test]
    fn local_defaults_to_text_and_rust_log() {
        let s = LogSettings::from_env(&Env::from_pairs([("RUST_LOG", "spotwise=trace")]));
        assert_eq!(
            s,
            LogSettings {
                format: LogFormat::Text,
                filter: "spotwise=trace".into()
            }
        );
    }
}

//! How a Spotwise handler runs: under the Lambda Runtime API when deployed, or once on an event
//! file (`<binary> invoke --event FILE`) for the local stack, `sam local`-style.

pub mod sqs;

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;

use lambda_runtime::{LambdaEvent, service_fn};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use lambda_runtime::Error;

/// How the binary was asked to run.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    /// Under the Lambda Runtime API (`AWS_LAMBDA_RUNTIME_API` is set).
    Lambda,
    /// Run the handler once on the JSON event in this file (`-` for standard input).
    Invoke { event: PathBuf },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}\nusage: <function> invoke --event <FILE|->   (under Lambda no arguments are needed)")]
pub struct UsageError(String);

impl Mode {
    pub fn detect(runtime_api: Option<String>, args: &[String]) -> Result<Self, UsageError> {
        match args {
            [] if runtime_api.is_some() => Ok(Mode::Lambda),
            [] => Err(UsageError(
                "AWS_LAMBDA_RUNTIME_API is not set, so this is not Lambda".into(),
            )),
            [cmd, flag, path] if cmd == "invoke" && flag == "--event" => {
                Ok(Mode::Invoke { event: path.into() })
            }
            other => Err(UsageError(format!("unexpected arguments {other:?}"))),
        }
    }

    pub fn from_process() -> Result<Self, UsageError> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        Self::detect(std::env::var("AWS_LAMBDA_RUNTIME_API").ok(), &args)
    }
}

/// Runs `handler` in the mode the process was started in.
pub async fn run<E, R, Err, F, Fut>(handler: F) -> Result<(), Error>
where
    E: DeserializeOwned + Send + 'static,
    R: Serialize + Send,
    Err: Display + Send + Sync + 'static,
    F: Fn(E) -> Fut,
    Fut: Future<Output = Result<R, Err>> + Send,
{
    match Mode::from_process()? {
        Mode::Lambda => {
            let handler = &handler;
            lambda_runtime::run(service_fn(move |event: LambdaEvent<E>| async move {
                handler(event.payload)
                    .await
                    .map_err(|e| Error::from(e.to_string()))
            }))
            .await
        }
        Mode::Invoke { event } => {
            let raw = if event.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                tokio::fs::read_to_string(&event)
                    .await
                    .map_err(|e| format!("cannot read event file {}: {e}", event.display()))?
            };
            let payload: E = serde_json::from_str(&raw)
                .map_err(|e| format!("event file {} is not a valid event: {e}", event.display()))?;
            let response = handler(payload).await.map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string_pretty(&response)?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lambda_mode_needs_the_runtime_api() {
        assert_eq!(
            Mode::detect(Some("127.0.0.1:9001".into()), &[]),
            Ok(Mode::Lambda)
        );
        assert!(Mode::detect(None, &[]).is_err());
    }

    #[test]
    fn invoke_mode_takes_an_event_file() {
        assert_eq!(
            Mode::detect(None, &args(&["invoke", "--event", "events/x.json"])),
            Ok(Mode::Invoke {
                event: "events/x.json".into()
            })
        );
        let err = Mode::detect(None, &args(&["invoke"])).unwrap_err();
        assert!(err.to_string().contains("usage:"));
    }
}

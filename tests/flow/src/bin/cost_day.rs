//! `spotwise-cost-day [--minutes N]`: a simulated day of one cluster on a fresh local stack,
//! every AWS request through a recording proxy; prints what each phase of the day requested,
//! invoked and logged, as JSON, for `infra/local/cost_model.py` to price.

use std::sync::Arc;

use anyhow::Context;
use spotwise_flow::recorder::Recorder;
use spotwise_testkit::LocalStack;
use tracing_subscriber::EnvFilter;

/// Log lines count toward the phase that wrote them, as CloudWatch Logs would bill them.
struct CountedLogs(Arc<Recorder>);

impl std::io::Write for CountedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.logged(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut minutes = 1440_u32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--minutes" => {
                minutes = args
                    .next()
                    .context("--minutes needs a number")?
                    .parse()
                    .context("--minutes needs a number")?;
            }
            other => {
                anyhow::bail!("unknown argument {other:?} (usage: spotwise-cost-day [--minutes N])")
            }
        }
    }
    let stack = LocalStack::start();
    let recorder = Recorder::new(stack.endpoint());
    let logs = Arc::clone(&recorder);
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::new("info"))
        .with_writer(move || CountedLogs(Arc::clone(&logs)))
        .init();
    let day = spotwise_flow::costday::run(stack, &recorder, minutes).await?;
    println!("{}", serde_json::to_string_pretty(&day)?);
    Ok(())
}

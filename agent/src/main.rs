use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use spotwise_agent::{
    Agent, AgentConfig, Metrics, QueueWorker, Reporter, metrics, read_cluster_secret,
};
use spotwise_core::config::Env;
use spotwise_core::telemetry::{self, LogSettings};
use tokio::sync::watch;

const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);
const SNAPSHOT_EVERY: Duration = Duration::from_secs(300);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    telemetry::init(&LogSettings::from_env(&env));
    let config = AgentConfig::from_env(&env)?;
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| format!("reading the {what} from {}", path.display()))
    };
    let secret = read_cluster_secret(&config.secret_file)?;
    let key = String::from_utf8(read(&config.key_file, "agent key")?)
        .context("the agent key is not text")?
        .trim()
        .to_owned();
    let kube = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let metrics = Metrics::new();
    let reporter = Arc::new(Reporter::new(
        &config.api_url,
        key,
        Some(config.buffer_file.clone()),
        Arc::clone(&metrics),
    )?);
    let agent = Agent::new(config.cluster_id.clone(), secret, kube, config.dry_run)
        .with_autoscaling(aws_sdk_autoscaling::Client::new(&sdk))
        .with_reporter(reporter)
        .with_metrics(Arc::clone(&metrics));
    let worker = QueueWorker::new(aws_sdk_sqs::Client::new(&sdk), &config.queue_url);

    // SIGTERM (Kubernetes stopping the pod) or Ctrl-C: finish the action in hand, then stop.
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => None } } => {}
        }
        let _ = stop.send(true);
    });
    let shutdown = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };

    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding {}", config.metrics_addr))?;
    let server = axum::serve(listener, metrics::router(metrics)).with_graceful_shutdown(shutdown());
    tokio::join!(
        worker.run(&agent, shutdown()),
        agent.report_loop(HEARTBEAT_EVERY, SNAPSHOT_EVERY, shutdown()),
        async {
            if let Err(err) = server.await {
                tracing::error!(error = %err, "metrics server stopped");
            }
        },
    );
    Ok(())
}

use anyhow::Context;
use spotwise_agent::{Agent, AgentConfig, QueueWorker};
use spotwise_core::config::Env;
use spotwise_core::telemetry::{self, LogSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    telemetry::init(&LogSettings::from_env(&env));
    let config = AgentConfig::from_env(&env)?;
    let secret = std::fs::read(&config.secret_file).with_context(|| {
        format!(
            "reading the cluster secret from {}",
            config.secret_file.display()
        )
    })?;
    let kube = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let agent = Agent::new(config.cluster_id.clone(), secret, kube, config.dry_run)
        .with_autoscaling(aws_sdk_autoscaling::Client::new(&sdk));
    let worker = QueueWorker::new(aws_sdk_sqs::Client::new(&sdk), &config.queue_url);
    worker
        .run(&agent, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}

use spotwise_core::config::Env;
use spotwise_core::telemetry::{self, LogSettings};

#[tokio::main]
async fn main() -> Result<(), spotwise_lambda::Error> {
    let env = Env::process();
    telemetry::init(&LogSettings::from_env(&env));
    let config = webhook_dispatcher::Config::from_env(&env)?;
    let sdk = spotwise_aws::sdk::load().await;
    let deps = webhook_dispatcher::Deps::new(&sdk, &config)?;
    spotwise_lambda::run(|event| webhook_dispatcher::handle_batch(&deps, event)).await
}

//! Under Lambda: the one-minute schedule. Locally also `scheduler invoke --event FILE`.

use spotwise_core::config::Env;
use spotwise_core::telemetry::{self, LogSettings};

#[tokio::main]
async fn main() -> Result<(), spotwise_lambda::Error> {
    let env = Env::process();
    telemetry::init(&LogSettings::from_env(&env));
    let config = scheduler::Config::from_env(&env)?;
    let sdk = spotwise_aws::sdk::load().await;
    let deps = scheduler::Deps::new(&sdk, &config);
    spotwise_lambda::run(|event| scheduler::handle(&deps, event)).await
}

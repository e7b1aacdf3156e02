//! Under Lambda: the hourly and monthly schedules and the cost queue. Locally also
//! `cost invoke --event FILE`.

use spotwise_core::config::Env;
use spotwise_core::telemetry::{self, LogSettings};

#[tokio::main]
async fn main() -> Result<(), spotwise_lambda::Error> {
    let env = Env::process();
    telemetry::init(&LogSettings::from_env(&env));
    let config = cost::Config::from_env(&env)?;
    let sdk = spotwise_aws::sdk::load().await;
    let deps = cost::Deps::new(&sdk, &config);
    spotwise_lambda::run(|event| cost::handle(&deps, event)).await
}

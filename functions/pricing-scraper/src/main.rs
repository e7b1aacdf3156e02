//! Under Lambda: the schedule fans out one message per region, and each message scrapes its
//! region. Locally: `pricing-scraper invoke --event FILE` runs either, and `pricing-scraper export --region REGION` prints the stored pools
//! of a region as JSON (the optimizer's input, for what-if runs offline).

use anyhow::Context;
use spotwise_core::config::Env;
use spotwise_core::telemetry::{self, LogSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    telemetry::init(&LogSettings::from_env(&env));
    let config = pricing_scraper::Config::from_env(&env)?;
    let sdk = spotwise_aws::sdk::load().await;
    let deps = pricing_scraper::Deps::new(&sdk, &config)?;

    let args: Vec<String> = std::env::args().skip(1).collect();
    if let ["export", "--region", region] = args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        let pools = pricing_scraper::stored_pools(&deps.store, region)
            .await
            .context("reading pools")?;
        println!("{}", serde_json::to_string_pretty(&pools)?);
        return Ok(());
    }
    spotwise_lambda::run(|event| pricing_scraper::handle(&deps, &config, event))
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

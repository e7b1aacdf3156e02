//! `spotwise-discovery-scale [--accounts 200] [--concurrency 20]`: links that many customer
//! accounts (one EKS cluster of three nodes each) through the API on a fresh local stack, then
//! runs one discovery cycle as Lambda would: the scheduled fan-out, then the account messages
//! in batches of four (the template's batch size), `--concurrency` batches at once (its maximum
//! concurrency). Prints the fan-out, the cycle's wall time and the time per account as JSON.

use std::time::Instant;

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::json;
use spotwise_core::TenantId;
use spotwise_core::domain::RoleArn;
use spotwise_core::messages::ScheduleTrigger;
use spotwise_flow::{ApiServer, Group, REGION, env};
use spotwise_testkit::LocalStack;

const GROUP: &[Group] = &[Group {
    nodegroup: "general",
    instance_type: "m5.large",
    count: 3,
    spot: false,
}];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut accounts, mut concurrency) = (200_usize, 20_usize);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--accounts" => accounts = value.parse().context("--accounts needs a number")?,
            "--concurrency" => {
                concurrency = value.parse().context("--concurrency needs a number")?
            }
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let stack = LocalStack::start();
    let sdk = stack.sdk_config().await;
    let server = ApiServer::start(&stack, &sdk).await?;
    let api = server.tenant(&TenantId::new("acme")?, "Acme").await?;
    let started = Instant::now();
    for i in 0..accounts {
        let account = format!("{:012}", 200_000_000_000_u64 + i as u64);
        let role = format!("arn:aws:iam::{account}:role/SpotwiseAccess");
        let issued = api.post("/v1/accounts/external-id", json!({})).await?;
        let external_id = issued["external_id"].as_str().context("external_id")?;
        api.post(
            "/v1/accounts",
            json!({"role_arn": role, "regions": [REGION]}),
        )
        .await?;
        let customer = spotwise_aws::cross_account::CrossAccount::new(sdk.clone(), "scale")
            .config_for(&RoleArn::parse(&role)?, external_id)
            .await?
            .to_builder()
            .region(aws_config::Region::new(REGION))
            .build();
        spotwise_flow::create_cluster(&customer, "prod", GROUP).await?;
    }
    let linked_s = started.elapsed().as_secs_f64();

    let deps = discovery::Deps::new(
        &sdk,
        &discovery::Config::from_env(&env(&stack, "DiscoveryFunction", &[]))?,
    );
    let queue = env(&stack, "DiscoveryFunction", &[]).required("DISCOVERY_QUEUE_URL")?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let trigger: ScheduleTrigger = serde_json::from_value(json!({"job": "discovery"}))?;
    let started = Instant::now();
    let fanned = discovery::fan_out(&deps, trigger).await?;
    let fan_out_ms = started.elapsed().as_secs_f64() * 1000.0;

    let mut batches = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(4)
            .send()
            .await?
            .messages
            .unwrap_or_default();
        if received.is_empty() {
            break;
        }
        batches.push(spotwise_testkit::lambda_event(received, None));
    }
    let messages: usize = batches.iter().map(|b| b.records.len()).sum();
    let batch_count = batches.len();
    let started = Instant::now();
    let outcomes: Vec<(usize, f64)> = futures_util::stream::iter(batches)
        .map(|batch| {
            let deps = &deps;
            async move {
                let started = Instant::now();
                let Ok(response) = discovery::handle_batch(deps, batch).await;
                (
                    response.batch_item_failures.len(),
                    started.elapsed().as_secs_f64() * 1000.0,
                )
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let cycle_s = started.elapsed().as_secs_f64();
    let failures: usize = outcomes.iter().map(|(f, _)| f).sum();
    let mut batch_ms: Vec<f64> = outcomes.iter().map(|(_, ms)| *ms).collect();
    batch_ms.sort_by(f64::total_cmp);
    let median_batch_ms = batch_ms.get(batch_ms.len() / 2).copied().unwrap_or(0.0);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "accounts": accounts,
            "linked_in_s": linked_s,
            "fan_out": {"enqueued": fanned.enqueued, "ms": fan_out_ms},
            "messages": messages,
            "failures": failures,
            "concurrency": concurrency,
            "batches": batch_count,
            "cycle_s": cycle_s,
            "median_batch_ms": median_batch_ms,
            "max_batch_ms": batch_ms.last().copied().unwrap_or(0.0),
        }))?
    );
    Ok(())
}

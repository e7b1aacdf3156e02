//! A simulated day of one cluster (30 nodes, 400 pods) on the local stack, every AWS request
//! through a [`Recorder`]: the agent's heartbeats every 30 s and snapshots every 5 min (its own
//! reporter, through the API), discovery every 5 min, the optimizer and the cost sample hourly,
//! the scheduler every minute and the scraper hourly, each on the schedule template.yaml gives
//! it and at the simulated time. `infra/local/cost_model.py` prices the result.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use aws_lambda_events::event::sqs::SqsEvent;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use spotwise_agent::metrics::Metrics;
use spotwise_agent::report::Reporter;
use spotwise_core::messages::{CostRequest, DiscoverAccount, OptimizeRequest, ScheduleTrigger};
use spotwise_core::{ClusterId, TenantId};
use spotwise_testkit::LocalStack;
use time::OffsetDateTime;

use crate::recorder::Recorder;
use crate::synthetic::{self, NodeSeed};
use crate::{ACCOUNT, AGENT_ROLE, ApiServer, Group, REGION, env};

/// 30 nodes: the cluster the platform's cost per cluster-month is quoted for.
const GROUPS: &[Group] = &[
    Group {
        nodegroup: "general",
        instance_type: "m5.2xlarge",
        count: 16,
        spot: false,
    },
    Group {
        nodegroup: "compute",
        instance_type: "c5.2xlarge",
        count: 6,
        spot: false,
    },
    Group {
        nodegroup: "spot",
        instance_type: "m5.xlarge",
        count: 8,
        spot: true,
    },
];
pub const PODS: usize = 400;

/// Messages a Lambda SQS poller would hand the function, and their receipt handles.
async fn receive(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<SqsEvent> {
    let received = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .send()
        .await?
        .messages
        .unwrap_or_default();
    Ok(spotwise_testkit::lambda_event(received, None))
}

/// What the poller does after a successful batch: one DeleteMessageBatch.
async fn delete(sqs: &aws_sdk_sqs::Client, url: &str, event: &SqsEvent) -> anyhow::Result<()> {
    if event.records.is_empty() {
        return Ok(());
    }
    let mut batch = sqs.delete_message_batch().queue_url(url);
    for (i, message) in event.records.iter().enumerate() {
        batch = batch.entries(
            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .set_receipt_handle(message.receipt_handle.clone())
                .build()?,
        );
    }
    batch.send().await?;
    Ok(())
}

fn bodies<T: DeserializeOwned>(event: &SqsEvent) -> anyhow::Result<Vec<T>> {
    event
        .records
        .iter()
        .map(|m| {
            Ok(serde_json::from_str(
                m.body.as_deref().context("empty message")?,
            )?)
        })
        .collect()
}

fn trigger(job: &str) -> anyhow::Result<ScheduleTrigger> {
    Ok(serde_json::from_value(json!({ "job": job }))?)
}

/// Runs `minutes` of the day (1440 for a whole one) and returns what the recorder counted.
pub async fn run(
    mut stack: LocalStack,
    recorder: &Arc<Recorder>,
    minutes: u32,
) -> anyhow::Result<Value> {
    let proxy = recorder.serve().await?;
    stack.reroute(&proxy);
    let sdk = stack.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let day_start = OffsetDateTime::now_utc()
        .replace_time(time::Time::MIDNIGHT)
        .to_offset(time::UtcOffset::UTC);
    let clock = api::Clock::set_by_caller(day_start);

    recorder.enter("setup", "", true);
    let server = ApiServer::start_with_clock(&stack, &sdk, clock.clone()).await?;
    let tenant = TenantId::new("acme")?;
    let admin = server.tenant(&tenant, "Acme").await?;
    let customer = crate::link_account(&admin, &sdk).await?;
    let instances = crate::create_cluster(&customer, "prod", GROUPS).await?;
    let cluster = ClusterId::new(format!("{ACCOUNT}.{REGION}.prod"))?;

    let discovery = discovery::Deps::new(
        &sdk,
        &discovery::Config::from_env(&env(&stack, "DiscoveryFunction", &[]))?,
    );
    let scraper_config = crate::scraper_config(&stack)?;
    let scraper = pricing_scraper::Deps::new(&sdk, &scraper_config)?;
    let optimizer = optimizer::Deps::new(
        &sdk,
        &optimizer::Config::from_env(&env(&stack, "OptimizerFunction", &[]))?,
    );
    let cost = cost::Deps::new(
        &sdk,
        &cost::Config::from_env(&env(&stack, "CostFunction", &[]))?,
    );
    let scheduler = scheduler::Deps::new(
        &sdk,
        &scheduler::Config::from_env(&env(&stack, "SchedulerFunction", &[]))?,
    );
    let discovery_queue = env(&stack, "DiscoveryFunction", &[]).required("DISCOVERY_QUEUE_URL")?;
    let optimize_queue = env(&stack, "OptimizerFunction", &[]).required("OPTIMIZE_QUEUE_URL")?;
    let cost_queue = env(&stack, "CostFunction", &[]).required("COST_QUEUE_URL")?;

    discovery::discover_account(
        &discovery,
        &DiscoverAccount {
            tenant_id: tenant.clone(),
            account_id: ACCOUNT.into(),
            run_id: "setup".into(),
            scheduled: None,
        },
        day_start,
    )
    .await?;
    // The first scrape writes every pool; the day's hourly scrapes write only what changed.
    pricing_scraper::scrape(&scraper, &scraper_config, &scraper_config.regions).await?;
    let installed = admin
        .post(
            &format!("/v1/clusters/{cluster}/agent"),
            json!({"agent_role_arn": AGENT_ROLE}),
        )
        .await?;
    let agent_key = installed["agent_key"]
        .as_str()
        .context("agent_key")?
        .to_owned();
    let reporter = Reporter::new(server.base(), agent_key, None, Metrics::new())?;
    let catalogue = crate::cluster::catalogue()?;
    let nodes: Vec<NodeSeed> = instances
        .iter()
        .map(|i| {
            let spec = catalogue
                .get(&i.instance_type)
                .with_context(|| format!("{} is not in the catalogue", i.instance_type))?;
            let (cpu_m, mem_mib) = spotwise_optimizer::catalog::allocatable(spec);
            Ok(NodeSeed {
                name: i.node.clone(),
                instance_id: i.id.clone(),
                instance_type: i.instance_type.clone(),
                zone: i.zone.clone(),
                spot: i.spot,
                cpu_m,
                mem_mib,
                max_pods: spec.max_pods,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let gzip_bytes = spotwise_core::snapshot_codec::encode(&synthetic::snapshot(&nodes, PODS, 0))?
        .gzip
        .len();

    // The agent's hourly usage sketches ride on its snapshots, as right-sizing needs them.
    let mut usage = spotwise_agent::usage::UsageRecorder::default();
    for minute in 0..minutes {
        let at = day_start + time::Duration::minutes(i64::from(minute));
        let timed = Instant::now;

        recorder.enter("agent heartbeats", "ApiFunction", false);
        for half in [0, 30] {
            clock.set(at + time::Duration::seconds(half));
            let started = timed();
            reporter.heartbeat(false, &[]).await?;
            recorder.invoked(started.elapsed(), 1);
        }
        if minute % 5 == 0 {
            recorder.enter("agent snapshots", "ApiFunction", false);
            clock.set(at);
            let mut snapshot = synthetic::snapshot(&nodes, PODS, u64::from(minute));
            usage.record(&mut snapshot, at.unix_timestamp());
            let started = timed();
            let sent = reporter.snapshot(&snapshot).await?;
            // The ticket and the confirmation are API calls; the PUT goes straight to S3.
            let calls = match sent {
                spotwise_agent::report::SnapshotSent::Uploaded { .. } => 2,
                spotwise_agent::report::SnapshotSent::Unchanged => 1,
            };
            let elapsed = started.elapsed() / calls;
            for _ in 0..calls {
                recorder.invoked(elapsed, 1);
            }

            recorder.enter("shared: discovery fan-out", "DiscoveryFunction", true);
            recorder
                .invocation(discovery::fan_out(&discovery, trigger("discovery")?))
                .await?;
            recorder.enter("discovery of the account", "DiscoveryFunction", false);
            recorder
                .invocation(async {
                    let batch = receive(&sqs, &discovery_queue).await?;
                    for request in bodies::<DiscoverAccount>(&batch)? {
                        discovery::discover_account(&discovery, &request, at).await?;
                    }
                    delete(&sqs, &discovery_queue, &batch).await
                })
                .await?;
        }

        recorder.enter("shared: scheduler tick", "SchedulerFunction", true);
        recorder.invocation(scheduler::tick(&scheduler, at)).await?;

        match minute % 60 {
            0 => {
                recorder.enter("shared: scraper", "PricingScraperFunction", true);
                recorder
                    .invocation(pricing_scraper::handle(
                        &scraper,
                        &scraper_config,
                        pricing_scraper::ScraperEvent::Schedule(trigger("pricing-scraper")?),
                    ))
                    .await?;
                recorder
                    .invocation(async {
                        let batch = receive(&sqs, &scraper_config.scrape_queue_url).await?;
                        let Ok(_) =
                            pricing_scraper::handle_batch(&scraper, &scraper_config, batch.clone())
                                .await;
                        delete(&sqs, &scraper_config.scrape_queue_url, &batch).await
                    })
                    .await?;

                recorder.enter("shared: optimizer fan-out", "OptimizerFunction", true);
                recorder
                    .invocation(optimizer::fan_out(&optimizer, &trigger("optimizer")?, at))
                    .await?;
                recorder.enter("optimizer plan", "OptimizerFunction", false);
                recorder
                    .invocation(async {
                        let batch = receive(&sqs, &optimize_queue).await?;
                        for request in bodies::<OptimizeRequest>(&batch)? {
                            optimizer::optimize(&optimizer, &request, at).await?;
                        }
                        delete(&sqs, &optimize_queue, &batch).await
                    })
                    .await?;
            }
            5 => {
                recorder.enter("shared: cost fan-out", "CostFunction", true);
                recorder
                    .invocation(cost::fan_out(&cost, &trigger("cost-sample")?, at))
                    .await?;
                recorder.enter("cost sample", "CostFunction", false);
                recorder
                    .invocation(async {
                        let batch = receive(&sqs, &cost_queue).await?;
                        for request in bodies::<CostRequest>(&batch)? {
                            if let CostRequest::Sample {
                                tenant_id,
                                cluster_id,
                            } = request
                            {
                                cost::sample(&cost, &tenant_id, &cluster_id, at).await?;
                            }
                        }
                        delete(&sqs, &cost_queue, &batch).await
                    })
                    .await?;
            }
            _ => {}
        }
    }
    // What the day left stored: every item, read once (S3 holds the latest two snapshots).
    recorder.enter("storage scan", "", true);
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let mut pages = ddb.scan().table_name(stack.table()).into_paginator().send();
    while let Some(page) = pages.next().await {
        page?;
    }
    recorder.enter("done", "", true);
    Ok(json!({
        "minutes": minutes,
        "clusters": 1,
        "nodes": nodes.len(),
        "pods": PODS,
        "snapshot_gzip_bytes": gzip_bytes,
        "scrape_regions": scraper_config.regions,
        "pools": pricing_scraper::stored_pools(&scraper.store, REGION).await?.len(),
        "phases": recorder.phases(),
    }))
}

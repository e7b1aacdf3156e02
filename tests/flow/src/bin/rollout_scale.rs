//! `spotwise-rollout-scale [--rounds 60]`: the rollout on a 200-node, 3,200-pod production
//! cluster on a fresh local stack (the demo's company, 130 times over with a quarter of the
//! requests; 20 drains at once). Prints, as JSON, the time from approval to the rollout's end,
//! the rounds it took, its AWS calls, and before / planned / realised cost and nodes, with the
//! pods left Pending and the disruption budgets broken.

use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use spotwise_flow::{HOURS_PER_MONTH, Report, Shape, setup_shaped};
use spotwise_testkit::LocalStack;
use time::OffsetDateTime;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut rounds = 60_usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .context("--rounds needs a value")?
                    .parse()
                    .context("--rounds needs a number")?;
            }
            other => anyhow::bail!(
                "unknown argument {other:?} (usage: spotwise-rollout-scale [--rounds N])"
            ),
        }
    }
    let stack = LocalStack::start();
    let mut report = Report::default();
    let shape = Shape::large();
    let started = Instant::now();
    let mut rig = setup_shaped(&stack, &mut report, &shape).await?;
    let setup_seconds = started.elapsed().as_secs_f64();
    eprintln!("set up in {setup_seconds:.0} s: {:?}", report.steps);
    rig.approve().await?;
    let approved = Instant::now();
    let mut taken = 0;
    let mut rollout = serde_json::Value::Null;
    for round in 0..rounds {
        rollout = rig.round(OffsetDateTime::now_utc()).await?;
        taken = round + 1;
        eprintln!(
            "round {taken} at {:.0} s: {} ({})",
            approved.elapsed().as_secs_f64(),
            rollout["status"].as_str().unwrap_or("?"),
            rollout["reason"].as_str().unwrap_or("")
        );
        if rollout["status"] != "provisioning" && rollout["status"] != "migrating" {
            break;
        }
    }
    let monthly = |which: &str| rollout[which]["cost_hr"].as_f64().unwrap_or(0.0) * HOURS_PER_MONTH;
    let state = rig.fake.state();
    let pods = state.pods.len();
    println!(
        "{}",
        json!({
            "nodes_before": rollout["before"]["nodes"],
            "pods": pods,
            "setup_seconds": setup_seconds,
            "rollout_status": rollout["status"],
            "rollout_reason": rollout["reason"],
            "approval_to_end_seconds": approved.elapsed().as_secs_f64(),
            "rounds": taken,
            "aws_calls": rollout["aws_calls"],
            "groups_created": rollout["groups"].as_array().map(Vec::len),
            "nodes_replaced": rollout["replaced"].as_array().map(Vec::len),
            "nodes_kept": rollout["kept"].as_array().map(Vec::len),
            "monthly_before": monthly("before"),
            "monthly_planned": monthly("planned"),
            "monthly_realised": monthly("realised"),
            "realised_to_planned": monthly("realised") / monthly("planned").max(f64::MIN_POSITIVE),
            "nodes_planned": rollout["planned"]["nodes"],
            "nodes_realised": rollout["realised"]["nodes"],
            "spot_nodes_planned": rollout["planned"]["spot_nodes"],
            "spot_nodes_realised": rollout["realised"]["spot_nodes"],
            "evictions": state.evictions,
            "pods_pending": state.pending().len(),
            "pdb_violations": state.pdb_violations.len(),
        })
    );
    Ok(())
}

//! `spotwise-demo`: the whole flow on a fresh local stack, a summary on stdout and an HTML
//! report (`--report`, default `target/spotwise-demo.html`); `--karpenter` runs the rollout on
//! the same cluster run by Karpenter instead; `--console` then keeps the API and the web console
//! running on the demo's data and prints a URL that opens it signed in, until Ctrl-C.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use spotwise_core::config::Env;
use spotwise_core::telemetry::{self, LogSettings};
use spotwise_testkit::LocalStack;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out = spotwise_testkit::repo_root().join("target/spotwise-demo.html");
    let mut json = false;
    let mut karpenter = false;
    let mut console = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--report" => out = PathBuf::from(args.next().context("--report needs a path")?),
            "--json" => json = true,
            "--karpenter" => karpenter = true,
            "--console" => console = true,
            other => anyhow::bail!(
                "unknown argument {other:?} (usage: spotwise-demo [--json] [--karpenter] [--console] [--report FILE])"
            ),
        }
    }
    let env = Env::process();
    let mut logs = LogSettings::from_env(&env);
    // The summary is the output; handler logs only when something goes wrong, unless asked.
    if env.optional("RUST_LOG").is_none() {
        logs.filter = "warn".into();
    }
    telemetry::init(&logs);
    let started = Instant::now();
    let stack = LocalStack::start();
    if karpenter {
        let (report, _rig) = spotwise_flow::run_karpenter(&stack).await?;
        let mut figures = report.figures();
        figures["run_seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
        figures["rollout_backend"] = report.rollout["backend"].clone();
        if json {
            println!("{figures}");
        } else {
            println!(
                "Spotwise on the local stack ({}), cluster {} run by Karpenter",
                stack.endpoint(),
                report.cluster_id
            );
            print_rollout(&report);
        }
        return Ok(());
    }
    let (report, rig) = spotwise_flow::run_kept(&stack).await?;
    let total = started.elapsed();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, spotwise_flow::html::render(&report))
        .with_context(|| format!("writing {}", out.display()))?;
    if json {
        let mut figures = report.figures();
        figures["report"] = serde_json::json!(out.display().to_string());
        figures["run_seconds"] = serde_json::json!(total.as_secs_f64());
        println!("{figures}");
        return Ok(());
    }

    let summary = &report.recommendation["summary"];
    let money = |field: &str| summary[field].as_f64().unwrap_or(0.0);
    println!(
        "Spotwise on the local stack ({}), cluster {}",
        stack.endpoint(),
        report.cluster_id
    );
    println!(
        "  discovery: {} clusters ({}), {} nodes; {} spot pools priced",
        report.clusters_discovered.len(),
        report.clusters_discovered.join(", "),
        report.nodes_discovered,
        report.pools
    );
    println!(
        "  agent snapshot: {} nodes, {} pods",
        report.snapshot_nodes, report.snapshot_pods
    );
    println!(
        "  monthly cost:   ${:.2} now -> ${:.2} planned (saves ${:.2}, {:.0}% of the planned cost on spot, risk {:.0}/100)",
        money("current_monthly_cost"),
        money("monthly_cost"),
        money("monthly_savings"),
        money("spot_cost_share") * 100.0,
        money("risk_score"),
    );
    println!(
        "  node mix:       {} nodes now -> {} planned ({} spot)",
        report.snapshot_nodes, summary["nodes"], summary["spot_nodes"]
    );
    print_rollout(&report);
    println!(
        "  interruption:   {} ({}) handled in {:.1} ms; node unschedulable: {}",
        report.interrupted_instance,
        report.interrupted_node,
        report.interruption_handled.as_secs_f64() * 1000.0,
        report.node_after_drain["spec"]["unschedulable"]
    );
    print_right_sizing(&report);
    println!(
        "  webhooks:       {} delivered to the local receiver, {} with a valid signature ({:?})",
        report.webhooks_received, report.webhooks_verified, report.webhook_event_types
    );
    println!(
        "  cost, last hour: ${} ({} idle); by namespace: {}",
        report.hour_cost["summary"]["total"]["cost"]
            .as_str()
            .unwrap_or("?"),
        report.hour_cost["summary"]["total"]["idle"]
            .as_str()
            .unwrap_or("?"),
        report
            .namespace_costs
            .iter()
            .map(|(n, c)| format!("{n} ${c:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  savings report {}: ${} spent, ${} saved",
        report.savings_report["month"].as_str().unwrap_or("?"),
        report.savings_report["cost"].as_str().unwrap_or("?"),
        report.savings_report["realised_total"]
            .as_str()
            .unwrap_or("?"),
    );
    for plan in report.savings_report["rollouts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "    plan {} realised: ${}/month before, ${} planned, ${} measured after",
            plan["revision"],
            plan["monthly_before"].as_str().unwrap_or("?"),
            plan["monthly_planned"].as_str().unwrap_or("?"),
            plan["monthly_realised"].as_str().unwrap_or("?"),
        );
    }
    for (step, took) in &report.steps {
        println!("  {:>7.0} ms  {step}", took.as_secs_f64() * 1000.0);
    }
    println!(
        "  report: {} (whole run {:.1} s)",
        out.display(),
        total.as_secs_f64()
    );
    if console {
        let (url, email, password) = spotwise_flow::demo_console(&rig).await?;
        println!("\nThe console, on the demo's data (Ctrl-C stops it):");
        println!("  {url}");
        println!(
            "  or sign in at {}/console as {email} with {password}",
            rig.server.base()
        );
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}

/// What right-sizing changed on the cluster and what it saves.
fn print_right_sizing(report: &spotwise_flow::Report) {
    println!(
        "  right-sizing:   ${:.2}/month of requests freed by the kept changes; plan ${:.2} -> ${:.2}/month",
        report.rightsizing_saving, report.plan_before_rightsizing, report.plan_after_rightsizing
    );
    for change in report.rightsizing["changes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let w = &change["workload"];
        let requests = |which: &str| {
            change["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{}m/{} MiB",
                        c[which]["cpu_request_m"], c[which]["mem_request_mib"]
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "    {}/{}/{}: {} -> {}, {} ({})",
            w["namespace"].as_str().unwrap_or("?"),
            w["kind"].as_str().unwrap_or("?"),
            w["name"].as_str().unwrap_or("?"),
            requests("before"),
            requests("after"),
            change["status"].as_str().unwrap_or("?"),
            change["reason"].as_str().unwrap_or(""),
        );
    }
}

/// The rollout's lines: status, and before, planned and realised figures.
fn print_rollout(report: &spotwise_flow::Report) {
    let rollout = &report.rollout;
    let figure = |which: &str, field: &str| rollout[which][field].as_f64().unwrap_or(0.0);
    println!(
        "  rollout:        {} in {:.1} s ({}); {} AWS calls",
        rollout["status"].as_str().unwrap_or("?"),
        report.rollout_time.as_secs_f64(),
        rollout["reason"].as_str().unwrap_or(""),
        rollout["aws_calls"]
    );
    for which in ["before", "planned", "realised"] {
        println!(
            "    {which:<9} ${:>8.2}/month  {:>2} nodes, {:>2} spot",
            figure(which, "cost_hr") * spotwise_flow::HOURS_PER_MONTH,
            figure(which, "nodes"),
            figure(which, "spot_nodes"),
        );
    }
    println!(
        "    {} evictions, {} pods Pending, {} disruption budget violations",
        report.evictions,
        report.pods_pending,
        report.pdb_violations.len()
    );
}

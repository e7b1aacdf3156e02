//! `spotwise plan --input FILE [--format json|table] [--region REGION]`
//! `spotwise cost --input FILE [--by DIMENSION] [--format table|json|csv] [--label KEY]... [--region REGION] [--hours N]`
//!
//! Offline what-if. `plan` takes the planner's own format (`pods`, `offerings`, `policy`) or a
//! cluster snapshot from `kubectl get nodes,pods,pdb,podmetrics -A -o json`; `cost` allocates a
//! snapshot's node prices over its pods. Snapshots are priced with the data compiled into this
//! binary for the nodes' region (or `--region`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, Subcommand};
use rust_decimal::Decimal;
use spotwise_core::snapshot::Snapshot;
use spotwise_cost::breakdown::{self, DEFAULT_LABEL_KEYS, Dimension};
use spotwise_cost::report::{self, ExportRow};
use spotwise_cost::{Allocation, CostLine, CostTable, Weights, allocate, inputs};
use spotwise_optimizer::catalog::{PriceData, TypeFilter};
use spotwise_optimizer::eligibility::SpotPolicy;
use spotwise_optimizer::{Offering, Plan, PlanInput, PlanPolicy, kube, plan};

/// What-if planning and cost allocation, offline, with the price data shipped in this binary.
#[derive(Parser)]
#[command(name = "spotwise", args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Plan a cluster's nodes from a planner input or a kubectl snapshot.
    Plan {
        #[command(flatten)]
        source: Source,
        /// json or table.
        #[arg(short, long, default_value = "table", value_parser = plan_format)]
        format: PlanFormat,
    },
    /// Allocate a snapshot's node prices over its pods.
    Cost(CostArgs),
}

#[derive(clap::Args)]
struct Source {
    /// A `kubectl get nodes,pods,pdb,podmetrics -A -o json` list, or (plan only) a planner input.
    #[arg(short, long, value_name = "FILE")]
    input: String,
    /// Price a snapshot for this region instead of its nodes' region label.
    #[arg(long)]
    region: Option<String>,
}

#[derive(clap::Args)]
struct CostArgs {
    #[command(flatten)]
    source: Source,
    /// namespace, workload, pod, node or label.
    #[arg(long, value_name = "DIMENSION", default_value = "namespace")]
    by: Dimension,
    /// table, json or csv.
    #[arg(short, long, default_value = "table", value_parser = cost_format)]
    format: CostFormat,
    /// A label key to break down by (repeatable); without it, the usual cost labels.
    #[arg(long = "label", value_name = "KEY")]
    labels: Vec<String>,
    /// Hours the snapshot's prices are charged for.
    #[arg(long, value_name = "N", default_value = "1", value_parser = hours)]
    hours: u32,
}

#[derive(Clone)]
enum PlanFormat {
    Json,
    Table,
}

#[derive(Clone)]
enum CostFormat {
    Table,
    Json,
    Csv,
}

// Hand-written value parsers rather than `ValueEnum`, to keep the messages scripts match on.
fn plan_format(value: &str) -> Result<PlanFormat, String> {
    match value {
        "json" => Ok(PlanFormat::Json),
        "table" => Ok(PlanFormat::Table),
        other => Err(format!("--format must be json or table, not `{other}`")),
    }
}

fn cost_format(value: &str) -> Result<CostFormat, String> {
    match value {
        "table" => Ok(CostFormat::Table),
        "json" => Ok(CostFormat::Json),
        "csv" => Ok(CostFormat::Csv),
        other => Err(format!(
            "--format must be table, json or csv, not `{other}`"
        )),
    }
}

fn hours(value: &str) -> Result<u32, &'static str> {
    value
        .parse()
        .ok()
        .filter(|h| *h > 0)
        .ok_or("--hours must be a whole number of hours, at least 1")
}

/// A missing or unknown flag in the words of the hand-written parser this replaced, which
/// scripts match on; `None` leaves the error (and `--help`) to clap.
fn reworded(err: &clap::Error) -> Option<String> {
    let arg = match err.get(ContextKind::InvalidArg)? {
        ContextValue::String(arg) => arg,
        ContextValue::Strings(args) => args.first()?,
        _ => return None,
    };
    // A missing flag is named with its value: `--input <FILE>`.
    let flag = arg.split_whitespace().next()?;
    let message = match err.kind() {
        ErrorKind::MissingRequiredArgument => format!("{flag} is required"),
        ErrorKind::UnknownArgument => format!("unknown argument `{flag}`"),
        _ => return None,
    };
    Some(match err.get(ContextKind::Usage) {
        Some(usage) => format!("{message}\n{usage}"),
        None => message,
    })
}

/// A snapshot and the shipped offerings of its region and zones that `filter` admits.
fn priced_snapshot(
    source: &Source,
    bytes: &[u8],
    filter: impl FnOnce(&Snapshot) -> TypeFilter,
) -> anyhow::Result<(Snapshot, Vec<Offering>)> {
    let snapshot = spotwise_core::snapshot::parse_list(bytes)?;
    let region = source
        .region
        .clone()
        .or_else(|| snapshot.region.clone())
        .context(
            "the snapshot's nodes carry no topology.kubernetes.io/region label; pass --region",
        )?;
    let zones = snapshot.zones();
    if zones.is_empty() {
        bail!("the snapshot's nodes carry no topology.kubernetes.io/zone label");
    }
    let offerings = PriceData::shipped()?.offerings(&region, &zones, &filter(&snapshot));
    if offerings.is_empty() {
        bail!("the shipped price data has no prices for region {region}");
    }
    Ok((snapshot, offerings))
}

fn read(source: &Source) -> anyhow::Result<(Vec<u8>, serde_json::Value)> {
    let bytes =
        std::fs::read(&source.input).with_context(|| format!("cannot read {}", source.input))?;
    let value =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", source.input))?;
    Ok((bytes, value))
}

fn load_plan_input(source: &Source) -> anyhow::Result<PlanInput> {
    let (bytes, value) = read(source)?;
    if value.get("items").is_some() {
        let (snapshot, offerings) = priced_snapshot(source, &bytes, |s| TypeFilter {
            architectures: s.architectures(),
            ..TypeFilter::default()
        })?;
        let (input, _) = kube::to_plan_input(
            &snapshot,
            offerings,
            PlanPolicy::default(),
            &SpotPolicy::default(),
        );
        return Ok(input);
    }
    serde_json::from_value(value).with_context(|| {
        format!(
            "{} is neither a planner input (pods, offerings, policy) nor a Kubernetes List",
            source.input
        )
    })
}

/// Every type prices a running node, burstable and small ones included.
fn any_type(_: &Snapshot) -> TypeFilter {
    TypeFilter {
        allow_burstable: true,
        min_memory_mib: 0,
        min_vcpus: 0,
        architectures: Vec::new(),
    }
}

struct CostView {
    allocation: Allocation,
    table: CostTable,
    total: CostLine,
}

fn cost(args: &CostArgs) -> anyhow::Result<String> {
    let (bytes, value) = read(&args.source)?;
    if value.get("items").is_none() {
        bail!(
            "{} is not a Kubernetes List (kubectl get nodes,pods,pdb,podmetrics -A -o json)",
            args.source.input
        );
    }
    let (snapshot, offerings) = priced_snapshot(&args.source, &bytes, any_type)?;
    let (nodes, pods) = inputs::from_snapshot(&snapshot, &offerings);
    let allocation = allocate(&nodes, &pods, args.hours, &Weights::default());
    // Without --label, the usual cost labels that some pod carries.
    let label_keys: Vec<String> = if args.labels.is_empty() {
        DEFAULT_LABEL_KEYS
            .iter()
            .chain(&["app"])
            .filter(|key| pods.iter().any(|p| p.labels.contains_key(**key)))
            .map(|key| (*key).to_owned())
            .collect()
    } else {
        args.labels.clone()
    };
    let table = breakdown::table(&allocation, &nodes, &pods, args.by, &label_keys);
    let view = CostView {
        total: allocation.total(),
        allocation,
        table,
    };
    Ok(match args.format {
        CostFormat::Table => cost_table(args, &view),
        CostFormat::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "hours": args.hours,
                "by": args.by,
                "total": view.total,
                "lines": view.table.ranked().into_iter()
                    .map(|(key, line)| serde_json::json!({"key": key, "cost": line}))
                    .collect::<Vec<_>>(),
                "other": (view.table.folded > 0).then_some(view.table.other),
                "idle": view.total.idle,
                "unpriced_nodes": view.allocation.unpriced_nodes,
                "unplaced_pods": view.allocation.unplaced_pods,
                "weights": Weights::default(),
            }))? + "\n"
        }
        CostFormat::Csv => {
            let mut rows = report::table_rows("snapshot", args.by.as_str(), &view.table);
            let idle = breakdown::idle_line(&view.total, &view.table);
            if !matches!(args.by, Dimension::Node | Dimension::Label) {
                rows.push(ExportRow {
                    period: "snapshot",
                    dimension: args.by.as_str(),
                    key: "__idle__",
                    line: &idle,
                });
            }
            report::csv(&rows)
        }
    })
}

fn cost_table(args: &CostArgs, view: &CostView) -> String {
    let mut out = format!(
        "{:<44} {:>10} {:>10} {:>10} {:>10} {:>11} {:>10}\n",
        args.by.as_str().to_uppercase(),
        "COST",
        "CPU",
        "MEMORY",
        "ON-DEMAND",
        "SPOT SAVES",
        "IDLE"
    );
    let row = |out: &mut String, key: &str, l: &CostLine| {
        out.push_str(&format!(
            "{key:<44} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>11.4} {:>10.4}\n",
            l.cost,
            l.cpu,
            l.memory,
            l.on_demand,
            l.spot_savings(),
            l.idle
        ));
    };
    for (key, line) in view.table.ranked() {
        row(&mut out, key, line);
    }
    if view.table.folded > 0 {
        row(
            &mut out,
            &format!("({} more)", view.table.folded),
            &view.table.other,
        );
    }
    if !matches!(args.by, Dimension::Node | Dimension::Label) {
        let idle = breakdown::idle_line(&view.total, &view.table);
        row(&mut out, "idle (requested by no pod)", &idle);
    }
    row(&mut out, "total", &view.total);
    out.push_str(&format!(
        "\n{} node(s) over {} hour(s): ${} (${} a month at this rate), {}% idle.\n",
        view.allocation.nodes.len(),
        args.hours,
        spotwise_cost::money::cents(view.total.cost),
        spotwise_cost::money::cents(
            view.total.cost / Decimal::from(args.hours) * Decimal::from(730)
        ),
        if view.total.cost.is_zero() {
            Decimal::ZERO
        } else {
            (view.total.idle * Decimal::from(100) / view.total.cost).round()
        },
    ));
    out.push_str(
        "Each node's price is split into cpu and memory by OpenCost's default relative prices, then over its pods by max(request, usage).\n",
    );
    if !view.allocation.unpriced_nodes.is_empty() {
        out.push_str(&format!(
            "No price for: {} (left out).\n",
            view.allocation.unpriced_nodes.join(", ")
        ));
    }
    if !view.allocation.unplaced_pods.is_empty() {
        out.push_str(&format!(
            "Not on a known node: {}.\n",
            view.allocation.unplaced_pods.join(", ")
        ));
    }
    out
}

fn table(plan: &Plan) -> String {
    let mut out = String::new();
    let mut groups: BTreeMap<(&str, &str, &str), (usize, usize, f64)> = BTreeMap::new();
    for n in &plan.nodes {
        let g = groups
            .entry((&n.capacity_type, &n.instance_type, &n.zone))
            .or_default();
        g.0 += 1;
        g.1 += n.pods.len();
        g.2 += n.price_hr;
    }
    out.push_str(&format!(
        "{:<10} {:<18} {:<14} {:>5} {:>6} {:>10}\n",
        "CAPACITY", "TYPE", "ZONE", "NODES", "PODS", "$/HOUR"
    ));
    for ((capacity, itype, zone), (nodes, pods, cost)) in groups {
        out.push_str(&format!(
            "{capacity:<10} {itype:<18} {zone:<14} {nodes:>5} {pods:>6} {cost:>10.4}\n"
        ));
    }
    out.push_str(&format!(
        "\ntotal ${:.4}/h, ${:.2}/month\n",
        plan.cost_hr, plan.summary.monthly_cost
    ));
    for line in &plan.summary.explanation {
        out.push_str(&format!("- {line}\n"));
    }
    for u in &plan.unschedulable {
        out.push_str(&format!("unschedulable {}: {}\n", u.pod, u.reason));
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Plan { source, format } => {
            let plan = plan(&load_plan_input(&source)?);
            match format {
                PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
                PlanFormat::Table => print!("{}", table(&plan)),
            }
        }
        Command::Cost(args) => print!("{}", cost(&args)?),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let Some(message) = reworded(&err) else {
                err.exit()
            };
            eprintln!("spotwise: {message}");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("spotwise: {err:#}");
            ExitCode::from(2)
        }
    }
}

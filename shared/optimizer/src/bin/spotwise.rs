//! `spotwise plan --input FILE [--format json|table] [--region REGION]`
//!
//! Offline what-if planning. FILE is either the planner's own format (`pods`, `offerings`,
//! `policy`) or a cluster snapshot from `kubectl get nodes,pods,pdb -A -o json`, priced with the
//! data compiled into this binary for the nodes' region (or `--region`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use spotwise_optimizer::catalog::{PriceData, TypeFilter};
use spotwise_optimizer::eligibility::SpotPolicy;
use spotwise_optimizer::{Plan, PlanInput, PlanPolicy, kube, plan};

const USAGE: &str = "usage: spotwise plan --input FILE [--format json|table] [--region REGION]";

#[derive(Debug, PartialEq)]
enum Format {
    Json,
    Table,
}

struct Args {
    input: String,
    format: Format,
    region: Option<String>,
}

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let Some((command, rest)) = args.split_first() else {
        bail!("{USAGE}")
    };
    if command != "plan" {
        bail!("unknown command `{command}`\n{USAGE}");
    }
    let mut input = None;
    let mut format = Format::Table;
    let mut region = None;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--input" | "-i" => input = Some(value()?.clone()),
            "--format" | "-f" => {
                format = match value()?.as_str() {
                    "json" => Format::Json,
                    "table" => Format::Table,
                    other => bail!("--format must be json or table, not `{other}`"),
                }
            }
            "--region" => region = Some(value()?.clone()),
            "--help" | "-h" => bail!("{USAGE}"),
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(Args {
        input: input.with_context(|| format!("--input is required\n{USAGE}"))?,
        format,
        region,
    })
}

fn load(args: &Args) -> anyhow::Result<PlanInput> {
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("cannot read {}", args.input))?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", args.input))?;
    if value.get("items").is_some() {
        let snapshot = kube::parse_list(&bytes)?;
        let region = args
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
        let filter = TypeFilter {
            architectures: snapshot.architectures(),
            ..TypeFilter::default()
        };
        let offerings = PriceData::shipped()?.offerings(&region, &zones, &filter);
        if offerings.is_empty() {
            bail!("the shipped price data has no prices for region {region}");
        }
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
            args.input
        )
    })
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

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = parse_args(&args)?;
    let input = load(&args)?;
    let plan = plan(&input);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        Format::Table => print!("{}", table(&plan)),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("spotwise: {err:#}");
            ExitCode::from(2)
        }
    }
}

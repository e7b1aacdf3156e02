//! `spotwise-synthetic-snapshot --nodes N --pods P [--type m5.2xlarge]`: prints a cluster
//! snapshot (the agent's JSON) of N nodes and P workload pods with realistic labels,
//! annotations, tolerations and PDBs, for scale runs (`infra/local/scale.py`).

use anyhow::Context;
use spotwise_flow::synthetic;

fn main() -> anyhow::Result<()> {
    let (mut nodes, mut pods, mut instance_type) =
        (1_000_usize, 20_000_usize, "m5.2xlarge".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--nodes" => nodes = value.parse().context("--nodes needs a number")?,
            "--pods" => pods = value.parse().context("--pods needs a number")?,
            "--type" => instance_type = value,
            other => anyhow::bail!(
                "unknown argument {other:?} (usage: spotwise-synthetic-snapshot --nodes N --pods P [--type T])"
            ),
        }
    }
    let catalogue = spotwise_flow::cluster::catalogue()?;
    let spec = catalogue
        .get(&instance_type)
        .with_context(|| format!("{instance_type} is not in the catalogue"))?;
    let (cpu_m, mem_mib) = spotwise_optimizer::catalog::allocatable(spec);
    let seeds = synthetic::nodes(nodes, &instance_type, cpu_m, mem_mib, spec.max_pods);
    let snapshot = synthetic::snapshot(&seeds, pods, 0);
    serde_json::to_writer(std::io::stdout().lock(), &snapshot)?;
    Ok(())
}

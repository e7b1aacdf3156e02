#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `spotwise` binary on the shipped sample inputs.

use std::path::Path;
use std::process::Command;

fn spotwise(args: &[&str]) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new(env!("CARGO_BIN_EXE_spotwise"))
        .current_dir(root)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn benchmark_format_plans_every_pod_once_within_capacity() {
    let out = spotwise(&[
        "plan",
        "--input",
        "events/optimizer/plan-input-small.json",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = plan["nodes"].as_array().unwrap();
    let mut names: Vec<&str> = nodes
        .iter()
        .flat_map(|n| n["pods"].as_array().unwrap())
        .map(|p| p.as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["ns/db-0", "ns/p1", "ns/p2"]);
    let cost: f64 = nodes.iter().map(|n| n["price_hr"].as_f64().unwrap()).sum();
    assert!((plan["cost_hr"].as_f64().unwrap() - cost).abs() < 1e-9);
    for n in nodes {
        if n["pods"].as_array().unwrap().iter().any(|p| p == "ns/db-0") {
            assert_eq!(n["capacity_type"], "on-demand");
        }
        assert!(["on-demand", "spot"].contains(&n["capacity_type"].as_str().unwrap()));
    }
    assert_eq!(plan["unschedulable"][0]["pod"], "ns/huge");
}

#[test]
fn kubectl_snapshot_is_planned_with_shipped_prices() {
    let out = spotwise(&["plan", "--input", "events/optimizer/kubectl-snapshot.json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("CAPACITY") && table.contains("total $"),
        "{table}"
    );
    let json = spotwise(&[
        "plan",
        "--input",
        "events/optimizer/kubectl-snapshot.json",
        "--format",
        "json",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(plan["summary"]["current_monthly_cost"].as_f64().unwrap() > 0.0);
    assert!(plan["consolidation"]["steps"].is_array());
}

#[test]
fn bad_arguments_and_inputs_fail_with_a_message() {
    let out = spotwise(&["plan"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--input is required"));
    let out = spotwise(&["plan", "--input", "Cargo.toml"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not JSON"));
    let out = spotwise(&[
        "plan",
        "--input",
        "events/optimizer/plan-input-small.json",
        "--format",
        "yaml",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format must be json or table"));
}

fn decimal(v: &serde_json::Value) -> rust_decimal::Decimal {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn cost_of_a_snapshot_adds_up_in_every_format() {
    let input = "events/optimizer/kubectl-snapshot.json";
    let out = spotwise(&["cost", "--input", input, "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cost: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = cost["lines"].as_array().unwrap();
    let namespaces: Vec<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(namespaces, vec!["shop", "kube-system", "data"]);
    let allocated: rust_decimal::Decimal = lines.iter().map(|l| decimal(&l["cost"]["cost"])).sum();
    let total = decimal(&cost["total"]["cost"]);
    assert_eq!(allocated + decimal(&cost["idle"]), total);
    // The sample's four nodes at the shipped us-east-1 prices (one spot m5.large).
    assert!(total > rust_decimal::Decimal::new(7, 1), "{total}");

    let csv = spotwise(&[
        "cost", "--input", input, "--by", "workload", "--format", "csv",
    ]);
    let text = String::from_utf8(csv.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert!(rows.iter().any(|r| r[2] == "shop/Deployment/web"), "{text}");
    assert!(
        rows.iter()
            .any(|r| r[2] == "kube-system/DaemonSet/aws-node")
    );
    let csv_total: rust_decimal::Decimal = rows
        .iter()
        .map(|r| r[3].parse::<rust_decimal::Decimal>().unwrap())
        .sum();
    assert_eq!(csv_total, total, "rows include idle");

    let table = spotwise(&["cost", "--input", input, "--by", "node", "--hours", "730"]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("ip-10-0-2-13.ec2.internal") && text.contains("over 730 hour(s)"),
        "{text}"
    );
}

#[test]
fn cost_rejects_what_it_cannot_allocate() {
    let out = spotwise(&["cost", "--input", "events/optimizer/plan-input-small.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a Kubernetes List"));
    let out = spotwise(&["cost", "--input", "x.json", "--by", "team"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown dimension `team`"));
    let out = spotwise(&["cost", "--input", "x.json", "--hours", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hours must be"));
    let out = spotwise(&["plan", "--input", "x.json", "--by", "pod"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument `--by`"));
}

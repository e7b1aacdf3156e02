//! The demo's report: one self-contained HTML page (inline SVG charts, no scripts, nothing
//! fetched) with the cost by namespace, and the cost and node mix before, planned and realised.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::Report;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Horizontal bars, one per (label, value), scaled to the largest; `show` writes a value.
fn bars(rows: &[(String, f64)], show: impl Fn(f64) -> String, color: &str) -> String {
    let max = rows
        .iter()
        .map(|r| r.1)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let height = 26 * rows.len() + 10;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="640" height="{height}" role="img">"#
    );
    for (i, (label, value)) in rows.iter().enumerate() {
        let y = 26 * i + 5;
        let width = (value / max * 380.0).max(1.0);
        let _ = write!(
            svg,
            r#"<text x="0" y="{}" font-size="13">{}</text><rect x="170" y="{y}" width="{width:.1}" height="18" fill="{color}"/><text x="{:.1}" y="{}" font-size="12">{}</text>"#,
            y + 14,
            escape(label),
            175.0 + width,
            y + 14,
            escape(&show(*value)),
        );
    }
    svg.push_str("</svg>");
    svg
}

fn nodes(count: f64) -> String {
    format!("{count:.0} nodes")
}

fn mix_rows(mix: &BTreeMap<(String, String), u32>) -> Vec<(String, f64)> {
    mix.iter()
        .map(|((itype, capacity), n)| (format!("{itype} {capacity}"), f64::from(*n)))
        .collect()
}

pub fn render(report: &Report) -> String {
    let summary = &report.recommendation["summary"];
    let rollout = &report.rollout;
    let after: BTreeMap<(String, String), u32> = report.recommendation["node_mix"]
        .as_array()
        .into_iter()
        .flatten()
        .fold(BTreeMap::new(), |mut mix, m| {
            let key = (
                m["instance_type"].as_str().unwrap_or("?").to_owned(),
                m["capacity_type"].as_str().unwrap_or("?").to_owned(),
            );
            *mix.entry(key).or_default() +=
                u32::try_from(m["nodes"].as_u64().unwrap_or(0)).unwrap_or(0);
            mix
        });
    let namespaces: Vec<(String, f64)> = report.namespace_costs.clone();
    let mut steps = String::new();
    for (name, took) in &report.steps {
        let _ = write!(
            steps,
            "<tr><td>{}</td><td>{:.0} ms</td></tr>",
            escape(name),
            took.as_secs_f64() * 1000.0
        );
    }
    let mut executed = String::new();
    for line in &report.executed {
        let _ = write!(executed, "<li>{}</li>", escape(line));
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Spotwise local run: {cluster}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}}
h1{{font-size:1.5em}} .figures td{{padding:.2em 1em .2em 0}} .big{{font-size:1.3em;font-weight:600}}
table{{border-collapse:collapse}} td{{padding:.15em .8em .15em 0}}</style></head><body>
<h1>Spotwise local run: {cluster}</h1>
<table class="figures">
<tr><td></td><td>Before</td><td>Planned</td><td>Realised</td></tr>
<tr><td>Monthly cost</td><td class="big">${before:.2}</td><td class="big">${planned:.2}</td><td class="big">${realised:.2}</td></tr>
<tr><td>Nodes (spot)</td><td>{nodes_before} ({spot_before})</td><td>{nodes_planned} ({spot_planned})</td><td>{nodes_realised} ({spot_realised})</td></tr>
<tr><td>Saved per month, realised</td><td class="big" colspan="3">${saved:.2}</td></tr>
<tr><td>Spot share of planned cost</td><td colspan="3">{spot_share:.0}%</td></tr>
<tr><td>Rollout</td><td colspan="3">{rollout_status} in {rollout_secs:.1} s, {aws_calls} AWS calls: {rollout_reason}</td></tr>
<tr><td>Evictions / pods Pending / budget violations</td><td colspan="3">{evictions} / {pending} / {violations}</td></tr>
<tr><td>Spot interruption handled in</td><td colspan="3">{handled:.1} ms (instance {instance}, node {node})</td></tr>
<tr><td>Webhooks delivered / signature verified</td><td colspan="3">{received} / {verified}</td></tr>
</table>
<h2>Cost by namespace (last sampled hour, USD)</h2>{namespace_chart}
<h2>Node mix before</h2>{before_chart}
<h2>Node mix planned</h2>{after_chart}
<h2>Node mix realised</h2>{realised_chart}
<h2>What the agent did after the rollout</h2><ol>{executed}</ol>
<h2>Steps</h2><table>{steps}</table>
</body></html>
"#,
        cluster = escape(&report.cluster_id),
        before = report.monthly_figure("before"),
        planned = report.monthly_figure("planned"),
        realised = report.monthly_figure("realised"),
        saved = report.monthly_figure("before") - report.monthly_figure("realised"),
        nodes_before = rollout["before"]["nodes"],
        spot_before = rollout["before"]["spot_nodes"],
        nodes_planned = rollout["planned"]["nodes"],
        spot_planned = rollout["planned"]["spot_nodes"],
        nodes_realised = rollout["realised"]["nodes"],
        spot_realised = rollout["realised"]["spot_nodes"],
        spot_share = summary["spot_cost_share"].as_f64().unwrap_or(0.0) * 100.0,
        rollout_status = escape(rollout["status"].as_str().unwrap_or("?")),
        rollout_secs = report.rollout_time.as_secs_f64(),
        aws_calls = rollout["aws_calls"],
        rollout_reason = escape(rollout["reason"].as_str().unwrap_or("")),
        evictions = report.evictions,
        pending = report.pods_pending,
        violations = report.pdb_violations.len(),
        handled = report.interruption_handled.as_secs_f64() * 1000.0,
        instance = escape(&report.interrupted_instance),
        node = escape(&report.interrupted_node),
        received = report.webhooks_received,
        verified = report.webhooks_verified,
        namespace_chart = bars(&namespaces, |v| format!("${v:.4}"), "#3b7dd8"),
        before_chart = bars(&mix_rows(&report.mix_before), nodes, "#999"),
        after_chart = bars(&mix_rows(&after), nodes, "#2e9e5b"),
        realised_chart = bars(&mix_rows(&report.mix_after), nodes, "#1f6f43"),
    )
}

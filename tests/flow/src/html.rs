//! The demo's report: one self-contained HTML page (inline SVG charts, no scripts, nothing
//! fetched) with the cost by namespace and the node mix before and after the plan.

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
<tr><td>Monthly cost now</td><td class="big">${current:.2}</td></tr>
<tr><td>Monthly cost planned</td><td class="big">${planned:.2}</td></tr>
<tr><td>Saved per month</td><td class="big">${saved:.2}</td></tr>
<tr><td>Spot share of planned cost</td><td>{spot_share:.0}%</td></tr>
<tr><td>Actions executed by the agent</td><td>{executed_ok} of {executed_all}</td></tr>
<tr><td>Spot interruption handled in</td><td>{handled:.1} ms (instance {instance}, node {node})</td></tr>
<tr><td>Webhooks delivered / signature verified</td><td>{received} / {verified}</td></tr>
</table>
<h2>Cost by namespace (last sampled hour, USD)</h2>{namespace_chart}
<h2>Node mix before</h2>{before_chart}
<h2>Node mix planned</h2>{after_chart}
<h2>What the agent did</h2><ol>{executed}</ol>
<h2>Steps</h2><table>{steps}</table>
</body></html>
"#,
        cluster = escape(&report.cluster_id),
        current = summary["current_monthly_cost"].as_f64().unwrap_or(0.0),
        planned = summary["monthly_cost"].as_f64().unwrap_or(0.0),
        saved = summary["monthly_savings"].as_f64().unwrap_or(0.0),
        spot_share = summary["spot_cost_share"].as_f64().unwrap_or(0.0) * 100.0,
        executed_ok = report.executed_ok(),
        executed_all = report.executed.len(),
        handled = report.interruption_handled.as_secs_f64() * 1000.0,
        instance = escape(&report.interrupted_instance),
        node = escape(&report.interrupted_node),
        received = report.webhooks_received,
        verified = report.webhooks_verified,
        namespace_chart = bars(&namespaces, |v| format!("${v:.4}"), "#3b7dd8"),
        before_chart = bars(&mix_rows(&report.mix_before), nodes, "#999"),
        after_chart = bars(&mix_rows(&after), nodes, "#2e9e5b"),
    )
}

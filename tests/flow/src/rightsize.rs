//! Right-sizing on the simulated cluster: a weekday of the agent's usage samples (every 30
//! minutes, uploaded and planned every six hours), then two recommendations applied through
//! the API; the scheduler sends the patches, the agent sets the requests, the workloads roll;
//! one is OOM-killed and reverted with more headroom, the other is kept after its watch.

use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use spotwise_core::messages::OptimizeRequest;
use time::{Duration, OffsetDateTime};

use crate::{Report, Rig};

/// The agent samples usage this often (its snapshot interval is five minutes; every 30 is
/// enough here and keeps the step fast).
const SAMPLE_EVERY: Duration = Duration::minutes(30);
/// The optimizer runs this often here (hourly in production): a snapshot carries the last
/// six complete hours, so none is lost.
const PLAN_EVERY: i64 = 12;

pub const KEPT: &str = "shop/Deployment/web";
pub const REVERTED: &str = "data/Deployment/cache";
pub const AUTOSCALED: &str = "batch/Deployment/reports";

impl Rig {
    async fn plan(&self, at: OffsetDateTime) -> anyhow::Result<f64> {
        let outcome = Box::pin(optimizer::optimize(
            &self.optimizer,
            &OptimizeRequest {
                tenant_id: self.tenant.clone(),
                cluster_id: self.cluster.clone(),
                trigger: "flow".into(),
                scheduled: None,
            },
            at,
        ))
        .await?;
        match outcome {
            optimizer::Outcome::Planned { monthly_cost, .. } => Ok(monthly_cost),
            optimizer::Outcome::Skipped(why) => bail!("the cluster was not planned: {why}"),
        }
    }

    /// One scheduler tick of the right-sizing changes at `at`, and the agent's work after it.
    async fn resize_round(&self, at: OffsetDateTime) -> anyhow::Result<()> {
        scheduler::resize::tick(&self.scheduler, at).await?;
        self.execute().await?;
        Ok(())
    }

    pub async fn right_size(&self, report: &mut Report) -> anyhow::Result<()> {
        let started = Instant::now();
        {
            let mut cluster = self.fake.state();
            // What a metrics server reports: web and the cache use a fraction of what they
            // request; an HPA scales reports on cpu.
            cluster.set_usage(KEPT, "main", 60, 300);
            cluster.set_usage("shop/Deployment/api", "main", 700, 1_800);
            cluster.set_usage(REVERTED, "main", 300, 1_400);
            cluster.set_usage(AUTOSCALED, "main", 100, 200);
            cluster.set_usage("payments/StatefulSet/ledger", "main", 500, 3_500);
            cluster.hpas.push(json!({"metadata": {"name": "reports", "namespace": "batch"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "reports"},
                         "minReplicas": 2, "maxReplicas": 8,
                         "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                             "target": {"type": "Utilization", "averageUtilization": 70}}}]}}));
        }
        // A full weekday of samples (the last one before today), planned every six hours as
        // the history accrues, then a snapshot of now.
        let now = OffsetDateTime::now_utc();
        let mut day = now.date().previous_day().context("date out of range")?;
        while matches!(
            day.weekday(),
            time::Weekday::Saturday | time::Weekday::Sunday
        ) {
            day = day.previous_day().context("date out of range")?;
        }
        let start = day.midnight().assume_utc();
        let samples = Duration::days(1).whole_minutes() / SAMPLE_EVERY.whole_minutes();
        for sample in 0..=samples {
            let at = start + SAMPLE_EVERY * i32::try_from(sample)?;
            if sample % PLAN_EVERY == PLAN_EVERY - 1 {
                self.upload_snapshot(at).await?;
                self.plan(at).await?;
            } else {
                self.sample(at).await?;
            }
        }
        self.upload_snapshot(now).await?;
        report.plan_before_rightsizing = self.plan(now).await?;
        let path = format!("/v1/clusters/{}/rightsizing", self.cluster);
        report.rightsizing_ready = self.api.get(&path).await?;

        for workload in [KEPT, REVERTED] {
            self.api
                .post(&format!("{path}/apply"), json!({ "workload": workload }))
                .await?;
        }
        let t0 = now + Duration::minutes(1);
        // The patches go out and the agent sets the requests; the workloads roll.
        self.resize_round(t0).await?;
        self.resize_round(t0).await?;
        // The cache does not fit its new memory request.
        {
            let mut cluster = self.fake.state();
            let pod = cluster
                .pods_of(REVERTED)
                .into_iter()
                .next()
                .context("the cache has no pods")?;
            cluster.oom_kill(&pod, "main");
        }
        for minutes in [5, 10] {
            let at = t0 + Duration::minutes(minutes);
            self.upload_snapshot(at).await?;
            self.resize_round(at).await?;
        }
        // The web change's watch runs out quietly.
        let at = t0 + Duration::minutes(61);
        self.upload_snapshot(at).await?;
        self.resize_round(at).await?;
        report.plan_after_rightsizing = self.plan(at).await?;
        {
            let cluster = self.fake.state();
            for workload in [KEPT, REVERTED] {
                let template = cluster.workloads[workload]["spec"]["template"]["spec"]["containers"][0]["resources"].clone();
                let pods: Vec<Value> = cluster
                    .pods_of(workload)
                    .iter()
                    .map(|p| cluster.pods[p]["spec"]["containers"][0]["resources"].clone())
                    .collect();
                report.rightsized.insert(
                    workload.to_owned(),
                    json!({"template": template, "pods": pods}),
                );
            }
        }
        let audit = self.api.get("/v1/audit?limit=100").await?;
        report.rightsizing_audit = audit["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["action"].as_str())
            .filter(|a| a.starts_with("rightsizing."))
            .map(str::to_owned)
            .collect();
        let after = self.api.get(&path).await?;
        report.rightsizing_saving = after["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "kept")
            .filter_map(|c| c["monthly_saving"].as_f64())
            .sum();
        report.rightsizing = after;
        report.step("right-sizing: history, apply, watch, revert", started);
        Ok(())
    }
}

impl Report {
    /// A right-sizing change of `workload` as the API showed it last.
    pub fn rightsizing_change(&self, workload: &str) -> Value {
        self.rightsizing["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| {
                let w = &c["workload"];
                format!(
                    "{}/{}/{}",
                    w["namespace"].as_str().unwrap_or_default(),
                    w["kind"].as_str().unwrap_or_default(),
                    w["name"].as_str().unwrap_or_default()
                ) == workload
            })
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// A workload's recommendation in `view` (`rightsizing_ready` or `rightsizing`).
    pub fn rightsizing_workload(view: &Value, workload: &str) -> Value {
        view["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["key"] == workload)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

//! Usage per workload container, hour by hour: each snapshot's metrics.k8s.io sample goes into
//! the current UTC hour's sketch, and each snapshot carries the last complete hours, which the
//! platform folds into the cluster's 14-day history (each hour once). So every snapshot's
//! usage counts, at the price of one history write per cluster and hour.

use std::collections::VecDeque;

use spotwise_core::rightsizing::{
    ControllerRef, MAX_USAGE_CONTAINERS, MAX_USAGE_HOURS, UsageHour, container_key,
};
use spotwise_core::snapshot::Snapshot;

#[derive(Debug, Default)]
pub struct UsageRecorder {
    current: Option<UsageHour>,
    complete: VecDeque<UsageHour>,
}

impl UsageRecorder {
    /// Adds the snapshot's usage to the hour of `now` (Unix seconds) and puts the complete
    /// hours on the snapshot.
    pub fn record(&mut self, snapshot: &mut Snapshot, now: i64) {
        let hour = now - now.rem_euclid(3600);
        if self.current.as_ref().is_some_and(|c| c.hour != hour)
            && let Some(done) = self.current.take()
            && !done.containers.is_empty()
        {
            self.complete.push_back(done);
            while self.complete.len() > MAX_USAGE_HOURS {
                self.complete.pop_front();
            }
        }
        let current = self.current.get_or_insert_with(|| UsageHour {
            hour,
            ..UsageHour::default()
        });
        for pod in snapshot.pods.iter().chain(&snapshot.daemon_pods) {
            let Some(workload) = ControllerRef::of(&pod.workload) else {
                continue;
            };
            for container in &pod.containers {
                let Some(usage) = container.usage else {
                    continue;
                };
                let key = container_key(&workload, &container.resources.name);
                if !current.containers.contains_key(&key)
                    && current.containers.len() >= MAX_USAGE_CONTAINERS
                {
                    continue;
                }
                current
                    .containers
                    .entry(key)
                    .or_default()
                    .add(usage.cpu_m, usage.mem_mib);
            }
        }
        snapshot.usage_hours = self.complete.iter().cloned().collect();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use spotwise_core::snapshot::parse_list;

    use super::*;

    fn snapshot(cpu: &str) -> Snapshot {
        let list = serde_json::json!({"items": [
            {"kind": "Node", "metadata": {"name": "n1"},
             "status": {"allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"}}},
            {"kind": "Pod", "metadata": {"name": "web-7f9c-a", "namespace": "shop",
                "labels": {"pod-template-hash": "7f9c"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7f9c", "controller": true}]},
             "spec": {"nodeName": "n1", "containers": [{"name": "app",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}},
            {"kind": "PodMetrics", "metadata": {"name": "web-7f9c-a", "namespace": "shop"},
             "containers": [{"name": "app", "usage": {"cpu": cpu, "memory": "300Mi"}}]},
        ]});
        parse_list(&serde_json::to_vec(&list).unwrap()).unwrap()
    }

    #[test]
    fn snapshots_carry_the_hours_that_are_complete() {
        let mut recorder = UsageRecorder::default();
        let hour = 1_764_460_800;
        for (minute, cpu) in [(0, "100m"), (5, "300m"), (55, "200m")] {
            let mut s = snapshot(cpu);
            recorder.record(&mut s, hour + minute * 60);
            assert!(s.usage_hours.is_empty(), "the hour is not over");
        }
        let mut next = snapshot("50m");
        recorder.record(&mut next, hour + 3600 + 60);
        assert_eq!(next.usage_hours.len(), 1);
        let sketch = &next.usage_hours[0].containers["shop/Deployment/web/app"];
        assert_eq!(next.usage_hours[0].hour, hour);
        assert_eq!((sketch.samples, sketch.mem_peak_mib), (3, 300));
        assert!(sketch.cpu_percentile(100.0).unwrap() >= 300);
        // Hours go on; only the last few travel.
        for h in 2..8 {
            let mut s = snapshot("50m");
            recorder.record(&mut s, hour + h * 3600);
            assert!(s.usage_hours.len() <= MAX_USAGE_HOURS);
            assert_eq!(s.usage_hours.last().unwrap().hour, hour + (h - 1) * 3600);
        }
    }
}

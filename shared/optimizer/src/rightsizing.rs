//! Container request recommendations from observed usage: CPU follows a high percentile (CPU
//! is compressible, a short burst above it only throttles), memory follows the peak plus
//! headroom (memory is not: going over the limit kills the container).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::{ContainerUsage, PodSpec, RightSizingPolicy};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecommendation {
    pub pod: String,
    pub container: String,
    pub cpu_request_m: u64,
    pub recommended_cpu_m: u64,
    pub mem_request_mib: u64,
    pub recommended_mem_mib: u64,
    pub samples: usize,
    pub reason: String,
}

/// Nearest-rank percentile of `samples` (unsorted); `None` when empty.
pub fn percentile(samples: &[u64], pct: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((pct.clamp(0.0, 100.0) / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

pub fn recommend(
    usage: &[ContainerUsage],
    policy: &RightSizingPolicy,
) -> Vec<ContainerRecommendation> {
    usage
        .iter()
        .filter_map(|u| {
            let samples = u.cpu_samples_m.len().min(u.mem_samples_mib.len());
            if samples < policy.min_samples {
                return None;
            }
            let cpu = percentile(&u.cpu_samples_m, policy.cpu_percentile)?.max(policy.min_cpu_m);
            let peak = u.mem_samples_mib.iter().copied().max()?;
            let mem = (peak * (100 + u64::from(policy.mem_headroom_pct))).div_ceil(100).max(policy.min_mem_mib);
            let changed = |from: u64, to: u64| from.abs_diff(to) * 100 > from.max(1) * u64::from(policy.min_change_pct);
            if !changed(u.cpu_request_m, cpu) && !changed(u.mem_request_mib, mem) {
                return None;
            }
            Some(ContainerRecommendation {
                pod: u.pod.clone(),
                container: u.container.clone(),
                cpu_request_m: u.cpu_request_m,
                recommended_cpu_m: cpu,
                mem_request_mib: u.mem_request_mib,
                recommended_mem_mib: mem,
                samples,
                reason: format!(
                    "p{} cpu over {samples} samples is {cpu}m (requested {}m); peak memory {peak} MiB + {}% headroom is {mem} MiB (requested {} MiB)",
                    policy.cpu_percentile, u.cpu_request_m, policy.mem_headroom_pct, u.mem_request_mib
                ),
            })
        })
        .collect()
}

/// Pods with their requests changed by the recommendations (container deltas summed per pod).
pub fn apply(pods: &[PodSpec], recommendations: &[ContainerRecommendation]) -> Vec<PodSpec> {
    let mut delta: HashMap<&str, (i64, i64)> = HashMap::new();
    for r in recommendations {
        let entry = delta.entry(r.pod.as_str()).or_default();
        entry.0 += r.recommended_cpu_m as i64 - r.cpu_request_m as i64;
        entry.1 += r.recommended_mem_mib as i64 - r.mem_request_mib as i64;
    }
    pods.iter()
        .map(|p| {
            let mut p = p.clone();
            if let Some(&(cpu, mem)) = delta.get(p.name.as_str()) {
                p.cpu_m = p.cpu_m.saturating_add_signed(cpu);
                p.mem_mib = p.mem_mib.saturating_add_signed(mem);
            }
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu: Vec<u64>, mem: Vec<u64>) -> ContainerUsage {
        ContainerUsage {
            pod: "web/api-1".into(),
            container: "api".into(),
            cpu_request_m: 1000,
            mem_request_mib: 2048,
            cpu_samples_m: cpu,
            mem_samples_mib: mem,
        }
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, 95.0), Some(95));
        assert_eq!(percentile(&s, 100.0), Some(100));
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn overprovisioned_container_is_cut_to_p95_and_peak_plus_headroom() {
        let cpu: Vec<u64> = (1..=20).map(|i| i * 10).collect(); // p95 = 190
        let mem = vec![400; 20];
        let recs = recommend(&[usage(cpu, mem)], &RightSizingPolicy::default());
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].recommended_cpu_m, 190);
        assert_eq!(recs[0].recommended_mem_mib, 460);
    }

    #[test]
    fn minimums_small_changes_and_thin_data_are_respected() {
        let policy = RightSizingPolicy::default();
        let idle = recommend(&[usage(vec![0; 20], vec![1; 20])], &policy);
        assert_eq!(idle[0].recommended_cpu_m, policy.min_cpu_m);
        assert_eq!(idle[0].recommended_mem_mib, policy.min_mem_mib);
        // Within 10% of the request on both: no recommendation.
        assert!(recommend(&[usage(vec![950; 20], vec![1800; 20])], &policy).is_empty());
        assert!(recommend(&[usage(vec![1; 5], vec![1; 5])], &policy).is_empty());
    }

    #[test]
    fn applying_sums_container_changes_per_pod() {
        let pod: PodSpec = serde_json::from_value(serde_json::json!(
            {"name":"web/api-1","cpu_m":1500,"mem_mib":3072,"spot_ok":true}))
        .unwrap();
        let recs = recommend(
            &[usage(vec![100; 20], vec![400; 20])],
            &RightSizingPolicy::default(),
        );
        let applied = apply(&[pod], &recs);
        assert_eq!(applied[0].cpu_m, 600);
        assert_eq!(applied[0].mem_mib, 3072 - 2048 + 460);
    }
}

//! Seeded synthetic clusters for benchmarks, tests and the demo: workloads of a few to a few
//! dozen replicas whose requests are log-normal (most pods small, a long tail of large ones),
//! with a fifth of the workloads kept off spot, over the real instance catalogue and prices.

use crate::model::{Offering, PodSpec};

/// SplitMix64: tiny, seedable and good enough for workload shapes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Standard normal by Box-Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
}

/// `n` pods in workloads named `ns-<i>/w<j>-<k>`.
pub fn pods(seed: u64, n: usize) -> Vec<PodSpec> {
    let mut rng = Rng::new(seed);
    let mut pods = Vec::with_capacity(n);
    let mut workload = 0;
    while pods.len() < n {
        let replicas = (rng.log_normal(4.0, 1.0).round() as usize)
            .clamp(1, 60)
            .min(n - pods.len());
        let cpu_m = (rng.log_normal(200.0, 0.8).round() as u64).clamp(10, 8_000);
        // MiB per millicore: around 2 (the m family's 4 GiB per vCPU is 4), skewed both ways.
        let mem_mib = ((cpu_m as f64 * rng.log_normal(2.0, 0.5)).round() as u64).clamp(32, 32_768);
        let spot_ok = rng.unit() >= 0.2;
        let namespace = workload % 12;
        for k in 0..replicas {
            pods.push(PodSpec {
                name: format!("ns-{namespace}/w{workload}-{k}"),
                cpu_m,
                mem_mib,
                spot_ok,
                ..PodSpec::default()
            });
        }
        workload += 1;
    }
    pods
}

/// Spot prices differ a little between zones in practice; the shipped feed has one price per
/// region, so each zone's spot price is varied by up to +/-8%, seeded.
pub fn vary_zone_prices(seed: u64, offerings: &mut [Offering]) {
    let mut rng = Rng::new(seed.wrapping_add(7));
    for o in offerings.iter_mut().filter(|o| o.is_spot()) {
        o.price_hr *= 0.92 + 0.16 * rng.unit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_seeded_and_sized() {
        let a = pods(7, 500);
        assert_eq!(a.len(), 500);
        assert_eq!(a, pods(7, 500));
        assert_ne!(a, pods(8, 500));
        let spot = a.iter().filter(|p| p.spot_ok).count();
        assert!((250..=480).contains(&spot), "{spot}");
        let mut cpu: Vec<u64> = a.iter().map(|p| p.cpu_m).collect();
        cpu.sort_unstable();
        assert!(
            cpu[250] < cpu[490] / 3,
            "log-normal: the tail is much larger than the median"
        );
    }
}

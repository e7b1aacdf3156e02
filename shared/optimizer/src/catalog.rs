//! Offerings from the price data the project ships (`data/`), for planning without AWS.
//!
//! Spot prices are the on-demand price less the Spot Advisor's savings figure for the type
//! (both 2025-26); the older spot.js snapshot fills types the advisor does not list.
//! Allocatable capacity follows the EKS-optimised AMI's reservations (kube-reserved CPU by
//! core tiers; 255 MiB + 11 MiB per pod of memory; 100 MiB eviction threshold) after a 7.5%
//! allowance for memory the hypervisor and kernel keep.

use std::collections::BTreeMap;

use spotwise_core::domain::{Arch, CapacityType, InstanceType, Pool};
use spotwise_core::pricing::advisor::{Advisor, AdvisorError};
use spotwise_core::pricing::{FeedError, catalogue, ondemand, spot};

use crate::model::Offering;

pub const CATALOGUE: &[u8] = include_bytes!("../../../data/ec2-instance-types.json");
pub const ON_DEMAND: &[u8] = include_bytes!("../../../data/on-demand-prices.json");
pub const SPOT_JS: &[u8] = include_bytes!("../../../data/spot-prices-spotjs.json");
pub const ADVISOR: &[u8] = include_bytes!("../../../data/spot-advisor-data.json");

#[derive(Debug, thiserror::Error)]
pub enum PriceDataError {
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error(transparent)]
    Advisor(#[from] AdvisorError),
}

pub struct PriceData {
    pub catalogue: Vec<InstanceType>,
    pub on_demand: BTreeMap<(String, String), f64>,
    pub spot: BTreeMap<(String, String), f64>,
    pub advisor: Advisor,
}

impl PriceData {
    /// The data compiled into the binary.
    pub fn shipped() -> Result<Self, PriceDataError> {
        Ok(Self {
            catalogue: catalogue::parse_catalogue_file(CATALOGUE, "ec2-instance-types.json")?,
            on_demand: ondemand::parse_price_table(ON_DEMAND, "on-demand-prices.json")?,
            spot: spot::parse_spotjs(SPOT_JS, "spot-prices-spotjs.json")?,
            advisor: Advisor::parse(ADVISOR, "spot-advisor-data.json")?,
        })
    }

    /// Every type `filter` admits with an on-demand price in `region`, on-demand and spot, in
    /// each zone.
    pub fn offerings(&self, region: &str, zones: &[String], filter: &TypeFilter) -> Vec<Offering> {
        let advice = self.advisor.linux_in(region);
        let mut offerings = Vec::new();
        for t in self.catalogue.iter().filter(|t| filter.admits(t)) {
            let key = (region.to_owned(), t.name.clone());
            let Some(&on_demand) = self.on_demand.get(&key) else {
                continue;
            };
            let advised = advice.get(t.name.as_str());
            // The advisor's savings figure and the on-demand table are of the same vintage;
            // the spot.js snapshot is older, so it only fills types the advisor lacks.
            let spot_price = advised
                .map(|a| on_demand * (1.0 - f64::from(a.savings_pct.clamp(0, 95)) / 100.0))
                .or_else(|| self.spot.get(&key).copied());
            let (cpu_m, mem_mib) = allocatable(t);
            for zone in zones {
                let base = Offering {
                    instance_type: t.name.clone(),
                    zone: zone.clone(),
                    capacity_type: CapacityType::OnDemand,
                    cpu_m,
                    mem_mib,
                    max_pods: t.max_pods,
                    gpus: t.gpus,
                    price_hr: on_demand,
                    interruption_band: None,
                    arch: Some(t.arch),
                    on_demand_price_hr: Some(on_demand),
                    observed_interruptions: 0,
                    price_volatility: 0.0,
                    labels: BTreeMap::new(),
                    taints: Vec::new(),
                };
                if let Some(price) = spot_price {
                    offerings.push(Offering {
                        capacity_type: CapacityType::Spot,
                        price_hr: price,
                        interruption_band: advised.map(|a| a.interruption_band),
                        ..base.clone()
                    });
                }
                offerings.push(base);
            }
        }
        offerings
    }
}

/// Which instance types a cluster's nodes may be, like a Karpenter NodePool's requirements.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TypeFilter {
    /// Burstable types (t2, t3, t3a, t4g) only sustain a fraction of their vCPUs (5% to 40%
    /// baseline), so planning full cores on them overstates capacity.
    pub allow_burstable: bool,
    /// Below this, kubelet, kube-proxy and the CNI take most of the node.
    pub min_memory_mib: u64,
    pub min_vcpus: u32,
    /// Empty allows any. A snapshot's plan keeps to the architectures its nodes run, since
    /// images are not always built for both.
    pub architectures: Vec<Arch>,
}

impl Default for TypeFilter {
    fn default() -> Self {
        Self {
            allow_burstable: false,
            min_memory_mib: 2048,
            min_vcpus: 1,
            architectures: Vec::new(),
        }
    }
}

impl TypeFilter {
    /// Every type: for pricing the nodes a cluster runs, whatever a plan would launch.
    pub fn any() -> Self {
        Self {
            allow_burstable: true,
            min_memory_mib: 0,
            min_vcpus: 0,
            architectures: Vec::new(),
        }
    }

    pub fn admits(&self, t: &InstanceType) -> bool {
        let family = t.name.split('.').next().unwrap_or_default();
        let burstable = matches!(family, "t1" | "t2" | "t3" | "t3a" | "t4g");
        (self.allow_burstable || !burstable)
            && t.memory_mib >= self.min_memory_mib
            && t.vcpus >= self.min_vcpus
            && (self.architectures.is_empty() || self.architectures.contains(&t.arch))
    }
}

/// Offerings from stored pools (as the scraper writes them), on-demand and spot, in the zones
/// `zone_names` maps (zone id to the name the cluster's nodes and selectors use): a cluster
/// can only launch nodes in zones it has subnets in. An empty map admits every zone, by id.
pub fn offerings_from_pools(
    pools: &[Pool],
    zone_names: &BTreeMap<String, String>,
    filter: &TypeFilter,
) -> Vec<Offering> {
    let mut offerings = Vec::new();
    for pool in pools {
        let t = InstanceType {
            name: pool.key.instance_type.clone(),
            vcpus: pool.vcpus,
            memory_mib: pool.memory_mib,
            arch: pool.arch,
            gpus: pool.gpus,
            max_pods: pool.max_pods,
        };
        if !filter.admits(&t) {
            continue;
        }
        let (cpu_m, mem_mib) = allocatable(&t);
        let zone = match zone_names.get(&pool.key.zone) {
            Some(name) => name.clone(),
            None if zone_names.is_empty() => pool.key.zone.clone(),
            None => continue,
        };
        let spot = Offering {
            instance_type: t.name.clone(),
            zone,
            capacity_type: CapacityType::Spot,
            cpu_m,
            mem_mib,
            max_pods: t.max_pods,
            gpus: t.gpus,
            price_hr: pool.spot_price_hr,
            interruption_band: pool.interruption_band,
            arch: Some(t.arch),
            on_demand_price_hr: pool.on_demand_price_hr,
            observed_interruptions: 0,
            price_volatility: pool.spot_price_volatility,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        };
        if let Some(price) = pool.on_demand_price_hr {
            offerings.push(Offering {
                capacity_type: CapacityType::OnDemand,
                price_hr: price,
                interruption_band: None,
                price_volatility: 0.0,
                ..spot.clone()
            });
        }
        if pool.spot_price_hr > 0.0 {
            offerings.push(spot);
        }
    }
    offerings
}

/// Allocatable (cpu millicores, memory MiB) of a node of this type.
pub fn allocatable(t: &InstanceType) -> (u64, u64) {
    let cores = u64::from(t.vcpus);
    let mut reserved_m = 0.0_f64;
    for core in 0..cores {
        reserved_m += match core {
            0 => 60.0,
            1 => 10.0,
            2 | 3 => 5.0,
            _ => 2.5,
        };
    }
    let cpu_m = (cores * 1000).saturating_sub(reserved_m.ceil() as u64);
    let after_vm = (t.memory_mib as f64 * 0.925).floor() as u64;
    let mem_mib = after_vm.saturating_sub(255 + 11 * u64::from(t.max_pods) + 100);
    (cpu_m, mem_mib)
}

/// The (cpu millicores, memory MiB) a node of `offering` counts against a Karpenter NodePool's
/// limits: its capacity, all vCPUs and the memory less the VM's overhead, which is
/// [`allocatable`] with the kubelet's reservations given back.
pub fn capacity(offering: &Offering) -> (u64, u64) {
    (
        offering.cpu_m.div_ceil(1000) * 1000,
        offering.mem_mib + 255 + 11 * u64::from(offering.max_pods) + 100,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocatable_follows_eks_reservations() {
        let m5_large = InstanceType {
            name: "m5.large".into(),
            vcpus: 2,
            memory_mib: 8192,
            arch: Arch::X86_64,
            gpus: 0,
            max_pods: 29,
        };
        assert_eq!(allocatable(&m5_large), (1930, 7577 - 574 - 100));
    }

    #[test]
    fn pools_become_offerings_in_the_clusters_zones_only() {
        let pool = |zone: &str, itype: &str, vcpus: u32, arch: Arch| Pool {
            key: spotwise_core::domain::PoolKey {
                region: "us-east-1".into(),
                zone: zone.into(),
                instance_type: itype.into(),
            },
            spot_price_hr: 0.03,
            spot_price_avg_30d: 0.03,
            spot_price_volatility: 0.1,
            on_demand_price_hr: Some(0.096),
            interruption_band: Some(1),
            advisor_savings_pct: Some(60),
            vcpus,
            memory_mib: u64::from(vcpus) * 4096,
            gpus: 0,
            max_pods: 29,
            arch,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let pools = [
            pool("use1-az1", "m5.large", 2, Arch::X86_64),
            pool("use1-az6", "m5.large", 2, Arch::X86_64),
            pool("use1-az1", "m6g.large", 2, Arch::Arm64),
            pool("use1-az1", "t3.large", 2, Arch::X86_64),
        ];
        let names = BTreeMap::from([("use1-az1".to_owned(), "us-east-1a".to_owned())]);
        let filter = TypeFilter {
            architectures: vec![Arch::X86_64],
            ..TypeFilter::default()
        };
        let offerings = offerings_from_pools(&pools, &names, &filter);
        let described: Vec<(&str, &str, bool)> = offerings
            .iter()
            .map(|o| (o.instance_type.as_str(), o.zone.as_str(), o.is_spot()))
            .collect();
        assert_eq!(
            described,
            [
                ("m5.large", "us-east-1a", false),
                ("m5.large", "us-east-1a", true)
            ]
        );
        assert_eq!(offerings[1].price_volatility, 0.1);
        assert_eq!(offerings[0].interruption_band, None);
        assert_eq!(
            offerings_from_pools(&pools[..2], &BTreeMap::new(), &filter).len(),
            4,
            "no map: every zone"
        );
    }

    #[test]
    fn shipped_data_offers_hundreds_of_types_per_zone() {
        let data = PriceData::shipped().unwrap();
        let zones = ["us-east-1a".to_owned(), "us-east-1b".to_owned()];
        let offerings = data.offerings("us-east-1", &zones, &TypeFilter::default());
        assert!(
            !offerings
                .iter()
                .any(|o| o.instance_type.starts_with("t3.") || o.mem_mib < 1024)
        );
        let spot_types: std::collections::BTreeSet<&str> = offerings
            .iter()
            .filter(|o| o.is_spot())
            .map(|o| o.instance_type.as_str())
            .collect();
        assert!(spot_types.len() > 700, "{} spot types", spot_types.len());
        let m5 = offerings
            .iter()
            .find(|o| o.instance_type == "m5.large" && o.is_spot() && o.zone == "us-east-1b")
            .unwrap();
        assert!(m5.price_hr < m5.on_demand_price_hr.unwrap());
        assert!(m5.interruption_band.is_some());
    }
}

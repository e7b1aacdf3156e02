//! Joining the feeds into one pool per (region, zone id, instance type).

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::advisor::Advisor;
use super::spot::SpotStats;
use crate::domain::{InstanceType, Pool, PoolKey};

/// A zone of the region: its account-specific name (what spot price history reports) and its
/// account-independent id (what pools are keyed by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    pub id: String,
}

/// Where spot prices came from.
pub enum SpotPrices<'a> {
    /// Per zone name and instance type (DescribeSpotPriceHistory).
    PerZone(&'a BTreeMap<(String, String), SpotStats>),
    /// Per region and instance type (spot.js): the same price in every zone.
    PerRegion(&'a BTreeMap<(String, String), f64>),
}

pub struct RegionInputs<'a> {
    pub region: &'a str,
    pub zones: &'a [Zone],
    pub catalogue: &'a [InstanceType],
    pub spot: SpotPrices<'a>,
    /// On-demand price per (region, instance type).
    pub on_demand: &'a BTreeMap<(String, String), f64>,
    pub advisor: &'a Advisor,
}

/// Every pool with a spot price in the region, sorted by key. Types missing from the catalogue
/// are left out: without capacity figures the optimizer cannot place pods on them.
pub fn build_pools(inputs: &RegionInputs<'_>, now: OffsetDateTime) -> Vec<Pool> {
    let advisor = inputs.advisor.linux_in(inputs.region);
    let mut pools = Vec::new();
    for instance_type in inputs.catalogue {
        let key = (inputs.region.to_owned(), instance_type.name.clone());
        let on_demand_price_hr = inputs.on_demand.get(&key).copied();
        let advice = advisor.get(instance_type.name.as_str());
        for zone in inputs.zones {
            let stats = match &inputs.spot {
                SpotPrices::PerZone(by_zone) => by_zone
                    .get(&(zone.name.clone(), instance_type.name.clone()))
                    .copied(),
                SpotPrices::PerRegion(by_region) => by_region.get(&key).map(|&price| SpotStats {
                    latest: price,
                    average: price,
                    volatility: 0.0,
                }),
            };
            let Some(stats) = stats else { continue };
            pools.push(Pool {
                key: PoolKey {
                    region: inputs.region.to_owned(),
                    zone: zone.id.clone(),
                    instance_type: instance_type.name.clone(),
                },
                spot_price_hr: stats.latest,
                spot_price_avg_30d: stats.average,
                spot_price_volatility: stats.volatility,
                on_demand_price_hr,
                interruption_band: advice.map(|a| a.interruption_band),
                advisor_savings_pct: advice.map(|a| a.savings_pct),
                vcpus: instance_type.vcpus,
                memory_mib: instance_type.memory_mib,
                gpus: instance_type.gpus,
                max_pods: instance_type.max_pods,
                arch: instance_type.arch,
                updated_at: now,
            });
        }
    }
    pools.sort_by(|a, b| a.key.cmp(&b.key));
    pools
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Arch;

    fn catalogue() -> Vec<InstanceType> {
        ["m5.large", "c5.xlarge", "x9.huge"]
            .iter()
            .map(|n| InstanceType {
                name: (*n).into(),
                vcpus: 2,
                memory_mib: 8192,
                arch: Arch::X86_64,
                gpus: 0,
                max_pods: 29,
            })
            .collect()
    }

    fn zones() -> Vec<Zone> {
        vec![
            Zone {
                name: "us-east-1a".into(),
                id: "use1-az6".into(),
            },
            Zone {
                name: "us-east-1b".into(),
                id: "use1-az1".into(),
            },
        ]
    }

    #[test]
    fn zone_prices_join_catalogue_advisor_and_on_demand() {
        let advisor = Advisor::parse(
            include_bytes!("../../../../data/spot-advisor-data.json"),
            "advisor",
        )
        .unwrap();
        let spot = BTreeMap::from([
            (
                ("us-east-1a".to_owned(), "m5.large".to_owned()),
                SpotStats {
                    latest: 0.04,
                    average: 0.041,
                    volatility: 0.1,
                },
            ),
            (
                ("us-east-1b".to_owned(), "m5.large".to_owned()),
                SpotStats {
                    latest: 0.035,
                    average: 0.035,
                    volatility: 0.0,
                },
            ),
            (
                ("us-east-1b".to_owned(), "not-in-catalogue".to_owned()),
                SpotStats {
                    latest: 1.0,
                    average: 1.0,
                    volatility: 0.0,
                },
            ),
        ]);
        let od = BTreeMap::from([(("us-east-1".to_owned(), "m5.large".to_owned()), 0.096)]);
        let catalogue = catalogue();
        let zones = zones();
        let inputs = RegionInputs {
            region: "us-east-1",
            zones: &zones,
            catalogue: &catalogue,
            spot: SpotPrices::PerZone(&spot),
            on_demand: &od,
            advisor: &advisor,
        };
        let pools = build_pools(&inputs, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(pools.len(), 2);
        let b = pools.iter().find(|p| p.key.zone == "use1-az1").unwrap();
        assert_eq!(
            (
                b.spot_price_hr,
                b.on_demand_price_hr,
                b.interruption_band,
                b.advisor_savings_pct
            ),
            (0.035, Some(0.096), Some(3), Some(66))
        );
    }

    #[test]
    fn region_prices_apply_to_every_zone() {
        let advisor = Advisor {
            ranges: vec![],
            entries: vec![],
        };
        let spot = BTreeMap::from([(("us-east-1".to_owned(), "c5.xlarge".to_owned()), 0.07)]);
        let od = BTreeMap::new();
        let catalogue = catalogue();
        let zones = zones();
        let inputs = RegionInputs {
            region: "us-east-1",
            zones: &zones,
            catalogue: &catalogue,
            spot: SpotPrices::PerRegion(&spot),
            on_demand: &od,
            advisor: &advisor,
        };
        let pools = build_pools(&inputs, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(
            pools
                .iter()
                .map(|p| p.key.zone.as_str())
                .collect::<Vec<_>>(),
            ["use1-az1", "use1-az6"]
        );
        assert!(
            pools
                .iter()
                .all(|p| p.spot_price_volatility == 0.0 && p.on_demand_price_hr.is_none())
        );
    }
}

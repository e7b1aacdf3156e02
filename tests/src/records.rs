//! Domain records the function tests seed the local stack with.

use spotwise_core::domain::{Arch, Cluster, Pool, PoolKey};
use spotwise_core::{ClusterId, TenantId};
use time::OffsetDateTime;

/// The `prod` EKS cluster of account 111122223333 in us-east-1, as discovery records it.
pub fn cluster(tenant: &TenantId, id: &ClusterId, agent_queue_url: Option<String>) -> Cluster {
    Cluster {
        tenant_id: tenant.clone(),
        id: id.clone(),
        account_id: "111122223333".into(),
        region: "us-east-1".into(),
        name: "prod".into(),
        arn: "arn:aws:eks:us-east-1:111122223333:cluster/prod".into(),
        kubernetes_version: Some("1.33".into()),
        status: "ACTIVE".into(),
        agent_queue_url,
        vanished_at: None,
    }
}

/// A us-east-1 x86 pool in zone id `zone`; spot price = 30-day average, no volatility.
pub fn pool(
    zone: &str,
    instance_type: &str,
    vcpus: u32,
    memory_mib: u64,
    spot: f64,
    on_demand: f64,
    band: u8,
) -> Pool {
    Pool {
        key: PoolKey {
            region: "us-east-1".into(),
            zone: zone.into(),
            instance_type: instance_type.into(),
        },
        spot_price_hr: spot,
        spot_price_avg_30d: spot,
        spot_price_volatility: 0.0,
        on_demand_price_hr: Some(on_demand),
        interruption_band: Some(band),
        advisor_savings_pct: None,
        vcpus,
        memory_mib,
        gpus: 0,
        max_pods: if vcpus <= 2 { 29 } else { 58 },
        arch: Arch::X86_64,
        updated_at: OffsetDateTime::UNIX_EPOCH,
    }
}

//! A cluster's cost periods, as the cost function writes them.

use rust_decimal::prelude::ToPrimitive;
use spotwise_core::{ClusterId, TenantId};
use spotwise_cost::report::CostPeriod;

use crate::keys::{self, CostGranularity};
use crate::{Query, Store, StoreError};

/// What the cluster cost in its latest sampled hour; `None` before the first sample.
pub async fn latest_hourly_cost(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> Result<Option<f64>, StoreError> {
    let page = store
        .query::<CostPeriod>(
            &Query::partition(keys::tenant_partition(tenant))
                .prefix(keys::cost_prefix(cluster, CostGranularity::Hour, "summary"))
                .newest_first()
                .limit(1),
        )
        .await?;
    Ok(page
        .items
        .first()
        .and_then(|p| p.body.summary.as_ref())
        .and_then(|s| s.total.cost.to_f64()))
}

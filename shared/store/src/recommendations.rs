//! Recommendations as stored: one item per plan revision of a cluster.

use spotwise_core::{ClusterId, TenantId};
use spotwise_optimizer::recommendation::Recommendation;

use crate::keys;
use crate::table::{Item, Query, Store, StoreError};

/// The cluster's newest plan, if it has one.
pub async fn newest(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> Result<Option<Item<Recommendation>>, StoreError> {
    Ok(store
        .query::<Recommendation>(
            &Query::partition(keys::tenant_partition(tenant))
                .prefix(keys::recommendations_prefix(cluster))
                .newest_first()
                .limit(1),
        )
        .await?
        .items
        .into_iter()
        .next())
}

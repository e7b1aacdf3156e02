//! The single-table DynamoDB store.
//!
//! Items are documents: the serialised body's fields sit beside the reserved key attributes
//! (`pk`, `sk`, `gsi1pk`, `gsi1sk`, `ttl`, `version`), so they read naturally in the console and
//! can be projected into indexes. Every write that can race is conditional.

use std::collections::HashMap;
use std::time::Duration;

use crate::keys::{Gsi1Key, Key};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, DeleteRequest, Put, PutRequest, TransactWriteItem, WriteRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use spotwise_core::{Classify, Disposition};
use time::OffsetDateTime;
use tracing::{debug, warn};

use spotwise_aws::AwsFailure;

const PK: &str = "pk";
const SK: &str = "sk";
const GSI1PK: &str = "gsi1pk";
const GSI1SK: &str = "gsi1sk";
const TTL: &str = "ttl";
const VERSION: &str = "version";
const RESERVED: [&str; 6] = [PK, SK, GSI1PK, GSI1SK, TTL, VERSION];

pub const GSI1_NAME: &str = "gsi1";
/// DynamoDB's limit on requests in one BatchWriteItem.
const BATCH_WRITE_MAX: usize = 25;
const BATCH_RETRY_ATTEMPTS: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("item {pk}/{sk} already exists")]
    AlreadyExists { pk: String, sk: String },
    #[error("item {pk}/{sk} is not at version {expected} (it changed or was deleted)")]
    StaleVersion {
        pk: String,
        sk: String,
        expected: u64,
    },
    #[error("item {pk}/{sk} could not be encoded: {reason}")]
    Encode {
        pk: String,
        sk: String,
        reason: String,
    },
    #[error("item {pk}/{sk} could not be decoded: {reason}")]
    Decode {
        pk: String,
        sk: String,
        reason: String,
    },
    #[error("invalid pagination cursor: {0}")]
    InvalidCursor(&'static str),
    #[error("{unprocessed} of {total} batch writes still unprocessed after {attempts} attempts")]
    BatchIncomplete {
        unprocessed: usize,
        total: usize,
        attempts: u32,
    },
    #[error(transparent)]
    Aws(#[from] AwsFailure),
}

impl Classify for StoreError {
    fn disposition(&self) -> Disposition {
        match self {
            StoreError::Aws(failure) => failure.disposition(),
            StoreError::BatchIncomplete { .. } => Disposition::Retryable,
            StoreError::AlreadyExists { .. }
            | StoreError::StaleVersion { .. }
            | StoreError::Encode { .. }
            | StoreError::Decode { .. }
            | StoreError::InvalidCursor(_) => Disposition::NonRetryable,
        }
    }
}

/// A stored document with its key and bookkeeping attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<T> {
    pub key: Key,
    pub gsi1: Option<Gsi1Key>,
    /// Expiry as Unix seconds; DynamoDB deletes the item some time after it passes.
    pub ttl: Option<i64>,
    /// Starts at 1 and grows by one with every versioned update.
    pub version: u64,
    pub body: T,
}

impl<T> Item<T> {
    /// The same item (key, index entry, expiry, version) around another body.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Item<U> {
        Item {
            key: self.key,
            gsi1: self.gsi1,
            ttl: self.ttl,
            version: self.version,
            body: f(self.body),
        }
    }

    pub fn new(key: Key, body: T) -> Self {
        Self {
            key,
            gsi1: None,
            ttl: None,
            version: 1,
            body,
        }
    }

    pub fn with_gsi1(mut self, gsi1: Gsi1Key) -> Self {
        self.gsi1 = Some(gsi1);
        self
    }

    pub fn expiring_at(mut self, at: OffsetDateTime) -> Self {
        self.ttl = Some(at.unix_timestamp());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCondition {
    /// Overwrite whatever is there.
    Always,
    /// Fail with [`StoreError::AlreadyExists`] if the key is taken.
    IfAbsent,
}

/// Result of an idempotency claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First claim: do the work.
    Claimed,
    /// Someone already claimed this id and the claim has not expired: skip the work.
    AlreadyClaimed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    Table,
    Gsi1,
}

/// A query over one partition, optionally narrowed by a sort-key prefix.
#[derive(Debug, Clone)]
pub struct Query {
    pub index: Index,
    pub partition: String,
    pub sk_prefix: Option<String>,
    /// Only sort keys up to and including this one (ignored with a prefix).
    pub sk_up_to: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub newest_first: bool,
}

impl Query {
    pub fn partition(partition: impl Into<String>) -> Self {
        Self {
            index: Index::Table,
            partition: partition.into(),
            sk_prefix: None,
            sk_up_to: None,
            limit: None,
            cursor: None,
            newest_first: false,
        }
    }

    pub fn gsi1(partition: impl Into<String>) -> Self {
        Self {
            index: Index::Gsi1,
            ..Self::partition(partition)
        }
    }

    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.sk_prefix = Some(prefix.into());
        self
    }

    pub fn up_to(mut self, sk: impl Into<String>) -> Self {
        self.sk_up_to = Some(sk.into());
        self
    }

    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    pub fn after(mut self, cursor: Option<String>) -> Self {
        self.cursor = cursor;
        self
    }

    pub fn newest_first(mut self) -> Self {
        self.newest_first = true;
        self
    }

    fn key_names(&self) -> (&'static str, &'static str) {
        match self.index {
            Index::Table => (PK, SK),
            Index::Gsi1 => (GSI1PK, GSI1SK),
        }
    }
}

/// One page of a query. `next` is an opaque cursor, present whenever DynamoDB stopped early
/// (item limit or its 1 MB page size).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<Item<T>>,
    pub next: Option<String>,
}

/// A claim taken by [`Store::hold`].
#[must_use = "settle the claim with the work's result, so a failure gives the work back"]
pub struct HeldClaim<'a> {
    store: &'a Store,
    key: Key,
}

impl HeldClaim<'_> {
    /// Keeps the claim when the work succeeded; releases it when the work failed, so a retry
    /// does the work. A release that fails is logged: the claim then lapses at its hold.
    pub async fn settle<T, E>(self, result: Result<T, E>) -> Result<T, E> {
        if result.is_err()
            && let Err(release) = self.store.delete(&self.key).await
        {
            warn!(pk = %self.key.pk(), sk = %self.key.sk(), error = %release, "claim not released; it lapses at its hold");
        }
        result
    }
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    table: String,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Strongly consistent read.
    pub async fn get<T: DeserializeOwned>(&self, key: &Key) -> Result<Option<Item<T>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_attrs(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("dynamodb:GetItem", e))?;
        out.item.map(decode).transpose()
    }

    pub async fn put<T: Serialize>(
        &self,
        item: &Item<T>,
        condition: PutCondition,
    ) -> Result<(), StoreError> {
        self.put_guarded(&item.key, encode(item)?, Guard::from(condition))
            .await
    }

    /// Replaces the item only if it is still at `item.version`; stores it at `version + 1` and
    /// returns the new version. This is the optimistic lock every read-modify-write goes through.
    pub async fn update_versioned<T: Serialize>(&self, item: &Item<T>) -> Result<u64, StoreError> {
        let (attrs, guard) = versioned_attrs(item)?;
        self.put_guarded(&item.key, attrs, guard).await?;
        Ok(item.version + 1)
    }

    /// One PutItem under `guard`, the same condition a transaction's put is made under.
    async fn put_guarded(
        &self,
        key: &Key,
        attrs: HashMap<String, AttributeValue>,
        guard: Guard,
    ) -> Result<(), StoreError> {
        let condition = guard.condition();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attrs))
            .set_condition_expression(condition.expression)
            .set_expression_attribute_names(condition.names)
            .set_expression_attribute_values(condition.values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(match AwsFailure::from_sdk("dynamodb:PutItem", e) {
                f if f.has_code("ConditionalCheckFailedException") => guard.conflict(key),
                f => f.into(),
            }),
        }
    }

    /// Writes all of `writes` or none of them (one TransactWriteItems call, at most 100 writes
    /// on distinct items). A failed condition is the error of the write it was on.
    pub async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let requests = writes
            .iter()
            .cloned()
            .map(|w| w.request(&self.table))
            .collect::<Result<Vec<_>, _>>()?;
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(requests))
            .send()
            .await;
        let Err(err) = result else {
            return Ok(());
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
            err.as_service_error()
        {
            let failed = cancelled
                .cancellation_reasons()
                .iter()
                .position(|r| r.code() == Some("ConditionalCheckFailed"));
            if let Some(write) = failed.and_then(|i| writes.get(i)) {
                return Err(write.conflict());
            }
        }
        Err(AwsFailure::from_sdk("dynamodb:TransactWriteItems", err).into())
    }

    /// Sets `fields` on the item (creating it if absent), adds one to its version, and returns
    /// the item as it was before: one UpdateItem,
    /// a write with no read before it. For items written often whose writer only needs to know
    /// what changed (a heartbeat).
    pub async fn merge<T: Serialize, Old: DeserializeOwned>(
        &self,
        key: &Key,
        fields: &T,
    ) -> Result<Option<Item<Old>>, StoreError> {
        let attrs: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(fields).map_err(|e| StoreError::Encode {
                pk: key.pk().to_owned(),
                sk: key.sk().to_owned(),
                reason: e.to_string(),
            })?;
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_attrs(key)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":one", number(1));
        let mut sets = Vec::with_capacity(attrs.len());
        for (i, (name, value)) in attrs.into_iter().enumerate() {
            if RESERVED.contains(&name.as_str()) {
                return Err(StoreError::Encode {
                    pk: key.pk().to_owned(),
                    sk: key.sk().to_owned(),
                    reason: format!("field {name:?} collides with a key attribute"),
                });
            }
            sets.push(format!("#f{i} = :f{i}"));
            request = request
                .expression_attribute_names(format!("#f{i}"), name)
                .expression_attribute_values(format!(":f{i}"), value);
        }
        let expression = format!("SET {} ADD #version :one", sets.join(", "));
        let out = request
            .update_expression(expression)
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("dynamodb:UpdateItem", e))?;
        out.attributes
            .filter(|old| !old.is_empty())
            .map(decode)
            .transpose()
    }

    /// Deletes the item only while `attribute` still holds `value`; `false` when it did not.
    pub async fn delete_if(
        &self,
        key: &Key,
        attribute: &str,
        value: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_attrs(key)))
            .condition_expression("#a = :v")
            .expression_attribute_names("#a", attribute)
            .expression_attribute_values(":v", AttributeValue::S(value.to_owned()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match AwsFailure::from_sdk("dynamodb:DeleteItem", e) {
                f if f.has_code("ConditionalCheckFailedException") => Ok(false),
                f => Err(f.into()),
            },
        }
    }

    pub async fn delete(&self, key: &Key) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_attrs(key)))
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("dynamodb:DeleteItem", e))?;
        Ok(())
    }

    /// Atomically adds `by` to a numeric attribute (creating the item and attribute at zero),
    /// optionally setting the item's expiry. Returns the new value. For counters.
    pub async fn increment(
        &self,
        key: &Key,
        attribute: &str,
        by: i64,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<i64, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_attrs(key)))
            .expression_attribute_names("#a", attribute)
            .expression_attribute_values(":by", number(by))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew);
        request = match expires_at {
            Some(at) => request
                .update_expression("ADD #a :by SET #ttl = :ttl")
                .expression_attribute_names("#ttl", TTL)
                .expression_attribute_values(":ttl", number(at.unix_timestamp())),
            None => request.update_expression("ADD #a :by"),
        };
        let out = request
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("dynamodb:UpdateItem", e))?;
        Ok(out
            .attributes
            .and_then(|mut a| a.remove(attribute))
            .and_then(|v| v.as_n().ok().and_then(|n| n.parse().ok()))
            .unwrap_or(by))
    }

    /// Claims `key` for `hold` before work that must happen once. `None` when the claim is
    /// held already (the work was done, or is being done). The held claim gives the work back on
    /// failure ([`HeldClaim::settle`]), so a redelivery does it again.
    pub async fn hold(
        &self,
        key: Key,
        hold: Duration,
        now: OffsetDateTime,
    ) -> Result<Option<HeldClaim<'_>>, StoreError> {
        Ok(match self.claim(&key, hold, now).await? {
            Claim::Claimed => Some(HeldClaim { store: self, key }),
            Claim::AlreadyClaimed => None,
        })
    }

    /// Claims `key` for `hold`. A claim whose TTL has passed counts as free even before DynamoDB's
    /// TTL sweeper removes it (that can take days).
    pub async fn claim(
        &self,
        key: &Key,
        hold: Duration,
        now: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        let expires = now + hold;
        let mut attrs = key_attrs(key);
        attrs.insert(TTL.into(), number(expires.unix_timestamp()));
        attrs.insert(
            "claimed_at".into(),
            AttributeValue::S(spotwise_core::rfc3339(now)),
        );
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attrs))
            .condition_expression("attribute_not_exists(pk) OR #ttl < :now")
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":now", number(now.unix_timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Claim::Claimed),
            Err(e) => match AwsFailure::from_sdk("dynamodb:PutItem", e) {
                f if f.has_code("ConditionalCheckFailedException") => Ok(Claim::AlreadyClaimed),
                f => Err(f.into()),
            },
        }
    }

    /// One page. Cursors are checked against the query's partition so a client-supplied cursor
    /// cannot start a read in another partition.
    pub async fn query<T: DeserializeOwned>(&self, query: &Query) -> Result<Page<T>, StoreError> {
        let (pk_name, sk_name) = query.key_names();
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .scan_index_forward(!query.newest_first)
            .expression_attribute_names("#pk", pk_name)
            .expression_attribute_values(":pk", AttributeValue::S(query.partition.clone()));
        request = match (&query.sk_prefix, &query.sk_up_to) {
            (Some(prefix), _) => request
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#sk", sk_name)
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.clone())),
            (None, Some(up_to)) => request
                .key_condition_expression("#pk = :pk AND #sk <= :upto")
                .expression_attribute_names("#sk", sk_name)
                .expression_attribute_values(":upto", AttributeValue::S(up_to.clone())),
            (None, None) => request.key_condition_expression("#pk = :pk"),
        };
        if query.index == Index::Gsi1 {
            request = request.index_name(GSI1_NAME);
        }
        if let Some(limit) = query.limit {
            request = request.limit(i32::try_from(limit).unwrap_or(i32::MAX).max(1));
        }
        if let Some(cursor) = &query.cursor {
            request = request.set_exclusive_start_key(Some(cursor::decode(cursor, query)?));
        }
        let out = request
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("dynamodb:Query", e))?;
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        let next = out
            .last_evaluated_key
            .filter(|k| !k.is_empty())
            .map(|k| cursor::encode(&k));
        Ok(Page { items, next })
    }

    /// Every item of the query, following DynamoDB's pages to the end.
    pub async fn query_all<T: DeserializeOwned>(
        &self,
        query: &Query,
    ) -> Result<Vec<Item<T>>, StoreError> {
        let mut query = query.clone();
        let mut all = Vec::new();
        loop {
            let page = self.query::<T>(&query).await?;
            all.extend(page.items);
            match page.next {
                Some(next) => query.cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Writes many items, 25 per request, re-sending UnprocessedItems with exponential backoff.
    /// Later items win when a key appears twice (DynamoDB rejects duplicate keys in one batch).
    pub async fn batch_put<T: Serialize>(&self, items: &[Item<T>]) -> Result<(), StoreError> {
        let mut by_key: HashMap<&Key, usize> = HashMap::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            by_key.insert(&item.key, index);
        }
        let mut indices: Vec<usize> = by_key.into_values().collect();
        indices.sort_unstable();
        let requests = indices
            .into_iter()
            .map(|i| {
                let put = PutRequest::builder()
                    .set_item(Some(encode(&items[i])?))
                    .build()
                    .map_err(|e| StoreError::Encode {
                        pk: items[i].key.pk().to_owned(),
                        sk: items[i].key.sk().to_owned(),
                        reason: e.to_string(),
                    })?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write_all(requests).await
    }

    /// Deletes many items, 25 per request, like [`Store::batch_put`]; absent keys are no error.
    pub async fn batch_delete(&self, keys: &[Key]) -> Result<(), StoreError> {
        let mut unique: Vec<&Key> = keys.iter().collect();
        unique.sort_unstable();
        unique.dedup();
        let requests = unique
            .into_iter()
            .map(|key| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key_attrs(key)))
                    .build()
                    .map_err(|e| StoreError::Encode {
                        pk: key.pk().to_owned(),
                        sk: key.sk().to_owned(),
                        reason: e.to_string(),
                    })?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write_all(requests).await
    }

    /// The keys of every item of the query, whatever the items hold.
    pub async fn query_keys(&self, query: &Query) -> Result<Vec<Key>, StoreError> {
        Ok(self
            .query_all::<serde::de::IgnoredAny>(query)
            .await?
            .into_iter()
            .map(|item| item.key)
            .collect())
    }

    async fn write_all(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        for chunk in requests.chunks(BATCH_WRITE_MAX) {
            self.write_chunk(chunk.to_vec()).await?;
        }
        Ok(())
    }

    async fn write_chunk(&self, mut pending: Vec<WriteRequest>) -> Result<(), StoreError> {
        let total = pending.len();
        for attempt in 0..BATCH_RETRY_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, pending)
                .send()
                .await
                .map_err(|e| AwsFailure::from_sdk("dynamodb:BatchWriteItem", e))?;
            pending = out
                .unprocessed_items
                .and_then(|mut by_table| by_table.remove(&self.table))
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(());
            }
            debug!(
                attempt,
                unprocessed = pending.len(),
                "retrying unprocessed batch writes"
            );
        }
        warn!(unprocessed = pending.len(), total, "batch write gave up");
        Err(StoreError::BatchIncomplete {
            unprocessed: pending.len(),
            total,
            attempts: BATCH_RETRY_ATTEMPTS,
        })
    }
}

/// What a put requires of the item it replaces.
#[derive(Debug, Clone, Copy)]
enum Guard {
    None,
    Absent,
    /// Still at this version.
    Version(u64),
}

impl From<PutCondition> for Guard {
    fn from(condition: PutCondition) -> Self {
        match condition {
            PutCondition::Always => Guard::None,
            PutCondition::IfAbsent => Guard::Absent,
        }
    }
}

/// A condition as PutItem and a transaction's put both take it.
#[derive(Default)]
struct Condition {
    expression: Option<String>,
    names: Option<HashMap<String, String>>,
    values: Option<HashMap<String, AttributeValue>>,
}

impl Guard {
    fn condition(self) -> Condition {
        match self {
            Guard::None => Condition::default(),
            Guard::Absent => Condition {
                expression: Some("attribute_not_exists(pk)".into()),
                ..Condition::default()
            },
            Guard::Version(expected) => Condition {
                expression: Some("#v = :expected".into()),
                names: Some(HashMap::from([("#v".into(), VERSION.into())])),
                values: Some(HashMap::from([(":expected".into(), number(expected))])),
            },
        }
    }

    /// The error a failed condition on `key` means.
    fn conflict(self, key: &Key) -> StoreError {
        let (pk, sk) = (key.pk().to_owned(), key.sk().to_owned());
        match self {
            Guard::Version(expected) => StoreError::StaleVersion { pk, sk, expected },
            Guard::None | Guard::Absent => StoreError::AlreadyExists { pk, sk },
        }
    }
}

/// The item stored at `version + 1`, and the guard that it is still at `version`.
fn versioned_attrs<T: Serialize>(
    item: &Item<T>,
) -> Result<(HashMap<String, AttributeValue>, Guard), StoreError> {
    let mut attrs = encode(item)?;
    attrs.insert(VERSION.into(), number(item.version + 1));
    Ok((attrs, Guard::Version(item.version)))
}

/// One write of a [`Store::transact`] call.
#[derive(Debug, Clone)]
pub struct Write {
    key: Key,
    kind: WriteKind,
}

#[derive(Debug, Clone)]
enum WriteKind {
    Put {
        attrs: HashMap<String, AttributeValue>,
        guard: Guard,
    },
    Delete,
}

impl Write {
    /// Writes `item`, like [`Store::put`].
    pub fn put<T: Serialize>(item: &Item<T>, condition: PutCondition) -> Result<Self, StoreError> {
        Ok(Self {
            key: item.key.clone(),
            kind: WriteKind::Put {
                attrs: encode(item)?,
                guard: Guard::from(condition),
            },
        })
    }

    /// Replaces `item` if it is still at its version, like [`Store::update_versioned`]; the
    /// stored version becomes `item.version + 1`.
    pub fn versioned<T: Serialize>(item: &Item<T>) -> Result<Self, StoreError> {
        let (attrs, guard) = versioned_attrs(item)?;
        Ok(Self {
            key: item.key.clone(),
            kind: WriteKind::Put { attrs, guard },
        })
    }

    pub fn delete(key: &Key) -> Self {
        Self {
            key: key.clone(),
            kind: WriteKind::Delete,
        }
    }

    fn request(self, table: &str) -> Result<TransactWriteItem, StoreError> {
        let invalid = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Encode {
            pk: self.key.pk().to_owned(),
            sk: self.key.sk().to_owned(),
            reason: e.to_string(),
        };
        let item = match &self.kind {
            WriteKind::Put { attrs, guard } => {
                let condition = guard.condition();
                TransactWriteItem::builder().put(
                    Put::builder()
                        .table_name(table)
                        .set_item(Some(attrs.clone()))
                        .set_condition_expression(condition.expression)
                        .set_expression_attribute_names(condition.names)
                        .set_expression_attribute_values(condition.values)
                        .build()
                        .map_err(invalid)?,
                )
            }
            WriteKind::Delete => TransactWriteItem::builder().delete(
                Delete::builder()
                    .table_name(table)
                    .set_key(Some(key_attrs(&self.key)))
                    .build()
                    .map_err(invalid)?,
            ),
        };
        Ok(item.build())
    }

    /// The error a failed condition on this write means.
    fn conflict(&self) -> StoreError {
        match self.kind {
            WriteKind::Put { guard, .. } => guard.conflict(&self.key),
            WriteKind::Delete => Guard::None.conflict(&self.key),
        }
    }
}

/// Full-jitter-free exponential backoff for UnprocessedItems: 50 ms doubling, capped at 2 s.
/// (The SDK already jitters and retries throttled requests; this covers partial success.)
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(6)).min(2_000))
}

fn number(n: impl ToString) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn key_attrs(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(key.pk().to_owned())),
        (SK.to_owned(), AttributeValue::S(key.sk().to_owned())),
    ])
}

fn encode<T: Serialize>(item: &Item<T>) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let fail = |reason: String| StoreError::Encode {
        pk: item.key.pk().to_owned(),
        sk: item.key.sk().to_owned(),
        reason,
    };
    let mut attrs: HashMap<String, AttributeValue> =
        serde_dynamo::to_item(&item.body).map_err(|e| fail(e.to_string()))?;
    if let Some(reserved) = RESERVED.iter().find(|name| attrs.contains_key(**name)) {
        return Err(fail(format!(
            "body field {reserved:?} collides with a key attribute"
        )));
    }
    attrs.extend(key_attrs(&item.key));
    attrs.insert(VERSION.into(), number(item.version));
    if let Some(gsi1) = &item.gsi1 {
        attrs.insert(GSI1PK.into(), AttributeValue::S(gsi1.gsi1pk.clone()));
        attrs.insert(GSI1SK.into(), AttributeValue::S(gsi1.gsi1sk.clone()));
    }
    if let Some(ttl) = item.ttl {
        attrs.insert(TTL.into(), number(ttl));
    }
    Ok(attrs)
}

fn decode<T: DeserializeOwned>(
    mut attrs: HashMap<String, AttributeValue>,
) -> Result<Item<T>, StoreError> {
    let string = |attrs: &mut HashMap<String, AttributeValue>, name: &str| match attrs.remove(name)
    {
        Some(AttributeValue::S(s)) => Some(s),
        _ => None,
    };
    let int = |attrs: &mut HashMap<String, AttributeValue>, name: &str| match attrs.remove(name) {
        Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
        _ => None,
    };
    let pk = string(&mut attrs, PK).unwrap_or_default();
    let sk = string(&mut attrs, SK).unwrap_or_default();
    let gsi1 = match (string(&mut attrs, GSI1PK), string(&mut attrs, GSI1SK)) {
        (Some(gsi1pk), Some(gsi1sk)) => Some(Gsi1Key { gsi1pk, gsi1sk }),
        _ => None,
    };
    let ttl = int(&mut attrs, TTL);
    let version = int(&mut attrs, VERSION)
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(1);
    let body = serde_dynamo::from_item(attrs).map_err(|e| StoreError::Decode {
        pk: pk.clone(),
        sk: sk.clone(),
        reason: e.to_string(),
    })?;
    Ok(Item {
        key: Key::stored(pk, sk),
        gsi1,
        ttl,
        version,
        body,
    })
}

/// Opaque cursors: DynamoDB's LastEvaluatedKey (all string attributes in this table) as hex JSON.
mod cursor {
    use std::collections::{BTreeMap, HashMap};

    use aws_sdk_dynamodb::types::AttributeValue;

    use super::{GSI1PK, GSI1SK, Index, PK, Query, SK, StoreError};

    pub fn encode(key: &HashMap<String, AttributeValue>) -> String {
        let plain: BTreeMap<&str, &str> = key
            .iter()
            .filter_map(|(k, v)| v.as_s().ok().map(|s| (k.as_str(), s.as_str())))
            .collect();
        hex::encode(serde_json::to_vec(&plain).unwrap_or_default())
    }

    pub fn decode(
        cursor: &str,
        query: &Query,
    ) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let bytes = hex::decode(cursor)
            .map_err(|_| StoreError::InvalidCursor("not a cursor issued by this API"))?;
        let plain: BTreeMap<String, String> = serde_json::from_slice(&bytes)
            .map_err(|_| StoreError::InvalidCursor("not a cursor issued by this API"))?;
        let (pk_name, sk_name) = query.key_names();
        if plain.get(pk_name) != Some(&query.partition) {
            return Err(StoreError::InvalidCursor(
                "cursor belongs to another listing",
            ));
        }
        // DynamoDB wants exactly the key of the last item read: the table's key, and on an
        // index the index's key too.
        let mut expected = vec![PK, SK];
        if query.index == Index::Gsi1 {
            expected.extend([GSI1PK, GSI1SK]);
        }
        if !plain.contains_key(sk_name)
            || plain.len() != expected.len()
            || !expected.iter().all(|name| plain.contains_key(*name))
        {
            return Err(StoreError::InvalidCursor("not a cursor issued by this API"));
        }
        Ok(plain
            .into_iter()
            .map(|(k, v)| (k, AttributeValue::S(v)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use serde::Deserialize;
    use spotwise_core::TenantId;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        name: String,
        count: u32,
    }

    #[test]
    fn encode_decode_round_trip_keeps_bookkeeping() {
        let item = Item::new(
            keys::webhook(&TenantId::new("t1").unwrap(), "1"),
            Doc {
                name: "a".into(),
                count: 2,
            },
        )
        .with_gsi1(Gsi1Key {
            gsi1pk: "G".into(),
            gsi1sk: "1".into(),
        })
        .expiring_at(OffsetDateTime::UNIX_EPOCH + Duration::from_secs(60));
        let decoded: Item<Doc> = decode(encode(&item).unwrap()).unwrap();
        assert_eq!(decoded, item);
    }

    #[test]
    fn body_fields_may_not_shadow_key_attributes() {
        #[derive(Serialize)]
        struct Sneaky {
            pk: String,
        }
        let item = Item::new(
            keys::silence(&TenantId::new("t1").unwrap(), "x"),
            Sneaky { pk: "T#t2".into() },
        );
        assert!(
            matches!(encode(&item), Err(StoreError::Encode { reason, .. }) if reason.contains("\"pk\""))
        );
    }

    #[test]
    fn cursor_is_bound_to_its_partition() {
        let key = HashMap::from([
            ("pk".to_owned(), AttributeValue::S("T#t1".into())),
            ("sk".to_owned(), AttributeValue::S("ACCOUNT#1".into())),
        ]);
        let token = cursor::encode(&key);
        assert_eq!(
            cursor::decode(&token, &Query::partition("T#t1")).unwrap(),
            key
        );
        assert!(matches!(
            cursor::decode(&token, &Query::partition("T#t2")),
            Err(StoreError::InvalidCursor(_))
        ));
        assert!(cursor::decode("zz", &Query::partition("T#t1")).is_err());
    }

    #[test]
    fn cursor_must_hold_the_whole_key_of_its_listing() {
        let token = |attrs: &[(&str, &str)]| {
            cursor::encode(
                &attrs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), AttributeValue::S((*v).to_owned())))
                    .collect(),
            )
        };
        let table = Query::partition("T#t1");
        let no_sort_key = token(&[("pk", "T#t1")]);
        let extra = token(&[("pk", "T#t1"), ("sk", "A#1"), ("x", "y")]);
        for bad in [no_sort_key, extra] {
            assert!(matches!(
                cursor::decode(&bad, &table),
                Err(StoreError::InvalidCursor(_))
            ));
        }
        let index = Query::gsi1("DUE");
        let table_key_only = token(&[("gsi1pk", "DUE"), ("gsi1sk", "2026")]);
        assert!(cursor::decode(&table_key_only, &index).is_err());
        let whole = token(&[
            ("gsi1pk", "DUE"),
            ("gsi1sk", "2026"),
            ("pk", "T#t1"),
            ("sk", "S#1"),
        ]);
        assert!(cursor::decode(&whole, &index).is_ok());
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(20), Duration::from_millis(2_000));
    }

    #[test]
    fn conflicts_are_not_retryable_but_incomplete_batches_are() {
        assert!(
            !StoreError::StaleVersion {
                pk: "p".into(),
                sk: "s".into(),
                expected: 1
            }
            .is_retryable()
        );
        assert!(
            StoreError::BatchIncomplete {
                unprocessed: 1,
                total: 2,
                attempts: 8
            }
            .is_retryable()
        );
    }
}

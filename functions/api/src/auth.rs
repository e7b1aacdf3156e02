//! API keys and who is calling.
//!
//! A key reads `swk_<prefix>_<secret>`: the prefix (12 hex characters) finds the stored key
//! without knowing the tenant, the whole key's SHA-256 is what is stored and compared (the
//! secret is 256 random bits, so a fast hash is enough; nothing to brute-force). Keys are shown
//! once, when created. Every route takes the tenant from the key, never from the request, so a
//! key cannot name another tenant's resources: they are simply not found.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use rand::RngCore;
use sha2::{Digest, Sha256};
use spotwise_core::domain::{ApiKey, Principal, Role, Tenant, User};
use spotwise_core::{ClusterId, TenantId};
use spotwise_store::Store;
use spotwise_store::keys;
use spotwise_store::{Item, PutCondition, Write};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::AppState;
use crate::error::ApiError;

const KEY_SCHEME: &str = "swk_";
const PREFIX_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// A new key: the whole secret (shown once) and what is stored.
pub struct IssuedKey {
    pub secret: String,
    pub key: ApiKey,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

pub fn issue(
    tenant: &TenantId,
    name: &str,
    principal: Principal,
    now: OffsetDateTime,
) -> IssuedKey {
    let mut rng = rand::rng();
    let mut prefix = [0_u8; PREFIX_BYTES];
    let mut secret = [0_u8; SECRET_BYTES];
    rng.fill_bytes(&mut prefix);
    rng.fill_bytes(&mut secret);
    let prefix = hex::encode(prefix);
    let whole = format!("{KEY_SCHEME}{prefix}_{}", hex::encode(secret));
    IssuedKey {
        key: ApiKey {
            id: prefix.clone(),
            tenant_id: tenant.clone(),
            name: name.to_owned(),
            prefix,
            secret_sha256: sha256_hex(&whole),
            principal,
            created_at: now,
            revoked_at: None,
        },
        secret: whole,
    }
}

pub fn key_item(key: &ApiKey) -> Item<&ApiKey> {
    Item::new(keys::api_key(&key.prefix), key)
        .with_gsi1(keys::api_keys_index(&key.tenant_id, &key.prefix))
}

/// Creates a tenant if it does not exist, and an admin key for it: the one-off set-up of a
/// deployment, and the way back in when every admin key is lost (`api bootstrap`, which needs
/// write access to the table, so it grants nothing its caller does not already have).
pub async fn bootstrap(
    store: &Store,
    tenant: &TenantId,
    name: &str,
    now: OffsetDateTime,
) -> Result<IssuedKey, spotwise_store::StoreError> {
    let record = Tenant {
        id: tenant.clone(),
        name: name.to_owned(),
        created_at: now,
    };
    match store
        .put(
            &Item::new(keys::tenant(tenant), record),
            PutCondition::IfAbsent,
        )
        .await
    {
        Ok(()) | Err(spotwise_store::StoreError::AlreadyExists { .. }) => {}
        Err(err) => return Err(err),
    }
    let issued = issue(
        tenant,
        "bootstrap admin",
        Principal::User { role: Role::Admin },
        now,
    );
    let change = spotwise_store::audit::Change {
        action: "key.bootstrap",
        target: format!("key/{}", issued.key.id),
        before: None,
        // Never the hash: the audit log is readable by every admin.
        after: Some(serde_json::json!({
            "name": issued.key.name,
            "prefix": issued.key.prefix,
            "role": "admin",
        })),
    };
    store
        .transact(vec![
            Write::put(&key_item(&issued.key), PutCondition::IfAbsent)?,
            spotwise_store::audit::write_of(tenant, "cli:bootstrap", change, now)?,
        ])
        .await?;
    Ok(issued)
}

/// What the caller presented.
#[derive(Debug, Clone)]
pub enum Credential {
    ApiKey,
    /// A person's ID token, with their user record as this request read it; `key_id` is then
    /// `user:<sub>` and `key_name` their email.
    Person(Box<User>),
}

/// The caller of a request, from its key or token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantId,
    pub key_id: String,
    pub key_name: String,
    pub principal: Principal,
    pub credential: Credential,
}

impl Caller {
    /// A user key with at least `role`; agent keys reach only agent routes.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        match &self.principal {
            Principal::User { role: held } if held.allows(role) => Ok(()),
            Principal::User { role: held } => Err(ApiError::forbidden(format!(
                "this needs the {role:?} role; the caller has {held:?}"
            ))),
            Principal::Agent { .. } => Err(ApiError::forbidden(
                "agent keys may only use the agent routes",
            )),
        }
    }

    /// The cluster of an agent key.
    pub fn agent_cluster(&self) -> Result<&ClusterId, ApiError> {
        match &self.principal {
            Principal::Agent { cluster_id } => Ok(cluster_id),
            Principal::User { .. } => Err(ApiError::forbidden("this route is for agent keys")),
        }
    }

    /// The signed-in person's user record; API keys have no sign-in settings.
    pub fn person(&self) -> Result<&User, ApiError> {
        match &self.credential {
            Credential::Person(user) => Ok(user),
            Credential::ApiKey => Err(ApiError::forbidden(
                "only a signed-in person has sign-in settings; an API key has none",
            )),
        }
    }

    /// How the audit log names the caller.
    pub fn actor(&self) -> String {
        match self.credential {
            Credential::Person(_) => format!("user:{}", self.key_name),
            Credential::ApiKey => format!("key:{} ({})", self.key_id, self.key_name),
        }
    }
}

fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(value) = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return value.strip_prefix("Bearer ").map(str::trim);
    }
    parts
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = presented_key(parts).ok_or_else(|| {
            ApiError::unauthorized(
                "an API key or ID token is required (Authorization: Bearer swk_... or a JWT)",
            )
        })?;
        if !presented.starts_with(KEY_SCHEME) && presented.matches('.').count() == 2 {
            return person(presented, state).await;
        }
        let invalid = || ApiError::unauthorized("the API key is not valid");
        let prefix = presented
            .strip_prefix(KEY_SCHEME)
            .and_then(|rest| rest.split_once('_'))
            .map(|(prefix, _)| prefix)
            .filter(|p| p.len() == PREFIX_BYTES * 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(invalid)?;
        let stored = match state.keys.get(prefix) {
            Some(cached) => cached,
            None => {
                let stored = state
                    .store
                    .get::<ApiKey>(&keys::api_key(prefix))
                    .await?
                    .ok_or_else(invalid)?
                    .body;
                state.keys.insert(prefix, stored.clone());
                stored
            }
        };
        // Constant-time, so timing does not reveal how much of the hash matched.
        let matches: bool = stored
            .secret_sha256
            .as_bytes()
            .ct_eq(sha256_hex(presented).as_bytes())
            .into();
        if !matches {
            return Err(invalid());
        }
        if stored.revoked_at.is_some() {
            return Err(ApiError::unauthorized("the API key was revoked"));
        }
        within_rate(state, &stored.id)?;
        Ok(Caller {
            tenant: stored.tenant_id,
            key_id: stored.id,
            key_name: stored.name,
            principal: stored.principal,
            credential: Credential::ApiKey,
        })
    }
}

/// A 429 with `Retry-After` once `id` (a key, a person, a user name signing in) is over the
/// API's rate.
pub fn within_rate(state: &AppState, id: &str) -> Result<(), ApiError> {
    state
        .limiter
        .check(id)
        .map_err(|wait| ApiError::rate_limited(wait.as_secs_f64().ceil().max(1.0) as u64))
}

/// The caller of a request with an ID token: the person's tenant, and the role their user
/// record holds now.
async fn person(token: &str, state: &AppState) -> Result<Caller, ApiError> {
    let person = state
        .identity
        .verifier
        .verify(token, OffsetDateTime::now_utc())
        .await?;
    let user = crate::users::current_user(state, &person.sub, &person.tenant).await?;
    let id = format!("user:{}", user.id);
    within_rate(state, &id)?;
    Ok(Caller {
        tenant: user.tenant_id.clone(),
        key_id: id,
        key_name: user.email.clone(),
        principal: Principal::User { role: user.role },
        credential: Credential::Person(Box::new(user)),
    })
}

/// Key records for a short time after they are read, so a busy key (an agent's heartbeats and
/// uploads, a dashboard) costs one read per `ttl` per function instance, not one per request.
/// The secret is still checked against the hash on every request. A key revoked through this
/// instance stops working at once; other instances notice within `ttl`.
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, ApiKey)>>,
}

/// Beyond this many cached keys the cache starts over, which only costs reads.
const MAX_CACHED_KEYS: usize = 10_000;

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn get(&self, prefix: &str) -> Option<ApiKey> {
        let entries = self.entries.lock().ok()?;
        let (read_at, key) = entries.get(prefix)?;
        (read_at.elapsed() < self.ttl).then(|| key.clone())
    }

    fn insert(&self, prefix: &str, key: ApiKey) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_CACHED_KEYS {
                entries.clear();
            }
            entries.insert(prefix.to_owned(), (Instant::now(), key));
        }
    }

    pub fn forget(&self, prefix: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(prefix);
        }
    }
}

/// Requests per key: a token bucket (GCRA) per key in this process, in front of API Gateway's
/// stage-wide throttling.
pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

/// Keys tracked before the ones whose buckets have refilled are forgotten (a full bucket is the
/// same as none, so forgetting them changes no answer).
const MAX_TRACKED_KEYS: usize = 10_000;

impl RateLimiter {
    /// Zero for either figure is taken as one: a limit that admits nothing is a configuration
    /// mistake, not a way to switch the API off.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// `Err` carries how long until the key may call again.
    pub fn check(&self, key_id: &str) -> Result<(), Duration> {
        if self.limiter.len() > MAX_TRACKED_KEYS {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&key_id.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_carry_their_prefix_and_only_a_hash_is_kept() {
        let tenant = TenantId::new("t1").unwrap();
        let issued = issue(
            &tenant,
            "ci",
            Principal::User { role: Role::Viewer },
            OffsetDateTime::UNIX_EPOCH,
        );
        let prefix = &issued.key.prefix;
        assert!(issued.secret.starts_with(&format!("swk_{prefix}_")));
        assert_eq!(issued.secret.len(), 4 + 12 + 1 + 64);
        assert_eq!(issued.key.secret_sha256, sha256_hex(&issued.secret));
        assert!(
            !serde_json::to_string(&issued.key)
                .unwrap()
                .contains(&issued.secret)
        );
        let other = issue(
            &tenant,
            "ci",
            Principal::User { role: Role::Viewer },
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_ne!(issued.secret, other.secret);
    }

    #[test]
    fn limiter_allows_the_burst_then_says_when() {
        // One request a minute: the third is refused for about a minute whatever the test's pace.
        let limiter = RateLimiter::new(1, 2);
        assert!(limiter.check("k").is_ok());
        assert!(limiter.check("k").is_ok());
        let wait = limiter.check("k").expect_err("the burst is spent");
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert!(limiter.check("other").is_ok(), "per key");
    }
}

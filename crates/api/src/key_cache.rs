//! A read-through cache of API keys in front of the key store, so that authenticating a request
//! is a hash and a map lookup rather than a database query (it was most of the cost of a cheap
//! request like `GET /tools`).
//!
//! Only keys that were found are cached, for [`KEY_CACHE_TTL`]; expiry is still decided on every
//! request from the cached record, and a revocation made through this server drops the key from
//! the cache at once. A revocation made by another process on the same data directory
//! (`etlworks-agent keys revoke`) takes effect here within the TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use etl_agent::keys::{ApiKey, KeyStore};
use etl_engine::StoreResult;

/// How long a found key is trusted without asking the store again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Keys cached at most; past it the cache starts over (an attacker cannot grow it: only keys
/// that exist are cached).
const MAX_ENTRIES: usize = 10_000;

/// [`KeyStore`] with cached `find_key_by_hash`.
pub struct CachedKeyStore {
    inner: Arc<dyn KeyStore>,
    ttl: Duration,
    /// hash -> (key, when it was read from the store)
    entries: Mutex<HashMap<String, (ApiKey, Instant)>>,
}

impl CachedKeyStore {
    pub fn new(inner: Arc<dyn KeyStore>, ttl: Duration) -> CachedKeyStore {
        CachedKeyStore {
            inner,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ApiKey, Instant)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl KeyStore for CachedKeyStore {
    async fn insert_key(&self, key: &ApiKey) -> StoreResult<()> {
        self.inner.insert_key(key).await
    }

    async fn find_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        if let Some((key, at)) = self.entries().get(hash)
            && at.elapsed() < self.ttl
        {
            return Ok(Some(key.clone()));
        }
        let found = self.inner.find_key_by_hash(hash).await?;
        let mut entries = self.entries();
        match &found {
            Some(key) => {
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
                entries.insert(hash.to_string(), (key.clone(), Instant::now()));
            }
            None => {
                entries.remove(hash);
            }
        }
        Ok(found)
    }

    async fn list_keys(&self, tenant: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        self.inner.list_keys(tenant).await
    }

    async fn revoke_key(
        &self,
        tenant: Option<&str>,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let revoked = self.inner.revoke_key(tenant, id, at).await?;
        self.entries().retain(|_, (key, _)| key.id != id);
        Ok(revoked)
    }

    async fn touch_key(&self, tenant: &str, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        self.inner.touch_key(tenant, id, at).await?;
        // Keep the cached record's last use current, or every request would touch again.
        for (key, _) in self.entries().values_mut() {
            if key.id == id && key.tenant == tenant {
                key.last_used_at = Some(at);
            }
        }
        Ok(())
    }

    async fn count_keys(&self) -> StoreResult<u64> {
        self.inner.count_keys().await
    }
}

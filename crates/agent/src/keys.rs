//! API keys: the entity, the `KeyStore` port a metadata store implements, and the rules around
//! them (issuing, hashing, parsing roles and lifetimes, authenticating a presented key).
//!
//! A key is 256 random alphanumeric characters, the shape the public Etlworks API issues. Only
//! its SHA-256 hash (and an 8-character display prefix) is stored, so a copy of the database
//! gives no usable key; the plain key exists once, in the answer that created it. A key is
//! 256 characters of a 62-letter alphabet (about 1500 bits), so a fast unsalted hash is safe:
//! there is nothing to brute-force, unlike a password.

use async_trait::async_trait;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use etl_engine::host::Role;
use etl_engine::{StoreError, StoreResult};
use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Characters in an issued key.
pub const KEY_LENGTH: usize = 256;
/// Characters of the key kept in clear for display (`keys list` shows `AbCd1234…`).
pub const PREFIX_LENGTH: usize = 8;
/// The tenant of keys created without one, and of the first admin key.
pub const DEFAULT_TENANT: &str = etl_engine::DEFAULT_TENANT;

/// One stored API key. The key itself is not here: only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// Stable id (`key_` + 16 lowercase letters and digits), used to list and revoke.
    pub id: String,
    pub tenant: String,
    /// What the key is for, chosen by whoever created it ("ci", "alice's laptop").
    pub name: String,
    #[serde(serialize_with = "role_str")]
    pub role: Role,
    /// The first characters of the key, so a person can tell keys apart.
    pub prefix: String,
    /// SHA-256 of the whole key, lowercase hex.
    #[serde(skip)]
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

fn role_str<S: serde::Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(role.as_str())
}

impl ApiKey {
    /// `active`, `revoked` or `expired` at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// Where keys live. Implemented by the metadata store (`etl_store::SqliteStore`).
///
/// `find_key_by_hash`, `count_keys` and `list_keys(None)` span tenants on purpose: a presented
/// key is looked up before its tenant is known, the first start asks whether any key exists,
/// and the local operator lists every key. Everything else is scoped by tenant.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Saves a new key; `Conflict` when its id or hash already exists.
    async fn insert_key(&self, key: &ApiKey) -> StoreResult<()>;
    /// The key with this hash, revoked and expired ones included (the caller decides).
    async fn find_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>>;
    /// Keys of one tenant, or of every tenant with `None`, oldest first.
    async fn list_keys(&self, tenant: Option<&str>) -> StoreResult<Vec<ApiKey>>;
    /// Marks the key revoked at `at`; answers false when no unrevoked key has this id (in this
    /// tenant, when one is given).
    async fn revoke_key(
        &self,
        tenant: Option<&str>,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records that the key was used at `at`.
    async fn touch_key(&self, tenant: &str, id: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// How many keys exist in all tenants, revoked ones included.
    async fn count_keys(&self) -> StoreResult<u64>;
}

/// What to create.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub name: String,
    pub role: Role,
    pub tenant: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A freshly created key: the stored record and the plain key, which is never seen again.
#[derive(Clone, Debug)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: String,
}

/// Why a key could not be created or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The request to create a key is wrong (name, role, tenant, lifetime).
    #[error("{0}")]
    Invalid(String),
    /// No usable key: missing, malformed, unknown, revoked or expired (HTTP 401).
    #[error("{0}")]
    Unauthorized(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Parses `admin`, `user` or `readonly` (any case; `read-only` too).
pub fn parse_role(text: &str) -> Result<Role, KeyError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "admin" => Ok(Role::Admin),
        "user" => Ok(Role::User),
        "readonly" | "read-only" | "read_only" => Ok(Role::Readonly),
        other => Err(KeyError::Invalid(format!(
            "unknown role '{other}'; use admin (everything, key management), user (all tools) \
             or readonly (non-agentic tools only)"
        ))),
    }
}

/// Parses a lifetime such as `30d`, `12h`, `90m`, `2w` or `1y` (365 days).
pub fn parse_lifetime(text: &str) -> Result<Duration, KeyError> {
    let t = text.trim();
    let bad = || {
        KeyError::Invalid(format!(
            "cannot read the lifetime '{t}'; write a positive number and a unit, e.g. 90m, 12h, \
             30d, 2w or 1y"
        ))
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    if n <= 0 || n > 100_000 {
        return Err(bad());
    }
    let d = match unit.trim() {
        "m" | "min" | "minute" | "minutes" => Duration::minutes(n),
        "h" | "hour" | "hours" => Duration::hours(n),
        "d" | "day" | "days" => Duration::days(n),
        "w" | "week" | "weeks" => Duration::weeks(n),
        "y" | "year" | "years" => Duration::days(365 * n),
        _ => return Err(bad()),
    };
    Ok(d)
}

/// Checks a tenant id: 1-64 characters of letters, digits, `-`, `_` and `.`.
pub fn check_tenant(tenant: &str) -> Result<(), KeyError> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::Invalid(format!(
            "the tenant '{tenant}' is not valid; use 1-64 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// A new random key: 256 alphanumeric characters from the thread's cryptographic generator.
pub fn generate_secret() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), KEY_LENGTH)
}

/// The stored form of a key: SHA-256, lowercase hex.
pub fn hash_secret(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

fn new_id() -> String {
    let mut rng = rand::rng();
    let tail: String = Alphanumeric
        .sample_string(&mut rng, 16)
        .to_ascii_lowercase();
    format!("key_{tail}")
}

/// Creates a key and stores its hash; the answer carries the plain key, to show once.
pub async fn issue(store: &dyn KeyStore, new: NewKey) -> Result<IssuedKey, KeyError> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(KeyError::Invalid(
            "a key needs a name of 1-100 characters saying what it is for, e.g. 'ci' or \
             'reporting dashboard'"
                .into(),
        ));
    }
    check_tenant(&new.tenant)?;
    // Stores keep microseconds; the answer shows exactly what is stored.
    let now = Utc::now().trunc_subsecs(6);
    if new.expires_at.is_some_and(|e| e <= now) {
        return Err(KeyError::Invalid(
            "the expiry is in the past; give a future time or a lifetime such as 30d".into(),
        ));
    }
    let secret = generate_secret();
    let key = ApiKey {
        id: new_id(),
        tenant: new.tenant,
        name: name.to_string(),
        role: new.role,
        prefix: secret[..PREFIX_LENGTH].to_string(),
        hash: hash_secret(&secret),
        created_at: now,
        expires_at: new.expires_at.map(|e| e.trunc_subsecs(6)),
        revoked_at: None,
        last_used_at: None,
    };
    store.insert_key(&key).await?;
    Ok(IssuedKey { key, secret })
}

/// Whether a presented key has the shape of one we issue, checked before any look-up so junk
/// never reaches the store.
pub fn well_formed(presented: &str) -> bool {
    presented.len() == KEY_LENGTH && presented.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The stored key for a presented one, when it is usable at `now`. The errors say which rule
/// failed without echoing the key.
pub async fn authenticate(
    store: &dyn KeyStore,
    presented: &str,
    now: DateTime<Utc>,
) -> Result<ApiKey, KeyError> {
    if !well_formed(presented) {
        return Err(KeyError::Unauthorized(format!(
            "the API key is malformed: keys are {KEY_LENGTH} letters and digits; send \
             'Authorization: Bearer <key>' with a key from 'etlworks-agent keys create' or \
             <data-dir>/admin.key"
        )));
    }
    let Some(key) = store.find_key_by_hash(&hash_secret(presented)).await? else {
        return Err(KeyError::Unauthorized(
            "the API key is not known to this server; check that it was copied whole, or create \
             one with 'etlworks-agent keys create'"
                .into(),
        ));
    };
    match key.status(now) {
        "revoked" => Err(KeyError::Unauthorized(format!(
            "the API key '{}' ({}…) was revoked; ask an admin for a new key",
            key.name, key.prefix
        ))),
        "expired" => Err(KeyError::Unauthorized(format!(
            "the API key '{}' ({}…) expired at {}; ask an admin for a new key",
            key.name,
            key.prefix,
            key.expires_at
                .map(|e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        ))),
        _ => Ok(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_public_shape_and_differ() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), KEY_LENGTH);
        assert!(well_formed(&a));
        assert_ne!(a, b);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}!", &a[..255])));
    }

    #[test]
    fn roles_and_lifetimes_parse() {
        assert_eq!(parse_role("Admin").unwrap(), Role::Admin);
        assert_eq!(parse_role("read-only").unwrap(), Role::Readonly);
        assert!(
            parse_role("root")
                .unwrap_err()
                .to_string()
                .contains("'root'")
        );
        assert_eq!(parse_lifetime("30d").unwrap(), Duration::days(30));
        assert_eq!(parse_lifetime("12h").unwrap(), Duration::hours(12));
        assert_eq!(parse_lifetime("2w").unwrap(), Duration::weeks(2));
        assert_eq!(parse_lifetime("1y").unwrap(), Duration::days(365));
        for bad in ["", "d", "0d", "-3d", "30", "30x", "1.5d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad} must be refused");
        }
        assert!(check_tenant("acme-eu.1").is_ok());
        assert!(check_tenant("").is_err());
        assert!(check_tenant("a/b").is_err());
    }

    #[test]
    fn status_follows_revocation_then_expiry() {
        let now = Utc::now();
        let mut key = ApiKey {
            id: "key_x".into(),
            tenant: "default".into(),
            name: "t".into(),
            role: Role::User,
            prefix: "abcdefgh".into(),
            hash: String::new(),
            created_at: now,
            expires_at: Some(now + Duration::hours(1)),
            revoked_at: None,
            last_used_at: None,
        };
        assert_eq!(key.status(now), "active");
        assert_eq!(key.status(now + Duration::hours(2)), "expired");
        key.revoked_at = Some(now);
        assert_eq!(key.status(now), "revoked");
        let json = serde_json::to_value(&key).unwrap();
        assert_eq!(json["role"], "user");
        assert!(
            json.get("hash").is_none(),
            "the hash never leaves the store"
        );
    }
}

//! Secret properties: encrypted at rest with ChaCha20-Poly1305, shown as `***` on every way out.
//!
//! The key is 32 random bytes, base64-encoded, either in `ETLWORKS_AGENT_SECRET_KEY` or in a key
//! file in the data directory created with mode 0600 on first use. Losing the key loses the
//! secrets (connections must then be given their passwords again); it is never stored in the
//! metadata database.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use etl_model::{ConnectorSpec, Props};

/// Marks an encrypted value in the store.
const PREFIX: &str = "enc:v1:";
/// What every output shows in place of a secret.
pub const REDACTED: &str = "***";

pub struct Cipher {
    aead: ChaCha20Poly1305,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret key: {0}")]
    Key(String),
    #[error(
        "a stored secret could not be decrypted (was the secret key changed?); set the property again with 'update connection'"
    )]
    Decrypt,
}

impl Cipher {
    pub fn from_key(key: &[u8; 32]) -> Cipher {
        Cipher {
            aead: ChaCha20Poly1305::new(&Key::from(*key)),
        }
    }

    /// From base64 text (the environment variable form).
    pub fn from_base64(text: &str) -> Result<Cipher, SecretError> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|e| SecretError::Key(format!("not valid base64: {e}")))?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            SecretError::Key(format!("must be 32 bytes of base64, got {} bytes", b.len()))
        })?;
        Ok(Cipher::from_key(&key))
    }

    /// Reads the key file, creating it (mode 0600) with a fresh random key when absent.
    pub fn load_or_create(path: &Path) -> Result<Cipher, SecretError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Cipher::from_base64(&text)
                .map_err(|e| SecretError::Key(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                write_private(path, &B64.encode(key)).map_err(|e| {
                    SecretError::Key(format!("cannot create {}: {e}", path.display()))
                })?;
                Ok(Cipher::from_key(&key))
            }
            Err(e) => Err(SecretError::Key(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    pub fn encrypt(&self, plain: &str) -> String {
        let nonce: [u8; 12] = rand::random();
        let sealed = self
            .aead
            .encrypt(&Nonce::from(nonce), plain.as_bytes())
            .expect("ChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", B64.encode(out))
    }

    /// Decrypts a value written by [`Cipher::encrypt`]; a value without the marker is returned
    /// as is (written before it was known to be secret).
    pub fn decrypt(&self, stored: &str) -> Result<String, SecretError> {
        let Some(body) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let bytes = B64.decode(body).map_err(|_| SecretError::Decrypt)?;
        if bytes.len() < 12 {
            return Err(SecretError::Decrypt);
        }
        let (nonce, sealed) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| SecretError::Decrypt)?;
        let plain = self
            .aead
            .decrypt(&Nonce::from(nonce), sealed)
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Decrypt)
    }

    /// Encrypts the spec's secret properties in place (already encrypted ones are left alone).
    pub fn seal(&self, spec: &ConnectorSpec, props: &mut Props) {
        for (key, value) in props.0.iter_mut() {
            if is_secret(Some(spec), key) && !value.starts_with(PREFIX) && !value.is_empty() {
                *value = self.encrypt(value);
            }
        }
    }

    /// A copy with every encrypted property decrypted, for handing to a connector.
    pub fn open(&self, props: &Props) -> Result<Props, SecretError> {
        let mut out = props.clone();
        for value in out.0.values_mut() {
            if value.starts_with(PREFIX) {
                *value = self.decrypt(value)?;
            }
        }
        Ok(out)
    }
}

/// A copy with secret properties replaced by `***`: the only form that leaves the engine.
pub fn redact(spec: Option<&ConnectorSpec>, props: &Props) -> Props {
    let mut out = props.clone();
    for (key, value) in out.0.iter_mut() {
        let secret = spec.is_some_and(|s| s.is_secret(key))
            || value.starts_with(PREFIX)
            || looks_secret(key);
        if secret && !value.is_empty() {
            *value = REDACTED.to_string();
        }
    }
    out
}

/// Whether a property holds a secret: the connector's spec says so, or its name does.
pub fn is_secret(spec: Option<&ConnectorSpec>, key: &str) -> bool {
    spec.is_some_and(|s| s.is_secret(key)) || looks_secret(key)
}

/// Property names that hold secrets whatever the connector says (defence in depth for
/// `header.Authorization`, `header.X-Api-Key`, `query.api_key` and the like).
pub fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    [
        "password",
        "secret",
        "token",
        "api_key",
        "apikey",
        "authorization",
        "private_key",
        "credential",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let c = Cipher::from_key(&[7u8; 32]);
        let sealed = c.encrypt("hunter2");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(c.decrypt(&sealed).unwrap(), "hunter2");
        assert_ne!(c.encrypt("hunter2"), sealed, "nonces must differ");
        let other = Cipher::from_key(&[8u8; 32]);
        assert!(matches!(other.decrypt(&sealed), Err(SecretError::Decrypt)));
        assert_eq!(c.decrypt("plain").unwrap(), "plain");
    }

    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let a = Cipher::load_or_create(&path).unwrap();
        let sealed = a.encrypt("x");
        let b = Cipher::load_or_create(&path).unwrap();
        assert_eq!(b.decrypt(&sealed).unwrap(), "x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

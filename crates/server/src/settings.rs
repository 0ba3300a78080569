//! Flags and environment resolved into settings the rest of the binary trusts.

use std::path::PathBuf;

use anyhow::{Result, bail};

#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub max_runs: usize,
    /// Base64 key from `ETLWORKS_AGENT_SECRET_KEY`; otherwise the key file in the data directory.
    pub secret_key: Option<String>,
}

impl Settings {
    pub fn resolve(data_dir: PathBuf, max_runs: usize) -> Result<Settings> {
        if max_runs == 0 {
            bail!("--max-runs must be at least 1");
        }
        let data_dir = if data_dir.is_absolute() {
            data_dir
        } else {
            std::env::current_dir()?.join(data_dir)
        };
        let secret_key = std::env::var("ETLWORKS_AGENT_SECRET_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty());
        Ok(Settings {
            data_dir,
            max_runs,
            secret_key,
        })
    }
}

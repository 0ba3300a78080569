//! Wiring shared by the binary and its end-to-end tests: settings, the connector registry and
//! opening an engine on a data directory. Not a general-purpose library.

mod settings;

use std::sync::Arc;

use anyhow::{Context, Result};
use etl_engine::secrets::Cipher;
use etl_engine::{Engine, EngineConfig, Registry};

pub use settings::Settings;

/// Every connector this build offers.
pub fn registry() -> Registry {
    Registry::new([
        Arc::new(etl_http::HttpConnector::new()) as Arc<dyn etl_model::Connector>,
        Arc::new(etl_file::FileConnector::new()),
        Arc::new(etl_sql::SqliteConnector::new()),
        Arc::new(etl_sql::PostgresConnector::new()),
        Arc::new(etl_sql::MysqlConnector::new()),
    ])
}

/// Opens the store, loads the secret key and builds the engine with every connector.
pub async fn open_engine(settings: &Settings) -> Result<Engine> {
    etl_http::ensure_crypto_provider();
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "creating the data directory {}",
            settings.data_dir.display()
        )
    })?;
    let store = etl_store::SqliteStore::open(&settings.data_dir.join("metadata.db"))
        .await
        .with_context(|| {
            format!(
                "opening the metadata store in {}",
                settings.data_dir.display()
            )
        })?;
    let cipher = match &settings.secret_key {
        Some(key) => Cipher::from_base64(key).context("ETLWORKS_AGENT_SECRET_KEY")?,
        None => Cipher::load_or_create(&settings.data_dir.join("secret.key"))?,
    };
    let registry = registry();
    let mut config = EngineConfig::new(&settings.data_dir);
    config.max_concurrent_runs = settings.max_runs;
    let engine = Engine::new(Arc::new(store), registry, cipher, config);
    engine.start().await?;
    Ok(engine)
}

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

/// Everything a process serves: the engine, the knowledge base and template gallery, the host
/// language over all of them, and the tools.
#[derive(Clone)]
pub struct App {
    pub engine: Engine,
    pub library: Arc<etl_agent::Library>,
    pub host: etl_engine::host::Host,
    pub tools: etl_agent::tools::ToolRegistry,
}

/// Opens the engine, brings the bundled documentation into the knowledge base (only changed
/// files are re-indexed) and loads the template gallery.
pub async fn open_app(settings: &Settings) -> Result<App> {
    let engine = open_engine(settings).await?;
    let kb_dir = settings.data_dir.join("kb");
    let kb = tokio::task::spawn_blocking(move || -> Result<etl_kb::KnowledgeBase> {
        let kb = etl_kb::KnowledgeBase::open(&kb_dir)
            .with_context(|| format!("opening the knowledge base in {}", kb_dir.display()))?;
        let report = kb
            .sync_bundled(&etl_kb::bundled_docs())
            .context("indexing the bundled documentation")?;
        if report.added + report.updated + report.removed > 0 {
            tracing::info!(?report, "knowledge base updated");
        }
        Ok(kb)
    })
    .await
    .context("indexing the knowledge base")??;
    let gallery = etl_templates::Gallery::bundled().context("loading the bundled templates")?;
    gallery
        .check_connectors(engine.registry())
        .context("checking the bundled templates")?;
    let library = Arc::new(etl_agent::Library::new(
        engine.clone(),
        Arc::new(kb),
        Arc::new(gallery),
    ));
    let host = etl_engine::host::Host::with_extensions(engine.clone(), library.clone());
    let tools = etl_agent::tools::ToolRegistry::new(
        etl_agent::tools::ToolEnv {
            host: host.clone(),
            library: library.clone(),
        },
        Vec::new(),
    );
    Ok(App {
        engine,
        library,
        host,
        tools,
    })
}

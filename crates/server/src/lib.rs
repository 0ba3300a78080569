//! Wiring shared by the binary and its end-to-end tests: settings, the connector registry,
//! opening an engine (and the API keys, sessions and usage records in the same store) on a
//! data directory, the model behind chat (`llm`: flags, environment and config file resolved
//! into a provider, agent settings and usage caps), and the first admin key of `serve`. Not a
//! general-purpose library.

pub mod llm;
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

/// Opens the metadata store in the data directory (creating the directory when missing).
pub async fn open_store(settings: &Settings) -> Result<etl_store::SqliteStore> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "creating the data directory {}",
            settings.data_dir.display()
        )
    })?;
    etl_store::SqliteStore::open(&settings.data_dir.join("metadata.db"))
        .await
        .with_context(|| {
            format!(
                "opening the metadata store in {}",
                settings.data_dir.display()
            )
        })
}

/// Opens the store, loads the secret key and builds the engine with every connector.
pub async fn open_engine(settings: &Settings) -> Result<Engine> {
    let store = open_store(settings).await?;
    engine_on(settings, store).await
}

/// Builds and starts the engine on an opened store.
async fn engine_on(settings: &Settings, store: etl_store::SqliteStore) -> Result<Engine> {
    etl_http::ensure_crypto_provider();
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
    /// The API keys, in the same metadata store as the engine's data.
    pub keys: Arc<dyn etl_agent::keys::KeyStore>,
    /// Chat sessions, in the same metadata store.
    pub sessions: Arc<dyn etl_agent::sessions::SessionStore>,
    /// AI usage records, in the same metadata store.
    pub usage: Arc<dyn etl_agent::usage::UsageStore>,
    /// The agent loop over the built-in planner and the tools; `serve` replaces it with
    /// [`App::agent_for`] when an LLM is configured.
    pub agent: etl_agent::run::Agent,
}

impl App {
    /// The agent loop over the chosen model, with its settings, and the same tools.
    pub fn agent_for(&self, chosen: &llm::Chosen) -> etl_agent::run::Agent {
        etl_agent::run::Agent::with_config(
            chosen.model.clone(),
            self.tools.clone(),
            chosen.agent.clone(),
        )
    }
}

/// Opens the engine, brings the bundled documentation into the knowledge base (only changed
/// files are re-indexed) and loads the template gallery.
pub async fn open_app(settings: &Settings) -> Result<App> {
    let store = open_store(settings).await?;
    let keys: Arc<dyn etl_agent::keys::KeyStore> = Arc::new(store.clone());
    let sessions: Arc<dyn etl_agent::sessions::SessionStore> = Arc::new(store.clone());
    let usage: Arc<dyn etl_agent::usage::UsageStore> = Arc::new(store.clone());
    let engine = engine_on(settings, store).await?;
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
    // The built-in planner is the model until an LLM provider is configured.
    let agent = etl_agent::run::Agent::with_config(
        Arc::new(etl_agent::planner::Planner::new()),
        tools.clone(),
        etl_agent::run::AgentConfig {
            context_tokens: Some(llm::DEFAULT_BUILTIN_CONTEXT),
            ..etl_agent::run::AgentConfig::default()
        },
    );
    Ok(App {
        engine,
        library,
        host,
        tools,
        keys,
        sessions,
        usage,
        agent,
    })
}

/// The file the first admin key is written to, in the data directory.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// On a store without any key (the very first start), creates an admin key for the default
/// tenant and writes it to `<data-dir>/admin.key`, readable by this user only. Answers the new
/// key, or `None` when keys already exist (then nothing is written: a revoked or rotated first
/// key must not come back).
pub async fn ensure_first_admin_key(
    keys: &dyn etl_agent::keys::KeyStore,
    data_dir: &std::path::Path,
) -> Result<Option<etl_agent::keys::IssuedKey>> {
    if keys.count_keys().await? > 0 {
        return Ok(None);
    }
    let issued = etl_agent::keys::issue(
        keys,
        etl_agent::keys::NewKey {
            name: "admin (first start)".into(),
            role: etl_engine::host::Role::Admin,
            tenant: etl_agent::keys::DEFAULT_TENANT.into(),
            expires_at: None,
        },
    )
    .await
    .context("creating the first admin key")?;
    write_private(&data_dir.join(ADMIN_KEY_FILE), issued.secret.as_bytes())?;
    Ok(Some(issued))
}

/// Writes a file only its owner can read (mode 0600 on Unix), through a temporary file and a
/// rename so a reader never sees half a key.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

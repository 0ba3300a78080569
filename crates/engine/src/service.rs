//! The engine's operations on connections, flows and runs, as every front end calls them: the
//! host language, the agent's tools and the HTTP API all go through here, so validation,
//! secrets and tenancy are enforced in one place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use etl_model::{
    Batch, ConnectionConfig, ConnectorSpec, ObjectInfo, Props, RunContext, SourceRequest, WriteMode,
};

use crate::entity::*;
use crate::error::{EngineError, EngineResult};
use crate::expr::Expr;
use crate::ports::Store;
use crate::registry::Registry;
use crate::runtime::Runtime;
use crate::secrets::{Cipher, redact};

/// Settings the binary resolves from flags and environment.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// Runs executing at once, across flows.
    pub max_concurrent_runs: usize,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            max_concurrent_runs: 4,
        }
    }
}

/// Why a run whose process died is marked failed.
pub(crate) const STALE_RUN: &str =
    "the process running this run stopped (no heartbeat for a minute); run the flow again";

/// The name of the connection that exists from the first start.
pub const WAREHOUSE: &str = "warehouse";

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub cipher: Cipher,
    pub config: EngineConfig,
    pub runtime: Runtime,
}

/// Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

/// Changes to a connection: properties to set and to remove.
#[derive(Clone, Debug, Default)]
pub struct ConnectionChanges {
    pub set: Props,
    pub unset: Vec<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Registry,
        cipher: Cipher,
        config: EngineConfig,
    ) -> Engine {
        let runtime = Runtime::new(config.max_concurrent_runs);
        Engine {
            inner: Arc::new(Inner {
                store,
                registry,
                cipher,
                config,
                runtime,
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    /// Start-up housekeeping: runs a dead process left unfinished are marked failed, and the
    /// tenant's `warehouse` connection exists.
    pub async fn start(&self) -> EngineResult<()> {
        let n = self
            .inner
            .store
            .fail_unfinished_runs(STALE_RUN, crate::runtime::live_after())
            .await?;
        if n > 0 {
            tracing::warn!(
                runs = n,
                "marked runs interrupted by a previous shutdown as failed"
            );
        }
        self.ensure_warehouse(DEFAULT_TENANT).await
    }

    /// Creates the tenant's default SQLite `warehouse` connection when it does not exist.
    pub async fn ensure_warehouse(&self, tenant: &str) -> EngineResult<()> {
        if self
            .inner
            .store
            .get_connection(tenant, WAREHOUSE)
            .await?
            .is_some()
        {
            return Ok(());
        }
        if self.inner.registry.spec("sqlite").is_none() {
            return Ok(());
        }
        let file = if tenant == DEFAULT_TENANT {
            self.data_dir().join("warehouse.db")
        } else {
            self.data_dir()
                .join("tenants")
                .join(sanitize(tenant))
                .join("warehouse.db")
        };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                EngineError::internal(format!(
                    "cannot create the warehouse folder {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let props = Props::new().with("path", file.to_string_lossy());
        match self
            .create_connection(
                tenant,
                WAREHOUSE,
                "sqlite",
                props,
                "The built-in SQLite database in the data directory.",
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == "conflict" => Ok(()),
            Err(e) => Err(e),
        }
    }

    // ---- connections -------------------------------------------------------------------

    fn spec_of(&self, type_name: &str) -> EngineResult<&'static ConnectorSpec> {
        Ok(self.inner.registry.get(type_name)?.spec())
    }

    fn check_name(kind: &str, name: &str) -> EngineResult<()> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if ok {
            Ok(())
        } else {
            Err(EngineError::invalid(format!(
                "'{name}' is not a valid {kind} name; use letters, digits, '_', '-' or '.' (at most 128 characters)"
            )))
        }
    }

    /// The connection as stored (secrets encrypted); `not_found` with a hint when absent.
    pub async fn connection_raw(&self, tenant: &str, name: &str) -> EngineResult<Connection> {
        self.inner
            .store
            .get_connection(tenant, name)
            .await?
            .ok_or_else(|| {
                EngineError::not_found(format!(
                    "unknown connection '{name}'; try 'list connections'"
                ))
            })
    }

    /// The connection as shown to anyone: secrets replaced by `***`.
    pub fn redacted(&self, mut conn: Connection) -> Connection {
        conn.props = redact(self.inner.registry.spec(&conn.type_name), &conn.props);
        conn
    }

    pub async fn list_connections(&self, tenant: &str) -> EngineResult<Vec<Connection>> {
        let list = self.inner.store.list_connections(tenant).await?;
        Ok(list.into_iter().map(|c| self.redacted(c)).collect())
    }

    pub async fn get_connection(&self, tenant: &str, name: &str) -> EngineResult<Connection> {
        Ok(self.redacted(self.connection_raw(tenant, name).await?))
    }

    fn validation_error(what: &str, errors: Vec<String>) -> EngineResult<()> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(EngineError::invalid(format!(
                "{what}: {}",
                errors.join("; ")
            )))
        }
    }

    pub async fn create_connection(
        &self,
        tenant: &str,
        name: &str,
        type_name: &str,
        mut props: Props,
        description: &str,
    ) -> EngineResult<Connection> {
        Self::check_name("connection", name)?;
        let spec = self.spec_of(type_name)?;
        Self::validation_error(
            &format!("connection '{name}' ({})", spec.type_name),
            spec.validate_connection(&props),
        )?;
        if self
            .inner
            .store
            .get_connection(tenant, name)
            .await?
            .is_some()
        {
            return Err(EngineError::conflict(format!(
                "a connection named '{name}' already exists; choose another name or use 'update connection {name}'"
            )));
        }
        self.inner.cipher.seal(spec, &mut props);
        let now = Utc::now();
        let conn = Connection {
            id: new_id(),
            tenant: tenant.to_string(),
            name: name.to_string(),
            type_name: spec.type_name.to_string(),
            props,
            tags: Vec::new(),
            description: description.to_string(),
            created_at: now,
            updated_at: now,
        };
        self.inner.store.insert_connection(&conn).await?;
        Ok(self.redacted(conn))
    }

    pub async fn update_connection(
        &self,
        tenant: &str,
        name: &str,
        changes: ConnectionChanges,
    ) -> EngineResult<Connection> {
        let mut conn = self.connection_raw(tenant, name).await?;
        let spec = self.spec_of(&conn.type_name)?;
        for key in &changes.unset {
            if conn.props.0.remove(key).is_none() {
                return Err(EngineError::invalid(format!(
                    "connection '{name}' has no property '{key}' to remove"
                )));
            }
        }
        conn.props.0.extend(changes.set.0);
        // Validate with secrets in plain form so type checks apply to what the user gave.
        let check = self.inner.cipher.open(&conn.props)?;
        Self::validation_error(
            &format!("connection '{name}' ({})", spec.type_name),
            spec.validate_connection(&check),
        )?;
        self.inner.cipher.seal(spec, &mut conn.props);
        if let Some(d) = changes.description {
            conn.description = d;
        }
        if let Some(t) = changes.tags {
            conn.tags = t;
        }
        conn.updated_at = Utc::now();
        self.inner.store.update_connection(&conn).await?;
        Ok(self.redacted(conn))
    }

    pub async fn delete_connection(&self, tenant: &str, name: &str) -> EngineResult<()> {
        self.connection_raw(tenant, name).await?;
        let users: Vec<String> = self
            .inner
            .store
            .list_flows(tenant)
            .await?
            .into_iter()
            .filter(|f| f.spec.source.connection == name || f.spec.destination.connection == name)
            .map(|f| f.name)
            .collect();
        if !users.is_empty() {
            return Err(EngineError::conflict(format!(
                "connection '{name}' is used by flow(s) {}; delete or change those flows first",
                users.join(", ")
            )));
        }
        self.inner.store.delete_connection(tenant, name).await?;
        Ok(())
    }

    /// The connection with secrets decrypted, for a connector.
    pub(crate) async fn resolve(
        &self,
        tenant: &str,
        name: &str,
    ) -> EngineResult<(ConnectionConfig, Arc<dyn etl_model::Connector>)> {
        let conn = self.connection_raw(tenant, name).await?;
        let connector = self.inner.registry.get(&conn.type_name)?.clone();
        let props = self.inner.cipher.open(&conn.props)?;
        Ok((
            ConnectionConfig {
                name: conn.name,
                type_name: conn.type_name,
                props,
            },
            connector,
        ))
    }

    pub async fn test_connection(&self, tenant: &str, name: &str) -> EngineResult<String> {
        let (cfg, connector) = self.resolve(tenant, name).await?;
        Ok(connector.test(&cfg).await?)
    }

    pub async fn list_objects(&self, tenant: &str, name: &str) -> EngineResult<Vec<ObjectInfo>> {
        let (cfg, connector) = self.resolve(tenant, name).await?;
        Ok(connector.list_objects(&cfg).await?)
    }

    /// The first `limit` rows of an object, read exactly as a flow source would read them.
    pub async fn preview(
        &self,
        tenant: &str,
        name: &str,
        object: &str,
        options: Props,
        limit: usize,
    ) -> EngineResult<Batch> {
        let (cfg, connector) = self.resolve(tenant, name).await?;
        let spec = connector.spec();
        if !spec.can_read {
            return Err(EngineError::invalid(format!(
                "a {} connection cannot be read from",
                spec.type_name
            )));
        }
        Self::validation_error("preview options", spec.validate_source(&options))?;
        let request = SourceRequest {
            object: object.to_string(),
            options,
            incremental: None,
            batch_size: limit.max(1),
        };
        let ctx = RunContext::detached();
        let mut source = connector.open_source(&cfg, request, &ctx).await?;
        let mut batch = source.next_batch().await?.unwrap_or_default();
        batch.rows.truncate(limit);
        Ok(batch)
    }

    pub async fn query(
        &self,
        tenant: &str,
        name: &str,
        sql: &str,
        limit: usize,
    ) -> EngineResult<Batch> {
        let (cfg, connector) = self.resolve(tenant, name).await?;
        Ok(connector.query(&cfg, sql, limit).await?)
    }

    // ---- flows -------------------------------------------------------------------------

    pub async fn flow(&self, tenant: &str, name_or_id: &str) -> EngineResult<Flow> {
        self.inner
            .store
            .get_flow(tenant, name_or_id)
            .await?
            .ok_or_else(|| {
                EngineError::not_found(format!("unknown flow '{name_or_id}'; try 'list flows'"))
            })
    }

    pub async fn list_flows(&self, tenant: &str) -> EngineResult<Vec<Flow>> {
        Ok(self.inner.store.list_flows(tenant).await?)
    }

    /// Checks a flow spec against the connections and connector specs; reports every problem.
    pub async fn validate_flow(&self, tenant: &str, spec: &FlowSpec) -> EngineResult<()> {
        let mut errors = Vec::new();
        for (side, ep, reading) in [
            ("source", &spec.source, true),
            ("destination", &spec.destination, false),
        ] {
            if ep.connection.is_empty() {
                errors.push(format!(
                    "{side}: no connection given (e.g. {side}=warehouse)"
                ));
                continue;
            }
            let conn = match self
                .inner
                .store
                .get_connection(tenant, &ep.connection)
                .await?
            {
                Some(c) => c,
                None => {
                    errors.push(format!(
                        "{side}: unknown connection '{}'; try 'list connections'",
                        ep.connection
                    ));
                    continue;
                }
            };
            let Ok(connector) = self.inner.registry.get(&conn.type_name) else {
                errors.push(format!(
                    "{side}: connection '{}' has unknown type '{}'",
                    conn.name, conn.type_name
                ));
                continue;
            };
            let cs = connector.spec();
            if reading && !cs.can_read {
                errors.push(format!(
                    "{side}: a {} connection cannot be read from",
                    cs.type_name
                ));
            }
            if !reading && !cs.can_write {
                errors.push(format!(
                    "{side}: a {} connection cannot be written to; choose a database or file connection (e.g. destination=warehouse)",
                    cs.type_name
                ));
            }
            let errs = if reading {
                cs.validate_source(&ep.options)
            } else {
                cs.validate_destination(&ep.options)
            };
            errors.extend(errs.into_iter().map(|e| format!("{side} option {e}")));
            let has_query = reading && ep.options.get("query").is_some();
            if ep.object.trim().is_empty() && !has_query {
                let what = if reading {
                    cs.source_object
                } else {
                    cs.destination_object
                };
                let key = if reading { "object" } else { "target" };
                errors.push(format!("{side}: no {key} given ({what})"));
            }
        }
        if spec.mode == WriteMode::Merge && spec.keys.is_empty() {
            errors.push("mode=merge needs key columns, e.g. keys=id".into());
        }
        if let Some(f) = &spec.mapping.filter
            && let Err(e) = Expr::parse(f)
        {
            errors.push(format!("filter '{f}': {e}"));
        }
        if spec.batch_size == Some(0) {
            errors.push("batch_size must be at least 1".into());
        }
        Self::validation_error("invalid flow", errors)
    }

    pub async fn create_flow(
        &self,
        tenant: &str,
        name: &str,
        spec: FlowSpec,
        description: &str,
    ) -> EngineResult<Flow> {
        Self::check_name("flow", name)?;
        self.validate_flow(tenant, &spec).await?;
        if self.inner.store.get_flow(tenant, name).await?.is_some() {
            return Err(EngineError::conflict(format!(
                "a flow named '{name}' already exists; choose another name or use 'update flow {name}'"
            )));
        }
        let now = Utc::now();
        let flow = Flow {
            id: new_id(),
            tenant: tenant.to_string(),
            name: name.to_string(),
            description: description.to_string(),
            spec,
            created_at: now,
            updated_at: now,
        };
        self.inner.store.insert_flow(&flow).await?;
        Ok(flow)
    }

    pub async fn update_flow(&self, tenant: &str, mut flow: Flow) -> EngineResult<Flow> {
        self.validate_flow(tenant, &flow.spec).await?;
        flow.updated_at = Utc::now();
        self.inner.store.update_flow(&flow).await?;
        Ok(flow)
    }

    pub async fn delete_flow(&self, tenant: &str, name: &str) -> EngineResult<Flow> {
        let flow = self.flow(tenant, name).await?;
        if let Some(run_id) = self.inner.runtime.running_run_of(&flow.id) {
            return Err(EngineError::busy(format!(
                "flow '{}' is running (run {run_id}); stop it with 'stop flow {}' first",
                flow.name, flow.name
            )));
        }
        self.inner.store.delete_flow(tenant, &flow.id).await?;
        Ok(flow)
    }

    // ---- runs --------------------------------------------------------------------------

    pub async fn get_run(&self, tenant: &str, run_id: &str) -> EngineResult<Run> {
        self.inner
            .store
            .get_run(tenant, run_id)
            .await?
            .ok_or_else(|| {
                EngineError::not_found(format!("unknown run '{run_id}'; try 'list runs'"))
            })
    }

    pub async fn list_runs(
        &self,
        tenant: &str,
        flow: Option<&str>,
        status: Option<RunStatus>,
        limit: usize,
    ) -> EngineResult<Vec<Run>> {
        let flow_id = match flow {
            Some(f) => Some(self.flow(tenant, f).await?.id),
            None => None,
        };
        let q = crate::ports::RunQuery {
            flow_id,
            status,
            limit,
        };
        Ok(self.inner.store.list_runs(tenant, &q).await?)
    }

    /// The latest run of a flow, if any.
    pub async fn last_run(&self, tenant: &str, flow: &Flow) -> EngineResult<Option<Run>> {
        let q = crate::ports::RunQuery {
            flow_id: Some(flow.id.clone()),
            status: None,
            limit: 1,
        };
        Ok(self
            .inner
            .store
            .list_runs(tenant, &q)
            .await?
            .into_iter()
            .next())
    }

    pub async fn run_logs(
        &self,
        tenant: &str,
        run_id: &str,
        tail: usize,
    ) -> EngineResult<Vec<LogLine>> {
        Ok(self.inner.store.run_logs(tenant, run_id, tail).await?)
    }
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A tenant id made safe as a directory name.
fn sanitize(tenant: &str) -> String {
    tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

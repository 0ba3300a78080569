//! Connection settings, the per-connector pool cache, and turning driver errors into messages a
//! person can act on (which server, which login, what to change).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use etl_model::{ConnectionConfig, ConnectorError, ErrorKind, Props};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

use crate::dialect::{Dialect, TableRef};

/// Connections per pool: flows read or write one stream at a time, and the server shares the
/// pool between runs, so a few connections are plenty and spare the database.
const POOL_SIZE: u32 = 4;

/// A pool of one of the three kinds.
#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    Mysql(MySqlPool),
}

/// A connected database: its pool plus what messages and SQL need to know about it.
#[derive(Clone)]
pub(crate) struct Db {
    pub pool: Pool,
    pub dialect: Dialect,
    /// "PostgreSQL at 127.0.0.1:5432, database 'test'": names the server in every message.
    pub label: String,
    /// The schema unqualified tables live in (PostgreSQL only; MySQL uses the database).
    pub schema: Option<String>,
    /// SQLite: how to open another connection to the same file.
    sqlite: Option<SqliteConnectOptions>,
}

impl Db {
    /// The handle a sink writes through. SQLite gets its own single connection: another
    /// connection's cached schema can miss an index or column the sink just created (SQLite
    /// checks ON CONFLICT targets when preparing), and SQLite has one writer anyway.
    pub fn dedicated(&self) -> Db {
        match &self.sqlite {
            Some(opts) => Db {
                pool: Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_lazy_with(opts.clone()),
                ),
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// The table a flow names, qualified with the connection's default schema when it has none.
    pub fn table(&self, object: &str) -> Result<TableRef, ConnectorError> {
        let mut t = TableRef::parse(object)?;
        if t.schema.is_none() && self.dialect == Dialect::Postgres {
            t.schema = self.schema.clone();
        }
        Ok(t)
    }

    /// Runs one statement that returns no rows.
    pub async fn execute(&self, sql: String) -> Result<u64, sqlx::Error> {
        let q = AssertSqlSafe(sql);
        Ok(match &self.pool {
            Pool::Sqlite(p) => sqlx::query(q).execute(p).await?.rows_affected(),
            Pool::Postgres(p) => sqlx::query(q).execute(p).await?.rows_affected(),
            Pool::Mysql(p) => sqlx::query(q).execute(p).await?.rows_affected(),
        })
    }

    /// Runs a catalogue query whose columns are all text (the SQL casts them), binding `binds`
    /// as text parameters. Only for small metadata answers.
    pub async fn text_rows(
        &self,
        sql: String,
        binds: &[Option<&str>],
    ) -> Result<Vec<Vec<Option<String>>>, sqlx::Error> {
        let q = AssertSqlSafe(sql);
        let mut out = Vec::new();
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut query = sqlx::query(q);
                for b in binds {
                    query = query.bind(*b);
                }
                for row in query.fetch_all(p).await? {
                    out.push(
                        (0..row.len())
                            .map(|i| row.try_get_unchecked::<Option<String>, _>(i))
                            .collect::<Result<_, _>>()?,
                    );
                }
            }
            Pool::Postgres(p) => {
                let mut query = sqlx::query(q);
                for b in binds {
                    query = query.bind(*b);
                }
                for row in query.fetch_all(p).await? {
                    out.push(
                        (0..row.len())
                            .map(|i| row.try_get::<Option<String>, _>(i))
                            .collect::<Result<_, _>>()?,
                    );
                }
            }
            Pool::Mysql(p) => {
                let mut query = sqlx::query(q);
                for b in binds {
                    query = query.bind(*b);
                }
                for row in query.fetch_all(p).await? {
                    out.push(
                        (0..row.len())
                            .map(|i| row.try_get_unchecked::<Option<String>, _>(i))
                            .collect::<Result<_, _>>()?,
                    );
                }
            }
        }
        Ok(out)
    }

    /// Turns a driver error during work (not connecting) into a connector error of `kind`,
    /// prefixed with what was being done. Lost connections are reported as connect errors.
    pub fn error(&self, kind: ErrorKind, doing: &str, e: sqlx::Error) -> ConnectorError {
        match &e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => {
                connect_error(&self.label, None, Duration::ZERO, e).context(doing)
            }
            _ => ConnectorError::new(kind, format!("{doing}: {}", describe(self.dialect, &e))),
        }
    }
}

/// The database's own words for an error, with its error code when there is one.
pub(crate) fn describe(dialect: Dialect, e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) if dialect == Dialect::Postgres => {
                // The context names the row of a failed COPY ("COPY t, line 3, column id: ...").
                let at = db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|pg| pg.r#where())
                    .map(|w| format!(", at {w}"))
                    .unwrap_or_default();
                format!(
                    "{} said: {} (SQLSTATE {code}){at}",
                    dialect.title(),
                    db.message()
                )
            }
            Some(code) => format!("{} said: {} (code {code})", dialect.title(), db.message()),
            None => format!("{} said: {}", dialect.title(), db.message()),
        },
        other => other.to_string(),
    }
}

/// A connect-phase failure, explained: unreachable server, refused login, missing database,
/// TLS, timeout. The password never appears; the user name does, since it is part of the fix.
fn connect_error(
    label: &str,
    user: Option<&str>,
    timeout: Duration,
    e: sqlx::Error,
) -> ConnectorError {
    let msg = match &e {
        sqlx::Error::Io(io) => format!(
            "could not reach {label}: {io}; check that the server is running, that host and port are right, and that no firewall blocks the connection"
        ),
        sqlx::Error::Tls(t) => format!(
            "the TLS handshake with {label} failed: {t}; if the server has no TLS set the SSL mode to disable(d), otherwise check its certificate"
        ),
        sqlx::Error::PoolTimedOut => format!(
            "timed out after {}s connecting to {label}; check host and port, or raise connect_timeout if the server is slow to answer",
            timeout.as_secs()
        ),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let who = user.map(|u| format!(" for user '{u}'")).unwrap_or_default();
            match code.as_str() {
                "28P01" | "28000" | "1045" | "1044" | "1698" => format!(
                    "{label} refused the login{who}: {}; check the user and password properties",
                    db.message()
                ),
                "3D000" | "1049" => format!(
                    "{label}: {}; create the database or fix the 'database' property",
                    db.message()
                ),
                _ => format!("{label} refused the connection: {}", db.message()),
            }
        }
        sqlx::Error::Configuration(c) => format!("cannot connect to {label}: {c}"),
        other => format!("could not connect to {label}: {other}"),
    };
    ConnectorError::connect(msg)
}

/// Pools by connection settings. Runs reuse a pool as long as the settings stay the same; a
/// changed password or host gives a new key and so a new pool.
#[derive(Default)]
pub(crate) struct Pools {
    pools: Mutex<HashMap<String, Db>>,
}

impl Pools {
    pub async fn get(
        &self,
        dialect: Dialect,
        conn: &ConnectionConfig,
    ) -> Result<Db, ConnectorError> {
        // The key holds the secret only in memory; it is never logged or shown.
        let key = format!("{dialect:?}|{:?}", conn.props.0);
        if let Some(db) = self.lock().get(&key) {
            return Ok(db.clone());
        }
        let db = connect(dialect, &conn.props).await?;
        self.lock().insert(key, db.clone());
        Ok(db)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Db>> {
        // A panic while holding the lock leaves a plain map, still consistent.
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn connect(dialect: Dialect, props: &Props) -> Result<Db, ConnectorError> {
    match dialect {
        Dialect::Sqlite => connect_sqlite(props).await,
        Dialect::Postgres => connect_postgres(props).await,
        Dialect::Mysql => connect_mysql(props).await,
    }
}

async fn connect_sqlite(props: &Props) -> Result<Db, ConnectorError> {
    let path = props.required("path")?;
    let busy = props
        .duration("busy_timeout")?
        .unwrap_or(Duration::from_secs(5));
    let label = format!("SQLite database {path}");
    if let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        return Err(ConnectorError::connect(format!(
            "cannot open {label}: the directory {} does not exist; create it or fix the 'path' property",
            dir.display()
        )));
    }
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(busy);
    let pool = SqlitePoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(busy + Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .connect_with(opts.clone())
        .await
        .map_err(|e| connect_error(&label, None, busy, e))?;
    Ok(Db {
        pool: Pool::Sqlite(pool),
        dialect: Dialect::Sqlite,
        label,
        schema: None,
        sqlite: Some(opts),
    })
}

fn port(props: &Props) -> Result<Option<u16>, ConnectorError> {
    props
        .u64("port")?
        .map(|p| {
            u16::try_from(p).map_err(|_| {
                ConnectorError::config(format!("property 'port' must be 1-65535, got {p}"))
            })
        })
        .transpose()
}

fn timeout(props: &Props) -> Result<Duration, ConnectorError> {
    Ok(props
        .duration("connect_timeout")?
        .unwrap_or(Duration::from_secs(10)))
}

async fn connect_postgres(props: &Props) -> Result<Db, ConnectorError> {
    let mut opts = match props.get("url") {
        Some(url) => PgConnectOptions::from_str(url).map_err(|e| {
            ConnectorError::config(format!(
                "property 'url' is not a valid postgres:// URL ({e}); write postgres://user:password@host:5432/database"
            ))
        })?,
        None => PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(5432)
            .username("postgres"),
    };
    if let Some(h) = props.get("host") {
        opts = opts.host(h);
    }
    if let Some(p) = port(props)? {
        opts = opts.port(p);
    }
    if let Some(u) = props.get("user") {
        opts = opts.username(u);
    }
    if let Some(p) = props.get("password") {
        opts = opts.password(p);
    }
    match props.get("database") {
        Some(d) => opts = opts.database(d),
        None if opts.get_database().is_none() => {
            return Err(ConnectorError::config(
                "missing required property 'database' (the database to connect to, e.g. database=analytics), or give a url",
            ));
        }
        None => {}
    }
    if props.get("sslmode").is_some() || props.get("url").is_none() {
        opts = opts.ssl_mode(
            match props.choice("sslmode", &["disable", "prefer", "require"], "prefer")? {
                "disable" => PgSslMode::Disable,
                "require" => PgSslMode::Require,
                _ => PgSslMode::Prefer,
            },
        );
    }
    let schema = props.get_or("schema", "public").to_string();
    // Unqualified names in a `query` resolve in the chosen schema too, not only table objects.
    opts = opts
        .options([("search_path", schema.as_str())])
        .application_name("etlworks-agent");
    let label = format!(
        "PostgreSQL at {}:{}, database '{}'",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or_default()
    );
    let t = timeout(props)?;
    let user = opts.get_username().to_string();
    // One direct attempt first: the pool retries a refused connection until its timeout and
    // then reports only "timed out", losing the cause a person needs.
    let first = tokio::time::timeout(t, opts.connect())
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
        .map_err(|e| connect_error(&label, Some(&user), t, e))?;
    let _ = first.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(t)
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(opts);
    Ok(Db {
        pool: Pool::Postgres(pool),
        dialect: Dialect::Postgres,
        label,
        schema: Some(schema),
        sqlite: None,
    })
}

async fn connect_mysql(props: &Props) -> Result<Db, ConnectorError> {
    let mut opts = match props.get("url") {
        Some(url) => MySqlConnectOptions::from_str(url).map_err(|e| {
            ConnectorError::config(format!(
                "property 'url' is not a valid mysql:// URL ({e}); write mysql://user:password@host:3306/database"
            ))
        })?,
        None => MySqlConnectOptions::new()
            .host("127.0.0.1")
            .port(3306)
            .username("root"),
    };
    if let Some(h) = props.get("host") {
        opts = opts.host(h);
    }
    if let Some(p) = port(props)? {
        opts = opts.port(p);
    }
    if let Some(u) = props.get("user") {
        opts = opts.username(u);
    }
    if let Some(p) = props.get("password") {
        opts = opts.password(p);
    }
    match props.get("database") {
        Some(d) => opts = opts.database(d),
        None if opts.get_database().is_none() => {
            return Err(ConnectorError::config(
                "missing required property 'database' (the database to connect to, e.g. database=shop), or give a url",
            ));
        }
        None => {}
    }
    if props.get("ssl_mode").is_some() || props.get("url").is_none() {
        opts = opts.ssl_mode(
            match props.choice(
                "ssl_mode",
                &["disabled", "preferred", "required"],
                "preferred",
            )? {
                "disabled" => MySqlSslMode::Disabled,
                "required" => MySqlSslMode::Required,
                _ => MySqlSslMode::Preferred,
            },
        );
    }
    let database = opts.get_database().unwrap_or_default().to_string();
    let label = format!(
        "MySQL at {}:{}, database '{database}'",
        opts.get_host(),
        opts.get_port()
    );
    let t = timeout(props)?;
    let user = opts.get_username().to_string();
    // One direct attempt first: the pool retries a refused connection until its timeout and
    // then reports only "timed out", losing the cause a person needs.
    let first = tokio::time::timeout(t, opts.connect())
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
        .map_err(|e| connect_error(&label, Some(&user), t, e))?;
    let _ = first.close().await;
    let pool = MySqlPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(t)
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(opts);
    Ok(Db {
        pool: Pool::Mysql(pool),
        dialect: Dialect::Mysql,
        label,
        schema: Some(database),
        sqlite: None,
    })
}

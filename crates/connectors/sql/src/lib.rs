//! Database connectors: `sqlite`, `postgres` and `mysql` (MariaDB too).
//!
//! One shared core does the work — streamed reads into batches, type mapping, table creation,
//! schema evolution, append/merge/replace — and each dialect differs only where SQL does
//! ([`dialect`]): quoting, placeholders, column types, upsert syntax, how rows are loaded
//! (PostgreSQL `COPY`, multi-row `INSERT` elsewhere). Each connector caches one small pool per
//! distinct set of connection properties, so the server can reuse connectors across runs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), etl_model::ConnectorError> {
//! use etl_model::{ConnectionConfig, Connector, Props};
//! let pg = etl_sql::PostgresConnector::new();
//! let conn = ConnectionConfig {
//!     name: "dw".into(),
//!     type_name: "postgres".into(),
//!     props: Props::new().with("host", "127.0.0.1").with("database", "test"),
//! };
//! println!("{}", pg.test(&conn).await?);
//! # Ok(()) }
//! ```

mod conn;
mod decode;
pub mod dialect;
mod read;
mod write;

use async_trait::async_trait;
use etl_model::{
    Batch, ConnectionConfig, Connector, ConnectorError, ConnectorSpec, ErrorKind, ObjectInfo,
    PropSpec, RunContext, Sink, SinkRequest, Source, SourceRequest,
};

use crate::conn::{Db, Pools};
use crate::dialect::Dialect;

static SOURCE_PROPS: &[PropSpec] = &[
    PropSpec::string(
        "query",
        "a SELECT to read instead of the table named by object= (the object is then only a label)",
    )
    .example("SELECT id, total FROM orders WHERE status = 'paid'"),
    PropSpec::string("columns", "comma-separated columns to read; all when absent")
        .example("id,name,updated_at"),
    PropSpec::string(
        "where",
        "an extra SQL condition on the rows read; raw SQL written by the connection's owner",
    )
    .example("status = 'active'"),
    PropSpec::string(
        "order_by",
        "SQL ORDER BY expression for the rows read (ignored when the flow is incremental, which orders by its column)",
    )
    .example("id"),
];

static DESTINATION_PROPS: &[PropSpec] = &[PropSpec::integer(
    "commit_rows",
    "append and merge commit once this many rows have been written since the last commit (and at the end); a failure or a stop rolls back only the rows since then. 1 commits every batch",
)
.default("100000")
.example("500000")];

static SQLITE_SPEC: ConnectorSpec = ConnectorSpec {
    type_name: "sqlite",
    title: "SQLite",
    description: "A SQLite database file (WAL mode): read tables or queries, write with append, replace or merge.",
    can_read: true,
    can_write: true,
    source_object: "table name (or any label when source.query is set)",
    destination_object: "table name",
    connection: &[
        PropSpec::string(
            "path",
            "the database file; created when missing (its directory must exist)",
        )
        .required()
        .example("/data/warehouse.db"),
        PropSpec::duration(
            "busy_timeout",
            "how long to wait for another writer's lock before failing",
        )
        .default("5s"),
    ],
    source: SOURCE_PROPS,
    destination: DESTINATION_PROPS,
};

static POSTGRES_SPEC: ConnectorSpec = ConnectorSpec {
    type_name: "postgres",
    title: "PostgreSQL",
    description: "A PostgreSQL database: read tables or queries (streamed), write through COPY with append, replace or merge.",
    can_read: true,
    can_write: true,
    source_object: "table name or schema.table (or any label when source.query is set)",
    destination_object: "table name or schema.table",
    connection: &[
        PropSpec::string(
            "url",
            "a postgres:// URL instead of the separate properties; properties given beside it override its parts",
        )
        .secret()
        .example("postgres://etl:secret@db.example.com:5432/analytics"),
        PropSpec::string("host", "server host name or IP").default("127.0.0.1"),
        PropSpec::integer("port", "server TCP port").default("5432"),
        PropSpec::string("database", "the database to connect to (required unless url names it)")
            .example("analytics"),
        PropSpec::string("user", "login role").default("postgres"),
        PropSpec::string("password", "login password").secret(),
        PropSpec::string(
            "schema",
            "schema for unqualified table names and the search_path of queries",
        )
        .default("public"),
        PropSpec::choice(
            "sslmode",
            &["disable", "prefer", "require"],
            "TLS: never, when the server offers it, or always (without certificate verification)",
        )
        .default("prefer"),
        PropSpec::duration("connect_timeout", "how long to wait for a connection").default("10s"),
    ],
    source: SOURCE_PROPS,
    destination: DESTINATION_PROPS,
};

static MYSQL_SPEC: ConnectorSpec = ConnectorSpec {
    type_name: "mysql",
    title: "MySQL / MariaDB",
    description: "A MySQL or MariaDB database: read tables or queries (streamed), write with batched INSERTs in append, replace or merge mode.",
    can_read: true,
    can_write: true,
    source_object: "table name or database.table (or any label when source.query is set)",
    destination_object: "table name or database.table",
    connection: &[
        PropSpec::string(
            "url",
            "a mysql:// URL instead of the separate properties; properties given beside it override its parts",
        )
        .secret()
        .example("mysql://etl:secret@db.example.com:3306/shop"),
        PropSpec::string("host", "server host name or IP").default("127.0.0.1"),
        PropSpec::integer("port", "server TCP port").default("3306"),
        PropSpec::string("database", "the database to connect to (required unless url names it)")
            .example("shop"),
        PropSpec::string("user", "login user").default("root"),
        PropSpec::string("password", "login password").secret(),
        PropSpec::choice(
            "ssl_mode",
            &["disabled", "preferred", "required"],
            "TLS: never, when the server offers it, or always (without certificate verification)",
        )
        .default("preferred"),
        PropSpec::duration("connect_timeout", "how long to wait for a connection").default("10s"),
    ],
    source: SOURCE_PROPS,
    destination: DESTINATION_PROPS,
};

/// What the three connectors share: the dialect and the pool cache.
struct Core {
    dialect: Dialect,
    pools: Pools,
}

impl Core {
    fn new(dialect: Dialect) -> Self {
        Core {
            dialect,
            pools: Pools::default(),
        }
    }

    async fn db(&self, conn: &ConnectionConfig) -> Result<Db, ConnectorError> {
        self.pools.get(self.dialect, conn).await
    }

    async fn test(&self, conn: &ConnectionConfig) -> Result<String, ConnectorError> {
        let db = self.db(conn).await?;
        let version_sql = match self.dialect {
            Dialect::Sqlite => "SELECT sqlite_version()",
            Dialect::Postgres => "SELECT current_setting('server_version')",
            Dialect::Mysql => "SELECT CAST(VERSION() AS CHAR)",
        };
        let doing = format!("testing {}", db.label);
        let one_sql = match self.dialect {
            Dialect::Mysql => "SELECT CAST(1 AS CHAR)",
            _ => "SELECT CAST(1 AS TEXT)",
        };
        let one = db
            .text_rows(one_sql.to_string(), &[])
            .await
            .map_err(|e| db.error(ErrorKind::Connect, &doing, e))?;
        if one
            .first()
            .and_then(|r| r.first())
            .cloned()
            .flatten()
            .as_deref()
            != Some("1")
        {
            return Err(ConnectorError::connect(format!(
                "{doing}: SELECT 1 did not answer 1; the server is not behaving like {}",
                self.dialect.title()
            )));
        }
        let version = db
            .text_rows(version_sql.to_string(), &[])
            .await
            .map_err(|e| db.error(ErrorKind::Connect, &doing, e))?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default();
        let schema = match (self.dialect, &db.schema) {
            (Dialect::Postgres, Some(s)) => format!(", schema '{s}'"),
            _ => String::new(),
        };
        Ok(format!(
            "connected to {} (version {version}){schema}",
            db.label
        ))
    }

    async fn list_objects(
        &self,
        conn: &ConnectionConfig,
    ) -> Result<Vec<ObjectInfo>, ConnectorError> {
        let db = self.db(conn).await?;
        let (sql, binds): (&str, Vec<Option<&str>>) = match self.dialect {
            Dialect::Sqlite => (
                "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
                vec![],
            ),
            Dialect::Postgres => (
                "SELECT table_name::text, CASE WHEN table_type = 'VIEW' THEN 'view' ELSE 'table' END \
                 FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
                vec![db.schema.as_deref()],
            ),
            Dialect::Mysql => (
                "SELECT CAST(table_name AS CHAR), CASE WHEN table_type = 'VIEW' THEN 'view' ELSE 'table' END \
                 FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY table_name",
                vec![],
            ),
        };
        let rows = db.text_rows(sql.to_string(), &binds).await.map_err(|e| {
            db.error(
                ErrorKind::Read,
                &format!("listing the tables of {}", db.label),
                e,
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|r| ObjectInfo {
                name: r.first().cloned().flatten().unwrap_or_default(),
                kind: r
                    .get(1)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| "table".into()),
                detail: None,
            })
            .collect())
    }

    async fn open_source(
        &self,
        conn: &ConnectionConfig,
        request: SourceRequest,
        ctx: &RunContext,
    ) -> Result<Box<dyn Source>, ConnectorError> {
        let db = self.db(conn).await?;
        let select = read::build_select(&db, &request).await?;
        let what = read::describe_source(&request);
        Ok(Box::new(read::SqlSource::start(
            db,
            select,
            request.batch_size,
            what,
            ctx,
        )))
    }

    async fn open_sink(
        &self,
        conn: &ConnectionConfig,
        request: SinkRequest,
        ctx: &RunContext,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        let db = self.db(conn).await?;
        Ok(Box::new(write::SqlSink::open(db, request, ctx).await?))
    }

    async fn query(
        &self,
        conn: &ConnectionConfig,
        sql: &str,
        limit: usize,
    ) -> Result<Batch, ConnectorError> {
        let db = self.db(conn).await?;
        read::run_query(&db, sql, limit).await
    }
}

macro_rules! sql_connector {
    ($(#[$doc:meta])* $name:ident, $dialect:expr, $spec:expr) => {
        $(#[$doc])*
        pub struct $name {
            core: Core,
        }

        impl $name {
            pub fn new() -> Self {
                $name {
                    core: Core::new($dialect),
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        #[async_trait]
        impl Connector for $name {
            fn spec(&self) -> &'static ConnectorSpec {
                &$spec
            }

            async fn test(&self, conn: &ConnectionConfig) -> Result<String, ConnectorError> {
                self.core.test(conn).await
            }

            async fn list_objects(
                &self,
                conn: &ConnectionConfig,
            ) -> Result<Vec<ObjectInfo>, ConnectorError> {
                self.core.list_objects(conn).await
            }

            async fn open_source(
                &self,
                conn: &ConnectionConfig,
                request: SourceRequest,
                ctx: &RunContext,
            ) -> Result<Box<dyn Source>, ConnectorError> {
                self.core.open_source(conn, request, ctx).await
            }

            async fn open_sink(
                &self,
                conn: &ConnectionConfig,
                request: SinkRequest,
                ctx: &RunContext,
            ) -> Result<Box<dyn Sink>, ConnectorError> {
                self.core.open_sink(conn, request, ctx).await
            }

            async fn query(
                &self,
                conn: &ConnectionConfig,
                sql: &str,
                limit: usize,
            ) -> Result<Batch, ConnectorError> {
                self.core.query(conn, sql, limit).await
            }
        }
    };
}

sql_connector!(
    /// The `sqlite` connector: a database file, opened in WAL mode.
    SqliteConnector,
    Dialect::Sqlite,
    SQLITE_SPEC
);
sql_connector!(
    /// The `postgres` connector: streamed reads, `COPY` loads.
    PostgresConnector,
    Dialect::Postgres,
    POSTGRES_SPEC
);
sql_connector!(
    /// The `mysql` connector, for MySQL and MariaDB.
    MysqlConnector,
    Dialect::Mysql,
    MYSQL_SPEC
);

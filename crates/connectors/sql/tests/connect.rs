//! Connection failures explain themselves: unreachable port, refused login, missing database,
//! and a SQLite path in a missing directory.

mod common;

use etl_model::{ConnectionConfig, Connector, ErrorKind, Props};

fn conn(type_name: &str, props: Props) -> ConnectionConfig {
    ConnectionConfig {
        name: "c".into(),
        type_name: type_name.into(),
        props,
    }
}

/// A port on this machine with nothing listening.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn postgres_unreachable_port() {
    let port = closed_port().to_string();
    let c = conn(
        "postgres",
        Props::new()
            .with("port", port.as_str())
            .with("database", "test")
            .with("connect_timeout", "3s"),
    );
    let err = etl_sql::PostgresConnector::new()
        .test(&c)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connect);
    assert!(
        err.message.contains(&format!("127.0.0.1:{port}")),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("check that the server is running"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn mysql_unreachable_port() {
    let port = closed_port().to_string();
    let c = conn(
        "mysql",
        Props::new()
            .with("port", port.as_str())
            .with("database", "test"),
    );
    let err = etl_sql::MysqlConnector::new().test(&c).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connect);
    assert!(
        err.message.contains(&format!("127.0.0.1:{port}")),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn postgres_unknown_role_is_refused() {
    // The test server trusts every password, so a role that does not exist is the refused login.
    let c = conn(
        "postgres",
        Props::new()
            .with("url", common::pg_url())
            .with("user", "no_such_role_x")
            .with("password", "hunter2"),
    );
    let err = etl_sql::PostgresConnector::new()
        .test(&c)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connect);
    assert!(
        err.message
            .contains("refused the login for user 'no_such_role_x'"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("hunter2"));
}

#[tokio::test]
async fn mysql_bad_password_is_refused() {
    let c = conn(
        "mysql",
        Props::new()
            .with("url", common::mysql_url())
            .with("password", "wrong-secret"),
    );
    let err = etl_sql::MysqlConnector::new().test(&c).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connect);
    assert!(
        err.message.contains("refused the login for user 'root'"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("check the user and password"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("wrong-secret"));
}

#[tokio::test]
async fn missing_database_is_named() {
    let c = conn(
        "postgres",
        Props::new()
            .with("url", common::pg_url())
            .with("database", "no_such_db_x"),
    );
    let err = etl_sql::PostgresConnector::new()
        .test(&c)
        .await
        .unwrap_err();
    assert!(
        err.message.contains("no_such_db_x") && err.message.contains("'database' property"),
        "{}",
        err.message
    );
    let c = conn(
        "mysql",
        Props::new()
            .with("url", common::mysql_url())
            .with("database", "no_such_db_x"),
    );
    let err = etl_sql::MysqlConnector::new().test(&c).await.unwrap_err();
    assert!(err.message.contains("no_such_db_x"), "{}", err.message);
}

#[tokio::test]
async fn sqlite_missing_directory_and_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("nope/x.db");
    let c = conn("sqlite", Props::new().with("path", bad.to_string_lossy()));
    let err = etl_sql::SqliteConnector::new().test(&c).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connect);
    assert!(err.message.contains("does not exist"), "{}", err.message);
    let good = dir.path().join("new.db");
    let c = conn("sqlite", Props::new().with("path", good.to_string_lossy()));
    let msg = etl_sql::SqliteConnector::new().test(&c).await.unwrap();
    assert!(msg.starts_with("connected to SQLite database"), "{msg}");
    assert!(good.exists());
}

#[test]
fn specs_mark_secrets() {
    let pg = etl_sql::PostgresConnector::new();
    assert!(pg.spec().is_secret("password") && pg.spec().is_secret("url"));
    let errs = pg
        .spec()
        .validate_connection(&Props::new().with("sslmode", "maybe"));
    assert_eq!(
        errs,
        vec!["'sslmode' must be one of disable, prefer, require, got 'maybe'"]
    );
}

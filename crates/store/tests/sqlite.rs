//! The SQLite store against real database files in temporary directories: the shared
//! conformance suite, plus what only a file-backed SQLite store has (creating directories, WAL
//! mode, persistence across close and reopen, migrations, other processes' locks, many tasks
//! writing from many threads at once).

use std::path::Path;
use std::sync::Arc;

use etl_engine::{RunQuery, RunStatus, Store, StoreError};
use etl_store::SqliteStore;
use etl_store::testing::{
    at, conformance, connection, flow, key_conformance, log_lines, run, schedule,
    session_conformance, usage_conformance,
};
use sqlx::Connection as _;
use sqlx::sqlite::SqliteConnection;

async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open the database file directly")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("metadata.db"))
        .await
        .unwrap();
    conformance(&store).await;
    key_conformance(&store).await;
    session_conformance(&store).await;
    usage_conformance(&store).await;
    store.close().await;
}

#[tokio::test]
async fn conformance_in_memory() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    assert_eq!(store.path(), Path::new(":memory:"));
    conformance(&store).await;
    key_conformance(&store).await;
    session_conformance(&store).await;
    usage_conformance(&store).await;
}

#[tokio::test]
async fn open_creates_parent_directories_and_uses_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("nested").join("metadata.db");
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(path.is_file(), "the database file exists after open");
    assert_eq!(store.path(), path);

    let mut conn = raw(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        versions,
        [1, 2, 3, 4, 5],
        "migrations are recorded in schema_migrations"
    );
    conn.close().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn data_survives_close_and_reopen_and_migrations_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.db");
    let t = "tenant-p";
    let conn = connection(t, "warehouse");
    let f = flow(t, "orders");
    let s = schedule(&f, Some(at(3600)), true);
    let mut r = run(&f, "run-p", at(10), RunStatus::Success);
    r.rows_read = 5_000_000;
    r.rows_written = 5_000_000;
    r.started_at = Some(at(11));
    r.finished_at = Some(at(99));
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.insert_connection(&conn).await.unwrap();
        store.insert_flow(&f).await.unwrap();
        store.upsert_schedule(&s).await.unwrap();
        store.insert_run(&r).await.unwrap();
        store
            .append_logs(t, &log_lines("run-p", 1..=5))
            .await
            .unwrap();
        store
            .set_watermark(t, &f.id, Some("\"2025-06-01\""))
            .await
            .unwrap();
        store.close().await;
    }
    for _ in 0..2 {
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(
            store.get_connection(t, "warehouse").await.unwrap(),
            Some(conn.clone())
        );
        assert_eq!(store.get_flow(t, "orders").await.unwrap(), Some(f.clone()));
        assert_eq!(store.get_schedule(t, &f.id).await.unwrap(), Some(s.clone()));
        assert_eq!(store.get_run(t, "run-p").await.unwrap(), Some(r.clone()));
        assert_eq!(
            store.run_logs(t, "run-p", 2).await.unwrap(),
            log_lines("run-p", 4..=5)
        );
        assert_eq!(
            store.get_watermark(t, &f.id).await.unwrap().as_deref(),
            Some("\"2025-06-01\"")
        );
        assert_eq!(store.next_due_at().await.unwrap(), Some(at(3600)));
        store.close().await;
    }
    let mut raw = raw(&path).await;
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(applied, 5, "reopening does not re-apply migrations");
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.db");
    SqliteStore::open(&path).await.unwrap().close().await;
    let mut conn = raw(&path).await;
    sqlx::query(
        "INSERT INTO schema_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let err = SqliteStore::open(&path).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    assert!(text.contains("999"), "names the unknown migration: {text}");
    assert!(text.contains("upgrade"), "says what to do: {text}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("metadata store: "), "{text}");
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
}

#[tokio::test]
async fn a_directory_that_cannot_be_created_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("data");
    std::fs::write(&blocker, b"a file where the data directory should be").unwrap();
    let err = SqliteStore::open(&blocker.join("metadata.db"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("cannot create the directory"), "{text}");
    assert!(text.contains(&blocker.display().to_string()), "{text}");
}

/// Many tasks on many threads, each with its own clone of the store, writing at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spawned_writers_never_see_database_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("metadata.db"))
            .await
            .unwrap(),
    );
    let t = "spawned";
    let f = flow(t, "hot");
    store.insert_flow(&f).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        let f = f.clone();
        tasks.spawn(async move {
            let id = format!("spawned-run-{i}");
            let mut r = run(&f, &id, at(i), RunStatus::Running);
            store.insert_run(&r).await?;
            for round in 0..40u64 {
                store
                    .append_logs(t, &log_lines(&id, round * 5 + 1..=round * 5 + 5))
                    .await?;
                r.rows_read += 1000;
                store.update_run(&r).await?;
                store
                    .list_runs(
                        t,
                        &RunQuery {
                            limit: 5,
                            ..RunQuery::default()
                        },
                    )
                    .await?;
            }
            r.status = RunStatus::Success;
            store.update_run(&r).await?;
            Ok::<_, StoreError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined
            .expect("writer task panicked")
            .expect("writer task failed");
    }
    let runs = store.list_runs(t, &RunQuery::default()).await.unwrap();
    assert_eq!(runs.len(), 8);
    for r in runs {
        assert_eq!(r.status, RunStatus::Success);
        assert_eq!(r.rows_read, 40_000);
        assert_eq!(store.run_logs(t, &r.id, 0).await.unwrap().len(), 200);
    }
}

/// Another process holding the write lock briefly: the store waits (busy_timeout) instead of
/// failing.
#[tokio::test]
async fn waits_for_another_writer_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let mut other = raw(&path).await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();

    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        other
    });
    let started = std::time::Instant::now();
    store
        .insert_connection(&connection("t", "patient"))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(250),
        "the insert must have waited for the other writer"
    );
    release.await.unwrap().close().await.unwrap();
    assert!(
        store
            .get_connection("t", "patient")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_survive_reopen_and_take_appends_from_many_threads() {
    use etl_agent::sessions::{NewMessage, SessionStore};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let s = etl_store::testing::session("tenant-s", "ses_keep", Some("kept"), at(0));
    store.insert_session(&s, u64::MAX).await.unwrap();
    let call = etl_llm::ToolCall {
        id: "c1".into(),
        name: "host_cli".into(),
        arguments: serde_json::json!({"command": "create connection api type=http url=https://api.example.com"}),
    };
    let turn = [
        etl_llm::Message::user("create a connection to api.example.com"),
        etl_llm::Message::assistant("", vec![call.clone()]),
        etl_llm::Message::tool_result(
            &call,
            true,
            "created connection api",
            serde_json::json!({"created": "api"}),
        ),
        etl_llm::Message::assistant("Created the connection 'api'.", Vec::new()),
    ];
    // Tasks on several threads append at once; each task's turn stays whole.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let turn = turn.clone();
            tokio::spawn(async move {
                let batch: Vec<NewMessage> = turn
                    .into_iter()
                    .map(|m| NewMessage {
                        message: m,
                        created_at: at(i),
                    })
                    .collect();
                store
                    .append_messages("tenant-s", "ses_keep", &batch)
                    .await
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        let stored = task.await.unwrap();
        assert_eq!(stored.len(), 4);
        assert_eq!(stored[0].seq % 4, 1, "a turn starts on a turn boundary");
    }
    store.close().await;
    drop(store);

    let store = SqliteStore::open(&path).await.unwrap();
    let back = store
        .get_session("tenant-s", "ses_keep")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.message_count, 64);
    assert_eq!(back.title.as_deref(), Some("kept"));
    let messages = store
        .list_messages("tenant-s", "ses_keep", 0, 0)
        .await
        .unwrap();
    assert_eq!(messages.len(), 64);
    for chunk in messages.chunks(4) {
        let got: Vec<_> = chunk.iter().map(|m| m.message.clone()).collect();
        assert_eq!(
            got, turn,
            "every turn comes back whole and exact after reopening"
        );
    }
    store.close().await;
}

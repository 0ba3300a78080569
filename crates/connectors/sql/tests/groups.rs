//! Commit groups against SQLite, PostgreSQL and MySQL/MariaDB: `append` and `merge` keep one
//! transaction open across batches and commit every `commit_rows` rows, so each `write` answers
//! only the rows it committed, a failure or a stop rolls back only the open group, and the sum
//! of the answers is always exactly what stays in the table.

mod common;

use common::{Env, Kind, batch, sink_req, t, with_env};
use etl_model::{Batch, ErrorKind, Props, Sink, Value, WriteMode};

/// `n` rows `(id, label)` with ids from `first`.
fn rows(first: i64, n: i64) -> Batch {
    batch(
        &["id", "label"],
        (first..first + n)
            .map(|i| vec![Value::Int(i), t(&format!("row {i}"))])
            .collect(),
    )
}

async fn open(
    env: &Env,
    table: &str,
    mode: WriteMode,
    keys: &[&str],
    commit_rows: &str,
) -> Box<dyn Sink> {
    let mut req = sink_req(table, mode, keys);
    req.options = Props::new().with("commit_rows", commit_rows);
    match env.connector.open_sink(&env.conn, req, &env.ctx()).await {
        Ok(s) => s,
        Err(e) => panic!("open sink {table}: {e}"),
    }
}

/// Rows in the table as another connection sees them (committed rows only).
async fn count(env: &Env, table: &str) -> i64 {
    let b = env
        .sql(&format!("SELECT COUNT(*) FROM {}", env.q(table)))
        .await;
    match &b.rows[0][0] {
        Value::Int(n) => *n,
        other => panic!("COUNT(*) answered {other:?}"),
    }
}

async fn ids(env: &Env, table: &str) -> Vec<i64> {
    env.read(table, "id")
        .await
        .rows
        .iter()
        .map(|r| match r[0] {
            Value::Int(i) => i,
            ref v => panic!("id {v:?}"),
        })
        .collect()
}

async fn writes_answer_the_rows_they_commit(env: Env) {
    let mut sink = open(&env, "g", WriteMode::Append, &[], "25").await;
    assert_eq!(sink.write(rows(1, 10)).await.unwrap(), 0);
    assert_eq!(
        count(&env, "g").await,
        0,
        "the open group is not visible yet"
    );
    assert_eq!(sink.write(rows(11, 10)).await.unwrap(), 0);
    // The third batch brings the group to 30 >= 25 rows: all of it commits.
    assert_eq!(sink.write(rows(21, 10)).await.unwrap(), 30);
    assert_eq!(count(&env, "g").await, 30);
    assert_eq!(sink.write(rows(31, 10)).await.unwrap(), 0);
    assert_eq!(sink.write(rows(41, 10)).await.unwrap(), 0);
    assert_eq!(count(&env, "g").await, 30);
    assert_eq!(sink.finish().await.unwrap(), 20);
    assert_eq!(ids(&env, "g").await, (1..=50).collect::<Vec<_>>());
    // An empty batch commits nothing and opens nothing.
    let mut sink = open(&env, "g", WriteMode::Append, &[], "25").await;
    assert_eq!(
        sink.write(batch(&["id", "label"], vec![])).await.unwrap(),
        0
    );
    assert_eq!(sink.finish().await.unwrap(), 0);
    assert_eq!(count(&env, "g").await, 50);
}

async fn commit_rows_one_commits_every_batch(env: Env) {
    let mut sink = open(&env, "one", WriteMode::Append, &[], "1").await;
    for b in 0..4 {
        assert_eq!(sink.write(rows(b * 3 + 1, 3)).await.unwrap(), 3);
        assert_eq!(count(&env, "one").await, (b + 1) * 3);
    }
    assert_eq!(sink.finish().await.unwrap(), 0);
    assert_eq!(ids(&env, "one").await, (1..=12).collect::<Vec<_>>());
}

async fn commit_rows_zero_is_refused(env: Env) {
    let mut req = sink_req("z", WriteMode::Append, &[]);
    req.options = Props::new().with("commit_rows", "0");
    let err = match env.connector.open_sink(&env.conn, req, &env.ctx()).await {
        Err(e) => e,
        Ok(_) => panic!("commit_rows=0 must be refused"),
    };
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.message.contains("commit_rows=1"), "{}", err.message);
}

/// The third batch of the second group breaks a NOT NULL constraint: the group's first two
/// batches roll back with it, the first group stays, and the counts say so.
async fn failure_rolls_back_only_the_open_group(env: Env) {
    env.sql(&format!(
        "CREATE TABLE {} (id INTEGER NOT NULL, label VARCHAR(40))",
        env.q("fail")
    ))
    .await;
    for mode in [WriteMode::Append, WriteMode::Merge] {
        env.sql(&format!("DELETE FROM {}", env.q("fail"))).await;
        let keys: &[&str] = if mode == WriteMode::Merge {
            &["id"]
        } else {
            &[]
        };
        let mut sink = open(&env, "fail", mode, keys, "30").await;
        let mut written = 0;
        for b in 0..3 {
            written += sink.write(rows(b * 10 + 1, 10)).await.unwrap();
        }
        assert_eq!(written, 30, "{mode:?}: the first group commits at 30 rows");
        written += sink.write(rows(31, 10)).await.unwrap();
        written += sink.write(rows(41, 10)).await.unwrap();
        let mut bad = rows(51, 10);
        bad.rows[4][0] = Value::Null;
        let err = sink.write(bad).await.unwrap_err();
        sink.abort().await.unwrap();
        assert_eq!(err.kind, ErrorKind::Write, "{mode:?}: {}", err.message);
        assert!(
            err.message
                .contains("this batch and the 2 before it (30 rows)")
                && err.message.contains("rolled back"),
            "{mode:?}: {}",
            err.message
        );
        assert_eq!(written, 30, "{mode:?}");
        assert_eq!(
            ids(&env, "fail").await,
            (1..=30).collect::<Vec<_>>(),
            "{mode:?}: only the first group stays"
        );
    }
    // The connections the failed groups used are not left inside a transaction.
    env.write("fail", WriteMode::Append, &[], vec![rows(100, 2)])
        .await;
    assert_eq!(count(&env, "fail").await, 32);
}

async fn new_column_commits_the_group_first(env: Env) {
    let mut sink = open(&env, "evo", WriteMode::Append, &[], "100").await;
    assert_eq!(sink.write(rows(1, 10)).await.unwrap(), 0);
    assert_eq!(sink.write(rows(11, 10)).await.unwrap(), 0);
    let wider = batch(
        &["id", "label", "extra"],
        (21..=30)
            .map(|i| vec![Value::Int(i), t("w"), Value::Float(i as f64 / 2.0)])
            .collect(),
    );
    // The open group (20 rows) commits before ALTER TABLE; the wider batch starts a new one.
    assert_eq!(sink.write(wider).await.unwrap(), 20);
    assert_eq!(count(&env, "evo").await, 20);
    // Fewer columns again also closes the group: a COPY or INSERT names its columns once.
    assert_eq!(sink.write(rows(31, 5)).await.unwrap(), 10);
    assert_eq!(sink.finish().await.unwrap(), 5);
    let got = env.read("evo", "id").await;
    assert_eq!(got.columns, ["id", "label", "extra"]);
    assert_eq!(got.rows.len(), 35);
    assert_eq!(got.rows[0][2], Value::Null);
    assert_eq!(got.rows[20][2], Value::Float(10.5));
    assert_eq!(got.rows[34][2], Value::Null);
    assert!(
        env.logged()
            .iter()
            .any(|l| l.starts_with("added column extra")),
        "{:?}",
        env.logged()
    );
}

async fn stop_rolls_back_the_open_group(env: Env) {
    let ctx = env.ctx();
    let mut req = sink_req("stop", WriteMode::Append, &[]);
    req.options = Props::new().with("commit_rows", "20");
    let mut sink = env.connector.open_sink(&env.conn, req, &ctx).await.unwrap();
    assert_eq!(sink.write(rows(1, 10)).await.unwrap(), 0);
    assert_eq!(sink.write(rows(11, 10)).await.unwrap(), 20);
    assert_eq!(sink.write(rows(21, 10)).await.unwrap(), 0);
    ctx.cancel.cancel();
    let err = sink.write(rows(31, 10)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Canceled);
    sink.abort().await.unwrap();
    assert_eq!(ids(&env, "stop").await, (1..=20).collect::<Vec<_>>());
    assert!(
        env.logged()
            .iter()
            .any(|l| l.contains("rolled back the uncommitted 10 rows")),
        "{:?}",
        env.logged()
    );

    // The engine's way: the stop drops the write future, then calls abort.
    let mut sink = open(&env, "stop", WriteMode::Append, &[], "1000000").await;
    assert_eq!(sink.write(rows(100, 10)).await.unwrap(), 0);
    {
        let big = rows(200, 100_000);
        let write = sink.write(big);
        // Polled a little, then dropped half-way like a canceled `tokio::select!` branch.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1), write).await;
    }
    sink.abort().await.unwrap();
    assert_eq!(count(&env, "stop").await, 20);

    // A sink dropped without abort also discards its open group, and the pool stays usable.
    let mut sink = open(&env, "stop", WriteMode::Append, &[], "1000").await;
    assert_eq!(sink.write(rows(300, 10)).await.unwrap(), 0);
    drop(sink);
    env.write("stop", WriteMode::Append, &[], vec![rows(400, 3)])
        .await;
    let got = ids(&env, "stop").await;
    assert_eq!(got.len(), 23, "{got:?}");
    assert_eq!(&got[20..], [400, 401, 402]);
}

async fn merge_group_keeps_the_last_row_per_key(env: Env) {
    let kv = |v: &[(i64, &str)]| {
        batch(
            &["id", "label"],
            v.iter().map(|(i, s)| vec![Value::Int(*i), t(s)]).collect(),
        )
    };
    env.write(
        "mg",
        WriteMode::Merge,
        &["id"],
        vec![kv(&[(1, "old"), (2, "old")])],
    )
    .await;
    let mut sink = open(&env, "mg", WriteMode::Merge, &["id"], "1000").await;
    assert_eq!(
        sink.write(kv(&[(2, "first"), (3, "first")])).await.unwrap(),
        0
    );
    // Keys repeated in a later batch of the same group: the later row wins.
    assert_eq!(sink.write(kv(&[(3, "second"), (4, "x")])).await.unwrap(), 0);
    assert_eq!(sink.write(kv(&[(2, "third")])).await.unwrap(), 0);
    assert_eq!(sink.finish().await.unwrap(), 5);
    assert_eq!(
        env.read("mg", "id").await.rows,
        kv(&[(1, "old"), (2, "third"), (3, "second"), (4, "x")]).rows
    );
}

async fn replace_groups_into_the_staging_table(env: Env) {
    env.write("rep", WriteMode::Append, &[], vec![rows(1, 5)])
        .await;
    let mut sink = open(&env, "rep", WriteMode::Replace, &[], "15").await;
    let mut written = 0;
    for b in 0..4 {
        written += sink.write(rows(100 + b * 10, 10)).await.unwrap();
        assert_eq!(
            count(&env, "rep").await,
            5,
            "the old table stays until finish"
        );
    }
    assert_eq!(written, 0, "staged rows count only once swapped in");
    assert_eq!(sink.finish().await.unwrap(), 40);
    assert_eq!(ids(&env, "rep").await, (100..140).collect::<Vec<_>>());
}

macro_rules! all_dialects {
    ($($name:ident),* $(,)?) => {
        mod sqlite { use super::*; $(#[tokio::test(flavor = "multi_thread")] async fn $name() { with_env(Kind::Sqlite, super::$name).await } )* }
        mod postgres { use super::*; $(#[tokio::test(flavor = "multi_thread")] async fn $name() { with_env(Kind::Postgres, super::$name).await } )* }
        mod mysql { use super::*; $(#[tokio::test(flavor = "multi_thread")] async fn $name() { with_env(Kind::Mysql, super::$name).await } )* }
    };
}

all_dialects!(
    writes_answer_the_rows_they_commit,
    commit_rows_one_commits_every_batch,
    commit_rows_zero_is_refused,
    failure_rolls_back_only_the_open_group,
    new_column_commits_the_group_first,
    stop_rolls_back_the_open_group,
    merge_group_keeps_the_last_row_per_key,
    replace_groups_into_the_staging_table,
);

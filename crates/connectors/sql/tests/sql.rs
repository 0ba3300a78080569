//! The same scenarios against SQLite, PostgreSQL and MySQL/MariaDB: create from inferred types,
//! append, merge, replace (success and failure), schema evolution, incremental and streamed
//! reads, type round trips, awkward identifiers, connection errors, and ad-hoc queries.

mod common;

use common::{Env, Kind, batch, sink_req, source_req, t, with_env};
use etl_model::{ErrorKind, Incremental, Props, Value, WriteMode};

async fn create_and_append(env: Env) {
    let first = batch(
        &["id", "name", "price", "active", "day", "at"],
        vec![
            vec![
                Value::Int(1),
                t("apple"),
                Value::Float(1.5),
                Value::Bool(true),
                t("2024-01-02"),
                t("2024-01-02T10:00:00"),
            ],
            vec![
                Value::Int(2),
                t("pear"),
                Value::Null,
                Value::Bool(false),
                t("2024-02-03"),
                t("2024-02-03T11:30:00.500"),
            ],
        ],
    );
    env.write("items", WriteMode::Append, &[], vec![first])
        .await;
    env.write(
        "items",
        WriteMode::Append,
        &[],
        vec![batch(&["id", "name"], vec![vec![Value::Int(3), t("fig")]])],
    )
    .await;
    assert!(
        env.logged().iter().any(|l| l.starts_with("created table")),
        "{:?}",
        env.logged()
    );
    let got = env.read("items", "id").await;
    assert_eq!(got.columns, ["id", "name", "price", "active", "day", "at"]);
    assert_eq!(
        got.rows,
        vec![
            vec![
                Value::Int(1),
                t("apple"),
                Value::Float(1.5),
                Value::Bool(true),
                t("2024-01-02"),
                t("2024-01-02T10:00:00")
            ],
            vec![
                Value::Int(2),
                t("pear"),
                Value::Null,
                Value::Bool(false),
                t("2024-02-03"),
                t("2024-02-03T11:30:00.500")
            ],
            vec![
                Value::Int(3),
                t("fig"),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null
            ],
        ]
    );
}

async fn merge(env: Env) {
    let rows = |v: Vec<(i64, &str)>| {
        batch(
            &["id", "name"],
            v.into_iter()
                .map(|(i, n)| vec![Value::Int(i), t(n)])
                .collect(),
        )
    };
    env.write(
        "m",
        WriteMode::Merge,
        &["id"],
        vec![rows(vec![(1, "a"), (2, "b")])],
    )
    .await;
    // Update 2, insert 3, and a repeated key inside one batch where the last row wins.
    env.write(
        "m",
        WriteMode::Merge,
        &["id"],
        vec![rows(vec![(2, "B"), (3, "c"), (3, "C")])],
    )
    .await;
    let got = env.read("m", "id").await;
    assert_eq!(got.rows, rows(vec![(1, "a"), (2, "B"), (3, "C")]).rows);
}

async fn merge_creates_unique_index_on_existing_table(env: Env) {
    env.sql(&format!(
        "CREATE TABLE u ({} INTEGER, v VARCHAR(20))",
        env.q("k")
    ))
    .await;
    let b = batch(&["k", "v"], vec![vec![Value::Int(1), t("x")]]);
    env.write("u", WriteMode::Merge, &["k"], vec![b.clone()])
        .await;
    env.write(
        "u",
        WriteMode::Merge,
        &["k"],
        vec![batch(&["k", "v"], vec![vec![Value::Int(1), t("y")]])],
    )
    .await;
    assert!(
        env.logged()
            .iter()
            .any(|l| l.contains("created unique index")),
        "{:?}",
        env.logged()
    );
    assert_eq!(
        env.read("u", "k").await.rows,
        vec![vec![Value::Int(1), t("y")]]
    );
}

async fn replace(env: Env) {
    let rows = |v: &[i64]| batch(&["id"], v.iter().map(|i| vec![Value::Int(*i)]).collect());
    env.write(
        "r",
        WriteMode::Replace,
        &[],
        vec![rows(&[1, 2]), rows(&[3])],
    )
    .await;
    assert_eq!(env.read("r", "id").await.rows, rows(&[1, 2, 3]).rows);
    env.write("r", WriteMode::Replace, &[], vec![rows(&[7])])
        .await;
    assert_eq!(env.read("r", "id").await.rows, rows(&[7]).rows);

    // A failed run: rows staged, then abort. The old table stays exactly as it was.
    let req = sink_req("r", WriteMode::Replace, &[]);
    let run = req.run_id.clone();
    let mut sink = env
        .connector
        .open_sink(&env.conn, req, &env.ctx())
        .await
        .unwrap();
    sink.write(rows(&[100, 200])).await.unwrap();
    sink.abort().await.unwrap();
    assert_eq!(env.read("r", "id").await.rows, rows(&[7]).rows);
    let objects = env.connector.list_objects(&env.conn).await.unwrap();
    let names: Vec<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["r"], "staging for run {run} must be dropped");

    // Replace with no rows empties the table.
    env.write("r", WriteMode::Replace, &[], vec![]).await;
    assert!(env.read("r", "id").await.rows.is_empty());
}

async fn replace_keeps_serial_default(env: Env) {
    if env.kind != Kind::Postgres {
        return;
    }
    env.sql("CREATE TABLE s (id SERIAL PRIMARY KEY, v TEXT)")
        .await;
    env.write(
        "s",
        WriteMode::Replace,
        &[],
        vec![batch(&["v"], vec![vec![t("a")]])],
    )
    .await;
    env.sql("INSERT INTO s (v) VALUES ('b')").await;
    assert_eq!(
        env.read("s", "id").await.rows,
        vec![vec![Value::Int(1), t("a")], vec![Value::Int(2), t("b")]]
    );
}

async fn schema_evolution(env: Env) {
    env.write(
        "e",
        WriteMode::Append,
        &[],
        vec![batch(&["id"], vec![vec![Value::Int(1)]])],
    )
    .await;
    env.write(
        "e",
        WriteMode::Append,
        &[],
        vec![batch(
            &["id", "extra"],
            vec![vec![Value::Int(2), Value::Float(2.5)]],
        )],
    )
    .await;
    assert!(
        env.logged()
            .iter()
            .any(|l| l.starts_with("added column extra")),
        "{:?}",
        env.logged()
    );
    let got = env.read("e", "id").await;
    assert_eq!(got.columns, ["id", "extra"]);
    assert_eq!(
        got.rows,
        vec![
            vec![Value::Int(1), Value::Null],
            vec![Value::Int(2), Value::Float(2.5)]
        ]
    );
}

async fn incremental(env: Env) {
    let rows: Vec<_> = (1..=10)
        .map(|i| vec![Value::Int(i), t(&format!("2024-01-{i:02}T00:00:00"))])
        .collect();
    env.write(
        "inc",
        WriteMode::Append,
        &[],
        vec![batch(&["id", "at"], rows)],
    )
    .await;
    for (column, after, first) in [
        ("id", Value::Int(7), 8),
        ("at", t("2024-01-05T00:00:00"), 6),
    ] {
        let req = source_req(
            "inc",
            Props::new(),
            Some(Incremental {
                column: column.into(),
                after: Some(after),
            }),
            3,
        );
        let got = env.read_req(req).await;
        let ids: Vec<Value> = got
            .iter()
            .flat_map(|b| b.rows.iter().map(|r| r[0].clone()))
            .collect();
        assert_eq!(
            ids,
            (first..=10).map(Value::Int).collect::<Vec<_>>(),
            "incremental on {column}"
        );
    }
    // Options combine with the bound: a where condition and a column list.
    let req = source_req(
        "inc",
        Props::new().with("where", "id <> 9").with("columns", "id"),
        Some(Incremental {
            column: "id".into(),
            after: Some(Value::Int(7)),
        }),
        100,
    );
    let got = env.read_req(req).await;
    assert_eq!(got[0].columns, ["id"]);
    assert_eq!(got[0].rows, vec![vec![Value::Int(8)], vec![Value::Int(10)]]);
}

async fn streams_in_batches(env: Env) {
    let total = 100_000;
    let chunk = 25_000;
    let batches = (0..total / chunk)
        .map(|c| {
            batch(
                &["id", "label"],
                (0..chunk)
                    .map(|i| vec![Value::Int((c * chunk + i) as i64), t("row")])
                    .collect(),
            )
        })
        .collect();
    env.write("big", WriteMode::Append, &[], batches).await;
    let got = env
        .read_req(source_req("big", Props::new(), None, 10_000))
        .await;
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|b| b.len() == 10_000));
    // A query source with its own filter.
    let q = Props::new()
        .with("query", "SELECT id FROM big WHERE id < 15")
        .with("order_by", "id");
    let got = env.read_req(source_req("small", q, None, 10)).await;
    assert_eq!(got.iter().map(|b| b.len()).collect::<Vec<_>>(), [10, 5]);
}

async fn awkward_identifiers(env: Env) {
    let table = "order \"details\" `x`";
    let cols = ["select", "first name", "it's \"q\""];
    env.write(
        table,
        WriteMode::Merge,
        &["select"],
        vec![batch(&cols, vec![vec![Value::Int(1), t("ann"), t("o'k")]])],
    )
    .await;
    env.write(
        table,
        WriteMode::Merge,
        &["select"],
        vec![batch(
            &cols,
            vec![vec![Value::Int(1), t("bob"), t("\"q\"")]],
        )],
    )
    .await;
    let got = env.read(table, &env.q("select")).await;
    assert_eq!(got.columns, cols);
    assert_eq!(got.rows, vec![vec![Value::Int(1), t("bob"), t("\"q\"")]]);
}

async fn text_escaping(env: Env) {
    let nasty = "tab\there\nnew line\\backslash\r'quote' \"dq\" ünïcödé 🚀 \\N";
    env.write(
        "esc",
        WriteMode::Append,
        &[],
        vec![batch(
            &["id", "s"],
            vec![vec![Value::Int(1), t(nasty)], vec![Value::Int(2), t("")]],
        )],
    )
    .await;
    let got = env.read("esc", "id").await;
    assert_eq!(
        got.rows,
        vec![vec![Value::Int(1), t(nasty)], vec![Value::Int(2), t("")]]
    );
}

async fn native_types(env: Env) {
    let (ddl, insert, expected): (&str, &str, Vec<Value>) = match env.kind {
        Kind::Postgres => (
            "CREATE TABLE ty (a SMALLINT, b INTEGER, c BIGINT, d REAL, e DOUBLE PRECISION, f NUMERIC(10,2), \
             g NUMERIC, h BOOLEAN, i VARCHAR(10), j CHAR(3), k TEXT, l DATE, m TIMESTAMP, n TIMESTAMPTZ, \
             o JSONB, p UUID, q BYTEA, r TIME, s INTERVAL, u INT[])",
            "INSERT INTO ty VALUES (1, 2, 3, 0.1, 2.5, 12.50, 123456789012345678901234.5, true, 'v', 'ch', 't', \
             '2024-01-02', '2024-01-02 10:00:00.123', '2024-01-02 10:00:00+02', '{\"a\": [1, 2]}', \
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x0102ff', '10:30:00', '1 day', '{1,2}')",
            vec![
                Value::Int(1),
                Value::Int(2),
                Value::Int(3),
                Value::Float(0.1),
                Value::Float(2.5),
                Value::Float(12.5),
                t("123456789012345678901234.5"),
                Value::Bool(true),
                t("v"),
                t("ch"),
                t("t"),
                t("2024-01-02"),
                t("2024-01-02T10:00:00.123"),
                t("2024-01-02T08:00:00Z"),
                t("{\"a\": [1, 2]}"),
                t("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                t("AQL/"),
                t("10:30:00"),
                t("1 day"),
                t("{1,2}"),
            ],
        ),
        Kind::Mysql => (
            "CREATE TABLE ty (a SMALLINT, b INT, c BIGINT, d FLOAT, e DOUBLE, f DECIMAL(10,2), \
             g DECIMAL(30,1), h BOOLEAN, i VARCHAR(10), j CHAR(3), k TEXT, l DATE, m DATETIME(3), n TIMESTAMP NULL, \
             o JSON, p BIGINT UNSIGNED, q VARBINARY(10), r TIME, s YEAR, u ENUM('x','y'))",
            "INSERT INTO ty VALUES (1, 2, 3, 0.1, 2.5, 12.50, 12345678901234567890123456789.5, true, 'v', 'ch', 't', \
             '2024-01-02', '2024-01-02 10:00:00.123', '2024-01-02 10:00:00', '{\"a\": [1, 2]}', \
             18446744073709551615, X'0102FF', '10:30:00', 2024, 'y')",
            vec![
                Value::Int(1),
                Value::Int(2),
                Value::Int(3),
                Value::Float(0.1),
                Value::Float(2.5),
                Value::Float(12.5),
                t("12345678901234567890123456789.5"),
                Value::Bool(true),
                t("v"),
                t("ch"),
                t("t"),
                t("2024-01-02"),
                t("2024-01-02T10:00:00.123"),
                t("2024-01-02T10:00:00Z"),
                t("{\"a\": [1, 2]}"),
                t("18446744073709551615"),
                t("AQL/"),
                t("10:30:00"),
                Value::Int(2024),
                t("y"),
            ],
        ),
        Kind::Sqlite => (
            "CREATE TABLE ty (a INTEGER, b REAL, c TEXT, d BLOB, e BOOLEAN, f DATE, g NUMERIC)",
            "INSERT INTO ty VALUES (1, 2.5, 'x', X'0102FF', 1, '2024-01-02', 7)",
            vec![
                Value::Int(1),
                Value::Float(2.5),
                t("x"),
                t("AQL/"),
                Value::Bool(true),
                t("2024-01-02"),
                Value::Int(7),
            ],
        ),
    };
    env.sql(ddl).await;
    env.sql(insert).await;
    env.sql("INSERT INTO ty (a) VALUES (NULL)").await;
    let got = env.read("ty", "a").await;
    assert_eq!(got.rows.len(), 2);
    let (nulls, values) = if got.rows[0][0].is_null() {
        (&got.rows[0], &got.rows[1])
    } else {
        (&got.rows[1], &got.rows[0])
    };
    for (i, (g, e)) in values.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "column {}", got.columns[i]);
    }
    assert!(nulls.iter().all(Value::is_null), "{nulls:?}");
    // The same table copied through the connector into a new table keeps the values.
    let read = env.read("ty", "a").await;
    env.write("ty_copy", WriteMode::Append, &[], vec![read.clone()])
        .await;
    let copied = env.read("ty_copy", "a").await;
    assert_eq!(copied.rows.len(), 2);
}

async fn query_select_and_dml(env: Env) {
    env.sql("CREATE TABLE q (id INTEGER, v VARCHAR(10))").await;
    let ins = env
        .sql("INSERT INTO q VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .await;
    assert_eq!(ins.columns, ["rows_affected"]);
    assert_eq!(ins.rows, vec![vec![Value::Int(3)]]);
    let sel = env
        .connector
        .query(&env.conn, "SELECT id, v FROM q ORDER BY id;", 2)
        .await
        .unwrap();
    assert_eq!(sel.columns, ["id", "v"]);
    assert_eq!(
        sel.rows,
        vec![vec![Value::Int(1), t("a")], vec![Value::Int(2), t("b")]]
    );
    let empty = env.sql("SELECT id FROM q WHERE id > 100").await;
    assert_eq!(empty.columns, ["id"]);
    assert!(empty.rows.is_empty());
    let err = env
        .connector
        .query(&env.conn, "SELECT nope FROM q", 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Read);
    assert!(err.message.contains("nope"), "{}", err.message);
    let tables = env.connector.list_objects(&env.conn).await.unwrap();
    assert_eq!(
        tables
            .iter()
            .map(|o| (o.name.as_str(), o.kind.as_str()))
            .collect::<Vec<_>>(),
        [("q", "table")]
    );
    let msg = env.connector.test(&env.conn).await.unwrap();
    assert!(msg.starts_with("connected to"), "{msg}");
}

async fn missing_table_without_create(env: Env) {
    let mut req = sink_req("absent", WriteMode::Append, &[]);
    req.create = false;
    let err = match env.connector.open_sink(&env.conn, req, &env.ctx()).await {
        Err(e) => e,
        Ok(_) => panic!("open_sink must fail for a missing table with create=false"),
    };
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(
        err.message.contains("absent") && err.message.contains("create=true"),
        "{}",
        err.message
    );
    let err = match env
        .connector
        .open_sink(&env.conn, sink_req("x", WriteMode::Merge, &[]), &env.ctx())
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("merge without keys must fail"),
    };
    assert_eq!(err.kind, ErrorKind::Config);
    let err = match env
        .connector
        .open_source(
            &env.conn,
            source_req("absent", Props::new(), None, 10),
            &env.ctx(),
        )
        .await
    {
        Err(e) => e,
        Ok(mut s) => s.next_batch().await.unwrap_err(),
    };
    assert!(err.message.contains("absent"), "{}", err.message);
}

async fn failed_batch_keeps_earlier_batches(env: Env) {
    env.write(
        "f",
        WriteMode::Merge,
        &["id"],
        vec![batch(
            &["id", "n"],
            vec![vec![Value::Int(1), Value::Int(1)]],
        )],
    )
    .await;
    // commit_rows=1 commits every batch on its own (tests/groups.rs covers larger groups).
    let mut req = sink_req("f", WriteMode::Merge, &["id"]);
    req.options = Props::new().with("commit_rows", "1");
    let mut sink = env
        .connector
        .open_sink(&env.conn, req, &env.ctx())
        .await
        .unwrap();
    sink.write(batch(
        &["id", "n"],
        vec![vec![Value::Int(2), Value::Int(2)]],
    ))
    .await
    .unwrap();
    // A null key violates the primary key: the whole batch fails, earlier batches stay.
    let err = sink
        .write(batch(
            &["id", "n"],
            vec![
                vec![Value::Int(3), Value::Int(3)],
                vec![Value::Null, Value::Int(4)],
            ],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Write);
    assert!(err.message.contains("said:"), "{}", err.message);
    let ids: Vec<Value> = env
        .read("f", "id")
        .await
        .rows
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(ids, [Value::Int(1), Value::Int(2)]);
}

macro_rules! all_dialects {
    ($($name:ident),* $(,)?) => {
        mod sqlite { use super::*; $(#[tokio::test(flavor = "multi_thread")] async fn $name() { with_env(Kind::Sqlite, super::$name).await } )* }
        mod postgres { use super::*; $(#[tokio::test(flavor = "multi_thread")] async fn $name() { with_env(Kind::Postgres, super::$name).await } )* }
        mod mysql { use super::*; $(#[tokio::test(flavor = "multi_thread")] async fn $name() { with_env(Kind::Mysql, super::$name).await } )* }
    };
}

all_dialects!(
    create_and_append,
    merge,
    merge_creates_unique_index_on_existing_table,
    replace,
    replace_keeps_serial_default,
    schema_evolution,
    incremental,
    streams_in_batches,
    awkward_identifiers,
    text_escaping,
    native_types,
    query_select_and_dml,
    missing_table_without_create,
    failed_batch_keeps_earlier_batches,
);

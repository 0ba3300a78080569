//! Writing files: temp-then-rename, abort, modes, new columns, formats and placeholders.

mod common;

use common::*;
use etl_file::FileConnector;
use etl_model::{Batch, Connector, ErrorKind, Value, WriteMode};
use std::fs;

fn batch(columns: &[&str], rows: Vec<Vec<Value>>) -> Batch {
    Batch {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    }
}

fn t(v: &str) -> Value {
    Value::Text(v.into())
}

#[tokio::test]
async fn writes_to_hidden_temp_then_renames_on_finish() {
    let dir = tempfile::tempdir().unwrap();
    let c = conn(dir.path());
    let mut sink = open_sink(&c, "out/orders.csv", &[], WriteMode::Append, "run1")
        .await
        .unwrap();
    let n = sink
        .write(batch(
            &["id", "name"],
            vec![
                vec![Value::Int(1), t("a, b")],
                vec![Value::Int(2), Value::Null],
            ],
        ))
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing is visible (committed) before finish");
    // Before finish only the hidden temporary file exists, so no reader sees a partial file.
    assert_eq!(all_files(dir.path()), vec!["out/.orders.csv.run1.tmp"]);
    let listed = FileConnector::new().list_objects(&c).await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert_eq!(all_files(dir.path()), vec!["out/orders.csv"]);
    assert_eq!(
        fs::read_to_string(dir.path().join("out/orders.csv")).unwrap(),
        "id,name\n1,\"a, b\"\n2,\n"
    );
}

#[tokio::test]
async fn abort_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let c = conn(dir.path());
    let mut sink = open_sink(&c, "orders.json", &[], WriteMode::Replace, "r2")
        .await
        .unwrap();
    sink.write(batch(&["id"], vec![vec![Value::Int(1)]]))
        .await
        .unwrap();
    sink.abort().await.unwrap();
    assert!(
        all_files(dir.path()).is_empty(),
        "{:?}",
        all_files(dir.path())
    );
    // Dropping a sink without finish or abort cleans up too.
    let mut sink = open_sink(&c, "orders.json", &[], WriteMode::Replace, "r3")
        .await
        .unwrap();
    sink.write(batch(&["id"], vec![vec![Value::Int(1)]]))
        .await
        .unwrap();
    drop(sink);
    assert!(all_files(dir.path()).is_empty());
}

#[tokio::test]
async fn failed_replace_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = conn(dir.path());
    fs::write(dir.path().join("daily.csv"), "old\n1\n").unwrap();
    let mut sink = open_sink(&c, "daily.csv", &[], WriteMode::Replace, "r")
        .await
        .unwrap();
    sink.write(batch(&["new"], vec![vec![Value::Int(2)]]))
        .await
        .unwrap();
    sink.abort().await.unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("daily.csv")).unwrap(),
        "old\n1\n"
    );
}

#[tokio::test]
async fn replace_overwrites_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = conn(dir.path());
    fs::write(dir.path().join("daily.csv"), "old\n1\n").unwrap();
    let mut sink = open_sink(&c, "daily.csv", &[], WriteMode::Replace, "r")
        .await
        .unwrap();
    sink.write(batch(&["new"], vec![vec![Value::Int(2)]]))
        .await
        .unwrap();
    sink.finish().await.unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("daily.csv")).unwrap(),
        "new\n2\n"
    );
    assert_eq!(all_files(dir.path()), vec!["daily.csv"]);
}

#[tokio::test]
async fn append_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let c = conn(dir.path());
    fs::write(dir.path().join("daily.csv"), "old\n").unwrap();
    let err = match open_sink(&c, "daily.csv", &[], WriteMode::Append, "r").await {
        Err(e) => e,
        Ok(_) => panic!("append over an existing file must fail"),
    };
    assert_eq!(err.kind, ErrorKind::Write);
    assert!(
        err.message.contains("'daily.csv' already exists"),
        "{}",
        err.message
    );
    assert!(err.message.contains("{run_id}"), "{}", err.message);
    assert!(err.message.contains("mode=replace"), "{}", err.message);

    // A file appearing while the run writes is not overwritten either.
    let mut sink = open_sink(&c, "late.csv", &[], WriteMode::Append, "r")
        .await
        .unwrap();
    sink.write(batch(&["a"], vec![vec![Value::Int(1)]]))
        .await
        .unwrap();
    fs::write(dir.path().join("late.csv"), "someone else's\n").unwrap();
    let err = sink.finish().await.unwrap_err();
    assert!(
        err.message.contains("'late.csv' already exists"),
        "{}",
        err.message
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("late.csv")).unwrap(),
        "someone else's\n"
    );
    assert_eq!(all_files(dir.path()), vec!["daily.csv", "late.csv"]);
}

#[tokio::test]
async fn merge_is_unsupported_with_alternatives() {
    let dir = tempfile::tempdir().unwrap();
    let err = match open_sink(&conn(dir.path()), "x.csv", &[], WriteMode::Merge, "r").await {
        Err(e) => e,
        Ok(_) => panic!("merge must be refused"),
    };
    assert_eq!(err.kind, ErrorKind::Unsupported);
    assert!(err.message.contains("mode=replace"), "{}", err.message);
}

#[tokio::test]
async fn new_columns_in_later_batches_are_kept_in_csv() {
    let dir = tempfile::tempdir().unwrap();
    let c = conn(dir.path());
    let mut sink = open_sink(&c, "grow.csv", &[], WriteMode::Replace, "r")
        .await
        .unwrap();
    sink.write(batch(
        &["id", "name"],
        vec![vec![Value::Int(1), t("a")], vec![Value::Int(2), t("b")]],
    ))
    .await
    .unwrap();
    // New column, columns in another order, one column missing.
    sink.write(batch(&["email", "id"], vec![vec![t("c@x"), Value::Int(3)]]))
        .await
        .unwrap();
    sink.write(batch(
        &["id", "name", "email", "score"],
        vec![vec![Value::Int(4), t("d"), Value::Null, Value::Float(1.5)]],
    ))
    .await
    .unwrap();
    sink.finish().await.unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("grow.csv")).unwrap(),
        "id,name,email,score\n1,a,,\n2,b,,\n3,,c@x,\n4,d,,1.5\n"
    );
    assert_eq!(all_files(dir.path()), vec!["grow.csv"]);
    // And it reads back with all four columns.
    let batches = read_batches(&c, "grow.csv", &[], 10).await.unwrap();
    assert_eq!(batches[0].columns, vec!["id", "name", "email", "score"]);
    assert_eq!(batches[0].len(), 4);
}

#[tokio::test]
async fn headerless_tab_and_semicolon_output() {
    let dir = tempfile::tempdir().unwrap();
    let c = conn(dir.path());
    let mut sink = open_sink(&c, "a.tsv", &[("header", "false")], WriteMode::Replace, "r")
        .await
        .unwrap();
    sink.write(batch(&["a", "b"], vec![vec![t("x y"), Value::Bool(true)]]))
        .await
        .unwrap();
    sink.finish().await.unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("a.tsv")).unwrap(),
        "x y\ttrue\n"
    );
    let mut sink = open_sink(&c, "b.csv", &[("delimiter", ";")], WriteMode::Replace, "r")
        .await
        .unwrap();
    sink.write(batch(&["a", "b"], vec![vec![t("1;2"), Value::Float(2.5)]]))
        .await
        .unwrap();
    sink.finish().await.unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("b.csv")).unwrap(),
        "a;b\n\"1;2\";2.5\n"
    );
}

#[tokio::test]
async fn single_column_nulls_do_not_become_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let c = conn(dir.path());
    let mut sink = open_sink(&c, "one.csv", &[], WriteMode::Replace, "r")
        .await
        .unwrap();
    sink.write(batch(
        &["v"],
        vec![vec![t("a")], vec![Value::Null], vec![t("b")]],
    ))
    .await
    .unwrap();
    sink.finish().await.unwrap();
    let batches = read_batches(&c, "one.csv", &[], 10).await.unwrap();
    assert_eq!(
        texts(&batches).1,
        vec![vec![s("a")], vec![None], vec![s("b")]]
    );
}

#[tokio::test]
async fn json_and_ndjson_output() {
    let dir = tempfile::tempdir().unwrap();
    let c = conn(dir.path());
    let rows = || {
        vec![
            batch(&["id", "name"], vec![vec![Value::Int(1), t("a \"q\"")]]),
            batch(
                &["id", "extra"],
                vec![
                    vec![Value::Int(2), Value::Float(0.5)],
                    vec![Value::Int(3), Value::Null],
                ],
            ),
        ]
    };
    for (name, opts) in [
        ("o.json", vec![]),
        ("p.json", vec![("pretty", "true")]),
        ("o.ndjson", vec![]),
    ] {
        let mut sink = open_sink(&c, name, &opts, WriteMode::Replace, "r")
            .await
            .unwrap();
        for b in rows() {
            sink.write(b).await.unwrap();
        }
        sink.finish().await.unwrap();
    }
    let expected = serde_json::json!([
        {"id": 1, "name": "a \"q\""},
        {"id": 2, "extra": 0.5},
        {"id": 3, "extra": null}
    ]);
    for name in ["o.json", "p.json"] {
        let text = fs::read_to_string(dir.path().join(name)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, expected, "{name}");
    }
    assert!(
        fs::read_to_string(dir.path().join("p.json"))
            .unwrap()
            .contains("\n    \"id\": 1")
    );
    let nd = fs::read_to_string(dir.path().join("o.ndjson")).unwrap();
    assert_eq!(
        nd,
        "{\"id\":1,\"name\":\"a \\\"q\\\"\"}\n{\"id\":2,\"extra\":0.5}\n{\"id\":3,\"extra\":null}\n"
    );
    // Round trip through the source.
    let batches = read_batches(&c, "o.json", &[], 10).await.unwrap();
    assert_eq!(
        batches[0].rows[2],
        vec![Value::Int(3), Value::Null, Value::Null]
    );
}

#[tokio::test]
async fn empty_run_still_writes_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = conn(dir.path());
    for name in ["e.json", "e.csv", "e.ndjson"] {
        let mut sink = open_sink(&c, name, &[], WriteMode::Replace, "r")
            .await
            .unwrap();
        sink.finish().await.unwrap();
    }
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("e.json")).unwrap()).unwrap();
    assert_eq!(json, serde_json::json!([]));
    assert_eq!(fs::read_to_string(dir.path().join("e.csv")).unwrap(), "");
    // An empty batch still fixes the CSV header.
    let mut sink = open_sink(&c, "h.csv", &[], WriteMode::Replace, "r")
        .await
        .unwrap();
    sink.write(batch(&["a", "b"], vec![])).await.unwrap();
    sink.finish().await.unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("h.csv")).unwrap(),
        "a,b\n"
    );
}

#[tokio::test]
async fn placeholders_and_missing_directory_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let target_dir = dir.path().join("not/yet");
    let c = conn(&target_dir);
    let before = chrono::Utc::now().format("%Y%m%d").to_string();
    let mut sink = open_sink(
        &c,
        "exports/orders_{date}_{run_id}.ndjson",
        &[],
        WriteMode::Append,
        "run-7",
    )
    .await
    .unwrap();
    sink.write(batch(&["id"], vec![vec![Value::Int(1)]]))
        .await
        .unwrap();
    sink.finish().await.unwrap();
    let after = chrono::Utc::now().format("%Y%m%d").to_string();
    let files = all_files(&target_dir);
    // The date could roll over at midnight during the test; either side is right.
    assert!(
        files == vec![format!("exports/orders_{before}_run-7.ndjson")]
            || files == vec![format!("exports/orders_{after}_run-7.ndjson")],
        "{files:?}"
    );

    let err = match open_sink(&c, "x_{week}.csv", &[], WriteMode::Append, "r").await {
        Err(e) => e,
        Ok(_) => panic!("unknown placeholder must fail"),
    };
    assert!(
        err.message.contains("unknown placeholder '{week}'"),
        "{}",
        err.message
    );
    for bad in ["../x.csv", "/tmp/x.csv", "out/*.csv", "out/"] {
        let err = match open_sink(&c, bad, &[], WriteMode::Append, "r").await {
            Err(e) => e,
            Ok(_) => panic!("{bad} must be refused"),
        };
        assert_eq!(err.kind, ErrorKind::Config, "{bad}: {}", err.message);
    }
    let err = match open_sink(&c, "noext", &[], WriteMode::Append, "r").await {
        Err(e) => e,
        Ok(_) => panic!("a target without a format must be refused"),
    };
    assert!(
        err.message.contains("destination.format"),
        "{}",
        err.message
    );
    let mut sink = open_sink(&c, "noext", &[("format", "json")], WriteMode::Append, "r")
        .await
        .unwrap();
    sink.finish().await.unwrap();
    assert!(target_dir.join("noext").is_file());
}

#[tokio::test]
async fn two_runs_writing_at_once_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let c = conn(dir.path());
    let mut a = open_sink(&c, "o_{run_id}.csv", &[], WriteMode::Append, "a")
        .await
        .unwrap();
    let mut b = open_sink(&c, "o_{run_id}.csv", &[], WriteMode::Append, "b")
        .await
        .unwrap();
    a.write(batch(&["x"], vec![vec![Value::Int(1)]]))
        .await
        .unwrap();
    b.write(batch(&["x"], vec![vec![Value::Int(2)]]))
        .await
        .unwrap();
    b.finish().await.unwrap();
    a.finish().await.unwrap();
    assert_eq!(all_files(dir.path()), vec!["o_a.csv", "o_b.csv"]);
}

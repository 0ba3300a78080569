//! Reading JSON documents (streamed, with records_path) and NDJSON files.

mod common;

use common::*;
use etl_model::{ErrorKind, Value};
use std::fs;

#[tokio::test]
async fn json_array_records_are_flattened() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("users.json"),
        r#"[{"id": 1, "name": "Ann", "address": {"city": "Paris"}, "tags": ["a","b"]},
            {"id": 2, "name": "Bob", "score": 1.5, "active": true}]"#,
    )
    .unwrap();
    let batches = read_batches(&conn(dir.path()), "users.json", &[], 100)
        .await
        .unwrap();
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(
        b.columns,
        vec!["id", "name", "address_city", "tags", "score", "active"]
    );
    assert_eq!(
        b.rows[0],
        vec![
            Value::Int(1),
            Value::Text("Ann".into()),
            Value::Text("Paris".into()),
            Value::Text(r#"["a","b"]"#.into()),
            Value::Null,
            Value::Null
        ]
    );
    assert_eq!(b.rows[1][4], Value::Float(1.5));
    assert_eq!(b.rows[1][5], Value::Bool(true));
}

#[tokio::test]
async fn records_path_finds_the_array_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("api.json"),
        r#"{"meta": {"items": "not these", "count": 3},
            "data": {"total": 3, "items": [{"id": 1}, {"id": 2}, {"id": 3}], "after": [1,2]},
            "items": [{"id": 99}]}"#,
    )
    .unwrap();
    for path in ["data.items", "$.data.items"] {
        let batches = read_batches(&conn(dir.path()), "api.json", &[("records_path", path)], 2)
            .await
            .unwrap();
        assert_eq!(
            batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(batches[1].rows[0][0], Value::Int(3));
    }
    // A path to one object reads it as one record.
    let batches = read_batches(
        &conn(dir.path()),
        "api.json",
        &[("records_path", "meta")],
        10,
    )
    .await
    .unwrap();
    assert_eq!(batches[0].columns, vec!["items", "count"]);
}

#[tokio::test]
async fn records_path_errors_name_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("api.json"),
        r#"{"data": {"rows": [], "total": 0}, "ok": true}"#,
    )
    .unwrap();
    let err = read_batches(
        &conn(dir.path()),
        "api.json",
        &[("records_path", "data.items")],
        10,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Read);
    assert_eq!(
        err.message,
        "api.json: source.records_path 'data.items' not found: 'data' has no 'items' \
         (its keys are rows, total); set source.records_path to the dot path of the records array"
    );
    let err = read_batches(
        &conn(dir.path()),
        "api.json",
        &[("records_path", "data.rows.2")],
        10,
    )
    .await
    .unwrap_err();
    assert!(
        err.message
            .contains("'data.rows' has no '2' (it is an array of 0 element(s))"),
        "{}",
        err.message
    );
    let err = read_batches(&conn(dir.path()), "api.json", &[("records_path", "ok")], 10)
        .await
        .unwrap_err();
    assert!(
        err.message.contains("invalid type: boolean `true`"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("check source.records_path 'ok'"),
        "{}",
        err.message
    );
    // An object at the top without records_path is one record.
    let batches = read_batches(&conn(dir.path()), "api.json", &[], 10)
        .await
        .unwrap();
    assert_eq!(batches[0].columns, vec!["data_rows", "data_total", "ok"]);
}

#[tokio::test]
async fn invalid_json_names_line_and_suggests_ndjson() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("bad.json"), "[{\"a\": 1},\n {\"a\": }]").unwrap();
    let err = read_batches(&conn(dir.path()), "bad.json", &[], 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Read);
    assert!(
        err.message
            .starts_with("bad.json line 2, column 8: invalid JSON (expected value)"),
        "{}",
        err.message
    );
    fs::write(dir.path().join("lines.json"), "{\"a\": 1}\n{\"a\": 2}\n").unwrap();
    let err = read_batches(&conn(dir.path()), "lines.json", &[], 10)
        .await
        .unwrap_err();
    assert!(
        err.message.contains("trailing characters"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("set source.format=ndjson"),
        "{}",
        err.message
    );
    let batches = read_batches(&conn(dir.path()), "lines.json", &[("format", "ndjson")], 10)
        .await
        .unwrap();
    assert_eq!(batches[0].len(), 2);
}

#[tokio::test]
async fn ndjson_lines_with_blank_lines_and_crlf() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("events.ndjson"),
        "{\"id\":1,\"e\":\"open\"}\r\n\r\n{\"id\":2,\"user\":{\"id\":7}}\n{\"id\":3}",
    )
    .unwrap();
    fs::write(dir.path().join("more.jsonl"), "{\"id\":4}\n").unwrap();
    let batches = read_batches(
        &conn(dir.path()),
        "*.*json*",
        &[("include_file_name", "true")],
        2,
    )
    .await
    .unwrap();
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![2, 2]
    );
    assert_eq!(batches[0].columns, vec!["id", "e", "_file", "user_id"]);
    assert_eq!(
        batches[0].rows[1],
        vec![
            Value::Int(2),
            Value::Null,
            Value::Text("events.ndjson".into()),
            Value::Int(7)
        ]
    );
    assert_eq!(batches[1].rows[1][0], Value::Int(4));
    assert_eq!(
        batches[1].rows[1][batches[1].column_index("_file").unwrap()],
        Value::Text("more.jsonl".into())
    );
}

#[tokio::test]
async fn bad_ndjson_line_fails_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("e.ndjson"),
        "{\"id\":1}\n{\"id\":2\n{\"id\":3}\n",
    )
    .unwrap();
    let err = read_batches(&conn(dir.path()), "e.ndjson", &[], 10)
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "e.ndjson line 2, column 7: invalid JSON (EOF while parsing an object); fix the line or \
         set source.on_error=skip"
    );
    let (ctx, log) = ctx();
    let batches = read_batches_ctx(
        &conn(dir.path()),
        "e.ndjson",
        &[("on_error", "skip")],
        10,
        &ctx,
    )
    .await
    .unwrap();
    let ids: Vec<_> = batches[0].rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, vec![Value::Int(1), Value::Int(3)]);
    assert!(log.lines("warn")[0].contains("e.ndjson line 2, column 7"));
}

#[tokio::test]
async fn records_path_on_csv_or_ndjson_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("e.ndjson"), "{\"id\":1}\n").unwrap();
    let err = read_batches(
        &conn(dir.path()),
        "e.ndjson",
        &[("records_path", "data")],
        10,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(
        err.message.contains("applies to JSON documents"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn large_json_array_streams_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("{\"data\": [");
    for i in 0..50_000 {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            "{{\"id\":{i},\"name\":\"n{i}\",\"nested\":{{\"v\":{}}}}}",
            i * 2
        ));
    }
    text.push_str("]}");
    fs::write(dir.path().join("big.json"), text).unwrap();
    let batches = read_batches(
        &conn(dir.path()),
        "big.json",
        &[("records_path", "data")],
        7_000,
    )
    .await
    .unwrap();
    assert_eq!(batches.len(), 8);
    assert!(batches[..7].iter().all(|b| b.len() == 7_000));
    assert_eq!(batches[7].len(), 1_000);
    let mut expected = 0i64;
    for b in &batches {
        assert_eq!(b.columns, vec!["id", "name", "nested_v"]);
        for r in &b.rows {
            assert_eq!(r[0], Value::Int(expected));
            assert_eq!(r[2], Value::Int(expected * 2));
            expected += 1;
        }
    }
}

#[tokio::test]
async fn numeric_segments_index_arrays() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("r.json"),
        r#"{"results": [{"rows": [{"a": 1}]}, {"rows": [{"a": 2}, {"a": 3}]}]}"#,
    )
    .unwrap();
    let batches = read_batches(
        &conn(dir.path()),
        "r.json",
        &[("records_path", "results.1.rows")],
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        batches[0].rows,
        vec![vec![Value::Int(2)], vec![Value::Int(3)]]
    );
}

//! Reading CSV files: dialects, headers, globs, malformed rows and path safety.

mod common;

use common::*;
use etl_model::{ErrorKind, Value};
use std::fs;

#[tokio::test]
async fn quotes_embedded_newlines_and_delimiters_survive() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("people.csv"),
        "id,name,note\n1,\"Smith, John\",\"line one\nline two\"\n2,\"say \"\"hi\"\"\",\n3,,plain\n",
    )
    .unwrap();
    let batches = read_batches(&conn(dir.path()), "people.csv", &[], 100)
        .await
        .unwrap();
    let (cols, rows) = texts(&batches);
    assert_eq!(cols, vec!["id", "name", "note"]);
    assert_eq!(
        rows,
        vec![
            vec![s("1"), s("Smith, John"), s("line one\nline two")],
            vec![s("2"), s("say \"hi\""), None],
            vec![s("3"), None, s("plain")],
        ]
    );
    // CSV values are text; destinations infer the types.
    assert_eq!(batches[0].rows[0][0], Value::Text("1".into()));
}

#[tokio::test]
async fn tab_delimited_by_option_or_by_tsv_extension() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.txt"), "x\ty\n1\thello, world\n").unwrap();
    fs::write(dir.path().join("b.tsv"), "x\ty\n2\tb\n").unwrap();
    for delim in ["\\t", "\t", "tab"] {
        let batches = read_batches(
            &conn(dir.path()),
            "a.txt",
            &[("format", "csv"), ("delimiter", delim)],
            10,
        )
        .await
        .unwrap();
        assert_eq!(
            texts(&batches),
            (
                vec!["x".to_string(), "y".to_string()],
                vec![vec![s("1"), s("hello, world")]]
            ),
            "delimiter {delim:?}"
        );
    }
    let batches = read_batches(&conn(dir.path()), "b.tsv", &[], 10)
        .await
        .unwrap();
    assert_eq!(texts(&batches).1, vec![vec![s("2"), s("b")]]);
}

#[tokio::test]
async fn semicolon_and_single_quote_dialect() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("eu.csv"), "a;b\n'x;y';2,5\n").unwrap();
    let batches = read_batches(
        &conn(dir.path()),
        "eu.csv",
        &[("delimiter", ";"), ("quote", "'")],
        10,
    )
    .await
    .unwrap();
    assert_eq!(texts(&batches).1, vec![vec![s("x;y"), s("2,5")]]);
}

#[tokio::test]
async fn headerless_files_get_numbered_columns() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("raw.csv"), "1,a,true\n2,b,false\n").unwrap();
    let batches = read_batches(&conn(dir.path()), "raw.csv", &[("header", "false")], 10)
        .await
        .unwrap();
    let (cols, rows) = texts(&batches);
    assert_eq!(cols, vec!["col1", "col2", "col3"]);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1], vec![s("2"), s("b"), s("false")]);
}

#[tokio::test]
async fn bom_blank_and_duplicate_headers_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("excel.csv"),
        b"\xEF\xBB\xBFid, name ,name,\n1,a,b,c\n",
    )
    .unwrap();
    let batches = read_batches(&conn(dir.path()), "excel.csv", &[], 10)
        .await
        .unwrap();
    assert_eq!(batches[0].columns, vec!["id", "name", "name_2", "col4"]);
}

#[tokio::test]
async fn glob_reads_files_in_name_order_with_file_column() {
    let dir = tempfile::tempdir().unwrap();
    let orders = dir.path().join("orders");
    fs::create_dir_all(orders.join("2024")).unwrap();
    fs::write(orders.join("b.csv"), "id\n3\n4\n").unwrap();
    fs::write(orders.join("a.csv"), "id\n1\n2\n").unwrap();
    fs::write(orders.join("2024/c.csv"), "id\n5\n").unwrap();
    fs::write(orders.join("notes.txt"), "ignored").unwrap();
    // Hidden files (such as a destination's in-progress temp file) are never matched.
    fs::write(orders.join(".d.csv.run1.tmp"), "id\n99\n").unwrap();
    fs::write(orders.join(".hidden.csv"), "id\n98\n").unwrap();

    let c = conn(dir.path());
    let batches = read_batches(&c, "orders/*.csv", &[("include_file_name", "true")], 3)
        .await
        .unwrap();
    let (cols, rows) = texts(&batches);
    assert_eq!(cols, vec!["id", "_file"]);
    assert_eq!(
        rows,
        vec![
            vec![s("1"), s("orders/a.csv")],
            vec![s("2"), s("orders/a.csv")],
            vec![s("3"), s("orders/b.csv")],
            vec![s("4"), s("orders/b.csv")],
        ]
    );
    // Files with the same header share batches: 4 rows in batches of 3.
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![3, 1]
    );

    let all = read_batches(&c, "orders/**/*.csv", &[], 100).await.unwrap();
    let ids: Vec<_> = texts(&all)
        .1
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["5", "1", "2", "3", "4"],
        "2024/c.csv sorts before a.csv"
    );

    fs::create_dir(dir.path().join("returns")).unwrap();
    fs::write(dir.path().join("returns/r.csv"), "id\n6\n").unwrap();
    let both = read_batches(&c, "{orders,returns}/?.csv", &[], 100)
        .await
        .unwrap();
    let ids: Vec<_> = texts(&both)
        .1
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(ids, vec!["1", "2", "3", "4", "6"]);
}

#[tokio::test]
async fn files_with_different_headers_make_separate_batches() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("1.csv"), "a,b\n1,2\n").unwrap();
    fs::write(dir.path().join("2.csv"), "a,c\n3,4\n").unwrap();
    let batches = read_batches(&conn(dir.path()), "*.csv", &[], 100)
        .await
        .unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].columns, vec!["a", "b"]);
    assert_eq!(batches[1].columns, vec!["a", "c"]);
}

#[tokio::test]
async fn nothing_matching_is_not_found_naming_pattern_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.csv"), "x\n1\n").unwrap();
    let err = read_batches(&conn(dir.path()), "orders/*.csv", &[], 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(err.message.contains("'orders/*.csv'"), "{}", err.message);
    assert!(
        err.message
            .contains(&*dir.path().canonicalize().unwrap().to_string_lossy()),
        "{}",
        err.message
    );
    let err = read_batches(&conn(dir.path()), "missing.csv", &[], 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(
        err.message.contains("file 'missing.csv' not found"),
        "{}",
        err.message
    );

    let gone = dir.path().join("nope");
    let err = read_batches(&conn(&gone), "*.csv", &[], 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(err.message.contains("does not exist"), "{}", err.message);
}

#[tokio::test]
async fn malformed_row_fails_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("a,b,c\n");
    for i in 0..15 {
        text.push_str(&format!("{i},x,y\n"));
    }
    text.push_str("15,short\n16,x,y\n");
    fs::write(dir.path().join("orders.csv"), text).unwrap();
    let err = read_batches(&conn(dir.path()), "orders.csv", &[], 5)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Read);
    assert_eq!(
        err.message,
        "orders.csv line 17: expected 3 fields, found 2; fix the row or set source.on_error=skip"
    );
}

#[tokio::test]
async fn malformed_rows_skipped_with_warnings() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("o.csv"), "a,b\n1,2\n3\n4,5,6\n7,8\n").unwrap();
    let (ctx, log) = ctx();
    let batches = read_batches_ctx(
        &conn(dir.path()),
        "o.csv",
        &[("on_error", "skip")],
        10,
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(
        texts(&batches).1,
        vec![vec![s("1"), s("2")], vec![s("7"), s("8")]]
    );
    let warnings = log.lines("warn");
    assert!(
        warnings.contains(
            &"o.csv line 3: expected 2 fields, found 1; the row was skipped (source.on_error=skip)"
                .to_string()
        ),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("line 4: expected 2 fields, found 3"))
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("skipped 2 malformed row(s) in all"))
    );
}

#[tokio::test]
async fn skip_warnings_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("a,b\n");
    for _ in 0..500 {
        text.push_str("bad\n1,2\n");
    }
    fs::write(dir.path().join("o.csv"), text).unwrap();
    let (ctx, log) = ctx();
    let batches = read_batches_ctx(
        &conn(dir.path()),
        "o.csv",
        &[("on_error", "skip")],
        64,
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 500);
    let warnings = log.lines("warn");
    assert!(warnings.len() < 110, "{} warnings", warnings.len());
    assert!(
        warnings
            .last()
            .unwrap()
            .contains("skipped 500 malformed row(s) in all")
    );
}

#[tokio::test]
async fn invalid_utf8_is_replaced_with_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("latin.csv"), b"name\ncaf\xE9\nna\xEFve\n").unwrap();
    let (ctx, log) = ctx();
    let batches = read_batches_ctx(&conn(dir.path()), "latin.csv", &[], 10, &ctx)
        .await
        .unwrap();
    assert_eq!(
        texts(&batches).1,
        vec![vec![s("caf\u{FFFD}")], vec![s("na\u{FFFD}ve")]]
    );
    let warnings = log.lines("warn");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("latin.csv line 2: the text is not UTF-8"));
}

#[tokio::test]
async fn empty_and_header_only_files_yield_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("empty.csv"), "").unwrap();
    fs::write(dir.path().join("head.csv"), "a,b\n").unwrap();
    let batches = read_batches(&conn(dir.path()), "*.csv", &[], 10)
        .await
        .unwrap();
    assert!(batches.is_empty());
}

#[tokio::test]
async fn paths_outside_the_directory_are_refused() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("inbox");
    fs::create_dir(&dir).unwrap();
    fs::write(outer.path().join("secret.csv"), "s\n1\n").unwrap();
    for object in [
        "../secret.csv",
        "../*.csv",
        "/etc/passwd",
        "a/../../secret.csv",
    ] {
        let err = read_batches(&conn(&dir), object, &[], 10)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "{object}: {}", err.message);
        assert!(
            err.message.contains(&format!("object '{object}'")),
            "{}",
            err.message
        );
    }
}

#[cfg(unix)]
#[tokio::test]
async fn links_leading_outside_are_not_followed() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("inbox");
    fs::create_dir(&dir).unwrap();
    fs::write(outer.path().join("secret.csv"), "s\n1\n").unwrap();
    fs::write(dir.join("ok.csv"), "s\n2\n").unwrap();
    std::os::unix::fs::symlink(outer.path().join("secret.csv"), dir.join("link.csv")).unwrap();
    std::os::unix::fs::symlink(outer.path(), dir.join("up")).unwrap();

    let err = read_batches(&conn(&dir), "link.csv", &[], 10)
        .await
        .unwrap_err();
    assert!(
        err.message.contains("outside the directory"),
        "{}",
        err.message
    );

    let (ctx, log) = ctx();
    let batches = read_batches_ctx(&conn(&dir), "*.csv", &[], 10, &ctx)
        .await
        .unwrap();
    assert_eq!(texts(&batches).1, vec![vec![s("2")]]);
    assert!(log.lines("warn").iter().any(|w| w.contains("'link.csv'")));

    let err = read_batches(&conn(&dir), "up/*.csv", &[], 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{}", err.message);
}

#[tokio::test]
async fn bad_options_and_unknown_extensions_say_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("data.dat"), "a\n1\n").unwrap();
    let err = read_batches(&conn(dir.path()), "data.dat", &[], 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(
        err.message.contains("source.format=csv|json|ndjson"),
        "{}",
        err.message
    );
    // The connection's format applies when the extension says nothing.
    let batches = read_batches(
        &conn_with(dir.path(), &[("format", "csv")]),
        "data.dat",
        &[],
        10,
    )
    .await
    .unwrap();
    assert_eq!(texts(&batches).1, vec![vec![s("1")]]);

    let err = read_batches(&conn(dir.path()), "data.dat", &[("delimiter", "ab")], 10)
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("'source.delimiter' must be one character"),
        "{}",
        err.message
    );

    let err = read_batches(&conn(dir.path()), "data", &[], 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    fs::create_dir(dir.path().join("sub")).unwrap();
    let err = read_batches(&conn(dir.path()), "sub", &[], 10)
        .await
        .unwrap_err();
    assert!(err.message.contains("is a folder"), "{}", err.message);
}

#[tokio::test]
async fn quoting_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("q.csv"), "a,b\n\"x,y\n").unwrap();
    let batches = read_batches(&conn(dir.path()), "q.csv", &[("quote", "none")], 10)
        .await
        .unwrap();
    assert_eq!(texts(&batches).1, vec![vec![s("\"x"), s("y")]]);
}

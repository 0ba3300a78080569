//! Volume: batch sizes hold on a large generated file, rows stay intact, and a CSV → CSV round
//! trip through the connector reproduces the data.

mod common;

use common::*;
use etl_file::FileConnector;
use etl_model::{Connector, WriteMode};
use std::fmt::Write as _;
use std::fs;

const ROWS: usize = 200_000;

fn generate(path: &std::path::Path) {
    let mut text = String::with_capacity(ROWS * 60);
    text.push_str("id,name,amount,city,note\n");
    for i in 0..ROWS {
        // Every 1000th row has a quoted field with a comma and a newline inside.
        if i.is_multiple_of(1000) {
            writeln!(
                text,
                "{i},name {i},{}.25,\"Paris, FR\",\"multi\nline {i}\"",
                i * 3
            )
            .unwrap();
        } else {
            writeln!(text, "{i},name {i},{}.25,Berlin,", i * 3).unwrap();
        }
    }
    fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_sizes_respected_and_rows_intact() {
    let dir = tempfile::tempdir().unwrap();
    generate(&dir.path().join("big.csv"));
    let c = conn(dir.path());
    let (ctx, _) = ctx();
    let mut source = FileConnector::new()
        .open_source(&c, source_request("big.csv", &[], 7_000), &ctx)
        .await
        .unwrap();
    let mut batches = 0;
    let mut next_id = 0usize;
    while let Some(batch) = source.next_batch().await.unwrap() {
        batches += 1;
        let expected = if next_id + 7_000 <= ROWS {
            7_000
        } else {
            ROWS - next_id
        };
        assert_eq!(batch.len(), expected, "batch {batches}");
        assert_eq!(batch.columns, vec!["id", "name", "amount", "city", "note"]);
        for row in &batch.rows {
            let cells: Vec<_> = row
                .iter()
                .map(|v| v.as_text().map(|t| t.into_owned()))
                .collect();
            assert_eq!(cells[0].as_deref(), Some(next_id.to_string().as_str()));
            assert_eq!(cells[1], Some(format!("name {next_id}")));
            assert_eq!(cells[2], Some(format!("{}.25", next_id * 3)));
            if next_id.is_multiple_of(1000) {
                assert_eq!(cells[3].as_deref(), Some("Paris, FR"));
                assert_eq!(cells[4], Some(format!("multi\nline {next_id}")));
            } else {
                assert_eq!(cells[3].as_deref(), Some("Berlin"));
                assert_eq!(cells[4], None);
            }
            next_id += 1;
        }
    }
    assert_eq!(next_id, ROWS);
    assert_eq!(batches, ROWS.div_ceil(7_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_source_early_stops_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    generate(&dir.path().join("big.csv"));
    let (ctx, _) = ctx();
    let mut source = FileConnector::new()
        .open_source(&conn(dir.path()), source_request("big.csv", &[], 100), &ctx)
        .await
        .unwrap();
    // A preview reads one batch and drops the source; the worker must end, not block forever.
    assert_eq!(source.next_batch().await.unwrap().unwrap().len(), 100);
    drop(source);
    // And a stopped run says so instead of yielding more rows.
    let mut source = FileConnector::new()
        .open_source(&conn(dir.path()), source_request("big.csv", &[], 100), &ctx)
        .await
        .unwrap();
    source.next_batch().await.unwrap().unwrap();
    ctx.cancel.cancel();
    let mut outcome = Ok(Some(etl_model::Batch::default()));
    // At most the batches already queued may still arrive before the stop is noticed.
    for _ in 0..4 {
        outcome = source.next_batch().await;
        if outcome.is_err() {
            break;
        }
    }
    let err = outcome.unwrap_err();
    assert_eq!(err.kind, etl_model::ErrorKind::Canceled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    generate(&dir.path().join("in.csv"));
    let c = conn(dir.path());
    let (ctx, log) = ctx();
    let mut source = FileConnector::new()
        .open_source(&c, source_request("in.csv", &[], 10_000), &ctx)
        .await
        .unwrap();
    let mut sink = FileConnector::new()
        .open_sink(
            &c,
            sink_request("out/copy.csv", &[], WriteMode::Replace, "rt"),
            &ctx,
        )
        .await
        .unwrap();
    let mut written = 0;
    while let Some(batch) = source.next_batch().await.unwrap() {
        written += sink.write(batch).await.unwrap();
    }
    assert_eq!(
        written, 0,
        "nothing is visible before finish renames the file"
    );
    written += sink.finish().await.unwrap();
    assert_eq!(written as usize, ROWS);
    assert!(
        log.lines("info")
            .iter()
            .any(|l| l == "wrote 200000 row(s) to 'out/copy.csv'")
    );
    // Byte-identical: same quoting rules, same terminator, empty fields stay empty.
    assert!(
        fs::read(dir.path().join("in.csv")).unwrap()
            == fs::read(dir.path().join("out/copy.csv")).unwrap(),
        "the copy differs from the original"
    );
}

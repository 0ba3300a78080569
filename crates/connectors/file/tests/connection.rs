//! `test` and `list_objects` against real directories.

mod common;

use common::*;
use etl_file::FileConnector;
use etl_model::{Connector, ErrorKind};
use std::fs;

#[tokio::test]
async fn test_reports_readable_and_writable() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.csv"), "x\n").unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    let msg = FileConnector::new().test(&conn(dir.path())).await.unwrap();
    assert_eq!(
        msg,
        format!(
            "directory '{}' is readable and writable (1 file(s) and 1 folder(s) at the top level)",
            dir.path().display()
        )
    );
    // The probe file is gone again.
    assert_eq!(all_files(dir.path()), vec!["a.csv"]);
}

#[cfg(unix)]
#[tokio::test]
async fn test_says_when_not_writable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    // root ignores permission bits; then the directory really is writable and says so.
    let writable = fs::write(ro.join("probe"), "x").is_ok();
    let _ = fs::remove_file(ro.join("probe"));
    let msg = FileConnector::new().test(&conn(&ro)).await.unwrap();
    if writable {
        assert!(msg.contains("is readable and writable"), "{msg}");
    } else {
        assert!(msg.contains("is readable but NOT writable"), "{msg}");
        assert!(msg.contains("not a destination"), "{msg}");
    }
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn test_on_missing_directory_and_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("later");
    let msg = FileConnector::new().test(&conn(&missing)).await.unwrap();
    assert!(
        msg.contains("does not exist yet; the first flow that writes to it will create it"),
        "{msg}"
    );
    fs::write(dir.path().join("f"), "x").unwrap();
    let err = FileConnector::new()
        .test(&conn(&dir.path().join("f")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(
        err.message.contains("is a file, not a folder"),
        "{}",
        err.message
    );
    let err = FileConnector::new()
        .test(&conn(&dir.path().join("f/under")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{}", err.message);
    assert!(
        err.message.contains("part of the path is a file"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn list_objects_is_recursive_with_size_and_format() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("orders/2024")).unwrap();
    fs::write(dir.path().join("orders/2024/jan.csv"), "id\n1\n").unwrap();
    fs::write(dir.path().join("events.ndjson"), vec![b'x'; 3000]).unwrap();
    fs::write(dir.path().join("readme.txt"), "hi").unwrap();
    fs::write(dir.path().join(".hidden.csv"), "x").unwrap();
    let list = FileConnector::new()
        .list_objects(&conn(dir.path()))
        .await
        .unwrap();
    let shown: Vec<(String, String, String)> = list
        .iter()
        .map(|o| (o.name.clone(), o.kind.clone(), o.detail.clone().unwrap()))
        .collect();
    assert_eq!(
        shown,
        vec![
            (
                "events.ndjson".into(),
                "file".into(),
                "ndjson, 2.9 KB".into()
            ),
            (
                "orders/2024/jan.csv".into(),
                "file".into(),
                "csv, 5 bytes".into()
            ),
            (
                "readme.txt".into(),
                "file".into(),
                "unknown format (set format=), 2 bytes".into()
            ),
        ]
    );
    let err = FileConnector::new()
        .list_objects(&conn(&dir.path().join("nope")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
}

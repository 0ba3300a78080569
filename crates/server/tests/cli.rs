//! The binary as a user runs it: exit codes, readable and JSON output, scripts from stdin,
//! the data directory from the environment.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn bin(data: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_etlworks-agent"));
    c.env("ETLWORKS_AGENT_DATA_DIR", data)
        .env_remove("ETLWORKS_AGENT_SECRET_KEY");
    c
}

fn run(data: &std::path::Path, args: &[&str]) -> Output {
    bin(data).args(args).output().expect("run binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn readable_output_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["host", "list connections"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("warehouse") && stdout.contains("sqlite"),
        "{stdout}"
    );
    assert!(dir.path().join("warehouse.db").exists() || stdout.contains("warehouse.db"));

    let out = run(dir.path(), &["host", "get connection crm"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: unknown connection 'crm'; try 'list connections'"
    );
    assert!(out.stdout.is_empty());

    let out = run(dir.path(), &["host", "frobnicate everything"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown command 'frobnicate"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn json_output_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["host", "--json", "whoami"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"ok": true, "data": {"tenant": "default", "user": "local", "role": "admin"}})
    );

    let out = run(
        dir.path(),
        &["host", "--json", "version; run flow nope; whoami"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2, "a failing statement stops the script: {v}");
    assert_eq!(arr[0]["ok"], true);
    assert_eq!(
        arr[1],
        serde_json::json!({"ok": false, "error": {"code": "not_found", "message": "unknown flow 'nope'; try 'list flows'"}})
    );
}

#[test]
fn script_from_stdin_with_comments() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin(dir.path())
        .args(["host", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"// list what exists\nlist-connections; /* and who I am */ whoami\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["data"][0]["name"], "warehouse");
}

#[test]
fn a_one_shot_host_process_finishes_the_runs_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let mut csv = String::from("id,v\n");
    for i in 0..20_000 {
        csv.push_str(&format!("{i},{}\n", i * 2));
    }
    std::fs::write(inbox.join("big.csv"), csv).unwrap();
    let script = format!(
        "create connection inbox type=file directory='{}'; create flow big source=inbox object=big.csv destination=warehouse target=big batch_size=1000; run flow big",
        inbox.display()
    );
    let out = run(dir.path(), &["host", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Without --wait the process still lets the run finish before exiting.
    let out = run(
        dir.path(),
        &[
            "host",
            "--json",
            "query warehouse sql='select count(*) as n from big'",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["rows"][0]["n"], 20_000, "{v}");
}

#[test]
fn a_bad_secret_key_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin(dir.path())
        .env("ETLWORKS_AGENT_SECRET_KEY", "not-base64!")
        .args(["host", "whoami"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("ETLWORKS_AGENT_SECRET_KEY") && err.contains("base64"),
        "{err}"
    );
}

/// Two processes on one data directory (say the scheduler and a person at the CLI): the second
/// sees the first's run as running, cannot start it again, and can ask it to stop; starting the
/// second process does not mark the first one's run as failed.
#[test]
fn processes_sharing_a_data_directory_coordinate_runs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(common::Api::start(
        (1..=2000).map(|i| common::order(i, "2026-01-01")).collect(),
        None,
    ));
    api.state
        .delay_ms
        .store(200, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let setup = format!(
        "create connection shop type=http url={};
         create flow slow source=shop object=/orders source.records_path=data source.pagination=page source.page_size=10
                destination=warehouse target=slow mode=replace batch_size=10",
        api.url()
    );
    let out = run(dir.path(), &["host", &setup]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let first = bin(dir.path())
        .args(["host", "run flow slow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));

    let out = run(dir.path(), &["host", "--json", "status flow slow"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["running"], true, "{v}");

    let out = run(dir.path(), &["host", "run flow slow"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already running in another process"),
        "{}",
        text(&out.stderr)
    );

    let out = run(dir.path(), &["host", "--json", "stop flow slow"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["in_this_process"], false, "{v}");

    // The first process notices within a heartbeat and exits with its run canceled.
    let done = first.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stderr));
    let out = run(dir.path(), &["host", "--json", "list runs flow=slow"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = v["data"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "the refused start left no run behind: {v}");
    assert_eq!(runs[0]["status"], "canceled", "{v}");
    drop(api);
}

//! `etlworks-agent kb ...` and `search kb` as a user runs them: documents added, searched with
//! the bundled docs, kept per tenant, removed; bad files refused with a clear message.

use std::process::{Command, Output};

fn run(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_etlworks-agent"))
        .env("ETLWORKS_AGENT_DATA_DIR", data)
        .env_remove("ETLWORKS_AGENT_TENANT")
        .args(args)
        .output()
        .expect("run binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn documents_are_added_searched_per_tenant_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("runbooks");
    std::fs::create_dir_all(docs.join("deep")).unwrap();
    std::fs::write(
        docs.join("nightly.md"),
        "# Nightly loads\n\n## When the nightly load fails\n\nPage the on-call engineer and rerun the zebrafish import.\n",
    )
    .unwrap();
    std::fs::write(docs.join("deep/notes.html"), "<html><head><title>Vendor notes</title></head><body><h1>Quokka API</h1><p>The quokka endpoint pages by cursor.</p></body></html>").unwrap();
    std::fs::write(
        docs.join("image.png"),
        [0x89u8, b'P', b'N', b'G', 0, 0, 1, 2],
    )
    .unwrap();

    let out = run(dir.path(), &["kb", "add", docs.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("added 'nightly.md'") && stdout.contains("added 'deep/notes.html'"),
        "{stdout}"
    );

    let out = run(dir.path(), &["kb", "search", "zebrafish", "import"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("[nightly.md#when-the-nightly-load-fails]"),
        "{stdout}"
    );
    let out = run(dir.path(), &["host", "--json", "search kb quokka endpoint"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["results"][0]["source"], "deep/notes.html", "{v}");

    // Another tenant sees the bundled docs, not these documents.
    let out = run(
        dir.path(),
        &["kb", "--tenant", "acme", "search", "zebrafish"],
    );
    assert!(
        text(&out.stdout).contains("Nothing in the knowledge base matches"),
        "{}",
        text(&out.stdout)
    );
    let out = run(
        dir.path(),
        &["kb", "--tenant", "acme", "search", "merge", "keys"],
    );
    assert!(
        text(&out.stdout).contains("docs/"),
        "bundled docs are shared: {}",
        text(&out.stdout)
    );

    let out = run(dir.path(), &["kb", "--json", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["documents"].as_array().unwrap().len(), 2);
    assert!(v["bundled"].as_u64().unwrap() > 10);

    let out = run(dir.path(), &["kb", "remove", "nightly.md"]);
    assert_eq!(out.status.code(), Some(0));
    let out = run(dir.path(), &["kb", "search", "zebrafish"]);
    assert!(text(&out.stdout).contains("Nothing in the knowledge base matches"));
    let out = run(dir.path(), &["kb", "remove", "nightly.md"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has no document named 'nightly.md'"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_binary_file_is_refused_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("photo.md");
    std::fs::write(&bin, [0u8, 159, 146, 150, 0, 1, 2, 3]).unwrap();
    let good = dir.path().join("good.md");
    std::fs::write(&good, "# Good\n\nplatypus facts\n").unwrap();
    let out = run(
        dir.path(),
        &["kb", "add", bin.to_str().unwrap(), good.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused file fails the command"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("photo.md"),
        "the message names the file: {err}"
    );
    let out = run(dir.path(), &["kb", "search", "platypus"]);
    assert!(
        text(&out.stdout).contains("good.md"),
        "the good file was still added: {}",
        text(&out.stdout)
    );
    let out = run(dir.path(), &["host", "search kb"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("missing the QUERY"),
        "{}",
        text(&out.stderr)
    );
}

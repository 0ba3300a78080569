//! The binary as a client (`etlworks-agent tools|tool|chat|chat-stream|session-*`), run as a
//! user runs it: against the real server on a free port for every command, a stream, a
//! multi-turn session and each error class; against a scripted HTTP server for what the real
//! one does not do on demand (a stream held open mid-answer, SSE edge cases, 5xx, 429 with
//! Retry-After, dropped connections) to check incremental printing and the retry rules. And the
//! Python client the server offers at /downloads/etlworks_agent.py, fetched and run.

mod api_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_util::{BIN, Server, cli, temp_data};
use serde_json::Value as Json;

const QUESTION: &str = "how do I schedule a flow?";
const EXAMPLE: &str =
    r#"etlworks-agent tool search_knowledge_base '{"query": "merge keys", "limit": 3}'"#;

/// What one run of the client printed.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// The single `error: ...` line on standard error.
    fn error_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {self:?}");
        assert!(lines[0].starts_with("error: "), "{self:?}");
        assert!(!self.stderr.contains("panicked"), "{self:?}");
        lines[0]
    }

    fn json(&self) -> Json {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs the binary with ETLWORKS_URL / ETLWORKS_API_KEY set only as given.
fn client(url: Option<&str>, key: Option<&str>, args: &[&str]) -> Out {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("ETLWORKS_URL")
        .env_remove("ETLWORKS_API_KEY")
        .env_remove("ETLWORKS_AGENT_DATA_DIR")
        .stdin(Stdio::null());
    if let Some(url) = url {
        command.env("ETLWORKS_URL", url);
    }
    if let Some(key) = key {
        command.env("ETLWORKS_API_KEY", key);
    }
    let output = command.output().expect("run etlworks-agent");
    Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// Creates a key with the binary's `keys create` on the server's data directory.
fn new_key(data: &Path, name: &str, role: &str, tenant: &str) -> String {
    let out = cli(
        data,
        &[
            "keys", "create", "--name", name, "--role", role, "--tenant", tenant,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn is_match(line: &str, prefix: &str, suffix: &str) -> bool {
    line.starts_with(prefix)
        && line.ends_with(suffix)
        && line[prefix.len()..line.len() - suffix.len()]
            .chars()
            .all(|c| c.is_ascii_digit())
        && line.len() > prefix.len() + suffix.len()
}

#[test]
fn every_command_against_the_real_server() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data, &[]);
    let key = server.admin_key();
    let url = server.root.as_str();
    let run = |args: &[&str]| client(Some(url), Some(&key), args);

    // Help names every command and both variables.
    let help = client(None, None, &["--help"]);
    assert_eq!(help.code, 0, "{help:?}");
    for command in [
        "tools",
        "tool",
        "chat",
        "chat-stream",
        "session-create",
        "session-chat",
        "session-chat-stream",
        "session-messages",
        "session-list",
        "session-delete",
    ] {
        assert!(
            help.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} in --help: {}",
            help.stdout
        );
    }
    assert!(help.stdout.contains("ETLWORKS_URL") && help.stdout.contains("ETLWORKS_API_KEY"));

    // tools
    let tools = run(&["tools"]);
    assert_eq!(tools.code, 0, "{tools:?}");
    assert!(tools.stdout.contains("host_cli (agentic)"), "{tools:?}");
    assert!(tools.stdout.contains("search_knowledge_base"), "{tools:?}");
    assert_eq!(tools.stdout.lines().count(), 7, "{tools:?}");
    for flags in [&["--json", "tools"][..], &["tools", "--json"][..]] {
        let as_json = run(flags);
        assert_eq!(as_json.code, 0, "{as_json:?}");
        assert_eq!(as_json.json()["count"], 7);
    }
    // The API address pasted whole works too.
    let pasted = client(
        Some(&format!("{url}/rest/v1/ai-agent/api/")),
        Some(&key),
        &["tools"],
    );
    assert_eq!(pasted.code, 0, "{pasted:?}");

    // tool
    let listed = run(&["tool", "host_cli", r#"{"command": "list connections"}"#]);
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with("warehouse") && l.contains("sqlite")),
        "{listed:?}"
    );
    let no_args = run(&["tool", "host_list_commands"]);
    assert_eq!(no_args.code, 0, "{no_args:?}");
    assert!(no_args.stdout.contains("list connections"), "{no_args:?}");
    let kb = run(&[
        "tool",
        "search_knowledge_base",
        r#"{"query": "merge keys", "limit": 1}"#,
        "--json",
    ]);
    assert_eq!(kb.code, 0, "{kb:?}");
    assert_eq!(kb.json()["data"]["count"], 1, "{kb:?}");

    // A tool that ran and failed: its answer on stdout, one error line, exit 1.
    let failed = run(&[
        "tool",
        "host_cli",
        r#"{"command": "run flow nightly_orders --wait"}"#,
    ]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(
        failed.stdout.contains("unknown flow 'nightly_orders'"),
        "{failed:?}"
    );
    assert_eq!(
        failed.error_line(),
        "error: the tool 'host_cli' ran and failed (code tool_failed)"
    );

    // chat, with and without tools
    let chat = run(&["chat", "list connections"]);
    assert_eq!(chat.code, 0, "{chat:?}");
    assert!(chat.stdout.contains("warehouse (sqlite)"), "{chat:?}");
    let no_tools = run(&["--json", "chat", "list connections", "--no-tools"]);
    assert_eq!(no_tools.code, 0, "{no_tools:?}");
    assert_eq!(no_tools.json()["tools_used"], serde_json::json!([]));

    // chat-stream prints exactly the answer /chat gives, and the tool calls as notes.
    let whole = run(&["chat", "--json", QUESTION]).json()["response"]
        .as_str()
        .unwrap()
        .to_string();
    let streamed = run(&["chat-stream", QUESTION]);
    assert_eq!(streamed.code, 0, "{streamed:?}");
    assert_eq!(streamed.stdout, format!("{whole}\n"));
    let notes: Vec<&str> = streamed.stderr.lines().collect();
    assert_eq!(notes.len(), 2, "{streamed:?}");
    assert!(
        notes[0].starts_with("[tool search_knowledge_base {\"query\": \"how do I schedule a flow")
            && notes[0].ends_with("}]"),
        "{notes:?}"
    );
    assert!(
        is_match(notes[1], "[tool search_knowledge_base ok, ", " ms]"),
        "{notes:?}"
    );
    let events = run(&["--json", "chat-stream", QUESTION]);
    assert_eq!(events.code, 0, "{events:?}");
    let parsed: Vec<Json> = events
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    assert_eq!(parsed[0]["type"], "start");
    assert_eq!(parsed.last().unwrap()["type"], "done");
    let tokens: String = parsed
        .iter()
        .filter(|e| e["type"] == "token")
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, whole);
    assert_eq!(parsed.last().unwrap()["response"], whole.as_str());

    // A multi-turn session: "it" is the connection the first turn made.
    let created = run(&["session-create", "--title", "rust client"]);
    assert_eq!(created.code, 0, "{created:?}");
    let session = created.stdout.trim().to_string();
    assert!(
        session.starts_with("ses_")
            && session[4..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{session}"
    );
    let first = run(&[
        "session-chat",
        &session,
        "create a connection to api.example.com",
    ]);
    assert_eq!(first.code, 0, "{first:?}");
    let name = first
        .stdout
        .split("Created connection '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("a connection was created: {first:?}"))
        .to_string();
    let second = run(&["session-chat-stream", &session, "schedule it every hour"]);
    assert_eq!(second.code, 0, "{second:?}");
    assert!(
        second.stdout.contains(&format!("'{name}' is a connection"))
            && second.stdout.contains("every 1h"),
        "{second:?}"
    );
    assert!(second.stderr.contains("[tool host_cli"), "{second:?}");

    let messages = run(&["session-messages", &session]);
    assert_eq!(messages.code, 0, "{messages:?}");
    assert!(
        messages
            .stdout
            .starts_with("#1 user: create a connection to api.example.com\n"),
        "{messages:?}"
    );
    assert!(
        messages
            .stdout
            .lines()
            .any(|l| l.starts_with("#2 assistant: calls host_cli {\"command\": ")),
        "{messages:?}"
    );
    assert!(
        messages
            .stdout
            .lines()
            .any(|l| l.starts_with("#3 tool host_cli (ok): ")),
        "{messages:?}"
    );
    assert!(
        messages.stdout.contains("schedule it every hour"),
        "{messages:?}"
    );
    let paged = run(&[
        "--json",
        "session-messages",
        &session,
        "--limit",
        "2",
        "--offset",
        "1",
    ]);
    let ids: Vec<i64> = paged.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [2, 3]);

    let listed = run(&["session-list", "--limit", "1000"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    let line = listed
        .stdout
        .lines()
        .find(|l| l.starts_with(&session))
        .unwrap_or_else(|| panic!("the session is listed: {listed:?}"));
    assert!(
        line.contains(" messages  updated ") && line.ends_with("  rust client"),
        "{line}"
    );
    let as_json = run(&["session-list", "--json"]);
    assert!(as_json.json()["total"].as_u64().unwrap() >= 1);
    let json_created = run(&["session-create", "--json"]);
    let other = json_created.json()["session_id"]
        .as_str()
        .unwrap()
        .to_string();

    let deleted = run(&["session-delete", &session]);
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert_eq!(deleted.stdout, format!("deleted session {session}\n"));
    let deleted_json = run(&["session-delete", &other, "--json"]);
    assert_eq!(deleted_json.json()["success"], true);

    // Gone: the unknown-session error line, exit 1.
    let gone = run(&["session-messages", &session]);
    assert_eq!(gone.code, 1, "{gone:?}");
    let line = gone.error_line();
    assert!(
        line.contains(&format!("there is no session '{session}'")),
        "{line}"
    );
    assert!(
        line.contains("(HTTP 404, code session_not_found, request id "),
        "{line}"
    );
    let id = line
        .rsplit("request id ")
        .next()
        .unwrap()
        .trim_end_matches(')');
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );
    assert_eq!(gone.stdout, "");
    // Streamed into a gone session: the same error before any stream starts.
    let gone_stream = run(&["session-chat-stream", &session, "hello"]);
    assert_eq!(gone_stream.code, 1, "{gone_stream:?}");
    assert!(gone_stream.error_line().contains("code session_not_found"));
}

#[test]
fn each_error_class() {
    let (_dir, data) = temp_data();
    let server = Server::start(&data, &[]);
    let admin = server.admin_key();
    let url = server.root.as_str();
    let readonly = new_key(&data, "ro", "readonly", "default");
    let other_tenant = new_key(&data, "other", "user", "acme");

    // A key the server does not know: 401.
    let bad = client(Some(url), Some(&"A".repeat(256)), &["tools"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    let line = bad.error_line();
    assert!(
        line.contains("HTTP 401") && line.contains("code unauthorized"),
        "{line}"
    );
    assert_eq!(bad.stdout, "");

    // A read-only key calling host_cli: 403; --json prints the error body too.
    let args = ["tool", "host_cli", r#"{"command": "list connections"}"#];
    let denied = client(Some(url), Some(&readonly), &args);
    assert_eq!(denied.code, 1, "{denied:?}");
    let line = denied.error_line();
    assert!(
        line.contains("read-only") && line.contains("HTTP 403") && line.contains("code forbidden"),
        "{line}"
    );
    assert_eq!(denied.stdout, "");
    let denied_json = client(
        Some(url),
        Some(&readonly),
        &["--json", args[0], args[1], args[2]],
    );
    assert_eq!(denied_json.code, 1);
    let body = denied_json.json();
    assert_eq!(body["code"], "forbidden");
    assert_eq!(body["status"], 403);
    assert!(body["request_id"].is_string());
    // The read-only key may still call non-agentic tools.
    let allowed = client(
        Some(url),
        Some(&readonly),
        &["tool", "search_knowledge_base", r#"{"query": "schedule"}"#],
    );
    assert_eq!(allowed.code, 0, "{allowed:?}");

    // An unknown session, and another tenant's session, are both 404 session_not_found.
    let unknown = client(Some(url), Some(&admin), &["session-chat", "ses_nope", "hi"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown
            .error_line()
            .contains("HTTP 404, code session_not_found")
    );
    let session = client(Some(url), Some(&admin), &["session-create"])
        .stdout
        .trim()
        .to_string();
    let hidden = client(
        Some(url),
        Some(&other_tenant),
        &["session-messages", &session],
    );
    assert_eq!(hidden.code, 1, "{hidden:?}");
    assert!(hidden.error_line().contains("code session_not_found"));

    // An unknown tool and arguments that do not fit the schema.
    let no_tool = client(Some(url), Some(&admin), &["tool", "frobnicate"]);
    assert_eq!(no_tool.code, 1);
    assert!(
        no_tool
            .error_line()
            .contains("HTTP 404, code tool_not_found")
    );
    let invalid = client(
        Some(url),
        Some(&admin),
        &["tool", "search_knowledge_base", r#"{"limit": 3}"#],
    );
    assert_eq!(invalid.code, 1);
    assert!(
        invalid
            .error_line()
            .contains("HTTP 400, code invalid_arguments")
    );

    // No URL, no key, a URL without a scheme: one line naming what to set, exit 2.
    let no_url = client(None, Some(&admin), &["tools"]);
    assert_eq!(no_url.code, 2);
    assert!(
        no_url
            .error_line()
            .starts_with("error: ETLWORKS_URL is not set; set it to the server's root URL")
    );
    let empty_url = client(Some(" "), Some(&admin), &["tools"]);
    assert_eq!(empty_url.code, 2);
    assert!(
        empty_url
            .error_line()
            .starts_with("error: ETLWORKS_URL is not set")
    );
    let no_key = client(Some(url), None, &["chat", "hi"]);
    assert_eq!(no_key.code, 2);
    assert!(
        no_key
            .error_line()
            .starts_with("error: ETLWORKS_API_KEY is not set; set it to an API key")
    );
    let bad_url = client(Some("localhost:8080"), Some(&admin), &["tools"]);
    assert_eq!(bad_url.code, 2);
    assert!(
        bad_url
            .error_line()
            .contains("must start with http:// or https://")
    );

    // Invalid JSON arguments: the parse error and a working example, exit 2, before the
    // environment is even read.
    for (arguments, says) in [
        (r#"{"query": "#, "not valid JSON"),
        ("{query: 'x'}", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got an array"),
    ] {
        let out = client(None, None, &["tool", "search_knowledge_base", arguments]);
        assert_eq!(out.code, 2, "{out:?}");
        let line = out.error_line();
        assert!(line.contains(says), "{line}");
        assert!(line.ends_with(&format!("e.g. {EXAMPLE}")), "{line}");
        assert_eq!(out.stdout, "");
    }

    // Bad command lines: clap's usage error, exit 2, nothing on stdout.
    for args in [
        &["frobnicate"][..],
        &["chat"],
        &["session-chat", "ses_x"],
        &["tools", "--title", "x"],
        &["session-list", "--limit", "many"],
    ] {
        let out = client(Some(url), Some(&admin), args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains("error"), "{out:?}");
        assert_eq!(out.stdout, "");
    }

    // The server down: a clear connection error, exit 1, within a few seconds (the retries
    // back off 0.25 s and 0.5 s).
    let down = format!("http://127.0.0.1:{}", closed_port());
    for args in [&["tools"][..], &["chat-stream", "hello"]] {
        let started = Instant::now();
        let out = client(Some(&down), Some(&admin), args);
        assert_eq!(out.code, 1, "{out:?}");
        let line = out.error_line();
        assert_eq!(
            line,
            format!(
                "error: cannot connect to {down}: connection refused; is the etlworks-agent \
                 server running there, and is ETLWORKS_URL right?"
            )
        );
        assert_eq!(out.stdout, "");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn the_other_commands_still_work_beside_the_client() {
    let (_dir, data) = temp_data();
    let data_arg = data.to_str().unwrap();
    let host = client(
        None,
        None,
        &["--data-dir", data_arg, "--json", "host", "list connections"],
    );
    assert_eq!(host.code, 0, "{host:?}");
    assert_eq!(host.json()["ok"], true);
    let keys = client(
        None,
        None,
        &["--data-dir", data_arg, "keys", "create", "--name", "k"],
    );
    assert_eq!(keys.code, 0, "{keys:?}");
    let listed = client(
        None,
        None,
        &["--data-dir", data_arg, "--json", "keys", "list"],
    );
    assert_eq!(listed.json()[0]["name"], "k");
    let kb = client(
        None,
        None,
        &["--data-dir", data_arg, "kb", "search", "merge", "--json"],
    );
    assert_eq!(kb.code, 0, "{kb:?}");
    assert!(kb.json()["count"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn the_python_client_is_offered_for_download_and_runs() {
    let (dir, data) = temp_data();
    let server = Server::start(&data, &[]);
    let key = server.admin_key();

    // No key needed.
    let response = server
        .http
        .get(format!("{}/downloads/etlworks_agent.py", server.root))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let header = |name: &str| {
        response.headers()[name]
            .to_str()
            .expect("an ASCII header")
            .to_string()
    };
    assert!(header("content-type").starts_with("text/x-python"));
    assert_eq!(
        header("content-disposition"),
        "attachment; filename=\"etlworks_agent.py\""
    );
    assert!(response.headers().contains_key("x-request-id"));
    let text = response.text().await.unwrap();
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../clients/python/etlworks_agent/__init__.py"),
    )
    .unwrap();
    assert!(
        text == source,
        "the download is clients/python/etlworks_agent/__init__.py as it is now"
    );
    // It is in the OpenAPI document.
    let (_, doc) =
        api_util::send(server.request(reqwest::Method::GET, "/openapi.json", None)).await;
    assert!(doc["paths"]["/downloads/etlworks_agent.py"]["get"].is_object());

    let folder = dir.path().join("download");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("etlworks_agent.py"), &text).unwrap();
    let python = python_with_requests();
    let py = |args: &[&str], with_env: bool| {
        let mut command = Command::new(&python);
        command
            .args(args)
            .current_dir(&folder)
            .env_remove("PYTHONPATH")
            .env_remove("ETLWORKS_URL")
            .env_remove("ETLWORKS_API_KEY");
        if with_env {
            command
                .env("ETLWORKS_URL", &server.root)
                .env("ETLWORKS_API_KEY", &key);
        }
        let out = command.output().expect("run python");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let version = py(&["etlworks_agent.py", "--version"], false);
    assert_eq!(version.code, 0, "{version:?}");
    assert_eq!(version.stdout.trim(), "etlworks_agent.py 0.1.0");
    let listed = py(
        &[
            "etlworks_agent.py",
            "tool",
            "host_cli",
            r#"{"command": "list connections"}"#,
        ],
        true,
    );
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.contains("warehouse"), "{listed:?}");
    // And importable, from the downloaded file itself.
    let imported = py(
        &[
            "-c",
            "import etlworks_agent as e; print(e.__file__); print(e.EtlworksAgent().list_tools()['count'])",
        ],
        true,
    );
    assert_eq!(imported.code, 0, "{imported:?}");
    let lines: Vec<&str> = imported.stdout.lines().collect();
    assert!(
        Path::new(lines[0]).starts_with(&folder) || lines[0] == "etlworks_agent.py",
        "imported from the download: {imported:?}"
    );
    assert_eq!(lines[1], "7");
}

/// python3 with `requests` (the project's test environment first, then the system's).
fn python_with_requests() -> String {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-test/bin/python");
    let mut candidates = vec!["python3".to_string()];
    if venv.exists() {
        candidates.push(venv.to_string_lossy().into_owned());
    }
    for python in &candidates {
        let ok = Command::new(python)
            .args(["-c", "import requests"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return python.clone();
        }
    }
    panic!(
        "this test runs the downloaded Python client, which needs python3 with requests: \
         install it (pip install requests, or apt-get install python3-requests), or run \
         ./scripts/test-clients once to create .venv-test; tried {candidates:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A scripted HTTP server: each connection's request is recorded and answered by a closure.
// ---------------------------------------------------------------------------------------------

/// One request as the scripted server received it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: String,
    body: String,
}

struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    /// Serves every connection with `answer(n, request, stream)` (n counts from 0), then closes it.
    fn start(answer: impl Fn(usize, &Seen, &mut TcpStream) + Send + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { break };
                let Some(request) = read_request(&mut stream) else {
                    continue;
                };
                log.lock().unwrap().push(request.clone());
                answer(n, &request, &mut stream);
                let _ = stream.flush();
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        Scripted { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Seen> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let mut parts = first.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        headers.push_str(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &str) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

fn json_ok(stream: &mut TcpStream, body: &str) {
    respond(
        stream,
        "200 OK",
        &[
            ("Content-Type", "application/json"),
            ("x-request-id", "req1"),
        ],
        body,
    );
}

/// Starts an event stream (body delimited by the connection's close).
fn stream_head(stream: &mut TcpStream) {
    let _ = stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nx-request-id: sse1\r\nConnection: close\r\n\r\n",
    );
    let _ = stream.flush();
}

fn write_flushed(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
    let _ = stream.flush();
    // Separate TCP segments, so the client reads them as separate chunks.
    std::thread::sleep(Duration::from_millis(30));
}

#[test]
fn a_stream_is_printed_as_it_arrives_whatever_its_framing() {
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let server = Scripted::start(move |_, _, stream| {
        stream_head(stream);
        // BOM, a comment, CRLF line ends, then a token the client must print at once.
        write_flushed(
            stream,
            b"\xef\xbb\xbf: keep-alive\r\n\r\nevent: start\r\ndata: {\"type\":\"start\",\"run_id\":\"r1\"}\r\n\r\n",
        );
        write_flushed(
            stream,
            b"event: token\r\ndata: {\"type\":\"token\",\"content\":\"Hel\"}\r\n\r\n",
        );
        // Hold the answer until the test saw "Hel" on the client's standard output.
        let _ = released
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(90));
        // A CRLF split across two writes; data split over two lines; CR-only line ends.
        write_flushed(stream, b"event: token\r");
        write_flushed(
            stream,
            b"\ndata: {\"type\": \"token\",\ndata:  \"content\": \"lo w\"}\n\n",
        );
        // A UTF-8 character (\xc3\xb6, o-umlaut) split across two writes.
        write_flushed(
            stream,
            b"event: token\rdata: {\"type\":\"token\",\"content\":\"\xc3",
        );
        write_flushed(stream, b"\xb6rld\"}\r\r");
        write_flushed(
            stream,
            b"event: tool_start\ndata: {\"type\":\"tool_start\",\"id\":\"c1\",\"name\":\"host_cli\",\"arguments\":{\"command\":\"list flows\"}}\n\n",
        );
        write_flushed(
            stream,
            b"event: tool_end\ndata: {\"type\":\"tool_end\",\"id\":\"c1\",\"name\":\"host_cli\",\"success\":false,\"result\":\"boom:\\n  no such\",\"duration_ms\":3}\n\n",
        );
        write_flushed(
            stream,
            b"id: 9\nretry: 100\nevent: usage\ndata: {\"type\":\"usage\",\"total_tokens\":5}\n\n",
        );
        write_flushed(
            stream,
            b"event: done\ndata: {\"type\":\"done\",\"success\":true,\"response\":\"Hello w\xc3\xb6rld\"}\n\n",
        );
    });

    let mut child = Command::new(BIN)
        .args(["chat-stream", "hi", "--system-prompt", "be brief"])
        .env("ETLWORKS_URL", &server.url)
        .env("ETLWORKS_API_KEY", "k")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 || tx.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    // Generous: CI machines are shared; what matters is that "Hel" shows while the stream
    // is held open, not how soon.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !printed.ends_with(b"Hel") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(bytes) => printed.extend(bytes),
            Err(_) => panic!(
                "the first token was not printed while the stream stayed open; got {:?}",
                String::from_utf8_lossy(&printed)
            ),
        }
    }
    assert_eq!(printed, b"Hel", "only the first token so far");
    release.send(()).unwrap();
    while let Ok(bytes) = rx.recv_timeout(Duration::from_secs(60)) {
        printed.extend(bytes);
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(String::from_utf8(printed).unwrap(), "Hello w\u{f6}rld\n");
    assert_eq!(
        stderr,
        "[tool host_cli {\"command\": \"list flows\"}]\n[tool host_cli failed, 3 ms: boom: no such]\n"
    );

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/rest/v1/ai-agent/api/chat/stream");
    let headers = seen[0].headers.to_ascii_lowercase();
    assert!(headers.contains("authorization: bearer k\r\n"), "{headers}");
    assert!(headers.contains("accept: text/event-stream"), "{headers}");
    let body: Json = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"message": "hi", "include_tools": true, "system_prompt": "be brief"})
    );
}

#[test]
fn a_stream_that_fails_says_so() {
    let server = Scripted::start(|n, _, stream| match n {
        // Ends without `done`.
        0 => {
            stream_head(stream);
            write_flushed(
                stream,
                b"event: token\ndata: {\"type\":\"token\",\"content\":\"partial\"}\n\n",
            );
        }
        // An error event after some text.
        1 => {
            stream_head(stream);
            write_flushed(
                stream,
                b"event: token\ndata: {\"type\":\"token\",\"content\":\"so far\"}\n\n",
            );
            write_flushed(
                stream,
                b"event: error\ndata: {\"type\":\"error\",\"success\":false,\"error\":\"the AI usage cap is spent\",\"code\":\"cap_exceeded\"}\n\n",
            );
        }
        // A failure inside a 200 instead of a stream.
        2 => json_ok(
            stream,
            r#"{"success": false, "error": "the model is unreachable", "code": "llm_unavailable"}"#,
        ),
        // Data that is not JSON.
        _ => {
            stream_head(stream);
            write_flushed(stream, b"event: token\ndata: not json\n\n");
        }
    });
    let run = |args: &[&str]| client(Some(&server.url), Some("k"), args);

    let cut = run(&["chat-stream", "hi"]);
    assert_eq!(cut.code, 1, "{cut:?}");
    assert_eq!(cut.stdout, "partial\n", "the partial line is ended");
    let line = cut.error_line();
    assert!(
        line.starts_with("error: the stream ended before its 'done' event")
            && line.ends_with("(code incomplete_stream, request id sse1)"),
        "{line}"
    );

    let capped = run(&["session-chat-stream", "ses_1", "hi", "--no-tools"]);
    assert_eq!(capped.code, 1, "{capped:?}");
    assert_eq!(capped.stdout, "so far\n");
    assert_eq!(
        capped.error_line(),
        "error: the AI usage cap is spent (code cap_exceeded, request id sse1)"
    );

    let unavailable = run(&["chat-stream", "hi", "--json"]);
    assert_eq!(unavailable.code, 1, "{unavailable:?}");
    assert_eq!(
        unavailable.error_line(),
        "error: the model is unreachable (code llm_unavailable, request id req1)"
    );
    let body: Json = serde_json::from_str(unavailable.stdout.trim_end()).unwrap();
    assert_eq!(
        unavailable.stdout.lines().count(),
        1,
        "one line for a stream"
    );
    assert_eq!(body["code"], "llm_unavailable");
    assert_eq!(body["status"], 200);

    let garbage = run(&["chat-stream", "hi"]);
    assert_eq!(garbage.code, 1);
    assert!(
        garbage
            .error_line()
            .contains("event whose data is not JSON: \"not json\"")
    );

    let seen = server.seen();
    assert_eq!(
        seen[1].path,
        "/rest/v1/ai-agent/api/sessions/ses_1/chat/stream"
    );
    let body: Json = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"message": "hi", "include_tools": false})
    );
}

#[test]
fn reads_are_retried_and_changes_only_when_nothing_was_done() {
    const TOOLS: &str = r#"{"success": true, "tools": [], "count": 0}"#;
    const CHAT: &str = r#"{"success": true, "response": "fine"}"#;
    let error = |code: &str| {
        format!(r#"{{"success": false, "error": "it failed here", "code": "{code}"}}"#)
    };
    let server = Scripted::start(move |_, request, stream| {
        // The message or the session id names the behaviour; attempts are counted per request.
        let path = request.path.as_str();
        static COUNTS: std::sync::OnceLock<Mutex<std::collections::HashMap<String, usize>>> =
            std::sync::OnceLock::new();
        let attempt = {
            let mut map = COUNTS.get_or_init(Default::default).lock().unwrap();
            let key = format!("{path} {}", request.body);
            let n = map.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        let json_error =
            |stream: &mut TcpStream, status: &str, code: &str, extra: &[(&str, &str)]| {
                let mut headers = vec![("Content-Type", "application/json"), ("x-request-id", "r")];
                headers.extend_from_slice(extra);
                respond(stream, status, &headers, &error(code));
            };
        if path.ends_with("/tools") {
            // GET /tools: 503, 500, then the answer.
            match attempt {
                1 => json_error(stream, "503 Service Unavailable", "internal", &[]),
                2 => json_error(stream, "500 Internal Server Error", "internal", &[]),
                _ => json_ok(stream, TOOLS),
            }
        } else if path.contains("/sessions/ses_500/") {
            json_error(stream, "500 Internal Server Error", "internal", &[]);
        } else if path.contains("/sessions/ses_drop") && request.method == "GET" {
            // Closed without an answer: a read is sent again.
            if attempt < 3 {
                return;
            }
            json_ok(
                stream,
                r#"{"success": true, "session_id": "ses_drop", "messages": [], "count": 0}"#,
            );
        } else if path.ends_with("/chat") && request.body.contains("\"drop\"") {
            // Closed without an answer after the request arrived: a change is not sent again.
        } else if path.ends_with("/chat") && request.body.contains("\"500\"") {
            json_error(stream, "500 Internal Server Error", "internal", &[]);
        } else if path.ends_with("/chat") && request.body.contains("\"503\"") {
            if attempt == 1 {
                json_error(stream, "503 Service Unavailable", "internal", &[]);
            } else {
                json_ok(stream, CHAT);
            }
        } else if path.ends_with("/chat") && request.body.contains("\"429\"") {
            if attempt == 1 {
                json_error(
                    stream,
                    "429 Too Many Requests",
                    "rate_limited",
                    &[("Retry-After", "1")],
                );
            } else {
                json_ok(stream, CHAT);
            }
        } else if path.ends_with("/chat") && request.body.contains("\"429 long\"") {
            json_error(
                stream,
                "429 Too Many Requests",
                "rate_limited",
                &[("Retry-After", "120")],
            );
        } else if path.ends_with("/chat") && request.body.contains("\"proxy\"") {
            respond(
                stream,
                "502 Bad Gateway",
                &[("Content-Type", "text/html")],
                "<html><body>Bad gateway</body></html>",
            );
        } else {
            json_error(stream, "404 Not Found", "not_found", &[]);
        }
    });
    let run = |args: &[&str]| client(Some(&server.url), Some("k"), args);
    let count = |path_part: &str, body_part: &str| {
        server
            .seen()
            .iter()
            .filter(|s| s.path.contains(path_part) && s.body.contains(body_part))
            .count()
    };

    // A read: 503 and 500 are retried, then it succeeds.
    let tools = run(&["tools", "--json"]);
    assert_eq!(tools.code, 0, "{tools:?}");
    assert_eq!(count("/tools", ""), 3);

    // A read that keeps failing: three attempts, then the error line.
    let failing = run(&["session-messages", "ses_500"]);
    assert_eq!(failing.code, 1);
    assert_eq!(
        failing.error_line(),
        "error: it failed here (HTTP 500, code internal, request id r)"
    );
    assert_eq!(count("/sessions/ses_500/", ""), 3);

    // A read whose connection closed without an answer is sent again.
    let dropped_read = run(&["session-messages", "ses_drop"]);
    assert_eq!(dropped_read.code, 0, "{dropped_read:?}");
    assert_eq!(dropped_read.stdout, "no messages\n");
    assert_eq!(count("/sessions/ses_drop", ""), 3);

    // A change the server may have acted on is not sent again: 500, or a dropped connection.
    let once = run(&["chat", "500"]);
    assert_eq!(once.code, 1);
    assert!(once.error_line().contains("HTTP 500"));
    assert_eq!(count("/chat", "\"500\""), 1);
    let dropped = run(&["chat", "drop"]);
    assert_eq!(dropped.code, 1, "{dropped:?}");
    assert!(
        dropped
            .error_line()
            .starts_with(&format!("error: cannot connect to {}: ", server.url)),
        "{dropped:?}"
    );
    assert_eq!(count("/chat", "\"drop\""), 1);

    // 503 and 429 mean the server did nothing: even a change is sent again; Retry-After waits.
    let again = run(&["chat", "503"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.stdout, "fine\n");
    assert_eq!(count("/chat", "\"503\""), 2);
    let started = Instant::now();
    let limited = run(&["chat", "429"]);
    assert_eq!(limited.code, 0, "{limited:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After"
    );
    assert_eq!(count("/chat", "\"429\""), 2);
    // A Retry-After over 60 s is not waited for.
    let started = Instant::now();
    let long = run(&["chat", "429 long"]);
    assert_eq!(long.code, 1);
    assert!(long.error_line().contains("HTTP 429, code rate_limited"));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(count("/chat", "\"429 long\""), 1);

    // Something that is not the API (a proxy's page) is named as such.
    let proxy = run(&["chat", "proxy"]);
    assert_eq!(proxy.code, 1);
    let line = proxy.error_line();
    assert!(
        line.contains("answered HTTP 502 Bad Gateway without the API's error body")
            && line.contains("Bad gateway")
            && line.contains("is ETLWORKS_URL"),
        "{line}"
    );
}

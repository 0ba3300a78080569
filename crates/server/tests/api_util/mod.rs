//! Test support for the Agent API: the real `etlworks-agent serve` binary on a free port with a
//! temporary data directory, driven over plain HTTP with reqwest.

#![allow(dead_code)] // each api_* test file uses a different part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value as Json;

pub const BIN: &str = env!("CARGO_BIN_EXE_etlworks-agent");
pub const BASE: &str = "/rest/v1/ai-agent/api";

/// A running server. Stopped (SIGTERM, then kill) when dropped.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub root: String,
    pub data_dir: PathBuf,
    /// Where the server's standard error goes.
    pub log: PathBuf,
    /// What it printed on standard output before "listening".
    pub banner: String,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts `serve` on `data_dir` with extra flags; waits until it listens (60 s at most).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(data_dir, extra, &[])
    }

    /// As [`Server::start`], with extra environment variables for the process.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        etl_http::ensure_crypto_provider();
        let log = data_dir.with_extension(format!("{}.log", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the server log");
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--log", "info", "serve", "--bind", "127.0.0.1:0"])
            .args(extra)
            .env_remove("ETLWORKS_AGENT_SECRET_KEY")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn etlworks-agent serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut banner = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                banner.push_str(&line);
                banner.push('\n');
                if let Some(at) = line.find("listening on http://") {
                    let url = &line[at + "listening on ".len()..];
                    let root = url.split(BASE).next().unwrap_or(url).to_string();
                    let _ = tx.send((root, banner.clone()));
                }
            }
        });
        let (root, banner) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the server did not start within 60 s; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Server {
            child: Some(child),
            root,
            data_dir: data_dir.to_path_buf(),
            log,
            banner,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        }
    }

    /// The first admin key, from `<data-dir>/admin.key`.
    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.key"))
            .expect("admin.key exists after the first start")
            .trim()
            .to_string()
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/') && !path.starts_with(BASE) && path != "/health" {
            format!("{}{BASE}{path}", self.root)
        } else {
            format!("{}{path}", self.root)
        }
    }

    /// A request to `path` (relative to the API base unless it is `/health` or starts with it).
    pub fn request(&self, method: Method, path: &str, key: Option<&str>) -> RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Json) {
        send(self.request(Method::GET, path, Some(key))).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Json) -> (StatusCode, Json) {
        send(self.request(Method::POST, path, Some(key)).json(&body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Json) {
        send(self.request(Method::DELETE, path, Some(key))).await
    }

    /// Runs a tool and answers status and body.
    pub async fn tool(&self, key: &str, name: &str, args: Json) -> (StatusCode, Json) {
        self.post(&format!("/tools/{name}/execute"), key, args)
            .await
    }

    /// Creates a key through the API with an admin key; answers (id, secret).
    pub async fn create_key(&self, admin: &str, body: Json) -> (String, String) {
        let (status, json) = self.post("/keys", admin, body).await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        (
            json["id"].as_str().unwrap().to_string(),
            json["key"].as_str().unwrap().to_string(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and waits (30 s at most) for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the server did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a request and answers status and JSON body; panics when the body is not JSON, since
/// every answer of the API is.
pub async fn send(request: RequestBuilder) -> (StatusCode, Json) {
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let text = response.text().await.expect("a body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the {status} body is not JSON ({e}): {text}"));
    (status, json)
}

/// Asserts the API's error body with `status` and `code`; answers the message.
pub fn assert_error(got: &(StatusCode, Json), status: StatusCode, code: &str) -> String {
    let (s, body) = got;
    assert_eq!(*s, status, "{body}");
    assert_eq!(body["success"], Json::Bool(false), "{body}");
    assert_eq!(body["code"], code, "{body}");
    let message = body["error"]
        .as_str()
        .expect("an error sentence")
        .to_string();
    assert!(
        message.len() > 20,
        "the error says something useful: {message}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        3,
        "the error body is exactly success, error, code: {body}"
    );
    message
}

/// Runs the binary (not the server) with arguments on a data directory.
pub fn cli(data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("ETLWORKS_AGENT_SECRET_KEY")
        .output()
        .expect("run etlworks-agent")
}

/// A temporary folder with a `data` directory path inside (not created: the server does).
pub fn temp_data() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    (dir, data)
}

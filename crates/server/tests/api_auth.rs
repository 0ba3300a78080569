//! Keys and who may do what, against the real binary: the first admin key and its file, 401
//! for missing, malformed, unknown, revoked and expired keys, 403 for roles, tenant isolation,
//! key management over the API and the CLI, restarts and a clean exit on SIGTERM.

mod api_util;

use api_util::{Server, assert_error, cli, send, temp_data};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn first_start_writes_a_private_admin_key_and_a_restart_keeps_every_key() {
    let (_tmp, data) = temp_data();
    let mut server = Server::start(&data, &[]);
    let admin = server.admin_key();
    assert_eq!(admin.len(), 256);
    assert!(admin.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(
        server.banner.contains(&admin) && server.banner.contains("admin.key"),
        "the key is printed once at the first start: {}",
        server.banner
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("admin.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "admin.key is readable by its owner only"
        );
    }
    // Only the hash is stored: the key appears nowhere in the database files.
    let (_, user_key) = server
        .create_key(&admin, json!({"name": "ci", "role": "user"}))
        .await;
    assert_eq!(server.get("/tools", &user_key).await.0, StatusCode::OK);

    let status = server.stop();
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    let log = server.log_text();
    assert!(log.contains("stopped"), "{log}");
    for file in ["metadata.db", "metadata.db-wal"] {
        if let Ok(bytes) = std::fs::read(data.join(file)) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&admin[..64]), "{file} holds no plain key");
            assert!(!text.contains(&user_key[..64]), "{file} holds no plain key");
        }
    }

    // Restart: no new admin key, the old keys still work.
    let server = Server::start(&data, &[]);
    assert!(
        !server.banner.contains("Created the first admin key"),
        "{}",
        server.banner
    );
    assert_eq!(server.admin_key(), admin);
    assert_eq!(server.get("/tools", &admin).await.0, StatusCode::OK);
    assert_eq!(server.get("/tools", &user_key).await.0, StatusCode::OK);
    let (_, keys) = server.get("/keys", &admin).await;
    assert_eq!(keys["count"], 2, "{keys}");
}

#[tokio::test]
async fn only_usable_keys_get_in() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let admin = server.admin_key();

    // Missing, malformed header, malformed key, unknown key.
    let got = send(server.request(Method::GET, "/tools", None)).await;
    let m = assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(m.contains("Authorization: Bearer"), "{m}");
    let got = send(
        server
            .request(Method::GET, "/tools", None)
            .header("authorization", format!("Basic {admin}")),
    )
    .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    let got = server.get("/tools", "not-a-key").await;
    let m = assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(m.contains("malformed"), "{m}");
    let unknown: String = admin.chars().rev().collect();
    let got = server.get("/tools", &unknown).await;
    let m = assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(m.contains("not known"), "{m}");
    assert!(!m.contains(&unknown[..20]), "the key is never echoed");

    // Revoked over the API: refused at once, and listed as revoked.
    let (id, key) = server
        .create_key(&admin, json!({"name": "temp", "role": "user"}))
        .await;
    assert_eq!(server.get("/tools", &key).await.0, StatusCode::OK);
    let (status, revoked) = server.delete(&format!("/keys/{id}"), &admin).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["revoked"], true);
    let got = server.get("/tools", &key).await;
    let m = assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(m.contains("revoked"), "{m}");
    let got = server.delete(&format!("/keys/{id}"), &admin).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");

    // Expired: a key whose expiry has passed (moved into the past in the database, as time
    // would).
    let (id, key) = server
        .create_key(&admin, json!({"name": "short", "expires_in": "1h"}))
        .await;
    assert_eq!(server.get("/tools", &key).await.0, StatusCode::OK);
    expire(&data, &id).await;
    let m = refused_soon(&server, &key).await;
    assert!(m.contains("expired"), "{m}");
    let (_, keys) = server.get("/keys", &admin).await;
    let listed = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["status"], "expired");
    assert!(listed.get("key").is_none() && listed.get("hash").is_none());

    // Bad key requests.
    let got = server
        .post("/keys", &admin, json!({"name": "x", "role": "root"}))
        .await;
    let m = assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("root"), "{m}");
    let got = server
        .post("/keys", &admin, json!({"name": "x", "expires_in": "soon"}))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    let got = server
        .post(
            "/keys",
            &admin,
            json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    let got = server
        .post("/keys", &admin, json!({"name": "x", "colour": "red"}))
        .await;
    let m = assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("colour"), "{m}");
}

/// A key changed behind the server's back (another process, the database) is refused within
/// the key cache's lifetime (1 s): polls for 5 s at most, answers the 401's message.
async fn refused_soon(server: &Server, key: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let got = server.get("/tools", key).await;
        if got.0 == StatusCode::UNAUTHORIZED || std::time::Instant::now() > deadline {
            return assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Moves a key's expiry into the past, straight in the metadata database.
async fn expire(data: &std::path::Path, id: &str) {
    use sqlx::Connection;
    let mut db = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}",
        data.join("metadata.db").display()
    ))
    .await
    .unwrap();
    let done = sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
        .bind("2001-01-01T00:00:00.000000Z")
        .bind(id)
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);
}

#[tokio::test]
async fn roles_decide_what_a_key_may_do() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let admin = server.admin_key();
    let (_, readonly) = server
        .create_key(&admin, json!({"name": "viewer", "role": "readonly"}))
        .await;
    let (_, user) = server.create_key(&admin, json!({"name": "app"})).await;

    // Read-only: non-agentic tools yes, agentic tools no.
    let (status, out) = server
        .tool(
            &readonly,
            "search_knowledge_base",
            json!({"query": "schedule a flow"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let got = server
        .tool(&readonly, "host_cli", json!({"command": "list flows"}))
        .await;
    let m = assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    assert!(m.contains("read-only"), "{m}");
    let got = server
        .tool(&readonly, "import_template", json!({"template": "x"}))
        .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");

    // User: every tool, no key management, no document changes.
    let (status, out) = server
        .tool(&user, "host_cli", json!({"command": "list flows"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    for got in [
        server.get("/keys", &user).await,
        server.post("/keys", &user, json!({"name": "mine"})).await,
        server.delete("/keys/key_whatever", &readonly).await,
        send(
            server
                .request(Method::PUT, "/kb/documents/a.md", Some(&user))
                .body("# A\n\ntext"),
        )
        .await,
        server.delete("/kb/documents/a.md", &user).await,
    ] {
        let m = assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
        assert!(m.contains("admin"), "{m}");
    }
    // Any key may list its tenant's documents.
    assert_eq!(
        server.get("/kb/documents", &readonly).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tenants_see_only_their_own_flows_keys_and_documents() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let admin_a = server.admin_key();
    let files = data.parent().unwrap().join("files");
    std::fs::create_dir_all(&files).unwrap();

    let (status, out) = server
        .tool(
            &admin_a,
            "host_cli",
            json!({"command": format!(
                "create connection src type=file directory='{}'; \
                 create flow secret_orders source=src object=*.csv destination=warehouse target=orders",
                files.display()
            )}),
        )
        .await;
    assert_eq!(
        (status, out["success"].clone()),
        (StatusCode::OK, json!(true)),
        "{out}"
    );
    let got = send(
        server
            .request(Method::PUT, "/kb/documents/private.md", Some(&admin_a))
            .body("# Tenant A secrets\n\nThe xylophone procedure is only for tenant A.\n"),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);

    // A key of tenant B, made on the command line while the server runs.
    let out = cli(
        &data,
        &[
            "keys", "create", "--name", "b-admin", "--role", "admin", "--tenant", "tenant-b",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin_b = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(admin_b.len(), 256);

    let (_, flows) = server
        .tool(&admin_b, "host_cli", json!({"command": "list flows"}))
        .await;
    assert_eq!(flows["success"], true, "{flows}");
    assert!(
        !flows.to_string().contains("secret_orders"),
        "tenant B does not see A's flow: {flows}"
    );
    let (_, got) = server
        .tool(
            &admin_b,
            "host_cli",
            json!({"command": "get flow secret_orders"}),
        )
        .await;
    assert_eq!(got["success"], false, "{got}");
    assert_eq!(got["code"], "tool_failed");
    let (_, a_flows) = server
        .tool(&admin_a, "host_cli", json!({"command": "list flows"}))
        .await;
    assert!(a_flows.to_string().contains("secret_orders"), "{a_flows}");

    let (_, docs) = server.get("/kb/documents", &admin_b).await;
    assert_eq!(docs["count"], 0, "{docs}");
    let (_, found) = server
        .tool(
            &admin_b,
            "search_knowledge_base",
            json!({"query": "xylophone procedure"}),
        )
        .await;
    assert!(!found.to_string().contains("Tenant A secrets"), "{found}");
    let got = server.delete("/kb/documents/private.md", &admin_b).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    let (_, docs) = server.get("/kb/documents", &admin_a).await;
    assert_eq!(docs["count"], 1, "A's document is still there: {docs}");

    // Keys: each admin sees and manages only its tenant's keys.
    let (_, keys_b) = server.get("/keys", &admin_b).await;
    assert_eq!(keys_b["count"], 1, "{keys_b}");
    assert_eq!(keys_b["keys"][0]["tenant"], "tenant-b");
    let (_, keys_a) = server.get("/keys", &admin_a).await;
    let a_id = keys_a["keys"][0]["id"].as_str().unwrap().to_string();
    let got = server.delete(&format!("/keys/{a_id}"), &admin_b).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(server.get("/tools", &admin_a).await.0, StatusCode::OK);
    let got = server
        .post(
            "/keys",
            &admin_b,
            json!({"name": "sneaky", "tenant": "default"}),
        )
        .await;
    let m = assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    assert!(m.contains("tenant-b"), "{m}");
    let (status, created) = server
        .post(
            "/keys",
            &admin_b,
            json!({"name": "b-app", "tenant": "tenant-b"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["tenant"], "tenant-b");
    assert_eq!(created["role"], "user");
}

#[tokio::test]
async fn the_keys_command_creates_lists_and_revokes_the_same_keys() {
    let (_tmp, data) = temp_data();
    let out = cli(&data, &["keys", "list"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no API keys"));

    let out = cli(
        &data,
        &[
            "keys",
            "create",
            "--name",
            "nightly",
            "--role",
            "readonly",
            "--expires",
            "30d",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(key.len(), 256, "only the key is on standard output");
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        said.contains("role=readonly") && said.contains("shown only once"),
        "{said}"
    );

    let out = cli(&data, &["keys", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let id = listed[0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed[0]["status"], "active");
    assert_eq!(listed[0]["prefix"], &key[..8]);
    assert!(listed[0]["expires_at"].is_string());
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&key));

    // A server started now does not create another admin key: keys exist.
    let server = Server::start(&data, &[]);
    assert!(!data.join("admin.key").exists());
    assert_eq!(server.get("/tools", &key).await.0, StatusCode::OK);

    let out = cli(&data, &["keys", "revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = refused_soon(&server, &key).await;
    assert!(m.contains("revoked"), "{m}");
    let out = cli(&data, &["keys", "revoke", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keys list"));

    let out = cli(&data, &["keys", "create", "--name", "x", "--role", "god"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role 'god'"));
}

#[test]
fn a_taken_port_fails_the_start_without_using_up_the_first_key() {
    let (_tmp, data) = temp_data();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = cli(&data, &["serve", "--bind", &addr]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr}")) && err.contains("--bind"),
        "{err}"
    );
    assert!(!data.join("admin.key").exists(), "no key was created");
    let out = cli(&data, &["keys", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no API keys"));
}

/// A request in flight when SIGTERM arrives is answered in full before the process exits: here
/// a `run flow --wait` whose source API takes a second to answer.
#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_cleanly() {
    use std::sync::Arc;
    let started = Arc::new(tokio::sync::Notify::new());
    let slow_api = axum::Router::new().route(
        "/orders",
        axum::routing::get({
            let started = started.clone();
            move || async move {
                started.notify_one();
                tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                axum::Json(json!([{"id": 1, "total": 9.5}, {"id": 2, "total": 3.25}]))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, slow_api).await });

    let (_tmp, data) = temp_data();
    let mut server = Server::start(&data, &[]);
    let key = server.admin_key();
    let (_, setup) = server
        .tool(
            &key,
            "host_cli",
            json!({"command": format!(
                "create connection shop type=http url=http://{api_addr} max_retries=0; \
                 create flow orders source=shop object=/orders destination=warehouse target=orders"
            )}),
        )
        .await;
    assert_eq!(setup["success"], true, "{setup}");

    let in_flight = tokio::spawn(
        server
            .request(Method::POST, "/tools/host_cli/execute", Some(&key))
            .json(&json!({"command": "run flow orders --wait"}))
            .send(),
    );
    started.notified().await;
    let status = tokio::task::spawn_blocking(move || {
        let status = server.stop();
        (status, server)
    });
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["success"], true, "{body}");
    let run = &body["data"]["results"][0]["data"];
    assert_eq!(run["status"], "success", "{body}");
    assert_eq!(run["rows_written"], 2, "{body}");
    let (status, server) = status.await.unwrap();
    assert!(status.success(), "exit after finishing: {status:?}");
    assert!(server.log_text().contains("stopped"));
}

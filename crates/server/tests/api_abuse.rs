//! Hostile and careless clients against the real server: a 1 GB body (announced and streamed),
//! slow-loris clients (headers and bodies dribbled), a 1 MB chat message and 10,000 sessions
//! from one key. Each gets a clear answer with the right status and code, the server stays up,
//! and other clients' sessions lose nothing.

mod api_util;

use std::time::{Duration, Instant};

use api_util::*;
use reqwest::StatusCode;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw HTTP/1.1 answer read off a socket.
struct RawAnswer {
    status: u16,
    body: Json,
}

/// Reads one HTTP/1.1 response (headers and a Content-Length body) from `reader`, giving up
/// after `within`.
async fn read_answer<R: AsyncReadExt + Unpin>(reader: &mut R, within: Duration) -> RawAnswer {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                    let body = serde_json::from_slice(&buf[end + 4..end + 4 + length])
                        .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {head}"));
                    return RawAnswer { status, body };
                }
            }
            let n = reader
                .read(&mut chunk)
                .await
                .expect("read the answer before the connection closes");
            assert!(
                n > 0,
                "the server closed the connection without an answer; got so far: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("an answer in time")
}

fn address(server: &Server) -> String {
    server.root.trim_start_matches("http://").to_string()
}

/// Request head for a JSON POST with the key.
fn head(path: &str, key: &str, length: Option<u64>) -> String {
    let framing = match length {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".to_string(),
    };
    format!(
        "POST {BASE}{path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\n{framing}\r\n\r\n"
    )
}

/// A session holding one exchange, to check afterwards that nothing of it was lost.
async fn a_session_with_history(server: &Server, key: &str) -> (String, Json) {
    let (status, created) = server.post("/sessions", key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["session_id"].as_str().unwrap().to_string();
    let (status, answer) = server
        .post(
            &format!("/sessions/{id}/chat"),
            key,
            json!({"message": "list connections"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, messages) = server.get(&format!("/sessions/{id}/messages"), key).await;
    (id, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_slow_requests_get_clear_answers_and_lose_nothing() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &["--read-timeout", "3", "--rate-limit", "0"]);
    let key = server.admin_key();
    let (session, before) = a_session_with_history(&server, &key).await;

    // A body announced as 1 GB is refused from its Content-Length, before it is sent.
    let mut socket = TcpStream::connect(address(&server)).await.unwrap();
    socket
        .write_all(head("/chat", &key, Some(1 << 30)).as_bytes())
        .await
        .unwrap();
    let answer = read_answer(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(answer.body["code"], "payload_too_large");
    assert!(
        answer.body["error"].as_str().unwrap().contains("1048576"),
        "{}",
        answer.body
    );

    // A body of 20 MB sent whole by an ordinary client: the client gets the 413 (the server
    // reads and drops a modestly oversized body rather than resetting the connection under
    // the client while it still sends).
    let got = server
        .post("/chat", &key, json!({"message": "x".repeat(20_000_000)}))
        .await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // A 1 GB body streamed without a length: the server answers 413 once the limit (1 MiB) is
    // passed and stops reading, long before the gigabyte.
    let socket = TcpStream::connect(address(&server)).await.unwrap();
    let (mut reader, mut writer) = socket.into_split();
    let request = head("/chat", &key, None);
    let sender = tokio::spawn(async move {
        let mut sent: u64 = 0;
        if writer.write_all(request.as_bytes()).await.is_err() {
            return sent;
        }
        let block = vec![b' '; 256 * 1024];
        let frame = [
            format!("{:x}\r\n", block.len()).into_bytes(),
            block,
            b"\r\n".to_vec(),
        ]
        .concat();
        while sent < 1 << 30 {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
            sent += frame.len() as u64;
        }
        sent
    });
    let answer = read_answer(&mut reader, Duration::from_secs(30)).await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(answer.body["code"], "payload_too_large");
    drop(reader);
    let sent = tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .expect("the sender stops once the server hangs up")
        .unwrap();
    assert!(
        sent < 256 << 20,
        "the server kept reading a refused body: {sent} bytes accepted"
    );

    // Slow loris: clients that dribble their headers a byte at a time are cut off after the
    // read timeout (3 s here), while an ordinary client is served meanwhile.
    let loris = (0..20).map(|_| {
        let address = address(&server);
        tokio::spawn(async move {
            let mut socket = TcpStream::connect(address).await.unwrap();
            let opened = Instant::now();
            for byte in b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
                .iter()
                .cycle()
            {
                if socket.write_all(&[*byte]).await.is_err() {
                    break;
                }
                // Has the server closed on us?
                let mut probe = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(200), socket.read(&mut probe))
                    .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => panic!("the server answered a request it never fully got"),
                    Err(_) => {}
                }
                assert!(
                    opened.elapsed() < Duration::from_secs(20),
                    "a slow-loris connection is still open after 20 s"
                );
            }
            opened.elapsed()
        })
    });
    let loris: Vec<_> = loris.collect();
    let (status, health) = send(server.request(reqwest::Method::GET, "/health", None)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "served beside the slow clients: {health}"
    );
    assert!(
        loris.iter().all(|h| !h.is_finished()),
        "an ordinary client waited until the slow ones were gone"
    );
    for handle in loris {
        let held = handle.await.unwrap();
        assert!(
            held >= Duration::from_millis(2500) && held < Duration::from_secs(20),
            "a slow-loris connection was closed after {held:?}, not after the 3 s read timeout"
        );
    }

    // A body that stops arriving after the headers: 408 with the API's error body.
    let mut socket = TcpStream::connect(address(&server)).await.unwrap();
    socket
        .write_all(head("/chat", &key, Some(100)).as_bytes())
        .await
        .unwrap();
    socket.write_all(b"{\"message\": ").await.unwrap();
    let answer = read_answer(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(answer.status, 408, "{}", answer.body);
    assert_eq!(answer.body["code"], "request_timeout");
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("--read-timeout"),
        "{}",
        answer.body
    );

    // A 1 MB message (under the 1 MiB body limit, over the 64 KiB message limit) is refused
    // whole, in a session too, and the session keeps exactly what it had.
    let big = "x".repeat(1_000_000);
    for path in ["/chat".to_string(), format!("/sessions/{session}/chat")] {
        let got = server.post(&path, &key, json!({ "message": big })).await;
        let m = assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
        assert!(m.contains("65536 bytes"), "{m}");
    }
    let (_, after) = server
        .get(&format!("/sessions/{session}/messages"), &key)
        .await;
    assert_eq!(after, before, "the session lost or gained nothing");
    let (status, _) = server.get("/tools", &key).await;
    assert_eq!(status, StatusCode::OK, "still serving");
}

/// One key creates 10,000 sessions (the default cap) with 16 requests in flight: every one is
/// created, the next is refused with the cap named, the count is exact, another tenant is not
/// affected, and a session made before keeps its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sessions_from_one_key_meet_the_cap_exactly() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &["--rate-limit", "0"]);
    let key = server.admin_key();
    let (session, before) = a_session_with_history(&server, &key).await;
    let out = cli(
        &data,
        &[
            "keys", "create", "--name", "acme", "--role", "user", "--tenant", "acme",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = String::from_utf8(out.stdout).unwrap().trim().to_string();

    // 9,999 more, plus 50 beyond the cap, all racing: exactly 9,999 get in.
    use futures::StreamExt;
    let results: Vec<StatusCode> = futures::stream::iter(0..10_049)
        .map(|_| async { server.post("/sessions", &key, json!({})).await.0 })
        .buffer_unordered(16)
        .collect()
        .await;
    let created = results
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = results
        .iter()
        .filter(|s| **s == StatusCode::BAD_REQUEST)
        .count();
    assert_eq!((created, refused), (9_999, 50), "exactly up to the cap");

    let got = server.post("/sessions", &key, json!({})).await;
    let m = assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        m.contains("10000 sessions") && m.contains("--max-sessions"),
        "{m}"
    );
    let (status, list) = server.get("/sessions?limit=5", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 10_000, "{list}");
    assert_eq!(list["count"], 5);

    let (status, theirs) = server.post("/sessions", &other, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "another tenant: {theirs}");
    let (_, after) = server
        .get(&format!("/sessions/{session}/messages"), &key)
        .await;
    assert_eq!(after, before);

    // Deleting one frees a place.
    assert_eq!(
        server.delete(&format!("/sessions/{session}"), &key).await.0,
        StatusCode::OK
    );
    let (status, _) = server.post("/sessions", &key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
}

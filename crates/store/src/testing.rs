//! The conformance suite every [`Store`] implementation must pass, written against the trait
//! alone so the SQLite store and the PostgreSQL store to come are held to the same behaviour.
//!
//! Run it on a freshly migrated, **empty** store: a few checks are cross-tenant by nature
//! (`due_schedules`, `next_due_at`, `fail_unfinished_runs`) and count every row they see.
//! Failures panic with a message naming the method and what differed.
//!
//! What it pins down beyond the trait's doc comments (a backend must behave the same):
//! - lists of connections and flows are ordered by name, schedules by flow name, runs newest
//!   first (`created_at`, then id), log lines by `seq`; a limit or tail of 0 means "all";
//! - updates address rows by (tenant, id), may rename, and fail (`Backend`) when no such row
//!   exists in that tenant; `Conflict` texts are exactly `a connection named 'x' already exists`,
//!   `a flow named 'x' already exists`, `a connection with id 'i' already exists` (same for
//!   flows) and `a run with id 'i' already exists`;
//! - schedules, runs, log lines and high-water marks must belong to an existing flow (or run)
//!   of the same tenant, otherwise the write fails;
//! - renaming a flow renames it in its schedule; runs keep the name they ran under;
//! - timestamps come back exactly, to the microsecond.

use chrono::{DateTime, Duration, TimeZone, Utc};
use etl_agent::keys::{ApiKey, KeyStore};
use etl_agent::sessions::{NewMessage, Session, SessionStore};
use etl_agent::usage::{GroupBy, UsageFilter, UsageRecord, UsageStore, UsageTotals};
use etl_engine::host::Role;
use etl_engine::{
    Connection, Endpoint, Flow, FlowSpec, LogLine, Mapping, Run, RunQuery, RunStatus, RunTrigger,
    Schedule, Store, StoreError, Timestamp, Trigger,
};
use etl_model::{ColumnType, Props, WriteMode};
use futures::future::join_all;

/// Runs every check against `store`, which must be empty. Panics on the first failure.
pub async fn conformance(store: &dyn Store) {
    connections(store).await;
    flows(store).await;
    schedules(store).await;
    runs(store).await;
    run_liveness(store).await;
    run_logs(store).await;
    watermarks(store).await;
    delete_flow_cascades(store).await;
    tenant_isolation(store).await;
    concurrent_writers(store).await;
}

/// Runs every check of the API-key port against `keys`, which must hold no keys yet. Panics on
/// the first failure.
///
/// Pinned down: keys come back exactly (timestamps to the microsecond, role, prefix, hash);
/// `find_key_by_hash` finds revoked and expired keys too (the caller decides); lists are oldest
/// first and a tenant's list holds only its keys; revoking is scoped to the tenant when one is
/// given, happens once, and keeps the row; a second key with the same hash or id is a
/// `Conflict`; `count_keys` counts every tenant's keys, revoked ones included.
pub async fn key_conformance(keys: &dyn KeyStore) {
    assert_eq!(
        keys.count_keys().await.unwrap(),
        0,
        "count_keys: starts empty"
    );
    let a1 = api_key("tenant-a", "key_a1", "ci", Role::Admin, at(0));
    let a2 = api_key("tenant-a", "key_a2", "dashboard", Role::Readonly, at(5));
    let b1 = api_key("tenant-b", "key_b1", "ci", Role::User, at(1));
    for k in [&a1, &a2, &b1] {
        keys.insert_key(k).await.unwrap();
    }
    assert_eq!(keys.count_keys().await.unwrap(), 3, "count_keys");

    let found = keys.find_key_by_hash(&a2.hash).await.unwrap();
    assert_eq!(
        found.as_ref(),
        Some(&a2),
        "find_key_by_hash round-trips every field"
    );
    assert_eq!(keys.find_key_by_hash(&"0".repeat(64)).await.unwrap(), None);

    let ids = |list: Vec<ApiKey>| list.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(
        ids(keys.list_keys(Some("tenant-a")).await.unwrap()),
        ["key_a1", "key_a2"]
    );
    assert_eq!(
        ids(keys.list_keys(Some("tenant-b")).await.unwrap()),
        ["key_b1"]
    );
    assert!(keys.list_keys(Some("tenant-c")).await.unwrap().is_empty());
    assert_eq!(
        ids(keys.list_keys(None).await.unwrap()),
        ["key_a1", "key_a2", "key_b1"],
        "list_keys(None) spans tenants, by tenant then age"
    );

    // Same hash or same id: a conflict, and nothing is overwritten.
    let mut clash = api_key("tenant-b", "key_b2", "copy", Role::User, at(9));
    clash.hash = a1.hash.clone();
    assert!(matches!(
        keys.insert_key(&clash).await,
        Err(StoreError::Conflict(_))
    ));
    let mut clash = api_key("tenant-b", "key_a1", "copy", Role::User, at(9));
    clash.hash = "f".repeat(64);
    assert!(matches!(
        keys.insert_key(&clash).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(keys.count_keys().await.unwrap(), 3);

    // Revocation: scoped by tenant, once, and the row stays for the record.
    assert!(
        !keys
            .revoke_key(Some("tenant-b"), "key_a1", at(20))
            .await
            .unwrap(),
        "revoke_key: another tenant cannot revoke a key"
    );
    assert!(
        keys.revoke_key(Some("tenant-a"), "key_a1", at(20))
            .await
            .unwrap()
    );
    assert!(
        !keys
            .revoke_key(Some("tenant-a"), "key_a1", at(21))
            .await
            .unwrap(),
        "revoke_key: a revoked key is not revoked again"
    );
    assert!(
        keys.revoke_key(None, "key_b1", at(22)).await.unwrap(),
        "revoke by id alone"
    );
    assert!(!keys.revoke_key(None, "key_nope", at(22)).await.unwrap());
    let revoked = keys.find_key_by_hash(&a1.hash).await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at,
        Some(at(20)),
        "the first revocation time stays"
    );
    assert_eq!(keys.count_keys().await.unwrap(), 3, "revoked keys are kept");

    keys.touch_key("tenant-a", "key_a2", at(30)).await.unwrap();
    keys.touch_key("tenant-b", "key_a2", at(40)).await.unwrap();
    let touched = keys.find_key_by_hash(&a2.hash).await.unwrap().unwrap();
    assert_eq!(
        touched.last_used_at,
        Some(at(30)),
        "touch_key: another tenant's touch changes nothing"
    );
}

/// Runs every check of the session port against `sessions`, which must hold no sessions yet.
/// Panics on the first failure.
///
/// Pinned down: sessions and messages come back exactly (timestamps to the microsecond, tool
/// calls, tool-result data and success, metadata JSON); lists are most recently updated first
/// with working limit and offset (0: all) and carry message counts; appending bumps
/// `updated_at`, numbers messages 1, 2, 3... densely, and answers `None` for a session of
/// another tenant; another tenant can neither read, list, append to nor delete a session;
/// deleting a session deletes its messages; a second session with the same id is a
/// `Conflict`; concurrent appends to one session keep each call's messages together and never
/// reuse a position.
pub async fn session_conformance(sessions: &dyn SessionStore) {
    let (ta, tb) = ("tenant-a", "tenant-b");
    assert_eq!(sessions.count_sessions(ta).await.unwrap(), 0);
    let s1 = session(ta, "ses_one", Some("first"), at(0));
    let s2 = session(ta, "ses_two", None, at(10));
    let mut s3 = session(tb, "ses_three", Some("other tenant"), at(20));
    s3.include_tools = false;
    s3.system_prompt = None;
    s3.metadata = serde_json::Value::Null;
    for s in [&s1, &s2, &s3] {
        assert!(sessions.insert_session(s, u64::MAX).await.unwrap());
    }
    assert_eq!(
        sessions.get_session(ta, "ses_one").await.unwrap().as_ref(),
        Some(&s1),
        "get_session: the session comes back exactly"
    );
    assert_eq!(
        sessions
            .get_session(tb, "ses_three")
            .await
            .unwrap()
            .as_ref(),
        Some(&s3)
    );
    match sessions.insert_session(&s1, u64::MAX).await {
        Err(StoreError::Conflict(m)) => {
            assert_eq!(m, "a session with id 'ses_one' already exists")
        }
        other => panic!("insert_session: a taken id must be a Conflict, got {other:?}"),
    }
    let ids = |list: Vec<Session>| list.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(sessions.list_sessions(ta, 0, 0).await.unwrap()),
        ["ses_two", "ses_one"],
        "list_sessions: newest first, one tenant only"
    );
    assert_eq!(sessions.count_sessions(ta).await.unwrap(), 2);
    assert_eq!(sessions.count_sessions(tb).await.unwrap(), 1);

    // The per-tenant cap: a full tenant saves nothing; another tenant is counted apart; and
    // concurrent inserts racing for the last place let exactly one through.
    assert!(
        !sessions
            .insert_session(&session(ta, "ses_over", None, at(15)), 2)
            .await
            .unwrap(),
        "insert_session: a tenant at its cap saves nothing"
    );
    assert_eq!(sessions.count_sessions(ta).await.unwrap(), 2);
    assert!(
        sessions
            .get_session(ta, "ses_over")
            .await
            .unwrap()
            .is_none()
    );
    let tc = "tenant-capped";
    let racers = (0..8).map(|i| {
        let s = session(tc, &format!("ses_race{i}"), None, at(30));
        async move { sessions.insert_session(&s, 1).await.unwrap() }
    });
    let won = futures::future::join_all(racers).await;
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "insert_session: concurrent inserts never pass the cap: {won:?}"
    );
    assert_eq!(sessions.count_sessions(tc).await.unwrap(), 1);
    for i in 0..8 {
        sessions
            .delete_session(tc, &format!("ses_race{i}"))
            .await
            .unwrap();
    }

    // Appending: positions, exact round-trip, updated_at, then the order of the list.
    let call = etl_llm::ToolCall {
        id: "call_1".into(),
        name: "host_cli".into(),
        arguments: serde_json::json!({"command": "list flows"}),
    };
    let conversation = vec![
        NewMessage {
            message: etl_llm::Message::user("what flows do I have?"),
            created_at: at(30),
        },
        NewMessage {
            message: etl_llm::Message::assistant("", vec![call.clone()]),
            created_at: at(31),
        },
        NewMessage {
            message: etl_llm::Message::tool_result(
                &call,
                false,
                "no flows yet",
                serde_json::json!({"flows": [], "note": "ünïcode ✓"}),
            ),
            created_at: at(32),
        },
        NewMessage {
            message: etl_llm::Message::assistant("You have no flows yet.", Vec::new()),
            created_at: at(33),
        },
    ];
    let stored = sessions
        .append_messages(ta, "ses_one", &conversation[..2])
        .await
        .unwrap()
        .expect("append_messages: the session exists");
    assert_eq!(stored.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    let stored = sessions
        .append_messages(ta, "ses_one", &conversation[2..])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4]);
    let back = sessions.list_messages(ta, "ses_one", 0, 0).await.unwrap();
    assert_eq!(back.len(), 4);
    for (i, (got, want)) in back.iter().zip(&conversation).enumerate() {
        assert_eq!(got.seq, i as u64 + 1, "list_messages: in order");
        assert_eq!(
            got.message, want.message,
            "list_messages: message {i} exactly"
        );
        assert_eq!(
            got.created_at, want.created_at,
            "list_messages: time of {i}"
        );
    }
    let page = sessions.list_messages(ta, "ses_one", 2, 1).await.unwrap();
    assert_eq!(
        page.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [2, 3],
        "list_messages: limit and offset"
    );
    let one = sessions.get_session(ta, "ses_one").await.unwrap().unwrap();
    assert_eq!(one.message_count, 4, "get_session: message count");
    assert_eq!(one.updated_at, at(33), "append_messages bumps updated_at");
    assert_eq!(one.created_at, at(0));
    assert_eq!(
        sessions
            .append_messages(ta, "ses_one", &[])
            .await
            .unwrap()
            .map(|v| v.len()),
        Some(0),
        "append_messages: nothing to add is fine"
    );
    let listed = sessions.list_sessions(ta, 0, 0).await.unwrap();
    assert_eq!(
        ids(listed.clone()),
        ["ses_one", "ses_two"],
        "list_sessions: the session just used comes first"
    );
    assert_eq!(listed[0].message_count, 4, "list_sessions: message counts");
    assert_eq!(listed[1].message_count, 0);
    assert_eq!(
        ids(sessions.list_sessions(ta, 1, 1).await.unwrap()),
        ["ses_two"],
        "list_sessions: limit and offset"
    );
    assert!(sessions.list_sessions(ta, 5, 2).await.unwrap().is_empty());

    // Isolation: tenant b cannot see, use or delete tenant a's session, and the reverse.
    assert_eq!(sessions.get_session(tb, "ses_one").await.unwrap(), None);
    assert_eq!(sessions.get_session(ta, "ses_three").await.unwrap(), None);
    assert!(
        sessions
            .append_messages(tb, "ses_one", &conversation[..1])
            .await
            .unwrap()
            .is_none(),
        "append_messages: another tenant's session is not found"
    );
    assert!(
        sessions
            .list_messages(tb, "ses_one", 0, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!sessions.delete_session(tb, "ses_one").await.unwrap());
    assert_eq!(
        sessions
            .get_session(ta, "ses_one")
            .await
            .unwrap()
            .unwrap()
            .message_count,
        4,
        "a refused append or delete from another tenant changes nothing"
    );
    assert!(
        sessions
            .append_messages(ta, "ses_missing", &conversation[..1])
            .await
            .unwrap()
            .is_none()
    );

    // Deleting takes the messages along, once.
    assert!(sessions.delete_session(ta, "ses_one").await.unwrap());
    assert!(!sessions.delete_session(ta, "ses_one").await.unwrap());
    assert_eq!(sessions.get_session(ta, "ses_one").await.unwrap(), None);
    assert!(
        sessions
            .list_messages(ta, "ses_one", 0, 0)
            .await
            .unwrap()
            .is_empty(),
        "delete_session deletes the messages"
    );
    // A new session with the old id starts from position 1: nothing of the old one is left.
    sessions
        .insert_session(&session(ta, "ses_one", None, at(40)), u64::MAX)
        .await
        .unwrap();
    let fresh = sessions
        .append_messages(ta, "ses_one", &conversation[..1])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fresh[0].seq, 1);
    assert_eq!(
        sessions
            .list_messages(ta, "ses_one", 0, 0)
            .await
            .unwrap()
            .len(),
        1
    );

    concurrent_appends(sessions).await;
}

async fn concurrent_appends(sessions: &dyn SessionStore) {
    const WRITERS: usize = 8;
    const ROUNDS: usize = 10;
    const BLOCK: usize = 3;
    let t = "busy-tenant";
    sessions
        .insert_session(&session(t, "ses_busy", None, at(0)), u64::MAX)
        .await
        .unwrap();
    let writers = (0..WRITERS).map(|w| async move {
        let mut blocks = Vec::new();
        for round in 0..ROUNDS {
            let block: Vec<NewMessage> = (0..BLOCK)
                .map(|k| NewMessage {
                    message: etl_llm::Message::user(format!("w{w} r{round} m{k}")),
                    created_at: at(100 + round as i64),
                })
                .collect();
            let stored = sessions
                .append_messages(t, "ses_busy", &block)
                .await
                .map_err(|e| format!("append_messages writer {w} round {round}: {e}"))?
                .ok_or_else(|| format!("writer {w}: the session vanished"))?;
            blocks.push(stored.iter().map(|m| m.seq).collect::<Vec<_>>());
        }
        Ok::<_, String>(blocks)
    });
    let mut seen = Vec::new();
    for result in join_all(writers).await {
        for block in result.unwrap_or_else(|e| panic!("{e}")) {
            assert!(
                block.windows(2).all(|w| w[1] == w[0] + 1),
                "one call's messages take consecutive positions: {block:?}"
            );
            seen.extend(block);
        }
    }
    seen.sort_unstable();
    let total = (WRITERS * ROUNDS * BLOCK) as u64;
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "concurrent appends: every position used exactly once"
    );
    let stored = sessions.list_messages(t, "ses_busy", 0, 0).await.unwrap();
    assert_eq!(stored.len() as u64, total);
    assert_eq!(
        sessions
            .get_session(t, "ses_busy")
            .await
            .unwrap()
            .unwrap()
            .message_count,
        total
    );
}

/// Runs every check of the usage port against `usage`, which must hold no records yet.
/// Panics on the first failure.
///
/// Pinned down: sums are exact (large values included) and all zero when nothing matches;
/// every filter field narrows (`since` inclusive, `until` exclusive, to the microsecond);
/// a tenant's queries never count another tenant's rows, and a filter without a tenant spans
/// them all; groups are ordered by value, days are `YYYY-MM-DD` in UTC, runs without a session
/// group under `""`; a run is recorded once per tenant (`Conflict` for a second record, while
/// another tenant may use the same run id).
pub async fn usage_conformance(usage: &dyn UsageStore) {
    let all = UsageFilter::default();
    assert_eq!(
        usage.usage_totals(&all).await.unwrap(),
        UsageTotals::default(),
        "usage_totals: starts empty, all zero"
    );
    assert!(
        usage
            .usage_groups(&all, GroupBy::Key)
            .await
            .unwrap()
            .is_empty()
    );
    let day = 86_400;
    let records = [
        usage_record(
            "tenant-a",
            "run_1",
            "key_a1",
            Some("ses_x"),
            "gpt-4o-mini",
            at(0),
            100,
            20,
            150,
        ),
        usage_record(
            "tenant-a",
            "run_2",
            "key_a1",
            None,
            "gpt-4o-mini",
            at(60),
            300,
            40,
            0,
        ),
        usage_record(
            "tenant-a",
            "run_3",
            "key_a2",
            Some("ses_x"),
            "built-in-planner",
            at(day),
            50,
            5,
            0,
        ),
        usage_record(
            "tenant-b",
            "run_1",
            "key_b1",
            None,
            "claude-sonnet-4-5",
            at(day + 5),
            7,
            3,
            999,
        ),
        usage_record(
            "tenant-b",
            "run_4",
            "key_b1",
            None,
            "claude-sonnet-4-5",
            at(2 * day),
            4_000_000_000,
            3_000_000_000,
            9_000_000_000,
        ),
    ];
    for r in &records {
        usage.record_usage(r).await.unwrap();
    }
    let again = usage.record_usage(&records[0]).await.unwrap_err();
    assert!(
        matches!(&again, StoreError::Conflict(m) if m.contains("run_1")),
        "record_usage: a second record of a run is a Conflict naming it: {again:?}"
    );
    let tenant = |t: &str| UsageFilter {
        tenant: Some(t.into()),
        ..UsageFilter::default()
    };
    let a = usage.usage_totals(&tenant("tenant-a")).await.unwrap();
    assert_eq!(
        a,
        UsageTotals {
            runs: 3,
            input_tokens: 450,
            output_tokens: 65,
            tool_calls: 3,
            llm_calls: 6,
            cost_micros: 150,
        },
        "usage_totals: one tenant's rows only, summed exactly"
    );
    assert_eq!(a.total_tokens(), 515);
    let b = usage.usage_totals(&tenant("tenant-b")).await.unwrap();
    assert_eq!(
        b.input_tokens, 4_000_000_007,
        "large sums come back exactly"
    );
    assert_eq!(b.cost_micros, 9_000_000_999);
    let everything = usage.usage_totals(&all).await.unwrap();
    assert_eq!(everything.runs, 5, "no tenant: every tenant's rows");
    assert_eq!(
        usage
            .usage_totals(&UsageFilter {
                key_id: Some("key_a1".into()),
                ..tenant("tenant-a")
            })
            .await
            .unwrap()
            .runs,
        2,
        "key_id narrows"
    );
    assert_eq!(
        usage
            .usage_totals(&UsageFilter {
                key_id: Some("key_b1".into()),
                ..tenant("tenant-a")
            })
            .await
            .unwrap(),
        UsageTotals::default(),
        "another tenant's key counts nothing in this tenant"
    );
    assert_eq!(
        usage
            .usage_totals(&UsageFilter {
                session_id: Some("ses_x".into()),
                ..tenant("tenant-a")
            })
            .await
            .unwrap()
            .input_tokens,
        150,
        "session_id narrows"
    );
    let window = usage
        .usage_totals(&UsageFilter {
            since: Some(at(60)),
            until: Some(at(day)),
            ..tenant("tenant-a")
        })
        .await
        .unwrap();
    assert_eq!(
        (window.runs, window.input_tokens),
        (1, 300),
        "since is inclusive and until exclusive, to the microsecond"
    );

    let keys = usage
        .usage_groups(&tenant("tenant-a"), GroupBy::Key)
        .await
        .unwrap();
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["key_a1", "key_a2"], "groups are ordered by value");
    assert_eq!(keys[0].1.input_tokens, 400);
    let sessions = usage
        .usage_groups(&tenant("tenant-a"), GroupBy::Session)
        .await
        .unwrap();
    assert_eq!(
        sessions
            .iter()
            .map(|(s, t)| (s.as_str(), t.runs))
            .collect::<Vec<_>>(),
        [("", 1), ("ses_x", 2)],
        "runs without a session group under the empty string"
    );
    let days = usage.usage_groups(&all, GroupBy::Day).await.unwrap();
    assert_eq!(
        days.iter()
            .map(|(d, t)| (d.as_str(), t.runs))
            .collect::<Vec<_>>(),
        [("2025-01-01", 2), ("2025-01-02", 2), ("2025-01-03", 1)],
        "days are UTC dates, oldest first"
    );
    let models = usage
        .usage_groups(&tenant("tenant-b"), GroupBy::Model)
        .await
        .unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].0, "claude-sonnet-4-5");
    assert_eq!(models[0].1.runs, 2);
    let tenants = usage.usage_groups(&all, GroupBy::Tenant).await.unwrap();
    assert_eq!(
        tenants
            .iter()
            .map(|(t, n)| (t.as_str(), n.runs))
            .collect::<Vec<_>>(),
        [("tenant-a", 3), ("tenant-b", 2)]
    );
    assert!(
        usage
            .usage_groups(&tenant("tenant-c"), GroupBy::Day)
            .await
            .unwrap()
            .is_empty(),
        "a tenant without usage has no groups"
    );
}

/// One run's usage; tool calls 1 and model calls 2 each.
#[allow(clippy::too_many_arguments)]
pub fn usage_record(
    tenant: &str,
    run_id: &str,
    key_id: &str,
    session_id: Option<&str>,
    model: &str,
    when: Timestamp,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
) -> UsageRecord {
    UsageRecord {
        tenant: tenant.into(),
        key_id: key_id.into(),
        session_id: session_id.map(str::to_string),
        run_id: run_id.into(),
        model: model.into(),
        input_tokens,
        output_tokens,
        tool_calls: 1,
        llm_calls: 2,
        cost_micros,
        at: when,
    }
}

/// A session with every field set (metadata, prompt), created and updated at `created`.
pub fn session(tenant: &str, id: &str, title: Option<&str>, created: Timestamp) -> Session {
    Session {
        id: id.into(),
        tenant: tenant.into(),
        title: title.map(str::to_string),
        system_prompt: Some("Answer briefly.".into()),
        include_tools: true,
        metadata: serde_json::json!({"project": "billing", "tags": ["a", "b"], "n": 1.5}),
        created_at: created,
        updated_at: created,
        message_count: 0,
    }
}

/// A key with a hash derived from its id (tests never need the plain key).
pub fn api_key(tenant: &str, id: &str, name: &str, role: Role, created: Timestamp) -> ApiKey {
    ApiKey {
        id: id.into(),
        tenant: tenant.into(),
        name: name.into(),
        role,
        prefix: "AbCd1234".into(),
        hash: etl_agent::keys::hash_secret(id),
        created_at: created,
        expires_at: Some(created + Duration::days(30)),
        revoked_at: None,
        last_used_at: None,
    }
}

// ---- fixtures -------------------------------------------------------------------------------

/// A fixed instant with microseconds, so exact round-trips are checked, `secs` seconds after
/// 2025-01-01T00:00:00.123456Z.
pub fn at(secs: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
        + Duration::microseconds(123_456)
        + Duration::seconds(secs)
}

pub fn connection(tenant: &str, name: &str) -> Connection {
    let mut props = Props::new();
    props
        .set("url", format!("postgres://db.example.com/{name}"))
        .set("password", "enc:v1:c2VjcmV0")
        .set("schema", "public");
    Connection {
        id: format!("conn-{tenant}-{name}"),
        tenant: tenant.into(),
        name: name.into(),
        type_name: "postgres".into(),
        props,
        tags: vec!["prod".into(), "finance".into()],
        description: format!("The {name} database"),
        created_at: at(0),
        updated_at: at(1),
    }
}

pub fn flow(tenant: &str, name: &str) -> Flow {
    let mut source_options = Props::new();
    source_options
        .set("format", "json")
        .set("records", "data.items");
    Flow {
        id: format!("flow-{tenant}-{name}"),
        tenant: tenant.into(),
        name: name.into(),
        description: format!("Loads {name}"),
        spec: FlowSpec {
            source: Endpoint {
                connection: "api".into(),
                object: "/v1/orders".into(),
                options: source_options,
            },
            destination: Endpoint {
                connection: "warehouse".into(),
                object: format!("public.{name}"),
                options: Props::new(),
            },
            mode: WriteMode::Merge,
            keys: vec!["id".into()],
            create: true,
            incremental: Some("updated_at".into()),
            mapping: Mapping {
                filter: Some("status = 'active'".into()),
                rename: vec![("orderId".into(), "order_id".into())],
                exclude: vec!["internal".into()],
                constants: vec![("source".into(), "api".into())],
                casts: vec![("amount".into(), ColumnType::Float)],
            },
            batch_size: Some(5000),
        },
        created_at: at(0),
        updated_at: at(0),
    }
}

pub fn schedule(flow: &Flow, next_run_at: Option<Timestamp>, enabled: bool) -> Schedule {
    Schedule {
        id: format!("sched-{}", flow.id),
        tenant: flow.tenant.clone(),
        flow_id: flow.id.clone(),
        flow_name: flow.name.clone(),
        trigger: Trigger::Cron {
            expr: "0 */15 * * * *".into(),
            timezone: "Europe/Berlin".into(),
        },
        enabled,
        retries: 2,
        retry_delay_secs: 30,
        next_run_at,
        last_run_at: None,
        last_run_id: None,
        created_at: at(0),
        updated_at: at(0),
    }
}

pub fn run(flow: &Flow, id: &str, created_at: Timestamp, status: RunStatus) -> Run {
    Run {
        id: id.into(),
        tenant: flow.tenant.clone(),
        flow_id: flow.id.clone(),
        flow_name: flow.name.clone(),
        trigger: RunTrigger::Manual,
        status,
        attempt: 1,
        rows_read: 0,
        rows_written: 0,
        batches: 0,
        error: None,
        created_at,
        started_at: None,
        finished_at: None,
    }
}

pub fn log_lines(run_id: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<LogLine> {
    seqs.map(|seq| LogLine {
        run_id: run_id.into(),
        seq,
        at: at(seq as i64),
        level: if seq % 5 == 0 { "warn" } else { "info" }.into(),
        message: format!("batch {seq}: wrote 5000 rows"),
    })
    .collect()
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| id(i).to_string()).collect()
}

fn expect_conflict<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>, text: &str) {
    match result {
        Err(StoreError::Conflict(message)) => {
            assert_eq!(message, text, "{what}: wrong Conflict text")
        }
        other => panic!("{what}: expected Conflict({text:?}), got {other:?}"),
    }
}

fn expect_backend_error<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::Backend(message)) => {
            assert!(!message.is_empty(), "{what}: empty error text")
        }
        other => panic!("{what}: expected a Backend error, got {other:?}"),
    }
}

// ---- connections ----------------------------------------------------------------------------

async fn connections(store: &dyn Store) {
    let t = "conn-tenant";
    assert!(store.list_connections(t).await.unwrap().is_empty());
    assert_eq!(store.get_connection(t, "warehouse").await.unwrap(), None);

    let warehouse = connection(t, "warehouse");
    store.insert_connection(&warehouse).await.unwrap();
    assert_eq!(
        store.get_connection(t, "warehouse").await.unwrap(),
        Some(warehouse.clone()),
        "get_connection must return exactly what insert_connection stored"
    );

    let mut twin = connection(t, "warehouse");
    twin.id = "conn-other-id".into();
    expect_conflict(
        "insert_connection with a taken name",
        store.insert_connection(&twin).await,
        "a connection named 'warehouse' already exists",
    );

    let mut same_id = connection(t, "elsewhere");
    same_id.id = warehouse.id.clone();
    expect_conflict(
        "insert_connection with a taken id",
        store.insert_connection(&same_id).await,
        &format!("a connection with id '{}' already exists", warehouse.id),
    );

    let api = connection(t, "api");
    store.insert_connection(&api).await.unwrap();
    let names = ids(&store.list_connections(t).await.unwrap(), |c| &c.name);
    assert_eq!(
        names,
        ["api", "warehouse"],
        "list_connections orders by name"
    );

    // Update in place, renaming: addressed by id.
    let mut dw = warehouse.clone();
    dw.name = "dw".into();
    dw.props.set("schema", "analytics");
    dw.tags = vec![];
    dw.description = String::new();
    dw.updated_at = at(60);
    store.update_connection(&dw).await.unwrap();
    assert_eq!(
        store.get_connection(t, "dw").await.unwrap(),
        Some(dw.clone())
    );
    assert_eq!(store.get_connection(t, "warehouse").await.unwrap(), None);

    let mut clash = dw.clone();
    clash.name = "api".into();
    expect_conflict(
        "update_connection renaming onto a taken name",
        store.update_connection(&clash).await,
        "a connection named 'api' already exists",
    );
    assert_eq!(
        store.get_connection(t, "dw").await.unwrap(),
        Some(dw.clone())
    );

    let mut ghost = connection(t, "ghost");
    ghost.id = "conn-never-inserted".into();
    expect_backend_error(
        "update_connection of a missing connection",
        store.update_connection(&ghost).await,
    );
    assert_eq!(store.get_connection(t, "ghost").await.unwrap(), None);

    assert!(store.delete_connection(t, "api").await.unwrap());
    assert!(
        !store.delete_connection(t, "api").await.unwrap(),
        "second delete answers false"
    );
    let names = ids(&store.list_connections(t).await.unwrap(), |c| &c.name);
    assert_eq!(names, ["dw"]);
    // The name is free again after a delete.
    store.insert_connection(&api).await.unwrap();
}

// ---- flows ----------------------------------------------------------------------------------

async fn flows(store: &dyn Store) {
    let t = "flow-tenant";
    assert!(store.list_flows(t).await.unwrap().is_empty());

    let orders = flow(t, "orders");
    store.insert_flow(&orders).await.unwrap();
    assert_eq!(
        store.get_flow(t, "orders").await.unwrap(),
        Some(orders.clone())
    );
    assert_eq!(
        store.get_flow(t, &orders.id).await.unwrap(),
        Some(orders.clone()),
        "get_flow finds a flow by id too"
    );
    assert_eq!(store.get_flow(t, "nope").await.unwrap(), None);

    let mut twin = flow(t, "orders");
    twin.id = "flow-other-id".into();
    expect_conflict(
        "insert_flow with a taken name",
        store.insert_flow(&twin).await,
        "a flow named 'orders' already exists",
    );

    let mut same_id = flow(t, "elsewhere");
    same_id.id = orders.id.clone();
    expect_conflict(
        "insert_flow with a taken id",
        store.insert_flow(&same_id).await,
        &format!("a flow with id '{}' already exists", orders.id),
    );

    // A minimal spec (defaults everywhere) survives the round trip too.
    let mut bare = flow(t, "customers");
    bare.spec = FlowSpec {
        source: Endpoint {
            connection: "files".into(),
            object: "in/*.csv".into(),
            options: Props::new(),
        },
        destination: Endpoint {
            connection: "warehouse".into(),
            object: "customers".into(),
            options: Props::new(),
        },
        mode: WriteMode::Append,
        keys: vec![],
        create: false,
        incremental: None,
        mapping: Mapping::default(),
        batch_size: None,
    };
    store.insert_flow(&bare).await.unwrap();
    assert_eq!(
        store.get_flow(t, "customers").await.unwrap(),
        Some(bare.clone())
    );
    let names = ids(&store.list_flows(t).await.unwrap(), |f| &f.name);
    assert_eq!(names, ["customers", "orders"], "list_flows orders by name");

    let mut renamed = orders.clone();
    renamed.name = "orders_v2".into();
    renamed.spec.mode = WriteMode::Replace;
    renamed.spec.keys.clear();
    renamed.updated_at = at(90);
    store.update_flow(&renamed).await.unwrap();
    assert_eq!(
        store.get_flow(t, "orders_v2").await.unwrap(),
        Some(renamed.clone())
    );
    assert_eq!(store.get_flow(t, "orders").await.unwrap(), None);
    assert_eq!(
        store.get_flow(t, &orders.id).await.unwrap(),
        Some(renamed.clone())
    );

    let mut clash = renamed.clone();
    clash.name = "customers".into();
    expect_conflict(
        "update_flow renaming onto a taken name",
        store.update_flow(&clash).await,
        "a flow named 'customers' already exists",
    );
    let mut ghost = flow(t, "ghost");
    ghost.id = "flow-never-inserted".into();
    expect_backend_error(
        "update_flow of a missing flow",
        store.update_flow(&ghost).await,
    );

    // A name that equals another flow's id: the name wins.
    let mut impostor = flow(t, "impostor");
    impostor.name = bare.id.clone();
    store.insert_flow(&impostor).await.unwrap();
    assert_eq!(
        store.get_flow(t, &bare.id).await.unwrap().map(|f| f.id),
        Some(impostor.id.clone()),
        "get_flow prefers a name match over an id match"
    );
    assert!(store.delete_flow(t, &impostor.id).await.unwrap());
    assert!(!store.delete_flow(t, &impostor.id).await.unwrap());
    assert_eq!(store.get_flow(t, &bare.id).await.unwrap(), Some(bare));
}

// ---- schedules ------------------------------------------------------------------------------

async fn schedules(store: &dyn Store) {
    let t = "sched-tenant";
    let base = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    let f: Vec<Flow> = ["alpha", "bravo", "charlie", "delta"]
        .iter()
        .map(|n| flow(t, n))
        .collect();
    for fl in &f {
        store.insert_flow(fl).await.unwrap();
    }
    assert!(store.list_schedules(t).await.unwrap().is_empty());
    assert_eq!(
        store.next_due_at().await.unwrap(),
        None,
        "no schedules, nothing due"
    );

    let mut a = schedule(&f[0], Some(base + Duration::milliseconds(10_500)), true);
    a.trigger = Trigger::Every { seconds: 60 };
    let b = schedule(&f[1], Some(base + Duration::seconds(5)), true);
    let c = schedule(&f[2], Some(base + Duration::seconds(1)), false);
    let d = schedule(&f[3], None, true);
    for s in [&d, &c, &b, &a] {
        store.upsert_schedule(s).await.unwrap();
    }
    assert_eq!(
        store.get_schedule(t, &f[0].id).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store
            .get_schedule(t, "flow-without-schedule")
            .await
            .unwrap(),
        None
    );
    let listed = store.list_schedules(t).await.unwrap();
    assert_eq!(
        listed,
        [a.clone(), b.clone(), c.clone(), d.clone()],
        "ordered by flow name"
    );

    let due = |now: DateTime<Utc>| async move { store.due_schedules(now).await.unwrap() };
    assert!(due(base).await.is_empty(), "nothing is due before its time");
    assert_eq!(
        due(base + Duration::seconds(7)).await,
        std::slice::from_ref(&b),
        "disabled schedules and schedules without next_run_at are never due"
    );
    assert_eq!(
        due(base + Duration::milliseconds(10_500)).await,
        [b.clone(), a.clone()],
        "due at exactly next_run_at, earliest first"
    );
    assert_eq!(
        store.next_due_at().await.unwrap(),
        b.next_run_at,
        "next_due_at ignores the disabled schedule that is earlier"
    );

    // Upsert replaces the flow's one schedule.
    let mut a2 = a.clone();
    a2.id = "sched-replacement".into();
    a2.trigger = Trigger::Cron {
        expr: "0 0 6 * * *".into(),
        timezone: "UTC".into(),
    };
    a2.retries = 0;
    a2.retry_delay_secs = 0;
    a2.next_run_at = Some(base + Duration::days(1));
    a2.last_run_at = Some(base + Duration::milliseconds(10_500));
    a2.last_run_id = Some("run-42".into());
    a2.updated_at = at(5);
    store.upsert_schedule(&a2).await.unwrap();
    assert_eq!(
        store.get_schedule(t, &f[0].id).await.unwrap(),
        Some(a2.clone())
    );
    assert_eq!(
        store.list_schedules(t).await.unwrap().len(),
        4,
        "still one per flow"
    );

    // Renaming the flow renames its schedule.
    let mut renamed = f[0].clone();
    renamed.name = "zulu".into();
    store.update_flow(&renamed).await.unwrap();
    let after = store.get_schedule(t, &f[0].id).await.unwrap().unwrap();
    assert_eq!(
        after.flow_name, "zulu",
        "update_flow keeps the schedule's flow name"
    );
    let names = ids(&store.list_schedules(t).await.unwrap(), |s| &s.flow_name);
    assert_eq!(names, ["bravo", "charlie", "delta", "zulu"]);

    let mut orphan = schedule(&flow(t, "missing"), Some(base), true);
    orphan.flow_id = "flow-that-does-not-exist".into();
    expect_backend_error(
        "upsert_schedule for a flow that does not exist",
        store.upsert_schedule(&orphan).await,
    );

    assert!(store.delete_schedule(t, &f[3].id).await.unwrap());
    assert!(!store.delete_schedule(t, &f[3].id).await.unwrap());
    assert_eq!(store.get_schedule(t, &f[3].id).await.unwrap(), None);

    // Disable everything: nothing left to wait for.
    for flow_id in [&f[0].id, &f[1].id] {
        let mut s = store.get_schedule(t, flow_id).await.unwrap().unwrap();
        s.enabled = false;
        store.upsert_schedule(&s).await.unwrap();
    }
    assert_eq!(store.next_due_at().await.unwrap(), None);
    assert!(due(base + Duration::days(365)).await.is_empty());
}

// ---- runs -----------------------------------------------------------------------------------

async fn runs(store: &dyn Store) {
    let t = "run-tenant";
    let main = flow(t, "main");
    let side = flow(t, "side");
    store.insert_flow(&main).await.unwrap();
    store.insert_flow(&side).await.unwrap();

    let mut r1 = run(&main, "run-1", at(10), RunStatus::Success);
    r1.trigger = RunTrigger::Schedule;
    r1.rows_read = 1_000_000;
    r1.rows_written = 999_998;
    r1.batches = 200;
    r1.started_at = Some(at(11));
    r1.finished_at = Some(at(70));
    let r2 = run(&main, "run-2", at(20), RunStatus::Running);
    let r3 = run(&main, "run-3", at(30), RunStatus::Queued);
    let mut r4 = run(&side, "run-4", at(40), RunStatus::Error);
    r4.trigger = RunTrigger::Agent;
    r4.error = Some("HTTP 500 from the API".into());
    let mut r5 = run(&side, "run-5", at(40), RunStatus::Canceled);
    r5.trigger = RunTrigger::Api;
    for r in [&r1, &r2, &r3, &r4, &r5] {
        store.insert_run(r).await.unwrap();
    }
    assert_eq!(store.get_run(t, "run-1").await.unwrap(), Some(r1.clone()));
    assert_eq!(store.get_run(t, "run-404").await.unwrap(), None);

    let list = |flow_id: Option<&str>, status: Option<RunStatus>, limit: usize| {
        let query = RunQuery {
            flow_id: flow_id.map(String::from),
            status,
            limit,
        };
        async move {
            let runs = store.list_runs(t, &query).await.unwrap();
            ids(&runs, |r| &r.id)
        }
    };
    // run-4 and run-5 share created_at: the id breaks the tie, newest (largest) first.
    assert_eq!(
        list(None, None, 0).await,
        ["run-5", "run-4", "run-3", "run-2", "run-1"],
        "list_runs is newest first; limit 0 means all"
    );
    assert_eq!(list(None, None, 2).await, ["run-5", "run-4"]);
    assert_eq!(
        list(Some(&main.id), None, 0).await,
        ["run-3", "run-2", "run-1"]
    );
    assert_eq!(list(Some(&main.id), None, 1).await, ["run-3"]);
    assert_eq!(list(None, Some(RunStatus::Running), 0).await, ["run-2"]);
    assert_eq!(
        list(Some(&side.id), Some(RunStatus::Error), 0).await,
        ["run-4"]
    );
    assert!(
        list(Some(&side.id), Some(RunStatus::Queued), 0)
            .await
            .is_empty()
    );

    let mut r2_done = r2.clone();
    r2_done.status = RunStatus::Success;
    r2_done.attempt = 2;
    r2_done.rows_read = 42;
    r2_done.rows_written = 40;
    r2_done.batches = 1;
    r2_done.error = Some("2 rows rejected".into());
    r2_done.started_at = Some(at(21));
    r2_done.finished_at = Some(at(22));
    store.update_run(&r2_done).await.unwrap();
    assert_eq!(
        store.get_run(t, "run-2").await.unwrap(),
        Some(r2_done.clone())
    );

    expect_backend_error(
        "update_run of a missing run",
        store
            .update_run(&run(&main, "run-404", at(0), RunStatus::Running))
            .await,
    );
    expect_conflict(
        "insert_run with a taken id",
        store.insert_run(&r1).await,
        "a run with id 'run-1' already exists",
    );
    let mut orphan = run(&main, "run-orphan", at(0), RunStatus::Queued);
    orphan.flow_id = "flow-that-does-not-exist".into();
    expect_backend_error(
        "insert_run for a missing flow",
        store.insert_run(&orphan).await,
    );

    // Start-up recovery: run-3 (queued) and run-6 (running) are unfinished.
    let mut r6 = run(&side, "run-6", at(50), RunStatus::Running);
    r6.started_at = Some(at(51));
    r6.rows_read = 7;
    store.insert_run(&r6).await.unwrap();
    let before = Utc::now() - Duration::seconds(1);
    assert_eq!(
        store
            .fail_unfinished_runs("the server restarted", Utc::now() + Duration::seconds(5))
            .await
            .unwrap(),
        2
    );
    let after = Utc::now() + Duration::seconds(1);
    for (original, id) in [(&r3, "run-3"), (&r6, "run-6")] {
        let failed = store.get_run(t, id).await.unwrap().unwrap();
        assert_eq!(failed.status, RunStatus::Error, "{id} is failed");
        assert_eq!(failed.error.as_deref(), Some("the server restarted"));
        let finished = failed.finished_at.expect("finished_at is set to now");
        assert!(
            before <= finished && finished <= after,
            "finished_at {finished} is now"
        );
        assert_eq!(failed.started_at, original.started_at, "started_at is kept");
        assert_eq!(failed.rows_read, original.rows_read, "counters are kept");
    }
    assert_eq!(
        store.get_run(t, "run-1").await.unwrap(),
        Some(r1),
        "finished runs untouched"
    );
    assert_eq!(store.get_run(t, "run-2").await.unwrap(), Some(r2_done));
    assert_eq!(
        store
            .fail_unfinished_runs("again", Utc::now() + Duration::seconds(5))
            .await
            .unwrap(),
        0
    );
}

// ---- run logs -------------------------------------------------------------------------------

async fn run_logs(store: &dyn Store) {
    let t = "log-tenant";
    let f = flow(t, "logged");
    store.insert_flow(&f).await.unwrap();
    // Finished runs, so the cross-tenant `fail_unfinished_runs` count later is not disturbed.
    store
        .insert_run(&run(&f, "run-logs", at(0), RunStatus::Success))
        .await
        .unwrap();
    store
        .insert_run(&run(&f, "run-quiet", at(1), RunStatus::Success))
        .await
        .unwrap();

    assert!(store.run_logs(t, "run-logs", 10).await.unwrap().is_empty());
    store.append_logs(t, &[]).await.unwrap();
    let all = log_lines("run-logs", 1..=12);
    // Two batches, the second out of order: reads are by seq, not by arrival.
    store.append_logs(t, &all[8..]).await.unwrap();
    store.append_logs(t, &all[..8]).await.unwrap();

    assert_eq!(
        store.run_logs(t, "run-logs", 3).await.unwrap(),
        all[9..],
        "the last 3, oldest first"
    );
    assert_eq!(
        store.run_logs(t, "run-logs", 0).await.unwrap(),
        all,
        "tail 0 means all"
    );
    assert_eq!(store.run_logs(t, "run-logs", 500).await.unwrap(), all);
    assert!(store.run_logs(t, "run-quiet", 10).await.unwrap().is_empty());
    assert!(store.run_logs(t, "run-404", 10).await.unwrap().is_empty());

    match store.append_logs(t, &log_lines("run-logs", 12..=13)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("append_logs with a stored seq: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.run_logs(t, "run-logs", 0).await.unwrap(),
        all,
        "a failed batch stores none of its lines"
    );
    expect_backend_error(
        "append_logs for a missing run",
        store.append_logs(t, &log_lines("run-404", 1..=1)).await,
    );
}

// ---- watermarks -----------------------------------------------------------------------------

async fn watermarks(store: &dyn Store) {
    let t = "mark-tenant";
    let f = flow(t, "incremental");
    store.insert_flow(&f).await.unwrap();
    assert_eq!(store.get_watermark(t, &f.id).await.unwrap(), None);
    store
        .set_watermark(t, &f.id, Some(r#""2025-01-01T00:00:00Z""#))
        .await
        .unwrap();
    assert_eq!(
        store.get_watermark(t, &f.id).await.unwrap().as_deref(),
        Some(r#""2025-01-01T00:00:00Z""#)
    );
    store
        .set_watermark(t, &f.id, Some("1234567"))
        .await
        .unwrap();
    assert_eq!(
        store.get_watermark(t, &f.id).await.unwrap().as_deref(),
        Some("1234567")
    );
    store.set_watermark(t, &f.id, None).await.unwrap();
    assert_eq!(
        store.get_watermark(t, &f.id).await.unwrap(),
        None,
        "None clears the mark"
    );
    store.set_watermark(t, &f.id, None).await.unwrap();
    expect_backend_error(
        "set_watermark for a missing flow",
        store
            .set_watermark(t, "flow-that-does-not-exist", Some("1"))
            .await,
    );
}

// ---- delete_flow ----------------------------------------------------------------------------

async fn delete_flow_cascades(store: &dyn Store) {
    let t = "cascade-tenant";
    let doomed = flow(t, "doomed");
    let kept = flow(t, "kept");
    for f in [&doomed, &kept] {
        store.insert_flow(f).await.unwrap();
        store
            .upsert_schedule(&schedule(f, None, false))
            .await
            .unwrap();
        for n in 1..=2 {
            let id = format!("{}-run-{n}", f.name);
            store
                .insert_run(&run(f, &id, at(n), RunStatus::Success))
                .await
                .unwrap();
            store.append_logs(t, &log_lines(&id, 1..=3)).await.unwrap();
        }
        store.set_watermark(t, &f.id, Some("99")).await.unwrap();
    }

    assert!(store.delete_flow(t, &doomed.id).await.unwrap());
    assert_eq!(store.get_flow(t, &doomed.id).await.unwrap(), None);
    assert_eq!(store.get_schedule(t, &doomed.id).await.unwrap(), None);
    assert_eq!(store.get_watermark(t, &doomed.id).await.unwrap(), None);
    for n in 1..=2 {
        let id = format!("doomed-run-{n}");
        assert_eq!(
            store.get_run(t, &id).await.unwrap(),
            None,
            "{id} deleted with its flow"
        );
        assert!(
            store.run_logs(t, &id, 0).await.unwrap().is_empty(),
            "{id} logs deleted"
        );
    }
    let query = RunQuery {
        flow_id: Some(doomed.id.clone()),
        ..RunQuery::default()
    };
    assert!(store.list_runs(t, &query).await.unwrap().is_empty());
    assert!(
        !store.delete_flow(t, &doomed.id).await.unwrap(),
        "second delete answers false"
    );

    // The other flow keeps everything.
    assert!(store.get_flow(t, &kept.id).await.unwrap().is_some());
    assert!(store.get_schedule(t, &kept.id).await.unwrap().is_some());
    assert_eq!(
        store.get_watermark(t, &kept.id).await.unwrap().as_deref(),
        Some("99")
    );
    assert_eq!(store.run_logs(t, "kept-run-2", 0).await.unwrap().len(), 3);
    let names = ids(&store.list_schedules(t).await.unwrap(), |s| &s.flow_name);
    assert_eq!(names, ["kept"]);

    // A new flow with the same id starts clean.
    store.insert_flow(&doomed).await.unwrap();
    assert_eq!(store.get_watermark(t, &doomed.id).await.unwrap(), None);
    assert_eq!(store.get_schedule(t, &doomed.id).await.unwrap(), None);
}

// ---- tenant isolation -----------------------------------------------------------------------

async fn tenant_isolation(store: &dyn Store) {
    let (a, b) = ("tenant-a", "tenant-b");
    let conn = connection(a, "shared");
    let f = flow(a, "private");
    let s = schedule(&f, None, false);
    let mut r = run(&f, "run-a", at(0), RunStatus::Running);
    store.insert_connection(&conn).await.unwrap();
    store.insert_flow(&f).await.unwrap();
    store.upsert_schedule(&s).await.unwrap();
    store.insert_run(&r).await.unwrap();
    store
        .append_logs(a, &log_lines("run-a", 1..=2))
        .await
        .unwrap();
    store.set_watermark(a, &f.id, Some("7")).await.unwrap();

    // Tenant B sees nothing of A's.
    assert!(store.list_connections(b).await.unwrap().is_empty());
    assert_eq!(store.get_connection(b, "shared").await.unwrap(), None);
    assert!(store.list_flows(b).await.unwrap().is_empty());
    assert_eq!(store.get_flow(b, "private").await.unwrap(), None);
    assert_eq!(store.get_flow(b, &f.id).await.unwrap(), None);
    assert!(store.list_schedules(b).await.unwrap().is_empty());
    assert_eq!(store.get_schedule(b, &f.id).await.unwrap(), None);
    assert_eq!(store.get_run(b, "run-a").await.unwrap(), None);
    assert!(
        store
            .list_runs(b, &RunQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    let by_flow = RunQuery {
        flow_id: Some(f.id.clone()),
        ..RunQuery::default()
    };
    assert!(store.list_runs(b, &by_flow).await.unwrap().is_empty());
    assert!(store.run_logs(b, "run-a", 0).await.unwrap().is_empty());
    assert_eq!(store.get_watermark(b, &f.id).await.unwrap(), None);

    // Tenant B cannot change A's rows.
    let mut hijack = conn.clone();
    hijack.tenant = b.into();
    hijack.props.set("url", "postgres://evil.example.com/x");
    expect_backend_error(
        "update_connection across tenants",
        store.update_connection(&hijack).await,
    );
    let mut hijack_flow = f.clone();
    hijack_flow.tenant = b.into();
    hijack_flow.description = "hijacked".into();
    expect_backend_error(
        "update_flow across tenants",
        store.update_flow(&hijack_flow).await,
    );
    let mut hijack_schedule = s.clone();
    hijack_schedule.tenant = b.into();
    hijack_schedule.enabled = true;
    expect_backend_error(
        "upsert_schedule onto another tenant's flow",
        store.upsert_schedule(&hijack_schedule).await,
    );
    let mut hijack_run = r.clone();
    hijack_run.tenant = b.into();
    hijack_run.status = RunStatus::Canceled;
    expect_backend_error(
        "update_run across tenants",
        store.update_run(&hijack_run).await,
    );
    expect_backend_error(
        "insert_run onto another tenant's flow",
        store.insert_run(&hijack_run).await,
    );
    expect_backend_error(
        "append_logs onto another tenant's run",
        store.append_logs(b, &log_lines("run-a", 3..=3)).await,
    );
    expect_backend_error(
        "set_watermark onto another tenant's flow",
        store.set_watermark(b, &f.id, Some("0")).await,
    );
    store.set_watermark(b, &f.id, None).await.unwrap();

    // Nor delete them.
    assert!(!store.delete_connection(b, "shared").await.unwrap());
    assert!(!store.delete_schedule(b, &f.id).await.unwrap());
    assert!(!store.delete_flow(b, &f.id).await.unwrap());
    assert_eq!(
        store
            .fail_unfinished_runs("isolation check", Utc::now() + Duration::seconds(5))
            .await
            .unwrap(),
        1
    );
    r.status = RunStatus::Error;

    // A's rows are exactly as A left them (apart from the cross-tenant recovery above).
    assert_eq!(
        store.get_connection(a, "shared").await.unwrap(),
        Some(conn.clone())
    );
    assert_eq!(store.get_flow(a, &f.id).await.unwrap(), Some(f.clone()));
    assert_eq!(store.get_schedule(a, &f.id).await.unwrap(), Some(s));
    assert_eq!(
        store.get_run(a, "run-a").await.unwrap().map(|x| x.status),
        Some(r.status)
    );
    assert_eq!(
        store.run_logs(a, "run-a", 0).await.unwrap(),
        log_lines("run-a", 1..=2)
    );
    assert_eq!(
        store.get_watermark(a, &f.id).await.unwrap().as_deref(),
        Some("7")
    );

    // The same names may exist in both tenants, independently.
    let mut conn_b = connection(b, "shared");
    conn_b.type_name = "http".into();
    store.insert_connection(&conn_b).await.unwrap();
    store.insert_flow(&flow(b, "private")).await.unwrap();
    assert_eq!(
        store.get_connection(b, "shared").await.unwrap(),
        Some(conn_b)
    );
    assert_eq!(store.get_connection(a, "shared").await.unwrap(), Some(conn));
    assert!(store.delete_flow(b, &flow(b, "private").id).await.unwrap());
    assert_eq!(store.get_flow(a, "private").await.unwrap(), Some(f));
}

// ---- concurrency ----------------------------------------------------------------------------

/// Eight writers at once, each appending log lines, updating its run and moving the flow's
/// high-water mark, interleaved with reads. No call may fail (no "database is locked") and
/// nothing may be lost.
async fn concurrent_writers(store: &dyn Store) {
    const WRITERS: usize = 8;
    const ROUNDS: u64 = 25;
    const LINES: u64 = 4;
    let t = "busy-tenant";
    let f = flow(t, "busy");
    store.insert_flow(&f).await.unwrap();
    let runs: Vec<Run> = (0..WRITERS)
        .map(|i| {
            run(
                &f,
                &format!("busy-run-{i}"),
                at(i as i64),
                RunStatus::Running,
            )
        })
        .collect();
    for r in &runs {
        store.insert_run(r).await.unwrap();
    }

    let flow_id = f.id.as_str();
    let writers = runs.iter().map(|r| async move {
        let mut r = r.clone();
        for round in 0..ROUNDS {
            let first = round * LINES + 1;
            store
                .append_logs(t, &log_lines(&r.id, first..=first + LINES - 1))
                .await
                .map_err(|e| format!("append_logs for {} round {round}: {e}", r.id))?;
            r.rows_read += 100;
            r.rows_written += 100;
            r.batches += 1;
            store
                .update_run(&r)
                .await
                .map_err(|e| format!("update_run {} round {round}: {e}", r.id))?;
            store
                .set_watermark(t, flow_id, Some(&format!("{round}")))
                .await
                .map_err(|e| format!("set_watermark round {round}: {e}"))?;
            let seen = store
                .get_run(t, &r.id)
                .await
                .map_err(|e| format!("get_run {} round {round}: {e}", r.id))?;
            if seen.as_ref().map(|s| s.batches) != Some(r.batches) {
                return Err(format!("{} read back {seen:?} after writing {r:?}", r.id));
            }
        }
        Ok::<_, String>(())
    });
    for outcome in join_all(writers).await {
        if let Err(e) = outcome {
            panic!("concurrent writer failed: {e}");
        }
    }

    for r in &runs {
        let stored = store.get_run(t, &r.id).await.unwrap().unwrap();
        assert_eq!(stored.rows_read, ROUNDS * 100, "{} lost an update", r.id);
        assert_eq!(stored.batches, ROUNDS);
        let lines = store.run_logs(t, &r.id, 0).await.unwrap();
        assert_eq!(
            lines.len() as u64,
            ROUNDS * LINES,
            "{} lost log lines",
            r.id
        );
        assert!(
            lines.windows(2).all(|w| w[0].seq < w[1].seq),
            "ascending seq"
        );
    }
    let last = store.get_watermark(t, &f.id).await.unwrap();
    assert_eq!(last.as_deref(), Some(format!("{}", ROUNDS - 1).as_str()));
}

/// Heartbeats, exclusive starts and stop requests: how processes sharing a store coordinate runs.
async fn run_liveness(store: &dyn Store) {
    let t = "tenant-live";
    let f = flow(t, "live");
    let other = flow(t, "other");
    store.insert_flow(&f).await.unwrap();
    store.insert_flow(&other).await.unwrap();
    let now = Utc::now();
    let window = now - Duration::seconds(60);

    let a = run(&f, "live-a", now, RunStatus::Queued);
    assert_eq!(
        store.insert_run_exclusive(&a, window).await.unwrap(),
        None,
        "the first run starts"
    );
    let b = run(&f, "live-b", now, RunStatus::Queued);
    let refused = store.insert_run_exclusive(&b, window).await.unwrap();
    assert_eq!(
        refused.map(|r| r.id),
        Some("live-a".to_string()),
        "a live run blocks a second one"
    );
    assert_eq!(
        store.get_run(t, "live-b").await.unwrap(),
        None,
        "nothing was inserted"
    );
    let c = run(&other, "live-c", now, RunStatus::Queued);
    assert_eq!(
        store.insert_run_exclusive(&c, window).await.unwrap(),
        None,
        "other flows are independent"
    );

    assert_eq!(
        store
            .live_run_of_flow(t, &f.id, window)
            .await
            .unwrap()
            .map(|r| r.id),
        Some("live-a".into())
    );
    assert_eq!(
        store
            .live_run_of_flow("tenant-else", &f.id, window)
            .await
            .unwrap(),
        None,
        "tenant-scoped"
    );
    assert!(
        !store.heartbeat_run(t, "live-a", Utc::now()).await.unwrap(),
        "no stop requested yet"
    );
    assert!(store.request_run_cancel(t, "live-a").await.unwrap());
    assert!(
        store.heartbeat_run(t, "live-a", Utc::now()).await.unwrap(),
        "the heartbeat reports the stop request"
    );
    assert!(
        store
            .heartbeat_run("tenant-else", "live-a", Utc::now())
            .await
            .is_err(),
        "tenant-scoped"
    );

    // Live runs are not failed by a process that starts next to them.
    assert_eq!(store.fail_unfinished_runs("died", window).await.unwrap(), 0);

    // A run whose heartbeat is older than the window is dead: it neither blocks nor survives.
    let later = Utc::now() + Duration::seconds(120);
    let d = run(&f, "live-d", now, RunStatus::Queued);
    assert_eq!(
        store.insert_run_exclusive(&d, later).await.unwrap(),
        None,
        "stale runs do not block"
    );
    assert_eq!(store.fail_unfinished_runs("died", later).await.unwrap(), 3);
    let dead = store.get_run(t, "live-a").await.unwrap().unwrap();
    assert_eq!(dead.status, RunStatus::Error);
    assert_eq!(dead.error.as_deref(), Some("died"));
    assert!(
        !store.request_run_cancel(t, "live-a").await.unwrap(),
        "finished runs cannot be asked to stop"
    );
    assert_eq!(
        store.live_run_of_flow(t, &f.id, window).await.unwrap(),
        None
    );

    // A finished run does not block.
    let e = run(&f, "live-e", Utc::now(), RunStatus::Queued);
    assert_eq!(store.insert_run_exclusive(&e, window).await.unwrap(), None);
    let mut done = e.clone();
    done.status = RunStatus::Success;
    store.update_run(&done).await.unwrap();
    let g = run(&f, "live-g", Utc::now(), RunStatus::Queued);
    assert_eq!(store.insert_run_exclusive(&g, window).await.unwrap(), None);
    let mut done = g.clone();
    done.status = RunStatus::Canceled;
    store.update_run(&done).await.unwrap();
}

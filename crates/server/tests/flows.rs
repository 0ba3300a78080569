//! End to end through the host language: real files, the built-in SQLite warehouse, a real
//! local HTTP API, real PostgreSQL and MariaDB.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

fn write_csv(path: &std::path::Path, rows: &[&str]) {
    let mut text = String::from("id,name,amount\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(path, text).expect("write csv");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_into_warehouse_merge_is_idempotent_and_updates() {
    let env = TestEnv::new().await;
    let inbox = env.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    write_csv(&inbox.join("orders.csv"), &["1,Ann,12.5", "2,Bob,7"]);
    env.ok(&format!(
        "create connection inbox type=file directory='{}';
         create flow orders source=inbox object='*.csv' destination=warehouse target=orders mode=merge keys=id",
        inbox.display()
    ))
    .await;
    let run = env.ok("run flow orders --wait").await;
    assert_eq!(run["status"], "success");
    assert_eq!(run["rows_written"], 2);
    env.ok("run flow orders --wait").await;
    write_csv(
        &inbox.join("orders.csv"),
        &["1,Ann,99", "2,Bob,7", "3,Cy,1"],
    );
    env.ok("run flow orders --wait").await;
    let rows = env
        .rows(
            "warehouse",
            "select id, name, amount from orders order by id",
        )
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0]["amount"], 99.0);
    // The run's log says what happened.
    let logs = env.ok("logs flow orders").await;
    let text = logs["lines"].to_string();
    assert!(text.contains("reading '*.csv' from inbox"), "{text}");
    assert!(text.contains("finished: 3 rows read, 3 written"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paginated_api_into_postgres_incrementally() {
    let env = TestEnv::new().await;
    let pg = PgSchema::new().await;
    let records: Vec<_> = (1..=250)
        .map(|i| order(i, &format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60)))
        .collect();
    let api = Api::start(records, Some("s3cret-token")).await;
    env.ok(&format!(
        "create connection shop type=http url={} token=s3cret-token retry_delay=10ms;
         create connection pg type=postgres {};
         create flow orders source=shop object=/orders source.records_path=data source.pagination=page source.page_size=100
                destination=pg target=orders mode=merge keys=id incremental=updated_at",
        api.url(),
        pg.props()
    ))
    .await;
    let run = env.ok("run flow orders --wait").await;
    assert_eq!(run["rows_read"], 250);
    assert_eq!(run["rows_written"], 250);
    assert_eq!(pg.count("orders").await, 250);
    // Nested objects became columns, arrays JSON text.
    let (city, tags): (String, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT customer_city, tags FROM \"{}\".orders WHERE id = 2",
        pg.name
    )))
    .fetch_one(&pg.pool)
    .await
    .unwrap();
    assert_eq!(city, "Paris");
    assert_eq!(tags, "[\"a\",\"b\"]");

    // New records after the high-water mark: only they are written on the next run.
    for i in 251..=260 {
        api.push(order(i, &format!("2026-02-01T00:00:{:02}Z", i - 250)));
    }
    let run = env.ok("run flow orders --wait").await;
    assert_eq!(
        run["rows_read"], 260,
        "the API does not filter; the engine does"
    );
    assert_eq!(run["rows_written"], 10);
    assert_eq!(pg.count("orders").await, 260);
    let described = env.ok("describe flow orders").await;
    assert_eq!(described["watermark"], "2026-02-01T00:00:10Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_retried_then_reported_clearly() {
    let env = TestEnv::new().await;
    let api = Api::start((1..=30).map(|i| order(i, "2026-01-01")).collect(), None).await;
    env.ok(&format!(
        "create connection shop type=http url={} retry_delay=10ms max_retries=3;
         create flow f source=shop object=/orders source.records_path=data source.pagination=page source.page_size=10
                destination=warehouse target=api_orders mode=replace",
        api.url()
    ))
    .await;
    // Two 500s are retried away.
    api.state.fail_next.store(2, Ordering::SeqCst);
    let run = env.ok("run flow f --wait").await;
    assert_eq!(run["rows_written"], 30);
    // A persistent 500 fails the run with the URL and status, and replace leaves the table as it was.
    api.state.always_fail.store(true, Ordering::SeqCst);
    let err = env.err("run flow f --wait").await;
    assert_eq!(err.code, "run_failed");
    assert!(err.message.contains("HTTP 500"), "{}", err.message);
    assert!(err.message.contains("/orders"), "{}", err.message);
    let rows = env
        .rows("warehouse", "select count(*) as n from api_orders")
        .await;
    assert_eq!(rows[0]["n"], 30);
    let status = env.ok("status flow f").await;
    assert_eq!(status["last_run"]["status"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_replace_leaves_destination_untouched() {
    let env = TestEnv::new().await;
    let inbox = env.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    write_csv(&inbox.join("people.csv"), &["1,Ann,1", "2,Bob,2", "3,Cy,3"]);
    env.ok(&format!(
        "create connection inbox type=file directory='{}';
         create flow people source=inbox object=people.csv destination=warehouse target=people mode=replace batch_size=2;
         run flow people --wait",
        inbox.display()
    ))
    .await;
    // The fifth row is malformed: batches 1-2 are fine, batch 3 fails.
    write_csv(
        &inbox.join("people.csv"),
        &[
            "1,Ann,10", "2,Bob,20", "3,Cy,30", "4,Di,40", "5,Ed", "6,Flo,60",
        ],
    );
    let err = env.err("run flow people --wait").await;
    assert!(err.message.contains("line 6"), "{}", err.message);
    let rows = env
        .rows("warehouse", "select id, amount from people order by id")
        .await;
    assert_eq!(rows.len(), 3, "the old table must be intact: {rows:?}");
    assert_eq!(rows[0]["amount"], 1);
    let objects = env.ok("list objects warehouse").await;
    assert!(
        !objects.to_string().contains("stage"),
        "no staging table may remain: {objects}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_append_names_the_batch_and_what_stayed() {
    let env = TestEnv::new().await;
    let inbox = env.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    write_csv(
        &inbox.join("a.csv"),
        &[
            "1,Ann,1", "2,Bob,2", "3,Cy,3", "4,Di,4", "5,Ed,x", "6,Flo,6",
        ],
    );
    env.ok(&format!(
        "create connection inbox type=file directory='{}';
         create flow a source=inbox object=a.csv destination=warehouse target=a mode=append batch_size=2 cast=amount:integer",
        inbox.display()
    ))
    .await;
    let err = env.err("run flow a --wait").await;
    assert!(err.message.contains("batch 3"), "{}", err.message);
    assert!(
        err.message.contains("cannot cast 'x' to integer"),
        "{}",
        err.message
    );
    // Batches 1-2 were in the open commit group (100,000 rows by default): rolled back with it,
    // and the run's count says so.
    let runs = env.ok("list runs flow=a").await;
    assert_eq!(runs[0]["rows_written"], 0);
    assert_eq!(
        env.rows("warehouse", "select count(*) as n from a").await[0]["n"],
        0
    );

    // Committing every batch keeps batches 1-2, and the count matches the table.
    env.ok("update flow a destination.commit_rows=1").await;
    env.err("run flow a --wait").await;
    let runs = env.ok("list runs flow=a").await;
    assert_eq!(runs[0]["rows_written"], 4);
    assert_eq!(
        env.rows("warehouse", "select count(*) as n from a").await[0]["n"],
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_can_be_stopped_and_never_overlap() {
    let env = TestEnv::new().await;
    let api = Api::start((1..=400).map(|i| order(i, "2026-01-01")).collect(), None).await;
    api.state.delay_ms.store(150, Ordering::SeqCst);
    env.ok(&format!(
        "create connection shop type=http url={};
         create flow slow source=shop object=/orders source.records_path=data source.pagination=page source.page_size=10
                destination=warehouse target=slow mode=replace batch_size=10",
        api.url()
    ))
    .await;
    let started = env.ok("run flow slow").await;
    assert_eq!(started["status"], "queued");
    let busy = env.err("run flow slow").await;
    assert_eq!(busy.code, "busy");
    assert!(busy.message.contains("already running"), "{}", busy.message);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stopped = env.ok("stop flow slow").await;
    assert_eq!(stopped["stopped"], started["id"]);
    let id = started["id"].as_str().unwrap().to_string();
    let run = env
        .engine
        .wait_run("default", &id, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(run.status.as_str(), "canceled");
    assert!(
        run.rows_read > 0 && run.rows_read < 400,
        "{}",
        run.rows_read
    );
    // replace: nothing became visible.
    let objects = env.ok("list objects warehouse").await;
    assert!(!objects.to_string().contains("slow"), "{objects}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_into_mariadb_and_postgres_table_to_table() {
    let env = TestEnv::new().await;
    let my = MyDb::new().await;
    let pg = PgSchema::new().await;
    let inbox = env.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    write_csv(&inbox.join("o.csv"), &["1,Ann,1.5", "2,Bob,2", "3,Cy,3"]);
    env.ok(&format!(
        "create connection inbox type=file directory='{}';
         create connection my type=mysql {};
         create connection pg type=postgres {};
         create flow to_my source=inbox object=o.csv destination=my target=orders mode=merge keys=id;
         run flow to_my --wait;
         run flow to_my --wait;
         create flow my_to_pg source=my object=orders destination=pg target=orders_copy mode=replace filter='amount >= 2' rename=name:customer;
         run flow my_to_pg --wait",
        inbox.display(),
        my.props(),
        pg.props()
    ))
    .await;
    assert_eq!(my.count("orders").await, 3);
    assert_eq!(pg.count("orders_copy").await, 2);
    let rows = env
        .rows("pg", "select customer from orders_copy order by id")
        .await;
    assert_eq!(rows[0]["customer"], "Bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_at_rest_and_redacted_everywhere() {
    let env = TestEnv::new().await;
    let api = Api::start(
        (1..=3).map(|i| order(i, "2026-01-01")).collect(),
        Some("tok-9f8e7d6c5b4a"),
    )
    .await;
    let created = env
        .ok(&format!(
            "create connection shop type=http url={} token=tok-9f8e7d6c5b4a header.X-Api-Key=hdr-1a2b3c4d",
            api.url()
        ))
        .await;
    assert_eq!(created["properties"]["token"], "***");
    assert_eq!(created["properties"]["header.X-Api-Key"], "***");
    env.ok("create flow f source=shop object=/orders source.records_path=data destination=warehouse target=f; run flow f --wait")
        .await;
    let shown =
        env.ok("get connection shop").await.to_string() + &env.ok("logs flow f").await.to_string();
    assert!(
        !shown.contains("tok-9f8e7d6c5b4a") && !shown.contains("hdr-1a2b3c4d"),
        "{shown}"
    );
    env.engine.shutdown(Duration::from_secs(1)).await;
    // Nothing in the data directory's metadata holds the plain secret (WAL included).
    for name in ["metadata.db", "metadata.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.path(name)) {
            let hay = String::from_utf8_lossy(&bytes);
            assert!(
                !hay.contains("tok-9f8e7d6c5b4a"),
                "{name} holds the token in plain text"
            );
            assert!(
                !hay.contains("hdr-1a2b3c4d"),
                "{name} holds the header secret in plain text"
            );
        }
    }
    // The key file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.path("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Changing a secret keeps it encrypted and usable.
    env.ok("update connection shop token=tok-9f8e7d6c5b4a; test connection shop")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_fires_and_resumes_after_restart() {
    let env = TestEnv::new().await;
    let inbox = env.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    write_csv(&inbox.join("s.csv"), &["1,Ann,1"]);
    env.ok(&format!(
        "create connection inbox type=file directory='{}';
         create flow s source=inbox object=s.csv destination=warehouse target=s mode=replace;
         schedule flow s every=1s",
        inbox.display()
    ))
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let sched = tokio::spawn({
        let engine = env.engine.clone();
        let stop = stop.clone();
        async move { engine.run_scheduler(stop).await }
    });
    let mut runs = serde_json::Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        runs = env.ok("list runs flow=s where status = 'success'").await;
        if runs.as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
    }
    assert!(
        !runs.as_array().unwrap().is_empty(),
        "the schedule never fired"
    );
    assert_eq!(runs[0]["trigger"], "schedule");
    stop.cancel();
    sched.await.unwrap();
    env.engine.shutdown(Duration::from_secs(5)).await;

    // An hourly schedule whose time passed while the process was down fires once on start.
    env.ok("schedule flow s every=1h").await;
    let flow = env.engine.flow("default", "s").await.unwrap();
    let mut s = env
        .engine
        .schedule_of("default", &flow)
        .await
        .unwrap()
        .unwrap();
    s.next_run_at = Some(chrono::Utc::now() - chrono::Duration::hours(5));
    env.engine.store().upsert_schedule(&s).await.unwrap();
    let before = env.ok("list runs flow=s").await.as_array().unwrap().len();
    let TestEnv { dir, .. } = env;
    let env = TestEnv::open(dir).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let sched = tokio::spawn({
        let engine = env.engine.clone();
        let stop = stop.clone();
        async move { engine.run_scheduler(stop).await }
    });
    let mut after = before;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = env.ok("list runs flow=s").await.as_array().unwrap().len();
        if after > before {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_wait = env.ok("list runs flow=s").await.as_array().unwrap().len();
    stop.cancel();
    sched.await.unwrap();
    assert_eq!(after, before + 1, "the missed slot must fire on start");
    assert_eq!(after_wait, before + 1, "and only once");
    let sched = env.ok("list schedules").await;
    let next =
        chrono::DateTime::parse_from_rfc3339(sched[0]["next_run_at"].as_str().unwrap()).unwrap();
    assert!(
        next > chrono::Utc::now() + chrono::Duration::minutes(50),
        "next firing moves an hour ahead: {next}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_scheduled_runs_are_retried_with_delay() {
    let env = TestEnv::new().await;
    let inbox = env.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    // No file matches, so every attempt fails.
    env.ok(&format!(
        "create connection inbox type=file directory='{}';
         create flow r source=inbox object=missing.csv destination=warehouse target=r;
         schedule flow r every=1h retries=2 retry_delay=1s",
        inbox.display()
    ))
    .await;
    let flow = env.engine.flow("default", "r").await.unwrap();
    let mut s = env
        .engine
        .schedule_of("default", &flow)
        .await
        .unwrap()
        .unwrap();
    s.next_run_at = Some(chrono::Utc::now());
    env.engine.store().upsert_schedule(&s).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let sched = tokio::spawn({
        let engine = env.engine.clone();
        let stop = stop.clone();
        async move { engine.run_scheduler(stop).await }
    });
    let mut runs = serde_json::Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        runs = env.ok("list runs flow=r where status = 'error'").await;
        if runs.as_array().unwrap().len() >= 3 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = env.ok("list runs flow=r").await;
    stop.cancel();
    sched.await.unwrap();
    let attempts: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(
        attempts,
        vec![3, 2, 1],
        "one run and two retries, newest first: {runs}"
    );
    let first =
        chrono::DateTime::parse_from_rfc3339(all[2]["finished_at"].as_str().unwrap()).unwrap();
    let second =
        chrono::DateTime::parse_from_rfc3339(all[1]["created_at"].as_str().unwrap()).unwrap();
    assert!(
        second - first >= chrono::Duration::milliseconds(950),
        "the retry waits retry_delay"
    );
    assert!(
        all[0]["error"].as_str().unwrap().contains("missing.csv"),
        "{}",
        all[0]["error"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_refuses_rows_without_a_key() {
    let env = TestEnv::new().await;
    let inbox = env.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    write_csv(&inbox.join("k.csv"), &["1,Ann,1", ",Nobody,2"]);
    env.ok(&format!(
        "create connection inbox type=file directory='{}';
         create flow k source=inbox object=k.csv destination=warehouse target=k mode=merge keys=id",
        inbox.display()
    ))
    .await;
    let err = env.err("run flow k --wait").await;
    assert!(
        err.message.contains("row 2: the key column 'id' is empty"),
        "{}",
        err.message
    );
    // The documented fix works.
    env.ok("update flow k filter='id is not null'; run flow k --wait")
        .await;
    let rows = env.rows("warehouse", "select id from k").await;
    assert_eq!(rows.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_keeps_the_tables_constraints_and_cast_declares_types() {
    let env = TestEnv::new().await;
    let pg = PgSchema::new().await;
    let inbox = env.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("z.csv"), "zip,amount\n01234,5\n12345,50\n").unwrap();
    env.ok(&format!(
        "create connection inbox type=file directory='{}';
         create connection pg type=postgres {};
         query warehouse sql='create table checked (zip text, amount integer check (amount < 100))';
         query warehouse sql='create index checked_zip on checked (zip)';
         create flow r source=inbox object=z.csv destination=warehouse target=checked mode=replace;
         run flow r --wait;
         create flow typed source=inbox object=z.csv destination=pg target=typed cast=zip:text,amount:float;
         run flow typed --wait",
        inbox.display(),
        pg.props()
    ))
    .await;
    // The replaced SQLite table keeps its CHECK constraint and its index.
    let ddl = env
        .rows(
            "warehouse",
            "select sql from sqlite_master where name in ('checked', 'checked_zip') order by type",
        )
        .await;
    assert_eq!(ddl.len(), 2, "{ddl:?}");
    assert!(
        ddl.iter()
            .any(|r| r["sql"].as_str().unwrap().contains("check (amount < 100)")),
        "{ddl:?}"
    );
    std::fs::write(inbox.join("z.csv"), "zip,amount\n99999,500\n").unwrap();
    let err = env.err("run flow r --wait").await;
    assert!(
        err.message.contains("CHECK constraint failed"),
        "{}",
        err.message
    );
    assert_eq!(
        env.rows("warehouse", "select count(*) as n from checked")
            .await[0]["n"],
        2,
        "old rows intact"
    );

    // cast= declares the destination's types: zip codes stay text, amounts are floats.
    let types: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = '{}' AND table_name = 'typed' ORDER BY ordinal_position",
        pg.name
    )))
    .fetch_all(&pg.pool)
    .await
    .unwrap();
    assert_eq!(
        types,
        vec![
            ("zip".into(), "text".into()),
            ("amount".into(), "double precision".into())
        ]
    );
    let zips = env.rows("pg", "select zip from typed order by zip").await;
    assert_eq!(zips[0]["zip"], "01234");
}

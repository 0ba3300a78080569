//! Random statements thrown at the whole host language: parsing, resolution and execution
//! against a real engine must answer every one (an outcome, never a panic), and the engine
//! must still work afterwards.

mod common;

use common::TestEnv;
use etl_engine::host::Caller;

/// xorshift64: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_statements_never_panic() {
    let env = TestEnv::new().await;
    let dir = env.path("files");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.csv"), "id,v\n1,x\n2,y\n").unwrap();
    let dir_arg = format!("directory='{}'", dir.display());
    let words = [
        "list",
        "get",
        "create",
        "update",
        "delete",
        "test",
        "describe",
        "run",
        "stop",
        "status",
        "logs",
        "schedule",
        "enable",
        "disable",
        "search",
        "import",
        "preview",
        "query",
        "help",
        "whoami",
        "version",
        "connection",
        "connections",
        "flow",
        "flows",
        "runs",
        "run",
        "schedules",
        "templates",
        "kb",
        "objects",
        "connection-types",
        "commands",
        "list-flows",
        "warehouse",
        "f",
        "c",
        "type=file",
        "type=sqlite",
        "type=nope",
        &dir_arg,
        "source=c",
        "source=warehouse",
        "destination=warehouse",
        "object=a.csv",
        "object=*.csv",
        "target=t",
        "mode=merge",
        "mode=replace",
        "mode=bogus",
        "keys=id",
        "incremental=id",
        "filter='v = ''x'''",
        "filter='((('",
        "cast=id:integer",
        "cast=id:blob",
        "rename=v:w",
        "exclude=v",
        "constant=k:1",
        "every=1h",
        "every=0s",
        "cron='0 2 * * *'",
        "cron='nope'",
        "timezone=Mars/Base",
        "--wait",
        "--",
        "--x",
        "tail=5",
        "limit=-1",
        "sql='select 1'",
        "sql='drop table nope'",
        "where",
        "id",
        "=",
        "'x'",
        "1",
        "and",
        "or",
        "(",
        ")",
        ";",
        "//",
        "/*",
        "*/",
        "\"",
        "'",
        "=x",
        "é",
        "\\",
        "batch_size=0",
        "batch_size=2",
        "unset=x",
        "path=/nonexistent/dir/db.sqlite",
        "url=http://127.0.0.1:9",
        "timeout=1s",
    ];
    let caller = Caller::local();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut answered = 0;
    let mut succeeded = 0;
    for _ in 0..1500 {
        // Mostly real commands with random arguments, sometimes pure noise.
        let len = (rng.next() % 4) as usize;
        let mut parts: Vec<&str> = Vec::with_capacity(len + 1);
        if !rng.next().is_multiple_of(5) {
            let names: Vec<&str> = etl_engine::host::catalogue::COMMANDS
                .iter()
                .map(|c| c.name)
                .collect();
            parts.push(rng.pick(&names));
        }
        parts.extend((0..len).map(|_| rng.pick(&words)));
        let script = parts.join(" ");
        let outcomes = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            env.host.run(&caller, &script),
        )
        .await
        .unwrap_or_else(|_| panic!("statement hung: {script}"));
        assert!(!outcomes.is_empty(), "no outcome for {script}");
        for o in &outcomes {
            if let Err(e) = &o.result {
                assert!(!e.message.is_empty(), "empty error message for {script}");
                assert!(!e.message.contains("panicked"), "{script}: {}", e.message);
            }
        }
        answered += 1;
        succeeded += outcomes.iter().filter(|o| o.ok()).count();
    }
    assert_eq!(answered, 1500);
    assert!(
        succeeded > 50,
        "the generator should reach real execution, not only errors: {succeeded}"
    );
    env.engine.wait_idle().await;
    // Still fully working.
    let who = env.ok("whoami").await;
    assert_eq!(who["tenant"], "default");
}

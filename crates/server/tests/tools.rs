//! The seven tools through their registry, as the Agent API and the agent will call them: the
//! catalogue, argument checks, roles, and each tool's answer on real data.

use etl_agent::tools::{CallError, agent_caller};
use etl_engine::host::Role;
use serde_json::json;

async fn app() -> (tempfile::TempDir, etlworks_agent::App) {
    let dir = tempfile::tempdir().unwrap();
    let settings = etlworks_agent::Settings::resolve(dir.path().to_path_buf(), 2).unwrap();
    let app = etlworks_agent::open_app(&settings).await.unwrap();
    (dir, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_matches_the_api_contract() {
    let (_dir, app) = app().await;
    let tools = app.tools.describe();
    let names: Vec<(&str, bool)> = tools
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["agentic"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("search_knowledge_base", false),
            ("host_list_commands", false),
            ("host_cli", true),
            ("search_templates", false),
            ("import_template", true),
            ("get_connector_info", false),
            ("diagnose_flow", false),
        ]
    );
    for t in &tools {
        assert_eq!(t["parameters"]["type"], "object", "{t}");
        assert!(t["description"].as_str().unwrap().len() > 40, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_checked_before_they_run() {
    let (_dir, app) = app().await;
    let user = agent_caller("default", "u", Role::User);
    let reader = agent_caller("default", "r", Role::Readonly);
    let err = app
        .tools
        .call(&user, "drop_everything", &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::UnknownTool(ref m) if m.contains("search_knowledge_base")),
        "{err}"
    );
    let err = app
        .tools
        .call(&user, "search_knowledge_base", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CallError::InvalidArguments("missing required argument 'query'".into())
    );
    let err = app
        .tools
        .call(
            &user,
            "search_knowledge_base",
            &json!({"query": "x".repeat(1_000_000)}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CallError::InvalidArguments(
            "argument 'query' must be at most 10000 characters long".into()
        )
    );
    let err = app
        .tools
        .call(&user, "host_cli", &json!({"command": 42}))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CallError::InvalidArguments("argument 'command' must be a string, got a number".into())
    );
    let err = app
        .tools
        .call(&reader, "host_cli", &json!({"command": "list flows"}))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Forbidden(_)), "{err}");
    let err = app
        .tools
        .call(
            &reader,
            "import_template",
            &json!({"template": "csv-files-to-warehouse"}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Forbidden(_)), "{err}");
    // Non-agentic tools are open to read-only callers.
    let ok = app
        .tools
        .call(&reader, "host_list_commands", &json!({}))
        .await
        .unwrap();
    assert!(ok.outcome.success && ok.outcome.result.contains("create flow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knowledge_and_templates_answer_with_sources() {
    let (_dir, app) = app().await;
    let user = agent_caller("default", "u", Role::User);
    let kb = app
        .tools
        .call(
            &user,
            "search_knowledge_base",
            &json!({"query": "how do i schedule a flow every hour", "limit": 3}),
        )
        .await
        .unwrap()
        .outcome;
    assert!(kb.success, "{}", kb.result);
    let first = &kb.data["results"][0];
    assert!(
        first["source"].as_str().unwrap().starts_with("docs/"),
        "{first}"
    );
    assert!(
        kb.result.contains("[docs/"),
        "results cite their source: {}",
        kb.result
    );
    assert!(
        kb.data["results"].to_string().contains("every="),
        "{}",
        kb.data
    );

    let t = app
        .tools
        .call(
            &user,
            "search_templates",
            &json!({"query": "salesforce to postgres"}),
        )
        .await
        .unwrap()
        .outcome;
    assert_eq!(t.data["results"][0]["id"], "salesforce-soql-to-postgres");

    let inbox = app.engine.data_dir().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("a.csv"), "id,name\n1,x\n").unwrap();
    let imported = app
        .tools
        .call(&user, "import_template", &json!({"template": "csv-files-to-warehouse", "name": "from_tool", "parameters": {"directory": inbox.to_string_lossy()}}))
        .await
        .unwrap()
        .outcome;
    assert!(imported.success, "{}", imported.result);
    assert_eq!(imported.data["flow"], "from_tool");
    let ran = app
        .tools
        .call(
            &user,
            "host_cli",
            &json!({"command": "run flow from_tool --wait"}),
        )
        .await
        .unwrap()
        .outcome;
    assert!(ran.success, "{}", ran.result);
    assert!(
        ran.result.contains("1 rows read, 1 written"),
        "{}",
        ran.result
    );

    let wrong = app
        .tools
        .call(&user, "import_template", &json!({"template": "postgres-to-warehouse-replication", "parameters": {"source_port": "abc"}}))
        .await
        .unwrap()
        .outcome;
    assert!(!wrong.success);
    assert!(
        wrong.result.contains("'source_port' must be an integer"),
        "{}",
        wrong.result
    );
    let unknown = app
        .tools
        .call(&user, "import_template", &json!({"template": "nope"}))
        .await
        .unwrap()
        .outcome;
    assert!(
        !unknown.success && unknown.result.contains("unknown template 'nope'"),
        "{}",
        unknown.result
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_info_comes_from_the_specs() {
    let (_dir, app) = app().await;
    let user = agent_caller("default", "u", Role::User);
    let all = app
        .tools
        .call(&user, "get_connector_info", &json!({}))
        .await
        .unwrap()
        .outcome;
    let types: Vec<&str> = all.data["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["file", "http", "mysql", "postgres", "sqlite"]);
    let pg = app
        .tools
        .call(&user, "get_connector_info", &json!({"type": "postgres"}))
        .await
        .unwrap()
        .outcome;
    let password = pg.data["connection"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "password")
        .unwrap();
    assert_eq!(password["secret"], true);
    assert!(
        pg.result.contains("password (string, secret)"),
        "{}",
        pg.result
    );
    let bad = app
        .tools
        .call(&user, "get_connector_info", &json!({"type": "oracle"}))
        .await
        .unwrap()
        .outcome;
    assert!(
        !bad.success && bad.result.contains("unknown connection type 'oracle'"),
        "{}",
        bad.result
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_flow_explains_a_failure() {
    let (_dir, app) = app().await;
    let user = agent_caller("default", "u", Role::User);
    let inbox = app.engine.data_dir().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let setup = format!(
        "create connection inbox type=file directory='{}'; create flow broken source=inbox object=orders.csv destination=warehouse target=orders",
        inbox.display()
    );
    assert!(
        app.tools
            .call(&user, "host_cli", &json!({"command": setup}))
            .await
            .unwrap()
            .outcome
            .success
    );

    let never = app
        .tools
        .call(&user, "diagnose_flow", &json!({"flow": "broken"}))
        .await
        .unwrap()
        .outcome;
    assert_eq!(never.data["state"], "never_run", "{}", never.result);

    let ran = app
        .tools
        .call(
            &user,
            "host_cli",
            &json!({"command": "run flow broken --wait"}),
        )
        .await
        .unwrap()
        .outcome;
    assert!(!ran.success);
    let d = app
        .tools
        .call(&user, "diagnose_flow", &json!({"flow": "broken"}))
        .await
        .unwrap()
        .outcome;
    assert!(d.success, "{}", d.result);
    assert_eq!(d.data["state"], "failed");
    assert!(
        d.data["error"].as_str().unwrap().contains("orders.csv"),
        "{}",
        d.data
    );
    assert!(
        d.data["cause"]
            .as_str()
            .unwrap()
            .contains("matches the flow's object= pattern"),
        "{}",
        d.data
    );
    assert!(
        d.data["fix"]
            .as_str()
            .unwrap()
            .contains("list objects inbox"),
        "{}",
        d.data
    );
    assert!(!d.data["log_tail"].as_array().unwrap().is_empty());
    assert!(
        !d.data["articles"].as_array().unwrap().is_empty(),
        "knowledge-base articles: {}",
        d.data
    );

    // Fixed and run again: healthy.
    std::fs::write(inbox.join("orders.csv"), "id\n1\n").unwrap();
    assert!(
        app.tools
            .call(
                &user,
                "host_cli",
                &json!({"command": "run flow broken --wait"})
            )
            .await
            .unwrap()
            .outcome
            .success
    );
    let d = app
        .tools
        .call(&user, "diagnose_flow", &json!({"flow": "broken"}))
        .await
        .unwrap()
        .outcome;
    assert!(d.result.contains("A later run succeeded"), "{}", d.result);

    let unknown = app
        .tools
        .call(&user, "diagnose_flow", &json!({"flow": "ghost"}))
        .await
        .unwrap()
        .outcome;
    assert!(!unknown.success && unknown.result.contains("unknown flow 'ghost'"));
    // Another tenant cannot diagnose this tenant's flow.
    let other = agent_caller("other", "o", Role::User);
    let hidden = app
        .tools
        .call(&other, "diagnose_flow", &json!({"flow": "broken"}))
        .await
        .unwrap()
        .outcome;
    assert!(!hidden.success && hidden.result.contains("unknown flow 'broken'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_gets_its_own_warehouse() {
    let (_dir, app) = app().await;
    let acme = agent_caller("acme", "a", Role::User);
    let listed = app
        .tools
        .call(&acme, "host_cli", &json!({"command": "list connections"}))
        .await
        .unwrap()
        .outcome;
    assert!(listed.success, "{}", listed.result);
    let conns = &listed.data["results"][0]["data"];
    assert_eq!(conns[0]["name"], "warehouse", "{conns}");
    assert!(
        conns[0]["target"]
            .as_str()
            .unwrap()
            .contains("tenants/acme/warehouse.db"),
        "{conns}"
    );
    let made = app.tools.call(&acme, "host_cli", &json!({"command": "query warehouse sql='create table t (x integer)'; list objects warehouse"})).await.unwrap().outcome;
    assert!(made.success, "{}", made.result);
    // The default tenant's warehouse is another database.
    let default = agent_caller("default", "d", Role::User);
    let objects = app
        .tools
        .call(
            &default,
            "host_cli",
            &json!({"command": "list objects warehouse"}),
        )
        .await
        .unwrap()
        .outcome;
    assert!(!objects.result.contains(" t "), "{}", objects.result);
}

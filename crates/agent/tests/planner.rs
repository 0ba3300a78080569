//! The built-in planner driven through whole conversations: each request goes to the model, the
//! tool calls it asks for really run through the tool registry of a freshly opened app (engine,
//! knowledge base, templates on a temporary data directory), the results go back to it, and the
//! loop ends at its text answer. Each test checks the calls made and what the answer says.

use std::path::PathBuf;

use etl_agent::planner::{MODEL_NAME, Planner};
use etl_agent::tools::{CallError, agent_caller};
use etl_engine::host::{Caller, Role};
use etl_llm::tokens;
use etl_llm::{Event, FinishReason, Message, Model, Request, ToolSpec};
use futures::StreamExt;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

/// One conversation against a real app.
struct Chat {
    dir: tempfile::TempDir,
    app: etlworks_agent::App,
    caller: Caller,
    tools: Vec<ToolSpec>,
    messages: Vec<Message>,
}

/// What one request did: the tool calls in order (name, arguments), whether each succeeded,
/// and the answer text.
#[derive(Debug)]
struct Turn {
    calls: Vec<(String, Json)>,
    ok: Vec<bool>,
    answer: String,
}

impl Turn {
    fn tools(&self) -> Vec<&str> {
        self.calls.iter().map(|(n, _)| n.as_str()).collect()
    }
    /// The `host_cli` commands, in order.
    fn commands(&self) -> Vec<&str> {
        self.calls
            .iter()
            .filter(|(n, _)| n == "host_cli")
            .map(|(_, a)| a["command"].as_str().unwrap())
            .collect()
    }
    fn says(&self, fragment: &str) -> &Self {
        assert!(
            self.answer.contains(fragment),
            "the answer should contain {fragment:?}:\n{}\ncalls: {:?}",
            self.answer,
            self.calls
        );
        self
    }
    fn never_says(&self, fragment: &str) -> &Self {
        assert!(
            !self.answer.contains(fragment),
            "the answer should not contain {fragment:?}:\n{}",
            self.answer
        );
        self
    }
}

impl Chat {
    async fn new() -> Chat {
        let dir = tempfile::tempdir().unwrap();
        let settings =
            etlworks_agent::Settings::resolve(dir.path().join("data"), 2).expect("settings");
        let app = etlworks_agent::open_app(&settings).await.expect("open app");
        let tools = app
            .tools
            .describe()
            .into_iter()
            .map(|t| ToolSpec {
                name: t["name"].as_str().unwrap().to_string(),
                description: t["description"].as_str().unwrap().to_string(),
                parameters: t["parameters"].clone(),
            })
            .collect();
        Chat {
            dir,
            app,
            caller: agent_caller("default", "tester", Role::Admin),
            tools,
            messages: vec![Message::system("You are the Etlworks agent.")],
        }
    }

    /// A folder in the temp dir holding the given files.
    fn folder(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        for (file, content) in files {
            std::fs::write(path.join(file), content).unwrap();
        }
        path
    }

    /// Runs host statements directly (test setup, not part of the conversation).
    async fn host(&self, script: &str) {
        let outcomes = self
            .app
            .host
            .run(&etl_engine::host::Caller::local(), script)
            .await;
        for o in &outcomes {
            if let Err(e) = &o.result
                && e.code != "run_failed"
            {
                panic!("setup statement '{}' failed: {}", o.statement, e.message);
            }
        }
    }

    /// Sends a request and loops model → tools → model until the planner answers with text.
    async fn say(&mut self, text: &str) -> Turn {
        self.messages.push(Message::user(text));
        let mut turn = Turn {
            calls: Vec::new(),
            ok: Vec::new(),
            answer: String::new(),
        };
        for _ in 0..12 {
            let request = Request {
                messages: self.messages.clone(),
                tools: self.tools.clone(),
                ..Request::default()
            };
            let events: Vec<Event> = Planner::new()
                .stream(request, CancellationToken::new())
                .await
                .expect("the planner answers")
                .map(|e| e.expect("no stream error"))
                .collect()
                .await;
            let mut calls = Vec::new();
            let mut text = String::new();
            let mut finish = None;
            let mut usage = None;
            for e in events {
                match e {
                    Event::Text(t) => text.push_str(&t),
                    Event::ToolCall(c) => calls.push(c),
                    Event::Usage(u) => usage = Some(u),
                    Event::Finish(f) => finish = Some(f),
                }
            }
            let usage = usage.expect("every answer reports usage");
            assert!(
                usage.input_tokens > 0 && usage.output_tokens > 0,
                "{usage:?}"
            );
            if calls.is_empty() {
                assert_eq!(finish, Some(FinishReason::Stop));
                assert!(!text.is_empty(), "an answer has text");
                // Shown when a test fails (and with --nocapture), to read the conversation.
                eprintln!(
                    "USER: {}\nCALLS: {:?}\nPLANNER: {text}\n",
                    self.messages
                        .iter()
                        .rev()
                        .find(|m| m.role == etl_llm::Role::User)
                        .map(|m| m.content.as_str())
                        .unwrap_or_default(),
                    turn.calls
                );
                self.messages
                    .push(Message::assistant(text.clone(), Vec::new()));
                turn.answer = text;
                return turn;
            }
            assert_eq!(finish, Some(FinishReason::ToolCalls));
            assert!(text.is_empty(), "a tool-call answer has no text");
            self.messages
                .push(Message::assistant(String::new(), calls.clone()));
            for call in calls {
                let (success, content, data) = match self
                    .app
                    .tools
                    .call(&self.caller, &call.name, &call.arguments)
                    .await
                {
                    Ok(ex) => (ex.outcome.success, ex.outcome.result, ex.outcome.data),
                    Err(
                        e @ (CallError::UnknownTool(_)
                        | CallError::InvalidArguments(_)
                        | CallError::Forbidden(_)),
                    ) => (false, e.to_string(), Json::Null),
                };
                turn.calls.push((call.name.clone(), call.arguments.clone()));
                turn.ok.push(success);
                self.messages
                    .push(Message::tool_result(&call, success, content, data));
            }
        }
        panic!("the planner kept calling tools: {:?}", turn.calls);
    }
}

const ORDERS: &str = "id,customer,amount\n1,acme,10\n2,globex,20\n3,initech,30\n";

// --- questions -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_is_answered_from_the_best_passage_with_sources() {
    let mut chat = Chat::new().await;
    let t = chat
        .say("How do I schedule a flow to run every 15 minutes?")
        .await;
    assert_eq!(t.tools(), ["search_knowledge_base"]);
    t.says("schedule flow")
        .says("Sources:\n- docs/")
        .says("schedules.md#")
        .never_says("score")
        .never_says("**");
    assert!(
        t.answer.len() < 3000,
        "a direct answer, not a dump: {}",
        t.answer
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_naming_systems_also_searches_templates() {
    let mut chat = Chat::new().await;
    let t = chat
        .say("How can I load Salesforce accounts into PostgreSQL?")
        .await;
    assert_eq!(t.tools(), ["search_knowledge_base", "search_templates"]);
    t.says("salesforce-soql-to-postgres")
        .says("import it")
        .says("Sources:");
    // The follow-up "import it" picks the template the answer offered.
    let t = chat.say("import it").await;
    assert_eq!(t.tools(), ["import_template"]);
    assert_eq!(t.calls[0].1["template"], "salesforce-soql-to-postgres");
    t.says("instance_url");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbered_steps_in_the_docs_come_back_as_steps() {
    let mut chat = Chat::new().await;
    let t = chat
        .say("In which order are the mapping steps applied?")
        .await;
    assert_eq!(t.tools(), ["search_knowledge_base"]);
    t.says("\n1. filter")
        .says("\n2. ")
        .says("Sources:\n- docs/flows.md#mapping");

    // A question about templates asks the docs, it does not search the gallery.
    let t = chat.say("What happens when I import a template?").await;
    assert_eq!(t.tools(), ["search_knowledge_base"]);
    t.says("Sources:")
        .says("docs/templates.md#importing-a-template");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_tables_answer_with_their_matching_rows() {
    let mut chat = Chat::new().await;
    let t = chat
        .say("How do I connect to a REST API with a bearer token?")
        .await;
    assert_eq!(t.tools(), ["search_knowledge_base"]);
    t.says("- `token`: Bearer token")
        .says("docs/connectors/http.md#connection-properties")
        .never_says("|---");

    // A general question about failures is a question, not a diagnosis of some flow.
    let t = chat
        .say("What happens when a run fails in replace mode?")
        .await;
    assert_eq!(t.tools(), ["search_knowledge_base"]);
    t.says("From \"replace\"").says("staging table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_without_an_answer_says_so() {
    let mut chat = Chat::new().await;
    let t = chat.say("what is xyzzyplugh frobnication?").await;
    assert_eq!(t.tools(), ["search_knowledge_base"]);
    t.says("found nothing in the documentation");
}

// --- listing and describing ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_short_readable_answers() {
    let mut chat = Chat::new().await;
    let t = chat.say("list my connections").await;
    assert_eq!(t.commands(), ["list connections"]);
    t.says("You have 1 connection:")
        .says("- warehouse (sqlite)");

    let t = chat.say("what flows do I have?").await;
    assert_eq!(t.commands(), ["list flows"]);
    t.says("no flows yet");

    let t = chat.say("show the schedules").await;
    assert_eq!(t.commands(), ["list schedules"]);
    t.says("No flow is scheduled");

    let t = chat.say("which connector types are there?").await;
    assert_eq!(t.commands(), ["list connection-types"]);
    t.says("- postgres:").says("- http:");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_a_flow_and_list_its_failed_runs() {
    let mut chat = Chat::new().await;
    let inbox = chat.folder("inbox", &[("orders.csv", ORDERS)]);
    chat.host(&format!(
        "create connection inbox type=file directory={}; create flow orders source=inbox object=orders.csv destination=warehouse target=orders; run flow orders --wait; create flow broken source=inbox object=missing.csv destination=warehouse target=x; run flow broken --wait",
        inbox.display()
    ))
    .await;
    let t = chat.say("describe flow orders").await;
    assert_eq!(t.commands(), ["describe flow orders"]);
    t.says("Flow 'orders' reads orders.csv from connection 'inbox'")
        .says("3 rows read, 3 written")
        .says("not scheduled");

    let t = chat.say("show me the failed runs").await;
    assert_eq!(t.commands(), ["list runs limit=10 where status = 'error'"]);
    t.says("1 failed run:").says("- broken error");

    let t = chat.say("show connection inbox").await;
    assert_eq!(t.commands(), ["get connection inbox"]);
    t.says("Connection 'inbox' is of type file");
}

// --- connections -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_to_an_api_host_is_an_http_connection_and_collisions_get_a_suffix() {
    let mut chat = Chat::new().await;
    let t = chat.say("create a connection to api.example.com").await;
    assert_eq!(
        t.commands(),
        ["create connection example type=http url=https://api.example.com"]
    );
    t.says("Created connection 'example' (http)")
        .says("test connection example");

    let t = chat
        .say("please add a connection for https://api.example.com/v2")
        .await;
    assert_eq!(
        t.commands(),
        [
            "create connection example type=http url=https://api.example.com/v2",
            "create connection example_2 type=http url=https://api.example.com/v2"
        ]
    );
    assert_eq!(t.ok, [false, true]);
    t.says("Created connection 'example_2'")
        .says("'example' was taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_urls_become_database_connections_without_echoing_passwords() {
    let mut chat = Chat::new().await;
    let t = chat
        .say("connect to postgres://etl:s3cret@db.internal:5433/shop")
        .await;
    assert_eq!(
        t.commands(),
        [
            "create connection shop type=postgres host=db.internal port=5433 database=shop user=etl password=s3cret"
        ]
    );
    t.says("Created connection 'shop' (postgres)")
        .says("password=***")
        .never_says("s3cret");

    let t = chat
        .say("add a connection to mysql://root@127.0.0.1:3306/sales named sales_db")
        .await;
    assert_eq!(
        t.commands(),
        ["create connection sales_db type=mysql host=127.0.0.1 port=3306 database=sales user=root"]
    );
    t.says("Created connection 'sales_db' (mysql)");

    // A name the user chose is not silently changed.
    let t = chat
        .say("add a connection to mysql://root@127.0.0.1:3306/other named sales_db")
        .await;
    assert_eq!(t.ok, [false]);
    t.says("already exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_path_is_a_file_connection() {
    let mut chat = Chat::new().await;
    let inbox = chat.folder("drop", &[("orders.csv", ORDERS)]);
    let t = chat
        .say(&format!(
            "create a connection to the folder {}",
            inbox.display()
        ))
        .await;
    assert_eq!(
        t.commands(),
        [format!(
            "create connection drop type=file directory={}",
            inbox.display()
        )
        .as_str()]
    );
    t.says("Created connection 'drop' (file)");
}

// --- flows, runs, schedules ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_a_flow_then_run_it_then_schedule_it() {
    let mut chat = Chat::new().await;
    let inbox = chat.folder("inbox", &[("orders.csv", ORDERS)]);
    chat.host(&format!(
        "create connection inbox type=file directory={}",
        inbox.display()
    ))
    .await;

    let t = chat.say("load orders.csv from inbox into warehouse").await;
    assert_eq!(
        t.commands(),
        [
            "list connections; list flows",
            "create flow orders_to_warehouse source=inbox object=orders.csv destination=warehouse target=orders"
        ]
    );
    t.says("Created flow 'orders_to_warehouse'").says("run it");

    let t = chat.say("run it").await;
    assert_eq!(t.commands(), ["run flow orders_to_warehouse --wait"]);
    t.says("succeeded").says("3 rows read, 3 rows written");

    let t = chat.say("schedule it every hour").await;
    assert_eq!(t.commands(), ["schedule flow orders_to_warehouse every=1h"]);
    t.says("Flow 'orders_to_warehouse' now runs every 1h")
        .says("next run is at");

    let t = chat.say("actually make that daily at 2am").await;
    assert_eq!(
        t.commands(),
        ["schedule flow orders_to_warehouse cron='0 2 * * *'"]
    );
    t.says("cron '0 2 * * *'");

    let t = chat.say("list schedules").await;
    t.says("1 flow is scheduled:")
        .says("- orders_to_warehouse: cron");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_from_a_path_creates_its_connection_and_runs_when_asked() {
    let mut chat = Chat::new().await;
    let folder = chat.folder("customers", &[("customers.csv", ORDERS)]);
    let t = chat
        .say(&format!(
            "copy {}/customers.csv into the warehouse with merge on id and run it",
            folder.display()
        ))
        .await;
    assert_eq!(t.commands().len(), 2, "{:?}", t.calls);
    assert_eq!(
        t.commands()[1],
        format!(
            "create connection customers type=file directory={}; create flow customers_to_warehouse source=customers object=customers.csv destination=warehouse target=customers mode=merge keys=id; run flow customers_to_warehouse --wait",
            folder.display()
        )
    );
    t.says("Created connection 'customers' (file).")
        .says("mode merge, keys id")
        .says("3 rows read, 3 rows written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_object_left_out_is_the_first_the_connection_offers() {
    let mut chat = Chat::new().await;
    let inbox = chat.folder("inbox", &[("sales.csv", ORDERS)]);
    chat.host(&format!(
        "create connection inbox type=file directory={}",
        inbox.display()
    ))
    .await;
    let t = chat.say("sync inbox to warehouse").await;
    assert_eq!(
        t.commands(),
        [
            "list connections; list flows",
            "list objects inbox",
            "create flow sales_to_warehouse source=inbox object=sales.csv destination=warehouse target=sales"
        ]
    );
    t.says("Created flow 'sales_to_warehouse'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_source_is_explained_not_guessed() {
    let mut chat = Chat::new().await;
    let t = chat
        .say("load the orders from nowhere into warehouse")
        .await;
    assert_eq!(t.commands(), ["list connections; list flows"]);
    t.says("could not tell which connection to read from")
        .says("warehouse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_a_connection_first_creates_a_flow_into_the_warehouse() {
    let mut chat = Chat::new().await;
    let folder = chat.folder("exports", &[("invoices.csv", ORDERS)]);
    let t = chat
        .say(&format!("create a connection to {}", folder.display()))
        .await;
    t.says("Created connection 'exports' (file)");

    let t = chat.say("schedule it every 15 minutes").await;
    assert_eq!(
        t.commands(),
        [
            "get connection exports; list flows",
            "list objects exports",
            "create flow exports_to_warehouse source=exports object=invoices.csv destination=warehouse target=invoices; schedule flow exports_to_warehouse every=15m"
        ]
    );
    t.says("'exports' is a connection")
        .says("I first created flow 'exports_to_warehouse'")
        .says("into the warehouse table 'invoices'")
        .says("now runs every 15m");

    // "it" is now the flow the schedule was put on.
    let t = chat.say("run it now").await;
    assert_eq!(t.commands(), ["run flow exports_to_warehouse --wait"]);
    t.says("3 rows written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_connection_scheduled_reads_its_base_path() {
    let mut chat = Chat::new().await;
    chat.say("create a connection to api.example.com").await;
    let t = chat.say("schedule it hourly").await;
    assert_eq!(
        t.commands(),
        [
            "get connection example; list flows",
            "create flow example_to_warehouse source=example object=/ destination=warehouse target=example; schedule flow example_to_warehouse every=1h"
        ]
    );
    t.says("I first created flow 'example_to_warehouse'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_lines_and_named_flows_are_scheduled_directly() {
    let mut chat = Chat::new().await;
    let inbox = chat.folder("inbox", &[("orders.csv", ORDERS)]);
    chat.host(&format!(
        "create connection inbox type=file directory={}; create flow orders source=inbox object=orders.csv destination=warehouse target=orders",
        inbox.display()
    ))
    .await;
    let t = chat.say("schedule flow orders 0 */6 * * *").await;
    assert_eq!(t.commands(), ["schedule flow orders cron='0 */6 * * *'"]);
    t.says("cron '0 */6 * * *' (UTC)");

    let t = chat
        .say("schedule flow orders weekdays at 6pm Europe/Berlin")
        .await;
    assert_eq!(
        t.commands(),
        ["schedule flow orders cron='0 18 * * 1-5' timezone=Europe/Berlin"]
    );
    t.says("(Europe/Berlin)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_without_anything_touched_asks_which_flow() {
    let mut chat = Chat::new().await;
    let t = chat.say("schedule it every 15 minutes").await;
    assert_eq!(t.commands(), ["list flows"]);
    t.says("no flow to schedule yet");

    let t = chat.say("run it").await;
    assert_eq!(t.commands(), ["list flows"]);
    t.says("no flow to run yet");

    let t = chat.say("schedule it sometime soon").await;
    assert!(t.calls.is_empty());
    t.says("could not read when to run it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_an_unknown_flow_reports_the_error() {
    let mut chat = Chat::new().await;
    let t = chat.say("run flow nope").await;
    assert_eq!(t.commands(), ["run flow nope --wait"]);
    assert_eq!(t.ok, [false]);
    t.says("unknown flow 'nope'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_a_database_connection_is_copied_and_previewed() {
    let mut chat = Chat::new().await;
    let db = chat.dir.path().join("shop.db");
    chat.host(&format!(
        "create connection shop type=sqlite path={}; query shop sql='create table users (id integer, name text)'; query shop sql=\"insert into users values (1, 'ann'), (2, 'bob')\"",
        db.display()
    ))
    .await;
    let t = chat
        .say("copy the users table from shop to warehouse and run it")
        .await;
    assert_eq!(
        t.commands(),
        [
            "list connections; list flows",
            "create flow users_to_warehouse source=shop object=users destination=warehouse target=users; run flow users_to_warehouse --wait"
        ]
    );
    t.says("Created flow 'users_to_warehouse'")
        .says("2 rows read, 2 rows written");

    let t = chat.say("preview warehouse users").await;
    assert_eq!(t.commands(), ["preview warehouse users"]);
    t.says("ann").says("bob");

    let t = chat.say("show me the logs of it").await;
    assert_eq!(t.commands(), ["logs flow users_to_warehouse"]);
    t.says("finished: 2 rows read, 2 written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_a_connection_then_test_it() {
    let mut chat = Chat::new().await;
    let folder = chat.folder("landing", &[("a.csv", ORDERS)]);
    chat.say(&format!("create a connection to {}", folder.display()))
        .await
        .says("Created connection 'landing' (file)");
    let t = chat.say("test it").await;
    assert_eq!(t.commands(), ["test connection landing"]);
    t.says("connection 'landing' works");

    let t = chat.say("test connection nowhere").await;
    assert_eq!(t.ok, [false]);
    t.says("'test connection nowhere' failed: unknown connection 'nowhere'");
}

// --- templates ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_a_template_then_import_it() {
    let mut chat = Chat::new().await;
    let t = chat
        .say("find a template for hacker news to the warehouse")
        .await;
    assert_eq!(t.tools(), ["search_templates"]);
    assert_eq!(t.calls[0].1["query"], "hacker news to warehouse");
    t.says("hacker-news-stories-to-warehouse").says("import it");

    let t = chat.say("import it").await;
    assert_eq!(t.tools(), ["import_template"]);
    assert_eq!(
        t.calls[0].1,
        json!({"template": "hacker-news-stories-to-warehouse"})
    );
    t.says("Imported template hacker-news-stories-to-warehouse")
        .says("flow 'hn_stories'")
        .says("'hn_algolia' (http, created)");

    let t = chat.say("describe it").await;
    assert_eq!(t.commands(), ["describe flow hn_stories"]);
    t.says("Flow 'hn_stories' reads").says("It has never run.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_passes_the_parameters_the_user_gives() {
    let mut chat = Chat::new().await;
    let inbox = chat.folder("inbox", &[("orders.csv", ORDERS)]);
    chat.say("find a template for csv files to the warehouse")
        .await;
    let t = chat
        .say(&format!("import it with directory={}", inbox.display()))
        .await;
    assert_eq!(t.tools(), ["import_template"]);
    assert_eq!(
        t.calls[0].1,
        json!({"template": "csv-files-to-warehouse", "parameters": {"directory": inbox.display().to_string()}})
    );
    t.says("flow 'csv_to_warehouse'");
    let t = chat.say("run it").await;
    assert_eq!(t.commands(), ["run flow csv_to_warehouse --wait"]);
    t.says("3 rows written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_without_a_template_asks_for_one() {
    let mut chat = Chat::new().await;
    let t = chat.say("import it").await;
    assert!(t.calls.is_empty());
    t.says("Which template?");
}

// --- diagnosis ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_did_a_flow_fail_gives_cause_fix_and_sources() {
    let mut chat = Chat::new().await;
    let inbox = chat.folder("inbox", &[("orders.csv", ORDERS)]);
    chat.host(&format!(
        "create connection inbox type=file directory={}; create flow broken source=inbox object=missing.csv destination=warehouse target=x; run flow broken --wait",
        inbox.display()
    ))
    .await;
    let t = chat.say("why did flow broken fail?").await;
    assert_eq!(t.tools(), ["diagnose_flow"]);
    assert_eq!(t.calls[0].1, json!({"flow": "broken"}));
    t.says("Error:")
        .says("Cause:")
        .says("Fix:")
        .says("missing.csv");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_went_wrong_finds_the_failed_flow() {
    let mut chat = Chat::new().await;
    let inbox = chat.folder("inbox", &[("orders.csv", ORDERS)]);
    chat.host(&format!(
        "create connection inbox type=file directory={}; create flow good source=inbox object=orders.csv destination=warehouse target=o; run flow good --wait; create flow bad source=inbox object=nope.csv destination=warehouse target=y; run flow bad --wait",
        inbox.display()
    ))
    .await;
    let t = chat.say("what went wrong?").await;
    assert_eq!(t.tools(), ["host_cli", "diagnose_flow"]);
    assert_eq!(t.commands(), ["list flows where last_status = 'error'"]);
    assert_eq!(t.calls[1].1, json!({"flow": "bad"}));
    t.says("Fix:");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_in_the_conversation_is_what_it_means() {
    let mut chat = Chat::new().await;
    let inbox = chat.folder("inbox", &[]);
    chat.host(&format!(
        "create connection inbox type=file directory={}; create flow orders source=inbox object=orders.csv destination=warehouse target=orders",
        inbox.display()
    ))
    .await;
    let t = chat.say("run flow orders").await;
    t.says("Flow 'orders' failed")
        .says("why did flow orders fail?");
    let t = chat.say("why did it fail?").await;
    assert_eq!(t.tools(), ["diagnose_flow"]);
    assert_eq!(t.calls[0].1, json!({"flow": "orders"}));
    t.says("Cause:");

    let t = chat.say("diagnose orders").await;
    assert_eq!(t.calls[0].1, json!({"flow": "orders"}));
}

// --- what it cannot do, and the model contract ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_form_requests_are_declined_naming_the_llm_setting() {
    let mut chat = Chat::new().await;
    let t = chat.say("write me a poem about databases").await;
    assert!(t.calls.is_empty());
    t.says("I can't do that")
        .says("`--llm openai`")
        .says("docs/llm-providers.md")
        .says("find and import flow templates");

    let t = chat.say("what can you do?").await;
    assert!(t.calls.is_empty());
    t.says("I can:").says("schedule a flow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_word_fragments_usage_and_finish() {
    let planner = Planner::new();
    assert_eq!(planner.name(), MODEL_NAME);
    let request = Request {
        messages: vec![Message::user("write me a poem")],
        ..Request::default()
    };
    let events: Vec<Event> = planner
        .stream(request.clone(), CancellationToken::new())
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert!(texts.len() > 20, "the answer streams in many fragments");
    let answer = texts.concat();
    assert!(answer.starts_with("I can't do that"));
    let n = events.len();
    assert_eq!(
        events[n - 2],
        Event::Usage(etl_llm::Usage {
            input_tokens: tokens::request(&request.messages, &request.tools),
            output_tokens: tokens::count(&answer)
        })
    );
    assert_eq!(events[n - 1], Event::Finish(FinishReason::Stop));

    // `max_tokens` cuts the answer at a fragment boundary within the limit, and says so.
    let short = Request {
        max_tokens: Some(6),
        ..request.clone()
    };
    let events: Vec<Event> = planner
        .stream(short, CancellationToken::new())
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    let cut: String = events
        .iter()
        .filter_map(|e| match e {
            Event::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        answer.starts_with(&cut) && cut.len() < answer.len(),
        "{cut:?}"
    );
    let n = events.len();
    assert_eq!(events[n - 1], Event::Finish(FinishReason::Length));
    match &events[n - 2] {
        Event::Usage(u) => {
            assert_eq!(u.output_tokens, tokens::count(&cut));
            assert!((1..=6).contains(&u.output_tokens), "{u:?}");
        }
        other => panic!("expected usage, got {other:?}"),
    }

    // A cancelled call is refused before it starts.
    let cancel = CancellationToken::new();
    cancel.cancel();
    assert!(matches!(
        planner.stream(request, cancel).await,
        Err(etl_llm::LlmError::Canceled)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_ids_are_unique_across_the_conversation() {
    let mut chat = Chat::new().await;
    chat.say("list connections").await;
    chat.say("list flows").await;
    let ids: Vec<String> = chat
        .messages
        .iter()
        .flat_map(|m| m.tool_calls.iter().map(|c| c.id.clone()))
        .collect();
    assert_eq!(ids, ["call_planner_1", "call_planner_2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_agent_loop_it_keeps_its_context_across_turns() {
    use etl_agent::run::{Agent, RunOptions, RunRequest};
    let chat = Chat::new().await;
    let agent = Agent::new(std::sync::Arc::new(Planner::new()), chat.app.tools.clone());
    let mut history: Vec<Message> = Vec::new();
    let turn = |history: &[Message], message: &str| RunRequest {
        caller: chat.caller.clone(),
        history: history.to_vec(),
        message: message.to_string(),
        options: RunOptions::default(),
    };
    let first = agent
        .chat(
            turn(&history, "create a connection to api.example.com"),
            CancellationToken::new(),
        )
        .await;
    let answer = first.result.as_ref().expect("the first turn succeeds");
    assert_eq!(answer.model, MODEL_NAME);
    assert_eq!(answer.tools_used, ["host_cli"]);
    assert!(
        answer.response.contains("Created connection 'example'"),
        "{}",
        answer.response
    );
    assert!(answer.usage.input_tokens > 0 && answer.usage.output_tokens > 0);
    history.push(Message::user("create a connection to api.example.com"));
    history.extend(first.messages.clone());

    let second = agent
        .chat(
            turn(&history, "schedule it every hour"),
            CancellationToken::new(),
        )
        .await;
    let answer = second.result.expect("the second turn succeeds");
    assert_eq!(answer.tools_used, ["host_cli", "host_cli"]);
    assert!(
        answer
            .response
            .contains("I first created flow 'example_to_warehouse'")
            && answer.response.contains("now runs every 1h"),
        "{}",
        answer.response
    );
}

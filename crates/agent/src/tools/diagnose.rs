//! `diagnose_flow`: why a flow's run failed. The run's error and log tail, the likely cause and
//! the concrete fix (from a table of the engine's real failure messages), and the knowledge-base
//! passages that match the error.

use async_trait::async_trait;
use etl_engine::host::Caller;
use etl_engine::{Flow, Run, RunStatus};
use serde::Serialize;
use serde_json::{Value as Json, json};

use super::{Tool, ToolEnv, ToolOutcome};

/// How many log lines a diagnosis shows.
const LOG_TAIL: usize = 20;

pub struct DiagnoseFlow;

#[async_trait]
impl Tool for DiagnoseFlow {
    fn name(&self) -> &'static str {
        "diagnose_flow"
    }
    fn description(&self) -> &'static str {
        "Explains why a flow failed: the latest failed run (or the given run), its error, the log tail, the likely cause, the concrete fix, and matching knowledge-base articles."
    }
    fn parameters(&self) -> Json {
        json!({
            "type": "object",
            "properties": {
                "flow": {"type": "string", "minLength": 1, "description": "The flow's name or id."},
                "run_id": {"type": "string", "description": "A specific run; default: the latest failed run."}
            },
            "required": ["flow"],
            "additionalProperties": false
        })
    }
    fn agentic(&self) -> bool {
        false
    }
    async fn execute(&self, env: &ToolEnv, caller: &Caller, args: &Json) -> ToolOutcome {
        let flow = args.get("flow").and_then(Json::as_str).unwrap_or_default();
        let run_id = args
            .get("run_id")
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty());
        match diagnose(env, &caller.tenant, flow, run_id).await {
            Ok(d) => {
                let text = d.render();
                ToolOutcome::ok(
                    text,
                    serde_json::to_value(&d).expect("diagnosis serializes"),
                )
            }
            Err(message) => ToolOutcome::failed("tool_failed", message, Json::Null),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    pub flow: String,
    /// `failed`, `healthy` (no failed run), `running`, `never_run`.
    pub state: String,
    pub run: Option<Json>,
    pub error: Option<String>,
    pub log_tail: Vec<String>,
    pub cause: Option<String>,
    pub fix: Option<String>,
    pub articles: Vec<Json>,
    pub summary: String,
}

impl Diagnosis {
    pub fn render(&self) -> String {
        let mut out = self.summary.clone();
        if let Some(e) = &self.error {
            out.push_str(&format!("\n\nError: {e}"));
        }
        if let Some(c) = &self.cause {
            out.push_str(&format!("\nLikely cause: {c}"));
        }
        if let Some(f) = &self.fix {
            out.push_str(&format!("\nFix: {f}"));
        }
        if !self.log_tail.is_empty() {
            out.push_str("\n\nLog tail:\n");
            out.push_str(&self.log_tail.join("\n"));
        }
        if !self.articles.is_empty() {
            out.push_str("\n\nRelated documentation:");
            for a in &self.articles {
                out.push_str(&format!(
                    "\n- {} ({})",
                    a["title"].as_str().unwrap_or_default(),
                    a["source"].as_str().unwrap_or_default()
                ));
            }
        }
        out
    }
}

/// Diagnoses a flow's latest failed run (or `run_id`). Errors are messages for the caller.
pub async fn diagnose(
    env: &ToolEnv,
    tenant: &str,
    flow: &str,
    run_id: Option<&str>,
) -> Result<Diagnosis, String> {
    let engine = env.host.engine();
    let flow: Flow = engine.flow(tenant, flow).await.map_err(|e| e.message)?;
    let run: Option<Run> = match run_id {
        Some(id) => {
            let r = engine.get_run(tenant, id).await.map_err(|e| e.message)?;
            if r.flow_id != flow.id {
                return Err(format!(
                    "run {id} belongs to flow '{}', not '{}'",
                    r.flow_name, flow.name
                ));
            }
            Some(r)
        }
        None => engine
            .list_runs(tenant, Some(&flow.id), Some(RunStatus::Error), 1)
            .await
            .map_err(|e| e.message)?
            .into_iter()
            .next(),
    };
    let latest = engine
        .last_run(tenant, &flow)
        .await
        .map_err(|e| e.message)?;
    let Some(run) = run else {
        let (state, summary) = match &latest {
            None => (
                "never_run",
                format!(
                    "Flow '{}' has never run, so there is nothing to diagnose; run it with 'run flow {} --wait'.",
                    flow.name, flow.name
                ),
            ),
            Some(r) => (
                "healthy",
                format!(
                    "Flow '{}' has no failed run; its latest run ({}) ended {}.",
                    flow.name,
                    r.id,
                    r.status.as_str()
                ),
            ),
        };
        return Ok(Diagnosis {
            flow: flow.name,
            state: state.into(),
            run: latest.as_ref().map(run_summary),
            error: None,
            log_tail: Vec::new(),
            cause: None,
            fix: None,
            articles: Vec::new(),
            summary,
        });
    };
    let lines = engine
        .run_logs(tenant, &run.id, LOG_TAIL)
        .await
        .map_err(|e| e.message)?;
    let log_tail: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} {} {}",
                l.at.format("%Y-%m-%d %H:%M:%S"),
                l.level,
                l.message
            )
        })
        .collect();
    let error = run.error.clone().unwrap_or_else(|| {
        format!(
            "the run ended {} without an error message",
            run.status.as_str()
        )
    });
    let rule = RULES.iter().find(|r| r.matches(&error));
    let (cause, fix) = match rule {
        Some(r) => (r.cause.to_string(), fill(r.fix, &flow)),
        None => (
            "the error above comes straight from the source or destination system".to_string(),
            format!(
                "read the error and the log tail; check the connections with 'test connection {}' and 'test connection {}', then 'run flow {} --wait'",
                flow.spec.source.connection, flow.spec.destination.connection, flow.name
            ),
        ),
    };
    let articles = env.library.passages(tenant, &search_terms(&error), 3);
    let newer_success = latest
        .as_ref()
        .is_some_and(|l| l.id != run.id && l.status == RunStatus::Success);
    let when = run
        .finished_at
        .or(run.started_at)
        .unwrap_or(run.created_at)
        .to_rfc3339_opts(chrono_secs(), true);
    let mut summary = format!("Flow '{}' run {} failed at {}", flow.name, run.id, when);
    if run.rows_written > 0 {
        summary.push_str(&format!(
            " after writing {} of {} rows read",
            run.rows_written, run.rows_read
        ));
    }
    summary.push('.');
    if newer_success {
        summary.push_str(" A later run succeeded, so the problem may already be fixed.");
    }
    Ok(Diagnosis {
        flow: flow.name.clone(),
        state: if run.status == RunStatus::Error {
            "failed".into()
        } else {
            run.status.as_str().into()
        },
        run: Some(run_summary(&run)),
        error: Some(error),
        log_tail,
        cause: Some(cause),
        fix: Some(fix),
        articles,
        summary,
    })
}

fn chrono_secs() -> chrono::SecondsFormat {
    chrono::SecondsFormat::Secs
}

fn run_summary(r: &Run) -> Json {
    json!({"id": r.id, "status": r.status.as_str(), "trigger": r.trigger.as_str(), "rows_read": r.rows_read, "rows_written": r.rows_written, "error": r.error, "created_at": r.created_at, "finished_at": r.finished_at})
}

/// The error without ids and long quoted data, as a search query.
fn search_terms(error: &str) -> String {
    let cut: String = error.chars().take(300).collect();
    cut.split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| {
            w.len() > 2
                && !w.chars().all(|c| c.is_ascii_hexdigit())
                && !w.chars().all(|c| c.is_ascii_digit())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn fill(template: &str, flow: &Flow) -> String {
    template
        .replace("{flow}", &flow.name)
        .replace("{source}", &flow.spec.source.connection)
        .replace("{destination}", &flow.spec.destination.connection)
        .replace("{target}", &flow.spec.destination.object)
        .replace("{object}", &flow.spec.source.object)
}

struct Rule {
    /// Lowercase fragments; the rule matches when all of one group appear.
    any_of: &'static [&'static [&'static str]],
    cause: &'static str,
    fix: &'static str,
}

impl Rule {
    fn matches(&self, error: &str) -> bool {
        let e = error.to_lowercase();
        self.any_of
            .iter()
            .any(|group| group.iter().all(|f| e.contains(f)))
    }
}

/// Known failures, most specific first. Each names its cause and a fix with the flow's names.
static RULES: &[Rule] = &[
    Rule {
        any_of: &[&["the run was stopped"]],
        cause: "someone stopped the run (stop flow) or the process shut down",
        fix: "nothing is broken: run it again with 'run flow {flow} --wait'",
    },
    Rule {
        any_of: &[&["no heartbeat"]],
        cause: "the process running the flow stopped (crash, kill or restart) before the run ended",
        fix: "run it again with 'run flow {flow} --wait'; for a replace flow the destination was left as it was",
    },
    Rule {
        any_of: &[&["http 401"], &["http 403"], &["check the auth properties"]],
        cause: "the API refused the credentials: the token or key is missing, wrong, expired or lacks permission",
        fix: "set a valid credential with 'update connection {source} token=...' (or api_key=..., user=/password=), then 'test connection {source}'",
    },
    Rule {
        any_of: &[&["http 429"]],
        cause: "the API rate-limited the requests and kept doing so after every retry",
        fix: "run the flow less often or with smaller pages, raise max_retries/max_retry_delay on connection '{source}', or ask the API provider for a higher limit",
    },
    Rule {
        any_of: &[&["http 5"], &["answered http 50"]],
        cause: "the API itself failed (a 5xx answer) on every attempt",
        fix: "the source API is having problems: retry later ('run flow {flow} --wait'), or schedule the flow with retries (schedule flow {flow} every=1h retries=3)",
    },
    Rule {
        any_of: &[&["http 404"], &["not found", "get "]],
        cause: "the API path in the flow's object= does not exist on that server",
        fix: "check the path with 'preview {source} {object}' and fix it with 'update flow {flow} object=/correct/path'",
    },
    Rule {
        any_of: &[&["records_path"], &["not json"]],
        cause: "the API's answer is not shaped as the flow expects (no records array at records_path, or not JSON)",
        fix: "look at the answer with 'preview {source} {object}' and set the right path with 'update flow {flow} source.records_path=data.items'",
    },
    Rule {
        any_of: &[&["timed out"], &["timeout"]],
        cause: "the source or destination did not answer in time",
        fix: "check that it is reachable ('test connection {source}', 'test connection {destination}'); for slow APIs raise timeout= on the connection",
    },
    Rule {
        any_of: &[
            &["connection refused"],
            &["could not connect"],
            &["unreachable"],
            &["check that the server is running"],
            &["failed to lookup address"],
            &["dns"],
        ],
        cause: "the server in the connection cannot be reached (wrong host or port, server down, firewall)",
        fix: "check host and port with 'get connection {destination}' / 'get connection {source}' and 'test connection ...', then run the flow again",
    },
    Rule {
        any_of: &[
            &["password authentication failed"],
            &["refused the login"],
            &["access denied"],
        ],
        cause: "the database refused the login",
        fix: "set the right user and password with 'update connection NAME user=... password=...' and check with 'test connection NAME'",
    },
    Rule {
        any_of: &[
            &["does not exist", "relation"],
            &["no such table"],
            &["doesn't exist", "table"],
            &["create=false"],
        ],
        cause: "a table the flow reads from or writes to does not exist",
        fix: "check the table name with 'list objects {destination}' / 'list objects {source}'; for the destination let the flow create it ('update flow {flow} create=true')",
    },
    Rule {
        any_of: &[
            &["no such column"],
            &["column", "does not exist"],
            &["unknown column"],
        ],
        cause: "the flow names a column the table does not have (in a query, where=, incremental= or keys=)",
        fix: "compare the columns ('preview {source} {object}') with the flow ('describe flow {flow}') and fix the option with 'update flow {flow} ...'",
    },
    Rule {
        any_of: &[&["incremental column"]],
        cause: "the incremental= column is not in the source data",
        fix: "pick a column the source has ('preview {source} {object}') with 'update flow {flow} incremental=updated_at'",
    },
    Rule {
        any_of: &[&["key column"]],
        cause: "merge needs every key column with a value in every row",
        fix: "fix keys= ('update flow {flow} keys=id') or skip rows without a key ('update flow {flow} filter=\"id is not null\"')",
    },
    Rule {
        any_of: &[&["cannot cast"]],
        cause: "a value could not be converted by the flow's cast= mapping",
        fix: "fix the source value, or change or remove the cast with 'update flow {flow} cast=...'",
    },
    Rule {
        any_of: &[&["expected", "fields, found"], &["line", "csv"]],
        cause: "a row of the CSV file is malformed (wrong number of fields or broken quoting)",
        fix: "fix the row in the file, or skip bad rows with 'update flow {flow} source.on_error=skip'",
    },
    Rule {
        any_of: &[
            &["no file in directory"],
            &["not found in directory"],
            &["matches no file"],
        ],
        cause: "no file in the connection's directory matches the flow's object= pattern",
        fix: "check the files with 'list objects {source}' and fix the pattern with 'update flow {flow} object=\"*.csv\"'",
    },
    Rule {
        any_of: &[
            &["unique", "constraint"],
            &["duplicate key"],
            &["duplicate entry"],
        ],
        cause: "the destination has a unique constraint that the new rows violate",
        fix: "use mode=merge with the unique columns as keys ('update flow {flow} mode=merge keys=id'), or remove duplicates in the source",
    },
    Rule {
        any_of: &[&["check constraint"], &["violates check"]],
        cause: "rows violate a CHECK constraint of the destination table",
        fix: "filter the offending rows out with 'update flow {flow} filter=\"...\"' or relax the constraint",
    },
    Rule {
        any_of: &[
            &["already exists", "refuses to overwrite"],
            &["target already exists"],
        ],
        cause: "the destination file exists and append never overwrites",
        fix: "put {run_id} or {timestamp} in the file name ('update flow {flow} target=\"out_{timestamp}.csv\"') or use mode=replace",
    },
    Rule {
        any_of: &[&["could not be decrypted"], &["secret key"]],
        cause: "the secret key changed, so stored passwords and tokens cannot be decrypted",
        fix: "restore the old key (data/secret.key or ETLWORKS_AGENT_SECRET_KEY) or set the secrets again with 'update connection NAME password=...'",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_errors_find_their_rule() {
        let cases = [
            (
                "reading batch 1: source 'shop': GET http://x/orders answered HTTP 500 after 6 attempts: boom",
                "5xx",
            ),
            (
                "writing batch 1 failed: PostgreSQL said: relation \"orders\" does not exist",
                "does not exist",
            ),
            (
                "batch 3: column 'amount', row 1 of the batch: cannot cast 'x' to integer",
                "converted",
            ),
            (
                "reading batch 2: orders.csv line 6: expected 3 fields, found 2; fix the row or set source.on_error=skip",
                "malformed",
            ),
            (
                "GET http://x answered HTTP 401: check the auth properties",
                "credentials",
            ),
        ];
        for (error, want) in cases {
            let rule = RULES
                .iter()
                .find(|r| r.matches(error))
                .unwrap_or_else(|| panic!("no rule for {error}"));
            assert!(rule.cause.contains(want), "{error} -> {}", rule.cause);
        }
        assert!(RULES.iter().all(|r| !r.matches("something entirely new")));
    }

    #[test]
    fn search_terms_drop_ids_and_numbers() {
        assert_eq!(
            search_terms("run 01a2235b77aa72 failed: HTTP 500 at /orders"),
            "run failed HTTP orders"
        );
    }
}

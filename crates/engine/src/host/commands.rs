//! Executes one parsed statement against the engine and renders its outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use etl_model::{ColumnType, Props, WriteMode, flatten_json, parse_duration};
use serde_json::{Value as Json, json};

use super::catalogue::{self, COMMANDS, CommandSpec};
use super::parse::{Arg, RawStatement, resolve_args};
use super::render::{pairs, table};
use super::{Caller, Host, Outcome, Role};
use crate::entity::*;
use crate::error::{EngineError, EngineResult};
use crate::expr::Expr;
use crate::scheduler::describe_trigger;
use crate::service::ConnectionChanges;

type Answer = EngineResult<(Json, String)>;

pub(super) async fn execute(host: &Host, caller: &Caller, st: &RawStatement) -> Outcome {
    let result = dispatch(host, caller, st).await;
    let (result, text) = match result {
        Ok((data, text)) => (Ok(data), text),
        Err(e) => {
            let text = format!("error: {}", e.message);
            (Err(e), text)
        }
    };
    Outcome {
        statement: st.text.clone(),
        result,
        text,
    }
}

/// Resolves verb and noun (`list connections`, `list-connections`), checks the role, runs.
async fn dispatch(host: &Host, caller: &Caller, st: &RawStatement) -> Answer {
    let first = &st.words[0];
    if first.key.is_some() {
        return Err(syntax(format!(
            "a statement starts with a command, not '{}={}'; try 'list commands'",
            first.key.as_deref().unwrap_or(""),
            first.value
        )));
    }
    let mut rest: &[super::parse::Word] = &st.words[1..];
    let lowered = first.value.to_ascii_lowercase();
    let (verb, noun) = match lowered.split_once('-') {
        Some((v, n)) if !catalogue::is_nounless(&lowered) => {
            (v.to_string(), catalogue::normalize_noun(n))
        }
        _ if catalogue::is_nounless(&lowered) => (lowered.clone(), String::new()),
        _ => match rest.first().filter(|w| w.key.is_none() && !w.quoted) {
            Some(w) => {
                rest = &rest[1..];
                (lowered.clone(), catalogue::normalize_noun(&w.value))
            }
            None => (lowered.clone(), String::new()),
        },
    };
    let spec = catalogue::find(&verb, &noun).ok_or_else(|| unknown_command(&verb, &noun))?;
    if spec.mutating && caller.role == Role::Readonly {
        return Err(EngineError::new(
            "forbidden",
            format!(
                "'{}' changes state and this key is read-only; use a key with the user or admin role",
                spec.name
            ),
        ));
    }
    let args = resolve_args(rest, &|f| spec.flags.contains(&f)).map_err(|e| syntax(e.0))?;
    let mut args = Args::new(args, spec);
    if let Some(filter) = &st.filter {
        let expr = Expr::parse(filter)
            .map_err(|e| EngineError::invalid(format!("where {filter}: {e}")))?;
        args.filter = Some(expr);
    }
    let answer = run_command(host, caller, spec, &mut args).await?;
    if args.filter.is_some() {
        return Err(EngineError::invalid(format!(
            "'where' only applies to list commands, not '{}'",
            spec.name
        )));
    }
    Ok(answer)
}

fn syntax(msg: String) -> EngineError {
    EngineError::new("syntax", msg)
}

fn unknown_command(verb: &str, noun: &str) -> EngineError {
    let written = if noun.is_empty() {
        verb.to_string()
    } else {
        format!("{verb} {noun}")
    };
    let known_verb = COMMANDS.iter().any(|c| c.verb == verb);
    let hint = if known_verb {
        let forms: Vec<&str> = COMMANDS
            .iter()
            .filter(|c| c.verb == verb)
            .map(|c| c.name)
            .collect();
        format!("'{verb}' works with: {}", forms.join(", "))
    } else {
        match etl_model::nearest(verb, catalogue::verbs()) {
            Some(v) => format!("did you mean '{v}'? try 'list commands'"),
            None => "try 'list commands' or 'help'".to_string(),
        }
    };
    EngineError::new(
        "unknown_command",
        format!("unknown command '{written}'; {hint}"),
    )
}

/// Arguments with the bookkeeping to report what was not understood.
struct Args {
    positional: Vec<String>,
    named: Vec<(String, String)>,
    flags: Vec<String>,
    spec: &'static CommandSpec,
    /// The statement's `where` filter; list commands take it, others leave it and are refused.
    filter: Option<Expr>,
}

impl Args {
    fn new(args: Vec<Arg>, spec: &'static CommandSpec) -> Args {
        let mut a = Args {
            positional: Vec::new(),
            named: Vec::new(),
            flags: Vec::new(),
            spec,
            filter: None,
        };
        for arg in args {
            match arg {
                Arg::Positional(p) => a.positional.push(p),
                Arg::Named(k, v) => a.named.push((k, v)),
                Arg::Flag(f) => a.flags.push(f),
            }
        }
        a
    }

    fn usage(&self) -> String {
        format!("usage: {}", self.spec.synopsis)
    }

    /// The next positional argument, or an error naming it and the usage.
    fn required(&mut self, what: &str) -> EngineResult<String> {
        if self.positional.is_empty() {
            return Err(EngineError::invalid(format!(
                "missing {what}; {}",
                self.usage()
            )));
        }
        Ok(self.positional.remove(0))
    }

    fn optional(&mut self) -> Option<String> {
        (!self.positional.is_empty()).then(|| self.positional.remove(0))
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let i = self.named.iter().position(|(k, _)| k == key)?;
        Some(self.named.remove(i).1)
    }

    fn take_any(&mut self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| self.take(k))
    }

    fn flag(&mut self, name: &str) -> bool {
        match self.flags.iter().position(|f| f == name) {
            Some(i) => {
                self.flags.remove(i);
                true
            }
            None => self.take(name).is_some_and(|v| {
                etl_model::Props::new()
                    .with("x", v)
                    .bool("x")
                    .ok()
                    .flatten()
                    .unwrap_or(true)
            }),
        }
    }

    fn usize(&mut self, key: &str, default: usize) -> EngineResult<usize> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| {
                EngineError::invalid(format!("{key} must be a whole number, got '{v}'"))
            }),
        }
    }

    fn duration(&mut self, key: &str) -> EngineResult<Option<Duration>> {
        self.take(key)
            .map(|v| {
                parse_duration(&v).ok_or_else(|| {
                    EngineError::invalid(format!(
                        "{key} must be a duration such as 30s, 15m or 1h, got '{v}'"
                    ))
                })
            })
            .transpose()
    }

    /// Fails when anything was not consumed, naming it.
    fn done(&self) -> EngineResult<()> {
        self.refuse_leftovers(true)
    }

    /// Like `done`, but only positionals and flags: named arguments are the caller's to use.
    fn done_positional(&self) -> EngineResult<()> {
        self.refuse_leftovers(false)
    }

    fn refuse_leftovers(&self, named_too: bool) -> EngineResult<()> {
        let mut extra: Vec<String> = self.positional.iter().map(|p| format!("'{p}'")).collect();
        if named_too {
            extra.extend(self.named.iter().map(|(k, _)| format!("'{k}='")));
        }
        extra.extend(self.flags.iter().map(|f| format!("'--{f}'")));
        if extra.is_empty() {
            Ok(())
        } else {
            Err(EngineError::invalid(format!(
                "'{}' does not take {}; {}",
                self.spec.name,
                extra.join(", "),
                self.usage()
            )))
        }
    }

    /// All remaining named arguments as properties.
    fn rest_as_props(&mut self) -> Props {
        std::mem::take(&mut self.named).into_iter().collect()
    }
}

async fn run_command(
    host: &Host,
    caller: &Caller,
    spec: &'static CommandSpec,
    a: &mut Args,
) -> Answer {
    let engine = host.engine();
    let t = caller.tenant.as_str();
    match (spec.verb, spec.noun) {
        ("help", _) => {
            let topic = std::mem::take(&mut a.positional).join(" ");
            a.done()?;
            help(&topic)
        }
        ("list", "command") => {
            a.done()?;
            let items: Vec<Json> = COMMANDS
                .iter()
                .map(|c| serde_json::to_value(c).expect("catalogue serializes"))
                .collect();
            let rows = COMMANDS
                .iter()
                .map(|c| {
                    vec![
                        c.name.to_string(),
                        if c.mutating {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                        c.description.to_string(),
                    ]
                })
                .collect::<Vec<_>>();
            listing(
                a,
                items,
                rows,
                &["command", "changes state", "description"],
                "no commands",
            )
        }
        ("whoami", _) => {
            a.done()?;
            let data =
                json!({"tenant": caller.tenant, "user": caller.user, "role": caller.role.as_str()});
            let text = pairs(&[
                ("tenant", caller.tenant.clone()),
                ("user", caller.user.clone()),
                ("role", caller.role.as_str().into()),
            ]);
            Ok((data, text))
        }
        ("version", _) => {
            a.done()?;
            let types: Vec<&str> = engine.registry().specs().map(|s| s.type_name).collect();
            let data = json!({"version": env!("CARGO_PKG_VERSION"), "connection_types": types});
            Ok((
                data,
                format!(
                    "etlworks-agent engine {}\nconnection types: {}",
                    env!("CARGO_PKG_VERSION"),
                    types.join(", ")
                ),
            ))
        }

        // ---- connections ----
        ("list", "connection") => {
            a.done()?;
            let list = engine.list_connections(t).await?;
            let items: Vec<Json> = list.iter().map(connection_summary).collect();
            let rows = list
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.type_name.clone(),
                        main_property(c),
                        c.description.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            listing(
                a,
                items,
                rows,
                &["name", "type", "target", "description"],
                "no connections yet; create one with 'create connection NAME type=TYPE ...'",
            )
        }
        ("get", "connection") => {
            let name = a.required("the connection NAME")?;
            a.done()?;
            let c = engine.get_connection(t, &name).await?;
            let text = connection_text(&c);
            Ok((connection_json(&c), text))
        }
        ("create", "connection") => {
            let name = a.required("the connection NAME")?;
            let type_name = a.take("type").ok_or_else(|| {
                let types: Vec<&str> = engine.registry().specs().map(|s| s.type_name).collect();
                EngineError::invalid(format!(
                    "missing type=TYPE (one of {}); {}",
                    types.join(", "),
                    a.usage()
                ))
            })?;
            let description = a.take("description").unwrap_or_default();
            a.done_positional()?;
            let props = a.rest_as_props();
            let c = engine
                .create_connection(t, &name, &type_name, props, &description)
                .await?;
            let text = format!(
                "created connection '{}' ({}); check it with 'test connection {}'\n{}",
                c.name,
                c.type_name,
                c.name,
                connection_text(&c)
            );
            Ok((connection_json(&c), text))
        }
        ("update", "connection") => {
            let name = a.required("the connection NAME")?;
            let unset = a
                .take("unset")
                .map(|u| {
                    u.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let description = a.take("description");
            a.done_positional()?;
            let set = a.rest_as_props();
            if set.0.is_empty() && description.is_none() && Vec::<String>::is_empty(&unset) {
                return Err(EngineError::invalid(format!(
                    "nothing to change; {}",
                    a.usage()
                )));
            }
            let c = engine
                .update_connection(
                    t,
                    &name,
                    ConnectionChanges {
                        set,
                        unset,
                        description,
                        tags: None,
                    },
                )
                .await?;
            Ok((
                connection_json(&c),
                format!("updated connection '{}'\n{}", c.name, connection_text(&c)),
            ))
        }
        ("delete", "connection") => {
            let name = a.required("the connection NAME")?;
            a.done()?;
            engine.delete_connection(t, &name).await?;
            Ok((
                json!({"deleted": name}),
                format!("deleted connection '{name}'"),
            ))
        }
        ("test", "connection") => {
            let name = a.required("the connection NAME")?;
            a.done()?;
            let started = std::time::Instant::now();
            let detail = engine.test_connection(t, &name).await?;
            let ms = started.elapsed().as_millis() as u64;
            Ok((
                json!({"connection": name, "reachable": true, "detail": detail, "duration_ms": ms}),
                format!("connection '{name}' works: {detail}"),
            ))
        }
        ("list", "connection-type") => {
            let one = a.optional();
            a.done()?;
            match one {
                None => {
                    let specs: Vec<_> = engine.registry().specs().collect();
                    let data = json!(specs.iter().map(|s| json!({"type": s.type_name, "title": s.title, "description": s.description, "can_read": s.can_read, "can_write": s.can_write})).collect::<Vec<_>>());
                    let rows = specs
                        .iter()
                        .map(|s| {
                            vec![
                                s.type_name.to_string(),
                                rw(s.can_read, s.can_write),
                                s.description.to_string(),
                            ]
                        })
                        .collect::<Vec<_>>();
                    Ok((
                        data,
                        format!(
                            "{}\n\nshow one type's properties with 'list connection-types TYPE'",
                            table(&["type", "use as", "description"], &rows)
                        ),
                    ))
                }
                Some(name) => {
                    let spec = engine.registry().get(&name)?.spec();
                    Ok((
                        serde_json::to_value(spec).expect("spec serializes"),
                        spec_text(spec),
                    ))
                }
            }
        }
        ("list", "object") => {
            let name = a.required("the CONNECTION")?;
            a.done()?;
            let objects = engine.list_objects(t, &name).await?;
            let rows = objects
                .iter()
                .map(|o| {
                    vec![
                        o.name.clone(),
                        o.kind.clone(),
                        o.detail.clone().unwrap_or_default(),
                    ]
                })
                .collect::<Vec<_>>();
            listing(
                a,
                objects
                    .iter()
                    .map(|o| serde_json::to_value(o).expect("objects serialize"))
                    .collect(),
                rows,
                &["name", "kind", "detail"],
                &format!("connection '{name}' has no objects yet"),
            )
        }
        ("preview", _) => {
            let name = a.required("the CONNECTION")?;
            let object = a.optional().unwrap_or_default();
            let limit = a.usize("limit", 10)?;
            a.done_positional()?;
            let options = a.rest_as_props();
            let batch = engine.preview(t, &name, &object, options, limit).await?;
            Ok(batch_answer(&batch))
        }
        ("query", _) => {
            let name = a.required("the CONNECTION")?;
            let sql = match a.take("sql") {
                Some(s) => s,
                None => a.optional().ok_or_else(|| {
                    EngineError::invalid(format!("missing sql='...'; {}", a.usage()))
                })?,
            };
            let limit = a.usize("limit", 100)?;
            a.done()?;
            let batch = engine.query(t, &name, &sql, limit).await?;
            Ok(batch_answer(&batch))
        }

        // ---- flows ----
        ("list", "flow") => {
            a.done()?;
            let flows = engine.list_flows(t).await?;
            let schedules: BTreeMap<String, Schedule> = engine
                .list_schedules(t)
                .await?
                .into_iter()
                .map(|s| (s.flow_id.clone(), s))
                .collect();
            let mut items = Vec::new();
            let mut rows = Vec::new();
            for f in &flows {
                let sched = schedules.get(&f.id);
                let last = engine.last_run(t, f).await?;
                items.push(flow_summary(f, sched, last.as_ref()));
                rows.push(vec![
                    f.name.clone(),
                    format!("{}:{}", f.spec.source.connection, f.spec.source.object),
                    format!(
                        "{}:{}",
                        f.spec.destination.connection, f.spec.destination.object
                    ),
                    f.spec.mode.as_str().to_string(),
                    sched
                        .map(|s| {
                            if s.enabled {
                                describe_trigger(&s.trigger)
                            } else {
                                format!("{} (disabled)", describe_trigger(&s.trigger))
                            }
                        })
                        .unwrap_or_default(),
                    last.map(|r| r.status.as_str().to_string())
                        .unwrap_or_else(|| "never run".into()),
                ]);
            }
            listing(
                a,
                items,
                rows,
                &[
                    "name",
                    "source",
                    "destination",
                    "mode",
                    "schedule",
                    "last run",
                ],
                "no flows yet; create one with 'create flow NAME source=... object=... destination=... target=...'",
            )
        }
        ("get", "flow") => {
            let name = a.required("the flow NAME")?;
            a.done()?;
            let f = engine.flow(t, &name).await?;
            Ok((flow_json(&f), flow_text(&f)))
        }
        ("describe", "flow") => {
            let name = a.required("the flow NAME")?;
            a.done()?;
            describe_flow(host, t, &name).await
        }
        ("create", "flow") => {
            let name = a.required("the flow NAME")?;
            let description = a.take("description").unwrap_or_default();
            let spec = flow_spec_from_args(a, None)?;
            let f = engine.create_flow(t, &name, spec, &description).await?;
            Ok((
                flow_json(&f),
                format!(
                    "created flow '{}'; run it with 'run flow {} --wait'\n{}",
                    f.name,
                    f.name,
                    flow_text(&f)
                ),
            ))
        }
        ("update", "flow") => {
            let name = a.required("the flow NAME")?;
            let mut f = engine.flow(t, &name).await?;
            if let Some(d) = a.take("description") {
                f.description = d;
            }
            f.spec = flow_spec_from_args(a, Some(f.spec.clone()))?;
            let f = engine.update_flow(t, f).await?;
            Ok((
                flow_json(&f),
                format!("updated flow '{}'\n{}", f.name, flow_text(&f)),
            ))
        }
        ("delete", "flow") => {
            let name = a.required("the flow NAME")?;
            a.done()?;
            let f = engine.delete_flow(t, &name).await?;
            Ok((
                json!({"deleted": f.name}),
                format!("deleted flow '{}' with its schedule, runs and logs", f.name),
            ))
        }

        // ---- runs ----
        ("run", "flow") => {
            let name = a.required("the flow NAME")?;
            let wait = a.flag("wait");
            let timeout = a.duration("timeout")?.unwrap_or(Duration::from_secs(600));
            a.done()?;
            let run = engine.start_run(t, &name, caller.trigger, 1).await?;
            if !wait {
                let text = format!(
                    "started run {} of flow '{}'; follow it with 'status flow {}' or 'logs flow {}'",
                    run.id, run.flow_name, run.flow_name, run.flow_name
                );
                return Ok((run_json(&run), text));
            }
            let done = engine.wait_run(t, &run.id, Some(timeout)).await?;
            let text = match done.status {
                RunStatus::Success => format!(
                    "run {} of flow '{}' succeeded: {} rows read, {} written in {} ms",
                    done.id,
                    done.flow_name,
                    done.rows_read,
                    done.rows_written,
                    done.duration_ms().unwrap_or(0)
                ),
                RunStatus::Error => format!(
                    "run {} of flow '{}' failed: {}\nsee 'logs flow {}' for details",
                    done.id,
                    done.flow_name,
                    done.error.clone().unwrap_or_default(),
                    done.flow_name
                ),
                RunStatus::Canceled => format!(
                    "run {} of flow '{}' was stopped: {}",
                    done.id,
                    done.flow_name,
                    done.error.clone().unwrap_or_default()
                ),
                _ => format!(
                    "run {} of flow '{}' is still {} after {:?}; follow it with 'status flow {}'",
                    done.id,
                    done.flow_name,
                    done.status.as_str(),
                    timeout,
                    done.flow_name
                ),
            };
            if done.status == RunStatus::Error {
                return Err(EngineError::new(
                    "run_failed",
                    text.lines().next().unwrap_or_default().to_string(),
                ));
            }
            Ok((run_json(&done), text))
        }
        ("stop", "flow") => {
            let name = a.required("the flow NAME")?;
            a.done()?;
            match engine.stop_flow(t, &name).await? {
                Some((id, true)) => Ok((
                    json!({"stopped": id, "in_this_process": true}),
                    format!("stopping run {id} of flow '{name}' at the next batch boundary"),
                )),
                Some((id, false)) => Ok((
                    json!({"stopped": id, "in_this_process": false}),
                    format!(
                        "asked the process running run {id} of flow '{name}' to stop it; it does within {}s",
                        crate::runtime::HEARTBEAT_EVERY.as_secs()
                    ),
                )),
                None => Ok((
                    json!({"stopped": null}),
                    format!("flow '{name}' is not running"),
                )),
            }
        }
        ("status", "flow") => {
            let name = a.required("the flow NAME")?;
            a.done()?;
            let f = engine.flow(t, &name).await?;
            let live = engine.live_run(t, &f).await?;
            let last = engine.last_run(t, &f).await?;
            let data = json!({"flow": f.name, "running": live.is_some(), "run_id": live.as_ref().map(|r| r.id.clone()), "last_run": last.as_ref().map(run_json)});
            let text = match (&live, &last) {
                (Some(r), _) => format!(
                    "flow '{}' is {} (run {}): {} rows read, {} written so far",
                    f.name,
                    r.status.as_str(),
                    r.id,
                    r.rows_read,
                    r.rows_written
                ),
                (_, Some(r)) => format!(
                    "flow '{}' is idle; last run {}\n{}",
                    f.name,
                    r.status.as_str(),
                    run_text(r)
                ),
                (_, None) => format!(
                    "flow '{}' has never run; start it with 'run flow {} --wait'",
                    f.name, f.name
                ),
            };
            Ok((data, text))
        }
        ("logs", "flow") => {
            let name = a.required("the flow NAME")?;
            let tail = a.usize("tail", 50)?;
            let run_id = a.take("run");
            a.done()?;
            let f = engine.flow(t, &name).await?;
            let run = match run_id {
                Some(id) => engine.get_run(t, &id).await?,
                None => engine.last_run(t, &f).await?.ok_or_else(|| {
                    EngineError::not_found(format!(
                        "flow '{}' has never run, so it has no logs",
                        f.name
                    ))
                })?,
            };
            let lines = engine.run_logs(t, &run.id, tail).await?;
            let data = json!({"flow": f.name, "run_id": run.id, "status": run.status.as_str(), "lines": lines.iter().map(|l| json!({"at": l.at, "level": l.level, "message": l.message})).collect::<Vec<_>>()});
            let mut text = format!("run {} ({})", run.id, run.status.as_str());
            for l in &lines {
                text.push_str(&format!(
                    "\n{} {:<5} {}",
                    l.at.format("%Y-%m-%d %H:%M:%S"),
                    l.level,
                    l.message
                ));
            }
            Ok((data, text))
        }
        ("list", "run") => {
            let flow = a.take("flow");
            let limit = a.usize("limit", 20)?;
            let status = a
                .take("status")
                .map(|s| {
                    RunStatus::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
                        EngineError::invalid(format!(
                            "unknown status '{s}'; use queued, running, success, error or canceled"
                        ))
                    })
                })
                .transpose()?;
            a.done()?;
            let runs = engine.list_runs(t, flow.as_deref(), status, limit).await?;
            let rows = runs
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.flow_name.clone(),
                        r.status.as_str().into(),
                        r.trigger.as_str().into(),
                        r.rows_read.to_string(),
                        r.rows_written.to_string(),
                        r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        r.error.clone().unwrap_or_default(),
                    ]
                })
                .collect::<Vec<_>>();
            listing(
                a,
                runs.iter().map(run_json).collect(),
                rows,
                &[
                    "run", "flow", "status", "trigger", "read", "written", "created", "error",
                ],
                "no runs yet",
            )
        }
        ("get", "run") => {
            let id = a.required("the RUN_ID")?;
            a.done()?;
            let r = engine.get_run(t, &id).await?;
            Ok((run_json(&r), run_text(&r)))
        }

        // ---- schedules ----
        ("schedule", "flow") => {
            let name = a.required("the flow NAME")?;
            let every = a.duration("every")?;
            let cron = a.take("cron");
            let zone = a.take_any(&["timezone", "tz"]);
            if every.is_some() && zone.is_some() {
                return Err(EngineError::invalid(
                    "timezone= only applies to cron='...' schedules; an every=... interval runs at the same pace in every time zone",
                ));
            }
            let timezone = zone.unwrap_or_else(|| "UTC".into());
            let retries = a.usize("retries", 0)? as u32;
            let retry_delay = a
                .duration("retry_delay")?
                .unwrap_or(Duration::from_secs(60));
            a.done()?;
            let trigger = match (every, cron) {
                (Some(d), None) => Trigger::Every {
                    seconds: d.as_secs(),
                },
                (None, Some(expr)) => {
                    crate::scheduler::parse_cron(&expr)?;
                    crate::scheduler::parse_timezone(&timezone)?;
                    Trigger::Cron { expr, timezone }
                }
                (Some(_), Some(_)) => {
                    return Err(EngineError::invalid(
                        "give either every=... or cron='...', not both",
                    ));
                }
                (None, None) => {
                    return Err(EngineError::invalid(format!(
                        "missing every=DURATION or cron='EXPR'; {}",
                        a.usage()
                    )));
                }
            };
            let s = engine
                .schedule_flow(t, &name, trigger, retries, retry_delay)
                .await?;
            let text = format!(
                "flow '{}' now runs {}; next run at {}{}",
                s.flow_name,
                describe_trigger(&s.trigger),
                s.next_run_at.map(fmt_time).unwrap_or_default(),
                if s.retries > 0 {
                    format!(
                        ", failed runs retried {} time(s) after {}s",
                        s.retries, s.retry_delay_secs
                    )
                } else {
                    String::new()
                }
            );
            Ok((schedule_json(&s), text))
        }
        ("list", "schedule") => {
            a.done()?;
            let list = engine.list_schedules(t).await?;
            let rows = list
                .iter()
                .map(|s| {
                    vec![
                        s.flow_name.clone(),
                        describe_trigger(&s.trigger),
                        if s.enabled { "yes".into() } else { "no".into() },
                        s.next_run_at.map(fmt_time).unwrap_or_default(),
                        s.last_run_at.map(fmt_time).unwrap_or_default(),
                    ]
                })
                .collect::<Vec<_>>();
            listing(
                a,
                list.iter().map(schedule_json).collect(),
                rows,
                &["flow", "when", "enabled", "next run", "last run"],
                "no schedules; add one with 'schedule flow NAME every=1h'",
            )
        }
        ("enable", "schedule") | ("disable", "schedule") => {
            let name = a.required("the FLOW")?;
            a.done()?;
            let on = spec.verb == "enable";
            let s = engine.set_schedule_enabled(t, &name, on).await?;
            let text = if on {
                format!(
                    "schedule of flow '{}' enabled; next run at {}",
                    s.flow_name,
                    s.next_run_at.map(fmt_time).unwrap_or_default()
                )
            } else {
                format!("schedule of flow '{}' disabled", s.flow_name)
            };
            Ok((schedule_json(&s), text))
        }
        ("delete", "schedule") => {
            let name = a.required("the FLOW")?;
            a.done()?;
            let s = engine.delete_schedule(t, &name).await?;
            Ok((
                json!({"deleted": s.flow_name}),
                format!("deleted the schedule of flow '{}'", s.flow_name),
            ))
        }

        ("search", "template")
        | ("get", "template")
        | ("import", "template")
        | ("search", "kb") => {
            let ext = host.extensions().ok_or_else(|| {
                EngineError::new(
                    "unavailable",
                    format!("'{}' needs the knowledge base and template gallery, which this process was started without", spec.name),
                )
            })?;
            match (spec.verb, spec.noun) {
                ("search", "kb") => {
                    let limit = a.usize("limit", 5)?;
                    let query = words_of(a, "the QUERY")?;
                    ext.search_kb(caller, &query, limit).await
                }
                ("search", _) => {
                    let limit = a.usize("limit", 5)?;
                    let query = words_of(a, "the QUERY")?;
                    ext.search_templates(caller, &query, limit).await
                }
                ("get", _) => {
                    let id = a.required("the template ID")?;
                    a.done()?;
                    ext.get_template(caller, &id).await
                }
                _ => {
                    let id = a.required("the template ID")?;
                    let name = a.take("name");
                    a.done_positional()?;
                    let params: std::collections::BTreeMap<String, String> =
                        std::mem::take(&mut a.named).into_iter().collect();
                    ext.import_template(caller, &id, name.as_deref(), &params)
                        .await
                }
            }
        }
        _ => Err(unknown_command(spec.verb, spec.noun)),
    }
}

/// The remaining positional words joined as free text (a search query).
fn words_of(a: &mut Args, what: &str) -> EngineResult<String> {
    let words = std::mem::take(&mut a.positional).join(" ");
    a.done()?;
    if words.trim().is_empty() {
        return Err(EngineError::invalid(format!(
            "missing {what}; {}",
            a.usage()
        )));
    }
    Ok(words)
}

const FLOW_KEYS: &[&str] = &[
    "source",
    "object",
    "destination",
    "target",
    "table",
    "query",
    "mode",
    "keys",
    "incremental",
    "filter",
    "rename",
    "exclude",
    "constant",
    "cast",
    "batch_size",
    "create",
];

/// Builds a flow spec from arguments, starting from `base` for updates.
fn flow_spec_from_args(a: &mut Args, base: Option<FlowSpec>) -> EngineResult<FlowSpec> {
    let is_update = base.is_some();
    let mut spec = base.unwrap_or(FlowSpec {
        source: Endpoint::default(),
        destination: Endpoint::default(),
        mode: WriteMode::Append,
        keys: Vec::new(),
        create: true,
        incremental: None,
        mapping: Mapping::default(),
        batch_size: None,
    });
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let pairs_of = |key: &str, v: &str| -> EngineResult<Vec<(String, String)>> {
        list(v)
            .into_iter()
            .map(|p| {
                p.split_once(':')
                    .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                    .ok_or_else(|| {
                        EngineError::invalid(format!(
                            "{key} takes {} pairs separated by commas, got '{p}'",
                            if key == "rename" {
                                "OLD:NEW"
                            } else {
                                "COLUMN:VALUE"
                            }
                        ))
                    })
            })
            .collect()
    };
    if let Some(v) = a.take_any(&["source", "from"]) {
        spec.source.connection = v;
    }
    if let Some(v) = a.take("object") {
        spec.source.object = v;
    }
    if let Some(v) = a.take_any(&["destination", "to"]) {
        spec.destination.connection = v;
    }
    if let Some(v) = a.take_any(&["target", "table"]) {
        spec.destination.object = v;
    }
    if let Some(v) = a.take("query") {
        spec.source.options.set("query", v);
    }
    if let Some(v) = a.take("mode") {
        spec.mode = WriteMode::parse(&v).ok_or_else(|| {
            EngineError::invalid(format!("mode must be append, replace or merge, got '{v}'"))
        })?;
    }
    if let Some(v) = a.take_any(&["keys", "key"]) {
        spec.keys = list(&v);
    }
    if let Some(v) = a.take("incremental") {
        spec.incremental = Some(v).filter(|s| !s.trim().is_empty());
    }
    if let Some(v) = a.take("filter") {
        spec.mapping.filter = Some(v).filter(|s| !s.trim().is_empty());
    }
    if let Some(v) = a.take("rename") {
        spec.mapping.rename = pairs_of("rename", &v)?;
    }
    if let Some(v) = a.take("exclude") {
        spec.mapping.exclude = list(&v);
    }
    if let Some(v) = a.take_any(&["constant", "constants"]) {
        spec.mapping.constants = pairs_of("constant", &v)?;
    }
    if let Some(v) = a.take_any(&["cast", "casts"]) {
        spec.mapping.casts = pairs_of("cast", &v)?
            .into_iter()
            .map(|(c, ty)| {
                ColumnType::parse(&ty)
                    .map(|t| (c.clone(), t))
                    .ok_or_else(|| EngineError::invalid(format!("cast {c}:{ty}: unknown type '{ty}'; use integer, float, boolean, text, date, timestamp or json")))
            })
            .collect::<EngineResult<_>>()?;
    }
    if let Some(v) = a.take("batch_size") {
        spec.batch_size = if v.trim().is_empty() {
            None
        } else {
            Some(v.trim().parse().map_err(|_| {
                EngineError::invalid(format!("batch_size must be a whole number, got '{v}'"))
            })?)
        };
    }
    if let Some(v) = a.take("create") {
        spec.create = etl_model::Props::new()
            .with("create", v)
            .bool("create")
            .map_err(|e| EngineError::invalid(e.message))?
            .unwrap_or(true);
    }
    let named = std::mem::take(&mut a.named);
    let mut unknown = Vec::new();
    for (k, v) in named {
        if let Some(opt) = k.strip_prefix("source.") {
            set_or_clear(&mut spec.source.options, opt, v);
        } else if let Some(opt) = k.strip_prefix("destination.") {
            set_or_clear(&mut spec.destination.options, opt, v);
        } else {
            let hint = etl_model::nearest(&k, FLOW_KEYS.iter().copied())
                .map(|n| format!(" (did you mean '{n}'?)"))
                .unwrap_or_default();
            unknown.push(format!("'{k}'{hint}"));
        }
    }
    if !unknown.is_empty() {
        return Err(EngineError::invalid(format!(
            "unknown flow option(s) {}; source and destination options are written source.OPTION=... and destination.OPTION=...",
            unknown.join(", ")
        )));
    }
    a.done()?;
    if !is_update && spec.source.connection.is_empty() && spec.destination.connection.is_empty() {
        return Err(EngineError::invalid(format!(
            "a flow needs source=CONNECTION and destination=CONNECTION; {}",
            a.usage()
        )));
    }
    Ok(spec)
}

fn set_or_clear(props: &mut Props, key: &str, value: String) {
    if value.is_empty() {
        props.0.remove(key);
    } else {
        props.set(key, value);
    }
}

async fn describe_flow(host: &Host, t: &str, name: &str) -> Answer {
    let engine = host.engine();
    let f = engine.flow(t, name).await?;
    let mut data = flow_json(&f);
    let mut text = flow_text(&f);
    let mut conns = Vec::new();
    for c in [&f.spec.source.connection, &f.spec.destination.connection] {
        match engine.get_connection(t, c).await {
            Ok(conn) => {
                text.push_str(&format!(
                    "\n\nconnection '{}' ({})\n{}",
                    conn.name,
                    conn.type_name,
                    props_text(&conn.props)
                ));
                conns.push(connection_json(&conn));
            }
            Err(e) => {
                text.push_str(&format!("\n\nconnection '{c}': {}", e.message));
            }
        }
    }
    data["connections"] = Json::Array(conns);
    let schedule = engine.schedule_of(t, &f).await?;
    data["schedule"] = schedule.as_ref().map(schedule_json).unwrap_or(Json::Null);
    if let Some(s) = &schedule {
        text.push_str(&format!(
            "\n\nschedule: {}{}; next run {}",
            describe_trigger(&s.trigger),
            if s.enabled { "" } else { " (disabled)" },
            s.next_run_at.map(fmt_time).unwrap_or_else(|| "-".into())
        ));
    }
    if f.spec.incremental.is_some() {
        let mark = engine.store().get_watermark(t, &f.id).await?;
        text.push_str(&format!(
            "\nhigh-water mark: {}",
            mark.clone()
                .unwrap_or_else(|| "none yet (the next run reads everything)".into())
        ));
        data["watermark"] = mark
            .and_then(|m| serde_json::from_str(&m).ok())
            .unwrap_or(Json::Null);
    }
    let runs = engine.list_runs(t, Some(&f.id), None, 5).await?;
    if !runs.is_empty() {
        let rows = runs
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.status.as_str().into(),
                    r.rows_read.to_string(),
                    r.rows_written.to_string(),
                    r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    r.error.clone().unwrap_or_default(),
                ]
            })
            .collect::<Vec<_>>();
        text.push_str(&format!(
            "\n\nrecent runs\n{}",
            table(
                &["run", "status", "read", "written", "created", "error"],
                &rows
            )
        ));
    }
    data["recent_runs"] = Json::Array(runs.iter().map(run_json).collect());
    Ok((data, text))
}

fn help(topic: &str) -> Answer {
    let topic = topic.trim().to_ascii_lowercase();
    if topic.is_empty() {
        let mut groups: Vec<&str> = COMMANDS.iter().map(|c| c.group).collect();
        groups.dedup();
        let mut text = String::from(
            "Statements are separated by ';'. Arguments: positional, key=value, --key value, --flag; quote values with spaces. List commands accept 'where FIELD OP VALUE (and ...)'.\n",
        );
        for g in &groups {
            text.push_str(&format!("\n{g}\n"));
            for c in COMMANDS.iter().filter(|c| c.group == *g) {
                text.push_str(&format!("  {}\n", c.synopsis));
            }
        }
        text.push_str("\nMore on one command: help COMMAND (e.g. help create flow)");
        return Ok((json!({"groups": groups, "commands": COMMANDS}), text));
    }
    let words: Vec<&str> = topic.split_whitespace().collect();
    let (verb, noun) = match words.as_slice() {
        [v] => match v.split_once('-') {
            Some((a, b)) => (a.to_string(), catalogue::normalize_noun(b)),
            None => (v.to_string(), String::new()),
        },
        [v, n, ..] => (v.to_string(), catalogue::normalize_noun(n)),
        [] => unreachable!("topic is not empty"),
    };
    let matches: Vec<&CommandSpec> = match catalogue::find(&verb, &noun) {
        Some(c) => vec![c],
        None => COMMANDS
            .iter()
            .filter(|c| c.verb == verb || c.noun == verb || c.group == topic)
            .collect(),
    };
    if matches.is_empty() {
        return Err(unknown_command(&verb, &noun));
    }
    let text = matches
        .iter()
        .map(|c| {
            format!(
                "{}\n  {}\n  changes state: {}\n  example: {}",
                c.synopsis,
                c.description,
                if c.mutating { "yes" } else { "no" },
                c.example
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    Ok((
        serde_json::to_value(&matches).expect("catalogue serializes"),
        text,
    ))
}

/// A list answer: the statement's `where` filter (if any) keeps the matching items and their
/// rows, then the rows are rendered as a table.
fn listing(
    a: &mut Args,
    items: Vec<Json>,
    rows: Vec<Vec<String>>,
    headers: &[&str],
    empty: &str,
) -> Answer {
    let (items, rows, filtered) = match a.filter.take() {
        None => (items, rows, false),
        Some(expr) => {
            let (items, rows): (Vec<Json>, Vec<Vec<String>>) = items
                .into_iter()
                .zip(rows)
                .filter(|(item, _)| {
                    let fields = flatten_json(item);
                    expr.matches(&|name: &str| {
                        fields
                            .iter()
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| v.clone())
                            .unwrap_or(etl_model::Value::Null)
                    })
                })
                .unzip();
            (items, rows, true)
        }
    };
    let text = match (rows.is_empty(), filtered) {
        (true, true) => "nothing matches the where clause".to_string(),
        (true, false) => empty.to_string(),
        _ => table(headers, &rows),
    };
    Ok((Json::Array(items), text))
}

fn rw(r: bool, w: bool) -> String {
    match (r, w) {
        (true, true) => "source, destination".into(),
        (true, false) => "source".into(),
        (false, true) => "destination".into(),
        _ => String::new(),
    }
}

fn batch_answer(batch: &etl_model::Batch) -> (Json, String) {
    let rows: Vec<Vec<String>> = batch
        .rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| {
                    v.as_text()
                        .map(|c| c.into_owned())
                        .unwrap_or_else(|| "null".into())
                })
                .collect()
        })
        .collect();
    let headers: Vec<&str> = batch.columns.iter().map(String::as_str).collect();
    let text = if batch.columns.is_empty() {
        "no rows".to_string()
    } else {
        format!(
            "{}\n({} row{})",
            table(&headers, &rows),
            batch.rows.len(),
            if batch.rows.len() == 1 { "" } else { "s" }
        )
    };
    (
        json!({"columns": batch.columns, "rows": batch.to_json_rows(), "count": batch.rows.len()}),
        text,
    )
}

// ---- views --------------------------------------------------------------------------------

fn main_property(c: &Connection) -> String {
    ["url", "host", "path", "directory", "database"]
        .iter()
        .find_map(|k| c.props.get(k).map(str::to_string))
        .unwrap_or_default()
}

fn connection_summary(c: &Connection) -> Json {
    json!({"name": c.name, "type": c.type_name, "target": main_property(c), "description": c.description})
}

fn connection_json(c: &Connection) -> Json {
    json!({
        "name": c.name, "type": c.type_name, "properties": c.props, "description": c.description,
        "tags": c.tags, "created_at": c.created_at, "updated_at": c.updated_at,
    })
}

fn props_text(p: &Props) -> String {
    let items: Vec<(&str, String)> = p.0.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    pairs(&items)
}

fn connection_text(c: &Connection) -> String {
    let mut items: Vec<(&str, String)> = vec![
        ("name", c.name.clone()),
        ("type", c.type_name.clone()),
        ("description", c.description.clone()),
    ];
    items.extend(c.props.0.iter().map(|(k, v)| (k.as_str(), v.clone())));
    pairs(&items)
}

fn spec_text(spec: &etl_model::ConnectorSpec) -> String {
    let section = |title: &str, props: &[etl_model::PropSpec]| -> String {
        if props.is_empty() {
            return String::new();
        }
        let rows = props
            .iter()
            .map(|p| {
                let mut notes = Vec::new();
                if p.required {
                    notes.push("required".to_string());
                }
                if p.secret {
                    notes.push("secret".to_string());
                }
                if let Some(d) = p.default {
                    notes.push(format!("default {d}"));
                }
                if !p.choices.is_empty() {
                    notes.push(p.choices.join("|"));
                }
                vec![
                    p.name.to_string(),
                    notes.join(", "),
                    p.description.to_string(),
                ]
            })
            .collect::<Vec<_>>();
        format!(
            "\n\n{title}\n{}",
            table(&["property", "notes", "description"], &rows)
        )
    };
    format!(
        "{} ({}): {}\nsource object: {}\ndestination object: {}{}{}{}",
        spec.type_name,
        spec.title,
        spec.description,
        if spec.can_read {
            spec.source_object
        } else {
            "cannot be read"
        },
        if spec.can_write {
            spec.destination_object
        } else {
            "cannot be written"
        },
        section(
            "connection properties (create connection NAME type=... PROPERTY=VALUE)",
            spec.connection
        ),
        section(
            "source options (source.OPTION=VALUE on create flow)",
            spec.source
        ),
        section(
            "destination options (destination.OPTION=VALUE on create flow)",
            spec.destination
        ),
    )
}

fn flow_summary(f: &Flow, s: Option<&Schedule>, last: Option<&Run>) -> Json {
    json!({
        "name": f.name, "source": f.spec.source.connection, "object": f.spec.source.object,
        "destination": f.spec.destination.connection, "target": f.spec.destination.object,
        "mode": f.spec.mode.as_str(), "schedule": s.map(|s| describe_trigger(&s.trigger)),
        "scheduled": s.is_some_and(|s| s.enabled),
        "last_status": last.map(|r| r.status.as_str()), "last_run_id": last.map(|r| r.id.clone()),
        "description": f.description,
    })
}

fn flow_json(f: &Flow) -> Json {
    json!({
        "name": f.name, "id": f.id, "description": f.description,
        "source": {"connection": f.spec.source.connection, "object": f.spec.source.object, "options": f.spec.source.options},
        "destination": {"connection": f.spec.destination.connection, "target": f.spec.destination.object, "options": f.spec.destination.options},
        "mode": f.spec.mode.as_str(), "keys": f.spec.keys, "incremental": f.spec.incremental, "create": f.spec.create,
        "mapping": f.spec.mapping, "batch_size": f.spec.batch_size,
        "created_at": f.created_at, "updated_at": f.updated_at,
    })
}

fn flow_text(f: &Flow) -> String {
    let s = &f.spec;
    let opts = |p: &Props, prefix: &str| {
        p.0.iter()
            .map(|(k, v)| format!("{prefix}.{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let m = &s.mapping;
    let mut items = vec![
        ("flow", f.name.clone()),
        ("description", f.description.clone()),
        (
            "source",
            format!(
                "{} object={} {}",
                s.source.connection,
                s.source.object,
                opts(&s.source.options, "source")
            )
            .trim()
            .to_string(),
        ),
        (
            "destination",
            format!(
                "{} target={} {}",
                s.destination.connection,
                s.destination.object,
                opts(&s.destination.options, "destination")
            )
            .trim()
            .to_string(),
        ),
        ("mode", s.mode.as_str().to_string()),
        ("keys", s.keys.join(",")),
        ("incremental", s.incremental.clone().unwrap_or_default()),
        ("filter", m.filter.clone().unwrap_or_default()),
        (
            "rename",
            m.rename
                .iter()
                .map(|(a, b)| format!("{a}:{b}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("exclude", m.exclude.join(",")),
        (
            "constant",
            m.constants
                .iter()
                .map(|(a, b)| format!("{a}:{b}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "cast",
            m.casts
                .iter()
                .map(|(a, b)| format!("{a}:{}", b.name()))
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    if let Some(b) = s.batch_size {
        items.push(("batch_size", b.to_string()));
    }
    if !s.create {
        items.push(("create", "false".into()));
    }
    pairs(&items)
}

fn run_json(r: &Run) -> Json {
    json!({
        "id": r.id, "flow": r.flow_name, "trigger": r.trigger.as_str(), "status": r.status.as_str(),
        "attempt": r.attempt, "rows_read": r.rows_read, "rows_written": r.rows_written, "batches": r.batches,
        "error": r.error, "created_at": r.created_at, "started_at": r.started_at, "finished_at": r.finished_at,
        "duration_ms": r.duration_ms(),
    })
}

fn run_text(r: &Run) -> String {
    pairs(&[
        ("run", r.id.clone()),
        ("flow", r.flow_name.clone()),
        ("status", r.status.as_str().into()),
        ("trigger", r.trigger.as_str().into()),
        ("rows read", r.rows_read.to_string()),
        ("rows written", r.rows_written.to_string()),
        ("batches", r.batches.to_string()),
        ("started", r.started_at.map(fmt_time).unwrap_or_default()),
        ("finished", r.finished_at.map(fmt_time).unwrap_or_default()),
        (
            "duration",
            r.duration_ms()
                .map(|d| format!("{d} ms"))
                .unwrap_or_default(),
        ),
        ("error", r.error.clone().unwrap_or_default()),
    ])
}

fn schedule_json(s: &Schedule) -> Json {
    let (kind, cron, every, tz) = match &s.trigger {
        Trigger::Cron { expr, timezone } => {
            ("cron", Some(expr.clone()), None, Some(timezone.clone()))
        }
        Trigger::Every { seconds } => (
            "every",
            None,
            Some(crate::scheduler::format_interval(*seconds)),
            None,
        ),
    };
    json!({
        "flow": s.flow_name, "kind": kind, "cron": cron, "every": every, "timezone": tz,
        "when": describe_trigger(&s.trigger), "enabled": s.enabled, "retries": s.retries,
        "retry_delay_secs": s.retry_delay_secs, "next_run_at": s.next_run_at, "last_run_at": s.last_run_at,
        "last_run_id": s.last_run_id,
    })
}

/// A timestamp as people read it in tables: `2026-01-31T08:15:00Z`.
fn fmt_time(t: Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

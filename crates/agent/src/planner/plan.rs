//! The planner's decisions: for the request's intent and the tool results so far, the next tool
//! call of its plan, or the answer written from those results.

use serde_json::{Value as Json, json};

use super::answer;
use super::context::{Conversation, Statement, Touched};
use super::intent::{
    ConnectionDraft, FlowDraft, Intent, Listing, Thing, When, looks_like_file, path_draft,
    url_draft,
};
use super::text::{is_name, quote, sanitize_name};

/// The most tool calls one request may make; a plan that needs more is cut off with what it
/// has, so a misunderstanding can never loop.
pub const MAX_STEPS: usize = 8;

/// What the planner does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Call a tool with these arguments.
    Call { tool: String, arguments: Json },
    /// Answer with this text; the request is done.
    Say(String),
}

fn call(tool: &str, arguments: Json) -> Action {
    Action::Call {
        tool: tool.to_string(),
        arguments,
    }
}

fn host(command: impl Into<String>) -> Action {
    call("host_cli", json!({"command": command.into()}))
}

/// The next action for the conversation.
pub fn next(conv: &Conversation<'_>, intent: &Intent) -> Action {
    if conv.steps.len() >= MAX_STEPS {
        return Action::Say(answer::cut_off(conv));
    }
    match intent {
        Intent::Help => Action::Say(answer::help()),
        Intent::Command {
            command,
            on_connection,
            name,
            rest,
        } => direct(conv, command, *on_connection, name.as_deref(), rest),
        Intent::Thanks => Action::Say(
            "You're welcome. Ask me to list, create, run or schedule something whenever you like."
                .to_string(),
        ),
        Intent::Unknown => Action::Say(answer::cannot(conv.request)),
        Intent::UnclearSchedule => Action::Say(answer::unclear_schedule()),
        Intent::Question { query, templates } => question(conv, query, *templates),
        Intent::List(listing) => list(conv, listing),
        Intent::Describe { thing, name } => describe(conv, thing, name),
        Intent::DescribeIt => match conv.last_touched() {
            Some(Touched::Flow(f)) => describe(conv, &Thing::Flow, &f),
            Some(Touched::Connection(c)) => describe(conv, &Thing::Connection, &c),
            None => Action::Say(
                "Which one? Nothing has been created or run in this conversation yet. Name it, e.g. \"describe flow orders\" or \"show connection warehouse\", or ask \"list flows\".".to_string(),
            ),
        },
        Intent::CreateConnection(draft) => create_connection(conv, draft),
        Intent::CreateFlow(draft) => create_flow(conv, draft),
        Intent::Run { flow } => run(conv, flow.as_deref()),
        Intent::Schedule { when, flow } => schedule(conv, when, flow.as_deref()),
        Intent::FindTemplate { query } => match conv.steps_with("search_templates").last() {
            None => call("search_templates", json!({"query": query, "limit": 3})),
            Some(step) => Action::Say(answer::templates_found(step)),
        },
        Intent::ImportTemplate {
            template,
            name,
            parameters,
        } => import(conv, template.as_deref(), name.as_deref(), parameters),
        Intent::Diagnose { flow } => diagnose(conv, flow.as_deref()),
    }
}

fn question(conv: &Conversation<'_>, query: &str, templates: bool) -> Action {
    let kb = conv.steps_with("search_knowledge_base");
    let Some(kb) = kb.last() else {
        return call("search_knowledge_base", json!({"query": query, "limit": 5}));
    };
    let found = conv.steps_with("search_templates");
    if templates && found.is_empty() {
        return call("search_templates", json!({"query": query, "limit": 3}));
    }
    Action::Say(answer::from_passages(query, kb, found.last().copied()))
}

fn list(conv: &Conversation<'_>, listing: &Listing) -> Action {
    let command = match listing {
        Listing::Connections => "list connections".to_string(),
        Listing::Flows => "list flows".to_string(),
        Listing::Schedules => "list schedules".to_string(),
        Listing::ConnectorTypes => "list connection-types".to_string(),
        Listing::Commands => "list commands".to_string(),
        Listing::Runs { flow, failed } => {
            let mut c = String::from("list runs");
            if let Some(f) = flow {
                c.push_str(&format!(" flow={}", quote(f)));
            }
            c.push_str(" limit=10");
            if *failed {
                c.push_str(" where status = 'error'");
            }
            c
        }
    };
    match conv.host_step(&command) {
        None => host(command),
        Some(step) => Action::Say(answer::listing(listing, step)),
    }
}

fn describe(conv: &Conversation<'_>, thing: &Thing, name: &str) -> Action {
    let command = match thing {
        Thing::Flow => format!("describe flow {}", quote(name)),
        Thing::Connection => format!("get connection {}", quote(name)),
        Thing::Run => format!("get run {}", quote(name)),
    };
    match conv.host_step(&command) {
        None => host(command),
        Some(step) => Action::Say(answer::described(thing, name, step)),
    }
}

/// `create connection` with the draft's name, or the name with `_2`, `_3`, ... when the
/// previous attempt answered that the name is taken.
fn create_connection(conv: &Conversation<'_>, draft: &ConnectionDraft) -> Action {
    let attempts = conv
        .steps
        .iter()
        .filter(|s| s.tool() == "host_cli" && s.command().starts_with("create connection"))
        .collect::<Vec<_>>();
    match attempts.last() {
        None => host(connection_statement(draft, &draft.name)),
        Some(step) => {
            let statements = step.statements();
            let conflict = statements
                .first()
                .is_some_and(|s| s.error_code == "conflict");
            if conflict && !draft.named && attempts.len() < 5 {
                let name = format!("{}_{}", draft.name, attempts.len() + 1);
                return host(connection_statement(draft, &name));
            }
            Action::Say(answer::connection_created(draft, step, attempts.len() > 1))
        }
    }
}

pub fn connection_statement(draft: &ConnectionDraft, name: &str) -> String {
    let mut s = format!("create connection {} type={}", quote(name), draft.kind);
    for (k, v) in &draft.props {
        s.push_str(&format!(" {k}={}", quote(v)));
    }
    s
}

/// What a flow draft resolves to once the connections are known.
struct Resolved {
    /// A connection to create first (for a path or URL source), as a statement.
    new_connection: Option<String>,
    source: String,
    source_type: String,
    object: Option<String>,
    destination: String,
    target: Option<String>,
}

/// The connections `list connections` answered: (name, type, target).
fn connections_of(statement: &Statement<'_>) -> Vec<(String, String, String)> {
    statement
        .data
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|c| {
                    let f = |k: &str| {
                        c.get(k)
                            .and_then(Json::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    (f("name"), f("type"), f("target"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn names_of(statement: Option<&Statement<'_>>) -> Vec<String> {
    statement
        .and_then(|s| s.data.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("name").and_then(Json::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `name`, or `name_2`, `name_3`, ... when taken.
fn free_name(base: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t.eq_ignore_ascii_case(base)) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}_{i}"))
        .find(|n| !taken.iter().any(|t| t.eq_ignore_ascii_case(n)))
        .expect("some suffix is free")
}

fn create_flow(conv: &Conversation<'_>, draft: &FlowDraft) -> Action {
    // 1. What exists: connections (to resolve the names) and flows (to pick a free name).
    let Some(inventory) = conv.host_step("list connections; list flows") else {
        return host("list connections; list flows");
    };
    let statements = inventory.statements();
    let Some(conn_list) = statements.first().filter(|s| s.ok) else {
        return Action::Say(answer::failed_step(inventory));
    };
    let connections = connections_of(conn_list);
    let flows = names_of(statements.get(1));
    let resolved = match resolve(draft, &connections) {
        Ok(r) => r,
        Err(message) => return Action::Say(message),
    };
    // 2. A source object when the request named none: the first table or file it offers.
    let object = match (&resolved.object, resolved.source_type.as_str()) {
        (Some(o), _) => o.clone(),
        (None, "http") => "/".to_string(),
        (None, _) if resolved.new_connection.is_some() => "*".to_string(),
        (None, _) => {
            let command = format!("list objects {}", quote(&resolved.source));
            match conv.host_step(&command) {
                None => return host(command),
                Some(step) => match first_object(step) {
                    Some(o) => o,
                    None => return Action::Say(answer::no_objects(&resolved.source, step)),
                },
            }
        }
    };
    let target = resolved
        .target
        .clone()
        .unwrap_or_else(|| table_name_for(&object, &resolved.source));
    // 3. Create the flow (and its connection, and run it when asked), in one script.
    if let Some(step) = conv.host_step("create ") {
        return Action::Say(answer::flow_created(step));
    }
    let name = match &draft.name {
        Some(n) => n.clone(),
        None => free_name(
            &format!(
                "{}_to_{}",
                sanitize_name(&target),
                sanitize_name(&resolved.destination)
            ),
            &flows,
        ),
    };
    let mut script = String::new();
    if let Some(c) = &resolved.new_connection {
        script.push_str(c);
        script.push_str("; ");
    }
    script.push_str(&format!(
        "create flow {} source={} object={} destination={} target={}",
        quote(&name),
        quote(&resolved.source),
        quote(&object),
        quote(&resolved.destination),
        quote(&target)
    ));
    if let Some(m) = draft.mode {
        script.push_str(&format!(" mode={m}"));
    }
    if let Some(k) = &draft.keys {
        script.push_str(&format!(" keys={}", quote(k)));
    }
    if let Some(i) = &draft.incremental {
        script.push_str(&format!(" incremental={}", quote(i)));
    }
    if draft.run {
        script.push_str(&format!("; run flow {} --wait", quote(&name)));
    }
    host(script)
}

fn resolve(
    draft: &FlowDraft,
    connections: &[(String, String, String)],
) -> Result<Resolved, String> {
    let find = |word: &str| {
        connections
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(word))
            .cloned()
    };
    // `conn:object`, `conn/object` and `conn.object` name a connection and an object at once.
    let split_ref = |word: &str| -> Option<((String, String, String), String)> {
        for sep in [':', '/', '.'] {
            if let Some((c, o)) = word.split_once(sep)
                && let Some(conn) = find(c)
                && !o.is_empty()
            {
                return Some((conn, o.to_string()));
            }
        }
        None
    };
    let (destination, target) = {
        let mut conn = None;
        let mut target = None;
        for w in &draft.destination_words {
            if conn.is_none()
                && let Some(c) = find(w)
            {
                conn = Some(c.0);
            } else if conn.is_none()
                && let Some((c, o)) = split_ref(w)
            {
                conn = Some(c.0);
                target = Some(o);
            } else if target.is_none() && is_name(w) {
                target = Some(w.clone());
            }
        }
        // "into postgres" names a kind of database, not a connection: say which exist rather
        // than writing a table called "postgres" into the warehouse.
        if conn.is_none()
            && let Some(kind) = draft.destination_words.iter().find(|w| {
                [
                    "postgres",
                    "postgresql",
                    "mysql",
                    "mariadb",
                    "sqlite",
                    "database",
                    "db",
                ]
                .contains(&w.to_lowercase().as_str())
            })
        {
            let known: Vec<&str> = connections.iter().map(|c| c.0.as_str()).collect();
            return Err(format!(
                "There is no connection named '{kind}' to write to. Your connections are: {}. Create the database connection first (\"connect to postgres://user@host/db\"), then name it: \"load ... into NAME\".",
                known.join(", ")
            ));
        }
        (conn.unwrap_or_else(|| "warehouse".to_string()), target)
    };
    // A connection named among the source words wins: "/contacts" in "from crm /contacts" is
    // then the object, not a folder.
    let names_connection = draft
        .source_words
        .iter()
        .any(|w| find(w).is_some() || split_ref(w).is_some());
    if let Some(location) = draft.source_location.as_ref().filter(|_| !names_connection) {
        let (conn_draft, object) = if location.contains("://") && !location.starts_with("file://") {
            let draft = url_draft(location).ok_or_else(|| {
                format!("I cannot read from '{location}': only http(s), postgres, mysql and sqlite URLs are understood.")
            })?;
            if draft.kind == "http" {
                // The API's base URL is the connection; its path is the flow's object.
                let url = draft.props[0].1.clone();
                let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
                let (host_part, path) = after_scheme.split_once('/').unwrap_or((after_scheme, ""));
                let base = format!(
                    "{}://{host_part}",
                    url.split("://").next().unwrap_or("https")
                );
                let mut d = draft.clone();
                d.props[0].1 = base;
                (d, Some(format!("/{path}")).filter(|p| p != "/"))
            } else {
                (draft, None)
            }
        } else {
            let path = location.trim_start_matches("file://");
            let d = path_draft(path);
            let object = (d.kind == "file" && looks_like_file(path))
                .then(|| path.rsplit('/').next().unwrap_or_default().to_string());
            (d, object)
        };
        // Reuse a connection that already points there.
        let wanted = conn_draft
            .props
            .first()
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if let Some((name, kind, _)) = connections
            .iter()
            .find(|(_, kind, target)| *kind == conn_draft.kind && *target == wanted)
        {
            return Ok(Resolved {
                new_connection: None,
                source: name.clone(),
                source_type: kind.clone(),
                object,
                destination,
                target,
            });
        }
        let taken: Vec<String> = connections.iter().map(|c| c.0.clone()).collect();
        let name = free_name(&conn_draft.name, &taken);
        return Ok(Resolved {
            new_connection: Some(connection_statement(&conn_draft, &name)),
            source: name,
            source_type: conn_draft.kind.to_string(),
            object,
            destination,
            target,
        });
    }
    let mut source = None;
    let mut object = None;
    for w in &draft.source_words {
        if source.is_none()
            && let Some(c) = find(w)
        {
            source = Some(c);
        } else if source.is_none()
            && let Some((c, o)) = split_ref(w)
        {
            source = Some(c);
            object = Some(o);
        } else if object.is_none() && (is_name(w) || w.contains('*') || w.starts_with('/')) {
            object = Some(w.clone());
        }
    }
    let Some((source, source_type, _)) = source else {
        let known: Vec<&str> = connections.iter().map(|c| c.0.as_str()).collect();
        return Err(format!(
            "I could not tell which connection to read from: none of the words before 'into' is a connection name. Your connections are: {}. Say for example \"load orders.csv from files into warehouse\", or give a file path or URL to read from (\"load /data/inbox/orders.csv into warehouse\").",
            known.join(", ")
        ));
    };
    if source.eq_ignore_ascii_case(&destination) && target.is_none() && object.is_none() {
        return Err(format!(
            "The source and the destination are both '{source}'; name the table to read and the one to write, e.g. \"copy {source}.orders into {source}.orders_copy\"."
        ));
    }
    Ok(Resolved {
        new_connection: None,
        source,
        source_type,
        object,
        destination,
        target,
    })
}

/// A destination table named after the source object: `orders.csv` → `orders`.
fn table_name_for(object: &str, source: &str) -> String {
    let last = object
        .rsplit('/')
        .find(|p| !p.is_empty())
        .unwrap_or_default();
    let stem = last.split('.').next().unwrap_or_default();
    let name = sanitize_name(&stem.replace('*', ""));
    if name.is_empty() {
        sanitize_name(source)
    } else {
        name
    }
}

fn first_object(step: &super::context::Step<'_>) -> Option<String> {
    let statements = step.statements();
    let s = statements.first().filter(|s| s.ok)?;
    s.data
        .as_array()?
        .iter()
        .find_map(|o| o.get("name").and_then(Json::as_str).map(str::to_string))
}

/// The flow "it" means, from the request or the conversation.
fn flow_in_context(
    conv: &Conversation<'_>,
    named: Option<&str>,
) -> Result<String, Option<Touched>> {
    match named {
        Some(n) => Ok(n.to_string()),
        None => match conv.last_touched() {
            Some(Touched::Flow(f)) => Ok(f),
            other => Err(other),
        },
    }
}

/// A direct command on a named object or on "it".
fn direct(
    conv: &Conversation<'_>,
    command: &str,
    on_connection: bool,
    named: Option<&str>,
    rest: &str,
) -> Action {
    let name = match (named, conv.last_touched()) {
        (Some(n), _) => n.to_string(),
        (None, Some(Touched::Connection(c))) if on_connection => c,
        (None, Some(Touched::Flow(f))) if !on_connection => f,
        (None, Some(Touched::Flow(f))) => {
            return Action::Say(format!(
                "'{f}' is a flow; '{command}' works on a connection. Name the connection, e.g. \"{command} warehouse\"."
            ));
        }
        (None, _) if on_connection => {
            return Action::Say(format!(
                "Which connection? Name it, e.g. \"{command} warehouse\"."
            ));
        }
        (None, _) => return which_flow(conv, command.split(' ').next().unwrap_or(command)),
    };
    let mut statement = format!("{command} {}", quote(&name));
    if !rest.is_empty() {
        statement.push(' ');
        statement.push_str(&quote_words(rest));
    }
    match conv.host_step(&statement) {
        None => host(statement),
        Some(step) => Action::Say(answer::command_result(step)),
    }
}

/// `tail=50` stays as it is; a bare object name is quoted when it needs to be.
fn quote_words(rest: &str) -> String {
    if rest.contains('=') {
        rest.to_string()
    } else {
        quote(rest)
    }
}

fn run(conv: &Conversation<'_>, named: Option<&str>) -> Action {
    let flow = match flow_in_context(conv, named) {
        Ok(f) => f,
        Err(Some(Touched::Connection(c))) => {
            return Action::Say(format!(
                "'{c}' is a connection, not a flow, so there is nothing to run yet. Create a flow from it first, for example \"load {c} into warehouse\", then say \"run it\"."
            ));
        }
        Err(_) => return which_flow(conv, "run"),
    };
    let command = format!("run flow {} --wait", quote(&flow));
    match conv.host_step(&command) {
        None => host(command),
        Some(step) => Action::Say(answer::run_outcome(&flow, step)),
    }
}

/// Without a flow to act on: list the flows and ask which one.
fn which_flow(conv: &Conversation<'_>, verb: &str) -> Action {
    match conv.host_step("list flows") {
        None => host("list flows"),
        Some(step) => Action::Say(answer::which_flow(verb, step)),
    }
}

fn schedule(conv: &Conversation<'_>, when: &When, named: Option<&str>) -> Action {
    let connection = match flow_in_context(conv, named) {
        Ok(flow) => {
            let command = format!("schedule flow {} {}", quote(&flow), when.options());
            return match conv.host_step(&command) {
                None => host(command),
                Some(step) => Action::Say(answer::scheduled(step, None)),
            };
        }
        Err(Some(Touched::Connection(c))) => c,
        Err(_) => return which_flow(conv, "schedule"),
    };
    // A connection is not something that runs: make a flow from it into the warehouse first.
    if let Some(step) = conv.host_step("create flow") {
        return Action::Say(answer::scheduled(step, Some(&connection)));
    }
    let Some(info) = conv.host_step(&format!("get connection {}", quote(&connection))) else {
        return host(format!("get connection {}; list flows", quote(&connection)));
    };
    let statements = info.statements();
    let Some(details) = statements.first().filter(|s| s.ok) else {
        return Action::Say(answer::failed_step(info));
    };
    let kind = details
        .data
        .get("type")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let flows = names_of(statements.get(1));
    let object = if kind == "http" {
        "/".to_string()
    } else {
        let command = format!("list objects {}", quote(&connection));
        match conv.host_step(&command) {
            None => return host(command),
            Some(step) => match first_object(step) {
                Some(o) => o,
                None => return Action::Say(answer::no_objects(&connection, step)),
            },
        }
    };
    let target = if kind == "http" {
        sanitize_name(&connection)
    } else {
        table_name_for(&object, &connection)
    };
    let flow = free_name(
        &format!("{}_to_warehouse", sanitize_name(&connection)),
        &flows,
    );
    host(format!(
        "create flow {} source={} object={} destination=warehouse target={}; schedule flow {} {}",
        quote(&flow),
        quote(&connection),
        quote(&object),
        quote(&target),
        quote(&flow),
        when.options()
    ))
}

fn import(
    conv: &Conversation<'_>,
    template: Option<&str>,
    name: Option<&str>,
    parameters: &[(String, String)],
) -> Action {
    if let Some(step) = conv.steps_with("import_template").last() {
        return Action::Say(answer::imported(step));
    }
    let Some(id) = template
        .map(str::to_string)
        .or_else(|| conv.last_template())
    else {
        return Action::Say("Which template? I have not found one in this conversation yet. Ask me to find one first, for example \"find a template for salesforce to postgres\", then say \"import it\"; or name it: \"import template csv-files-to-warehouse directory=/data/inbox\".".to_string());
    };
    let mut args = json!({"template": id});
    if let Some(n) = name {
        args["name"] = json!(n);
    }
    if !parameters.is_empty() {
        let map: serde_json::Map<String, Json> = parameters
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        args["parameters"] = Json::Object(map);
    }
    call("import_template", args)
}

fn diagnose(conv: &Conversation<'_>, named: Option<&str>) -> Action {
    if let Some(step) = conv.steps_with("diagnose_flow").last() {
        return Action::Say(answer::diagnosis(step));
    }
    let flow = match flow_in_context(conv, named) {
        Ok(f) => f,
        Err(_) => {
            // No flow named or touched: the flow whose last run failed, if any.
            let command = "list flows where last_status = 'error'";
            let Some(step) = conv.host_step(command) else {
                return host(command);
            };
            let statements = step.statements();
            let failed = statements
                .first()
                .filter(|s| s.ok)
                .and_then(|s| s.data.as_array())
                .and_then(|a| a.first())
                .and_then(|f| f.get("name"))
                .and_then(Json::as_str);
            match failed {
                Some(f) => f.to_string(),
                None => {
                    return Action::Say(
                        "No flow's latest run has failed, so there is nothing to diagnose. Name the flow if you mean an older failure: \"why did flow orders fail\".".to_string(),
                    );
                }
            }
        }
    };
    call("diagnose_flow", json!({"flow": flow}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_names_get_a_suffix() {
        let taken = vec!["orders".to_string(), "orders_2".to_string()];
        assert_eq!(free_name("orders", &taken), "orders_3");
        assert_eq!(free_name("crm", &taken), "crm");
    }

    #[test]
    fn tables_are_named_after_objects() {
        assert_eq!(table_name_for("in/orders.csv", "files"), "orders");
        assert_eq!(table_name_for("*.csv", "files"), "files");
        assert_eq!(table_name_for("/v1/users", "api"), "users");
    }

    #[test]
    fn sources_resolve_against_connections() {
        let conns = vec![
            ("files".to_string(), "file".to_string(), "/data".to_string()),
            (
                "warehouse".to_string(),
                "sqlite".to_string(),
                "/w.db".to_string(),
            ),
        ];
        let draft = FlowDraft {
            source_words: vec!["orders.csv".into(), "files".into()],
            destination_words: vec!["warehouse".into()],
            ..FlowDraft::default()
        };
        let r = resolve(&draft, &conns).unwrap();
        assert_eq!(
            (r.source.as_str(), r.object.as_deref()),
            ("files", Some("orders.csv"))
        );
        assert_eq!((r.destination.as_str(), r.target), ("warehouse", None));
        let draft = FlowDraft {
            source_words: vec!["/data/orders.csv".into()],
            source_location: Some("/data/orders.csv".into()),
            destination_words: vec!["warehouse.sales".into()],
            ..FlowDraft::default()
        };
        let r = resolve(&draft, &conns).unwrap();
        assert_eq!(
            r.source, "files",
            "the existing connection to /data is reused"
        );
        assert_eq!(r.target.as_deref(), Some("sales"));
        assert!(resolve(&FlowDraft::default(), &conns).is_err());
        let draft = FlowDraft {
            source_words: vec!["files".into()],
            destination_words: vec!["postgres".into()],
            ..FlowDraft::default()
        };
        let err = resolve(&draft, &conns).err().unwrap();
        assert!(err.contains("no connection named 'postgres'"), "{err}");
    }
}

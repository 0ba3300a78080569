//! The command catalogue: every host command with its synopsis, description, whether it changes
//! state, its flags and an example. `list commands`, `help` and the `host_list_commands` tool all
//! serve this table, and the docs test checks each entry is documented.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct CommandSpec {
    /// How the command is written, e.g. `list connections`.
    pub name: &'static str,
    #[serde(skip)]
    pub verb: &'static str,
    /// The singular noun the parser resolves to (`connection`), empty for noun-less commands.
    #[serde(skip)]
    pub noun: &'static str,
    pub synopsis: &'static str,
    pub description: &'static str,
    /// Whether it changes state (agentic).
    pub mutating: bool,
    pub group: &'static str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub flags: &'static [&'static str],
    pub example: &'static str,
}

#[allow(clippy::too_many_arguments)] // a table row: positional reads best here
const fn cmd(
    name: &'static str,
    verb: &'static str,
    noun: &'static str,
    group: &'static str,
    mutating: bool,
    synopsis: &'static str,
    description: &'static str,
    example: &'static str,
) -> CommandSpec {
    CommandSpec {
        name,
        verb,
        noun,
        synopsis,
        description,
        mutating,
        group,
        flags: &[],
        example,
    }
}

const fn with_flags(mut c: CommandSpec, flags: &'static [&'static str]) -> CommandSpec {
    c.flags = flags;
    c
}

pub static COMMANDS: &[CommandSpec] = &[
    // general
    cmd(
        "help",
        "help",
        "",
        "general",
        false,
        "help [COMMAND]",
        "Shows the command groups, or one command's synopsis, description and example.",
        "help create flow",
    ),
    cmd(
        "list commands",
        "list",
        "command",
        "general",
        false,
        "list commands [where FIELD OP VALUE]",
        "Lists every command with its synopsis, description and whether it changes state.",
        "list commands where mutating = true",
    ),
    cmd(
        "whoami",
        "whoami",
        "",
        "general",
        false,
        "whoami",
        "Shows the tenant and role the statements run as.",
        "whoami",
    ),
    cmd(
        "version",
        "version",
        "",
        "general",
        false,
        "version",
        "Shows the engine version and the connector types it offers.",
        "version",
    ),
    // connections
    cmd(
        "list connections",
        "list",
        "connection",
        "connections",
        false,
        "list connections [where FIELD OP VALUE]",
        "Lists connections with their type and main properties; secrets show as ***.",
        "list connections where type = 'postgres'",
    ),
    cmd(
        "get connection",
        "get",
        "connection",
        "connections",
        false,
        "get connection NAME",
        "Shows one connection's properties (secrets as ***), description and dates.",
        "get connection warehouse",
    ),
    cmd(
        "create connection",
        "create",
        "connection",
        "connections",
        true,
        "create connection NAME type=TYPE [PROPERTY=VALUE ...] [description='...']",
        "Creates a connection. Properties depend on the type: see 'list connection-types TYPE'. Secret properties are encrypted at rest.",
        "create connection crm type=http url=https://api.example.com auth=bearer token=abc123",
    ),
    cmd(
        "update connection",
        "update",
        "connection",
        "connections",
        true,
        "update connection NAME [PROPERTY=VALUE ...] [unset=PROP,PROP] [description='...']",
        "Changes, adds or removes connection properties; the result is validated like a new connection.",
        "update connection crm token=new-token",
    ),
    cmd(
        "delete connection",
        "delete",
        "connection",
        "connections",
        true,
        "delete connection NAME",
        "Deletes a connection that no flow uses.",
        "delete connection crm",
    ),
    cmd(
        "test connection",
        "test",
        "connection",
        "connections",
        false,
        "test connection NAME",
        "Really connects (and authenticates) and reports what it reached, or why it could not.",
        "test connection crm",
    ),
    cmd(
        "list connection-types",
        "list",
        "connection-type",
        "connections",
        false,
        "list connection-types [TYPE]",
        "Lists the connector types, or one type's connection properties, source options and destination options.",
        "list connection-types postgres",
    ),
    cmd(
        "list objects",
        "list",
        "object",
        "connections",
        false,
        "list objects CONNECTION",
        "Lists the tables, views or files a connection offers.",
        "list objects warehouse",
    ),
    cmd(
        "preview",
        "preview",
        "",
        "connections",
        false,
        "preview CONNECTION OBJECT [limit=N] [OPTION=VALUE ...]",
        "Reads the first rows of a table, file or API path exactly as a flow would (default 10 rows).",
        "preview crm /users records_path=data limit=5",
    ),
    cmd(
        "query",
        "query",
        "",
        "connections",
        false,
        "query CONNECTION sql='...' [limit=N]",
        "Runs SQL on a database connection and shows up to N rows (default 100).",
        "query warehouse sql='select count(*) as n from orders'",
    ),
    // flows
    cmd(
        "list flows",
        "list",
        "flow",
        "flows",
        false,
        "list flows [where FIELD OP VALUE]",
        "Lists flows with their source, destination, mode and schedule.",
        "list flows where destination = 'warehouse'",
    ),
    cmd(
        "get flow",
        "get",
        "flow",
        "flows",
        false,
        "get flow NAME",
        "Shows one flow's definition.",
        "get flow orders",
    ),
    cmd(
        "describe flow",
        "describe",
        "flow",
        "flows",
        false,
        "describe flow NAME",
        "Shows a flow with its connections, schedule, high-water mark and recent runs.",
        "describe flow orders",
    ),
    cmd(
        "create flow",
        "create",
        "flow",
        "flows",
        true,
        "create flow NAME source=CONNECTION object=OBJECT destination=CONNECTION target=OBJECT [mode=append|replace|merge] [keys=COL,...] [incremental=COLUMN] [filter='EXPR'] [rename=OLD:NEW,...] [exclude=COL,...] [constant=COL:VALUE,...] [cast=COL:TYPE,...] [batch_size=N] [create=true|false] [source.OPTION=VALUE ...] [destination.OPTION=VALUE ...] [description='...']",
        "Creates a flow that moves data from a source object to a destination, with an optional mapping and filter.",
        "create flow orders source=shop object=/orders source.records_path=data destination=warehouse target=orders mode=merge keys=id",
    ),
    cmd(
        "update flow",
        "update",
        "flow",
        "flows",
        true,
        "update flow NAME [any create flow option ...]",
        "Changes a flow; options not given keep their values; an empty value (filter='') clears an option.",
        "update flow orders mode=replace",
    ),
    cmd(
        "delete flow",
        "delete",
        "flow",
        "flows",
        true,
        "delete flow NAME",
        "Deletes a flow with its schedule, runs and logs.",
        "delete flow orders",
    ),
    // runs
    with_flags(
        cmd(
            "run flow",
            "run",
            "flow",
            "runs",
            true,
            "run flow NAME [--wait] [timeout=DURATION]",
            "Starts a run. With --wait, waits for it (up to timeout, default 10m) and shows the outcome and row counts.",
            "run flow orders --wait",
        ),
        &["wait"],
    ),
    cmd(
        "stop flow",
        "stop",
        "flow",
        "runs",
        true,
        "stop flow NAME",
        "Stops the flow's run in progress at the next batch boundary.",
        "stop flow orders",
    ),
    cmd(
        "status flow",
        "status",
        "flow",
        "runs",
        false,
        "status flow NAME",
        "Shows whether the flow is running and its latest run's outcome.",
        "status flow orders",
    ),
    cmd(
        "logs flow",
        "logs",
        "flow",
        "runs",
        false,
        "logs flow NAME [tail=N] [run=RUN_ID]",
        "Shows the log of the flow's latest run (or a given run), last N lines (default 50).",
        "logs flow orders tail=20",
    ),
    cmd(
        "list runs",
        "list",
        "run",
        "runs",
        false,
        "list runs [flow=NAME] [limit=N] [where FIELD OP VALUE]",
        "Lists runs, newest first (default 20).",
        "list runs flow=orders where status = 'error'",
    ),
    cmd(
        "get run",
        "get",
        "run",
        "runs",
        false,
        "get run RUN_ID",
        "Shows one run: status, trigger, row counts, timings and error.",
        "get run 0193c1f2a7b87d3e9f5b2a0c4d6e8f10",
    ),
    // schedules
    cmd(
        "schedule flow",
        "schedule",
        "flow",
        "schedules",
        true,
        "schedule flow NAME (every=DURATION | cron='EXPR' [timezone=ZONE]) [retries=N] [retry_delay=DURATION]",
        "Runs a flow on a schedule: an interval (every=15m, every=1h) or a cron expression with optional seconds, in a time zone (default UTC). Replaces an existing schedule.",
        "schedule flow orders cron='0 2 * * *' timezone=Europe/Berlin retries=2",
    ),
    cmd(
        "list schedules",
        "list",
        "schedule",
        "schedules",
        false,
        "list schedules [where FIELD OP VALUE]",
        "Lists schedules with their trigger, next and last firing.",
        "list schedules where enabled = true",
    ),
    cmd(
        "enable schedule",
        "enable",
        "schedule",
        "schedules",
        true,
        "enable schedule FLOW",
        "Turns a flow's schedule back on.",
        "enable schedule orders",
    ),
    cmd(
        "disable schedule",
        "disable",
        "schedule",
        "schedules",
        true,
        "disable schedule FLOW",
        "Pauses a flow's schedule without deleting it.",
        "disable schedule orders",
    ),
    cmd(
        "delete schedule",
        "delete",
        "schedule",
        "schedules",
        true,
        "delete schedule FLOW",
        "Removes a flow's schedule.",
        "delete schedule orders",
    ),
    // templates and knowledge base
    cmd(
        "search templates",
        "search",
        "template",
        "templates",
        false,
        "search templates QUERY",
        "Searches the flow-template gallery.",
        "search templates salesforce to postgres",
    ),
    cmd(
        "get template",
        "get",
        "template",
        "templates",
        false,
        "get template ID",
        "Shows a template's connections, flow and parameters.",
        "get template github-issues-to-postgres",
    ),
    cmd(
        "import template",
        "import",
        "template",
        "templates",
        true,
        "import template ID [name=NAME] [PARAMETER=VALUE ...]",
        "Creates a template's connections and flow.",
        "import template github-issues-to-postgres token=ghp_xxx",
    ),
    cmd(
        "search kb",
        "search",
        "kb",
        "knowledge base",
        false,
        "search kb QUERY [limit=N]",
        "Searches the knowledge base (the product documentation and documents you added).",
        "search kb merge mode keys",
    ),
];

/// Singular noun for what the user wrote (`connections` → `connection`).
pub fn normalize_noun(word: &str) -> String {
    let w = word.to_ascii_lowercase().replace('_', "-");
    match w.as_str() {
        "connections" | "conn" | "conns" => "connection".into(),
        "connection-types" | "connection-type" | "types" | "type" | "connectors" | "connector" => {
            "connection-type".into()
        }
        "flows" => "flow".into(),
        "runs" => "run".into(),
        "schedules" => "schedule".into(),
        "templates" => "template".into(),
        "commands" => "command".into(),
        "objects" | "tables" => "object".into(),
        "knowledge-base" | "docs" => "kb".into(),
        _ => w,
    }
}

pub fn find(verb: &str, noun: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.verb == verb && c.noun == noun)
}

/// Whether a verb is written without a noun.
pub fn is_nounless(verb: &str) -> bool {
    COMMANDS.iter().any(|c| c.verb == verb && c.noun.is_empty())
}

pub fn verbs() -> Vec<&'static str> {
    let mut v: Vec<_> = COMMANDS.iter().map(|c| c.verb).collect();
    v.dedup();
    v.sort_unstable();
    v.dedup();
    v
}

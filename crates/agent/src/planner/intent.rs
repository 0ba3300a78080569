//! What a request asks for: one of the planner's intents, with the names, URLs, paths, timings
//! and options found in its wording. Deterministic keyword rules, generous with phrasing.

use super::text::{
    find_domain, find_path, find_url, has_any, has_phrase, is_name, key_values, name_after,
    sanitize_name, tokens, words,
};

/// What the host language lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listing {
    Connections,
    Flows,
    Schedules,
    /// Runs, of one flow or all, only failed ones or all.
    Runs {
        flow: Option<String>,
        failed: bool,
    },
    ConnectorTypes,
    Commands,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Thing {
    Connection,
    Flow,
    Run,
}

/// When a schedule fires, as `schedule flow` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum When {
    Every(String),
    Cron {
        expr: String,
        timezone: Option<String>,
    },
}

impl When {
    pub fn options(&self) -> String {
        match self {
            When::Every(d) => format!("every={d}"),
            When::Cron { expr, timezone } => {
                let mut s = format!("cron='{expr}'");
                if let Some(tz) = timezone {
                    s.push_str(&format!(" timezone={tz}"));
                }
                s
            }
        }
    }
}

/// A connection to create: its type, properties and a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionDraft {
    pub kind: &'static str,
    pub name: String,
    /// The user chose the name; a collision is then an error to report, not a suffix to add.
    pub named: bool,
    pub props: Vec<(String, String)>,
}

/// A flow to create, as the request words it (names resolved later against the connections).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FlowDraft {
    /// Candidate words of the source side ("orders.csv", "files").
    pub source_words: Vec<String>,
    /// Candidate words of the destination side.
    pub destination_words: Vec<String>,
    /// A file path or URL named as the source (a connection is made for it).
    pub source_location: Option<String>,
    pub name: Option<String>,
    pub mode: Option<&'static str>,
    pub keys: Option<String>,
    pub incremental: Option<String>,
    /// "... and run it": run the flow right after creating it.
    pub run: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    Question {
        query: String,
        templates: bool,
    },
    List(Listing),
    Describe {
        thing: Thing,
        name: String,
    },
    CreateConnection(ConnectionDraft),
    CreateFlow(FlowDraft),
    Run {
        flow: Option<String>,
    },
    Schedule {
        when: When,
        flow: Option<String>,
    },
    FindTemplate {
        query: String,
    },
    ImportTemplate {
        template: Option<String>,
        name: Option<String>,
        parameters: Vec<(String, String)>,
    },
    Diagnose {
        flow: Option<String>,
    },
    /// "describe it", "show me that": the object the conversation last touched.
    DescribeIt,
    /// "thanks": nothing to do.
    Thanks,
    /// A direct command on one connection or flow: test, logs, stop, enable or disable a
    /// schedule, preview. `name` is `None` for "it".
    Command {
        /// The statement's verb and noun, e.g. `test connection`.
        command: &'static str,
        /// Whether the command takes a connection (otherwise a flow).
        on_connection: bool,
        name: Option<String>,
        /// What follows the name (`tail=50`, a preview's object).
        rest: String,
    },
    Help,
    /// A request none of the rules understands.
    Unknown,
    /// A schedule request without a time the planner could read.
    UnclearSchedule,
}

/// Systems the template gallery and connectors know, to tell whether a question names any.
const SAAS: &[&str] = &[
    "salesforce",
    "hubspot",
    "stripe",
    "shopify",
    "github",
    "gitlab",
    "jira",
    "zendesk",
    "intercom",
    "mailchimp",
    "pipedrive",
    "notion",
    "airtable",
    "typeform",
    "sfdc",
    "pokeapi",
    "open-meteo",
    "hacker",
];
const STORES: &[&str] = &[
    "postgres",
    "postgresql",
    "mysql",
    "mariadb",
    "sqlite",
    "csv",
    "json",
    "ndjson",
    "warehouse",
];

const QUESTION_STARTS: &[&str] = &[
    "how", "what", "what's", "whats", "why", "when", "where", "which", "can", "could", "does",
    "do", "is", "are", "should", "explain", "describe", "who", "will", "would",
];

/// Classifies the request.
pub fn classify(request: &str) -> Intent {
    let text = request.trim();
    let w = words(text);
    let t = tokens(text);
    if w.is_empty() {
        return Intent::Help;
    }
    let first = w[0].as_str();
    let lower = text.to_lowercase();

    if is_help(&w, &lower) {
        return Intent::Help;
    }
    if w.len() <= 4
        && (has_any(&w, &["thanks", "thank", "thx", "cheers"]) || has_phrase(&lower, "great job"))
    {
        return Intent::Thanks;
    }
    if let Some(intent) = diagnose(&w, &t, &lower) {
        return intent;
    }
    if let Some(intent) = command(&w, &t) {
        return intent;
    }
    let asks_about = [
        "how", "what", "what's", "whats", "why", "when", "where", "which", "does", "is", "are",
        "explain", "tell",
    ]
    .contains(&first);
    if has_any(&w, &["import"])
        && !asks_about
        && (has_any(&w, &["it", "that", "this", "template", "first", "one"])
            || t.iter().any(|x| looks_like_template_id(x)))
        && !has_any(&w, &["into"])
    {
        return Intent::ImportTemplate {
            template: t.iter().find(|x| looks_like_template_id(x)).cloned(),
            name: name_after(&t, &["as", "named", "called"], &["flow"]),
            parameters: key_values(&t),
        };
    }
    if ["describe", "show", "details"].contains(&first)
        && has_any(&w, &["it", "that", "this"])
        && w.len() <= 4
    {
        return Intent::DescribeIt;
    }
    let listing = listing(&w, &t, &lower);
    let question = QUESTION_STARTS.contains(&first)
        || has_phrase(&lower, "is it possible")
        || has_phrase(&lower, "i want to know");
    // "is there a template for X" looks for templates; "how do templates work" asks the docs.
    let wants_templates = has_any(&w, &["template", "templates"])
        && (!question
            || [
                "template for",
                "templates for",
                "is there a template",
                "any template",
                "which template",
                "what template",
                "templates do you",
                "templates are there",
            ]
            .iter()
            .any(|p| has_phrase(&lower, p)));
    if question && listing.is_none() && !wants_templates {
        return Intent::Question {
            query: question_query(text),
            templates: names_systems(&w),
        };
    }
    if wants_templates {
        return Intent::FindTemplate {
            query: template_query(&w),
        };
    }
    if is_schedule(&w, &lower) {
        return match when(&t, &w, &lower) {
            Some(when) => Intent::Schedule {
                when,
                // "schedule flow orders ...", "schedule the orders flow", "schedule orders ..."
                flow: flow_name(&t)
                    .or_else(|| name_after(&t, &["schedule", "reschedule"], &[]))
                    .filter(|n| n.parse::<u32>().is_err() && !n.contains('*')),
            },
            None => Intent::UnclearSchedule,
        };
    }
    if has_any(
        &w,
        &["run", "rerun", "execute", "start", "trigger", "launch"],
    ) && !has_any(&w, &["runs", "load", "copy", "sync"])
        && matches!(
            first,
            "run"
                | "rerun"
                | "execute"
                | "start"
                | "trigger"
                | "launch"
                | "please"
                | "now"
                | "ok"
                | "okay"
                | "go"
                | "then"
                | "and"
        )
    {
        return Intent::Run {
            flow: flow_name(&t).or_else(|| bare_name(&t, 1)),
        };
    }
    if let Some(draft) = flow_draft(text, &w, &t) {
        return Intent::CreateFlow(draft);
    }
    if let Some(draft) = connection_draft(&w, &t) {
        return Intent::CreateConnection(draft);
    }
    if let Some(intent) = listing {
        return intent;
    }
    if text.ends_with('?') {
        return Intent::Question {
            query: question_query(text),
            templates: names_systems(&w),
        };
    }
    Intent::Unknown
}

/// "test connection crm", "test it", "show the logs of orders", "stop it", "pause the
/// schedule of orders", "preview inbox orders.csv".
fn command(w: &[String], t: &[String]) -> Option<Intent> {
    let first = w[0].as_str();
    let (command, on_connection) = match first {
        "test" | "check" | "ping"
            if !has_any(
                w,
                &[
                    "flow",
                    "flows",
                    "connections",
                    "runs",
                    "schedules",
                    "status",
                ],
            ) =>
        {
            ("test connection", true)
        }
        "stop" | "cancel" | "abort" => ("stop flow", false),
        "pause" | "disable" | "suspend" => ("disable schedule", false),
        "resume" | "enable" | "unpause" => ("enable schedule", false),
        "preview" | "sample" | "peek" => ("preview", true),
        _ if has_any(w, &["logs", "log"]) && !has_any(w, &["how", "what", "where"]) => {
            ("logs flow", false)
        }
        _ => return None,
    };
    let skip = [
        "connection",
        "connections",
        "flow",
        "schedule",
        "the",
        "logs",
        "log",
        "of",
        "for",
        "show",
        "me",
        "get",
        "see",
        "view",
        "latest",
        "last",
        "run",
        "test",
        "check",
        "ping",
        "stop",
        "cancel",
        "abort",
        "pause",
        "disable",
        "suspend",
        "resume",
        "enable",
        "unpause",
        "preview",
        "sample",
        "peek",
        "please",
        "again",
        "now",
        "whether",
        "if",
        "works",
        "working",
        "can",
        "you",
    ];
    let mut names = t.iter().filter(|x| {
        let l = x.to_lowercase();
        is_name(x) && !skip.contains(&l.as_str()) && !super::text::STOP.contains(&l.as_str())
    });
    let name = names.next().cloned();
    let rest = if command == "preview" {
        names.next().cloned().unwrap_or_default()
    } else {
        key_values(t)
            .into_iter()
            .filter(|(k, _)| k == "tail")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if command == "preview" && (name.is_none() || rest.is_empty()) {
        return None;
    }
    Some(Intent::Command {
        command,
        on_connection,
        name,
        rest,
    })
}

fn is_help(w: &[String], lower: &str) -> bool {
    (w.len() <= 3 && has_any(w, &["help", "hi", "hello", "hey"]))
        || has_phrase(lower, "what can you do")
        || has_phrase(lower, "what can i ask")
        || has_phrase(lower, "what do you do")
}

fn diagnose(w: &[String], t: &[String], lower: &str) -> Option<Intent> {
    let failure = has_any(
        w,
        &[
            "fail", "failed", "failing", "fails", "failure", "broken", "broke", "crashed", "error",
            "errors", "errored",
        ],
    ) || has_phrase(lower, "went wrong")
        || has_phrase(lower, "go wrong")
        || has_phrase(lower, "wrong with");
    let asks = has_any(
        w,
        &[
            "why",
            "what",
            "what's",
            "whats",
            "diagnose",
            "troubleshoot",
            "debug",
            "explain",
            "how",
        ],
    ) || has_phrase(lower, "how come");
    // A question word opening the request ("what happens when a run fails?") makes it a
    // diagnosis only when it points at one flow: by name, as "it", or "why did X fail".
    let opens_question = QUESTION_STARTS.contains(&w[0].as_str());
    let about_flow = flow_name(t).is_some()
        || has_any(w, &["it", "that", "this", "diagnose", "troubleshoot"])
        || has_phrase(lower, "my flow")
        || has_phrase(lower, "the flow")
        || has_phrase(lower, "went wrong")
        || has_phrase(lower, "wrong with")
        || (w[0] == "why" && w.get(1).is_some_and(|x| ["did", "has", "is"].contains(&x.as_str())))
        // "orders failed, why?": the request opens with the flow, not a question word.
        || !opens_question;
    let explicit = has_any(w, &["diagnose", "troubleshoot", "debug"]);
    if (failure && asks && about_flow) || explicit {
        let flow = flow_name(t).or_else(|| {
            // "diagnose orders", "why did orders fail"
            t.iter()
                .find(|x| {
                    is_name(x)
                        && !super::text::STOP.contains(&x.to_lowercase().as_str())
                        && ![
                            "diagnose",
                            "troubleshoot",
                            "flow",
                            "fail",
                            "failed",
                            "wrong",
                        ]
                        .contains(&x.to_lowercase().as_str())
                })
                .cloned()
        });
        return Some(Intent::Diagnose { flow });
    }
    None
}

fn listing(w: &[String], t: &[String], lower: &str) -> Option<Intent> {
    let first = w[0].as_str();
    let verb_start = [
        "list", "show", "display", "get", "view", "see", "print", "give", "describe", "check",
        "status", "any",
    ]
    .contains(&first)
        || lower.starts_with("let me see")
        || lower.starts_with("can you show")
        || lower.starts_with("can you list")
        || lower.starts_with("could you show")
        || lower.starts_with("could you list")
        || lower.starts_with("please list")
        || lower.starts_with("please show");
    let asks_inventory = has_phrase(lower, "do i have")
        || has_phrase(lower, "are there")
        || has_phrase(lower, "have i got")
        || has_phrase(lower, "exist")
        || has_phrase(lower, "are defined")
        || has_phrase(lower, "are scheduled")
        || has_phrase(lower, "how many")
        // "what's scheduled?", "which flows failed", "what connections": an inventory.
        || (["what", "what's", "whats", "which"].contains(&first)
            && has_any(
                w,
                &["connections", "flows", "schedules", "scheduled", "runs", "pipelines"],
            ))
        || w.iter().any(|x| x == "my") && w.len() <= 4;
    if !(verb_start || asks_inventory) {
        return None;
    }
    // Runs of one flow: "show runs for flow orders", "history of orders".
    if has_any(w, &["runs", "history", "executions"]) {
        return Some(Intent::List(Listing::Runs {
            flow: flow_name(t).or_else(|| {
                name_after(t, &["of", "for"], &["flow", "the"]).filter(|n| {
                    !["flow", "flows", "all", "every"].contains(&n.to_lowercase().as_str())
                })
            }),
            failed: has_any(w, &["failed", "failing", "error", "errors", "failures"]),
        }));
    }
    // One thing by name: "describe flow orders", "show connection crm", "show run 01ab...".
    for (thing, markers) in [
        (Thing::Flow, &["flow"][..]),
        (Thing::Connection, &["connection", "conn"][..]),
        (Thing::Run, &["run"][..]),
    ] {
        if let Some(name) = name_after(t, markers, &["named", "called"]) {
            return Some(Intent::Describe { thing, name });
        }
    }
    if first == "describe"
        && let Some(name) = bare_name(t, 1)
    {
        return Some(Intent::Describe {
            thing: Thing::Flow,
            name,
        });
    }
    let listing = if has_any(w, &["schedule", "schedules", "scheduled"]) {
        Listing::Schedules
    } else if has_any(w, &["run", "runs", "history", "executions"]) {
        Listing::Runs {
            flow: name_after(t, &["of", "for"], &["flow", "the"]).filter(|n| {
                !["flow", "flows", "all", "every"].contains(&n.to_lowercase().as_str())
            }),
            failed: has_any(w, &["failed", "failing", "error", "errors", "failures"]),
        }
    } else if has_any(w, &["flows", "flow", "pipelines", "pipeline", "jobs"]) {
        Listing::Flows
    } else if has_any(w, &["types", "connectors", "connector"]) {
        Listing::ConnectorTypes
    } else if has_any(
        w,
        &[
            "connections",
            "connection",
            "conns",
            "sources",
            "destinations",
        ],
    ) {
        Listing::Connections
    } else if has_any(w, &["commands", "command"]) {
        Listing::Commands
    } else {
        return None;
    };
    Some(Intent::List(listing))
}

fn is_schedule(w: &[String], lower: &str) -> bool {
    has_any(
        w,
        &[
            "schedule",
            "reschedule",
            "hourly",
            "daily",
            "nightly",
            "weekly",
            "cron",
        ],
    ) || (has_any(w, &["every", "each"]) && !has_any(w, &["how", "what"]))
        || has_phrase(lower, "at midnight")
        || cron_in(&tokens(lower)).is_some()
}

/// Reads the timing: a cron line, "every 15 minutes", "hourly", "daily at 2am", "every monday
/// at 9:30", "weekdays at 6pm", with an optional IANA time zone.
pub fn when(t: &[String], w: &[String], lower: &str) -> Option<When> {
    let timezone = t
        .iter()
        .find(|x| {
            x.contains('/')
                && x.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
        })
        .cloned()
        .or_else(|| has_any(w, &["utc"]).then(|| "UTC".to_string()));
    if let Some(expr) = cron_in(t) {
        return Some(When::Cron { expr, timezone });
    }
    // "every 15 minutes", "every 2h", "every 30 seconds"
    for (i, x) in w.iter().enumerate() {
        if x != "every" && x != "each" {
            continue;
        }
        let next = w.get(i + 1).map(String::as_str).unwrap_or_default();
        let (count, unit) = if let Ok(n) = next.parse::<u32>() {
            (
                n,
                w.get(i + 2)
                    .map(String::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        } else if let Some(split) = next.find(|c: char| !c.is_ascii_digit()).filter(|&p| p > 0) {
            let (n, u) = next.split_at(split);
            (n.parse().unwrap_or(1), u.to_string())
        } else {
            (1, next.to_string())
        };
        let unit = match unit.as_str() {
            "second" | "seconds" | "sec" | "secs" | "s" => Some("s"),
            "minute" | "minutes" | "min" | "mins" | "m" => Some("m"),
            "hour" | "hours" | "hr" | "hrs" | "h" => Some("h"),
            _ => None,
        };
        if let Some(u) = unit {
            return Some(When::Every(format!("{}{u}", count.max(1))));
        }
    }
    if has_any(w, &["hourly"]) {
        return Some(When::Every("1h".into()));
    }
    // Clock times keep their ':' only in the tokens ("14:30").
    let clock: Vec<String> = t.iter().map(|x| x.to_lowercase()).collect();
    let (minute, hour) = time_of_day(&clock).unwrap_or((0, 0));
    let days = if has_any(w, &["weekday", "weekdays"]) || has_phrase(lower, "monday to friday") {
        Some("1-5".to_string())
    } else {
        let names = [
            ("sunday", 0),
            ("monday", 1),
            ("tuesday", 2),
            ("wednesday", 3),
            ("thursday", 4),
            ("friday", 5),
            ("saturday", 6),
        ];
        let picked: Vec<String> = names
            .iter()
            .filter(|(n, _)| w.iter().any(|x| x == n || x == &format!("{n}s")))
            .map(|(_, d)| d.to_string())
            .collect();
        (!picked.is_empty()).then(|| picked.join(","))
    };
    let daily = has_any(
        w,
        &[
            "daily", "nightly", "day", "night", "midnight", "morning", "evening",
        ],
    ) || time_of_day(&clock).is_some();
    let weekly = has_any(w, &["weekly", "week"]);
    if let Some(days) = days {
        return Some(When::Cron {
            expr: format!("{minute} {hour} * * {days}"),
            timezone,
        });
    }
    if weekly {
        return Some(When::Cron {
            expr: format!("{minute} {hour} * * 1"),
            timezone,
        });
    }
    if daily {
        return Some(When::Cron {
            expr: format!("{minute} {hour} * * *"),
            timezone,
        });
    }
    None
}

/// "at 2am", "at 14:30", "at 6 pm", "midnight", "noon" → (minute, hour).
fn time_of_day(w: &[String]) -> Option<(u32, u32)> {
    if has_any(w, &["midnight"]) {
        return Some((0, 0));
    }
    if has_any(w, &["noon", "midday"]) {
        return Some((0, 12));
    }
    let i = w.iter().position(|x| x == "at")?;
    let raw = w.get(i + 1)?;
    let (mut clock, mut suffix) = (raw.as_str(), "");
    for s in ["am", "pm"] {
        if let Some(c) = raw.strip_suffix(s) {
            clock = c;
            suffix = s;
        }
    }
    if suffix.is_empty()
        && let Some(next) = w.get(i + 2)
        && (next == "am" || next == "pm")
    {
        suffix = if next == "am" { "am" } else { "pm" };
    }
    let (h, m) = match clock.split_once([':', '.', 'h']) {
        Some((h, m)) => (
            h.parse::<u32>().ok()?,
            if m.is_empty() {
                0
            } else {
                m.parse::<u32>().ok()?
            },
        ),
        None => (clock.parse::<u32>().ok()?, 0),
    };
    let hour = match suffix {
        "pm" if h < 12 => h + 12,
        "am" if h == 12 => 0,
        _ => h,
    };
    (hour < 24 && m < 60).then_some((m, hour))
}

/// Five or six consecutive cron fields ("0 2 * * *", "*/15 * * * *") in the tokens, or a
/// quoted cron expression.
fn cron_in(t: &[String]) -> Option<String> {
    let is_field = |x: &str| {
        !x.is_empty()
            && x.chars().all(|c| c.is_ascii_digit() || "*/,-?".contains(c))
            && (x.contains('*') || x.chars().any(|c| c.is_ascii_digit()))
    };
    let mut run: Vec<&str> = Vec::new();
    let mut best: Vec<&str> = Vec::new();
    for x in t.iter().map(String::as_str).chain(std::iter::once("")) {
        // `cron='0` and `*'` come from a quoted expression split at whitespace.
        let x = x.trim_start_matches("cron=").trim_matches('\'');
        if is_field(x) {
            run.push(x);
        } else {
            if run.len() > best.len() {
                best = run.clone();
            }
            run.clear();
        }
    }
    ((5..=6).contains(&best.len()) && best.iter().any(|f| f.contains('*'))).then(|| best.join(" "))
}

/// The flow a request names: "flow orders", "flow named orders", "the orders flow".
pub fn flow_name(t: &[String]) -> Option<String> {
    if let Some(n) = name_after(t, &["flow"], &["named", "called"]) {
        return Some(n);
    }
    t.iter()
        .position(|x| x.eq_ignore_ascii_case("flow"))
        .filter(|&i| i > 0)
        .and_then(|i| t.get(i - 1))
        .filter(|x| is_name(x) && !super::text::STOP.contains(&x.to_lowercase().as_str()))
        .cloned()
}

/// A name-looking token from position `from` that is not a stop word ("run orders").
fn bare_name(t: &[String], from: usize) -> Option<String> {
    t.iter()
        .skip(from)
        .find(|x| {
            is_name(x)
                && !super::text::STOP.contains(&x.to_lowercase().as_str())
                && !["flow", "wait", "--wait", "please", "now", "again"]
                    .contains(&x.to_lowercase().as_str())
        })
        .cloned()
}

fn looks_like_template_id(x: &str) -> bool {
    x.matches('-').count() >= 2
        && x.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !x.starts_with('-')
}

fn names_systems(w: &[String]) -> bool {
    let saas = w.iter().any(|x| SAAS.contains(&x.as_str()));
    let stores = w.iter().filter(|x| STORES.contains(&x.as_str())).count();
    saas || stores >= 2 && has_any(w, &["to", "into", "from"])
}

/// The question without its filler, as knowledge-base search terms.
fn question_query(text: &str) -> String {
    text.trim().trim_end_matches(['?', '.', '!']).to_string()
}

/// "find a template for salesforce to postgres" → "salesforce to postgres".
fn template_query(w: &[String]) -> String {
    const FILLER: &[&str] = &[
        "find",
        "search",
        "look",
        "looking",
        "for",
        "a",
        "an",
        "the",
        "template",
        "templates",
        "me",
        "please",
        "is",
        "are",
        "there",
        "any",
        "show",
        "list",
        "do",
        "you",
        "have",
        "i",
        "need",
        "want",
        "get",
        "which",
        "what",
        "can",
        "with",
        "that",
        "some",
        "up",
    ];
    let q: Vec<&str> = w
        .iter()
        .map(String::as_str)
        .filter(|x| !FILLER.contains(x))
        .collect();
    if q.is_empty() {
        "data integration".to_string()
    } else {
        q.join(" ")
    }
}

/// "load/copy/sync X into Y" → a flow draft.
fn flow_draft(text: &str, w: &[String], t: &[String]) -> Option<FlowDraft> {
    const VERBS: &[&str] = &[
        "load",
        "copy",
        "sync",
        "move",
        "replicate",
        "transfer",
        "ingest",
        "export",
        "pull",
        "push",
        "send",
        "import",
        "mirror",
        "stream",
    ];
    let creates_flow = has_any(w, &["flow", "pipeline"])
        && has_any(
            w,
            &["create", "make", "add", "new", "build", "set", "setup"],
        );
    let verb_at = t
        .iter()
        .position(|x| VERBS.contains(&x.to_lowercase().as_str()));
    if verb_at.is_none() && !creates_flow {
        return None;
    }
    let start = verb_at.map(|i| i + 1).unwrap_or(0);
    let rest: Vec<&String> = t.iter().skip(start).collect();
    let split = rest
        .iter()
        .rposition(|x| x.eq_ignore_ascii_case("into"))
        .or_else(|| rest.iter().rposition(|x| x.eq_ignore_ascii_case("to")))?;
    let mut draft = FlowDraft {
        run: has_phrase(text, "and run") || has_phrase(text, "then run"),
        name: name_after(t, &["named", "called"], &["flow"]),
        ..FlowDraft::default()
    };
    const SKIP: &[&str] = &[
        "the",
        "a",
        "an",
        "all",
        "my",
        "our",
        "data",
        "table",
        "tables",
        "file",
        "from",
        "in",
        "of",
        "rows",
        "records",
        "api",
        "endpoint",
        "path",
        "connection",
        "flow",
        "pipeline",
        "create",
        "make",
        "add",
        "new",
        "build",
        "set",
        "setup",
        "up",
        "please",
        "and",
        "run",
        "it",
        "then",
        "named",
        "called",
        "database",
        "db",
        "as",
        "with",
        "using",
        "mode",
        "merge",
        "replace",
        "append",
        "on",
        "by",
        "keys",
        "key",
        "incremental",
        "incrementally",
        "upsert",
        "overwrite",
        "every",
        "time",
        "that",
        "this",
    ];
    let keep = |x: &&String| {
        let l = x.to_lowercase();
        !SKIP.contains(&l.as_str()) && !x.contains('=')
    };
    let source: Vec<String> = rest[..split]
        .iter()
        .copied()
        .filter(keep)
        .cloned()
        .collect();
    // The destination side ends at the first option word ("... into warehouse with merge on id").
    let dest_end = rest[split + 1..]
        .iter()
        .position(|x| {
            [
                "with",
                "using",
                "mode",
                "merge",
                "replace",
                "append",
                "and",
                "named",
                "called",
                "incremental",
                "incrementally",
                "upsert",
                "keys",
                "every",
            ]
            .contains(&x.to_lowercase().as_str())
        })
        .map(|p| split + 1 + p)
        .unwrap_or(rest.len());
    let destination: Vec<String> = rest[split + 1..dest_end]
        .iter()
        .copied()
        .filter(keep)
        .cloned()
        .collect();
    draft.source_location = source
        .iter()
        .find(|x| x.contains("://") || x.starts_with('/') || x.starts_with("~/"))
        .cloned();
    draft.source_words = source;
    draft.destination_words = destination;
    if has_any(w, &["merge", "upsert"]) {
        draft.mode = Some("merge");
        draft.keys = name_after(
            t,
            &["on", "by", "keys", "key"],
            &["key", "keys", "column", "columns"],
        )
        .or_else(|| Some("id".to_string()));
    } else if has_any(
        w,
        &["replace", "overwrite", "overwriting", "replacing", "full"],
    ) {
        draft.mode = Some("replace");
    }
    if has_any(w, &["incremental", "incrementally"]) {
        draft.incremental = name_after(
            t,
            &["on", "by", "using", "incremental", "incrementally"],
            &["column", "the", "on", "by", "using"],
        )
        .filter(|c| c != "merge");
    }
    for (k, v) in key_values(t) {
        match k.as_str() {
            "keys" => draft.keys = Some(v),
            "incremental" => draft.incremental = Some(v),
            "mode" if ["append", "replace", "merge"].contains(&v.as_str()) => {
                draft.mode = ["append", "replace", "merge"].into_iter().find(|m| *m == v);
            }
            _ => {}
        }
    }
    Some(draft)
}

/// "create a connection to api.example.com", "connect to postgres://...", "add /data/inbox".
fn connection_draft(w: &[String], t: &[String]) -> Option<ConnectionDraft> {
    let asks = has_any(
        w,
        &[
            "create", "add", "new", "connect", "register", "setup", "set", "make", "define",
        ],
    ) || has_any(w, &["connection"]);
    if !asks {
        return None;
    }
    let named = name_after(t, &["named", "called", "name"], &["it"]);
    let mut draft = if let Some(url) = find_url(t) {
        url_draft(&url)?
    } else if let Some(path) = find_path(t) {
        path_draft(&path)
    } else if let Some(domain) = find_domain(t) {
        url_draft(&format!("https://{domain}"))?
    } else {
        return None;
    };
    for (k, v) in key_values(t) {
        if k != "name" && k != "type" && !draft.props.iter().any(|(p, _)| *p == k) {
            draft.props.push((k, v));
        }
    }
    if let Some(name) = named.or_else(|| {
        key_values(t)
            .into_iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v)
    }) {
        draft.name = name;
        draft.named = true;
    }
    Some(draft)
}

/// A connection from a URL: `postgres://`, `mysql://`, `sqlite://`, `file://` or an http(s) API.
pub fn url_draft(url: &str) -> Option<ConnectionDraft> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_lowercase();
    match scheme.as_str() {
        "postgres" | "postgresql" | "mysql" | "mariadb" => {
            let kind = if scheme.starts_with("postgres") {
                "postgres"
            } else {
                "mysql"
            };
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let (userinfo, hostport) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, authority),
            };
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
                    (h, Some(p))
                }
                _ => (hostport, None),
            };
            let database = path.split('?').next().unwrap_or_default();
            let mut props = Vec::new();
            if !host.is_empty() {
                props.push(("host".to_string(), host.to_string()));
            }
            if let Some(p) = port {
                props.push(("port".to_string(), p.to_string()));
            }
            if !database.is_empty() {
                props.push(("database".to_string(), database.to_string()));
            }
            if let Some(u) = userinfo {
                let (user, password) = match u.split_once(':') {
                    Some((user, pw)) => (user, Some(pw)),
                    None => (u, None),
                };
                if !user.is_empty() {
                    props.push(("user".to_string(), user.to_string()));
                }
                if let Some(pw) = password.filter(|p| !p.is_empty()) {
                    props.push(("password".to_string(), pw.to_string()));
                }
            }
            let base = if database.is_empty() {
                host_label(host)
            } else {
                sanitize_name(database)
            };
            Some(ConnectionDraft {
                kind,
                name: or_default(base, kind),
                named: false,
                props,
            })
        }
        "sqlite" => {
            let path = rest.trim_start_matches("//");
            let path = if path.starts_with('/') {
                path.to_string()
            } else {
                format!("/{path}")
            };
            Some(ConnectionDraft {
                kind: "sqlite",
                name: or_default(sanitize_name(&stem_of(&path)), "sqlite"),
                named: false,
                props: vec![("path".to_string(), path)],
            })
        }
        "file" => Some(path_draft(rest)),
        "http" | "https" => {
            let host = rest.split(['/', '?']).next().unwrap_or_default();
            let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
            let host = host.split(':').next().unwrap_or(host);
            let url = url.trim_end_matches('/').to_string();
            Some(ConnectionDraft {
                kind: "http",
                name: or_default(host_label(host), "api"),
                named: false,
                props: vec![("url".to_string(), url)],
            })
        }
        _ => None,
    }
}

/// A connection from a local path: a database file is `sqlite`, anything else a `file` folder
/// (a file's folder when the path names a data file).
pub fn path_draft(path: &str) -> ConnectionDraft {
    let lower = path.to_lowercase();
    if [".db", ".sqlite", ".sqlite3"]
        .iter()
        .any(|e| lower.ends_with(e))
    {
        return ConnectionDraft {
            kind: "sqlite",
            name: or_default(sanitize_name(&stem_of(path)), "sqlite"),
            named: false,
            props: vec![("path".to_string(), path.to_string())],
        };
    }
    let directory = if looks_like_file(path) {
        parent_of(path)
    } else {
        path.trim_end_matches('/').to_string()
    };
    let directory = if directory.is_empty() {
        "/".to_string()
    } else {
        directory
    };
    let folder = directory
        .rsplit('/')
        .find(|p| !p.is_empty())
        .unwrap_or("files");
    ConnectionDraft {
        kind: "file",
        name: or_default(sanitize_name(folder), "files"),
        named: false,
        props: vec![("directory".to_string(), directory)],
    }
}

/// Whether the last part of a path has a data-file extension.
pub fn looks_like_file(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or_default();
    last.contains('*')
        || last.rsplit_once('.').is_some_and(|(stem, ext)| {
            !stem.is_empty() && ext.len() <= 7 && ext.chars().all(|c| c.is_ascii_alphanumeric())
        })
}

pub fn parent_of(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) => "/".to_string(),
        Some((dir, _)) => dir.to_string(),
        None => ".".to_string(),
    }
}

fn stem_of(path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or(path);
    last.split('.').next().unwrap_or(last).to_string()
}

/// `api.example.com` → `example`; `db.internal` → `db`; `localhost` → `localhost`.
fn host_label(host: &str) -> String {
    let labels: Vec<&str> = host.split('.').filter(|l| !l.is_empty()).collect();
    if labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit())) {
        return String::new();
    }
    let meaningful: Vec<&str> = if labels.len() >= 2 {
        labels[..labels.len() - 1]
            .iter()
            .copied()
            .filter(|l| !["api", "www", "rest", "app", "apis"].contains(l))
            .collect()
    } else {
        labels.clone()
    };
    let pick = meaningful
        .last()
        .or(labels.first())
        .copied()
        .unwrap_or_default();
    sanitize_name(pick)
}

fn or_default(name: String, fallback: &str) -> String {
    if name.is_empty() {
        fallback.to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop<'a>(d: &'a ConnectionDraft, k: &str) -> Option<&'a str> {
        d.props
            .iter()
            .find(|(p, _)| p == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn urls_become_typed_connections() {
        let d = url_draft("postgres://etl:secret@db.local:5433/shop?sslmode=disable").unwrap();
        assert_eq!((d.kind, d.name.as_str()), ("postgres", "shop"));
        assert_eq!(prop(&d, "host"), Some("db.local"));
        assert_eq!(prop(&d, "port"), Some("5433"));
        assert_eq!(prop(&d, "user"), Some("etl"));
        assert_eq!(prop(&d, "password"), Some("secret"));
        let d = url_draft("https://api.example.com/v1/").unwrap();
        assert_eq!((d.kind, d.name.as_str()), ("http", "example"));
        assert_eq!(prop(&d, "url"), Some("https://api.example.com/v1"));
        let d = path_draft("/data/inbox/orders.csv");
        assert_eq!((d.kind, d.name.as_str()), ("file", "inbox"));
        assert_eq!(prop(&d, "directory"), Some("/data/inbox"));
    }

    #[test]
    fn timings_in_ordinary_words() {
        let cases = [
            ("schedule it every hour", When::Every("1h".into())),
            ("every 15 minutes", When::Every("15m".into())),
            ("run it every 30s", When::Every("30s".into())),
            ("hourly please", When::Every("1h".into())),
            (
                "daily at 2am",
                When::Cron {
                    expr: "0 2 * * *".into(),
                    timezone: None,
                },
            ),
            (
                "every day at 14:30",
                When::Cron {
                    expr: "30 14 * * *".into(),
                    timezone: None,
                },
            ),
            (
                "weekdays at 6 pm",
                When::Cron {
                    expr: "0 18 * * 1-5".into(),
                    timezone: None,
                },
            ),
            (
                "schedule it 0 3 * * 1",
                When::Cron {
                    expr: "0 3 * * 1".into(),
                    timezone: None,
                },
            ),
            (
                "nightly at midnight Europe/Berlin",
                When::Cron {
                    expr: "0 0 * * *".into(),
                    timezone: Some("Europe/Berlin".into()),
                },
            ),
        ];
        for (text, want) in cases {
            let t = tokens(text);
            let w = words(text);
            assert_eq!(when(&t, &w, &text.to_lowercase()), Some(want), "{text}");
        }
    }

    #[test]
    fn requests_find_their_intent() {
        assert!(matches!(
            classify("how do I schedule a flow?"),
            Intent::Question {
                templates: false,
                ..
            }
        ));
        assert!(matches!(
            classify("How can I load Salesforce into postgres"),
            Intent::Question {
                templates: true,
                ..
            }
        ));
        assert_eq!(
            classify("what connections do I have"),
            Intent::List(Listing::Connections)
        );
        assert_eq!(
            classify("show me the failed runs"),
            Intent::List(Listing::Runs {
                flow: None,
                failed: true
            })
        );
        assert_eq!(
            classify("describe flow orders"),
            Intent::Describe {
                thing: Thing::Flow,
                name: "orders".into()
            }
        );
        assert_eq!(classify("run it"), Intent::Run { flow: None });
        assert_eq!(
            classify("run flow orders"),
            Intent::Run {
                flow: Some("orders".into())
            }
        );
        assert_eq!(
            classify("why did flow orders fail?"),
            Intent::Diagnose {
                flow: Some("orders".into())
            }
        );
        assert_eq!(classify("what went wrong"), Intent::Diagnose { flow: None });
        assert_eq!(
            classify("find a template for salesforce to postgres"),
            Intent::FindTemplate {
                query: "salesforce to postgres".into()
            }
        );
        assert!(matches!(
            classify("import it"),
            Intent::ImportTemplate { template: None, .. }
        ));
        assert!(matches!(
            classify("create a connection to api.example.com"),
            Intent::CreateConnection(_)
        ));
        assert!(matches!(
            classify("load orders.csv from files into warehouse"),
            Intent::CreateFlow(_)
        ));
        assert_eq!(classify("write me a poem"), Intent::Unknown);
        match classify("load orders.csv from inbox into warehouse incrementally by updated_at") {
            Intent::CreateFlow(d) => {
                assert_eq!(d.incremental.as_deref(), Some("updated_at"));
                assert_eq!(d.source_words, ["orders.csv", "inbox"]);
                assert_eq!(d.destination_words, ["warehouse"]);
            }
            other => panic!("{other:?}"),
        }
        match classify("sync shop.orders into warehouse.orders with merge on order_id") {
            Intent::CreateFlow(d) => {
                assert_eq!(
                    (d.mode, d.keys.as_deref()),
                    (Some("merge"), Some("order_id"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(classify("tell me a joke"), Intent::Unknown);
        assert!(matches!(
            classify("What happens when a run fails in replace mode?"),
            Intent::Question { .. }
        ));
        assert_eq!(
            classify("why did orders fail"),
            Intent::Diagnose {
                flow: Some("orders".into())
            }
        );
        assert_eq!(classify("thanks!"), Intent::Thanks);
        assert_eq!(
            classify("orders failed, why?"),
            Intent::Diagnose {
                flow: Some("orders".into())
            }
        );
        assert_eq!(
            classify("what's wrong with orders"),
            Intent::Diagnose {
                flow: Some("orders".into())
            }
        );
        assert_eq!(
            classify("debug flow orders"),
            Intent::Diagnose {
                flow: Some("orders".into())
            }
        );
        assert_eq!(
            classify("what's scheduled?"),
            Intent::List(Listing::Schedules)
        );
        assert_eq!(
            classify("show runs for flow orders"),
            Intent::List(Listing::Runs {
                flow: Some("orders".into()),
                failed: false
            })
        );
        assert!(matches!(
            classify("How do I connect to a REST API with a bearer token?"),
            Intent::Question {
                templates: false,
                ..
            }
        ));
        assert!(matches!(
            classify("schedule orders every 2 hours"),
            Intent::Schedule { flow: Some(f), .. } if f == "orders"
        ));
    }
}

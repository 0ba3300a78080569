//! The planner's answers: short readable text written from the tool results (never a dump of
//! them), citing the knowledge-base passages an answer comes from.

use serde_json::Value as Json;

use super::context::{Conversation, Step};
use super::intent::{ConnectionDraft, Listing, Thing};
use super::text::{sentences, stem, words};

/// How many sentences an answer from a passage quotes at most.
const KEY_SENTENCES: usize = 3;
/// How many list items an answer names before summarising the rest.
const LIST_ITEMS: usize = 10;

fn s<'a>(v: &'a Json, key: &str) -> &'a str {
    v.get(key).and_then(Json::as_str).unwrap_or_default()
}

fn n(v: &Json, key: &str) -> i64 {
    v.get(key).and_then(Json::as_i64).unwrap_or(0)
}

/// The capabilities, for "help" and for requests the planner does not understand.
const CAN_DO: &str = "- answer questions about the product from its documentation (\"how do I load a CSV file into PostgreSQL?\")\n\
- list or describe connections, flows, schedules and runs (\"list my flows\", \"describe flow orders\")\n\
- create a connection from a URL, database URL or folder (\"create a connection to api.example.com\", \"connect to postgres://etl@db.local/shop\", \"add the folder /data/inbox\")\n\
- create a flow (\"load orders.csv from files into warehouse\") and run it (\"run it\")\n\
- schedule a flow (\"schedule it every hour\", \"daily at 2am\", \"every 15 minutes\", or a cron line)\n\
- find and import flow templates (\"find a template for salesforce to postgres\", then \"import it\")\n\
- explain why a flow failed (\"why did flow orders fail?\")";

pub fn help() -> String {
    format!(
        "I'm the built-in planner: I turn common requests into actions on this server, without a language model. I can:\n{CAN_DO}"
    )
}

pub fn cannot(request: &str) -> String {
    let shown: String = request.chars().take(80).collect();
    let ellipsis = if request.chars().count() > 80 {
        "…"
    } else {
        ""
    };
    format!(
        "I can't do that: I'm the built-in planner, which follows rules for common requests rather than understanding free-form text, and \"{shown}{ellipsis}\" is not one of them. Free-form requests need a real LLM: the operator can start the server with `--llm openai` (any OpenAI-compatible server: OpenAI, Azure OpenAI, Ollama, vLLM, ...) or `--llm anthropic`, as docs/llm-providers.md explains. What I can do:\n{CAN_DO}"
    )
}

pub fn unclear_schedule() -> String {
    "I could not read when to run it. Say it like \"every 15 minutes\", \"every hour\", \"daily at 2am\", \"weekdays at 6pm\", or give a cron line such as 0 2 * * * (add a time zone like Europe/Berlin if you need one).".to_string()
}

/// When a plan ran out of steps: what the last tool said.
pub fn cut_off(conv: &Conversation<'_>) -> String {
    let last = conv.steps.last().map(|s| s.text()).unwrap_or_default();
    format!(
        "I stopped after {} tool calls without finishing; this is what the last one answered:\n{last}",
        conv.steps.len()
    )
}

/// A tool call that failed where the plan needed it to succeed: its own message.
pub fn failed_step(step: &Step<'_>) -> String {
    let statements = step.statements();
    match statements.iter().find(|s| !s.ok) {
        Some(failed) => format!("'{}' failed: {}", failed.text, failed.error),
        None => format!("{} failed: {}", step.tool(), step.text()),
    }
}

/// The answer to a question: the best passage's numbered steps or key sentences, a pointer to
/// the next best passages, matching templates, and the sources.
pub fn from_passages(query: &str, kb: &Step<'_>, templates: Option<&Step<'_>>) -> String {
    let empty = Vec::new();
    let hits = kb
        .data()
        .get("results")
        .and_then(Json::as_array)
        .unwrap_or(&empty);
    if !kb.succeeded() {
        return format!("The knowledge-base search failed: {}", kb.text());
    }
    // A hit sharing no meaningful word with the question matched on filler only.
    let terms = query_terms(query);
    let hits: Vec<&Json> = hits.iter().filter(|h| relevant(h, &terms)).collect();
    let mut out = String::new();
    let mut sources = Vec::new();
    match hits.first() {
        None => out.push_str(&format!(
            "I found nothing in the documentation about \"{query}\". Try other words (the name of a command, connector or option), or ask \"what can you do\"."
        )),
        Some(_) => {
            let best = pick_passage(query, &hits).expect("there are hits");
            let title = s(best, "title");
            let body = passage_answer(query, s(best, "text"));
            out.push_str(&format!("From \"{title}\":\n{body}"));
            sources.push(s(best, "citation").to_string());
            let related: Vec<&Json> = hits
                .iter()
                .filter(|h| s(h, "citation") != s(best, "citation"))
                .take(2)
                .copied()
                .collect();
            if !related.is_empty() {
                out.push_str("\n\nSee also: ");
                out.push_str(
                    &related
                        .iter()
                        .map(|h| format!("\"{}\"", path_title(h)))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                out.push('.');
                sources.extend(related.iter().map(|h| s(h, "citation").to_string()));
            }
        }
    }
    if let Some(t) = templates
        && let Some(found) = t.data().get("results").and_then(Json::as_array)
        && !found.is_empty()
    {
        out.push_str("\n\nReady-made templates for this:");
        for tpl in found.iter().take(3) {
            out.push_str(&format!(
                "\n- {} ({}): {} → {}",
                s(tpl, "name"),
                s(tpl, "id"),
                s(tpl, "source_system"),
                s(tpl, "destination_system")
            ));
        }
        out.push_str(&format!(
            "\nSay \"import it\" to import {}.",
            s(&found[0], "id")
        ));
    }
    if !sources.is_empty() {
        out.push_str("\n\nSources:");
        for c in sources {
            out.push_str(&format!("\n- {c}"));
        }
    }
    out
}

fn path_title(hit: &Json) -> String {
    hit.get("path")
        .and_then(Json::as_array)
        .map(|p| {
            p.iter()
                .filter_map(Json::as_str)
                .collect::<Vec<_>>()
                .join(" > ")
        })
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| s(hit, "title").to_string())
}

/// A passage split into what an answer can quote: prose sentences, numbered steps (with their
/// continuation lines) and the first example block.
struct Parsed {
    sentences: Vec<String>,
    /// Table rows as "first cell: last cell" (reference tables of properties and errors).
    rows: Vec<String>,
    steps: Vec<String>,
    example: Option<Vec<String>>,
}

impl Parsed {
    fn of(text: &str) -> Parsed {
        let text = text.trim_start_matches('…').replace("**", "");
        let mut prose = Vec::new();
        let mut rows = Vec::new();
        let mut steps: Vec<String> = Vec::new();
        let mut example: Option<Vec<String>> = None;
        let mut in_code = false;
        let mut code: Vec<String> = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with("```") {
                if in_code && example.is_none() && !code.is_empty() {
                    example = Some(code.clone());
                }
                in_code = !in_code;
                code.clear();
                continue;
            }
            if in_code {
                code.push(line.to_string());
                continue;
            }
            if trimmed.starts_with('|') && !trimmed.starts_with("|-") && !trimmed.starts_with("|:")
            {
                let cells: Vec<&str> = trimmed
                    .trim_matches('|')
                    .split(" | ")
                    .map(str::trim)
                    .collect();
                if cells.len() >= 2 {
                    rows.push(format!("{}: {}", cells[0], cells[cells.len() - 1]));
                }
            }
            if trimmed.starts_with('|') || trimmed.starts_with('#') || trimmed.is_empty() {
                prose.push(String::new());
                continue;
            }
            let numbered = trimmed.split_once(". ").is_some_and(|(d, _)| {
                !d.is_empty() && d.len() <= 2 && d.chars().all(|c| c.is_ascii_digit())
            });
            if numbered {
                steps.push(trimmed.to_string());
            } else if !steps.is_empty() && line.starts_with("   ") {
                // A numbered step continued on the next, indented line.
                if let Some(last) = steps.last_mut() {
                    last.push(' ');
                    last.push_str(trimmed);
                }
            } else {
                prose.push(trimmed.to_string());
            }
        }
        let sentences = prose
            .split(String::is_empty)
            .map(|p| p.join(" "))
            .filter(|p| !p.is_empty())
            .flat_map(|p| sentences(&p))
            .collect();
        Parsed {
            sentences,
            rows,
            steps,
            example,
        }
    }

    fn has_steps(&self) -> bool {
        self.steps.len() >= 2
    }

    /// Sentences that say something (not the "Example:" lead-ins to code blocks).
    fn statements(&self) -> Vec<(usize, &String)> {
        self.sentences
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.ends_with(':') && s.split_whitespace().count() >= 4)
            .collect()
    }
}

/// Which of the top passages answers: for a how/what-happens question the first with numbered
/// steps, otherwise the first with some prose to quote (the search's best hit when none has).
fn pick_passage<'a>(query: &str, hits: &[&'a Json]) -> Option<&'a Json> {
    let top: Vec<(&Json, Parsed)> = hits
        .iter()
        .take(3)
        .map(|h| (*h, Parsed::of(s(h, "text"))))
        .collect();
    let q = query.to_lowercase();
    let procedural = [
        "how", "step", "happen", "process", "walk", "set up", "setup",
    ]
    .iter()
    .any(|w| q.contains(w));
    if procedural && let Some((h, _)) = top.iter().find(|(_, p)| p.has_steps()) {
        return Some(*h);
    }
    // Otherwise the passage whose title and best sentence share the most words with the
    // question (the title counts most: it names what the passage is about).
    let terms = query_terms(query);
    let score = |h: &Json, p: &Parsed| {
        // Scaled by the title's length, so a long error-message title matching by chance
        // does not beat a short title that is exactly the subject.
        let title_text = s(h, "title");
        let title_words = words(title_text).len().max(6);
        let title = matches(title_text, &terms) * 12 / title_words;
        let best = p
            .statements()
            .iter()
            .map(|(_, sentence)| matches(sentence, &terms))
            .chain(p.rows.iter().map(|r| matches(r, &terms)))
            .max()
            .unwrap_or(0);
        title + best
    };
    let mut best: Option<(&Json, usize)> = None;
    for (h, p) in &top {
        let sc = score(h, p);
        if best.is_none_or(|(_, b)| sc > b) {
            best = Some((*h, sc));
        }
    }
    best.map(|(h, _)| h).or_else(|| hits.first().copied())
}

/// A passage reduced to what answers the query: its numbered steps when it has some, otherwise
/// the sentences sharing the most words with the query (in the passage's order), plus the first
/// example block when the passage has one.
fn passage_answer(query: &str, text: &str) -> String {
    let parsed = Parsed::of(text);
    let mut out = String::new();
    if parsed.has_steps() {
        // The lead-in before the steps ("The import:") introduces them, colon and all.
        if let Some(intro) = parsed.sentences.first() {
            out.push_str(intro);
            out.push('\n');
        }
        out.push_str(
            &parsed
                .steps
                .iter()
                .take(12)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
        );
    } else {
        let terms = query_terms(query);
        let mut scored: Vec<(usize, usize)> = parsed
            .statements()
            .iter()
            .map(|(i, sentence)| (*i, matches(sentence, &terms)))
            .collect();
        // Best first; on a tie the earlier sentence (passages open with their summary).
        scored.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        // Sentences sharing a word with the query; the passage's opening when none does.
        let matching = scored.iter().filter(|(_, score)| *score > 0).count();
        // With no sentence about the question and an example to show, the example answers;
        // a passage cut from the middle of its section would only offer stray sentences.
        let take = if matching > 0 {
            matching.min(KEY_SENTENCES)
        } else if parsed.example.is_some() && text.starts_with('…') {
            0
        } else {
            2
        };
        let mut picked: Vec<usize> = scored.iter().take(take).map(|(i, _)| *i).collect();
        // A passage that starts at its section's beginning opens with its summary: keep it.
        if !text.starts_with('…')
            && let Some((first, _)) = parsed.statements().first()
            && !picked.contains(first)
        {
            picked.truncate(KEY_SENTENCES - 1);
            picked.push(*first);
        }
        picked.sort_unstable();
        let quoted: Vec<&str> = picked
            .iter()
            .map(|i| parsed.sentences[*i].as_str())
            .collect();
        let rows: Vec<&String> = parsed
            .rows
            .iter()
            .filter(|r| matches(r, &terms) > 0)
            .take(4)
            .collect();
        if quoted.is_empty() && !rows.is_empty() {
            // A reference table: the rows about the question's words.
            out.push_str(
                &rows
                    .iter()
                    .map(|r| format!("- {r}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        } else if quoted.is_empty() && parsed.example.is_some() {
            out.push_str("The documentation shows it by example.");
        } else if quoted.is_empty() {
            // Nothing but code and tables: the start of the passage as it is.
            out.push_str(
                &text
                    .trim_start_matches('…')
                    .chars()
                    .take(400)
                    .collect::<String>(),
            );
        } else {
            out.push_str(&quoted.join(" "));
        }
    }
    if let Some(example) = &parsed.example {
        let lines: Vec<String> = example.iter().take(8).cloned().collect();
        out.push_str("\n\nFor example:\n");
        out.push_str(&lines.join("\n"));
    }
    out
}

/// How many of the terms a sentence contains.
fn matches(sentence: &str, terms: &[String]) -> usize {
    let sw: Vec<String> = words(sentence).iter().map(|w| stem(w)).collect();
    terms.iter().filter(|t| sw.contains(t)).count()
}

/// The query's meaningful words, stemmed.
fn query_terms(query: &str) -> Vec<String> {
    words(query)
        .iter()
        .filter(|w| w.len() > 2 && !QUERY_FILLER.contains(&w.as_str()))
        .map(|w| stem(w))
        .collect()
}

/// Whether a hit's title or text holds one of the terms (every hit does when there are none).
fn relevant(hit: &Json, terms: &[String]) -> bool {
    if terms.is_empty() {
        return true;
    }
    let text = format!("{} {}", path_title(hit), s(hit, "text"));
    let found: Vec<String> = words(&text).iter().map(|w| stem(w)).collect();
    terms.iter().any(|t| found.contains(t))
}

const QUERY_FILLER: &[&str] = &[
    "how", "what", "can", "the", "and", "does", "are", "for", "with", "into", "from", "you",
    "your", "this", "that", "which", "why", "when", "where", "should", "would", "could", "there",
    "want", "need", "use", "using", "about",
];

pub fn templates_found(step: &Step<'_>) -> String {
    let empty = Vec::new();
    let found = step
        .data()
        .get("results")
        .and_then(Json::as_array)
        .unwrap_or(&empty);
    let query = s(step.data(), "query");
    if found.is_empty() {
        return format!(
            "No template matches \"{query}\". Try naming the source and destination systems, e.g. \"csv to postgres\" or \"rest api to warehouse\"."
        );
    }
    let mut out = format!("Templates for \"{query}\":");
    for (i, t) in found.iter().enumerate() {
        let description = s(t, "description");
        let first = sentences(description)
            .into_iter()
            .next()
            .unwrap_or_default();
        out.push_str(&format!(
            "\n{}. {} ({}): {} → {}. {}",
            i + 1,
            s(t, "name"),
            s(t, "id"),
            s(t, "source_system"),
            s(t, "destination_system"),
            first
        ));
    }
    out.push_str(&format!(
        "\n\nSay \"import it\" to import {} (add the parameters it needs as NAME=VALUE after it, e.g. \"import it with table=orders\").",
        s(&found[0], "id")
    ));
    out
}

pub fn imported(step: &Step<'_>) -> String {
    let data = step.data();
    let template = step
        .call
        .arguments
        .get("template")
        .and_then(Json::as_str)
        .unwrap_or_default();
    if !step.succeeded() {
        return format!(
            "I could not import template {template}: {}\nGive the missing values as NAME=VALUE, e.g. \"import it with NAME=VALUE\".",
            step.text()
        );
    }
    let flow = s(data, "flow");
    let mut out = format!("Imported template {template}: flow '{flow}' is ready.");
    if let Some(conns) = data.get("connections").and_then(Json::as_array) {
        let made: Vec<String> = conns
            .iter()
            .map(|c| {
                let action = match s(c, "action") {
                    "created" => "created",
                    "built_in" => "the built-in one",
                    "reused" | "existing" => "reused",
                    other => other,
                };
                format!("'{}' ({}, {action})", s(c, "name"), s(c, "type"))
            })
            .collect();
        if !made.is_empty() {
            out.push_str(&format!(" Connections: {}.", made.join(", ")));
        }
    }
    if let Some(missing) = data.get("missing").and_then(Json::as_array)
        && !missing.is_empty()
    {
        out.push_str("\nStill to set before it can run:");
        for m in missing {
            match m {
                Json::String(t) => out.push_str(&format!("\n- {t}")),
                other => out.push_str(&format!(
                    "\n- {}{}",
                    s(other, "name"),
                    other
                        .get("command")
                        .and_then(Json::as_str)
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                )),
            }
        }
    }
    if let Some(next) = data.get("next_steps").and_then(Json::as_array)
        && !next.is_empty()
    {
        let steps: Vec<&str> = next.iter().filter_map(Json::as_str).collect();
        out.push_str(&format!(
            "\nNext: {}. Say \"run it\" to run the flow now.",
            steps.join(", then ")
        ));
    }
    out
}

pub fn diagnosis(step: &Step<'_>) -> String {
    if !step.succeeded() {
        return format!("I could not diagnose it: {}", step.text());
    }
    let d = step.data();
    let mut out = s(d, "summary").to_string();
    if let Some(e) = d.get("error").and_then(Json::as_str) {
        out.push_str(&format!("\n\nError: {e}"));
    }
    if let Some(c) = d.get("cause").and_then(Json::as_str) {
        out.push_str(&format!("\nCause: {c}."));
    }
    if let Some(f) = d.get("fix").and_then(Json::as_str) {
        out.push_str(&format!("\nFix: {f}."));
    }
    if let Some(articles) = d.get("articles").and_then(Json::as_array)
        && !articles.is_empty()
    {
        out.push_str("\n\nSources:");
        for a in articles {
            let citation = s(a, "citation");
            let citation = if citation.is_empty() {
                s(a, "source")
            } else {
                citation
            };
            out.push_str(&format!("\n- {citation}"));
        }
    }
    out
}

fn plural(count: usize, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}

pub fn listing(listing: &Listing, step: &Step<'_>) -> String {
    let statements = step.statements();
    let Some(st) = statements.first() else {
        return failed_step(step);
    };
    if !st.ok {
        return failed_step(step);
    }
    let empty = Vec::new();
    let items = st.data.as_array().unwrap_or(&empty);
    let mut lines: Vec<String> = Vec::new();
    let head = match listing {
        Listing::Connections => {
            for c in items {
                let desc = s(c, "description");
                lines.push(format!(
                    "- {} ({}): {}{}",
                    s(c, "name"),
                    s(c, "type"),
                    s(c, "target"),
                    if desc.is_empty() {
                        String::new()
                    } else {
                        format!(" ({desc})")
                    }
                ));
            }
            format!(
                "You have {}:",
                plural(items.len(), "connection", "connections")
            )
        }
        Listing::Flows => {
            for f in items {
                let schedule = f
                    .get("schedule")
                    .and_then(Json::as_str)
                    .map(|s| format!(", scheduled {s}"))
                    .unwrap_or_default();
                let last = match s(f, "last_status") {
                    "" => ", never run".to_string(),
                    status => format!(", last run {status}"),
                };
                lines.push(format!(
                    "- {}: {}:{} → {}:{} ({}{schedule}{last})",
                    s(f, "name"),
                    s(f, "source"),
                    s(f, "object"),
                    s(f, "destination"),
                    s(f, "target"),
                    s(f, "mode")
                ));
            }
            format!("You have {}:", plural(items.len(), "flow", "flows"))
        }
        Listing::Schedules => {
            for sc in items {
                let enabled = if sc.get("enabled").and_then(Json::as_bool).unwrap_or(true) {
                    ""
                } else {
                    " (disabled)"
                };
                lines.push(format!(
                    "- {}: {}{enabled}, next run at {}",
                    s(sc, "flow"),
                    s(sc, "when"),
                    s(sc, "next_run_at")
                ));
            }
            format!("{} scheduled:", plural(items.len(), "flow is", "flows are"))
        }
        Listing::Runs { flow, failed } => {
            for r in items {
                let error = r
                    .get("error")
                    .and_then(Json::as_str)
                    .map(|e| {
                        let cut: String = e.chars().take(160).collect();
                        let more = if e.chars().count() > 160 { "…" } else { "" };
                        format!(": {cut}{more}")
                    })
                    .unwrap_or_default();
                lines.push(format!(
                    "- {} {} ({}), {} read, {} written, {}{error}",
                    s(r, "flow"),
                    s(r, "status"),
                    s(r, "id"),
                    n(r, "rows_read"),
                    n(r, "rows_written"),
                    s(r, "created_at")
                ));
            }
            let what = if *failed { "failed run" } else { "run" };
            let of = flow
                .as_ref()
                .map(|f| format!(" of flow '{f}'"))
                .unwrap_or_default();
            if items.len() == 1 {
                format!("1 {what}{of}:")
            } else {
                format!("The latest {} {what}s{of}, newest first:", items.len())
            }
        }
        Listing::ConnectorTypes => {
            for t in items {
                lines.push(format!("- {}: {}", s(t, "type"), s(t, "description")));
            }
            "The connector types:".to_string()
        }
        Listing::Commands => {
            for c in items {
                lines.push(format!("- {}: {}", s(c, "synopsis"), s(c, "description")));
            }
            format!(
                "{} of the host language:",
                plural(items.len(), "command", "commands")
            )
        }
    };
    if items.is_empty() || !st.data.is_array() {
        // No items, or a command that answers text: its own words say it best.
        return match listing {
            Listing::Connections => "You have no connections yet (not even the built-in warehouse is visible). Create one with \"create a connection to api.example.com\".".to_string(),
            Listing::Flows => "You have no flows yet. Create one with \"load orders.csv from files into warehouse\", or find a template: \"find a template for csv to postgres\".".to_string(),
            Listing::Schedules => "No flow is scheduled. Schedule one with \"schedule flow NAME every hour\".".to_string(),
            Listing::Runs { .. } => "No runs match.".to_string(),
            _ => step.text().to_string(),
        };
    }
    let more = lines.len().saturating_sub(LIST_ITEMS);
    let mut out = head;
    for l in lines.into_iter().take(LIST_ITEMS) {
        out.push('\n');
        out.push_str(&l);
    }
    if more > 0 {
        out.push_str(&format!("\n…and {more} more."));
    }
    out
}

pub fn described(thing: &Thing, name: &str, step: &Step<'_>) -> String {
    let statements = step.statements();
    let Some(st) = statements.first().filter(|s| s.ok) else {
        return failed_step(step);
    };
    let d = st.data;
    match thing {
        Thing::Flow => {
            let src = d.get("source").cloned().unwrap_or_default();
            let dst = d.get("destination").cloned().unwrap_or_default();
            let mut out = format!(
                "Flow '{name}' reads {} from connection '{}' and writes it to {} in '{}' (mode {}",
                s(&src, "object"),
                s(&src, "connection"),
                s(&dst, "target"),
                s(&dst, "connection"),
                s(d, "mode")
            );
            if let Some(keys) = d.get("keys").and_then(Json::as_array)
                && !keys.is_empty()
            {
                let k: Vec<&str> = keys.iter().filter_map(Json::as_str).collect();
                out.push_str(&format!(", keys {}", k.join(",")));
            }
            if let Some(i) = d.get("incremental").and_then(Json::as_str) {
                out.push_str(&format!(", incremental on {i}"));
            }
            out.push_str(").");
            match d.get("schedule").filter(|s| s.is_object()) {
                Some(sc) => out.push_str(&format!(
                    " It runs {}; next run at {}.",
                    s(sc, "when"),
                    s(sc, "next_run_at")
                )),
                None => out.push_str(" It is not scheduled."),
            }
            match d
                .get("recent_runs")
                .and_then(Json::as_array)
                .and_then(|r| r.first())
            {
                Some(r) => out.push_str(&format!(
                    " Its latest run ({}) ended {}: {} rows read, {} written.",
                    s(r, "id"),
                    s(r, "status"),
                    n(r, "rows_read"),
                    n(r, "rows_written")
                )),
                None => out.push_str(" It has never run."),
            }
            out
        }
        Thing::Connection => {
            let props = d
                .get("properties")
                .and_then(Json::as_object)
                .map(|p| {
                    p.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            format!(
                "Connection '{name}' is of type {} with {props}. Check that it connects with 'test connection {name}'.",
                s(d, "type")
            )
        }
        Thing::Run => run_sentence(s(d, "flow"), d),
    }
}

fn run_sentence(flow: &str, r: &Json) -> String {
    let status = s(r, "status");
    let mut out = format!(
        "Run {} of flow '{flow}' {}: {} rows read, {} rows written in {} batch(es), {} ms.",
        s(r, "id"),
        match status {
            "success" => "succeeded".to_string(),
            "error" => "failed".to_string(),
            other => format!("is {other}"),
        },
        n(r, "rows_read"),
        n(r, "rows_written"),
        n(r, "batches"),
        n(r, "duration_ms")
    );
    if let Some(e) = r.get("error").and_then(Json::as_str) {
        out.push_str(&format!(" Error: {e}"));
    }
    out
}

pub fn run_outcome(flow: &str, step: &Step<'_>) -> String {
    let statements = step.statements();
    let Some(st) = statements.first() else {
        return failed_step(step);
    };
    if st.ok {
        return run_sentence(flow, st.data);
    }
    if st.error_code == "run_failed" {
        return format!(
            "Flow '{flow}' failed: {}\nAsk \"why did flow {flow} fail?\" for the cause and the fix.",
            st.error
        );
    }
    failed_step(step)
}

pub fn which_flow(verb: &str, step: &Step<'_>) -> String {
    let names: Vec<String> = step
        .statements()
        .first()
        .and_then(|s| s.data.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f.get("name").and_then(Json::as_str).map(str::to_string))
        .collect();
    if names.is_empty() {
        return format!(
            "There is no flow to {verb} yet. Create one first, for example \"load orders.csv from files into warehouse\"."
        );
    }
    format!(
        "Which flow should I {verb}? You have: {}. Say for example \"{verb} flow {}\".",
        names.join(", "),
        names[0]
    )
}

pub fn scheduled(step: &Step<'_>, from_connection: Option<&str>) -> String {
    let statements = step.statements();
    if let Some(failed) = statements.iter().find(|s| !s.ok) {
        return format!("'{}' failed: {}", failed.text, failed.error);
    }
    let Some(schedule) = statements.last() else {
        return failed_step(step);
    };
    let d = schedule.data;
    let mut out = String::new();
    if let (Some(conn), Some(created)) = (from_connection, statements.first()) {
        let f = created.data;
        let src = f.get("source").cloned().unwrap_or_default();
        let dst = f.get("destination").cloned().unwrap_or_default();
        out.push_str(&format!(
            "'{conn}' is a connection, and only flows run on a schedule, so I first created flow '{}' from it (object {}) into the warehouse table '{}'. ",
            s(f, "name"),
            s(&src, "object"),
            s(&dst, "target")
        ));
    }
    out.push_str(&format!(
        "Flow '{}' now runs {}; the next run is at {}.",
        s(d, "flow"),
        s(d, "when"),
        s(d, "next_run_at")
    ));
    out.push_str(" Schedules fire while the server (or 'etlworks-agent scheduler') is running.");
    out
}

pub fn connection_created(draft: &ConnectionDraft, step: &Step<'_>, renamed: bool) -> String {
    let statements = step.statements();
    let Some(st) = statements.first() else {
        return failed_step(step);
    };
    if !st.ok {
        if st.error_code == "conflict" {
            return format!(
                "A connection named '{}' already exists. Say another name (\"... named crm2\"), or change the existing one with 'update connection {}'.",
                draft.name, draft.name
            );
        }
        return format!("I could not create the connection: {}", st.error);
    }
    let d = st.data;
    let name = s(d, "name");
    let props = d
        .get("properties")
        .and_then(Json::as_object)
        .map(|p| {
            p.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let mut out = format!(
        "Created connection '{name}' ({}) with {props}.",
        s(d, "type")
    );
    if renamed {
        out.push_str(&format!(
            " The name '{}' was taken, so I used '{name}'.",
            draft.name
        ));
    }
    out.push_str(&format!(
        " Check that it connects with 'test connection {name}'."
    ));
    if draft.kind == "http" {
        out.push_str(&format!(
            " If the API needs a token, add it with 'update connection {name} auth=bearer token=...'."
        ));
    }
    out
}

/// A direct command's answer: the host language's own readable rendering, which is already
/// written for people (a test's verdict, a log, a preview table).
pub fn command_result(step: &Step<'_>) -> String {
    let statements = step.statements();
    match statements.first() {
        Some(st) if !st.ok => format!("'{}' failed: {}", st.text, st.error),
        Some(_) => step.text().to_string(),
        None => failed_step(step),
    }
}

pub fn no_objects(connection: &str, step: &Step<'_>) -> String {
    let statements = step.statements();
    match statements.first() {
        Some(st) if !st.ok => format!(
            "I could not list what connection '{connection}' offers: {}",
            st.error
        ),
        _ => format!(
            "Connection '{connection}' offers no table or file yet, so I cannot tell what a flow should read. Name it, e.g. \"load orders.csv from {connection} into warehouse\"."
        ),
    }
}

pub fn flow_created(step: &Step<'_>) -> String {
    let statements = step.statements();
    let mut out = Vec::new();
    for st in &statements {
        if !st.ok {
            let hint = if st.error_code == "run_failed" {
                let flow = st
                    .text
                    .split_whitespace()
                    .nth(2)
                    .unwrap_or_default()
                    .trim_matches('\'');
                format!(" Ask \"why did flow {flow} fail?\" for the cause and the fix.")
            } else {
                String::new()
            };
            out.push(format!("'{}' failed: {}{hint}", st.text, st.error));
            break;
        }
        let d = st.data;
        if st.text.starts_with("create connection") {
            out.push(format!(
                "Created connection '{}' ({}).",
                s(d, "name"),
                s(d, "type")
            ));
        } else if st.text.starts_with("create flow") {
            let src = d.get("source").cloned().unwrap_or_default();
            let dst = d.get("destination").cloned().unwrap_or_default();
            let mut how = vec![format!("mode {}", s(d, "mode"))];
            if let Some(keys) = d.get("keys").and_then(Json::as_array)
                && !keys.is_empty()
            {
                let k: Vec<&str> = keys.iter().filter_map(Json::as_str).collect();
                how.push(format!("keys {}", k.join(",")));
            }
            if let Some(column) = d.get("incremental").and_then(Json::as_str) {
                how.push(format!("incremental on {column}"));
            }
            if d.get("create").and_then(Json::as_bool).unwrap_or(false) {
                how.push("the table is created when missing".to_string());
            }
            out.push(format!(
                "Created flow '{}': {} from '{}' into table {} of '{}' ({}).",
                s(d, "name"),
                s(&src, "object"),
                s(&src, "connection"),
                s(&dst, "target"),
                s(&dst, "connection"),
                how.join(", ")
            ));
        } else if st.text.starts_with("run flow") {
            out.push(run_sentence(s(d, "flow"), d));
        }
    }
    let ran = statements.iter().any(|s| s.text.starts_with("run flow"));
    if !ran && statements.iter().all(|s| s.ok) {
        out.push("Say \"run it\" to run it now, or \"schedule it every hour\".".to_string());
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_steps_are_kept_whole() {
        let text = "Import does this:\n\n1. Checks the parameters.\n   Unknown names are refused.\n2. Creates the connections.\n3. Creates the flow.\n";
        let a = passage_answer("what does import do", text);
        assert!(a.starts_with("Import does this:"), "{a}");
        assert!(
            a.contains("1. Checks the parameters. Unknown names are refused.\n2. Creates"),
            "{a}"
        );
    }

    #[test]
    fn key_sentences_follow_the_query() {
        let text = "Flows move data. A schedule runs a flow every interval. Retries repeat failed runs. Tables are created when missing.";
        let a = passage_answer("how do I schedule a flow", text);
        assert!(a.contains("A schedule runs a flow every interval."), "{a}");
        assert!(!a.contains("Tables are created"), "{a}");
    }
}

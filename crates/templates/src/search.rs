//! Ranking templates for a free-text ask ("salesforce to postgres", "csv into mysql"): an
//! in-memory scorer over weighted fields with light stemming, synonyms and a bonus when the
//! words before "to"/"into" match the source and the words after match the destination.
//! A few dozen templates need nothing heavier, and it answers any input without failing.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::format::Template;

/// Only this much of a query is read; longer input is cut, never refused.
const MAX_QUERY_CHARS: usize = 4096;
/// Only this many distinct words of a query count.
const MAX_TERMS: usize = 32;

/// One ranked template, as search answers it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchHit {
    pub id: String,
    pub name: String,
    pub description: String,
    pub source_system: String,
    pub destination_system: String,
    pub tags: Vec<String>,
    /// Higher is better; only comparable within one answer.
    pub score: f32,
}

impl SearchHit {
    fn of(t: &Template, score: f32) -> SearchHit {
        SearchHit {
            id: t.id.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            source_system: t.source_system.clone(),
            destination_system: t.destination_system.clone(),
            tags: t.tags.clone(),
            score,
        }
    }
}

/// A template's words, per field.
pub(crate) struct Indexed {
    name: BTreeSet<String>,
    id: BTreeSet<String>,
    source: BTreeSet<String>,
    destination: BTreeSet<String>,
    tags: BTreeSet<String>,
    description: BTreeSet<String>,
}

impl Indexed {
    pub(crate) fn new(t: &Template) -> Indexed {
        let set = |s: &str| terms(s).into_iter().collect::<BTreeSet<_>>();
        Indexed {
            name: set(&t.name),
            id: set(&t.id),
            source: set(&t.source_system),
            destination: set(&t.destination_system),
            tags: set(&t.tags.join(" ")),
            description: set(&t.description),
        }
    }

    /// How well one query word matches, and whether it hit the source or destination system.
    fn score_term(&self, term: &str) -> (f32, bool, bool) {
        let fields: [(&BTreeSet<String>, f32); 6] = [
            (&self.name, 3.0),
            (&self.source, 3.0),
            (&self.destination, 3.0),
            (&self.id, 2.0),
            (&self.tags, 2.0),
            (&self.description, 1.0),
        ];
        let mut best = 0.0f32;
        for (words, weight) in fields {
            let w = if words.contains(term) {
                weight
            } else if term.len() >= 3 && words.iter().any(|w| w.starts_with(term)) {
                // "sales" finds "salesforce", "postg" finds "postgres": people type prefixes.
                weight * 0.5
            } else {
                0.0
            };
            best = best.max(w);
        }
        (
            best,
            self.source.contains(term),
            self.destination.contains(term),
        )
    }
}

/// Lowercased words with stop words dropped, stemmed and mapped to one spelling per system.
pub(crate) fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| normalize(&w.to_lowercase()))
        .filter(|w| !STOP.contains(&w.as_str()))
        .collect()
}

const STOP: &[&str] = &[
    "a", "an", "the", "to", "into", "from", "of", "for", "in", "on", "with", "and", "or", "my",
    "me", "i", "is", "are", "how", "do", "doe", "can", "want", "need", "some", "there", "any",
    "template", "flow", "by", "it", "that", "this", "which", "what", "we", "our",
];

/// Crude English stemming: enough for issues/issue, contacts/contact, loading/load.
fn stem(w: &str) -> String {
    let n = w.len();
    if !w.is_ascii() {
        return w.to_string();
    }
    if n > 4 && w.ends_with("ies") {
        return format!("{}y", &w[..n - 3]);
    }
    if n > 4
        && (w.ends_with("ches") || w.ends_with("shes") || w.ends_with("xes") || w.ends_with("ses"))
    {
        return w[..n - 2].to_string();
    }
    if n > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") {
        return w[..n - 1].to_string();
    }
    if n > 5 && w.ends_with("ing") {
        return w[..n - 3].to_string();
    }
    if n > 4 && w.ends_with("ed") && !w.ends_with("eed") {
        return w[..n - 2].to_string();
    }
    w.to_string()
}

/// A word in its one spelling per system, so "pg", "postgresql" and "postgres" are the same
/// word; stemming happens only for words not known here ("postgres" must not become "postgre").
fn normalize(w: &str) -> String {
    match known(w) {
        Some(k) => k.to_string(),
        None => {
            let s = stem(w);
            known(&s).map(str::to_string).unwrap_or(s)
        }
    }
}

fn known(w: &str) -> Option<&'static str> {
    Some(match w {
        "postgres" | "postgresql" | "pg" | "psql" | "pgsql" => "postgres",
        "mysql" | "mariadb" | "maria" => "mysql",
        "sqlite" | "warehouse" | "sqlite3" => "sqlite",
        "salesforce" | "sfdc" | "soql" => "salesforce",
        "github" | "gh" => "github",
        "ndjson" | "jsonl" => "ndjson",
        "api" | "apis" | "rest" | "http" | "endpoint" => "api",
        "replicate" | "replication" | "sync" | "synchronize" | "copy" | "mirror" => "replicate",
        "export" | "exports" | "dump" | "unload" => "export",
        "pagination" | "paginated" | "paging" | "paged" => "pagination",
        "news" => "news",
        _ => return None,
    })
}

/// Words that also count, at half weight, for a query word ("csv" also finds file templates).
fn related(w: &str) -> &'static [&'static str] {
    match w {
        "csv" | "tsv" | "json" | "ndjson" => &["file"],
        "file" => &["csv", "json", "ndjson"],
        "database" | "db" | "sql" => &["postgres", "mysql", "sqlite"],
        "table" => &["database"],
        "crm" => &["salesforce", "hubspot", "pipedrive"],
        "ticket" | "support" | "helpdesk" => &["zendesk", "jira", "intercom"],
        "weather" | "forecast" => &["meteo"],
        "shop" | "ecommerce" | "store" => &["shopify"],
        "payment" | "billing" => &["stripe"],
        _ => &[],
    }
}

/// Where each query word sits relative to "to"/"into" (destination) and "from" (source).
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Unknown,
    Source,
    Destination,
}

fn query_terms(query: &str) -> Vec<(String, Side)> {
    let cut: String = query.chars().take(MAX_QUERY_CHARS).collect();
    let mut out: Vec<(String, Side)> = Vec::new();
    let mut side = Side::Unknown;
    let mut saw_to = false;
    for raw in cut
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let lower = raw.to_lowercase();
        match lower.as_str() {
            "to" | "into" => {
                // Words seen so far were the source.
                if !saw_to {
                    for t in out.iter_mut().filter(|t| t.1 == Side::Unknown) {
                        t.1 = Side::Source;
                    }
                }
                saw_to = true;
                side = Side::Destination;
                continue;
            }
            "from" => {
                side = Side::Source;
                continue;
            }
            _ => {}
        }
        let w = normalize(&lower);
        if STOP.contains(&w.as_str()) || out.iter().any(|(t, _)| *t == w) {
            continue;
        }
        out.push((w, side));
        if out.len() >= MAX_TERMS {
            break;
        }
    }
    out
}

/// The `limit` best templates for `query`. An empty query lists the gallery in id order; a
/// query without any searchable word (only punctuation or stop words) finds nothing.
pub(crate) fn search(
    templates: &[Template],
    index: &[Indexed],
    query: &str,
    limit: usize,
) -> Vec<SearchHit> {
    if query.trim().is_empty() {
        return templates
            .iter()
            .take(limit)
            .map(|t| SearchHit::of(t, 0.0))
            .collect();
    }
    let q = query_terms(query);
    if q.is_empty() {
        return Vec::new();
    }
    let mut hits: Vec<(f32, &Template)> = templates
        .iter()
        .zip(index)
        .filter_map(|(t, ix)| {
            let mut score = 0.0f32;
            let mut matched = 0usize;
            for (term, side) in &q {
                let (mut s, in_source, in_dest) = ix.score_term(term);
                if s == 0.0 {
                    s = related(term)
                        .iter()
                        .map(|r| ix.score_term(r).0 * 0.5)
                        .fold(0.0, f32::max);
                }
                if s > 0.0 {
                    matched += 1;
                }
                // Direction: "csv into mysql" prefers CSV sources and MySQL destinations.
                match side {
                    Side::Source if in_source => s += 2.0,
                    Side::Source if in_dest => s -= 1.5,
                    Side::Destination if in_dest => s += 2.0,
                    Side::Destination if in_source => s -= 1.5,
                    _ => {}
                }
                score += s;
            }
            // Templates matching every word of the ask beat those matching one word strongly.
            let coverage = matched as f32 / q.len() as f32;
            let total = score * (0.5 + coverage);
            (matched > 0 && total > 0.0).then_some((total, t))
        })
        .collect();
    hits.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    hits.into_iter()
        .take(limit)
        .map(|(s, t)| SearchHit::of(t, (s * 100.0).round() / 100.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_and_synonyms() {
        assert_eq!(terms("GitHub Issues"), vec!["github", "issue"]);
        assert_eq!(terms("PostgreSQL pg postgres"), vec!["postgres"; 3]);
        assert_eq!(terms("MariaDB"), vec!["mysql"]);
        assert_eq!(
            terms("load contacts into the warehouse"),
            vec!["load", "contact", "sqlite"]
        );
        assert!(terms("?!;,").is_empty());
    }

    #[test]
    fn sides_follow_to_and_from() {
        let q = query_terms("csv into mysql");
        assert!(q[0].0 == "csv" && q[0].1 == Side::Source);
        assert!(q[1].0 == "mysql" && q[1].1 == Side::Destination);
        let q = query_terms("load into postgres from stripe");
        assert!(q.iter().any(|(t, s)| t == "stripe" && *s == Side::Source));
        assert!(
            q.iter()
                .any(|(t, s)| t == "postgres" && *s == Side::Destination)
        );
    }

    #[test]
    fn huge_queries_are_cut() {
        let q = "word ".repeat(300_000);
        // The cut may split the last word, which then counts as a second one.
        assert!(query_terms(&q).len() <= 2);
        let many: String = (0..10_000).map(|i| format!("w{i} ")).collect();
        assert_eq!(query_terms(&many).len(), MAX_TERMS);
    }
}

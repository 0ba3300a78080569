//! Small text helpers shared by the planner: words of a request, names, URLs and paths in it,
//! quoting values for the host language, and sentence splitting for answers.

/// The lowercase words of `text` (letters, digits, `_`, `-`), for keyword tests.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '\''))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '-').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The request split at whitespace, with surrounding punctuation and quotes removed but the
/// case kept: the candidates for names, URLs, paths and `key=value` pairs.
pub fn tokens(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|t| {
            let t = t.trim_matches(|c: char| matches!(c, '"' | '`' | '(' | ')' | ',' | '!' | '?'));
            let t = t.trim_end_matches(['.', ';', ':']);
            t.trim_matches(|c: char| matches!(c, '\'' | '"' | '`'))
                .to_string()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

pub fn has_any(words: &[String], wanted: &[&str]) -> bool {
    words.iter().any(|w| wanted.contains(&w.as_str()))
}

/// Whether `phrase` occurs in the lowercase `text` at word boundaries.
pub fn has_phrase(text: &str, phrase: &str) -> bool {
    let lower = text.to_lowercase();
    let mut start = 0;
    while let Some(at) = lower[start..].find(phrase) {
        let begin = start + at;
        let end = begin + phrase.len();
        let before = lower[..begin].chars().next_back();
        let after = lower[end..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric() && c != '_');
        if boundary(before) && boundary(after) {
            return true;
        }
        start = end;
    }
    false
}

/// A name usable in the host language (letters, digits, `_`, `-`, `.`), lowercase, with other
/// characters turned into `_`; empty when nothing usable is left.
pub fn sanitize_name(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let out = out.trim_matches('_').to_string();
    out.chars().take(64).collect()
}

/// Whether a token can be a connection or flow name as the user typed it.
pub fn is_name(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 128
        && token
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A value written so the host language reads it back unchanged: bare when it is plain,
/// otherwise single-quoted with inner quotes doubled.
pub fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || "_-./:@+,*".contains(c));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// The first `name` occurring after one of the marker words ("named X", "called X", "flow X").
/// Stop words are skipped; `None` when the word after the marker is not a name.
pub fn name_after(tokens: &[String], markers: &[&str], skip: &[&str]) -> Option<String> {
    for (i, t) in tokens.iter().enumerate() {
        if !markers.contains(&t.to_lowercase().as_str()) {
            continue;
        }
        for next in tokens.iter().skip(i + 1) {
            let lower = next.to_lowercase();
            if skip.contains(&lower.as_str()) {
                continue;
            }
            if is_name(next) && !STOP.contains(&lower.as_str()) {
                return Some(next.clone());
            }
            break;
        }
    }
    None
}

/// Words that are never names.
pub const STOP: &[&str] = &[
    "a", "an", "the", "it", "that", "this", "them", "to", "into", "from", "in", "on", "of", "for",
    "and", "or", "with", "every", "each", "daily", "hourly", "at", "is", "was", "are", "fail",
    "failed", "failing", "fails", "run", "runs", "named", "called", "please", "now", "again", "my",
    "me", "do", "does", "did", "why", "what", "how", "went", "wrong", "last", "latest", "new",
    "one", "up",
];

/// A URL with a scheme (`https://...`, `postgres://...`) in the tokens.
pub fn find_url(tokens: &[String]) -> Option<String> {
    tokens.iter().find(|t| t.contains("://")).cloned()
}

/// A bare host name such as `api.example.com` (letters, a dot, a top-level domain of letters),
/// optionally followed by a path; never a file name with a data extension.
pub fn find_domain(tokens: &[String]) -> Option<String> {
    tokens
        .iter()
        .find(|t| {
            let host = t.split('/').next().unwrap_or_default();
            let labels: Vec<&str> = host.split('.').collect();
            labels.len() >= 2
                && labels.iter().all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
                && labels.last().is_some_and(|tld| {
                    tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic())
                })
                && !DATA_EXTENSIONS.contains(&labels.last().unwrap_or(&"").to_lowercase().as_str())
                && !host.starts_with('.')
        })
        .cloned()
}

const DATA_EXTENSIONS: &[&str] = &[
    "csv", "json", "ndjson", "jsonl", "txt", "tsv", "db", "sqlite", "sqlite3", "xml", "md", "yaml",
    "yml", "parquet", "gz",
];

/// An absolute or home-relative file-system path in the tokens.
pub fn find_path(tokens: &[String]) -> Option<String> {
    tokens
        .iter()
        .find(|t| (t.starts_with('/') && t.len() > 1) || t.starts_with("~/") || t.starts_with("./"))
        .cloned()
}

/// `key=value` pairs the user wrote verbatim (template parameters, extra properties).
pub fn key_values(tokens: &[String]) -> Vec<(String, String)> {
    tokens
        .iter()
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            (!k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                && !v.is_empty())
            .then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Splits prose into sentences at `.`, `?` or `!` followed by a space and a capital, a digit or
/// a backtick, so that `e.g. x` and `data.items` stay whole.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    // Inside `inline code` a period never ends a sentence (`LIKE ... A`).
    let mut in_code = false;
    for (i, &c) in chars.iter().enumerate() {
        current.push(c);
        if c == '`' {
            in_code = !in_code;
        }
        if !in_code
            && matches!(c, '.' | '?' | '!')
            && chars.get(i + 1).is_some_and(|n| n.is_whitespace())
            && chars
                .get(i + 2)
                .is_some_and(|n| n.is_uppercase() || *n == '`' || n.is_ascii_digit())
            && !current.ends_with("e.g.")
            && !current.ends_with("i.e.")
        {
            out.push(current.trim().to_string());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// The crude stem used to compare query and passage words: lowercase without a plural `s`.
pub fn stem(word: &str) -> String {
    let w = word.to_lowercase();
    if w.len() > 4 && w.ends_with('s') && !w.ends_with("ss") {
        w[..w.len() - 1].to_string()
    } else {
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_urls_and_drop_punctuation() {
        assert_eq!(
            tokens("create a connection to https://api.example.com/v1, please."),
            [
                "create",
                "a",
                "connection",
                "to",
                "https://api.example.com/v1",
                "please"
            ]
        );
        assert_eq!(tokens("run flow 'orders'!"), ["run", "flow", "orders"]);
    }

    #[test]
    fn domains_are_not_file_names() {
        let t = tokens("load orders.csv from api.example.com");
        assert_eq!(find_domain(&t).as_deref(), Some("api.example.com"));
        assert_eq!(find_domain(&tokens("load orders.csv")), None);
    }

    #[test]
    fn quoting_round_trips_the_host_language_rules() {
        assert_eq!(quote("orders.csv"), "orders.csv");
        assert_eq!(quote("0 2 * * *"), "'0 2 * * *'");
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn sentences_keep_abbreviations_and_paths() {
        assert_eq!(
            sentences("Set records_path, e.g. data.items. Then run it. `x` works."),
            [
                "Set records_path, e.g. data.items.",
                "Then run it.",
                "`x` works."
            ]
        );
        assert_eq!(
            sentences("Made `LIKE ... A` here. Next."),
            ["Made `LIKE ... A` here.", "Next."]
        );
    }

    #[test]
    fn phrases_match_at_word_boundaries() {
        assert!(has_phrase("What went wrong?", "went wrong"));
        assert!(!has_phrase("reruns", "run"));
        assert_eq!(sanitize_name("API.Example-com!"), "api_example_com");
    }
}

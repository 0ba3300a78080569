//! The host language's syntax: scripts of `;`-separated statements, comments, quoting,
//! `key=value`, `--key value`, `--flag`, and a trailing `where` filter.
//!
//! ```text
//! script    := statement (';' statement)*          comments: // ... and /* ... */
//! statement := VERB NOUN args* [where FIELD OP VALUE (and ...)*]
//! args      := positional | key=value | --key value | --flag
//! ```
//! Parsing is total: any input yields statements or a [`ParseError`], never a panic.

use std::fmt;

/// One argument as written, quotes resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    Positional(String),
    /// `key=value` or `--key value`.
    Named(String, String),
    /// `--flag` (a name the command declares as a flag).
    Flag(String),
}

/// A statement split into words, before the command is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawStatement {
    /// Words with quotes resolved; `key` is set for `key=value` words.
    pub words: Vec<Word>,
    /// The text after a top-level `where`, if any.
    pub filter: Option<String>,
    /// The statement as written (comments removed), for messages.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub key: Option<String>,
    pub value: String,
    /// Whether any part was quoted (a quoted `where` or `--x` is plain text).
    pub quoted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits a script into statements; empty statements (`;;`, comment-only) are dropped.
pub fn parse_script(script: &str) -> Result<Vec<RawStatement>, ParseError> {
    let chars: Vec<char> = script.chars().collect();
    let mut statements = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    let mut filter: Option<String> = None;
    let mut text = String::new();
    let mut i = 0;
    let n = chars.len();

    let flush = |words: &mut Vec<Word>,
                 filter: &mut Option<String>,
                 text: &mut String,
                 out: &mut Vec<RawStatement>| {
        if !words.is_empty() {
            out.push(RawStatement {
                words: std::mem::take(words),
                filter: filter
                    .take()
                    .map(|f| f.trim().to_string())
                    .filter(|f| !f.is_empty()),
                text: text.trim().to_string(),
            });
        } else {
            filter.take();
        }
        text.clear();
    };

    while i < n {
        let c = chars[i];
        if c.is_whitespace() {
            if let Some(f) = filter.as_mut() {
                f.push(c);
            }
            text.push(c);
            i += 1;
            continue;
        }
        if c == ';' {
            flush(&mut words, &mut filter, &mut text, &mut statements);
            i += 1;
            continue;
        }
        // Comments start only at a token boundary, so `url=https://x` stays a value.
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < n && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            let start = i;
            i += 2;
            loop {
                if i + 1 >= n {
                    let line = line_of(&chars, start);
                    return Err(ParseError(format!(
                        "unterminated /* comment starting on line {line}; close it with */"
                    )));
                }
                if chars[i] == '*' && chars[i + 1] == '/' {
                    i += 2;
                    break;
                }
                i += 1;
            }
            continue;
        }
        // In a where clause the words are collected raw: the filter language has its own lexer.
        if let Some(f) = filter.as_mut() {
            let start = i;
            i = scan_raw_token(&chars, i)?;
            let token: String = chars[start..i].iter().collect();
            f.push_str(&token);
            text.push_str(&token);
            continue;
        }
        let start = i;
        let (word, next) = scan_word(&chars, i)?;
        i = next;
        text.extend(&chars[start..i]);
        if !word.quoted
            && word.key.is_none()
            && word.value.eq_ignore_ascii_case("where")
            && !words.is_empty()
        {
            filter = Some(String::new());
            continue;
        }
        words.push(word);
    }
    flush(&mut words, &mut filter, &mut text, &mut statements);
    Ok(statements)
}

fn line_of(chars: &[char], pos: usize) -> usize {
    chars[..pos].iter().filter(|&&c| c == '\n').count() + 1
}

/// A token inside a where clause, kept with its quotes; stops at whitespace or `;`.
fn scan_raw_token(chars: &[char], mut i: usize) -> Result<usize, ParseError> {
    while i < chars.len() && !chars[i].is_whitespace() && chars[i] != ';' {
        if chars[i] == '\'' || chars[i] == '"' {
            let q = chars[i];
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != q {
                i += 1;
            }
            if i >= chars.len() {
                return Err(ParseError(format!(
                    "unterminated {q}-quoted text starting on line {}; close the quote",
                    line_of(chars, start)
                )));
            }
        }
        i += 1;
    }
    Ok(i)
}

/// One word: unquoted runs and quoted parts concatenated; a first unquoted `=` makes a key.
fn scan_word(chars: &[char], mut i: usize) -> Result<(Word, usize), ParseError> {
    let mut value = String::new();
    let mut key: Option<String> = None;
    let mut quoted = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || c == ';' {
            break;
        }
        match c {
            '\'' | '"' => {
                let q = c;
                let start = i;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(ParseError(format!(
                                "unterminated {q}-quoted text starting on line {}; close the quote",
                                line_of(chars, start)
                            )));
                        }
                        // A doubled quote inside quotes is a literal quote: 'it''s'.
                        Some(&ch) if ch == q && chars.get(i + 1) == Some(&q) => {
                            value.push(q);
                            i += 2;
                        }
                        Some(&ch) if ch == q => {
                            i += 1;
                            break;
                        }
                        Some('\\')
                            if q == '"' && matches!(chars.get(i + 1), Some('"') | Some('\\')) =>
                        {
                            value.push(chars[i + 1]);
                            i += 2;
                        }
                        Some(&ch) => {
                            value.push(ch);
                            i += 1;
                        }
                    }
                }
                quoted = true;
            }
            '=' if key.is_none() && !quoted && !value.is_empty() && !value.starts_with("--") => {
                key = Some(std::mem::take(&mut value));
                i += 1;
            }
            _ => {
                value.push(c);
                i += 1;
            }
        }
    }
    Ok((Word { key, value, quoted }, i))
}

/// Resolves words into arguments, given which `--names` the command treats as flags.
pub fn resolve_args(
    words: &[Word],
    is_flag: &dyn Fn(&str) -> bool,
) -> Result<Vec<Arg>, ParseError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        if let Some(k) = &w.key {
            out.push(Arg::Named(normalize_key(k), w.value.clone()));
            continue;
        }
        match w.value.strip_prefix("--").filter(|_| !w.quoted) {
            Some("") => {
                return Err(ParseError(
                    "'--' must be followed by an option name, e.g. --wait".into(),
                ));
            }
            Some(name) => {
                let name = normalize_key(name);
                if let Some((k, v)) = name.split_once('=') {
                    out.push(Arg::Named(k.to_string(), v.to_string()));
                } else if is_flag(&name) {
                    out.push(Arg::Flag(name));
                } else if let Some(next) = words
                    .get(i)
                    .filter(|n| n.key.is_none() && (n.quoted || !n.value.starts_with("--")))
                {
                    out.push(Arg::Named(name, next.value.clone()));
                    i += 1;
                } else {
                    out.push(Arg::Flag(name));
                }
            }
            None => out.push(Arg::Positional(w.value.clone())),
        }
    }
    Ok(out)
}

/// `--retry-delay` and `retry_delay` are the same option; dotted option prefixes are kept.
fn normalize_key(k: &str) -> String {
    match k.split_once('.') {
        Some((prefix, rest)) if matches!(prefix, "source" | "destination" | "header" | "query") => {
            format!("{}.{rest}", prefix.replace('-', "_"))
        }
        _ => k.replace('-', "_").to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<(Option<String>, String)> {
        parse_script(s).unwrap()[0]
            .words
            .iter()
            .map(|w| (w.key.clone(), w.value.clone()))
            .collect()
    }

    #[test]
    fn splits_statements_and_strips_comments() {
        let s = parse_script("list connections; // all of them\n/* block; with ; */ list flows;;")
            .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].text, "list flows");
    }

    #[test]
    fn keeps_urls_and_quoted_values() {
        assert_eq!(
            words(
                "create connection api type=http url=https://api.example.com/v1 header.X-A='a b'"
            ),
            vec![
                (None, "create".into()),
                (None, "connection".into()),
                (None, "api".into()),
                (Some("type".into()), "http".into()),
                (Some("url".into()), "https://api.example.com/v1".into()),
                (Some("header.X-A".into()), "a b".into()),
            ]
        );
        assert_eq!(
            words("query wh sql='select ''x'' where a=1'")[2],
            (Some("sql".into()), "select 'x' where a=1".into())
        );
        assert_eq!(words(r#"x "say \"hi\"""#)[1], (None, "say \"hi\"".into()));
    }

    #[test]
    fn where_clause_is_raw_text() {
        let s = &parse_script("list runs where status = 'error' and rows_read > 0; list flows")
            .unwrap()[0];
        assert_eq!(
            s.filter.as_deref(),
            Some("status = 'error' and rows_read > 0")
        );
        assert_eq!(s.words.len(), 2);
        // A quoted 'where' is an ordinary value.
        let s = &parse_script("query wh sql='x where y'").unwrap()[0];
        assert!(s.filter.is_none());
    }

    #[test]
    fn flags_and_dashed_options() {
        let s = &parse_script("run flow a --wait --timeout 30s --retry-delay=1m").unwrap()[0];
        let args = resolve_args(&s.words[2..], &|f| f == "wait").unwrap();
        assert_eq!(
            args,
            vec![
                Arg::Positional("a".into()),
                Arg::Flag("wait".into()),
                Arg::Named("timeout".into(), "30s".into()),
                Arg::Named("retry_delay".into(), "1m".into()),
            ]
        );
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(
            parse_script("list flows;\nquery x sql='oops")
                .unwrap_err()
                .0,
            "unterminated '-quoted text starting on line 2; close the quote"
        );
        assert!(parse_script("/* never closed").is_err());
    }

    #[test]
    fn never_panics_on_random_input() {
        // A deterministic pseudo-random generator: the same inputs on every run.
        let alphabet: Vec<char> = "ab =;'\"/*-\\\nwhere--x.é\t".chars().collect();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            let len = (state % 40) as usize;
            let mut s = String::new();
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            if let Ok(stmts) = parse_script(&s) {
                for st in stmts {
                    let _ = resolve_args(&st.words, &|f| f.len() % 2 == 0);
                }
            }
        }
    }
}

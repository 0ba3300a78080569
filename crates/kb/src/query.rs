//! Turning what a person typed into a tantivy query, without tantivy's query parser: any input is
//! valid. `"quoted words"` are phrases, `word*` is a prefix, everything else is a word (stemmed,
//! common question words dropped, a few product synonyms added). Field syntax such as `title:(`
//! is just punctuation here, so it can never fail to parse.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tantivy::query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Searcher, Term};

use crate::schema::{Fields, english_analyzer, words_analyzer};

/// Only this much of a query is read; a pasted log is still searched by its beginning.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// The most distinct words, phrases and prefixes one query uses.
const MAX_CLAUSES: usize = 32;
/// The most words one prefix expands to (the most frequent ones win).
const MAX_PREFIX_EXPANSIONS: usize = 16;
/// How far apart (in words) two adjacent query words may stand to earn the proximity bonus.
const PROXIMITY_SLOP: u32 = 2;
/// The proximity bonus relative to a single word match.
const PROXIMITY_WEIGHT: f32 = 0.5;
/// A synonym counts a little less than the word typed.
const SYNONYM_WEIGHT: f32 = 0.8;

/// Words that carry no meaning in a question ("how do i ..."). They are still indexed, so a
/// phrase containing them matches exactly; they are only left out of free-word queries.
const STOP_WORDS: &[&str] = &[
    "a", "about", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by",
    "can", "could", "did", "do", "does", "doing", "for", "from", "get", "got", "had", "has",
    "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "of", "on", "or", "our",
    "should", "so", "some", "that", "the", "their", "them", "then", "there", "these", "they",
    "this", "those", "to", "us", "using", "was", "we", "were", "what", "when", "which", "who",
    "why", "will", "with", "would", "you", "your", "want", "need", "way", "possible", "please",
    "use",
];

/// Names people use interchangeably for the same thing in this product.
const SYNONYMS: &[(&str, &[&str])] = &[
    ("postgres", &["postgresql"]),
    ("postgresql", &["postgres"]),
    ("pg", &["postgres", "postgresql"]),
    ("psql", &["postgres"]),
    ("mysql", &["mariadb"]),
    ("mariadb", &["mysql"]),
    ("rest", &["http", "api"]),
    ("api", &["http"]),
    ("upsert", &["merge"]),
    // CSV, JSON and NDJSON files are read and written by the file connector.
    ("csv", &["file"]),
    ("ndjson", &["file"]),
    ("tsv", &["csv", "file"]),
    // The ways people say "concurrently" in a question.
    ("parallel", &["concurrency", "once"]),
    ("concurrent", &["concurrency"]),
    ("concurrently", &["concurrency", "once"]),
    ("simultaneously", &["concurrency", "once"]),
    // PostgreSQL says "relation ... does not exist" for a missing table.
    ("relation", &["table"]),
];

/// How much a match in each field counts. Headings name what a passage is about, so a match
/// there says more than one in the body.
/// The source path is not searched: its words (`postgres`, `connectors`) are in the title too,
/// and every extra field is another posting list to merge per word.
const FIELD_BOOSTS: [(FieldKind, f32); 4] = [
    (FieldKind::Heading, 1.5),
    (FieldKind::Path, 1.0),
    (FieldKind::Title, 1.0),
    (FieldKind::Body, 1.0),
];

#[derive(Clone, Copy)]
enum FieldKind {
    Title,
    Heading,
    Path,
    Body,
}

impl FieldKind {
    fn field(self, fields: &Fields) -> Field {
        match self {
            FieldKind::Title => fields.title,
            FieldKind::Heading => fields.heading,
            FieldKind::Path => fields.path,
            FieldKind::Body => fields.body,
        }
    }
}

/// A query ready to run, with the body terms its snippet should highlight.
pub(crate) struct BuiltQuery {
    pub query: Box<dyn Query>,
    /// Stemmed body terms to highlight, each with its weight for choosing the snippet.
    pub highlight: BTreeMap<String, f32>,
}

/// The pieces of a query as typed.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ParsedQuery {
    pub words: Vec<String>,
    pub phrases: Vec<String>,
    pub prefixes: Vec<String>,
}

/// Splits input into words, `"phrases"` and `prefix*`es. Never fails.
pub(crate) fn parse(input: &str) -> ParsedQuery {
    let input = truncate(input, MAX_QUERY_BYTES);
    let mut parsed = ParsedQuery::default();
    let mut rest = input;
    while !rest.is_empty() {
        match rest.find('"') {
            Some(open) => {
                parse_words(&rest[..open], &mut parsed);
                let after = &rest[open + 1..];
                let (phrase, next) = match after.find('"') {
                    Some(close) => (&after[..close], &after[close + 1..]),
                    None => (after, ""),
                };
                if !phrase.trim().is_empty() {
                    parsed.phrases.push(phrase.trim().to_string());
                }
                rest = next;
            }
            None => {
                parse_words(rest, &mut parsed);
                rest = "";
            }
        }
    }
    parsed
}

fn parse_words(text: &str, parsed: &mut ParsedQuery) {
    let mut analyzer = words_analyzer();
    for chunk in text.split_whitespace() {
        let trimmed = chunk.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '*');
        let is_prefix = trimmed.ends_with('*');
        let mut tokens = Vec::new();
        let mut stream = analyzer.token_stream(trimmed);
        while let Some(token) = stream.next() {
            tokens.push(token.text.clone());
        }
        if is_prefix && let Some(last) = tokens.pop() {
            parsed.prefixes.push(last);
        }
        parsed.words.extend(tokens);
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Builds the query. `None` when nothing searchable is left (empty input, only punctuation).
pub(crate) fn build(
    input: &str,
    searcher: &Searcher,
    fields: &Fields,
) -> tantivy::Result<Option<BuiltQuery>> {
    let parsed = parse(input);
    let mut english = english_analyzer();
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let mut highlight: BTreeSet<String> = BTreeSet::new();
    let mut stems_used: HashMap<String, f32> = HashMap::new();
    let mut budget = MAX_CLAUSES;

    for phrase in &parsed.phrases {
        if budget == 0 {
            break;
        }
        let terms = analyze_with_positions(&mut english, phrase);
        match terms.len() {
            0 => {}
            1 => {
                add_stem(&mut stems_used, &terms[0].1, 1.0);
            }
            _ => {
                budget -= 1;
                for (kind, boost) in FIELD_BOOSTS {
                    let field = kind.field(fields);
                    let field_terms = terms
                        .iter()
                        .map(|(offset, text)| (*offset, Term::from_field_text(field, text)))
                        .collect();
                    // Phrases are what the person insisted on: they outrank loose words.
                    let phrase_query = PhraseQuery::new_with_offset(field_terms);
                    clauses.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(Box::new(phrase_query), boost * 2.0)),
                    ));
                }
                highlight.extend(terms.into_iter().map(|(_, text)| text));
            }
        }
    }

    let meaningful: Vec<&String> = parsed
        .words
        .iter()
        .filter(|word| !STOP_WORDS.contains(&word.as_str()))
        .collect();
    // A query made only of stop words ("where", "how to") still searches for them.
    let words: Vec<&String> =
        if meaningful.is_empty() && parsed.phrases.is_empty() && parsed.prefixes.is_empty() {
            parsed.words.iter().collect()
        } else {
            meaningful
        };
    // "at the same time" is how people ask about concurrency.
    for pair in parsed.words.windows(2) {
        if pair[0] == "same" && pair[1] == "time" {
            for synonym in ["concurrency", "once"] {
                if let Some(stem) = stem_of(&mut english, synonym) {
                    add_stem(&mut stems_used, &stem, SYNONYM_WEIGHT);
                }
            }
        }
    }
    // Words typed next to each other ("header row", "secret key") count extra where they
    // also stand close together in the text.
    let mut previous: Option<String> = None;
    for word in &words {
        let stem = stem_of(&mut english, word);
        if let (Some(first), Some(second)) = (&previous, &stem)
            && first != second
            && budget > 1
        {
            budget -= 1;
            {
                // Body only: headings are short, nearness there says little.
                let field = fields.body;
                let pair = vec![
                    Term::from_field_text(field, first),
                    Term::from_field_text(field, second),
                ];
                let near = PhraseQuery::new_with_offset_and_slop(
                    pair.into_iter().enumerate().collect(),
                    PROXIMITY_SLOP,
                );
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(near), PROXIMITY_WEIGHT)),
                ));
            }
        }
        previous = stem;
    }
    for word in words {
        if let Some(stem) = stem_of(&mut english, word) {
            add_stem(&mut stems_used, &stem, 1.0);
        }
        if let Some((_, synonyms)) = SYNONYMS.iter().find(|(w, _)| *w == word.as_str()) {
            for synonym in *synonyms {
                if let Some(stem) = stem_of(&mut english, synonym) {
                    add_stem(&mut stems_used, &stem, SYNONYM_WEIGHT);
                }
            }
        }
    }

    for prefix in &parsed.prefixes {
        for word in expand_prefix(searcher, fields.words, prefix)? {
            if let Some(stem) = stem_of(&mut english, &word) {
                add_stem(&mut stems_used, &stem, 1.0);
            }
        }
    }

    let mut stems: Vec<(String, f32)> = stems_used.into_iter().collect();
    // Deterministic order, the typed words (weight 1) first when the budget cuts.
    stems.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (stem, weight) in stems.into_iter().take(budget) {
        for (kind, boost) in FIELD_BOOSTS {
            let term = Term::from_field_text(kind.field(fields), &stem);
            let term_query = TermQuery::new(term, IndexRecordOption::WithFreqs);
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(Box::new(term_query), boost * weight)),
            ));
        }
        highlight.insert(stem);
    }

    if clauses.is_empty() {
        return Ok(None);
    }
    let mut weighted = BTreeMap::new();
    for stem in highlight {
        let doc_freq = searcher.doc_freq(&Term::from_field_text(fields.body, &stem))?;
        if doc_freq > 0 {
            weighted.insert(stem, 1.0 / (1.0 + doc_freq as f32));
        }
    }
    Ok(Some(BuiltQuery {
        query: Box::new(BooleanQuery::new(clauses)),
        highlight: weighted,
    }))
}

fn add_stem(stems: &mut HashMap<String, f32>, stem: &str, weight: f32) {
    let entry = stems.entry(stem.to_string()).or_insert(0.0);
    *entry = entry.max(weight);
}

fn stem_of(analyzer: &mut TextAnalyzer, word: &str) -> Option<String> {
    let mut stream = analyzer.token_stream(word);
    stream.next().map(|token| token.text.clone())
}

fn analyze_with_positions(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(usize, String)> {
    let mut terms = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(token) = stream.next() {
        terms.push((token.position, token.text.clone()));
        if terms.len() >= MAX_CLAUSES {
            break;
        }
    }
    terms
}

/// The most frequent indexed words starting with `prefix`, across all segments.
fn expand_prefix(searcher: &Searcher, field: Field, prefix: &str) -> tantivy::Result<Vec<String>> {
    // One letter would expand to a large part of the vocabulary and mean nothing.
    if prefix.chars().count() < 2 {
        return Ok(vec![prefix.to_string()]);
    }
    let mut frequencies: HashMap<String, u64> = HashMap::new();
    for segment in searcher.segment_readers() {
        let inverted = segment.inverted_index(field)?;
        let mut stream = inverted
            .terms()
            .range()
            .ge(prefix.as_bytes())
            .into_stream()?;
        while stream.advance() {
            let key = stream.key();
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            if let Ok(word) = std::str::from_utf8(key) {
                *frequencies.entry(word.to_string()).or_insert(0) +=
                    u64::from(stream.value().doc_freq);
            }
        }
    }
    let mut words: Vec<(String, u64)> = frequencies.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    words.truncate(MAX_PREFIX_EXPANSIONS);
    Ok(words.into_iter().map(|(word, _)| word).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_phrases_prefixes_and_punctuation() {
        let parsed = parse(r#"how to "next link" paginat* title:( next_url*,"#);
        assert_eq!(parsed.phrases, vec!["next link"]);
        assert_eq!(parsed.prefixes, vec!["paginat", "url"]);
        assert_eq!(parsed.words, vec!["how", "to", "title", "next"]);
        assert_eq!(parse("!!! ::: (((").words, Vec::<String>::new());
        assert_eq!(parse("\"unclosed phrase").phrases, vec!["unclosed phrase"]);
        assert_eq!(parse("").words.len(), 0);
        let huge = "é".repeat(MAX_QUERY_BYTES);
        assert!(parse(&huge).words.iter().map(String::len).sum::<usize>() <= MAX_QUERY_BYTES);
    }
}

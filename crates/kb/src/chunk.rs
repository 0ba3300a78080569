//! Splitting a document into passages: one per heading section, long sections cut at paragraph
//! boundaries into pieces of about [`MAX_PASSAGE_CHARS`] with [`OVERLAP_CHARS`] of overlap, never
//! inside a fenced code block when the block fits. Each passage keeps its heading path and the
//! GitHub-style anchor of its heading so answers can cite `source#anchor`.

use std::collections::HashMap;

/// The size bound of a passage's own text, in bytes of UTF-8 (about characters for English).
pub const MAX_PASSAGE_CHARS: usize = 1_200;
/// How much of the previous piece a continuation repeats, so a sentence cut at the boundary is
/// still found whole in one of the two.
pub const OVERLAP_CHARS: usize = 150;

/// One searchable unit of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    /// The heading path, starting with the document title: `["PostgreSQL", "Modes", "merge"]`.
    pub path: Vec<String>,
    /// The GitHub-style slug of the passage's heading (empty for text before any heading).
    pub anchor: String,
    /// The passage text (without its heading line).
    pub text: String,
}

/// A document split into passages.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitDocument {
    pub title: String,
    pub passages: Vec<Passage>,
}

/// Splits Markdown at ATX headings (`#` to `######`, outside fenced blocks). The first level-1
/// heading is the title; without one, `fallback_title` is.
pub fn split_markdown(text: &str, fallback_title: &str) -> SplitDocument {
    split(text, fallback_title, true)
}

/// Splits plain text by size only: lines starting with `#` are ordinary text there.
pub fn split_plain_text(text: &str, title: &str) -> SplitDocument {
    split(text, title, false)
}

/// The text under one heading, up to the next heading.
struct Section {
    /// The headings above and including this one, outermost first.
    path: Vec<String>,
    anchor: String,
    body: String,
}

fn split(text: &str, fallback_title: &str, headings: bool) -> SplitDocument {
    let mut title: Option<String> = None;
    // stack[level] is the text of the latest heading of that level (1..=6).
    let mut stack: [Option<String>; 7] = Default::default();
    let mut slugs = Slugger::default();
    let mut sections: Vec<Section> = Vec::new();
    let mut current = Section {
        path: Vec::new(),
        anchor: String::new(),
        body: String::new(),
    };
    let mut fence: Option<Fence> = None;

    for line in text.lines() {
        if let Some(open) = &fence {
            if open.is_closed_by(line) {
                fence = None;
            }
        } else if let Some(opened) = Fence::opened_by(line) {
            fence = Some(opened);
        } else if headings && let Some((level, heading)) = parse_heading(line) {
            sections.push(std::mem::replace(
                &mut current,
                Section {
                    path: Vec::new(),
                    anchor: String::new(),
                    body: String::new(),
                },
            ));
            if level == 1 && title.is_none() {
                title = Some(heading.clone());
            }
            stack[level] = Some(heading.clone());
            for deeper in stack.iter_mut().skip(level + 1) {
                *deeper = None;
            }
            current.anchor = slugs.slug(&heading);
            current.path = stack[1..=level].iter().flatten().cloned().collect();
            continue;
        }
        current.body.push_str(line);
        current.body.push('\n');
    }
    sections.push(current);

    let title = title.unwrap_or_else(|| fallback_title.to_string());
    let mut passages = Vec::new();
    for section in sections {
        let mut path = section.path;
        // Sections outside the title's h1 (no h1 at all, or text before it) start with the title
        // so every path names its document.
        if path.first() != Some(&title) {
            path.insert(0, title.clone());
        }
        for piece in pieces(&section.body) {
            passages.push(Passage {
                path: path.clone(),
                anchor: section.anchor.clone(),
                text: piece,
            });
        }
    }
    SplitDocument { title, passages }
}

/// Parses an ATX heading line: up to three spaces, 1-6 `#`, a space, the text, optional closing
/// `#`s. Returns the level and the display text (inline Markdown removed).
fn parse_heading(line: &str) -> Option<(usize, String)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let level = rest.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let after = &rest[level..];
    if !after.is_empty() && !after.starts_with([' ', '\t']) {
        return None;
    }
    let mut text = after.trim();
    // A closing sequence of `#` is decoration when a space precedes it.
    let without_closing = text.trim_end_matches('#');
    if without_closing.is_empty() || without_closing.ends_with([' ', '\t']) {
        text = without_closing.trim_end();
    }
    let display = strip_inline_markdown(text);
    if display.is_empty() {
        return None;
    }
    Some((level, display))
}

/// Removes code-span backticks, emphasis asterisks and link targets: what GitHub renders.
fn strip_inline_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '`' | '*' => {}
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
            }
            ']' if text[i + 1..].starts_with('(') => {
                // `[label](target)`: keep the label, drop the target.
                match text[i + 1..].find(')') {
                    Some(close) => {
                        let resume = i + 1 + close + 1;
                        while chars.peek().is_some_and(|&(j, _)| j < resume) {
                            chars.next();
                        }
                    }
                    None => out.push(c),
                }
            }
            '[' => {}
            _ => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// GitHub's heading anchors: lower case, punctuation removed, spaces to hyphens, and `-1`, `-2`
/// appended to repeats within one document.
#[derive(Default)]
struct Slugger {
    seen: HashMap<String, usize>,
}

impl Slugger {
    fn slug(&mut self, heading: &str) -> String {
        let base = slugify(heading);
        let count = self.seen.entry(base.clone()).or_insert(0);
        let slug = if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        slug
    }
}

/// The GitHub slug of a heading's text.
pub fn slugify(heading: &str) -> String {
    heading
        .chars()
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// A fenced code block's opening line: its character and length.
struct Fence {
    marker: u8,
    len: usize,
}

impl Fence {
    fn opened_by(line: &str) -> Option<Fence> {
        let trimmed = line.trim_start_matches(' ');
        if line.len() - trimmed.len() > 3 {
            return None;
        }
        let marker = *trimmed.as_bytes().first()?;
        if marker != b'`' && marker != b'~' {
            return None;
        }
        let len = trimmed.bytes().take_while(|&b| b == marker).count();
        if len < 3 || (marker == b'`' && trimmed[len..].contains('`')) {
            return None;
        }
        Some(Fence { marker, len })
    }

    fn is_closed_by(&self, line: &str) -> bool {
        let trimmed = line.trim();
        let len = trimmed.bytes().take_while(|&b| b == self.marker).count();
        len >= self.len && len == trimmed.len()
    }
}

/// A unit the piece packer never splits unless it alone is over the bound.
struct Block<'a> {
    text: &'a str,
    fenced: bool,
}

/// Cuts a section body into pieces of at most about [`MAX_PASSAGE_CHARS`], packing whole
/// paragraphs and fenced blocks, overlapping consecutive pieces by the tail of a paragraph.
fn pieces(body: &str) -> Vec<String> {
    let body = body.trim_matches('\n');
    if body.trim().is_empty() {
        return Vec::new();
    }
    if body.len() <= MAX_PASSAGE_CHARS {
        return vec![body.trim_end().to_string()];
    }
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    // The overlap to put in front of the next piece: the tail of the last paragraph packed.
    let mut carry = String::new();
    for block in blocks(body) {
        for unit in split_oversized(&block) {
            let extra = if current.is_empty() { 0 } else { 2 };
            if !current.is_empty() && current.len() + extra + unit.len() > MAX_PASSAGE_CHARS {
                out.push(std::mem::take(&mut current));
                if !carry.is_empty()
                    && carry.len() + 2 + unit.len() <= MAX_PASSAGE_CHARS + OVERLAP_CHARS
                {
                    current.push('…');
                    current.push_str(&carry);
                }
            }
            if !current.is_empty() {
                current.push_str("\n\n");
            }
            current.push_str(&unit);
            carry = if block.fenced {
                String::new()
            } else {
                tail(&unit, OVERLAP_CHARS).to_string()
            };
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// Paragraphs (separated by blank lines) and fenced blocks of a section body.
fn blocks(body: &str) -> Vec<Block<'_>> {
    let mut blocks = Vec::new();
    let mut start: Option<usize> = None;
    let mut fence: Option<Fence> = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        if let Some(open) = &fence {
            if open.is_closed_by(content) {
                fence = None;
                if let Some(s) = start.take() {
                    blocks.push(Block {
                        text: body[s..offset].trim_end(),
                        fenced: true,
                    });
                }
            }
            continue;
        }
        if let Some(opened) = Fence::opened_by(content) {
            if let Some(s) = start.take() {
                push_paragraph(&mut blocks, &body[s..line_start]);
            }
            fence = Some(opened);
            start = Some(line_start);
            continue;
        }
        if content.trim().is_empty() {
            if let Some(s) = start.take() {
                push_paragraph(&mut blocks, &body[s..line_start]);
            }
        } else if start.is_none() {
            start = Some(line_start);
        }
    }
    if let Some(s) = start {
        let text = body[s..].trim_end();
        if !text.is_empty() {
            blocks.push(Block {
                text,
                // An unclosed fence runs to the end of the section.
                fenced: fence.is_some(),
            });
        }
    }
    blocks
}

fn push_paragraph<'a>(blocks: &mut Vec<Block<'a>>, text: &'a str) {
    let text = text.trim_end();
    if !text.trim().is_empty() {
        blocks.push(Block {
            text,
            fenced: false,
        });
    }
}

/// Splits a block that alone exceeds the bound: at line boundaries (a fenced block's pieces each
/// get the fence lines again so they stay valid Markdown), then at spaces, then anywhere.
fn split_oversized(block: &Block<'_>) -> Vec<String> {
    if block.text.len() <= MAX_PASSAGE_CHARS {
        return vec![block.text.to_string()];
    }
    let (open, close, inner) = if block.fenced {
        let first_line_end = block.text.find('\n').unwrap_or(block.text.len());
        let open = &block.text[..first_line_end];
        let after_open = block.text.get(first_line_end + 1..).unwrap_or("");
        let (inner, close) = match after_open.rfind('\n') {
            Some(last) if Fence::opened_by(&after_open[last + 1..]).is_some() => {
                (&after_open[..last], &after_open[last + 1..])
            }
            _ => (after_open, ""),
        };
        let close = if close.is_empty() {
            open.trim_start()
                .chars()
                .take_while(|c| *c == '`' || *c == '~')
                .collect::<String>()
        } else {
            close.to_string()
        };
        (open.to_string(), close, inner)
    } else {
        (String::new(), String::new(), block.text)
    };
    let frame = if block.fenced {
        open.len() + close.len() + 2
    } else {
        0
    };
    let budget = MAX_PASSAGE_CHARS.saturating_sub(frame).max(200);
    let mut parts = Vec::new();
    let mut current = String::new();
    for line in inner.lines() {
        for segment in split_line(line, budget) {
            if !current.is_empty() && current.len() + 1 + segment.len() > budget {
                parts.push(std::mem::take(&mut current));
            }
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(segment);
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    if block.fenced {
        parts
            .into_iter()
            .map(|p| format!("{open}\n{p}\n{close}"))
            .collect()
    } else {
        parts
    }
}

/// Cuts one over-long line at spaces (or, for an unbroken run, at character boundaries).
fn split_line(line: &str, budget: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while rest.len() > budget {
        let mut cut = floor_char_boundary(rest, budget);
        if let Some(space) = rest[..cut].rfind(' ')
            && space > budget / 2
        {
            cut = space;
        }
        if cut == 0 {
            cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        out.push(&rest[..cut]);
        rest = rest[cut..].trim_start_matches(' ');
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest);
    }
    out
}

/// The last `max` bytes of `text`, starting at a word boundary.
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let start = ceil_char_boundary(text, text.len() - max);
    let candidate = &text[start..];
    match candidate.find(char::is_whitespace) {
        Some(space) if space + 1 < candidate.len() => candidate[space..].trim_start(),
        _ => candidate,
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    while index < text.len() && !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_slugs() {
        assert_eq!(slugify("Connection properties"), "connection-properties");
        assert_eq!(
            slugify("Mapping: filter, rename, exclude, constant, cast"),
            "mapping-filter-rename-exclude-constant-cast"
        );
        assert_eq!(
            strip_inline_markdown("`cursor`: an opaque cursor in each answer"),
            "cursor: an opaque cursor in each answer"
        );
        assert_eq!(
            slugify(&strip_inline_markdown(
                "`batch <N>: column '<col>', row <R> of the batch: cannot cast '<value>' to <type>`"
            )),
            "batch-n-column-col-row-r-of-the-batch-cannot-cast-value-to-type"
        );
        assert_eq!(slugify("Keys and create"), "keys-and-create");
        assert_eq!(slugify("a / b"), "a--b");
        assert_eq!(
            strip_inline_markdown("See [the docs](x.md#y) now"),
            "See the docs now"
        );
    }

    #[test]
    fn headings_make_paths_and_anchors() {
        let doc = "# PostgreSQL\n\nIntro text.\n\n## Modes\n\nAbout modes.\n\n### merge\n\nUpserts.\n\n\
                   ```sh\n# not a heading\n```\n\n## Modes\n\nAgain.\n";
        let split = split_markdown(doc, "fallback");
        assert_eq!(split.title, "PostgreSQL");
        let summary: Vec<(String, &str)> = split
            .passages
            .iter()
            .map(|p| (p.path.join(" > "), p.anchor.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("PostgreSQL".to_string(), "postgresql"),
                ("PostgreSQL > Modes".to_string(), "modes"),
                ("PostgreSQL > Modes > merge".to_string(), "merge"),
                ("PostgreSQL > Modes".to_string(), "modes-1"),
            ]
        );
        assert!(split.passages[2].text.contains("# not a heading"));
    }

    #[test]
    fn documents_without_title_use_the_fallback() {
        let split = split_markdown("Some text.\n\n## Part\n\nMore.", "notes");
        assert_eq!(split.title, "notes");
        assert_eq!(split.passages[0].path, vec!["notes".to_string()]);
        assert_eq!(split.passages[0].anchor, "");
        assert_eq!(
            split.passages[1].path,
            vec!["notes".to_string(), "Part".to_string()]
        );
        let plain = split_plain_text("# not a heading\nbody", "readme");
        assert_eq!(plain.passages.len(), 1);
        assert!(plain.passages[0].text.starts_with("# not a heading"));
    }

    #[test]
    fn long_sections_are_bounded_overlapping_and_keep_code_blocks_whole() {
        let paragraph = "word ".repeat(60); // 300 bytes
        let code = format!("```\n{}```", "let x = 1;\n".repeat(40)); // ~450 bytes
        let body = format!(
            "# T\n\n{p}\n\n{p}\n\n{p}\n\n{code}\n\n{p}\n\n{p}\n\n{p}\n\n{p}\n",
            p = paragraph.trim_end()
        );
        let split = split_markdown(&body, "t");
        assert!(split.passages.len() >= 3, "{:?}", split.passages.len());
        for passage in &split.passages {
            assert!(
                passage.text.len() <= MAX_PASSAGE_CHARS + OVERLAP_CHARS + 8,
                "{}",
                passage.text.len()
            );
            // Every fence opened in a passage is closed in it.
            assert_eq!(
                passage.text.matches("```").count() % 2,
                0,
                "{}",
                passage.text
            );
        }
        assert!(split.passages.iter().any(|p| p.text.contains(&code)));
        assert!(split.passages[1].text.starts_with('…'));
    }

    #[test]
    fn oversized_blocks_are_cut_with_fences_repeated() {
        let code = format!("```sql\n{}```\n", "select 1;\n".repeat(400));
        let split = split_markdown(&format!("# T\n\n{code}"), "t");
        assert!(split.passages.len() > 2);
        for passage in &split.passages {
            assert!(passage.text.starts_with("```sql\n"), "{}", passage.text);
            assert!(passage.text.ends_with("\n```"), "{}", passage.text);
            assert!(passage.text.len() <= MAX_PASSAGE_CHARS + OVERLAP_CHARS);
        }
        let long_word = "x".repeat(5_000);
        let split = split_plain_text(&long_word, "t");
        assert_eq!(split.passages.len(), 5);
        assert!(
            split
                .passages
                .iter()
                .all(|p| p.text.len() <= MAX_PASSAGE_CHARS + OVERLAP_CHARS + 8)
        );
        let unicode = "é".repeat(3_000);
        assert!(split_plain_text(&unicode, "t").passages.len() > 1);
    }
}

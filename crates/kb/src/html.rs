//! HTML to Markdown-like text: headings become `#` lines so the Markdown splitter can cut at
//! them, block elements become line breaks, `<pre>` becomes a fenced block, scripts and styles
//! are dropped and entities decoded. A small tag scanner instead of a DOM: the knowledge base
//! needs the words and the outline, not a browser engine.

/// The result of converting an HTML page.
pub(crate) struct HtmlText {
    /// The `<title>` element's text, used when the page has no `<h1>`.
    pub title: Option<String>,
    /// Markdown-like text: `#` headings, paragraphs separated by blank lines, fenced `<pre>`.
    pub markdown: String,
}

/// Elements whose content is never text a reader sees.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "math", "iframe", "object", "canvas",
];

/// Elements that start and end a paragraph-like block.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "nav",
    "aside",
    "blockquote",
    "ul",
    "ol",
    "dl",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "figure",
    "figcaption",
    "form",
    "fieldset",
    "address",
    "details",
    "summary",
    "hr",
    "body",
    "caption",
];

/// Converts an HTML document to Markdown-like text.
pub(crate) fn html_to_markdown(html: &str) -> HtmlText {
    let mut converter = Converter {
        out: String::with_capacity(html.len() / 2),
        title: None,
        heading_level: 0,
        pre_depth: 0,
    };
    converter.run(html);
    HtmlText {
        title: converter.title,
        markdown: tidy(&converter.out),
    }
}

struct Converter {
    out: String,
    title: Option<String>,
    /// The level of the heading being written, 0 outside headings (newlines become spaces).
    heading_level: usize,
    /// Nesting of `<pre>`: whitespace is kept verbatim inside.
    pre_depth: usize,
}

impl Converter {
    fn run(&mut self, html: &str) {
        let bytes = html.as_bytes();
        let mut i = 0;
        let mut text_start = 0;
        while i < bytes.len() {
            if bytes[i] != b'<' {
                i += 1;
                continue;
            }
            let rest = &html[i..];
            let next = bytes.get(i + 1).copied().unwrap_or(b' ');
            let is_markup =
                next.is_ascii_alphabetic() || next == b'/' || next == b'!' || next == b'?';
            if !is_markup {
                // A bare `<` in text ("a < b"): it is text.
                i += 1;
                continue;
            }
            self.text(&html[text_start..i]);
            if rest.starts_with("<!--") {
                i = find_from(html, i + 4, "-->").map_or(bytes.len(), |end| end + 3);
            } else if next == b'!' || next == b'?' {
                i = find_byte(bytes, i, b'>').map_or(bytes.len(), |end| end + 1);
            } else {
                let tag_end = tag_end(bytes, i).unwrap_or(bytes.len());
                let closing = next == b'/';
                let name_start = if closing { i + 2 } else { i + 1 };
                let name: String = html[name_start..tag_end.min(bytes.len())]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .map(|c| c.to_ascii_lowercase())
                    .collect();
                i = (tag_end + 1).min(bytes.len());
                let self_closing = tag_end > 0 && bytes.get(tag_end - 1) == Some(&b'/');
                if !closing && !self_closing && SKIPPED.contains(&name.as_str()) {
                    i = skip_element(html, i, &name);
                } else if !closing && name == "title" {
                    let end = find_closing(html, i, "title");
                    let text = collapse_whitespace(&decode_entities(&html[i..end.0]));
                    if self.title.is_none() && !text.is_empty() {
                        self.title = Some(text);
                    }
                    i = end.1;
                } else {
                    self.tag(&name, closing);
                }
            }
            text_start = i;
        }
        if text_start < bytes.len() {
            self.text(&html[text_start..]);
        }
    }

    fn tag(&mut self, name: &str, closing: bool) {
        let heading = match name.as_bytes() {
            [b'h', d @ b'1'..=b'6'] => Some(usize::from(d - b'0')),
            _ => None,
        };
        if let Some(level) = heading {
            if closing {
                self.heading_level = 0;
                self.out.push_str("\n\n");
            } else {
                self.out.push_str("\n\n");
                self.out.push_str(&"#".repeat(level));
                self.out.push(' ');
                self.heading_level = level;
            }
            return;
        }
        match name {
            "br" => self.out.push('\n'),
            "li" if !closing => self.out.push_str("\n- "),
            "tr" | "dt" | "dd" | "li" => self.out.push('\n'),
            "td" | "th" if !closing => self.out.push_str(" | "),
            "pre" => {
                if closing {
                    self.pre_depth = self.pre_depth.saturating_sub(1);
                    self.out.push_str("\n```\n\n");
                } else {
                    self.pre_depth += 1;
                    self.out.push_str("\n\n```\n");
                }
            }
            "code" if self.pre_depth == 0 => self.out.push('`'),
            _ if BLOCKS.contains(&name) => self.out.push_str("\n\n"),
            _ => {}
        }
    }

    fn text(&mut self, raw: &str) {
        if raw.is_empty() {
            return;
        }
        let decoded = decode_entities(raw);
        if self.pre_depth > 0 {
            self.out.push_str(&decoded);
            return;
        }
        let mut collapsed = String::with_capacity(decoded.len());
        let mut last_space = self.out.ends_with([' ', '\n']) || self.out.is_empty();
        for c in decoded.chars() {
            if c.is_whitespace() {
                if !last_space {
                    collapsed.push(' ');
                    last_space = true;
                }
            } else {
                collapsed.push(c);
                last_space = false;
            }
        }
        // Page text that starts a line with `#` must not turn into a heading of its own.
        let at_line_start = self.out.is_empty() || self.out.ends_with('\n');
        if self.heading_level == 0 && at_line_start && collapsed.starts_with('#') {
            self.out.push('\\');
        }
        self.out.push_str(&collapsed);
    }
}

/// The index of the `>` that ends the tag starting at `start`, skipping quoted attribute values.
fn tag_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut quote: Option<u8> = None;
    for (offset, &b) in bytes[start..].iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return Some(start + offset),
            None => {}
        }
    }
    None
}

fn find_byte(bytes: &[u8], from: usize, needle: u8) -> Option<usize> {
    bytes[from..]
        .iter()
        .position(|&b| b == needle)
        .map(|p| p + from)
}

fn find_from(haystack: &str, from: usize, needle: &str) -> Option<usize> {
    haystack.get(from..)?.find(needle).map(|p| p + from)
}

/// Finds `</name` (any case) from `from`: returns (where the content ends, where scanning resumes).
fn find_closing(html: &str, from: usize, name: &str) -> (usize, usize) {
    let lower_tail = html[from..].to_ascii_lowercase();
    let needle = format!("</{name}");
    match lower_tail.find(&needle) {
        Some(pos) => {
            let start = from + pos;
            let resume = find_byte(html.as_bytes(), start, b'>').map_or(html.len(), |e| e + 1);
            (start, resume)
        }
        None => (html.len(), html.len()),
    }
}

/// Skips a script-like element's content and its closing tag.
fn skip_element(html: &str, from: usize, name: &str) -> usize {
    find_closing(html, from, name).1
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Trims trailing spaces on each line, removes spaces at line starts outside fenced blocks and
/// keeps at most one blank line in a row.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    let mut in_fence = false;
    for line in text.lines() {
        let line = if in_fence {
            line.trim_end()
        } else {
            line.trim()
        };
        if line.starts_with("```") {
            in_fence = !in_fence;
        }
        if line.is_empty() && !in_fence {
            blank_run += 1;
            if blank_run > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// Decodes `&name;`, `&#123;` and `&#x1F600;`. Unknown names are left as written.
pub(crate) fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        // Entities are short; a `;` further away means this `&` is just text.
        let semi = after.bytes().take(32).position(|b| b == b';');
        let decoded = semi.and_then(|semi| {
            let entity = &after[..semi];
            decode_entity(entity).map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(entity: &str) -> Option<char> {
    if let Some(number) = entity.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse::<u32>().ok()?,
        };
        return Some(
            char::from_u32(code)
                .filter(|&c| c != '\0')
                .unwrap_or('\u{FFFD}'),
        );
    }
    let c = match entity {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "sbquo" => '‚',
        "ldquo" => '“',
        "rdquo" => '”',
        "bdquo" => '„',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "deg" => '°',
        "times" => '×',
        "divide" => '÷',
        "plusmn" => '±',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "para" => '¶',
        "frac12" => '½',
        "frac14" => '¼',
        "frac34" => '¾',
        "larr" => '←',
        "rarr" => '→',
        "uarr" => '↑',
        "darr" => '↓',
        "harr" => '↔',
        "le" => '≤',
        "ge" => '≥',
        "ne" => '≠',
        "asymp" => '≈',
        "infin" => '∞',
        "check" => '✓',
        "shy" => '\u{AD}',
        "zwj" => '\u{200D}',
        "zwnj" => '\u{200C}',
        "ensp" => '\u{2002}',
        "emsp" => '\u{2003}',
        "thinsp" => '\u{2009}',
        "iexcl" => '¡',
        "iquest" => '¿',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "szlig" => 'ß',
        "eacute" => 'é',
        "egrave" => 'è',
        "Eacute" => 'É',
        "aacute" => 'á',
        "agrave" => 'à',
        "ccedil" => 'ç',
        "ntilde" => 'ñ',
        _ => return None,
    };
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_become_markdown_and_scripts_vanish() {
        let page = "<!DOCTYPE html><html><head><title>Runbook &amp; notes</title>\
            <style>h1 { color: red }</style><script>var x = '<h1>no</h1>';</script></head>\
            <body><h1>Deploy</h1><p>Run <code>make</code> &gt; then&nbsp;wait.</p>\
            <H2 class=\"x\">Roll back</H2><ul><li>one</li><li>two &#x2713; &#169;</li></ul>\
            <pre>line 1\n  line 2</pre><!-- hidden --></body></html>";
        let converted = html_to_markdown(page);
        assert_eq!(converted.title.as_deref(), Some("Runbook & notes"));
        let md = converted.markdown;
        assert!(md.contains("# Deploy\n"), "{md}");
        assert!(md.contains("## Roll back\n"), "{md}");
        assert!(md.contains("Run `make` > then wait."), "{md}");
        assert!(md.contains("- two ✓ ©"), "{md}");
        assert!(md.contains("```\nline 1\n  line 2\n```"), "{md}");
        assert!(!md.contains("color"), "{md}");
        assert!(!md.contains("no"), "{md}");
        assert!(!md.contains("hidden"), "{md}");
    }

    #[test]
    fn broken_markup_and_stray_ampersands_are_text() {
        let md = html_to_markdown("a < b & c &bogus; &#xZZ; <p>#tag <b attr='>'>bold</b>").markdown;
        assert_eq!(md, "a < b & c &bogus; &#xZZ;\n\n\\#tag bold");
        let unterminated = html_to_markdown("<p>text<script>never closed").markdown;
        assert_eq!(unterminated, "text");
    }
}

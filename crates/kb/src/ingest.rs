//! Turning uploaded bytes into passages: size and text checks, format detection (Markdown, plain
//! text, HTML; PDF and Office files refused with a fix), conversion and splitting.

use serde::{Deserialize, Serialize};

use crate::chunk::{SplitDocument, split_markdown, split_plain_text};
use crate::error::KbError;
use crate::html::html_to_markdown;

/// The largest document the knowledge base accepts, in bytes (16 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// How a document was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentFormat {
    Markdown,
    Text,
    Html,
}

impl DocumentFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentFormat::Markdown => "markdown",
            DocumentFormat::Text => "text",
            DocumentFormat::Html => "html",
        }
    }
}

/// Checks, converts and splits one document. `name` decides the format by its extension
/// (`.md`, `.markdown`, `.html`, `.htm`, anything else is text unless it starts like HTML).
pub(crate) fn parse_document(
    name: &str,
    bytes: &[u8],
) -> Result<(DocumentFormat, SplitDocument), KbError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(KbError::TooLarge {
            name: name.to_string(),
            size: bytes.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    let extension = extension(name);
    refuse_known_binary_formats(name, &extension, bytes)?;
    let text = decode_text(name, bytes)?;
    let stem = file_stem(name);
    let format = match extension.as_str() {
        "md" | "markdown" | "mdown" | "mkd" | "mdx" => DocumentFormat::Markdown,
        "html" | "htm" | "xhtml" => DocumentFormat::Html,
        _ if looks_like_html(text) => DocumentFormat::Html,
        _ => DocumentFormat::Text,
    };
    let split = match format {
        DocumentFormat::Markdown => split_markdown(text, &stem),
        DocumentFormat::Text => split_plain_text(text, &stem),
        DocumentFormat::Html => {
            let converted = html_to_markdown(text);
            let fallback = converted.title.unwrap_or(stem);
            split_markdown(&converted.markdown, &fallback)
        }
    };
    if split.passages.is_empty() {
        return Err(KbError::Empty {
            name: name.to_string(),
        });
    }
    Ok((format, split))
}

fn extension(name: &str) -> String {
    let file = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match file.rsplit_once('.') {
        Some((base, ext)) if !base.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// The file name without folders and extension: the title of a document that has no heading.
fn file_stem(name: &str) -> String {
    let file = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match file.rsplit_once('.') {
        Some((base, _)) if !base.is_empty() => base.to_string(),
        _ => file.to_string(),
    }
}

fn refuse_known_binary_formats(name: &str, extension: &str, bytes: &[u8]) -> Result<(), KbError> {
    if extension == "pdf" || bytes.starts_with(b"%PDF-") {
        return Err(KbError::Unsupported {
            name: name.to_string(),
            format: "PDF",
            fix: "convert it to text first (for example `pdftotext file.pdf file.txt`) and add the text file",
        });
    }
    let office = match extension {
        "docx" | "doc" | "odt" | "rtf" => Some("word-processor"),
        "xlsx" | "xls" | "ods" => Some("spreadsheet"),
        "pptx" | "ppt" | "odp" => Some("presentation"),
        _ => None,
    };
    if let Some(format) = office {
        return Err(KbError::Unsupported {
            name: name.to_string(),
            format,
            fix: "save or export it as Markdown, plain text or HTML and add that file",
        });
    }
    Ok(())
}

/// The document as UTF-8 text without a byte-order mark, or a `NotText` error saying why not.
fn decode_text<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a str, KbError> {
    let not_text = |reason: String| KbError::NotText {
        name: name.to_string(),
        reason,
    };
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(not_text("it is encoded as UTF-16".to_string()));
    }
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(not_text(format!(
            "it contains binary data (a NUL byte at offset {offset})"
        )));
    }
    std::str::from_utf8(bytes).map_err(|err| {
        not_text(format!(
            "it is not valid UTF-8 (the first invalid byte is at offset {})",
            err.valid_up_to()
        ))
    })
}

fn looks_like_html(text: &str) -> bool {
    let start: String = text
        .trim_start()
        .chars()
        .take(15)
        .collect::<String>()
        .to_ascii_lowercase();
    start.starts_with("<!doctype html") || start.starts_with("<html")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_and_binary_refused() {
        let (format, split) = parse_document("notes/Runbook.MD", b"# Runbook\n\nText.").unwrap();
        assert_eq!(format, DocumentFormat::Markdown);
        assert_eq!(split.title, "Runbook");
        let (format, split) = parse_document("notes.txt", "\u{FEFF}plain".as_bytes()).unwrap();
        assert_eq!(format, DocumentFormat::Text);
        assert_eq!(split.title, "notes");
        let (format, split) =
            parse_document("page", b"<!DOCTYPE html><title>T</title><p>x</p>").unwrap();
        assert_eq!(format, DocumentFormat::Html);
        assert_eq!(split.title, "T");

        let err = parse_document("a.bin", &[0x89, b'P', b'N', b'G', 0, 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'a.bin' is not a text document: it contains binary data (a NUL byte at offset 4); \
             add Markdown, plain text or HTML saved as UTF-8"
        );
        let err = parse_document("latin1.txt", b"caf\xe9").unwrap_err();
        assert!(err.to_string().contains("offset 3"), "{err}");
        let err = parse_document("report.pdf", b"%PDF-1.7").unwrap_err();
        assert!(err.to_string().contains("pdftotext"), "{err}");
        let err = parse_document("empty.md", b"  \n\n").unwrap_err();
        assert!(matches!(err, KbError::Empty { .. }));
        let err = parse_document("u16.txt", &[0xFF, 0xFE, b'a', 0]).unwrap_err();
        assert!(err.to_string().contains("UTF-16"), "{err}");
    }
}

//! File formats, how they are recognised from file names, and the CSV dialect options.

use etl_model::{ConnectorError, Props};

/// The formats the connector reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Delimited text with optional header row (`.csv`, `.tsv`).
    Csv,
    /// One JSON document: an array of records, or an object holding one (`.json`).
    Json,
    /// Newline-delimited JSON: one record per line (`.ndjson`, `.jsonl`).
    Ndjson,
}

impl Format {
    /// The names the `format` property accepts.
    pub const NAMES: &'static [&'static str] = &["csv", "json", "ndjson"];

    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        match text.trim().to_ascii_lowercase().as_str() {
            "csv" | "tsv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            _ => None,
        }
    }

    /// The format a file name's extension announces, if any.
    pub fn from_name(name: &str) -> Option<Format> {
        match extension(name)?.as_str() {
            "csv" | "tsv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            _ => None,
        }
    }
}

/// Lower-cased extension of the last path component.
fn extension(name: &str) -> Option<String> {
    let file = name.rsplit(['/', '\\']).next()?;
    let (stem, ext) = file.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// `.tsv` files default to a tab delimiter, everything else to a comma.
pub fn is_tsv(name: &str) -> bool {
    extension(name).as_deref() == Some("tsv")
}

/// The format to use for one file: the flow option wins, then the connection's `format`, then
/// the file's extension. `option_key` names the flow option in the error (`source.format`).
pub fn resolve(
    option: &Props,
    connection: &Props,
    file: &str,
    option_key: &str,
) -> Result<Format, ConnectorError> {
    if let Some(f) = explicit(option, connection)? {
        return Ok(f);
    }
    Format::from_name(file).ok_or_else(|| {
        ConnectorError::config(format!(
            "cannot tell the format of '{file}' from its extension; name it .csv, .tsv, .json, \
             .ndjson or .jsonl, or set {option_key}=csv|json|ndjson (or format= on the connection)"
        ))
    })
}

/// The format set by the flow option or the connection, if either sets one.
pub fn explicit(option: &Props, connection: &Props) -> Result<Option<Format>, ConnectorError> {
    for (props, key) in [(option, "format"), (connection, "format")] {
        if let Some(v) = props.get(key) {
            return Format::parse(v).map(Some).ok_or_else(|| {
                ConnectorError::config(format!(
                    "property 'format' must be one of csv, json, ndjson, got '{v}'"
                ))
            });
        }
    }
    Ok(None)
}

/// Parses a delimiter: one ASCII character, or a name (`tab`, `\t`, `comma`, `semicolon`,
/// `pipe`, `space`), so flows can name characters that are awkward to quote.
pub fn parse_delimiter(key: &str, text: &str) -> Result<u8, ConnectorError> {
    let byte = match text {
        "\t" | "\\t" => b'\t',
        " " => b' ',
        other => match other.trim().to_ascii_lowercase().as_str() {
            "tab" => b'\t',
            "comma" => b',',
            "semicolon" => b';',
            "pipe" => b'|',
            "space" => b' ',
            t if t.len() == 1 && t.is_ascii() => other.trim().as_bytes()[0],
            _ => {
                return Err(ConnectorError::config(format!(
                    "'{key}' must be one character (e.g. , ; | or tab), got '{text}'"
                )));
            }
        },
    };
    if matches!(byte, b'\n' | b'\r' | b'"') {
        return Err(ConnectorError::config(format!(
            "'{key}' cannot be a line break or a double quote; use , ; | or tab"
        )));
    }
    Ok(byte)
}

/// Parses the quote character; `none` turns quoting off (quotes are then ordinary characters).
pub fn parse_quote(key: &str, text: &str) -> Result<Option<u8>, ConnectorError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if t.len() == 1 && t.is_ascii() && !matches!(t, "\n" | "\r") {
        return Ok(Some(t.as_bytes()[0]));
    }
    Err(ConnectorError::config(format!(
        "'{key}' must be one character such as \" or ', or none to turn quoting off, got '{text}'"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names() {
        assert_eq!(Format::from_name("a/b/orders.CSV"), Some(Format::Csv));
        assert_eq!(Format::from_name("x.tsv"), Some(Format::Csv));
        assert_eq!(Format::from_name("x.jsonl"), Some(Format::Ndjson));
        assert_eq!(Format::from_name("x.json"), Some(Format::Json));
        assert_eq!(Format::from_name("x.dat"), None);
        assert_eq!(Format::from_name("noext"), None);
        assert!(is_tsv("dir/a.TSV"));
        assert!(!is_tsv("dir.tsv/a.csv"));
    }

    #[test]
    fn option_beats_connection_beats_extension() {
        let opt = Props::new().with("format", "ndjson");
        let conn = Props::new().with("format", "json");
        assert_eq!(
            resolve(&opt, &conn, "a.csv", "source.format").unwrap(),
            Format::Ndjson
        );
        assert_eq!(
            resolve(&Props::new(), &conn, "a.csv", "source.format").unwrap(),
            Format::Json
        );
        let err = resolve(&Props::new(), &Props::new(), "a.dat", "source.format").unwrap_err();
        assert!(err.message.contains("'a.dat'"), "{}", err.message);
        assert!(err.message.contains("source.format"), "{}", err.message);
    }

    #[test]
    fn delimiters_and_quotes() {
        assert_eq!(parse_delimiter("d", "\\t").unwrap(), b'\t');
        assert_eq!(parse_delimiter("d", "\t").unwrap(), b'\t');
        assert_eq!(parse_delimiter("d", "TAB").unwrap(), b'\t');
        assert_eq!(parse_delimiter("d", ";").unwrap(), b';');
        assert_eq!(parse_delimiter("d", "pipe").unwrap(), b'|');
        assert!(parse_delimiter("d", ";;").is_err());
        assert!(parse_delimiter("d", "\"").is_err());
        assert_eq!(parse_quote("q", "'").unwrap(), Some(b'\''));
        assert_eq!(parse_quote("q", "none").unwrap(), None);
        assert!(parse_quote("q", "ab").is_err());
    }
}

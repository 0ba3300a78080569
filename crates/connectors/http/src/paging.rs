//! Pagination: the six styles an API may use to hand out its records page by page, what each
//! sends with the next request, and when each stops.

use etl_model::{ConnectorError, Props};
use reqwest::Url;
use reqwest::header::HeaderMap;

use crate::records::describe_body;

pub(crate) const PAGINATION_CHOICES: &[&str] = &[
    "none",
    "page",
    "offset",
    "cursor",
    "next_url",
    "link_header",
];
pub(crate) const PAGINATION_IN_CHOICES: &[&str] = &["query", "body"];

/// The configured style with its parameters.
#[derive(Clone, Debug)]
pub(crate) enum Style {
    None,
    Page {
        param: String,
        next: u64,
    },
    Offset {
        param: String,
        limit_param: String,
        next: u64,
    },
    Cursor {
        param: String,
        path: String,
        next: Option<String>,
    },
    NextUrl {
        path: String,
    },
    LinkHeader,
}

impl Style {
    pub fn name(&self) -> &'static str {
        match self {
            Style::None => "none",
            Style::Page { .. } => "page",
            Style::Offset { .. } => "offset",
            Style::Cursor { .. } => "cursor",
            Style::NextUrl { .. } => "next_url",
            Style::LinkHeader => "link_header",
        }
    }
}

/// Pagination options of one flow source.
#[derive(Clone, Debug)]
pub(crate) struct Paging {
    pub style: Style,
    pub page_size: Option<u64>,
    pub page_size_param: String,
    /// Send page/offset/limit/cursor parameters in the JSON body instead of the query string.
    pub in_body: bool,
    pub max_pages: Option<u64>,
}

/// Options that belong to one style only, so a mismatch is reported rather than ignored.
const STYLE_OPTIONS: &[(&str, &str)] = &[
    ("page_param", "page"),
    ("page_start", "page"),
    ("offset_param", "offset"),
    ("limit_param", "offset"),
    ("cursor_param", "cursor"),
    ("cursor_path", "cursor"),
    ("next_url_path", "next_url"),
];

impl Paging {
    pub fn from_options(o: &Props) -> Result<Paging, ConnectorError> {
        let style_name = match o.get("pagination") {
            Some(_) => o.choice("pagination", PAGINATION_CHOICES, "none")?,
            // The path options are only meaningful for one style each: take the hint.
            None if o.get("cursor_path").is_some() => "cursor",
            None if o.get("next_url_path").is_some() => "next_url",
            None => "none",
        };
        for (key, owner) in STYLE_OPTIONS {
            if o.get(key).is_some() && *owner != style_name {
                return Err(ConnectorError::config(format!(
                    "source option '{key}' only applies to pagination={owner}, but pagination is {style_name}; set source.pagination={owner} or remove source.{key}"
                )));
            }
        }
        let style = match style_name {
            "page" => Style::Page {
                param: o.get_or("page_param", "page").to_string(),
                next: o.u64_or("page_start", 1)?,
            },
            "offset" => Style::Offset {
                param: o.get_or("offset_param", "offset").to_string(),
                limit_param: o.get_or("limit_param", "limit").to_string(),
                next: 0,
            },
            "cursor" => Style::Cursor {
                param: o.get_or("cursor_param", "cursor").to_string(),
                path: o
                    .get("cursor_path")
                    .ok_or_else(|| {
                        ConnectorError::config(
                            "pagination=cursor needs source.cursor_path, the dot path of the next cursor in each response (e.g. source.cursor_path=meta.next_cursor)",
                        )
                    })?
                    .to_string(),
                next: None,
            },
            "next_url" => Style::NextUrl {
                path: o
                    .get("next_url_path")
                    .ok_or_else(|| {
                        ConnectorError::config(
                            "pagination=next_url needs source.next_url_path, the dot path of the next page's URL in each response (e.g. source.next_url_path=links.next)",
                        )
                    })?
                    .to_string(),
            },
            "link_header" => Style::LinkHeader,
            _ => Style::None,
        };
        let page_size = o.u64("page_size")?;
        if page_size == Some(0) {
            return Err(ConnectorError::config(
                "source option 'page_size' must be at least 1; remove it to let the API choose",
            ));
        }
        let max_pages = o.u64("max_pages")?;
        if max_pages == Some(0) {
            return Err(ConnectorError::config(
                "source option 'max_pages' must be at least 1; remove it for no limit",
            ));
        }
        Ok(Paging {
            style,
            page_size,
            page_size_param: o.get_or("page_size_param", "per_page").to_string(),
            in_body: o.choice("pagination_in", PAGINATION_IN_CHOICES, "query")? == "body",
            max_pages,
        })
    }

    /// Parameters for the next request in the page/offset/cursor styles (and the page size).
    /// Numbers stay numbers so a JSON body gets `"page": 2`, not `"page": "2"`.
    pub fn params(&self, first: bool) -> Vec<(String, serde_json::Value)> {
        let mut out = Vec::new();
        let size = self.page_size.map(serde_json::Value::from);
        match &self.style {
            Style::None => {}
            Style::Page { param, next } => {
                out.push((param.clone(), (*next).into()));
            }
            Style::Offset {
                param,
                limit_param,
                next,
            } => {
                out.push((param.clone(), (*next).into()));
                if let Some(size) = size.clone() {
                    out.push((limit_param.clone(), size));
                }
                return out;
            }
            Style::Cursor { param, next, .. } => {
                if let Some(c) = next {
                    out.push((param.clone(), c.clone().into()));
                }
            }
            // The next URL carries everything after the first page.
            Style::NextUrl { .. } | Style::LinkHeader if !first => return out,
            Style::NextUrl { .. } | Style::LinkHeader => {}
        }
        if let Some(size) = size {
            out.push((self.page_size_param.clone(), size));
        }
        out
    }

    /// The dot path of the value this style reads from each response (cursor or next URL).
    pub fn capture_path(&self) -> Option<&str> {
        match &self.style {
            Style::Cursor { path, .. } | Style::NextUrl { path } => Some(path),
            _ => None,
        }
    }

    /// Advances past a page of `count` records. `captured` is the value found at
    /// [`Paging::capture_path`] in the page `body`. Answers what comes next.
    pub fn advance(
        &mut self,
        count: usize,
        current: &Url,
        headers: &HeaderMap,
        captured: Option<&serde_json::Value>,
        body: &[u8],
    ) -> Result<Next, ConnectorError> {
        let short = |size: Option<u64>| size.is_some_and(|s| (count as u64) < s);
        match &mut self.style {
            Style::None => Ok(Next::Done("pagination=none".into())),
            _ if count == 0 => Ok(Next::Done("the page was empty".into())),
            Style::Page { next, .. } => {
                if short(self.page_size) {
                    return Ok(Next::Done(format!(
                        "the page had {count} records, fewer than page_size={}",
                        self.page_size.unwrap_or_default()
                    )));
                }
                *next += 1;
                Ok(Next::Params)
            }
            Style::Offset { next, .. } => {
                if short(self.page_size) {
                    return Ok(Next::Done(format!(
                        "the page had {count} records, fewer than page_size={}",
                        self.page_size.unwrap_or_default()
                    )));
                }
                *next += count as u64;
                Ok(Next::Params)
            }
            Style::Cursor { path, next, .. } => {
                let found = captured.and_then(scalar_text);
                match found {
                    None => Ok(Next::Done(format!(
                        "the response has no cursor at '{path}'"
                    ))),
                    Some(c) if next.as_deref() == Some(c.as_str()) => {
                        Err(ConnectorError::read(format!(
                            "the API returned the same cursor '{c}' twice at '{path}', which would read the same page forever; check source.cursor_path and source.cursor_param (the parameter the API reads the cursor from)"
                        )))
                    }
                    Some(c) => {
                        *next = Some(c);
                        Ok(Next::Params)
                    }
                }
            }
            Style::NextUrl { path } => match captured.and_then(scalar_text) {
                None => Ok(Next::Done(format!(
                    "the response has no next URL at '{path}'"
                ))),
                Some(link) => {
                    let url = current.join(&link).map_err(|e| {
                        ConnectorError::read(format!(
                            "the next-page URL '{link}' at '{path}' is not a valid URL ({e}); check source.next_url_path (the response has {})",
                            describe_body(body)
                        ))
                    })?;
                    Ok(Next::Url(url))
                }
            },
            Style::LinkHeader => match next_link(headers) {
                None => Ok(Next::Done("the Link header has no rel=\"next\"".into())),
                Some(link) => current.join(&link).map(Next::Url).map_err(|e| {
                    ConnectorError::read(format!(
                        "the Link header's next URL '{link}' is not a valid URL ({e})"
                    ))
                }),
            },
        }
    }
}

/// What follows a page.
#[derive(Debug)]
pub(crate) enum Next {
    /// The same URL with the updated page/offset/cursor parameters.
    Params,
    /// This exact URL.
    Url(Url),
    /// No more pages, and why (for the log).
    Done(String),
}

/// A cursor or URL as text: strings as they are, numbers printed; empty, null and
/// objects count as "no more pages".
fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `rel="next"` target of the RFC 8288 `Link` header(s), if any.
pub(crate) fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(find_rel_next)
}

fn find_rel_next(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = rest[open + 1..close].trim();
        let after = &rest[close + 1..];
        // Parameters run to the next comma that is outside quotes.
        let mut in_quotes = false;
        let mut end = after.len();
        for (i, ch) in after.char_indices() {
            match ch {
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &after[..end];
        let is_next = params.split(';').any(|param| {
            let mut kv = param.splitn(2, '=');
            let key = kv.next().unwrap_or("").trim();
            let value = kv.next().unwrap_or("").trim().trim_matches('"');
            key.eq_ignore_ascii_case("rel")
                && value
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_string());
        }
        rest = after.get(end + 1..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rel_next_among_links() {
        let h = r#"<https://api.github.com/repositories/1/issues?page=1>; rel="prev", <https://api.github.com/repositories/1/issues?page=3>; rel="next", <https://api.github.com/repositories/1/issues?page=5>; rel="last""#;
        assert_eq!(
            find_rel_next(h).as_deref(),
            Some("https://api.github.com/repositories/1/issues?page=3")
        );
        assert_eq!(
            find_rel_next(r#"</a?x=1,2>; title="a, b"; rel="last", </b>; rel="prefetch next""#)
                .as_deref(),
            Some("/b")
        );
        assert_eq!(find_rel_next(r#"</a>; rel="last""#), None);
        assert_eq!(find_rel_next("garbage"), None);
    }

    #[test]
    fn rejects_options_of_another_style() {
        let o: Props = [("pagination", "page"), ("cursor_path", "next")]
            .into_iter()
            .collect();
        let err = Paging::from_options(&o).unwrap_err();
        assert!(
            err.message.contains("only applies to pagination=cursor"),
            "{}",
            err.message
        );
        let o: Props = [("cursor_path", "meta.next")].into_iter().collect();
        assert_eq!(Paging::from_options(&o).unwrap().style.name(), "cursor");
    }

    #[test]
    fn offset_sends_limit_and_advances_by_count() {
        let o: Props = [("pagination", "offset"), ("page_size", "10")]
            .into_iter()
            .collect();
        let mut p = Paging::from_options(&o).unwrap();
        assert_eq!(
            p.params(true),
            vec![
                ("offset".to_string(), 0.into()),
                ("limit".to_string(), 10.into())
            ]
        );
        let url = Url::parse("http://h/x").unwrap();
        let next = p.advance(10, &url, &HeaderMap::new(), None, b"[]").unwrap();
        assert!(matches!(next, Next::Params));
        assert_eq!(p.params(false)[0], ("offset".to_string(), 10.into()));
        let next = p.advance(3, &url, &HeaderMap::new(), None, b"[]").unwrap();
        assert!(matches!(next, Next::Done(_)));
    }
}

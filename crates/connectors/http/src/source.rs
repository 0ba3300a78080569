//! The HTTP source: requests pages one after another, reads the records out of each JSON answer
//! (flattened while parsed) and hands them on in batches, holding at most one batch plus one
//! page.

use std::collections::HashMap;
use std::sync::Arc;

use etl_model::{Batch, ConnectorError, Props, RunContext, Source, SourceRequest, Value};
use reqwest::{Method, Url};

use crate::paging::{Next, Paging, Style};
use crate::records::{FlatPage, Locator, PageError, not_json_message};
use crate::request::{Call, fetch, human};
use crate::settings::Settings;

pub(crate) struct HttpSource {
    s: Arc<Settings>,
    ctx: RunContext,
    method: Method,
    /// The `body` option, parsed; pagination parameters are merged into it when
    /// `pagination_in=body`.
    body: Option<serde_json::Value>,
    /// The object's URL with `query.*` and the incremental parameter, before paging parameters
    /// and credentials.
    object_url: Url,
    paging: Paging,
    locator: Option<Locator>,
    /// The next page's URL in the next_url and link_header styles.
    next_url: Option<Url>,
    /// The current page's records, already flattened: their column names by page column id,
    /// the fields of the records not yet handed on, and how many fields each has.
    page_names: Vec<String>,
    pending: std::vec::IntoIter<(u32, Value)>,
    pending_lens: std::vec::IntoIter<usize>,
    /// Set when a new page arrives, so the batch being built maps the new page's column ids.
    new_page: bool,
    done: bool,
    pages: u64,
    records: u64,
    /// The previous page's body (page and offset styles), to catch an API that ignores the
    /// page parameter. Kept whole rather than hashed: comparing is only needed when the lengths
    /// match, and hashing every body cost more than the page's memory is worth.
    last_page: Option<Vec<u8>>,
    batch_size: usize,
}

impl HttpSource {
    pub(crate) fn open(
        s: Settings,
        request: SourceRequest,
        ctx: &RunContext,
    ) -> Result<HttpSource, ConnectorError> {
        let o: &Props = &request.options;
        let method = match o.choice("method", &["GET", "POST"], "GET")? {
            "POST" => Method::POST,
            _ => Method::GET,
        };
        let paging = Paging::from_options(o)?;
        let body = match o.get("body") {
            None => None,
            Some(text) => Some(serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
                ConnectorError::config(format!(
                    "source option 'body' is not valid JSON ({e}); give the request body as JSON text, e.g. source.body='{{\"status\":\"active\"}}'"
                ))
            })?),
        };
        if body.is_some() && method == Method::GET {
            return Err(ConnectorError::config(
                "source option 'body' is only sent with method=POST; add source.method=POST or remove source.body",
            ));
        }
        if paging.in_body {
            if method != Method::POST {
                return Err(ConnectorError::config(
                    "pagination_in=body puts the paging parameters in a JSON request body, which needs source.method=POST",
                ));
            }
            if body.as_ref().is_some_and(|b| !b.is_object()) {
                return Err(ConnectorError::config(
                    "pagination_in=body needs source.body to be a JSON object (e.g. source.body='{}') so the paging parameters can be added to it",
                ));
            }
        }

        let mut object_url = s.resolve(&request.object)?;
        {
            let mut pairs = object_url.query_pairs_mut();
            for (key, value) in o.prefixed("query.") {
                pairs.append_pair(key, value);
            }
        }
        if let (Some(param), Some(inc)) = (o.get("since_param"), &request.incremental)
            && let Some(after) = inc.after.as_ref().filter(|v| !v.is_null())
        {
            object_url
                .query_pairs_mut()
                .append_pair(param, &after.to_string());
        }
        // `query_pairs_mut` leaves a bare "?" behind when nothing was added.
        if object_url.query() == Some("") {
            object_url.set_query(None);
        }

        let locator = o.get("records_path").map(|p| Locator::Path(p.to_string()));
        Ok(HttpSource {
            s: Arc::new(s),
            ctx: ctx.clone(),
            method,
            body,
            object_url,
            paging,
            locator,
            next_url: None,
            page_names: Vec::new(),
            pending: Vec::new().into_iter(),
            pending_lens: Vec::new().into_iter(),
            new_page: false,
            done: false,
            pages: 0,
            records: 0,
            last_page: None,
            batch_size: request.batch_size.max(1),
        })
    }

    /// The URL and body of the next request.
    fn next_request(&mut self) -> Result<(Url, Option<Vec<u8>>), ConnectorError> {
        let first = self.pages == 0;
        let mut url = match self.next_url.take() {
            Some(u) => u,
            None => self.object_url.clone(),
        };
        let params = self.paging.params(first);
        let mut body = self.body.clone();
        if self.paging.in_body {
            let obj = body.get_or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let serde_json::Value::Object(map) = obj {
                for (k, v) in params {
                    map.insert(k, v);
                }
            }
        } else if !params.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &params {
                match v {
                    serde_json::Value::String(text) => pairs.append_pair(k, text),
                    other => pairs.append_pair(k, &other.to_string()),
                };
            }
        }
        self.s.add_query_credentials(&mut url);
        let body = body
            .map(|b| serde_json::to_vec(&b))
            .transpose()
            .map_err(|e| {
                ConnectorError::config(format!("could not encode the request body: {e}"))
            })?;
        Ok((url, body))
    }

    async fn fetch_page(&mut self) -> Result<(), ConnectorError> {
        self.ctx.check_canceled()?;
        let (url, body) = self.next_request()?;
        let shown = self.s.redact_url(&url);
        let fetched = fetch(
            &self.s,
            &self.ctx,
            Call {
                method: &self.method,
                url: &url,
                body: body.as_deref(),
                lenient: false,
            },
        )
        .await?;
        self.pages += 1;
        let page = self.pages;
        let method = &self.method;

        if matches!(self.paging.style, Style::Page { .. } | Style::Offset { .. }) {
            // Bodies of different length (the usual case) differ without a look at their bytes.
            if self.last_page.as_deref() == Some(&fetched.body[..]) && !fetched.body.is_empty() {
                return Err(ConnectorError::read(format!(
                    "page {page} ({method} {shown}) is identical to the page before it, so the API seems to ignore the {} parameter; check source.{} names the parameter this API pages by, or pick another source.pagination style",
                    if matches!(self.paging.style, Style::Page { .. }) {
                        "page"
                    } else {
                        "offset"
                    },
                    if matches!(self.paging.style, Style::Page { .. }) {
                        "page_param"
                    } else {
                        "offset_param"
                    },
                )));
            }
        }

        let content_type = fetched
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let not_json = |e: &serde_json::Error| {
            ConnectorError::read(format!(
                "{method} {shown}: {}",
                self.s
                    .redact_text(&not_json_message(&fetched.body, content_type, e))
            ))
        };

        let locator = match &self.locator {
            Some(l) => l.clone(),
            None => {
                let l = Locator::detect(&fetched.body).map_err(|e| not_json(&e))?;
                self.ctx
                    .info(&format!("records are read from {}", l.describe()));
                self.locator = Some(l.clone());
                l
            }
        };
        let page_read = locator
            .read(&fetched.body, self.paging.capture_path())
            .map_err(|e| match e {
                PageError::Json(e) => not_json(&e),
                PageError::Shape(why) => {
                    ConnectorError::read(format!("{method} {shown}: {}", self.s.redact_text(&why)))
                }
            })?;
        let count = page_read.records.len();
        self.records += count as u64;
        self.ctx.info(&format!(
            "page {page}: {method} {shown} answered HTTP {} with {count} records in {}",
            fetched.status.as_u16(),
            human(fetched.elapsed)
        ));
        let FlatPage {
            names,
            fields,
            lens,
            ..
        } = page_read.records;
        self.page_names = names;
        self.pending = fields.into_iter();
        self.pending_lens = lens.into_iter();
        self.new_page = true;

        match self.paging.advance(
            count,
            &url,
            &fetched.headers,
            page_read.captured.as_ref(),
            &fetched.body,
        )? {
            Next::Done(why) => self.finish(&why),
            _ if self.paging.max_pages.is_some_and(|m| page >= m) => {
                let why = format!(
                    "max_pages={} was reached (raise or remove source.max_pages to read further)",
                    page
                );
                self.finish(&why)
            }
            Next::Params => {}
            Next::Url(mut next) => {
                self.s.add_query_credentials(&mut next);
                if next == url {
                    return Err(ConnectorError::read(format!(
                        "the API pointed to the page just read ({shown}) as the next page, which would read it forever; check source.{}",
                        if matches!(self.paging.style, Style::LinkHeader) {
                            "pagination"
                        } else {
                            "next_url_path"
                        }
                    )));
                }
                self.next_url = Some(next);
            }
        }
        if matches!(self.paging.style, Style::Page { .. } | Style::Offset { .. }) {
            self.last_page = Some(fetched.body);
        }
        Ok(())
    }

    fn finish(&mut self, why: &str) {
        self.done = true;
        self.ctx.info(&format!(
            "read {} records in {} pages (pagination={}); stopped because {why}",
            self.records,
            self.pages,
            self.paging.style.name()
        ));
    }
}

#[async_trait::async_trait]
impl Source for HttpSource {
    async fn next_batch(&mut self) -> Result<Option<Batch>, ConnectorError> {
        let mut rows = BatchRows::default();
        self.new_page = true;
        while rows.rows.len() < self.batch_size {
            match self.pending_lens.next() {
                Some(n) => {
                    if std::mem::take(&mut self.new_page) {
                        rows.page_changed();
                    }
                    rows.push(&mut self.pending, n, &self.page_names);
                }
                None if self.done => break,
                None => self.fetch_page().await?,
            }
        }
        Ok((!rows.rows.is_empty()).then(|| rows.finish()))
    }
}

/// One batch being filled from flattened pages. Its columns are the union of the fields of
/// its own records in first-seen order, as [`etl_model::RecordBuilder`] makes them; a page's
/// column ids are mapped to batch columns once per page instead of hashing every field name.
#[derive(Default)]
struct BatchRows {
    columns: Vec<String>,
    by_name: HashMap<String, usize>,
    /// Batch column of each column id of the current page (`usize::MAX`: not yet seen).
    of_page: Vec<usize>,
    rows: Vec<Vec<Value>>,
}

impl BatchRows {
    fn page_changed(&mut self) {
        self.of_page.clear();
    }

    /// Moves the next record (its `n` fields) out of `fields` into a row.
    fn push(&mut self, fields: &mut std::vec::IntoIter<(u32, Value)>, n: usize, names: &[String]) {
        let mut row = vec![Value::Null; self.columns.len()];
        for (id, value) in fields.by_ref().take(n) {
            let id = id as usize;
            if id >= self.of_page.len() {
                self.of_page.resize(id + 1, usize::MAX);
            }
            let mut col = self.of_page[id];
            if col == usize::MAX {
                let name = &names[id];
                col = match self.by_name.get(name) {
                    Some(&c) => c,
                    None => {
                        self.columns.push(name.clone());
                        self.by_name.insert(name.clone(), self.columns.len() - 1);
                        self.columns.len() - 1
                    }
                };
                self.of_page[id] = col;
            }
            if col >= row.len() {
                row.resize(col + 1, Value::Null);
            }
            row[col] = value;
        }
        self.rows.push(row);
    }

    /// The batch, every row padded to the full column list.
    fn finish(self) -> Batch {
        let mut batch = Batch::new(self.columns);
        batch.rows = self.rows;
        batch.normalize();
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etl_model::{RecordBuilder, flatten_json};
    use serde_json::json;

    /// Batches cut across pages whose records vary in keys and key order must come out exactly
    /// as `RecordBuilder` builds them from `flatten_json`'s records.
    #[test]
    fn batches_match_record_builder_across_pages() {
        let pages = [
            json!({"data": [{"a": 1, "b": {"c": "x"}}, {"b": {"c": "y"}, "a": 2}, {"d": null}]}),
            json!({"data": [{"e": [1], "a": 3}, {"a": 4, "b": {}}, {"f": true}, {"a": 5}]}),
        ];
        for batch_size in 1..=8 {
            let mut expected = Vec::new();
            let mut builder = RecordBuilder::new();
            let mut got = Vec::new();
            let mut rows = BatchRows::default();
            for page in &pages {
                let body = serde_json::to_vec(page).unwrap();
                let FlatPage {
                    names,
                    fields,
                    lens,
                    ..
                } = Locator::Path("data".into())
                    .read(&body, None)
                    .unwrap()
                    .records;
                let mut fields = fields.into_iter();
                rows.page_changed();
                for (record, n) in page["data"].as_array().unwrap().iter().zip(lens) {
                    builder.push(flatten_json(record));
                    if builder.len() == batch_size {
                        expected.push(builder.take());
                    }
                    rows.push(&mut fields, n, &names);
                    if rows.rows.len() == batch_size {
                        got.push(std::mem::take(&mut rows).finish());
                        rows.page_changed();
                    }
                }
            }
            if !builder.is_empty() {
                expected.push(builder.take());
            }
            if !rows.rows.is_empty() {
                got.push(rows.finish());
            }
            assert_eq!(got, expected, "batch_size={batch_size}");
        }
    }
}

//! The `http` connector: reads records from REST/JSON APIs (a source only), with bearer, basic
//! and API-key authentication, six pagination styles, retries with backoff and timeouts.
//!
//! Construct it with [`HttpConnector::new`] and register it with the engine; call
//! [`ensure_crypto_provider`] once at start-up (the connector also calls it before building a
//! client, so forgetting it is harmless).

mod paging;
mod records;
mod request;
mod settings;
mod source;

use async_trait::async_trait;
use etl_model::{
    ConnectionConfig, Connector, ConnectorError, ConnectorSpec, ObjectInfo, PropSpec, RunContext,
    Source, SourceRequest,
};
use reqwest::Method;

use crate::request::{Call, fetch, human};
use crate::settings::Settings;

/// Installs rustls's `ring` crypto provider as the process default, once. Idempotent: a provider
/// installed earlier (by the binary or another crate) is kept.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed, which is all we need.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The `http` connector type.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpConnector;

impl HttpConnector {
    pub fn new() -> Self {
        HttpConnector
    }
}

static CONNECTION_PROPS: &[PropSpec] = &[
    PropSpec::string("url", "base URL of the API; flow objects are paths appended to it")
        .required()
        .example("https://api.example.com/v1"),
    PropSpec::choice(
        "auth",
        settings::AUTH_CHOICES,
        "authentication scheme; when absent it is inferred from the credential set (token: bearer, api_key: api_key, user: basic), else none",
    )
    .default("none"),
    PropSpec::string("token", "bearer token, sent as 'Authorization: Bearer <token>' (auth=bearer)")
        .secret(),
    PropSpec::string("user", "user name for HTTP basic authentication (auth=basic)"),
    PropSpec::string("password", "password for HTTP basic authentication (auth=basic)").secret(),
    PropSpec::string("api_key", "API key (auth=api_key)").secret(),
    PropSpec::string(
        "api_key_name",
        "header name, or query parameter name with api_key_in=query, that carries the API key",
    )
    .default("X-API-Key"),
    PropSpec::choice(
        "api_key_in",
        settings::API_KEY_IN_CHOICES,
        "send the API key in a header or as a query parameter",
    )
    .default("header"),
    PropSpec::string(
        "header.*",
        "extra request header, e.g. header.Accept=application/vnd.github+json (sent only to the url's host)",
    ),
    PropSpec::duration("timeout", "limit for one request, from connecting to the last byte of the answer")
        .default("30s"),
    PropSpec::integer(
        "max_retries",
        "retries after the first attempt for 408/425/429/5xx answers, timeouts and connection failures",
    )
    .default("5"),
    PropSpec::duration("retry_delay", "base of the exponential, jittered backoff between retries")
        .default("500ms"),
    PropSpec::duration(
        "max_retry_delay",
        "longest wait between retries, a server's Retry-After included",
    )
    .default("30s"),
    PropSpec::string(
        "test_path",
        "path or URL that 'test connection' GETs (default: the base url); pick one that needs authentication",
    )
    .example("/user"),
];

static SOURCE_PROPS: &[PropSpec] = &[
    PropSpec::choice("method", &["GET", "POST"], "HTTP method of every page request")
        .default("GET"),
    PropSpec::string("body", "JSON request body, sent with method=POST")
        .example("{\"status\":\"active\"}"),
    PropSpec::string("query.*", "query parameter sent with each request, e.g. query.state=open (next_url and link_header pages use the URL the API gives)"),
    PropSpec::string(
        "records_path",
        "dot path to the records array, e.g. data.items; default: the response if it is an array, else its only array-valued top-level field, else the response as one record",
    ),
    PropSpec::choice(
        "pagination",
        paging::PAGINATION_CHOICES,
        "how further pages are requested; inferred as cursor or next_url when only cursor_path or next_url_path is set",
    )
    .default("none"),
    PropSpec::string("page_param", "page number parameter (pagination=page)").default("page"),
    PropSpec::integer("page_start", "number of the first page (pagination=page)").default("1"),
    PropSpec::string("offset_param", "offset parameter (pagination=offset)").default("offset"),
    PropSpec::string("limit_param", "parameter that carries page_size (pagination=offset)")
        .default("limit"),
    PropSpec::integer(
        "page_size",
        "records per page to ask for; with page and offset, a shorter page ends the read",
    ),
    PropSpec::string(
        "page_size_param",
        "parameter that carries page_size (all styles except offset, which uses limit_param)",
    )
    .default("per_page"),
    PropSpec::string("cursor_param", "parameter the next cursor is sent in (pagination=cursor)")
        .default("cursor"),
    PropSpec::string(
        "cursor_path",
        "dot path of the next cursor in each response (pagination=cursor)",
    )
    .example("meta.next_cursor"),
    PropSpec::string(
        "next_url_path",
        "dot path of the next page's URL, relative or absolute, in each response (pagination=next_url)",
    )
    .example("links.next"),
    PropSpec::choice(
        "pagination_in",
        paging::PAGINATION_IN_CHOICES,
        "where page, offset, limit, page size and cursor parameters go: query string, or fields of the JSON body (method=POST)",
    )
    .default("query"),
    PropSpec::integer("max_pages", "stop after this many pages (no limit by default)"),
    PropSpec::string(
        "since_param",
        "query parameter that receives the last high-water mark of an incremental flow",
    )
    .example("updated_since"),
];

static SPEC: ConnectorSpec = ConnectorSpec {
    type_name: "http",
    title: "HTTP / REST API",
    description: "Reads JSON records from REST APIs: bearer, basic or API-key authentication, page/offset/cursor/next-URL/Link-header pagination, retries with backoff. A source only.",
    can_read: true,
    can_write: false,
    source_object: "API path relative to the connection's url (e.g. /users), or an absolute URL",
    destination_object: "",
    connection: CONNECTION_PROPS,
    source: SOURCE_PROPS,
    destination: &[],
};

#[async_trait]
impl Connector for HttpConnector {
    fn spec(&self) -> &'static ConnectorSpec {
        &SPEC
    }

    async fn test(&self, conn: &ConnectionConfig) -> Result<String, ConnectorError> {
        let s = Settings::from_config(conn)?;
        let mut url = s.resolve(s.test_path.as_deref().unwrap_or(""))?;
        s.add_query_credentials(&mut url);
        let shown = s.redact_url(&url);
        let fetched = fetch(
            &s,
            &RunContext::detached(),
            Call {
                method: &Method::GET,
                url: &url,
                body: None,
                lenient: true,
            },
        )
        .await?;
        let head = format!(
            "GET {shown} answered HTTP {} in {}",
            fetched.status.as_u16(),
            human(fetched.elapsed)
        );
        Ok(if fetched.status.is_success() {
            head
        } else {
            format!(
                "{head}: the server is reachable, but this URL is not an API endpoint, so the credentials are unverified; set test_path to a path that needs authentication (e.g. test_path=/user)"
            )
        })
    }

    async fn list_objects(
        &self,
        conn: &ConnectionConfig,
    ) -> Result<Vec<ObjectInfo>, ConnectorError> {
        Err(ConnectorError::unsupported(format!(
            "an HTTP API has no catalogue of endpoints to list; name the API path in the flow's object= (e.g. create flow NAME source={} object=/users ...)",
            conn.name
        )))
    }

    async fn open_source(
        &self,
        conn: &ConnectionConfig,
        request: SourceRequest,
        ctx: &RunContext,
    ) -> Result<Box<dyn Source>, ConnectorError> {
        let s = Settings::from_config(conn)?;
        Ok(Box::new(source::HttpSource::open(s, request, ctx)?))
    }
}

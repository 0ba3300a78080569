//! A connection's properties turned into a ready HTTP client: base URL, authentication, extra
//! headers, timeout and retry policy, plus the redaction that keeps secrets out of logs and errors.

use std::time::Duration;

use etl_model::{ConnectionConfig, ConnectorError, Props, RetryPolicy};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{RequestBuilder, Url};

pub(crate) const AUTH_CHOICES: &[&str] = &["none", "bearer", "basic", "api_key"];
pub(crate) const API_KEY_IN_CHOICES: &[&str] = &["header", "query"];

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_RETRIES: u64 = 5;
const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(500);
const DEFAULT_MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 10;

/// How requests prove who they are.
#[derive(Clone, Debug)]
pub(crate) enum Auth {
    None,
    Bearer(String),
    Basic { user: String, password: String },
    ApiKeyHeader { name: HeaderName, value: String },
    ApiKeyQuery { name: String, value: String },
}

/// Everything a request needs from the connection.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub connection: String,
    /// The connection's `url`, without a trailing slash (unless it is only the origin).
    pub base: String,
    pub base_url: Url,
    pub auth: Auth,
    pub headers: HeaderMap,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub test_path: Option<String>,
    /// Secret values to scrub from any text we log or return (error bodies, transport errors).
    secrets: Vec<String>,
    pub client: reqwest::Client,
}

impl Settings {
    pub fn from_config(conn: &ConnectionConfig) -> Result<Settings, ConnectorError> {
        let p = &conn.props;
        let name = &conn.name;
        let raw_url = p.get("url").map(str::trim).ok_or_else(|| {
            ConnectorError::config(format!(
                "connection '{name}' has no 'url'; set the API's base URL, e.g. update connection {name} url=https://api.example.com"
            ))
        })?;
        let base_url = parse_http_url(raw_url).map_err(|why| {
            ConnectorError::config(format!(
                "connection '{name}': 'url' {why}; use a full base URL such as https://api.example.com/v1"
            ))
        })?;
        let base = raw_url.trim_end_matches('/').to_string();

        let auth = parse_auth(name, p)?;
        let mut secrets: Vec<String> = ["token", "password", "api_key"]
            .iter()
            .filter_map(|k| p.get(k))
            // Very short values would scrub innocent text ("1", "ab"); they are not real secrets.
            .filter(|v| v.len() >= 4)
            .map(str::to_string)
            .collect();
        if let Some(pw) = base_url.password().filter(|pw| pw.len() >= 4) {
            secrets.push(pw.to_string());
        }

        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        for (key, value) in p.prefixed("header.") {
            let hname = HeaderName::from_bytes(key.trim().as_bytes()).map_err(|_| {
                ConnectorError::config(format!(
                    "connection '{name}': 'header.{key}' is not a valid HTTP header name; use letters, digits and '-', e.g. header.X-Request-Source=etl"
                ))
            })?;
            let mut hvalue = HeaderValue::from_str(value).map_err(|_| {
                ConnectorError::config(format!(
                    "connection '{name}': the value of 'header.{key}' contains characters not allowed in an HTTP header (such as a line break); remove them"
                ))
            })?;
            // Extra headers often carry keys; keep them out of any debug output.
            hvalue.set_sensitive(true);
            if value.len() >= 8 && looks_secret(key) {
                secrets.push(value.to_string());
            }
            headers.insert(hname, hvalue);
        }

        let timeout = p.duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(ConnectorError::config(format!(
                "connection '{name}': 'timeout' must be longer than zero, e.g. timeout=30s"
            )));
        }
        let max_retries = p.u64_or("max_retries", DEFAULT_MAX_RETRIES)?;
        let retry = RetryPolicy {
            max_attempts: u32::try_from(max_retries.saturating_add(1)).unwrap_or(u32::MAX),
            base_delay: p.duration("retry_delay")?.unwrap_or(DEFAULT_RETRY_DELAY),
            max_delay: p
                .duration("max_retry_delay")?
                .unwrap_or(DEFAULT_MAX_RETRY_DELAY),
        };

        crate::ensure_crypto_provider();
        // reqwest drops Authorization on a redirect to another host, but not an API key header
        // or header.* values; so with credentials, redirects stay on the API's host (an
        // http-to-https upgrade included) and any other redirect is answered as an error.
        let has_credentials = !matches!(auth, Auth::None) || p.prefixed("header.").next().is_some();
        let api_host = base_url.host_str().unwrap_or_default().to_ascii_lowercase();
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            let same_host = attempt
                .url()
                .host_str()
                .is_some_and(|h| h.eq_ignore_ascii_case(&api_host));
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if has_credentials && !same_host {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .redirect(redirect)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("etlworks-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                ConnectorError::connect(format!(
                    "connection '{name}': could not set up the HTTP client: {}",
                    error_chain(&e)
                ))
            })?;

        Ok(Settings {
            connection: name.clone(),
            base,
            base_url,
            auth,
            headers,
            timeout,
            retry,
            test_path: p.get("test_path").map(str::to_string),
            secrets,
            client,
        })
    }

    /// The absolute URL of `path`: an absolute `http(s)://` URL as is, anything else appended to
    /// the connection's base URL (so `url=https://h/v1` + `/users` is `https://h/v1/users`).
    pub fn resolve(&self, path: &str) -> Result<Url, ConnectorError> {
        let path = path.trim();
        let text = if has_http_scheme(path) {
            path.to_string()
        } else if path.is_empty() {
            self.base.clone()
        } else if path.starts_with('?') {
            format!("{}{}", self.base, path)
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        };
        parse_http_url(&text).map_err(|why| {
            ConnectorError::config(format!(
                "'{}' {why}; name an API path such as /users or a full https:// URL",
                self.redact_text(path)
            ))
        })
    }

    /// Credentials and extra headers only go to the connection's own origin, so a next-page
    /// link or an absolute object URL on another host never receives them.
    pub fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.base_url.origin()
    }

    /// Adds the api_key query parameter when the URL is ours and lacks it.
    pub fn add_query_credentials(&self, url: &mut Url) {
        if let Auth::ApiKeyQuery { name, value } = &self.auth
            && self.same_origin(url)
            && !url.query_pairs().any(|(k, _)| k == name.as_str())
        {
            url.query_pairs_mut().append_pair(name, value);
        }
    }

    /// Adds headers and header credentials to a request for `url`.
    pub fn authorize(&self, req: RequestBuilder, url: &Url) -> RequestBuilder {
        if !self.same_origin(url) {
            return req.header(reqwest::header::ACCEPT, "application/json");
        }
        let req = req.headers(self.headers.clone());
        match &self.auth {
            Auth::None | Auth::ApiKeyQuery { .. } => req,
            Auth::Bearer(token) => req.bearer_auth(token),
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::ApiKeyHeader { name, value } => match HeaderValue::from_str(value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    req.header(name.clone(), v)
                }
                // Checked when the settings were built; kept total rather than panicking.
                Err(_) => req,
            },
        }
    }

    /// The URL as it may be shown: the api_key parameter and any password replaced by `***`.
    pub fn redact_url(&self, url: &Url) -> String {
        let mut shown = url.clone();
        if !shown.password().unwrap_or("").is_empty() {
            let _ = shown.set_password(Some("***"));
        }
        if let Auth::ApiKeyQuery { name, .. } = &self.auth
            && url.query_pairs().any(|(k, _)| k == name.as_str())
        {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == name.as_str() {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        self.redact_text(shown.as_str())
    }

    /// Replaces every known secret value in `text` by `***`.
    pub fn redact_text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

fn parse_auth(name: &str, p: &Props) -> Result<Auth, ConnectorError> {
    // Without an explicit `auth`, the credential that is set says which scheme is meant.
    let kind = match p.get("auth") {
        Some(_) => p.choice("auth", AUTH_CHOICES, "none")?,
        None if p.get("token").is_some() => "bearer",
        None if p.get("api_key").is_some() => "api_key",
        None if p.get("user").is_some() => "basic",
        None => "none",
    };
    let need = |key: &str, example: &str| {
        p.get(key).map(str::to_string).ok_or_else(|| {
            ConnectorError::config(format!(
                "connection '{name}' uses auth={kind} but has no '{key}'; set it, e.g. update connection {name} {key}={example}"
            ))
        })
    };
    Ok(match kind {
        "bearer" => Auth::Bearer(need("token", "<token>")?),
        "basic" => Auth::Basic {
            user: need("user", "<user name>")?,
            password: p.get("password").unwrap_or("").to_string(),
        },
        "api_key" => {
            let value = need("api_key", "<key>")?;
            let key_name = p.get_or("api_key_name", "X-API-Key").trim().to_string();
            match p.choice("api_key_in", API_KEY_IN_CHOICES, "header")? {
                "query" => Auth::ApiKeyQuery {
                    name: key_name,
                    value,
                },
                _ => {
                    let hname = HeaderName::from_bytes(key_name.as_bytes()).map_err(|_| {
                        ConnectorError::config(format!(
                            "connection '{name}': api_key_name '{key_name}' is not a valid HTTP header name; use e.g. api_key_name=X-API-Key, or api_key_in=query to send the key as a query parameter"
                        ))
                    })?;
                    if HeaderValue::from_str(&value).is_err() {
                        return Err(ConnectorError::config(format!(
                            "connection '{name}': 'api_key' contains characters not allowed in an HTTP header; check the key was copied without line breaks"
                        )));
                    }
                    Auth::ApiKeyHeader { name: hname, value }
                }
            }
        }
        _ => Auth::None,
    })
}

fn looks_secret(header: &str) -> bool {
    let h = header.to_ascii_lowercase();
    [
        "auth",
        "key",
        "token",
        "secret",
        "signature",
        "cookie",
        "session",
    ]
    .iter()
    .any(|w| h.contains(w))
}

fn has_http_scheme(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Parses an absolute http(s) URL; the error says what is wrong with it.
pub(crate) fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("is not a valid URL ({e})"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err("has no host name".to_string()),
        other => Err(format!(
            "uses scheme '{other}'; only http and https are supported"
        )),
    }
}

/// A transport error with its causes ("connection refused"), without the URL (which may carry
/// a key; callers name the redacted URL themselves).
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = current {
        let text = if parts.is_empty() {
            // reqwest's own Display appends "for url (...)"; the redacted URL is given elsewhere.
            let s = err.to_string();
            match s.find(" for url (") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        } else {
            err.to_string()
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(props: &[(&str, &str)]) -> Result<Settings, ConnectorError> {
        Settings::from_config(&ConnectionConfig {
            name: "api".into(),
            type_name: "http".into(),
            props: props.iter().copied().collect(),
        })
    }

    #[test]
    fn resolves_paths_against_the_base() {
        let s = settings(&[("url", "https://h.example/v1/")]).unwrap();
        assert_eq!(
            s.resolve("/users").unwrap().as_str(),
            "https://h.example/v1/users"
        );
        assert_eq!(
            s.resolve("users?a=1").unwrap().as_str(),
            "https://h.example/v1/users?a=1"
        );
        assert_eq!(s.resolve("").unwrap().as_str(), "https://h.example/v1");
        assert_eq!(
            s.resolve("https://other.example/x").unwrap().as_str(),
            "https://other.example/x"
        );
        assert!(!s.same_origin(&s.resolve("https://other.example/x").unwrap()));
        assert!(s.same_origin(&s.resolve("/x").unwrap()));
    }

    #[test]
    fn redacts_query_keys_and_secret_text() {
        let s = settings(&[
            ("url", "https://h.example"),
            ("auth", "api_key"),
            ("api_key", "s3cr3t-key"),
            ("api_key_in", "query"),
            ("api_key_name", "apikey"),
        ])
        .unwrap();
        let mut url = s.resolve("/x?a=1").unwrap();
        s.add_query_credentials(&mut url);
        assert!(url.as_str().contains("apikey=s3cr3t-key"));
        assert_eq!(s.redact_url(&url), "https://h.example/x?a=1&apikey=***");
        assert_eq!(s.redact_text("echo s3cr3t-key"), "echo ***");
    }

    #[test]
    fn infers_auth_and_names_missing_credentials() {
        assert!(matches!(
            settings(&[("url", "https://h.example"), ("token", "abcd")])
                .unwrap()
                .auth,
            Auth::Bearer(_)
        ));
        let err = settings(&[("url", "https://h.example"), ("auth", "bearer")]).unwrap_err();
        assert_eq!(
            err.message,
            "connection 'api' uses auth=bearer but has no 'token'; set it, e.g. update connection api token=<token>"
        );
        let err = settings(&[("url", "ftp://h.example")]).unwrap_err();
        assert!(
            err.message.contains("only http and https"),
            "{}",
            err.message
        );
    }
}

//! The model behind chat and the usage rules, resolved from flags, environment and the
//! optional config file (JSON), in that order of precedence: a flag (or its environment
//! variable, which clap reads for it) wins over the file, the file over the defaults.
//!
//! Everything here is checked before the server starts: a wrong value is an error that says
//! what was wrong and how to fix it. Whether the provider answers is not decided here: the
//! server checks it at start-up and runs degraded while it does not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use etl_agent::run::AgentConfig;
use etl_agent::usage::{Cap, Caps, Period, Price, Prices, micros};
use etl_agent::watch::Watched;
use etl_llm::{Anthropic, AnthropicConfig, ApiKey, HttpOptions, Model, OpenAi, OpenAiConfig};
use serde::Deserialize;

/// How often an unreachable provider is checked again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(30);
/// Longest a start-up check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The LLM settings given as flags or environment variables (`None`: not given).
#[derive(Clone, Debug, Default)]
pub struct LlmOptions {
    pub provider: Option<String>,
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub api_key_env: Option<String>,
    pub models: Option<Vec<String>>,
    pub context_tokens: Option<u64>,
    pub max_turns: Option<usize>,
    pub tool_result_chars: Option<usize>,
    pub idle_timeout: Option<f64>,
    pub connect_timeout: Option<f64>,
    pub max_attempts: Option<u32>,
    pub azure_api_version: Option<String>,
    pub system_prompt_file: Option<PathBuf>,
}

/// The usage caps given as flags or environment variables.
#[derive(Clone, Debug, Default)]
pub struct CapOptions {
    pub tenant_cap_tokens: Option<u64>,
    pub tenant_cap_cost: Option<f64>,
    pub key_cap_tokens: Option<u64>,
    pub key_cap_cost: Option<f64>,
    pub cap_period: Option<String>,
}

/// The config file. Every section and field is optional; unknown fields are refused, so a
/// typo is an error rather than a silently ignored setting.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub llm: LlmFile,
    /// Model name → US dollars per million input and output tokens; `"*"` for every other
    /// model.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    #[serde(default)]
    pub caps: CapsFile,
}

/// The `llm` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmFile {
    pub provider: Option<String>,
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub api_key_env: Option<String>,
    pub models: Option<Vec<String>>,
    pub context_tokens: Option<u64>,
    pub max_turns: Option<usize>,
    pub tool_result_chars: Option<usize>,
    pub idle_timeout_secs: Option<f64>,
    pub connect_timeout_secs: Option<f64>,
    pub max_attempts: Option<u32>,
    pub azure_api_version: Option<String>,
    pub system_prompt_file: Option<PathBuf>,
    /// Extra headers on every provider request (OpenRouter's `HTTP-Referer`, `anthropic-beta`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// OpenAI-compatible: ask for usage in the stream (default true).
    pub include_usage: Option<bool>,
    /// OpenAI-compatible: send `max_completion_tokens` instead of `max_tokens`.
    pub max_completion_tokens: Option<bool>,
    /// Anthropic: `max_tokens` when a request sets none (default 4096).
    pub max_tokens: Option<u32>,
}

/// The `caps` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsFile {
    /// The period of every cap that names none: `day` or `month` (default).
    pub period: Option<String>,
    /// Every tenant's cap, unless `tenants` names the tenant.
    pub tenant: Option<CapFile>,
    #[serde(default)]
    pub tenants: BTreeMap<String, CapFile>,
    /// Every key's cap, unless `keys` names the key id.
    pub key: Option<CapFile>,
    #[serde(default)]
    pub keys: BTreeMap<String, CapFile>,
}

/// One cap in the file: tokens (input + output) and/or US dollars per period.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapFile {
    pub tokens: Option<u64>,
    pub cost: Option<f64>,
    pub period: Option<String>,
}

/// Reads the config file (JSON).
pub fn load_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "the config file {} is not valid: {e}; it is JSON with the optional sections \
             \"llm\", \"prices\" and \"caps\" (see docs/llm-providers.md)",
            path.display()
        )
    })
}

/// The provider kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Builtin,
    OpenAi,
    Anthropic,
}

impl Provider {
    pub fn parse(text: &str) -> Result<Provider> {
        match text.trim().to_ascii_lowercase().as_str() {
            "builtin" | "built-in" | "planner" | "none" => Ok(Provider::Builtin),
            "openai" | "openai-compatible" | "azure" | "ollama" | "vllm" => Ok(Provider::OpenAi),
            "anthropic" | "claude" => Ok(Provider::Anthropic),
            other => bail!(
                "unknown LLM provider '{other}'; use builtin (no LLM), openai (OpenAI and any \
                 OpenAI-compatible server: Azure OpenAI, Ollama, vLLM, llama.cpp, LM Studio, \
                 Groq, OpenRouter) or anthropic"
            ),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Builtin => "builtin",
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }
}

/// Default model of each provider when none is named.
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";
pub const DEFAULT_ANTHROPIC_MODEL: &str = "claude-sonnet-4-5";
/// Default context budgets, in tokens.
pub const DEFAULT_OPENAI_CONTEXT: u64 = 128_000;
pub const DEFAULT_ANTHROPIC_CONTEXT: u64 = 200_000;
/// The built-in planner reads the conversation too; this bounds what it is handed.
pub const DEFAULT_BUILTIN_CONTEXT: u64 = 50_000;

/// What the server runs chat with.
pub struct Chosen {
    pub provider: Provider,
    pub model: Arc<dyn Model>,
    /// The health gate in front of a provider (`None` for the built-in planner).
    pub watch: Option<Arc<Watched>>,
    pub agent: AgentConfig,
    /// The provider's base URL, for display.
    pub base_url: Option<String>,
    /// Names a request may ask for; the configured model first.
    pub models: Vec<String>,
    pub caps: Caps,
    /// Something the operator should know (no API key found, ...).
    pub notes: Vec<String>,
}

/// Resolves the settings: flags (and their environment variables) over the file over the
/// defaults. `env` reads an environment variable (the API key's).
pub fn choose(
    flags: &LlmOptions,
    caps: &CapOptions,
    file: &ConfigFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Chosen> {
    let f = &file.llm;
    let provider = match flags.provider.as_deref().or(f.provider.as_deref()) {
        Some(p) => Provider::parse(p)?,
        None => Provider::Builtin,
    };
    let prices = Prices::new(file.prices.clone())
        .map_err(|e| anyhow::anyhow!("in the config file's \"prices\": {e}"))?;
    let caps = resolve_caps(caps, &file.caps)?;
    let mut agent = AgentConfig {
        prices,
        ..AgentConfig::default()
    };
    if let Some(turns) = flags.max_turns.or(f.max_turns) {
        if turns == 0 || turns > 100 {
            bail!("--llm-max-turns must be from 1 to 100, got {turns}");
        }
        agent.max_turns = turns;
    }
    if let Some(chars) = flags.tool_result_chars.or(f.tool_result_chars) {
        if chars < 500 {
            bail!(
                "--llm-tool-result-chars must be at least 500 (a tool result cut shorter says \
                 nothing useful), got {chars}"
            );
        }
        agent.tool_result_chars = chars;
    }
    let context = flags.context_tokens.or(f.context_tokens);
    if let Some(c) = context
        && c < 1_000
    {
        bail!(
            "--llm-context-tokens must be at least 1000 (the system prompt and the tools alone \
             take more), got {c}"
        );
    }
    let mut notes = Vec::new();

    if provider == Provider::Builtin {
        let planner = etl_agent::planner::Planner::new();
        let name = etl_agent::planner::MODEL_NAME.to_string();
        agent.context_tokens = Some(context.unwrap_or(DEFAULT_BUILTIN_CONTEXT));
        // The planner reads no prompt; clients may still send their own.
        agent.system_prompt = None;
        let models = allowed_models(&name, flags.models.as_ref().or(f.models.as_ref()));
        for ignored in [
            flags.base_url.is_some() || f.base_url.is_some(),
            flags.model.is_some() || f.model.is_some(),
        ] {
            if ignored {
                notes.push(
                    "the LLM provider is builtin, so the base URL and model settings are not \
                     used; add --llm openai or --llm anthropic to use them"
                        .into(),
                );
                break;
            }
        }
        return Ok(Chosen {
            provider,
            model: Arc::new(planner),
            watch: None,
            agent,
            base_url: None,
            models,
            caps,
            notes,
        });
    }

    agent.system_prompt = Some(
        match flags
            .system_prompt_file
            .as_ref()
            .or(f.system_prompt_file.as_ref())
        {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("reading the system prompt file {}", path.display())
                })?;
                if text.trim().is_empty() {
                    bail!(
                        "the system prompt file {} is empty; give the prompt, or leave the setting \
                     out for the built-in one",
                        path.display()
                    );
                }
                text
            }
            None => etl_agent::prompt::DEFAULT_SYSTEM_PROMPT.to_string(),
        },
    );
    let mut http = HttpOptions::default();
    if let Some(s) = flags.idle_timeout.or(f.idle_timeout_secs) {
        http.idle_timeout = seconds("--llm-idle-timeout", s)?;
    }
    if let Some(s) = flags.connect_timeout.or(f.connect_timeout_secs) {
        http.connect_timeout = seconds("--llm-connect-timeout", s)?;
    }
    if let Some(n) = flags.max_attempts.or(f.max_attempts) {
        if n == 0 || n > 10 {
            bail!("--llm-max-attempts must be from 1 (no retries) to 10, got {n}");
        }
        http.max_attempts = n;
    }
    http.headers = f
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (default_key_env, default_model, default_context) = match provider {
        Provider::OpenAi => (
            "OPENAI_API_KEY",
            DEFAULT_OPENAI_MODEL,
            DEFAULT_OPENAI_CONTEXT,
        ),
        _ => (
            "ANTHROPIC_API_KEY",
            DEFAULT_ANTHROPIC_MODEL,
            DEFAULT_ANTHROPIC_CONTEXT,
        ),
    };
    agent.context_tokens = Some(context.unwrap_or(default_context));
    let model_name = flags
        .model
        .clone()
        .or_else(|| f.model.clone())
        .unwrap_or_else(|| default_model.to_string());
    let named_env = flags.api_key_env.clone().or_else(|| f.api_key_env.clone());
    let key_env = named_env
        .clone()
        .unwrap_or_else(|| default_key_env.to_string());
    let key = env(&key_env).filter(|k| !k.trim().is_empty());
    if key.is_none() {
        if named_env.is_some() {
            bail!(
                "the API key variable {key_env} (named by --llm-api-key-env) is not set or is \
                 empty; export it, or name the variable that holds the key"
            );
        }
        notes.push(format!(
            "no API key: {key_env} is not set, so requests go without one (fine for local \
             servers such as Ollama, vLLM or llama.cpp; the start-up check tells if the \
             provider wants one)"
        ));
    }
    let key = key.map(ApiKey::new);
    let base_url = flags.base_url.clone().or_else(|| f.base_url.clone());
    let model: Arc<dyn Model> = match provider {
        Provider::OpenAi => {
            let mut config = OpenAiConfig::new(model_name.clone());
            if let Some(url) = &base_url {
                config.base_url = url.clone();
            }
            config.api_key = key;
            config.azure_api_version = flags
                .azure_api_version
                .clone()
                .or_else(|| f.azure_api_version.clone());
            if let Some(on) = f.include_usage {
                config.include_usage = on;
            }
            if let Some(on) = f.max_completion_tokens {
                config.max_completion_tokens = on;
            }
            config.http = http;
            Arc::new(OpenAi::new(config).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        _ => {
            if flags.azure_api_version.is_some() || f.azure_api_version.is_some() {
                bail!("--llm-azure-api-version is for --llm openai (Azure OpenAI), not anthropic");
            }
            let mut config = AnthropicConfig::new(model_name.clone(), key);
            if let Some(url) = &base_url {
                config.base_url = url.clone();
            }
            if let Some(max) = f.max_tokens {
                config.default_max_tokens = max;
            }
            config.http = http;
            Arc::new(Anthropic::new(config).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
    };
    let shown_url = base_url.unwrap_or_else(|| match provider {
        Provider::OpenAi => OpenAiConfig::DEFAULT_BASE_URL.to_string(),
        _ => AnthropicConfig::DEFAULT_BASE_URL.to_string(),
    });
    let models = allowed_models(&model_name, flags.models.as_ref().or(f.models.as_ref()));
    let watch = Watched::new(model, RECHECK_EVERY);
    Ok(Chosen {
        provider,
        model: watch.clone(),
        watch: Some(watch),
        agent,
        base_url: Some(strip_credentials(&shown_url)),
        models,
        caps,
        notes,
    })
}

/// The configured model first, then the others allowed, without repeats or blanks.
fn allowed_models(default: &str, extra: Option<&Vec<String>>) -> Vec<String> {
    let mut models = vec![default.to_string()];
    for m in extra.into_iter().flatten() {
        let m = m.trim();
        if !m.is_empty() && !models.iter().any(|x| x == m) {
            models.push(m.to_string());
        }
    }
    models
}

fn seconds(flag: &str, s: f64) -> Result<Duration> {
    if !s.is_finite() || !(0.1..=3600.0).contains(&s) {
        bail!("{flag} must be between 0.1 and 3600 seconds, got {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

/// A URL without user and password, for display.
fn strip_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// The caps: flags (and their environment variables) over the config file's `caps` section.
pub fn resolve_caps(flags: &CapOptions, file: &CapsFile) -> Result<Caps> {
    let period_of = |text: Option<&str>, what: &str| -> Result<Option<Period>> {
        text.map(|t| Period::parse(t).map_err(|e| anyhow::anyhow!("{what}: {e}")))
            .transpose()
    };
    let file_period = period_of(file.period.as_deref(), "caps.period in the config file")?;
    let flag_period = period_of(flags.cap_period.as_deref(), "--cap-period")?;
    let cost = |what: &str, v: Option<f64>| -> Result<Option<u64>> {
        match v {
            None => Ok(None),
            Some(c) if c.is_finite() && c > 0.0 => Ok(Some(micros(c))),
            Some(c) => bail!("{what} must be a positive number of US dollars, got {c}"),
        }
    };
    let from_file = |c: &CapFile, what: &str| -> Result<Cap> {
        if c.tokens == Some(0) {
            bail!("{what}: tokens must be at least 1 (leave it out for no token cap)");
        }
        Ok(Cap {
            tokens: c.tokens,
            cost_micros: cost(&format!("{what}: cost"), c.cost)?,
            period: period_of(c.period.as_deref(), what)?
                .or(file_period)
                .unwrap_or_default(),
        })
    };
    let default_cap = |tokens: Option<u64>,
                       dollars: Option<f64>,
                       token_flag: &str,
                       cost_flag: &str,
                       file_cap: Option<&CapFile>,
                       what: &str|
     -> Result<Option<Cap>> {
        if tokens == Some(0) {
            bail!("{token_flag} must be at least 1 (leave it out for no token cap)");
        }
        let base = file_cap.map(|c| from_file(c, what)).transpose()?;
        let tokens = tokens.or(base.and_then(|b| b.tokens));
        let cost_micros = cost(cost_flag, dollars)?.or(base.and_then(|b| b.cost_micros));
        if tokens.is_none() && cost_micros.is_none() {
            return Ok(None);
        }
        Ok(Some(Cap {
            tokens,
            cost_micros,
            period: flag_period
                .or(base.map(|b| b.period))
                .or(file_period)
                .unwrap_or_default(),
        }))
    };
    let tenant = default_cap(
        flags.tenant_cap_tokens,
        flags.tenant_cap_cost,
        "--tenant-cap-tokens",
        "--tenant-cap-cost",
        file.tenant.as_ref(),
        "caps.tenant in the config file",
    )?;
    let key = default_cap(
        flags.key_cap_tokens,
        flags.key_cap_cost,
        "--key-cap-tokens",
        "--key-cap-cost",
        file.key.as_ref(),
        "caps.key in the config file",
    )?;
    let mut tenants = BTreeMap::new();
    for (name, c) in &file.tenants {
        tenants.insert(
            name.clone(),
            from_file(c, &format!("caps.tenants.{name} in the config file"))?,
        );
    }
    let mut keys = BTreeMap::new();
    for (id, c) in &file.keys {
        keys.insert(
            id.clone(),
            from_file(c, &format!("caps.keys.{id} in the config file"))?,
        );
    }
    Ok(Caps {
        tenant,
        tenants,
        key,
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: ConfigFile = serde_json::from_value(serde_json::json!({
            "llm": {"provider": "openai", "base_url": "http://file:1/v1", "model": "file-model",
                    "models": ["other"], "context_tokens": 9000},
            "prices": {"file-model": {"input": 1.0, "output": 2.0}},
            "caps": {"period": "day", "tenant": {"tokens": 500}, "keys": {"key_x": {"cost": 1.5}}}
        }))
        .unwrap();
        let flags = LlmOptions {
            model: Some("flag-model".into()),
            ..LlmOptions::default()
        };
        let caps = CapOptions {
            tenant_cap_cost: Some(2.0),
            ..CapOptions::default()
        };
        let chosen = choose(&flags, &caps, &file, &no_env).unwrap();
        assert_eq!(chosen.provider, Provider::OpenAi);
        assert_eq!(chosen.model.name(), "flag-model");
        assert_eq!(chosen.models, ["flag-model", "other"]);
        assert_eq!(chosen.base_url.as_deref(), Some("http://file:1/v1"));
        assert_eq!(chosen.agent.context_tokens, Some(9000));
        assert!(chosen.agent.system_prompt.is_some());
        let tenant = chosen.caps.tenant.unwrap();
        assert_eq!(tenant.tokens, Some(500), "the file's tokens stay");
        assert_eq!(
            tenant.cost_micros,
            Some(2_000_000),
            "the flag's cost is added"
        );
        assert_eq!(tenant.period, Period::Day);
        assert_eq!(chosen.caps.keys["key_x"].cost_micros, Some(1_500_000));
        assert!(
            chosen.notes[0].contains("OPENAI_API_KEY is not set"),
            "{:?}",
            chosen.notes
        );
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        let file = ConfigFile::default();
        let err = |flags: LlmOptions, caps: CapOptions| {
            choose(&flags, &caps, &file, &no_env)
                .err()
                .expect("refused")
                .to_string()
        };
        assert!(
            err(
                LlmOptions {
                    provider: Some("gemini".into()),
                    ..LlmOptions::default()
                },
                CapOptions::default()
            )
            .contains("unknown LLM provider 'gemini'; use builtin")
        );
        assert!(
            err(
                LlmOptions {
                    provider: Some("openai".into()),
                    api_key_env: Some("NOPE_KEY".into()),
                    ..LlmOptions::default()
                },
                CapOptions::default()
            )
            .contains("NOPE_KEY (named by --llm-api-key-env) is not set")
        );
        assert!(
            err(
                LlmOptions::default(),
                CapOptions {
                    cap_period: Some("week".into()),
                    tenant_cap_tokens: Some(10),
                    ..CapOptions::default()
                }
            )
            .contains("--cap-period: unknown cap period 'week'")
        );
        assert!(
            err(
                LlmOptions {
                    provider: Some("openai".into()),
                    base_url: Some("ftp://x".into()),
                    ..LlmOptions::default()
                },
                CapOptions::default()
            )
            .contains("ftp://x"),
        );
        let e = serde_json::from_str::<ConfigFile>(r#"{"llm": {"modle": "x"}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `modle`"), "{e}");
    }

    #[test]
    fn the_builtin_planner_needs_nothing() {
        let chosen = choose(
            &LlmOptions::default(),
            &CapOptions::default(),
            &ConfigFile::default(),
            &no_env,
        )
        .unwrap();
        assert_eq!(chosen.provider, Provider::Builtin);
        assert_eq!(chosen.model.name(), "built-in-planner");
        assert!(chosen.watch.is_none());
        assert!(chosen.agent.system_prompt.is_none());
        assert!(chosen.caps.is_empty());
        assert_eq!(strip_credentials("http://u:p@h:1/v1"), "http://h:1/v1");
    }
}

//! The `etlworks-agent` binary. It is glue, not a library: it reads flags and environment,
//! resolves them into settings, wires the store, connectors and engine together, and owns exit
//! codes. Everything it does is done by the crates it calls.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use etl_engine::host::{Caller, Host};
use tokio_util::sync::CancellationToken;

use etlworks_agent::{Settings, open_app, open_engine, open_store};

mod client;

#[derive(Parser, Debug)]
#[command(
    name = "etlworks-agent",
    version,
    about = "A self-hosted data-integration agent server: connections, flows, schedules and the host CLI language.",
    after_help = client::ENVIRONMENT_HELP
)]
struct Cli {
    /// Print JSON instead of text (also accepted after the command).
    #[arg(long)]
    json: bool,

    /// The data directory: metadata database, secret key, the built-in warehouse.
    #[arg(
        long,
        global = true,
        env = "ETLWORKS_AGENT_DATA_DIR",
        default_value = "./data"
    )]
    data_dir: std::path::PathBuf,

    /// Log filter (tracing syntax), e.g. info or etl_engine=debug. Default: info for `serve`,
    /// warn for everything else.
    #[arg(long, global = true, env = "ETLWORKS_AGENT_LOG")]
    log: Option<String>,

    /// Log format on standard error: text, or json (one object per line, for log collectors).
    #[arg(
        long,
        global = true,
        env = "ETLWORKS_AGENT_LOG_FORMAT",
        default_value = "text",
        value_parser = ["text", "json"]
    )]
    log_format: String,

    /// A config file (JSON) for the LLM provider, the price table and the usage caps; flags
    /// and environment variables win over it. See docs/llm-providers.md.
    #[arg(long, global = true, env = "ETLWORKS_AGENT_CONFIG")]
    config: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Run host-language statements against the data directory, e.g.
    /// `etlworks-agent host "list connections; list flows"`. Use `-` to read the script from stdin.
    Host {
        /// The statements; `-` reads them from standard input.
        script: String,
        /// Print the JSON results instead of the readable rendering.
        #[arg(long)]
        json: bool,
        /// Maximum runs executing at once.
        #[arg(long, env = "ETLWORKS_AGENT_MAX_RUNS", default_value_t = 4)]
        max_runs: usize,
    },
    /// Manage and search the knowledge base: the bundled documentation plus documents you add
    /// (Markdown, plain text, HTML).
    Kb {
        #[command(subcommand)]
        action: KbAction,
        /// The tenant whose documents to manage (bundled documentation is shared by all).
        #[arg(
            long,
            global = true,
            env = "ETLWORKS_AGENT_TENANT",
            default_value = "default"
        )]
        tenant: String,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Serve the Agent API over HTTP, with the scheduler, until Ctrl-C or SIGTERM. On the very
    /// first start it creates an admin key and writes it to <data-dir>/admin.key.
    Serve(Box<ServeArgs>),
    /// Manage the API keys of the Agent API (the same keys the server checks).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Run the scheduler in the foreground until interrupted (Ctrl-C or SIGTERM).
    Scheduler {
        /// Maximum runs executing at once.
        #[arg(long, env = "ETLWORKS_AGENT_MAX_RUNS", default_value_t = 4)]
        max_runs: usize,
    },
    /// Report AI usage (tokens, model and tool calls, cost) recorded by the server: totals, a
    /// breakdown and the caps in force.
    Usage(UsageArgs),
}

#[derive(clap::Args, Debug)]
struct UsageArgs {
    /// Only this tenant (default: every tenant).
    #[arg(long)]
    tenant: Option<String>,
    /// Only this API key's runs (its id, key_...).
    #[arg(long)]
    key: Option<String>,
    /// Only this session's runs.
    #[arg(long)]
    session: Option<String>,
    /// From this time on: RFC 3339, a UTC date (2026-11-01), today, month, or an age (7d).
    #[arg(long)]
    since: Option<String>,
    /// Before this time, in the same forms.
    #[arg(long)]
    until: Option<String>,
    /// Breakdown by tenant, key, model, session or day (default: key with --tenant, tenant
    /// without).
    #[arg(long)]
    by: Option<String>,
    /// Print the report as JSON (the same document GET /usage answers, without `success`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    caps: CapArgs,
}

/// The model behind chat. See docs/llm-providers.md.
#[derive(clap::Args, Debug)]
struct LlmArgs {
    /// builtin (the built-in planner, no LLM), openai (OpenAI or any OpenAI-compatible server:
    /// Azure OpenAI, Ollama, vLLM, llama.cpp, LM Studio, Groq, OpenRouter) or anthropic.
    #[arg(long = "llm", env = "ETLWORKS_AGENT_LLM")]
    provider: Option<String>,
    /// The provider's API root, e.g. http://localhost:11434/v1 for Ollama (default: OpenAI's
    /// or Anthropic's).
    #[arg(long, env = "ETLWORKS_AGENT_LLM_BASE_URL")]
    llm_base_url: Option<String>,
    /// The model, e.g. gpt-4o-mini, llama3.1:8b, claude-sonnet-4-5.
    #[arg(long, env = "ETLWORKS_AGENT_LLM_MODEL")]
    llm_model: Option<String>,
    /// The environment variable holding the API key (default OPENAI_API_KEY or
    /// ANTHROPIC_API_KEY).
    #[arg(long, env = "ETLWORKS_AGENT_LLM_API_KEY_ENV")]
    llm_api_key_env: Option<String>,
    /// Other model names a request's `model` may ask for, comma-separated.
    #[arg(long, env = "ETLWORKS_AGENT_LLM_MODELS", value_delimiter = ',')]
    llm_models: Option<Vec<String>>,
    /// The model's context window in tokens: older turns of a session are left out to fit
    /// (default 128000 for openai, 200000 for anthropic).
    #[arg(long, env = "ETLWORKS_AGENT_LLM_CONTEXT_TOKENS")]
    llm_context_tokens: Option<u64>,
    /// Model calls per message, at most (default 8).
    #[arg(long, env = "ETLWORKS_AGENT_LLM_MAX_TURNS")]
    llm_max_turns: Option<usize>,
    /// Characters of a tool result the model reads; longer ones are cut (default 20000).
    #[arg(long, env = "ETLWORKS_AGENT_LLM_TOOL_RESULT_CHARS")]
    llm_tool_result_chars: Option<usize>,
    /// Seconds of silence from the provider before its answer is abandoned (default 120).
    #[arg(long, env = "ETLWORKS_AGENT_LLM_IDLE_TIMEOUT")]
    llm_idle_timeout: Option<f64>,
    /// Seconds to connect to the provider (default 10).
    #[arg(long, env = "ETLWORKS_AGENT_LLM_CONNECT_TIMEOUT")]
    llm_connect_timeout: Option<f64>,
    /// Attempts per provider request, retries included (default 4; 1 turns retries off).
    #[arg(long, env = "ETLWORKS_AGENT_LLM_MAX_ATTEMPTS")]
    llm_max_attempts: Option<u32>,
    /// Azure OpenAI's api-version, e.g. 2024-10-21 (with --llm openai and a deployment URL).
    #[arg(long, env = "ETLWORKS_AGENT_LLM_AZURE_API_VERSION")]
    llm_azure_api_version: Option<String>,
    /// A file whose text replaces the built-in system prompt.
    #[arg(long, env = "ETLWORKS_AGENT_LLM_SYSTEM_PROMPT_FILE")]
    llm_system_prompt_file: Option<std::path::PathBuf>,
}

impl LlmArgs {
    fn options(&self) -> etlworks_agent::llm::LlmOptions {
        etlworks_agent::llm::LlmOptions {
            provider: self.provider.clone(),
            base_url: self.llm_base_url.clone(),
            model: self.llm_model.clone(),
            api_key_env: self.llm_api_key_env.clone(),
            models: self.llm_models.clone(),
            context_tokens: self.llm_context_tokens,
            max_turns: self.llm_max_turns,
            tool_result_chars: self.llm_tool_result_chars,
            idle_timeout: self.llm_idle_timeout,
            connect_timeout: self.llm_connect_timeout,
            max_attempts: self.llm_max_attempts,
            azure_api_version: self.llm_azure_api_version.clone(),
            system_prompt_file: self.llm_system_prompt_file.clone(),
        }
    }
}

/// AI usage caps (the config file can also set them per tenant and per key).
#[derive(clap::Args, Debug)]
struct CapArgs {
    /// Tokens (input + output) each tenant may use per period; over it, chat answers
    /// cap_exceeded.
    #[arg(long, env = "ETLWORKS_AGENT_TENANT_CAP_TOKENS")]
    tenant_cap_tokens: Option<u64>,
    /// US dollars each tenant may spend per period (priced by the config file's table).
    #[arg(long, env = "ETLWORKS_AGENT_TENANT_CAP_COST")]
    tenant_cap_cost: Option<f64>,
    /// Tokens each API key may use per period.
    #[arg(long, env = "ETLWORKS_AGENT_KEY_CAP_TOKENS")]
    key_cap_tokens: Option<u64>,
    /// US dollars each API key may spend per period.
    #[arg(long, env = "ETLWORKS_AGENT_KEY_CAP_COST")]
    key_cap_cost: Option<f64>,
    /// The caps' period: day or month (from 00:00 UTC; default month).
    #[arg(long, env = "ETLWORKS_AGENT_CAP_PERIOD")]
    cap_period: Option<String>,
}

impl CapArgs {
    fn options(&self) -> etlworks_agent::llm::CapOptions {
        etlworks_agent::llm::CapOptions {
            tenant_cap_tokens: self.tenant_cap_tokens,
            tenant_cap_cost: self.tenant_cap_cost,
            key_cap_tokens: self.key_cap_tokens,
            key_cap_cost: self.key_cap_cost,
            cap_period: self.cap_period.clone(),
        }
    }
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address and port to listen on; port 0 picks a free port (printed at start).
    #[arg(long, env = "ETLWORKS_AGENT_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// Maximum runs executing at once.
    #[arg(long, env = "ETLWORKS_AGENT_MAX_RUNS", default_value_t = 4)]
    max_runs: usize,
    /// Largest JSON request body in bytes; bigger bodies answer 413.
    #[arg(long, env = "ETLWORKS_AGENT_BODY_LIMIT", default_value_t = 1024 * 1024)]
    body_limit: usize,
    /// Sustained requests per second allowed per API key (0 turns the limit off); over it, 429.
    #[arg(long, env = "ETLWORKS_AGENT_RATE_LIMIT", default_value_t = 20.0)]
    rate_limit: f64,
    /// Requests a key may send in a burst before the sustained rate applies.
    #[arg(long, env = "ETLWORKS_AGENT_RATE_BURST", default_value_t = 40)]
    rate_burst: u32,
    /// Chat sessions one tenant may keep; creating one more answers 400 until some are deleted.
    #[arg(long, env = "ETLWORKS_AGENT_MAX_SESSIONS", default_value_t = etl_api::DEFAULT_MAX_SESSIONS)]
    max_sessions: u64,
    /// Largest chat message in bytes; a longer one answers 413.
    #[arg(long, env = "ETLWORKS_AGENT_MAX_MESSAGE_BYTES", default_value_t = etl_api::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Seconds a client has to send its request headers, and then its body; a connection
    /// without complete headers in time is closed, a body too slow answers 408.
    #[arg(long, env = "ETLWORKS_AGENT_READ_TIMEOUT", default_value_t = etl_api::serve::DEFAULT_READ_TIMEOUT.as_secs_f64())]
    read_timeout: f64,
    /// Connections open at once, at most; more clients wait until others close.
    #[arg(long, env = "ETLWORKS_AGENT_MAX_CONNECTIONS", default_value_t = etl_api::serve::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Host names MCP accepts in the Host header besides localhost, 127.0.0.1 and ::1
    /// (protection against DNS rebinding), comma-separated, e.g. agent.example.com,10.0.0.5;
    /// '*' accepts any. Default: the host of --bind.
    #[arg(long, env = "ETLWORKS_AGENT_MCP_ALLOWED_HOSTS", value_delimiter = ',')]
    mcp_allowed_hosts: Vec<String>,
    #[command(flatten)]
    llm: LlmArgs,
    #[command(flatten)]
    caps: CapArgs,
    /// Benchmarks only: also serve `GET /hello` (plain "Hello, World!", no key, no
    /// middleware), the ceiling the API's routes are measured against in the same process.
    #[arg(long, hide = true)]
    hello_route: bool,
}

#[derive(Subcommand, Debug)]
enum KeysAction {
    /// Create a key and print it once (on standard output; the description goes to standard error).
    Create {
        /// What the key is for, e.g. ci or "reporting dashboard".
        #[arg(long)]
        name: String,
        /// admin (everything, key management), user (all tools) or readonly (non-agentic tools).
        #[arg(long, default_value = "user")]
        role: String,
        /// Lifetime from now, e.g. 90m, 12h, 30d, 2w, 1y; no expiry when left out.
        #[arg(long)]
        expires: Option<String>,
        /// The tenant the key acts in.
        #[arg(long, default_value = etl_agent::keys::DEFAULT_TENANT)]
        tenant: String,
    },
    /// List keys (never the keys themselves: their id, name, role, status and first characters).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id; it stops working at once.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
enum KbAction {
    /// Add (or replace) documents: files, or folders whose .md, .markdown, .txt, .html and
    /// .htm files are added.
    Add {
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
    },
    /// List the tenant's documents (and how many bundled ones there are).
    List,
    /// Remove documents by the name `kb list` shows.
    Remove {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Search the bundled documentation and the tenant's documents.
    Search {
        #[arg(required = true)]
        query: Vec<String>,
        /// How many passages.
        #[arg(long, default_value_t = 5)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    init_logging(
        cli.log.as_deref().unwrap_or(default_filter),
        cli.log_format == "json",
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Client(command) => Ok(client::run(command, cli.json).await),
        Command::Host {
            script,
            json,
            max_runs,
        } => {
            let json = json || cli.json;
            let settings = Settings::resolve(cli.data_dir, max_runs)?;
            let script = if script == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the script from standard input")?;
                s
            } else {
                script
            };
            let app = open_app(&settings).await?;
            let engine = app.engine.clone();
            let outcomes = app.host.run(&Caller::local(), &script).await;
            let ok = outcomes.iter().all(|o| o.ok());
            let printed = if json {
                let values: Vec<_> = outcomes.iter().map(|o| o.to_json()).collect();
                let out = if values.len() == 1 {
                    values.into_iter().next().expect("one value")
                } else {
                    serde_json::Value::Array(values)
                };
                emit(true, &serde_json::to_string_pretty(&out)?)
            } else {
                emit(ok, &Host::render(&outcomes))
            };
            if let Err(e) = printed {
                // A reader that went away (`| head`) is not an error worth a message.
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e).context("writing the output");
                }
            }
            // A one-shot process must not abandon runs it started: they would be cut off mid-batch.
            if engine.has_active_runs() {
                if !json && std::io::stderr().is_terminal() {
                    eprintln!("waiting for started runs to finish (Ctrl-C stops them)...");
                }
                tokio::select! {
                    _ = engine.wait_idle() => {}
                    _ = shutdown_signal() => engine.shutdown(Duration::from_secs(30)).await,
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Kb {
            action,
            tenant,
            json,
        } => {
            let settings = Settings::resolve(cli.data_dir, 1)?;
            let app = open_app(&settings).await?;
            kb_command(&app, &tenant, action, json || cli.json)
        }
        Command::Serve(args) => serve(cli.data_dir, cli.config.as_deref(), *args).await,
        Command::Usage(args) => {
            let settings = Settings::resolve(cli.data_dir, 1)?;
            let store = open_store(&settings).await?;
            let result = usage_command(&store, cli.config.as_deref(), args).await;
            store.close().await;
            result
        }
        Command::Keys { action, json } => {
            let settings = Settings::resolve(cli.data_dir, 1)?;
            let store = open_store(&settings).await?;
            let result = keys_command(&store, action, json || cli.json).await;
            store.close().await;
            result
        }
        Command::Scheduler { max_runs } => {
            let settings = Settings::resolve(cli.data_dir, max_runs)?;
            let engine = open_engine(&settings).await?;
            let stop = CancellationToken::new();
            let scheduler = tokio::spawn({
                let engine = engine.clone();
                let stop = stop.clone();
                async move { engine.run_scheduler(stop).await }
            });
            eprintln!(
                "scheduler running on {} (Ctrl-C to stop)",
                settings.data_dir.display()
            );
            shutdown_signal().await;
            stop.cancel();
            let _ = scheduler.await;
            engine.shutdown(Duration::from_secs(30)).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The config file's settings, or none.
fn config_file(path: Option<&std::path::Path>) -> Result<etlworks_agent::llm::ConfigFile> {
    match path {
        Some(path) => etlworks_agent::llm::load_config(path),
        None => Ok(Default::default()),
    }
}

/// `etlworks-agent serve`: the API, the scheduler and the engine in one process, until a signal.
async fn serve(
    data_dir: std::path::PathBuf,
    config: Option<&std::path::Path>,
    args: ServeArgs,
) -> Result<ExitCode> {
    let settings = Settings::resolve(data_dir, args.max_runs)?;
    // Settings first: a wrong one stops the start before anything is opened.
    let chosen = etlworks_agent::llm::choose(
        &args.llm.options(),
        &args.caps.options(),
        &config_file(config)?,
        &|name| std::env::var(name).ok(),
    )?;
    if args.body_limit < 1024 {
        anyhow::bail!(
            "--body-limit must be at least 1024 bytes, got {}",
            args.body_limit
        );
    }
    if !args.read_timeout.is_finite() || args.read_timeout < 0.1 || args.read_timeout > 86_400.0 {
        anyhow::bail!(
            "--read-timeout must be between 0.1 and 86400 seconds, got {}",
            args.read_timeout
        );
    }
    if args.max_connections == 0 {
        anyhow::bail!("--max-connections must be at least 1");
    }
    let read_timeout = Duration::from_secs_f64(args.read_timeout);
    if !args.rate_limit.is_finite() || args.rate_limit < 0.0 {
        anyhow::bail!("--rate-limit must be 0 (off) or a positive number of requests per second");
    }
    let app = open_app(&settings).await?;
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another server using the port? choose another with --bind",
                args.bind
            )
        })?;
    let address = listener.local_addr().context("reading the bound address")?;
    // After the bind, so a start that cannot listen does not use up the one-time printing.
    if let Some(issued) =
        etlworks_agent::ensure_first_admin_key(app.keys.as_ref(), &settings.data_dir).await?
    {
        let path = settings.data_dir.join(etlworks_agent::ADMIN_KEY_FILE);
        println!(
            "Created the first admin key ({}, tenant '{}') and wrote it to {} (mode 0600).\n\
             It is shown only this once:\n\n{}\n\nexport ETLWORKS_API_KEY=$(cat {})\n",
            issued.key.id,
            issued.key.tenant,
            path.display(),
            issued.secret,
            path.display()
        );
    }
    let config = etl_api::ApiConfig {
        body_limit: args.body_limit,
        rate_per_second: args.rate_limit,
        rate_burst: args.rate_burst,
        max_sessions_per_tenant: args.max_sessions,
        max_message_bytes: args.max_message_bytes.max(1),
        read_timeout,
        version: env!("CARGO_PKG_VERSION").to_string(),
        mcp_allowed_hosts: etl_api::mcp::allowed_hosts(&args.mcp_allowed_hosts, &args.bind),
        ..etl_api::ApiConfig::default()
    };
    let model_line = check_model(&chosen).await;
    let mut chat = etl_api::Chat::new(
        app.agent_for(&chosen),
        app.sessions.clone(),
        app.usage.clone(),
    );
    chat.caps = chosen.caps.clone();
    chat.llm = etl_api::LlmInfo {
        provider: chosen.provider.as_str().to_string(),
        base_url: chosen.base_url.clone(),
        models: chosen.models.clone(),
        watch: chosen.watch.clone(),
    };
    let state = etl_api::ApiState::new(
        app.tools.clone(),
        app.library.clone(),
        app.keys.clone(),
        chat,
        config,
    );
    let stop_chats = state.shutdown().clone();
    let stop_scheduler = CancellationToken::new();
    let scheduler = tokio::spawn({
        let engine = app.engine.clone();
        let stop = stop_scheduler.clone();
        async move { engine.run_scheduler(stop).await }
    });
    let stop_recheck = CancellationToken::new();
    if let Some(watch) = chosen.watch.clone() {
        let stop = stop_recheck.clone();
        tokio::spawn(async move {
            watch
                .recheck(etlworks_agent::llm::CHECK_TIMEOUT, stop)
                .await
        });
    }
    tracing::info!(%address, data_dir = %settings.data_dir.display(), "serving the Agent API");
    println!("{model_line}");
    println!(
        "etlworks-agent {} listening on http://{address}{}",
        env!("CARGO_PKG_VERSION"),
        etl_api::BASE_PATH
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let stop_serving = CancellationToken::new();
    let options = etl_api::serve::ServeOptions {
        read_timeout,
        max_connections: args.max_connections,
        drain: Duration::from_secs(30),
    };
    let mut router = etl_api::router(state);
    if args.hello_route {
        let hello =
            axum::Router::new().route("/hello", axum::routing::get(|| async { "Hello, World!" }));
        router = hello.merge(router);
    }
    let server = tokio::spawn(etl_api::serve::serve(
        listener,
        router,
        options,
        stop_serving.clone(),
    ));
    shutdown_signal().await;
    tracing::info!("stopping: no new connections; finishing the requests in flight");
    stop_serving.cancel();
    // Open streams end with an `error` event now rather than holding the stop up.
    stop_chats.cancel();
    match server.await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("requests still running 30 s after the stop signal were cut off")
        }
        Err(e) => tracing::error!(error = %e, "the HTTP server task failed"),
    }
    stop_recheck.cancel();
    stop_scheduler.cancel();
    let _ = scheduler.await;
    app.engine.shutdown(Duration::from_secs(30)).await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Logs the chosen model and what the operator should know, runs the provider's start-up check
/// and answers the line `serve` prints about it. A provider that fails the check leaves the
/// server degraded (chat answers `llm_unavailable` until a re-check succeeds), never stopped.
async fn check_model(chosen: &etlworks_agent::llm::Chosen) -> String {
    for note in &chosen.notes {
        tracing::warn!("{note}");
    }
    let name = chosen.model.name().to_string();
    let provider = chosen.provider.as_str();
    let url = chosen.base_url.as_deref().unwrap_or("-");
    let Some(watch) = &chosen.watch else {
        tracing::info!(model = %name, "chat runs on the built-in planner (no LLM)");
        return format!(
            "model: {name} (no LLM; start with --llm openai or --llm anthropic to use one)"
        );
    };
    match watch.check(etlworks_agent::llm::CHECK_TIMEOUT).await {
        Ok(detail) => {
            tracing::info!(provider, model = %name, base_url = url, %detail, "the LLM is reachable");
            format!("model: {name} ({provider} at {url}): {detail}")
        }
        Err(cause) => {
            tracing::error!(
                provider,
                model = %name,
                base_url = url,
                %cause,
                "the LLM is unreachable; chat answers llm_unavailable until it is back"
            );
            format!(
                "LLM UNAVAILABLE: {provider} model {name} at {url}: {cause}\n\
                 Serving anyway: chat answers llm_unavailable until the provider is reachable \
                 (checked again every {} s); GET /health shows the cause.",
                etlworks_agent::llm::RECHECK_EVERY.as_secs()
            )
        }
    }
}

/// `etlworks-agent usage`: the report on standard output; exit 0.
async fn usage_command(
    store: &etl_store::SqliteStore,
    config: Option<&std::path::Path>,
    args: UsageArgs,
) -> Result<ExitCode> {
    use etl_agent::usage::{self, GroupBy, UsageFilter};
    let now = chrono::Utc::now();
    let caps = etlworks_agent::llm::resolve_caps(&args.caps.options(), &config_file(config)?.caps)?;
    let time = |flag: &str, v: &Option<String>| -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        v.as_deref()
            .map(|t| usage::parse_time(t, now).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
            .transpose()
    };
    let filter = UsageFilter {
        tenant: args.tenant.clone(),
        key_id: args.key.clone(),
        session_id: args.session.clone(),
        since: time("since", &args.since)?,
        until: time("until", &args.until)?,
    };
    let by = match args.by.as_deref() {
        Some(text) => GroupBy::parse(text).map_err(|e| anyhow::anyhow!("--by: {e}"))?,
        None if filter.tenant.is_some() => GroupBy::Key,
        None => GroupBy::Tenant,
    };
    let report = usage::report(store, &filter, by, &caps, now).await?;
    let text = if args.json {
        serde_json::to_string_pretty(&report)?
    } else {
        render_usage(&report)
    };
    if let Err(e) = emit(true, &text)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing the output");
    }
    Ok(ExitCode::SUCCESS)
}

/// The usage report as text: what was reported, the totals, the breakdown, the caps.
fn render_usage(r: &etl_agent::usage::UsageReport) -> String {
    let mut out = String::new();
    let scope = match (&r.tenant, &r.key_id, &r.session_id) {
        (None, _, _) => "every tenant".to_string(),
        (Some(t), None, None) => format!("tenant '{t}'"),
        (Some(t), k, s) => {
            let mut x = format!("tenant '{t}'");
            if let Some(k) = k {
                x.push_str(&format!(", key {k}"));
            }
            if let Some(s) = s {
                x.push_str(&format!(", session {s}"));
            }
            x
        }
    };
    let window = match (r.since, r.until) {
        (None, None) => "all time".to_string(),
        (Some(s), None) => format!("since {}", short_time(Some(s))),
        (None, Some(u)) => format!("before {}", short_time(Some(u))),
        (Some(s), Some(u)) => format!("{} to {}", short_time(Some(s)), short_time(Some(u))),
    };
    out.push_str(&format!("AI usage of {scope}, {window}\n\n"));
    let header = [
        r.group_by.as_str(),
        "runs",
        "input",
        "output",
        "total tokens",
        "tool calls",
        "model calls",
        "cost (USD)",
    ];
    let row = |label: &str, t: &etl_agent::usage::ReportTotals| -> Vec<String> {
        vec![
            label.to_string(),
            t.runs.to_string(),
            t.input_tokens.to_string(),
            t.output_tokens.to_string(),
            t.total_tokens.to_string(),
            t.tool_calls.to_string(),
            t.llm_calls.to_string(),
            format!("{:.6}", t.cost),
        ]
    };
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for g in &r.groups {
        let label = if g.value.is_empty() {
            "(none)"
        } else {
            &g.value
        };
        rows.push(row(label, &g.totals));
    }
    rows.push(row("TOTAL", &r.totals));
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for cells in &rows {
        let line: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for cap in &r.caps {
        let mut limits = Vec::new();
        if let Some(t) = cap.tokens_cap {
            limits.push(format!("{} of {t} tokens", cap.tokens_used));
        }
        if let Some(c) = cap.cost_cap {
            limits.push(format!("${:.6} of ${c:.6}", cap.cost_used));
        }
        out.push_str(&format!(
            "\ncap of {} {}: {} this {} (since {}, resets {}){}",
            cap.scope,
            cap.id,
            limits.join(", "),
            cap.period.as_str(),
            short_time(Some(cap.since)),
            short_time(Some(cap.resets_at)),
            if cap.exceeded { ": EXCEEDED" } else { "" }
        ));
    }
    out.trim_end().to_string()
}

/// `etlworks-agent keys ...`: exit 0 when done, 1 when the key to revoke does not exist.
async fn keys_command(
    store: &etl_store::SqliteStore,
    action: KeysAction,
    json: bool,
) -> Result<ExitCode> {
    use etl_agent::keys::{self, KeyStore};
    let now = chrono::Utc::now();
    let describe = |k: &keys::ApiKey| {
        format!(
            "{}  tenant={}  role={}  status={}  name='{}'  key={}...  created={}  expires={}  last_used={}",
            k.id,
            k.tenant,
            k.role.as_str(),
            k.status(now),
            k.name,
            k.prefix,
            short_time(Some(k.created_at)),
            short_time(k.expires_at),
            short_time(k.last_used_at)
        )
    };
    match action {
        KeysAction::Create {
            name,
            role,
            expires,
            tenant,
        } => {
            let role = keys::parse_role(&role)?;
            let expires_at = expires
                .as_deref()
                .map(keys::parse_lifetime)
                .transpose()?
                .map(|d| now + d);
            let issued = keys::issue(
                store,
                keys::NewKey {
                    name,
                    role,
                    tenant,
                    expires_at,
                },
            )
            .await?;
            if json {
                let mut value = serde_json::to_value(&issued.key)?;
                value["key"] = serde_json::Value::String(issued.secret);
                emit(true, &serde_json::to_string_pretty(&value)?)?;
            } else {
                eprintln!(
                    "created {} (store it now: the key is shown only once)",
                    describe(&issued.key)
                );
                emit(true, &issued.secret)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysAction::List { tenant } => {
            let list = store.list_keys(tenant.as_deref()).await?;
            let out = if json {
                let values: Vec<_> = list
                    .iter()
                    .map(|k| {
                        let mut v = serde_json::to_value(k).unwrap_or_default();
                        v["status"] = k.status(now).into();
                        v
                    })
                    .collect();
                serde_json::to_string_pretty(&values)?
            } else if list.is_empty() {
                "no API keys; 'etlworks-agent serve' creates the first admin key, or use                  'etlworks-agent keys create --name NAME --role admin'"
                    .to_string()
            } else {
                list.iter().map(describe).collect::<Vec<_>>().join("\n")
            };
            emit(true, &out)?;
            Ok(ExitCode::SUCCESS)
        }
        KeysAction::Revoke { id } => {
            if store.revoke_key(None, &id, now).await? {
                emit(true, &format!("revoked {id}; it stops working at once"))?;
                Ok(ExitCode::SUCCESS)
            } else {
                emit(
                    false,
                    &format!(
                        "error: there is no active API key with id '{id}'; see 'etlworks-agent keys list'"
                    ),
                )?;
                Ok(ExitCode::from(1))
            }
        }
    }
}

fn short_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

/// `etlworks-agent kb ...`: exit 0 when everything worked, 1 when something was refused.
fn kb_command(
    app: &etlworks_agent::App,
    tenant: &str,
    action: KbAction,
    json: bool,
) -> Result<ExitCode> {
    let kb = &app.library.kb;
    let mut failed = false;
    let mut report = |ok: bool, text: String, data: serde_json::Value| -> Result<()> {
        failed |= !ok;
        let out = if json {
            serde_json::to_string_pretty(&data)?
        } else {
            text
        };
        if let Err(e) = emit(ok, &out)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(e).context("writing the output");
        }
        Ok(())
    };
    match action {
        KbAction::Add { paths } => {
            for (name, path) in documents_under(&paths)? {
                let added = std::fs::read(&path)
                    .with_context(|| format!("reading {}", path.display()))
                    .and_then(|bytes| Ok(kb.add_document(tenant, &name, &bytes)?));
                match added {
                    Ok(info) => report(
                        true,
                        format!(
                            "added '{}' ({} passages, \"{}\")",
                            info.name, info.passages, info.title
                        ),
                        serde_json::json!({"ok": true, "document": info}),
                    )?,
                    Err(e) => report(
                        false,
                        format!("error: {}: {e:#}", path.display()),
                        serde_json::json!({"ok": false, "path": path, "error": format!("{e:#}")}),
                    )?,
                }
            }
        }
        KbAction::List => {
            let docs = kb.list_documents(tenant)?;
            let bundled = kb.list_bundled()?.len();
            let mut text = if docs.is_empty() {
                format!(
                    "no documents added for tenant '{tenant}'; add some with 'etlworks-agent kb add PATH'"
                )
            } else {
                docs.iter()
                    .map(|d| {
                        format!(
                            "{}  ({}, {} bytes, {} passages) {}",
                            d.name,
                            d.format.as_str(),
                            d.bytes,
                            d.passages,
                            d.title
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            text.push_str(&format!(
                "\n{bundled} bundled documentation pages are searched as well"
            ));
            report(
                true,
                text,
                serde_json::json!({"documents": docs, "bundled": bundled}),
            )?;
        }
        KbAction::Remove { names } => {
            for name in names {
                if kb.remove_document(tenant, &name)? {
                    report(
                        true,
                        format!("removed '{name}'"),
                        serde_json::json!({"ok": true, "removed": name}),
                    )?;
                } else {
                    report(
                        false,
                        format!(
                            "error: tenant '{tenant}' has no document named '{name}'; see 'etlworks-agent kb list'"
                        ),
                        serde_json::json!({"ok": false, "error": format!("no document named '{name}'")}),
                    )?;
                }
            }
        }
        KbAction::Search { query, limit } => {
            match app.library.search_kb(tenant, &query.join(" "), limit) {
                Ok((data, text)) => report(true, text, data)?,
                Err(e) => report(
                    false,
                    format!("error: {}", e.message),
                    serde_json::json!({"ok": false, "error": e.message}),
                )?,
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The documents to add: each file as its file name, each folder's supported files (recursively)
/// as their path relative to the folder.
fn documents_under(paths: &[std::path::PathBuf]) -> Result<Vec<(String, std::path::PathBuf)>> {
    const EXTENSIONS: &[&str] = &["md", "markdown", "txt", "text", "html", "htm"];
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        if meta.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, path.clone()));
            continue;
        }
        let mut stack = vec![path.clone()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .with_context(|| format!("reading folder {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    stack.push(p);
                } else if p
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                {
                    let rel = p
                        .strip_prefix(path)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned();
                    out.push((rel, p));
                }
            }
        }
    }
    if out.is_empty() {
        anyhow::bail!(
            "no documents found: give Markdown, text or HTML files, or folders containing them"
        );
    }
    Ok(out)
}

/// Writes one result to stdout (or stderr when it reports a failure), without panicking when
/// the reader has gone away.
fn emit(to_stdout: bool, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if to_stdout {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        out.flush()
    } else {
        writeln!(std::io::stderr().lock(), "{text}")
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

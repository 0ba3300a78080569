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

use etlworks_agent::{Settings, open_app, open_engine};

#[derive(Parser, Debug)]
#[command(
    name = "etlworks-agent",
    version,
    about = "A self-hosted data-integration agent server: connections, flows, schedules and the host CLI language."
)]
struct Cli {
    /// The data directory: metadata database, secret key, the built-in warehouse.
    #[arg(
        long,
        global = true,
        env = "ETLWORKS_AGENT_DATA_DIR",
        default_value = "./data"
    )]
    data_dir: std::path::PathBuf,

    /// Log filter (tracing syntax), e.g. info or etl_engine=debug.
    #[arg(
        long,
        global = true,
        env = "ETLWORKS_AGENT_LOG",
        default_value = "warn"
    )]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    /// Run the scheduler in the foreground until interrupted (Ctrl-C or SIGTERM).
    Scheduler {
        /// Maximum runs executing at once.
        #[arg(long, env = "ETLWORKS_AGENT_MAX_RUNS", default_value_t = 4)]
        max_runs: usize,
    },
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
    init_logging(&cli.log);
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

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Host {
            script,
            json,
            max_runs,
        } => {
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
            kb_command(&app, &tenant, action, json)
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

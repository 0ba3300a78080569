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

use etlworks_agent::{Settings, open_engine};

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
    /// Run the scheduler in the foreground until interrupted (Ctrl-C or SIGTERM).
    Scheduler {
        /// Maximum runs executing at once.
        #[arg(long, env = "ETLWORKS_AGENT_MAX_RUNS", default_value_t = 4)]
        max_runs: usize,
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
            let engine = open_engine(&settings).await?;
            let host = Host::new(engine.clone());
            let outcomes = host.run(&Caller::local(), &script).await;
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

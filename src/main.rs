//! The `turnout` command line: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use turnout::config::{resolve_env, Config, LogFormat, Secrets};

/// OpenAI-compatible failover router for LLM APIs.
#[derive(Parser)]
#[command(name = "turnout", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (also `TURNOUT_CONFIG`).
    #[arg(
        long,
        global = true,
        env = "TURNOUT_CONFIG",
        default_value = "config.yaml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Validate a config file and print a summary.
    Check {
        /// Unset env vars are errors, not warnings.
        #[arg(long)]
        strict: bool,
    },
    /// Run a simulated OpenAI-compatible provider.
    Mock(turnout::mock::cli::MockArgs),
    /// Measure each configured upstream directly (TTFT, tokens/s, latency, errors).
    Bench(turnout::bench::BenchArgs),
    /// Requests, errors, tokens and cost from audit files, and what the same
    /// tokens would cost on each priced upstream.
    Report {
        /// Audit file (its rotated `.1`, `.2`, … are read too); repeatable.
        /// Default: the config's `audit.path`.
        #[arg(long = "audit")]
        audit: Vec<PathBuf>,
        /// Only lines newer than this (`24h`, `7d`, `30m`).
        #[arg(long)]
        since: Option<String>,
        /// Group by `upstream`, `key`, `model`, `route` or `day`.
        #[arg(long, default_value = "upstream")]
        by: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// mimalloc instead of glibc's malloc: allocation and free were ~14 % of the
/// CPU of a proxied request under glibc (perf; docs/benchmarks.md); called
/// through [`turnout::alloc::Allocator`], which skips mimalloc's aligned
/// entry where plain allocation is aligned enough.
#[global_allocator]
static GLOBAL: turnout::alloc::Allocator = turnout::alloc::Allocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Check { strict } => check(&cli.config, strict),
        Command::Serve => runtime(serve(cli.config)),
        Command::Bench(args) => runtime(bench(cli.config, args)),
        Command::Report {
            audit,
            since,
            by,
            json,
        } => report(&cli.config, audit, since.as_deref(), &by, json),
        Command::Mock(args) => runtime(async move {
            init_logs(LogFormat::Text, "info");
            match turnout::mock::cli::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("turnout mock: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

fn runtime(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    // Access lines wait per worker until it goes idle (or a batch fills):
    // one write(2) per batch under load, at once when idle (src/logfmt.rs).
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(turnout::logfmt::flush_when_idle)
        .on_thread_stop(turnout::logfmt::flush_pending)
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("turnout: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(
    config: &std::path::Path,
    mut files: Vec<PathBuf>,
    since: Option<&str>,
    by: &str,
    json: bool,
) -> ExitCode {
    use turnout::audit::report::{build, GroupBy};
    let Some(by) = GroupBy::parse(by) else {
        eprintln!("error: --by {by:?}: expected upstream, key, model, route or day");
        return ExitCode::FAILURE;
    };
    let since = match since.map(humantime::parse_duration).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --since: {e}; expected e.g. 24h, 7d, 30m");
            return ExitCode::FAILURE;
        }
    };
    // The config prices the what-if and names the default file; a report
    // still works without it.
    let cfg = match Config::load(config) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("warning: {e}; no what-if pricing");
            None
        }
    };
    if files.is_empty() {
        files.push(
            cfg.as_ref()
                .and_then(|c| c.audit.as_ref())
                .map_or_else(|| "turnout-audit.jsonl".into(), |a| a.path.clone()),
        );
    }
    let r = match build(&files, since, by, cfg.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string_pretty(&r) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", r.table());
    }
    ExitCode::SUCCESS
}

fn check(path: &std::path::Path, strict: bool) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut unset = 0;
    for (key, var) in cfg.env_vars() {
        if resolve_env(&var).is_none() {
            unset += 1;
            let level = if strict { "error" } else { "warning" };
            let why = if key == "admin.token_env" {
                " (the admin API will answer 403)"
            } else {
                ""
            };
            eprintln!("{level}: {key}: env var {var} is not set{why}");
        }
    }
    if strict && unset > 0 {
        return ExitCode::FAILURE;
    }
    let splits = cfg.routes.iter().filter(|r| r.split.is_some()).count();
    println!(
        "{}: ok — listen {}, admin {}, {} upstream(s), {} route(s), {} split(s), auth {}",
        path.display(),
        cfg.listen,
        cfg.admin.listen,
        cfg.upstreams.len(),
        cfg.routes.len(),
        splits,
        if cfg.auth.as_ref().is_some_and(|a| a.disabled) {
            "disabled (loopback only)"
        } else {
            "on"
        },
    );
    ExitCode::SUCCESS
}

fn init_logs(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: escape codes in a log file are noise, and
    // formatting them is a measurable share of the per-request log line.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_timer(turnout::logfmt::CachedTime)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.fmt_fields(turnout::logfmt::LeanFields).try_init(),
    };
    if installed.is_ok() && format == LogFormat::Text && !ansi {
        turnout::logfmt::write_access_lines_directly();
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logs(cfg.log.format, &cfg.log.level);
    let secrets = match Secrets::resolve(&cfg, &resolve_env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if secrets.admin_token.is_none() {
        tracing::warn!(var = %cfg.admin.token_env, "admin token env var unset: the admin API answers 403 (metrics stay up)");
    }
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let (public, admin) = match (bind(cfg.listen).await, bind(cfg.admin.listen).await) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = turnout::app::StartOptions {
        config_path: Some(path),
        env: std::sync::Arc::new(resolve_env),
    };
    let running = match turnout::app::start_with(cfg, secrets, public, admin, opts).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "turnout listening on http://{} (admin on http://{})",
        running.addr, running.admin_addr
    );
    wait_for_signals(&running).await;
    tracing::info!("shutting down");
    running.shutdown_gracefully().await;
    ExitCode::SUCCESS
}

async fn bench(path: PathBuf, args: turnout::bench::BenchArgs) -> ExitCode {
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logs(LogFormat::Text, "warn");
    match turnout::bench::run(&cfg, &args, &resolve_env).await {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Reloads the config on SIGHUP; returns on SIGTERM or SIGINT.
async fn wait_for_signals(running: &turnout::app::Running) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let stop = shutdown_signal();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the config");
                        // The outcome is logged and counted by the reloader.
                        let _ = running.state.reloader.reload().await;
                    }
                }
            }
        }
    }
    let _ = running;
    shutdown_signal().await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

//! The `edge-relay` command: `run`, `check-config`, `probe`, `scrub`, `--version`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edge_relay::{Config, Relay};
use sd_notify::NotifyState;

/// mimalloc rather than glibc's malloc: parsing, scrubbing and serializing
/// an event allocate and free thousands of small blocks, and under load
/// glibc's malloc took a quarter of the relay's CPU (BENCHMARKS.md). mimalloc
/// keeps memory a thread freed for that thread to reuse, which is why large
/// bodies are inflated on a fixed set of threads (`pipeline::Inflaters`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits' EX_USAGE: the configuration cannot be used.
const EX_USAGE: u8 = 64;
/// sysexits' EX_DATAERR: the input is not what was expected.
const EX_DATAERR: u8 = 65;

/// `edge-relay probe`: one HTTP/1.0 GET with a 5-second deadline; 200 is healthy.
fn probe(url: &str) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let rest = url
        .strip_prefix("http://")
        .context("the URL must start with http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .context("resolving the address")?
        .next()
        .context("the address resolves to nothing")?;
    let timeout = Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).context("connecting")?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").context("sending")?;
    let mut answer = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .context("reading")?;
    let status_line = String::from_utf8_lossy(&answer);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    anyhow::ensure!(status == "200", "{url} answered {status:?}");
    Ok(())
}

/// `edge-relay scrub`: the event on stdin, scrubbed as the relay would,
/// printed with its redaction list.
fn scrub_stdin(config: &Config, project: Option<u64>) -> anyhow::Result<()> {
    use std::io::Read as _;
    let scrubber = match project {
        None => config.scrubber.clone(),
        Some(id) => config
            .projects
            .get(id)
            .map(|p| p.scrubber.clone())
            .ok_or_else(|| anyhow::anyhow!("project {id} is not in the configuration"))?,
    };
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the event from stdin")?;
    let mut event: serde_json::Value =
        serde_json::from_str(&input).context("the input is not JSON")?;
    let redactions = scrubber.scrub_event(&mut event);
    let out = serde_json::json!({ "event": event, "redactions": redactions });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).context("printing")?
    );
    Ok(())
}

#[derive(Parser)]
#[command(
    name = "edge-relay",
    version,
    about = "Relay between Sentry SDKs and Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve SDKs until SIGTERM (graceful) or SIGINT (fast).
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the configuration, print a summary, and exit.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Ask a running relay's admin port: exit 0 when the URL answers 200 (for
    /// container HEALTHCHECKs, where there is no curl).
    Probe {
        /// For example http://127.0.0.1:3001/readyz
        #[arg(long, default_value = "http://127.0.0.1:3001/healthz")]
        url: String,
    },
    /// Scrub one event read from stdin and print it with the list of redactions
    /// (rule, path, method), to try rules before a rollout.
    Scrub {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Use this project's scrub settings (its overrides on top of `[scrub]`).
        #[arg(long, short)]
        project: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Probe { url } = &cli.command {
        return match probe(url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edge-relay probe: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let (Command::Run { config: path }
    | Command::CheckConfig { config: path }
    | Command::Scrub { config: path, .. }) = &cli.command
    else {
        unreachable!("probe returned above");
    };
    // An invalid config exits before any port is bound.
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("edge-relay: invalid configuration {}: {e}", path.display());
            return ExitCode::from(EX_USAGE);
        }
    };
    match cli.command {
        Command::CheckConfig { .. } => {
            println!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Command::Probe { .. } => unreachable!("probe returned above"),
        Command::Scrub { project, .. } => match scrub_stdin(&config, project) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edge-relay scrub: {e:#}");
                ExitCode::from(EX_DATAERR)
            }
        },
        Command::Run { config: path } => match run(config, path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edge-relay: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    init_logging(&config.log_level, config.log_json)?;
    raise_open_file_limit(config.server.max_connections.get());
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.server.worker_threads {
        runtime.worker_threads(threads.get());
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = config.shutdown;
        // Handlers first: a signal that arrives once the relay says it is listening is handled.
        let signals = wait_for_signal(shutdown.grace_period, shutdown.fast_grace_period)?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let relay = Relay::bind(config, prometheus::Registry::new()).await?;
        // SIGHUP: read the file again and swap projects, keys, quotas, sampling
        // and scrub rules; an invalid file is refused and the old one keeps running.
        let handle = relay.handle();
        let reload_handle = handle.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!(path = %path.display(), "SIGHUP: reloading the configuration");
                notify(&[NotifyState::Reloading]);
                reload_handle.reload(Config::load(&path));
                notify(&[NotifyState::Ready]);
            }
        });
        tracing::info!(
            sdk = %relay.sdk_addr(),
            admin = %relay.admin_addr(),
            version = env!("CARGO_PKG_VERSION"),
            "edge-relay listening"
        );
        // systemd: ready now; a watchdog ping at half its interval while healthy.
        notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
        if let Some(interval) = sd_notify::watchdog_enabled() {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval / 2);
                loop {
                    tick.tick().await;
                    if handle.is_healthy() {
                        notify(&[NotifyState::Watchdog]);
                    }
                }
            });
        }
        let report = relay.run(signals).await;
        // Fields of their own, so that JSON logs can be queried by them.
        tracing::info!(
            requests_finished = report.requests_finished,
            undelivered = report.undelivered,
            spooled = report.spooled,
            "edge-relay stopped"
        );
        Ok(())
    })
}

/// Resolves with the grace period for the first SIGTERM (graceful) or SIGINT (fast).
fn wait_for_signal(
    grace: Duration,
    fast_grace: Duration,
) -> anyhow::Result<impl std::future::Future<Output = Duration>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: graceful shutdown");
                notify(&[NotifyState::Stopping]);
                grace
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: fast shutdown");
                notify(&[NotifyState::Stopping]);
                fast_grace
            }
        }
    })
}

/// Tells systemd (when it started us with `Type=notify`) what we are doing.
/// Outside systemd there is no socket and this does nothing.
fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Raises the soft limit on open descriptors to the hard one, as nginx's
/// `worker_rlimit_nofile` and Go programs do: each SDK connection takes two
/// (its socket and the handle kept for the lingering close), and a shell's
/// usual soft limit of 1024 would refuse connections well before
/// `server.max_connections`. Warns when even the hard limit is short of
/// what the connections need.
fn raise_open_file_limit(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // The kernel's default ceiling (`fs.nr_open`), for an unlimited hard limit.
    const CEILING: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(CEILING);
    let soft = limit.current.unwrap_or(CEILING);
    let raised = Rlimit {
        current: Some(hard),
        maximum: limit.maximum,
    };
    let have = match soft < hard {
        false => soft,
        true => match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(from = soft, to = hard, "raised the open-file limit");
                hard
            }
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
                soft
            }
        },
    };
    // Two a connection, and some for the listeners, the spool, Kafka and logs.
    let need = 2 * max_connections as u64 + 64;
    if have < need {
        tracing::warn!(
            limit = have,
            need,
            "the open-file limit is below what server.max_connections needs: \
             past it, new connections wait while accepting fails, and the spool \
             or Kafka may fail to open files (raise LimitNOFILE, or ulimit -n)"
        );
    }
}

fn init_logging(level: &str, json: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => {
            edge_relay::config::check_log_filter(&env)
                .map_err(|e| anyhow::anyhow!("RUST_LOG: {e}"))?;
            EnvFilter::try_new(env).context("RUST_LOG is not a valid filter")?
        }
        _ => EnvFilter::try_new(level).context("log.level is not a valid filter")?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = if json {
        builder.json().with_current_span(false).try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

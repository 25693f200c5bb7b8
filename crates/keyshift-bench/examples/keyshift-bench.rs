//! `keyshift-bench`: raw in-process rates of the primitives, and load on a running server.
//! See `docs/benchmarks.md` for the command that produces the published figures.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use keyshift_bench::admin::AdminFile;
use keyshift_bench::client::{split_url, Connector};
use keyshift_bench::load::{self, LoadConfig, LoadOp};
use keyshift_bench::raw::{self, RawOp};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Benchmarks a Keyshift server over HTTPS and the crypto primitives in-process.
#[derive(Debug, Parser)]
#[command(name = "keyshift-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// In-process rate of each primitive through keyshift-crypto, on T threads.
    Raw {
        /// Seconds per primitive.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Threads [default: available cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Only these primitives (repeatable) [default: all].
        #[arg(long, value_enum)]
        op: Vec<RawOp>,
    },
    /// N keep-alive HTTPS connections against a running server, reporting ops/s, p50 and p99.
    Load {
        /// The server's admin.json (credentials, token URL, CA certificate).
        #[arg(long)]
        admin: PathBuf,
        /// Concurrent connections, one task each.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Measured seconds, after the warm-up.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Unmeasured warm-up seconds.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// The operation.
        #[arg(long, value_enum)]
        op: LoadOp,
        /// Vault URL [default: admin.json's vault_url].
        #[arg(long)]
        url: Option<String>,
        /// Worker threads of the generator's runtime [default: available cores].
        #[arg(long)]
        client_threads: Option<usize>,
        /// The server's process id: its CPU use over the window is reported beside the
        /// generator's and the rest of the machine's.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Waits until `GET /health` answers 200.
    Wait {
        /// The server's admin.json.
        #[arg(long)]
        admin: PathBuf,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn seconds(s: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds"))
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?)
}

async fn wait_healthy(admin: &AdminFile, timeout: Duration) -> Result<()> {
    let (origin, _) = split_url(&admin.vault_url)?;
    let ca = admin.ca_pem()?;
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let attempt = async {
            let connector = Connector::new(&origin, &ca).await?;
            let mut connection = connector.connect().await?;
            let request = hyper::Request::builder()
                .uri("/health")
                .header(hyper::header::HOST, connector.authority().clone())
                .body(http_body_util::Full::new(hyper::body::Bytes::new()))?;
            let (status, _) = connection.send(request).await?;
            anyhow::Ok(status)
        };
        match attempt.await {
            Ok(hyper::StatusCode::OK) => return Ok(()),
            Ok(status) => last = format!("GET /health answered {status}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{} is not healthy after {timeout:?}: {last}",
        admin.vault_url
    )
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Raw {
            seconds: s,
            threads,
            op,
        } => {
            let duration = seconds(s, "--seconds")?;
            let threads = threads.unwrap_or_else(cores);
            let ops = if op.is_empty() {
                RawOp::ALL.to_vec()
            } else {
                op
            };
            for op in ops {
                println!("{}", raw::run(op, threads, duration)?);
            }
            Ok(())
        }
        Command::Load {
            admin,
            connections,
            seconds: s,
            warmup,
            op,
            url,
            client_threads,
            server_pid,
        } => {
            let config = LoadConfig {
                admin: AdminFile::load(&admin)?,
                url,
                op,
                connections,
                duration: seconds(s, "--seconds")?,
                warmup: Duration::try_from_secs_f64(warmup)
                    .context("--warmup must be a number of seconds")?,
                server_pid,
            };
            let report =
                runtime(client_threads.unwrap_or_else(cores))?.block_on(load::run(&config))?;
            println!("{report}");
            if let Some(e) = &report.first_error {
                eprintln!("first error: {e}");
            }
            Ok(())
        }
        Command::Wait { admin, timeout } => {
            let admin = AdminFile::load(&admin)?;
            runtime(1)?.block_on(wait_healthy(&admin, seconds(timeout, "--timeout")?))
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

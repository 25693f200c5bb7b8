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
    /// Writes a JSON-lines list of COUNT data keys wrapped locally (A256KW) under the 32-byte key
    /// in K_HEX, as if by the vault key KID (import K as an oct-HSM key first).
    GenWrappedKeys {
        /// The wrapping key, 64 hex digits.
        #[arg(long)]
        k_hex: String,
        /// The vault key's versioned kid the lines name.
        #[arg(long)]
        kid: String,
        /// Lines.
        #[arg(long)]
        count: u64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// The naive migration path over the first COUNT lines of FILE: one unwrapkey and one
    /// wrapkey request per item, CONCURRENCY in flight; prints items per second.
    NaiveRewrap {
        /// The server's admin.json.
        #[arg(long)]
        admin: PathBuf,
        /// A list written by gen-wrapped-keys.
        #[arg(long)]
        file: PathBuf,
        /// The target key's kid.
        #[arg(long)]
        target: String,
        /// Items.
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// Items in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
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
        Command::GenWrappedKeys {
            k_hex,
            kid,
            count,
            out,
        } => {
            let k: Vec<u8> = (0..k_hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(k_hex.get(i..i + 2).unwrap_or("zz"), 16))
                .collect::<Result<_, _>>()
                .context("--k-hex must be hex")?;
            if k.len() != 32 {
                bail!("--k-hex must be 32 bytes");
            }
            keyshift_bench::migrate::generate(&k, &kid, count, &out)
        }
        Command::NaiveRewrap {
            admin,
            file,
            target,
            count,
            concurrency,
        } => {
            let rate = runtime(cores())?.block_on(keyshift_bench::migrate::naive(
                &admin,
                &file,
                &target,
                count,
                concurrency,
            ))?;
            println!("naive path: {rate:.0} items/s ({count} items, {concurrency} in flight)");
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

//! In-process rates of the primitives behind the benchmarked endpoints, through
//! `keyshift-crypto`'s public API: the anchor each server figure is compared with.

use crate::cpu::{self, CpuUse};
use anyhow::{anyhow, Result};
use keyshift_crypto::{Curve, EncryptionAlgorithm, KeyMaterial};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A primitive timed in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RawOp {
    /// `wrap_key(A256KW)` of 32 bytes under a 256-bit oct key.
    Wrapkey,
    /// `encrypt(A256GCM)` of 64 bytes under a 256-bit oct key (a fresh IV each time).
    Encrypt,
    /// `decrypt(RSA-OAEP-256)` of a 32-byte value under an RSA-2048 key: one private-key operation.
    Decrypt,
    /// `generate_ec(P-256)`: the key material of a `create` of an EC key.
    CreateEc,
    /// `generate_rsa(2048)`.
    CreateRsa,
}

impl RawOp {
    /// Every primitive, in report order.
    pub const ALL: [RawOp; 5] = [
        RawOp::Wrapkey,
        RawOp::Encrypt,
        RawOp::Decrypt,
        RawOp::CreateEc,
        RawOp::CreateRsa,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            RawOp::Wrapkey => "wrapkey",
            RawOp::Encrypt => "encrypt",
            RawOp::Decrypt => "decrypt",
            RawOp::CreateEc => "create-ec",
            RawOp::CreateRsa => "create-rsa",
        }
    }

    /// Operations between two clock reads: enough that reading the clock costs nothing next to
    /// the fast primitives, few enough that the slow ones do not run far past the deadline.
    fn batch(self) -> u64 {
        match self {
            RawOp::Wrapkey | RawOp::Encrypt => 64,
            RawOp::Decrypt | RawOp::CreateEc => 4,
            RawOp::CreateRsa => 1,
        }
    }
}

/// The rate of one primitive.
#[derive(Debug, Clone, Copy)]
pub struct RawReport {
    /// The primitive.
    pub op: RawOp,
    /// Threads that ran it.
    pub threads: usize,
    /// Operations done, all threads.
    pub ops: u64,
    /// Sum over threads of each thread's operations over its own elapsed time.
    pub ops_per_sec: f64,
    /// CPU use while it ran, where `/proc` is readable.
    pub cpu: Option<CpuUse>,
}

impl std::fmt::Display for RawReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "raw op={} threads={} ops={} ops_per_sec={:.0}",
            self.op.name(),
            self.threads,
            self.ops,
            self.ops_per_sec
        )?;
        match &self.cpu {
            Some(cpu) => write!(f, " {cpu}"),
            None => Ok(()),
        }
    }
}

fn crypto(e: keyshift_crypto::CryptoError) -> anyhow::Error {
    anyhow!("keyshift-crypto: {e}")
}

/// One call of the primitive, with its inputs made beforehand.
type Operation = Box<dyn Fn() -> Result<()> + Sync>;

fn prepare(op: RawOp) -> Result<Operation> {
    Ok(match op {
        RawOp::Wrapkey => {
            let key = KeyMaterial::generate_oct(256).map_err(crypto)?;
            let value = keyshift_crypto::random_bytes(32).map_err(crypto)?;
            Box::new(move || {
                black_box(
                    key.wrap_key(EncryptionAlgorithm::A256Kw, black_box(&value))
                        .map_err(crypto)?,
                );
                Ok(())
            })
        }
        RawOp::Encrypt => {
            let key = KeyMaterial::generate_oct(256).map_err(crypto)?;
            let value = keyshift_crypto::random_bytes(64).map_err(crypto)?;
            Box::new(move || {
                black_box(
                    key.encrypt(EncryptionAlgorithm::A256Gcm, black_box(&value), None, None)
                        .map_err(crypto)?,
                );
                Ok(())
            })
        }
        RawOp::Decrypt => {
            let key = KeyMaterial::generate_rsa(2048).map_err(crypto)?;
            let value = keyshift_crypto::random_bytes(32).map_err(crypto)?;
            let ciphertext = key
                .encrypt(EncryptionAlgorithm::RsaOaep256, &value, None, None)
                .map_err(crypto)?
                .ciphertext;
            Box::new(move || {
                let plain = key
                    .decrypt(
                        EncryptionAlgorithm::RsaOaep256,
                        black_box(&ciphertext),
                        None,
                        None,
                        None,
                    )
                    .map_err(crypto)?;
                black_box(plain);
                Ok(())
            })
        }
        RawOp::CreateEc => Box::new(|| {
            black_box(KeyMaterial::generate_ec(Curve::P256).map_err(crypto)?);
            Ok(())
        }),
        RawOp::CreateRsa => Box::new(|| {
            black_box(KeyMaterial::generate_rsa(2048).map_err(crypto)?);
            Ok(())
        }),
    })
}

/// Runs `op` on `threads` threads for `duration` and reports its rate.
pub fn run(op: RawOp, threads: usize, duration: Duration) -> Result<RawReport> {
    let threads = threads.max(1);
    let operation = prepare(op)?;
    // One untimed call: lazy initialisation (CPU feature detection, tables) is not the rate.
    operation()?;
    let batch = op.batch();
    let before = cpu::sample(None);
    let per_thread = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let operation = &operation;
                scope.spawn(move || -> Result<(u64, Duration)> {
                    let start = Instant::now();
                    let deadline = start + duration;
                    let mut done = 0u64;
                    loop {
                        for _ in 0..batch {
                            operation()?;
                        }
                        done += batch;
                        if Instant::now() >= deadline {
                            return Ok((done, start.elapsed()));
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| anyhow!("a benchmark thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let cpu = before
        .zip(cpu::sample(None))
        .and_then(|(a, b)| cpu::between(&a, &b));
    let ops = per_thread.iter().map(|(n, _)| n).sum();
    let ops_per_sec = per_thread
        .iter()
        .map(|(n, elapsed)| *n as f64 / elapsed.as_secs_f64())
        .sum();
    Ok(RawReport {
        op,
        threads,
        ops,
        ops_per_sec,
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Checks that every primitive runs, not how fast: no timed assertions in tests.
    #[test]
    fn every_primitive_runs() {
        for op in RawOp::ALL {
            let report = run(op, 1, Duration::from_millis(1)).unwrap();
            assert!(report.ops >= 1, "{}", op.name());
        }
    }
}

//! Streaming throughput of the envelope format, single thread, memory-bounded.
//!
//! ```sh
//! cargo run --release -p keyshift-envelope --example envelope-bench -- [--gib 1] [--segment 65536] [--runs 3]
//! ```
//!
//! Encrypt: `io::repeat` (1 GiB of plaintext, never held in memory) -> `Encryptor::encrypt_stream`
//! -> `io::sink()`. Decrypt: a 1 GiB file made once in memory -> `Decryptor::decrypt_stream`
//! -> `io::sink()`. Also the raw AES-256-GCM rate of keyshift-crypto over one in-place 16 KiB
//! buffer (what `openssl speed -evp aes-256-gcm` measures) sealing and opening, as a reference for
//! the framing cost, and the rate of merely reading the 1 GiB file through one buffer (the floor
//! under decrypt, which must read its input from memory while encrypt reads `io::repeat`).
//! Figures are in GiB/s and in openssl's unit (1000s of bytes per second) for comparison.

use std::io::{self, Read};
use std::time::Instant;

use keyshift_crypto::gcm::Aes256GcmKey;
use keyshift_envelope::{Decryptor, Encryptor, Header, MasterKey};

const GIB: u64 = 1 << 30;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(what: &str, bytes: u64, seconds: f64) {
    let gib_s = bytes as f64 / GIB as f64 / seconds;
    let k_s = bytes as f64 / 1000.0 / seconds;
    println!("{what:<28} {gib_s:>6.3} GiB/s  {k_s:>12.2}k bytes/s  ({seconds:.3} s)");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let size = match arg("--mib", 0) {
        0 => arg("--gib", 1) * GIB,
        mib => mib << 20,
    };
    let segment = u32::try_from(arg("--segment", 65_536))?;
    let runs = arg("--runs", 3);
    let master = MasterKey::generate()?;
    let context = b"bench";
    println!("plaintext {size} bytes, segment {segment} bytes, {runs} runs");

    // The file to decrypt, made once.
    let mut file = Vec::with_capacity(size as usize + size as usize / segment as usize * 16 + 4096);
    Encryptor::three_level(&master, context, segment)?
        .encrypt_stream(io::repeat(0x5a).take(size), &mut file)?;
    let header = Header::parse(&file)?;
    let decryptor = Decryptor::from_master_key(&header, &master, context)?;

    let raw = Aes256GcmKey::new(&[7u8; 32])?;
    let mut block = vec![0x5au8; 16 * 1024];
    for run in 1..=runs {
        println!("run {run}");
        let start = Instant::now();
        let n = Encryptor::three_level(&master, context, segment)?
            .encrypt_stream(io::repeat(0x5a).take(size), io::sink())?;
        report("  envelope encrypt", n, start.elapsed().as_secs_f64());

        let start = Instant::now();
        let n = decryptor.decrypt_stream(&file[header.len()..], io::sink())?;
        report("  envelope decrypt", n, start.elapsed().as_secs_f64());

        // The floor under decrypt: reading the file from memory through one buffer.
        let mut buf = vec![0u8; segment as usize + 17];
        let mut reader = &file[..];
        let start = Instant::now();
        let mut n = 0u64;
        loop {
            let got = reader.read(&mut buf)?;
            if got == 0 {
                break;
            }
            std::hint::black_box(&buf);
            n += got as u64;
        }
        report("  read the file (memcpy)", n, start.elapsed().as_secs_f64());

        let blocks = size / block.len() as u64;
        let start = Instant::now();
        for i in 0..blocks {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&i.to_be_bytes());
            raw.seal_in_place(&nonce, &[], &mut block)?;
        }
        report(
            "  raw GCM seal, 16 KiB",
            blocks * block.len() as u64,
            start.elapsed().as_secs_f64(),
        );

        let nonce = [0u8; 12];
        let tag = raw.seal_in_place(&nonce, &[], &mut block)?;
        let mut out = vec![0u8; block.len()];
        let start = Instant::now();
        for _ in 0..blocks {
            raw.open_to(&nonce, &[], &block, &tag, &mut out)?;
        }
        report(
            "  raw GCM open_to, 16 KiB",
            blocks * block.len() as u64,
            start.elapsed().as_secs_f64(),
        );
    }
    Ok(())
}

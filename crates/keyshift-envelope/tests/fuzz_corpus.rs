//! Runs every seed-corpus file of the cargo-fuzz targets (`fuzz/corpus/<target>/`)
//! through the same functions the targets call, plus simple mutations of each, so CI
//! exercises the harness on stable without libFuzzer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use keyshift_envelope::fuzzing::{decrypt_stream, parse_header};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "seed corpus of {target} is missing");
    files
}

/// The seed itself, every prefix length at a stride, and single-byte flips at a stride.
fn mutations(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![seed.to_vec()];
    let stride = (seed.len() / 64).max(1);
    for cut in (0..seed.len()).step_by(stride) {
        out.push(seed[..cut].to_vec());
    }
    for at in (0..seed.len()).step_by(stride) {
        let mut flipped = seed.to_vec();
        flipped[at] ^= 0x5a;
        out.push(flipped);
    }
    let mut longer = seed.to_vec();
    longer.extend_from_slice(&[0u8; 17]);
    out.push(longer);
    out
}

#[test]
fn parse_header_seed_corpus() {
    for (name, seed) in corpus("parse_header") {
        for input in mutations(&seed) {
            parse_header(&input);
        }
        assert!(keyshift_envelope::Header::parse(&seed).is_ok(), "{name}");
    }
}

#[test]
fn decrypt_stream_seed_corpus() {
    for (name, seed) in corpus("decrypt_stream") {
        // Each seed is a valid file under the harness keys.
        assert!(decrypt_stream(&seed).is_some(), "{name}");
        for input in mutations(&seed).into_iter().skip(1) {
            let _ = decrypt_stream(&input);
        }
    }
}

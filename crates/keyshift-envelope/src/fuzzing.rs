//! The functions the cargo-fuzz targets run (`fuzz/`), here so that a plain `cargo test`
//! runs the seed corpus through exactly the same code. Not part of the API.

use std::future::Future;
use std::io::Cursor;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::{Decryptor, Header, LocalKek, MasterKey};

/// `N` consecutive byte values from `start` (wrapping): readable test keys.
pub const fn sequence<const N: usize>(start: u8) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = start.wrapping_add(i as u8);
        i += 1;
    }
    out
}

/// The fixed keys of the fuzzing harness: those of the checked-in test vectors.
pub const FUZZ_KEK_KID: &str = "https://vault.example/keys/kek/00112233445566778899aabbccddeeff";
/// The KEK's bytes.
pub const FUZZ_KEK_KEY: [u8; 32] = sequence(0x00);
/// The master key.
pub const FUZZ_MASTER_KEY: [u8; 32] = sequence(0x20);
/// The master-key id.
pub const FUZZ_MASTER_KEY_ID: [u8; 16] = sequence(0x40);
/// The context.
pub const FUZZ_CONTEXT: &[u8] = b"tenant=acme;object=reports/2026/q1.csv";

/// Polls a future that never waits (the local KEK's) to completion.
fn ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Parses `data` as a header; must never panic.
pub fn parse_header(data: &[u8]) {
    if let Ok(header) = Header::parse(data) {
        // Whatever parses re-encodes to the same bytes.
        assert_eq!(header.as_bytes(), &data[..header.len()]);
        let again = Header::read_from(data).ok();
        assert_eq!(again.as_ref(), Some(&header));
    }
}

/// Parses and decrypts `data` as a whole file under the harness keys, streaming and by
/// ranges; must never panic, and a range read must agree with the stream. Returns the
/// plaintext length when the input decrypted.
pub fn decrypt_stream(data: &[u8]) -> Option<usize> {
    let header = Header::parse(data).ok()?;
    let decryptor = match header.master_key_id() {
        Some(_) => {
            let master = MasterKey::from_parts(FUZZ_MASTER_KEY_ID, &FUZZ_MASTER_KEY).ok()?;
            Decryptor::from_master_key(&header, &master, FUZZ_CONTEXT)
        }
        None => {
            let mut kek = LocalKek::new();
            kek.insert(FUZZ_KEK_KID, &FUZZ_KEK_KEY).ok()?;
            ready(Decryptor::from_kek(&header, &kek, FUZZ_CONTEXT))?
        }
    };
    let decryptor = decryptor.ok()?;
    let mut out = Vec::new();
    let streamed = decryptor.decrypt_stream(&data[header.len()..], &mut out);
    let whole = decryptor.decrypt_range(Cursor::new(data), 0, u64::MAX);
    if let Ok(len) = streamed {
        assert_eq!(len, out.len() as u64);
        let whole = whole.ok();
        assert_eq!(whole.as_deref(), Some(out.as_slice()));
        for (offset, len) in [(0u64, 1u64), (1, 4096), (4095, 2), (out.len() as u64, 1)] {
            let part = decryptor.decrypt_range(Cursor::new(data), offset, len).ok();
            let start = (offset as usize).min(out.len());
            let end = (offset.saturating_add(len) as usize).min(out.len());
            assert_eq!(part.as_deref(), Some(&out[start..end]));
        }
        Some(out.len())
    } else {
        assert!(out.len() as u64 <= data.len() as u64);
        None
    }
}

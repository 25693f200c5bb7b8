//! SHA-2 hashes and HMAC-SHA-256.

use aws_lc_rs::{digest, hmac};

fn hash<const N: usize>(algorithm: &'static digest::Algorithm, data: &[u8]) -> [u8; N] {
    let value = digest::digest(algorithm, data);
    let mut out = [0u8; N];
    out.copy_from_slice(value.as_ref());
    out
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    hash(&digest::SHA256, data)
}

/// SHA-256 over data given in pieces.
#[derive(Clone)]
pub struct Sha256Stream(digest::Context);

impl std::fmt::Debug for Sha256Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256Stream")
    }
}

impl Default for Sha256Stream {
    fn default() -> Self {
        Sha256Stream(digest::Context::new(&digest::SHA256))
    }
}

impl Sha256Stream {
    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The hash of everything added.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// SHA-1 of `data`: only for certificate thumbprints (`x5t`), never for security decisions on
/// its own.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    hash(&digest::SHA1_FOR_LEGACY_USE_ONLY, data)
}

/// SHA-384 of `data`.
pub fn sha384(data: &[u8]) -> [u8; 48] {
    hash(&digest::SHA384, data)
}

/// SHA-512 of `data`.
pub fn sha512(data: &[u8]) -> [u8; 64] {
    hash(&digest::SHA512, data)
}

/// HMAC-SHA-256 of `data` under `key` (RFC 2104).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `tag` is the HMAC-SHA-256 of `data` under `key`, compared in constant time.
pub fn hmac_sha256_verify(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), data, tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_sha256_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut s = Sha256Stream::default();
        for piece in data.chunks(777) {
            s.update(piece);
        }
        assert_eq!(s.finish(), sha256(&data));
        assert_ne!(Sha256Stream::default().finish(), sha256(b"x"));
    }

    #[test]
    fn hmac_known_answer_and_refusals() {
        // RFC 4231 test case 2.
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag
        ));
        assert!(!hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing!",
            &tag
        ));
        assert!(!hmac_sha256_verify(
            b"jefe",
            b"what do ya want for nothing?",
            &tag
        ));
        assert!(!hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag[..31]
        ));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn known_answers() {
        // FIPS 180-2 "abc" examples.
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha384(b"abc")),
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
             8086072ba1e7cc2358baeca134c825a7"
        );
        assert_eq!(
            hex(&sha512(b"abc")),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }
}

//! AES-256-GCM with a key set up once and used for many messages, sealing and
//! opening in caller-owned buffers: the primitive under streaming formats, where
//! one key encrypts every segment of a file and a per-segment allocation would
//! cost more than the cipher.
//!
//! The caller builds the nonces; a nonce must never repeat under one key (the
//! streaming formats derive a fresh key per file and count segments).

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroize;

use crate::error::{invalid_input, invalid_key, CryptoError, Result};

/// Nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// Tag length in bytes.
pub const TAG_LEN: usize = 16;
/// Key length in bytes.
pub const KEY_LEN: usize = 32;
/// Largest plaintext one nonce may protect (2^36 - 32 bytes).
const MAX_PLAINTEXT: u64 = (1 << 36) - 32;

/// An AES-256-GCM key held inside aws-lc (which clears it when freed). `Debug`
/// is redacted.
pub struct Aes256GcmKey {
    key: LessSafeKey,
}

impl fmt::Debug for Aes256GcmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Aes256GcmKey(<redacted>)")
    }
}

fn check_len(len: usize) -> Result<()> {
    if len as u64 > MAX_PLAINTEXT {
        return Err(invalid_input("message too long for AES-GCM"));
    }
    Ok(())
}

impl Aes256GcmKey {
    /// A key from exactly 32 bytes.
    pub fn new(key: &[u8]) -> Result<Self> {
        if key.len() != KEY_LEN {
            return Err(invalid_key("AES-256-GCM key must be 32 bytes"));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| CryptoError::Internal)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        check_len(in_out.len())?;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                in_out,
            )
            .map_err(|_| CryptoError::Internal)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Checks the tag and decrypts `in_out` in place. On failure the buffer is
    /// zeroed (never left holding unauthenticated plaintext) and the error is
    /// `DecryptionFailed`.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8],
    ) -> Result<()> {
        check_tag(tag)?;
        check_len(in_out.len())?;
        let result = self.key.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            tag,
            in_out,
        );
        if result.is_err() {
            in_out.zeroize();
            return Err(CryptoError::DecryptionFailed);
        }
        Ok(())
    }

    /// Checks the tag and decrypts `ciphertext` into `out`, which must be as long.
    /// The ciphertext is left as it was, so a caller may try it again under
    /// another nonce. On failure `out` is zeroed and the error is
    /// `DecryptionFailed`.
    pub fn open_to(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        check_tag(tag)?;
        check_len(ciphertext.len())?;
        if out.len() != ciphertext.len() {
            return Err(invalid_input(
                "AES-GCM output must be as long as the ciphertext",
            ));
        }
        let result = self.key.open_separate_gather(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            ciphertext,
            tag,
            out,
        );
        if result.is_err() {
            out.zeroize();
            return Err(CryptoError::DecryptionFailed);
        }
        Ok(())
    }
}

fn check_tag(tag: &[u8]) -> Result<()> {
    if tag.len() != TAG_LEN {
        return Err(invalid_input("AES-GCM tag must be 16 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aes::{gcm_open, gcm_seal};

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn known_answer() {
        // NIST GCM test case 16 (McGrew & Viega), AES-256 with AAD.
        let key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let nonce: [u8; 12] = hex("cafebabefacedbaddecaf888").try_into().unwrap();
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plaintext = hex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let ciphertext = hex(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        );
        let tag = hex("76fc6ece0f4e1768cddf8853bb2d551b");
        let key = Aes256GcmKey::new(&key).unwrap();
        let mut buf = plaintext.clone();
        assert_eq!(
            key.seal_in_place(&nonce, &aad, &mut buf).unwrap().to_vec(),
            tag
        );
        assert_eq!(buf, ciphertext);
        let mut out = vec![0u8; buf.len()];
        key.open_to(&nonce, &aad, &buf, &tag, &mut out).unwrap();
        assert_eq!(out, plaintext);
        key.open_in_place(&nonce, &aad, &mut buf, &tag).unwrap();
        assert_eq!(buf, plaintext);
    }

    #[test]
    fn agrees_with_one_shot_helpers() {
        let raw = [7u8; 32];
        let key = Aes256GcmKey::new(&raw).unwrap();
        let nonce = [9u8; 12];
        for len in [0usize, 1, 15, 16, 17, 4096] {
            let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let (ct, tag) = gcm_seal(&raw, &nonce, b"aad", &plaintext).unwrap();
            let mut buf = plaintext.clone();
            let ours = key.seal_in_place(&nonce, b"aad", &mut buf).unwrap();
            assert_eq!((buf.clone(), ours.to_vec()), (ct, tag.clone()));
            let opened = gcm_open(&raw, &nonce, b"aad", &buf, &ours).unwrap();
            assert_eq!(opened.as_slice(), plaintext.as_slice());
        }
    }

    #[test]
    fn failures_leave_no_plaintext() {
        let key = Aes256GcmKey::new(&[1u8; 32]).unwrap();
        let nonce = [2u8; 12];
        let mut buf = vec![0x55u8; 64];
        let tag = key.seal_in_place(&nonce, b"", &mut buf).unwrap();
        let ciphertext = buf.clone();

        // Wrong AAD, wrong nonce, flipped tag: DecryptionFailed, output zeroed,
        // ciphertext kept by open_to.
        let mut out = vec![0xEEu8; 64];
        assert_eq!(
            key.open_to(&nonce, b"x", &ciphertext, &tag, &mut out),
            Err(CryptoError::DecryptionFailed)
        );
        assert!(out.iter().all(|b| *b == 0));
        let mut other_nonce = nonce;
        other_nonce[11] ^= 1;
        assert_eq!(
            key.open_to(&other_nonce, b"", &ciphertext, &tag, &mut out),
            Err(CryptoError::DecryptionFailed)
        );
        let mut bad_tag = tag;
        bad_tag[0] ^= 1;
        let mut in_place = ciphertext.clone();
        assert_eq!(
            key.open_in_place(&nonce, b"", &mut in_place, &bad_tag),
            Err(CryptoError::DecryptionFailed)
        );
        assert!(in_place.iter().all(|b| *b == 0));
        // The right inputs still open.
        key.open_to(&nonce, b"", &ciphertext, &tag, &mut out)
            .unwrap();
        assert!(out.iter().all(|b| *b == 0x55));
    }

    #[test]
    fn bad_parameters() {
        assert!(matches!(
            Aes256GcmKey::new(&[0u8; 16]),
            Err(CryptoError::InvalidKey(_))
        ));
        let key = Aes256GcmKey::new(&[0u8; 32]).unwrap();
        let mut buf = [0u8; 4];
        assert!(matches!(
            key.open_in_place(&[0u8; 12], b"", &mut buf, &[0u8; 15]),
            Err(CryptoError::InvalidInput(_))
        ));
        let mut out = [0u8; 3];
        assert!(matches!(
            key.open_to(&[0u8; 12], b"", &buf, &[0u8; 16], &mut out),
            Err(CryptoError::InvalidInput(_))
        ));
        assert_eq!(format!("{key:?}"), "Aes256GcmKey(<redacted>)");
    }
}

//! The file header: a pure parser and encoder, no IO and no keys.
//!
//! The header is untrusted input until its MAC has been checked (which needs the file
//! key, see `stream`); the parser only checks structure and ranges. Layout in
//! `docs/format.md`.

use std::io::Read;

use crate::error::{EnvelopeError, Result};
use crate::hex;
use crate::kek::WrappedKey;
use crate::keyring::MASTER_KEY_ID_LEN;

/// The first eight bytes of every envelope file.
pub const MAGIC: [u8; 8] = *b"KEYSHENV";
/// The format version this library writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Smallest segment size accepted (4 KiB).
pub const MIN_SEGMENT_SIZE: u32 = 4 * 1024;
/// Largest segment size accepted (4 MiB).
pub const MAX_SEGMENT_SIZE: u32 = 4 * 1024 * 1024;
/// Segment size used unless the caller picks another (64 KiB).
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024;
/// Length of the per-file random nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Length of the per-file random HKDF salt.
pub const SALT_LEN: usize = 32;
/// Length of the key commitment.
pub const COMMITMENT_LEN: usize = 32;
/// Length of the header MAC (HMAC-SHA-256).
pub const MAC_LEN: usize = 32;
/// Longest kid, and longest wrapped key, a 2-level header may carry.
pub const MAX_KEY_SLOT_FIELD: usize = 2048;
/// Longest wrap algorithm name a 2-level header may carry.
pub const MAX_ALG_LEN: usize = 64;

/// Offset of the bytes that follow the fixed fields (the master-key id in mode 3).
const FIXED_LEN: usize = 8 + 1 + 1 + 4 + NONCE_PREFIX_LEN + SALT_LEN + COMMITMENT_LEN;

/// Which key hierarchy protects a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// KEK -> random per-file data key, wrapped in the header.
    TwoLevel,
    /// KEK -> keyring master key -> per-file key derived with HKDF.
    ThreeLevel,
}

impl Mode {
    /// The mode byte of the header.
    pub fn byte(self) -> u8 {
        match self {
            Mode::TwoLevel => 2,
            Mode::ThreeLevel => 3,
        }
    }

    fn from_byte(byte: u8) -> Result<Self> {
        match byte {
            2 => Ok(Mode::TwoLevel),
            3 => Ok(Mode::ThreeLevel),
            other => Err(malformed(format!("unknown mode {other} (2 or 3)"))),
        }
    }
}

/// A parsed (or freshly built) envelope header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    bytes: Vec<u8>,
    mode: Mode,
    segment_size: u32,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    salt: [u8; SALT_LEN],
    key_commitment: [u8; COMMITMENT_LEN],
    master_key_id: Option<[u8; MASTER_KEY_ID_LEN]>,
    mac: [u8; MAC_LEN],
    wrapped_key: Option<WrappedKey>,
}

fn malformed(msg: impl Into<String>) -> EnvelopeError {
    EnvelopeError::MalformedHeader(msg.into())
}

/// What a look at a prefix of the input found.
enum Parsed {
    Complete(Box<Header>),
    /// The header needs at least this many bytes in all.
    NeedAtLeast(usize),
}

/// Fields a header is built from (see [`Header::build`]).
pub(crate) struct HeaderFields<'a> {
    pub mode: Mode,
    pub segment_size: u32,
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub salt: [u8; SALT_LEN],
    pub key_commitment: [u8; COMMITMENT_LEN],
    pub master_key_id: Option<[u8; MASTER_KEY_ID_LEN]>,
    pub wrapped_key: Option<&'a WrappedKey>,
}

pub(crate) fn check_segment_size(size: u32) -> Result<()> {
    if (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(malformed(format!(
            "segment size {size} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}"
        )))
    }
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn u16_at(bytes: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]))
}

impl Header {
    /// Encodes a header; `mac` computes the header MAC over the authenticated part.
    pub(crate) fn build(
        fields: HeaderFields<'_>,
        mac: impl FnOnce(&[u8]) -> [u8; MAC_LEN],
    ) -> Result<Header> {
        check_segment_size(fields.segment_size)?;
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(&MAGIC);
        bytes.push(FORMAT_VERSION);
        bytes.push(fields.mode.byte());
        bytes.extend_from_slice(&fields.segment_size.to_be_bytes());
        bytes.extend_from_slice(&fields.nonce_prefix);
        bytes.extend_from_slice(&fields.salt);
        bytes.extend_from_slice(&fields.key_commitment);
        match (fields.mode, fields.master_key_id, fields.wrapped_key) {
            (Mode::ThreeLevel, Some(id), None) => bytes.extend_from_slice(&id),
            (Mode::TwoLevel, None, Some(_)) => {}
            _ => {
                return Err(EnvelopeError::InvalidInput(
                    "a 3-level header has a master-key id, a 2-level one a wrapped key".into(),
                ))
            }
        }
        let tag = mac(&bytes);
        bytes.extend_from_slice(&tag);
        if let Some(wrapped) = fields.wrapped_key {
            encode_key_slot(&mut bytes, wrapped)?;
        }
        Header::parse(&bytes)
    }

    /// Parses a header from the start of `input`, which may go on past it (use
    /// [`Header::len`] to find the first segment). Checks structure and ranges only: the
    /// header is authenticated when a decryptor is unlocked with it.
    pub fn parse(input: &[u8]) -> Result<Header> {
        match parse_prefix(input)? {
            Parsed::Complete(header) => Ok(*header),
            Parsed::NeedAtLeast(n) => Err(EnvelopeError::Truncated(format!(
                "the input ends inside the header ({} bytes of at least {n})",
                input.len()
            ))),
        }
    }

    /// Reads exactly one header from `reader`, leaving it at the first segment.
    pub fn read_from<R: Read>(mut reader: R) -> Result<Header> {
        let mut buf = Vec::with_capacity(256);
        loop {
            match parse_prefix(&buf)? {
                Parsed::Complete(header) => return Ok(*header),
                Parsed::NeedAtLeast(n) => {
                    let have = buf.len();
                    buf.resize(n, 0);
                    let got = crate::stream::read_full(&mut reader, &mut buf[have..])?;
                    if got < n - have {
                        return Err(EnvelopeError::Truncated(format!(
                            "the input ends inside the header ({} bytes of at least {n})",
                            have + got
                        )));
                    }
                }
            }
        }
    }

    /// The encoded header.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Length of the encoded header: the offset of segment 0.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a header is never empty (kept for the `len` convention).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The key hierarchy of the file.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Plaintext bytes per segment (the last segment may hold fewer).
    pub fn segment_size(&self) -> u32 {
        self.segment_size
    }

    /// The master-key id of a 3-level file.
    pub fn master_key_id(&self) -> Option<&[u8; MASTER_KEY_ID_LEN]> {
        self.master_key_id.as_ref()
    }

    /// The master-key id of a 3-level file, as 32 lowercase hex characters.
    pub fn master_key_id_hex(&self) -> Option<String> {
        self.master_key_id.map(|id| hex::encode(&id))
    }

    /// The wrapped data key of a 2-level file (with the KEK's kid and the algorithm).
    pub fn wrapped_key(&self) -> Option<&WrappedKey> {
        self.wrapped_key.as_ref()
    }

    /// The kid of the KEK a 2-level file needs.
    pub fn kek_kid(&self) -> Option<&str> {
        self.wrapped_key.as_ref().map(|w| w.kid.as_str())
    }

    /// The same header with another wrapped data key (2-level only): for rewrapping a
    /// file's data key under a new KEK without re-encrypting. The key slot is outside the
    /// authenticated part of the header, so the segments stay valid; the new wrapped key
    /// must unwrap to the same data key, or the file will not open.
    pub fn with_wrapped_key(&self, wrapped: &WrappedKey) -> Result<Header> {
        if self.mode != Mode::TwoLevel {
            return Err(EnvelopeError::InvalidInput(
                "only a 2-level header carries a wrapped key".into(),
            ));
        }
        let mut bytes = self.bytes[..self.authenticated_len() + MAC_LEN].to_vec();
        encode_key_slot(&mut bytes, wrapped)?;
        Header::parse(&bytes)
    }

    /// Length of the authenticated part: everything before the MAC.
    pub(crate) fn authenticated_len(&self) -> usize {
        FIXED_LEN
            + match self.mode {
                Mode::TwoLevel => 0,
                Mode::ThreeLevel => MASTER_KEY_ID_LEN,
            }
    }

    /// The bytes the MAC and every segment's AAD cover.
    pub(crate) fn authenticated(&self) -> &[u8] {
        &self.bytes[..self.authenticated_len()]
    }

    pub(crate) fn mac(&self) -> &[u8; MAC_LEN] {
        &self.mac
    }

    pub(crate) fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    pub(crate) fn nonce_prefix(&self) -> &[u8; NONCE_PREFIX_LEN] {
        &self.nonce_prefix
    }

    pub(crate) fn key_commitment(&self) -> &[u8; COMMITMENT_LEN] {
        &self.key_commitment
    }
}

fn encode_key_slot(bytes: &mut Vec<u8>, wrapped: &WrappedKey) -> Result<()> {
    let bad = |what: &str| EnvelopeError::InvalidInput(format!("wrapped key: {what}"));
    if wrapped.kid.is_empty() || wrapped.kid.len() > MAX_KEY_SLOT_FIELD {
        return Err(bad("kid must be 1 to 2048 bytes"));
    }
    if wrapped.alg.is_empty() || wrapped.alg.len() > MAX_ALG_LEN || !wrapped.alg.is_ascii() {
        return Err(bad("alg must be 1 to 64 ASCII bytes"));
    }
    if wrapped.bytes.is_empty() || wrapped.bytes.len() > MAX_KEY_SLOT_FIELD {
        return Err(bad("wrapped bytes must be 1 to 2048 bytes"));
    }
    // The lengths were bounded above, so these conversions cannot fail.
    let kid_len = u16::try_from(wrapped.kid.len()).map_err(|_| bad("kid too long"))?;
    let alg_len = u8::try_from(wrapped.alg.len()).map_err(|_| bad("alg too long"))?;
    let key_len = u16::try_from(wrapped.bytes.len()).map_err(|_| bad("too long"))?;
    bytes.extend_from_slice(&kid_len.to_be_bytes());
    bytes.extend_from_slice(wrapped.kid.as_bytes());
    bytes.push(alg_len);
    bytes.extend_from_slice(wrapped.alg.as_bytes());
    bytes.extend_from_slice(&key_len.to_be_bytes());
    bytes.extend_from_slice(&wrapped.bytes);
    Ok(())
}

/// Parses as much of a header as `input` holds.
fn parse_prefix(input: &[u8]) -> Result<Parsed> {
    // Magic, version and mode are checked as soon as they are there, so that a wrong file
    // is named as such before anything else is read.
    let magic_have = input.len().min(MAGIC.len());
    if input[..magic_have] != MAGIC[..magic_have] {
        return Err(EnvelopeError::NotAnEnvelope);
    }
    if input.len() < 10 {
        return Ok(Parsed::NeedAtLeast(10));
    }
    if input[8] != FORMAT_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(input[8]));
    }
    let mode = Mode::from_byte(input[9])?;
    let authenticated_len = FIXED_LEN
        + match mode {
            Mode::TwoLevel => 0,
            Mode::ThreeLevel => MASTER_KEY_ID_LEN,
        };
    let mac_end = authenticated_len + MAC_LEN;
    if input.len() < mac_end {
        return Ok(Parsed::NeedAtLeast(mac_end));
    }
    let segment_size = u32::from_be_bytes(array(input, 10));
    check_segment_size(segment_size)?;
    let nonce_prefix = array(input, 14);
    let salt = array(input, 14 + NONCE_PREFIX_LEN);
    let key_commitment = array(input, 14 + NONCE_PREFIX_LEN + SALT_LEN);
    let master_key_id = match mode {
        Mode::ThreeLevel => Some(array(input, FIXED_LEN)),
        Mode::TwoLevel => None,
    };
    let mac = array(input, authenticated_len);

    let (wrapped_key, end) = match mode {
        Mode::ThreeLevel => (None, mac_end),
        Mode::TwoLevel => match parse_key_slot(input, mac_end)? {
            Ok(found) => found,
            Err(need) => return Ok(Parsed::NeedAtLeast(need)),
        },
    };
    Ok(Parsed::Complete(Box::new(Header {
        bytes: input[..end].to_vec(),
        mode,
        segment_size,
        nonce_prefix,
        salt,
        key_commitment,
        master_key_id,
        mac,
        wrapped_key,
    })))
}

/// The key slot starting at `at`: `Ok(Ok((key, end)))`, or `Ok(Err(bytes needed))`.
#[allow(clippy::type_complexity)]
fn parse_key_slot(
    input: &[u8],
    at: usize,
) -> Result<std::result::Result<(Option<WrappedKey>, usize), usize>> {
    let mut pos = at;
    if input.len() < pos + 2 {
        return Ok(Err(pos + 2));
    }
    let kid_len = u16_at(input, pos);
    if kid_len == 0 || kid_len > MAX_KEY_SLOT_FIELD {
        return Err(malformed(format!(
            "kid length {kid_len} is outside 1..=2048"
        )));
    }
    pos += 2;
    if input.len() < pos + kid_len + 1 {
        return Ok(Err(pos + kid_len + 1));
    }
    let kid = std::str::from_utf8(&input[pos..pos + kid_len])
        .map_err(|_| malformed("the kid is not UTF-8"))?
        .to_owned();
    pos += kid_len;
    let alg_len = usize::from(input[pos]);
    if alg_len == 0 || alg_len > MAX_ALG_LEN {
        return Err(malformed(format!(
            "algorithm length {alg_len} is outside 1..=64"
        )));
    }
    pos += 1;
    if input.len() < pos + alg_len + 2 {
        return Ok(Err(pos + alg_len + 2));
    }
    let alg_bytes = &input[pos..pos + alg_len];
    if !alg_bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(malformed("the wrap algorithm name is not printable ASCII"));
    }
    let alg = String::from_utf8_lossy(alg_bytes).into_owned();
    pos += alg_len;
    let key_len = u16_at(input, pos);
    if key_len == 0 || key_len > MAX_KEY_SLOT_FIELD {
        return Err(malformed(format!(
            "wrapped key length {key_len} is outside 1..=2048"
        )));
    }
    pos += 2;
    if input.len() < pos + key_len {
        return Ok(Err(pos + key_len));
    }
    let bytes = input[pos..pos + key_len].to_vec();
    pos += key_len;
    Ok(Ok((Some(WrappedKey { kid, alg, bytes }), pos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped() -> WrappedKey {
        WrappedKey {
            kid: "https://vault.example/keys/kek/0123".into(),
            alg: "A256KW".into(),
            bytes: vec![0xAA; 40],
        }
    }

    fn fields(mode: Mode, wrapped: Option<&WrappedKey>) -> HeaderFields<'_> {
        HeaderFields {
            mode,
            segment_size: DEFAULT_SEGMENT_SIZE,
            nonce_prefix: [1; NONCE_PREFIX_LEN],
            salt: [2; SALT_LEN],
            key_commitment: [3; COMMITMENT_LEN],
            master_key_id: (mode == Mode::ThreeLevel).then_some([4; MASTER_KEY_ID_LEN]),
            wrapped_key: wrapped,
        }
    }

    #[test]
    fn build_parse_round_trip_both_modes() {
        let three = Header::build(fields(Mode::ThreeLevel, None), |_| [5; MAC_LEN]).unwrap();
        assert_eq!(three.len(), 133);
        assert_eq!(&three.as_bytes()[..8], b"KEYSHENV");
        assert_eq!(three.master_key_id_hex().unwrap(), "04".repeat(16));
        assert_eq!(three.authenticated().len(), 101);
        let w = wrapped();
        let two = Header::build(fields(Mode::TwoLevel, Some(&w)), |_| [5; MAC_LEN]).unwrap();
        assert_eq!(two.len(), 117 + 2 + w.kid.len() + 1 + 6 + 2 + 40);
        assert_eq!(two.wrapped_key(), Some(&w));
        assert_eq!(two.kek_kid(), Some(w.kid.as_str()));
        // Parsing ignores what follows the header; read_from stops at its end.
        let mut file = two.as_bytes().to_vec();
        file.extend_from_slice(b"segments");
        assert_eq!(Header::parse(&file).unwrap(), two);
        let mut reader = &file[..];
        assert_eq!(Header::read_from(&mut reader).unwrap(), two);
        assert_eq!(reader, b"segments");
        // Rewrapping keeps the authenticated part.
        let other = WrappedKey {
            kid: "https://vault.example/keys/new/1".into(),
            alg: "RSA-OAEP-256".into(),
            bytes: vec![0xBB; 256],
        };
        let rewrapped = two.with_wrapped_key(&other).unwrap();
        assert_eq!(rewrapped.authenticated(), two.authenticated());
        assert_eq!(rewrapped.wrapped_key(), Some(&other));
        assert!(three.with_wrapped_key(&other).is_err());
    }

    #[test]
    fn every_prefix_is_truncated_not_a_panic() {
        let w = wrapped();
        for header in [
            Header::build(fields(Mode::ThreeLevel, None), |_| [5; MAC_LEN]).unwrap(),
            Header::build(fields(Mode::TwoLevel, Some(&w)), |_| [5; MAC_LEN]).unwrap(),
        ] {
            for cut in 0..header.len() {
                let err = Header::parse(&header.as_bytes()[..cut]).unwrap_err();
                assert!(matches!(err, EnvelopeError::Truncated(_)), "{cut}: {err}");
                let err = Header::read_from(&header.as_bytes()[..cut]).unwrap_err();
                assert!(matches!(err, EnvelopeError::Truncated(_)), "{cut}: {err}");
            }
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let good = Header::build(fields(Mode::ThreeLevel, None), |_| [5; MAC_LEN]).unwrap();
        let edit = |at: usize, value: &[u8]| {
            let mut bytes = good.as_bytes().to_vec();
            bytes[at..at + value.len()].copy_from_slice(value);
            Header::parse(&bytes)
        };
        assert!(matches!(edit(0, b"X"), Err(EnvelopeError::NotAnEnvelope)));
        assert!(matches!(
            Header::parse(b"PK\x03\x04"),
            Err(EnvelopeError::NotAnEnvelope)
        ));
        assert!(matches!(
            edit(8, &[2]),
            Err(EnvelopeError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            edit(8, &[0]),
            Err(EnvelopeError::UnsupportedVersion(0))
        ));
        assert!(matches!(
            edit(9, &[4]),
            Err(EnvelopeError::MalformedHeader(_))
        ));
        for size in [0u32, 4095, MAX_SEGMENT_SIZE + 1, u32::MAX] {
            let err = edit(10, &size.to_be_bytes()).unwrap_err();
            assert!(err.to_string().contains("segment size"), "{size}: {err}");
        }
        for size in [MIN_SEGMENT_SIZE, MAX_SEGMENT_SIZE, 65_537] {
            assert!(edit(10, &size.to_be_bytes()).is_ok());
        }
    }

    #[test]
    fn bad_key_slots_are_malformed() {
        let w = wrapped();
        let good = Header::build(fields(Mode::TwoLevel, Some(&w)), |_| [5; MAC_LEN]).unwrap();
        let slot = good.authenticated_len() + MAC_LEN;
        let edit = |at: usize, value: &[u8]| {
            let mut bytes = good.as_bytes().to_vec();
            bytes[slot + at..slot + at + value.len()].copy_from_slice(value);
            Header::parse(&bytes)
        };
        assert!(matches!(
            edit(0, &[0, 0]),
            Err(EnvelopeError::MalformedHeader(_))
        ));
        assert!(matches!(
            edit(0, &[0x08, 0x01]),
            Err(EnvelopeError::MalformedHeader(_))
        ));
        assert!(matches!(
            edit(2, &[0xff]),
            Err(EnvelopeError::MalformedHeader(_))
        ));
        let alg_at = 2 + w.kid.len();
        assert!(matches!(
            edit(alg_at, &[0]),
            Err(EnvelopeError::MalformedHeader(_))
        ));
        assert!(matches!(
            edit(alg_at + 1, b" "),
            Err(EnvelopeError::MalformedHeader(_))
        ));
        let key_at = alg_at + 1 + 6;
        assert!(matches!(
            edit(key_at, &[0, 0]),
            Err(EnvelopeError::MalformedHeader(_))
        ));
        // A longer length than the input holds is truncation.
        assert!(matches!(
            edit(key_at, &[0, 41]),
            Err(EnvelopeError::Truncated(_))
        ));
        let bad = WrappedKey {
            alg: String::new(),
            ..w.clone()
        };
        assert!(Header::build(fields(Mode::TwoLevel, Some(&bad)), |_| [0; MAC_LEN]).is_err());
        assert!(Header::build(fields(Mode::TwoLevel, None), |_| [0; MAC_LEN]).is_err());
    }
}

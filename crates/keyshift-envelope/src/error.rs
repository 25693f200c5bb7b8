//! What can go wrong, said plainly: each failure of a decrypt names its cause.

use crate::kek::KekError;

/// Everything that can go wrong while creating keyrings, encrypting or decrypting.
///
/// Messages never carry key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The input does not start with the envelope magic bytes.
    #[error("not a Keyshift envelope file (bad magic bytes)")]
    NotAnEnvelope,
    /// The header names a format version this library does not know.
    #[error("unknown envelope format version {0} (this library reads version 1)")]
    UnsupportedVersion(u8),
    /// The header cannot be parsed: a field is out of range or the header is cut short.
    #[error("malformed envelope header: {0}")]
    MalformedHeader(String),
    /// The header's authentication code does not verify: some header field was changed.
    #[error("envelope header failed authentication: it was modified")]
    HeaderTampered,
    /// The header authenticates but the caller's context is not the one the file was
    /// encrypted with.
    #[error("wrong context: the file was encrypted with a different context")]
    WrongContext,
    /// A 3-level file names a master key other than the keyring's.
    #[error("wrong keyring: the file needs master key {file}, the keyring holds {keyring}")]
    WrongKeyring {
        /// Master-key id named in the file header.
        file: String,
        /// Master-key id of the keyring offered.
        keyring: String,
    },
    /// A 3-level file was given no keyring.
    #[error("the file is 3-level: a keyring holding master key {0} is needed")]
    KeyringRequired(String),
    /// Opening a segment failed: its bytes or tag were changed, it was moved from another
    /// position or another file, or (for the final segment) the file was cut short inside it
    /// or had data appended to it.
    #[error("{}", segment_message(*.index, *.is_final))]
    SegmentTampered {
        /// Zero-based index of the segment that failed.
        index: u64,
        /// Whether it was the final segment of the input.
        is_final: bool,
    },
    /// The file ends where more is needed: no last segment was found.
    #[error("truncated envelope: {0}")]
    Truncated(String),
    /// The last segment verified but more data follows it.
    #[error("trailing data after the last segment (segment {last_segment})")]
    TrailingData {
        /// Index of the segment marked last.
        last_segment: u64,
    },
    /// The keyring record is invalid.
    #[error("invalid keyring: {0}")]
    InvalidKeyring(String),
    /// A bad argument from the caller (segment size, range, input too long).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The KEK could not wrap or unwrap; a wrong KEK is `Kek(KekError::UnwrapFailed)`.
    #[error("key encryption key: {0}")]
    Kek(KekError),
    /// Reading the input or writing the output failed.
    #[error("i/o: {0}")]
    Io(std::io::Error),
    /// A failure inside the cryptographic layer that is not the input's fault.
    #[error("cryptographic failure: {0}")]
    Crypto(keyshift_crypto::CryptoError),
}

// The causes are part of each message, so they are not also reported as `source()`: a chain
// printer (`{:#}` in anyhow) would say everything twice.
impl From<KekError> for EnvelopeError {
    fn from(e: KekError) -> Self {
        EnvelopeError::Kek(e)
    }
}

impl From<std::io::Error> for EnvelopeError {
    fn from(e: std::io::Error) -> Self {
        EnvelopeError::Io(e)
    }
}

impl From<keyshift_crypto::CryptoError> for EnvelopeError {
    fn from(e: keyshift_crypto::CryptoError) -> Self {
        EnvelopeError::Crypto(e)
    }
}

fn segment_message(index: u64, is_final: bool) -> String {
    if is_final {
        format!(
            "segment {index} (the final one in the input) failed authentication: \
             it was modified, cut short, or has data appended"
        )
    } else {
        format!(
            "segment {index} failed authentication: it was modified, reordered or \
             taken from another file"
        )
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EnvelopeError>;

/// A streaming decrypt that failed after it may already have written plaintext.
///
/// The streaming decryptor writes a segment only after its tag verified, so nothing
/// unauthenticated is ever written. But the segments before the failing one were
/// authentic and may have been written: `plaintext_written` bytes of them. The output as
/// a whole is not the file's plaintext (it is cut short, or the rest was tampered with),
/// so a caller writing to a file must discard it: write to a temporary file and delete it
/// on error, rename it into place only on success.
#[derive(Debug, thiserror::Error)]
#[error("{error} ({plaintext_written} bytes of earlier, authentic segments were already written: discard the output)")]
pub struct DecryptStreamError {
    /// Why decryption stopped.
    pub error: EnvelopeError,
    /// Plaintext bytes already written to the output before the failure.
    pub plaintext_written: u64,
}

impl DecryptStreamError {
    /// Whether some output was written before the failure (so it must be discarded).
    pub fn wrote_partial_output(&self) -> bool {
        self.plaintext_written > 0
    }
}

impl From<DecryptStreamError> for EnvelopeError {
    fn from(err: DecryptStreamError) -> Self {
        err.error
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;

    #[test]
    fn causes_are_said_once() {
        let e = EnvelopeError::from(KekError::Unavailable("could not connect".into()));
        let chain = format!("{:#}", anyhow_like(&e));
        assert_eq!(chain.matches("could not connect").count(), 1, "{chain}");
    }

    /// What a chain printer shows: the message, then each source's.
    fn anyhow_like(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut next = e.source();
        while let Some(s) = next {
            out.push_str(": ");
            out.push_str(&s.to_string());
            next = s.source();
        }
        out
    }
}

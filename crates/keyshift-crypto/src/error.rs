//! The one error type of this crate.
//!
//! Messages are written by this crate and never carry key material, plaintext or
//! anything derived from a secret; decryption failures carry no detail at all so
//! that callers cannot turn them into an oracle.

/// Everything that can go wrong in a cryptographic operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Malformed or unsupported key material or JWK.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// An algorithm name this crate does not know.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// The algorithm does not fit this key (for example ES256 on an RSA key,
    /// A256GCM on a 128-bit key, RSA-OAEP on an EC key).
    #[error("algorithm does not fit the key: {0}")]
    AlgorithmMismatch(String),
    /// A bad parameter: IV or digest length, plaintext too long, CBC input that is
    /// not a whole number of blocks, and so on.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Authentication tag mismatch, bad padding or a failed unwrap integrity check.
    #[error("decryption failed")]
    DecryptionFailed,
    /// A failure inside the cryptographic library that is not the caller's fault.
    #[error("internal cryptographic error")]
    Internal,
    /// The key backend (an HSM token) cannot perform this algorithm or mechanism;
    /// the message names the mechanism. Nothing is done in software instead.
    #[error("not supported by the key backend: {0}")]
    Unsupported(String),
    /// The key backend holds no key with this reference (never made, or destroyed).
    #[error("key not found in the key backend: {0}")]
    KeyNotFound(String),
    /// The key backend failed or refused for a reason that is not the input's
    /// fault: it cannot be loaded or reached, refused the PIN, ran out of
    /// sessions. The message names the PKCS#11 function and `CKR_*` code.
    #[error("key backend failure: {0}")]
    Backend(String),
}

/// Result alias used throughout this crate.
pub type Result<T> = std::result::Result<T, CryptoError>;

pub(crate) fn invalid_key(msg: impl Into<String>) -> CryptoError {
    CryptoError::InvalidKey(msg.into())
}

pub(crate) fn invalid_input(msg: impl Into<String>) -> CryptoError {
    CryptoError::InvalidInput(msg.into())
}

pub(crate) fn mismatch(msg: impl Into<String>) -> CryptoError {
    CryptoError::AlgorithmMismatch(msg.into())
}

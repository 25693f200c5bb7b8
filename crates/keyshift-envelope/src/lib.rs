//! Envelope encryption for Keyshift: a three-level key hierarchy and a streaming,
//! authenticated file format.
//!
//! # Why three levels
//!
//! ```text
//!  KEK (a key in the vault, named by its versioned kid: never leaves the vault)
//!   |  wrap / unwrap (A256KW, RSA-OAEP-256)
//!   +--> master key (256-bit, one per keyring; the keyring record keeps it wrapped)
//!          |  HKDF-SHA-256(master key, per-file salt, context)
//!          +--> per-file key -> AES-256-GCM segments
//! ```
//!
//! With two levels (a random data key per object, wrapped by the KEK, which is what most
//! applications and cloud services write) every object costs a vault call to write and
//! to read, and rotating the KEK means rewrapping every object's data key: O(objects)
//! calls. With three levels the vault is called once per keyring (and the unwrapped master
//! key is cached for a few minutes, [`MasterKeyCache`]); per-file keys are derived
//! locally; and rotating the KEK rewraps one master key ([`Keyring::rewrap`]), O(1),
//! without touching any data. The caller's context (tenant, object name...) is bound into
//! each file key and authenticated, so a file moved to another context does not open.
//! Both modes are read and written, so that 2-level data can be read and migrated.
//!
//! The file format is specified in `docs/format.md`: a header authenticated by an HMAC
//! under a key derived from the file key, then AES-256-GCM segments (STREAM construction:
//! nonce = per-file prefix || segment counter || last flag; AAD = SHA-256 of the header),
//! so that truncation, reordering, splicing between files and header edits are detected.
//!
//! # Example
//!
//! ```
//! use keyshift_envelope::{Decryptor, Encryptor, Header, Keyring, LocalKek, DEFAULT_SEGMENT_SIZE};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let kid = "https://vault.example/keys/kek/0123456789abcdef0123456789abcdef";
//! let mut kek = LocalKek::new();
//! kek.generate(kid)?;
//!
//! // Once per keyring: a new master key, wrapped by the KEK (store keyring.to_json()).
//! let (keyring, master) = Keyring::create(&kek, kid, 1_767_225_600).await?;
//!
//! // Per file: a key derived from the master key, a fresh salt and the context.
//! let file = Encryptor::three_level(&master, b"tenant=acme", DEFAULT_SEGMENT_SIZE)?
//!     .encrypt_to_vec(b"quarterly figures")?;
//!
//! // Reading: the header names the master key; the keyring's KEK unwraps it.
//! let header = Header::parse(&file)?;
//! let decryptor = Decryptor::unlock(&header, &kek, Some(&keyring), b"tenant=acme").await?;
//! assert_eq!(decryptor.decrypt_slice(&file)?, b"quarterly figures");
//!
//! // The wrong context is refused, by name.
//! let wrong = Decryptor::unlock(&header, &kek, Some(&keyring), b"tenant=other").await;
//! assert!(matches!(wrong, Err(keyshift_envelope::EnvelopeError::WrongContext)));
//! # Ok::<(), keyshift_envelope::EnvelopeError>(())
//! # }).unwrap();
//! ```
//!
//! For large files use [`Encryptor::encrypt_stream`] and [`Decryptor::decrypt_stream`]
//! (one segment in memory), and [`Decryptor::decrypt_range`] to read a slice of a file.

#![warn(missing_docs)]

mod cache;
mod error;
mod files;
#[doc(hidden)]
pub mod fuzzing;
mod header;
mod hex;
mod kek;
mod keyring;
#[cfg(feature = "remote")]
mod remote;
mod stream;

pub use cache::{MasterKeyCache, DEFAULT_MASTER_KEY_TTL};
pub use error::{DecryptStreamError, EnvelopeError, Result};
pub use files::{default_threads, WriteBehind, WRITE_BEHIND_STEP};
pub use header::{
    Header, Mode, DEFAULT_SEGMENT_SIZE, FORMAT_VERSION, MAGIC, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
};
pub use kek::{Kek, KekError, LocalKek, WrappedKey};
pub use keyring::{Keyring, MasterKey, KEYRING_VERSION, MASTER_KEY_ID_LEN, MASTER_KEY_LEN};
#[cfg(feature = "remote")]
pub use remote::RemoteKek;
#[doc(hidden)]
pub use stream::FileRandomness;
pub use stream::{check_data_key, Decryptor, Encryptor};

// Keys and decryptors are shared between tasks.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MasterKey>();
    assert_send_sync::<MasterKeyCache>();
    assert_send_sync::<Encryptor>();
    assert_send_sync::<Decryptor>();
    assert_send_sync::<LocalKek>();
};

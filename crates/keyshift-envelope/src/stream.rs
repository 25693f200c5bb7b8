//! Encrypting and decrypting envelope files: key derivation, header authentication and
//! the segment stream (the STREAM construction over AES-256-GCM).
//!
//! Memory stays bounded whatever the file size: the encryptor seals one segment at a
//! time in one buffer; the decryptor reads one segment into one buffer and opens it into
//! a second (so that a failed segment can be tried again under the other last-flag to
//! tell truncation and trailing data from tampering).

use std::io::{self, Read, Seek, SeekFrom, Write};

use keyshift_crypto::digest::{hmac_sha256, sha256};
use keyshift_crypto::gcm::{Aes256GcmKey, NONCE_LEN, TAG_LEN};
use keyshift_crypto::kdf::hkdf_sha256;
use zeroize::Zeroizing;

use crate::cache::MasterKeyCache;
use crate::error::{DecryptStreamError, EnvelopeError, Result};
use crate::header::{
    check_segment_size, Header, HeaderFields, Mode, COMMITMENT_LEN, MAC_LEN, NONCE_PREFIX_LEN,
    SALT_LEN,
};
use crate::kek::Kek;
use crate::keyring::{Keyring, MasterKey};

/// HKDF info of the header MAC key.
const INFO_HEADER: &[u8] = b"keyshift-envelope/v1/header-mac";
/// HKDF info prefix of the segment key and key commitment; the context follows.
const INFO_DATA: &[u8] = b"keyshift-envelope/v1/data-key\x00";
/// Length of a 2-level data key.
const DATA_KEY_LEN: usize = 32;

/// The per-file random values: normally drawn from the system generator; injected only
/// to reproduce test vectors.
#[doc(hidden)]
pub struct FileRandomness {
    /// HKDF salt.
    pub salt: [u8; SALT_LEN],
    /// Nonce prefix.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// The data key of a 2-level file (unused in 3-level).
    pub data_key: Zeroizing<[u8; DATA_KEY_LEN]>,
}

impl std::fmt::Debug for FileRandomness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileRandomness(<redacted>)")
    }
}

impl FileRandomness {
    /// Fresh values from the system generator.
    pub fn generate() -> Result<Self> {
        let mut out = Self {
            salt: [0; SALT_LEN],
            nonce_prefix: [0; NONCE_PREFIX_LEN],
            data_key: Zeroizing::new([0; DATA_KEY_LEN]),
        };
        keyshift_crypto::fill_random(&mut out.salt)?;
        keyshift_crypto::fill_random(&mut out.nonce_prefix)?;
        keyshift_crypto::fill_random(out.data_key.as_mut())?;
        Ok(out)
    }
}

/// The keys of one file, derived from its file key material (the master key, or the
/// 2-level data key), its salt and the caller's context.
struct FileKeys {
    segment_key: Aes256GcmKey,
    commitment: [u8; COMMITMENT_LEN],
    mac_key: Zeroizing<[u8; 32]>,
}

fn derive(material: &[u8], salt: &[u8; SALT_LEN], context: &[u8]) -> Result<FileKeys> {
    let mut mac_key = Zeroizing::new([0u8; 32]);
    hkdf_sha256(material, salt, INFO_HEADER, mac_key.as_mut())?;
    let mut info = Vec::with_capacity(INFO_DATA.len() + context.len());
    info.extend_from_slice(INFO_DATA);
    info.extend_from_slice(context);
    let mut okm = Zeroizing::new([0u8; 32 + COMMITMENT_LEN]);
    hkdf_sha256(material, salt, &info, okm.as_mut())?;
    let segment_key = Aes256GcmKey::new(&okm[..32])?;
    let mut commitment = [0u8; COMMITMENT_LEN];
    commitment.copy_from_slice(&okm[32..]);
    Ok(FileKeys {
        segment_key,
        commitment,
        mac_key,
    })
}

/// The nonce of segment `index`: prefix || big-endian counter || last flag.
pub(crate) fn nonce(prefix: &[u8; NONCE_PREFIX_LEN], index: u32, last: bool) -> [u8; NONCE_LEN] {
    let mut out = [0u8; NONCE_LEN];
    out[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    out[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
    out[NONCE_LEN - 1] = u8::from(last);
    out
}

pub(crate) fn segment_index(index: u64) -> Result<u32> {
    u32::try_from(index).map_err(|_| {
        EnvelopeError::InvalidInput("more than 2^32 segments: use a larger segment size".into())
    })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Encrypts one file. Build it with [`Encryptor::three_level`] or
/// [`Encryptor::two_level`]; each encryptor has its own salt and nonce prefix and
/// encrypts exactly one file.
#[derive(Debug)]
pub struct Encryptor {
    pub(crate) header: Header,
    pub(crate) key: Aes256GcmKey,
    pub(crate) digest: [u8; 32],
}

impl Encryptor {
    /// A 3-level encryptor: the file key is derived from `master` (a keyring's master key),
    /// a fresh salt and `context`. `segment_size` is
    /// [`DEFAULT_SEGMENT_SIZE`](crate::DEFAULT_SEGMENT_SIZE) unless there is a reason.
    pub fn three_level(master: &MasterKey, context: &[u8], segment_size: u32) -> Result<Self> {
        Self::three_level_with(master, context, segment_size, FileRandomness::generate()?)
    }

    /// [`Encryptor::three_level`] with given randomness (test vectors only).
    #[doc(hidden)]
    pub fn three_level_with(
        master: &MasterKey,
        context: &[u8],
        segment_size: u32,
        random: FileRandomness,
    ) -> Result<Self> {
        Self::build(
            Mode::ThreeLevel,
            master.secret(),
            Some(*master.id()),
            None,
            context,
            segment_size,
            &random,
        )
    }

    /// A 2-level encryptor: a fresh random data key, wrapped under the KEK `kid` and
    /// carried in the header; the segment key is derived from it, a fresh salt and
    /// `context`.
    pub async fn two_level(
        kek: &dyn Kek,
        kid: &str,
        context: &[u8],
        segment_size: u32,
    ) -> Result<Self> {
        Self::two_level_with(kek, kid, context, segment_size, FileRandomness::generate()?).await
    }

    /// [`Encryptor::two_level`] with given randomness (test vectors only).
    #[doc(hidden)]
    pub async fn two_level_with(
        kek: &dyn Kek,
        kid: &str,
        context: &[u8],
        segment_size: u32,
        random: FileRandomness,
    ) -> Result<Self> {
        check_segment_size(segment_size).map_err(invalid_size)?;
        let wrapped = kek.wrap(kid, random.data_key.as_ref()).await?;
        Self::build(
            Mode::TwoLevel,
            random.data_key.as_ref(),
            None,
            Some(&wrapped),
            context,
            segment_size,
            &random,
        )
    }

    fn build(
        mode: Mode,
        material: &[u8],
        master_key_id: Option<[u8; 16]>,
        wrapped_key: Option<&crate::kek::WrappedKey>,
        context: &[u8],
        segment_size: u32,
        random: &FileRandomness,
    ) -> Result<Self> {
        check_segment_size(segment_size).map_err(invalid_size)?;
        let keys = derive(material, &random.salt, context)?;
        let header = Header::build(
            HeaderFields {
                mode,
                segment_size,
                nonce_prefix: random.nonce_prefix,
                salt: random.salt,
                key_commitment: keys.commitment,
                master_key_id,
                wrapped_key,
            },
            |authenticated| hmac_sha256(keys.mac_key.as_ref(), authenticated),
        )?;
        let digest = sha256(header.authenticated());
        Ok(Self {
            header,
            key: keys.segment_key,
            digest,
        })
    }

    /// The header this encryptor writes.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Writes the header and then every segment of `reader`'s bytes to `writer`, holding
    /// one segment in memory. Returns the number of plaintext bytes encrypted.
    pub fn encrypt_stream<R: Read, W: Write>(self, mut reader: R, mut writer: W) -> Result<u64> {
        let size = self.header.segment_size() as usize;
        let prefix = *self.header.nonce_prefix();
        // One byte more than a segment is read so that the last segment is known when it
        // is sealed; the tag space (16 bytes) holds that byte.
        let mut buf = Zeroizing::new(vec![0u8; size + TAG_LEN]);
        writer.write_all(self.header.as_bytes())?;
        let mut carry: Option<u8> = None;
        let mut index: u64 = 0;
        let mut total: u64 = 0;
        loop {
            let mut filled = 0;
            if let Some(byte) = carry.take() {
                buf[0] = byte;
                filled = 1;
            }
            filled += read_full(&mut reader, &mut buf[filled..size + 1])?;
            let last = filled <= size;
            let len = if last {
                filled
            } else {
                carry = Some(buf[size]);
                size
            };
            let counter = segment_index(index)?;
            let tag = self.key.seal_in_place(
                &nonce(&prefix, counter, last),
                &self.digest,
                &mut buf[..len],
            )?;
            buf[len..len + TAG_LEN].copy_from_slice(&tag);
            writer.write_all(&buf[..len + TAG_LEN])?;
            total += len as u64;
            if last {
                break;
            }
            index += 1;
        }
        writer.flush()?;
        Ok(total)
    }

    /// Encrypts `plaintext` into a new buffer holding the whole file.
    pub fn encrypt_to_vec(self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let size = u64::from(self.header.segment_size());
        let segments = (plaintext.len() as u64 / size) + 1;
        let capacity =
            self.header.len() as u64 + plaintext.len() as u64 + segments * TAG_LEN as u64;
        let mut out = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        self.encrypt_stream(plaintext, &mut out)?;
        Ok(out)
    }
}

fn invalid_size(err: EnvelopeError) -> EnvelopeError {
    match err {
        EnvelopeError::MalformedHeader(msg) => EnvelopeError::InvalidInput(msg),
        other => other,
    }
}

/// Checks that a 2-level header's data key unwraps with `kek` and authenticates the header (its
/// MAC), without the context: what a migration checks after rewrapping a file's key slot, when it
/// does not know the files' context. A wrong KEK is `Kek(KekError::UnwrapFailed)`, a data key that
/// is not the file's is `HeaderTampered`.
pub async fn check_data_key(header: &Header, kek: &dyn Kek) -> Result<()> {
    let Some(wrapped) = header.wrapped_key() else {
        return Err(EnvelopeError::InvalidInput(
            "the file is 3-level: its master key is in a keyring".into(),
        ));
    };
    let data_key = kek.unwrap(wrapped).await?;
    let mut mac_key = Zeroizing::new([0u8; 32]);
    hkdf_sha256(&data_key, header.salt(), INFO_HEADER, mac_key.as_mut())?;
    let mac: [u8; MAC_LEN] = hmac_sha256(mac_key.as_ref(), header.authenticated());
    if keyshift_crypto::constant_time_eq(&mac, header.mac()) {
        Ok(())
    } else {
        Err(EnvelopeError::HeaderTampered)
    }
}

/// Decrypts one file whose header authenticated under the caller's keys and context.
#[derive(Debug)]
pub struct Decryptor {
    pub(crate) header: Header,
    pub(crate) key: Aes256GcmKey,
    pub(crate) digest: [u8; 32],
}

/// What went wrong with a segment that did not open under the expected flag.
pub(crate) enum Misfit {
    /// It opens as the last segment although more data follows.
    LastWithMore,
    /// It opens as a non-last segment although the input ends after it.
    NotLastAtEnd,
    /// It opens under neither flag.
    Tampered,
}

impl Decryptor {
    /// Unlocks a 3-level file with the keyring's master key: checks that the file names
    /// this master key (`WrongKeyring`), that the header is intact (`HeaderTampered`) and
    /// that `context` is the file's (`WrongContext`).
    pub fn from_master_key(header: &Header, master: &MasterKey, context: &[u8]) -> Result<Self> {
        match header.master_key_id() {
            None => Err(EnvelopeError::InvalidInput(
                "the file is 2-level: it is opened with its KEK, not a keyring".into(),
            )),
            Some(id) if id != master.id() => Err(EnvelopeError::WrongKeyring {
                file: crate::hex::encode(id),
                keyring: master.id_hex(),
            }),
            Some(_) => Self::unlock_with(header, master.secret(), context),
        }
    }

    /// Unlocks a 2-level file: unwraps its data key with `kek` (a wrong KEK is
    /// `Kek(KekError::UnwrapFailed)`), then checks the header and the context.
    pub async fn from_kek(header: &Header, kek: &dyn Kek, context: &[u8]) -> Result<Self> {
        let Some(wrapped) = header.wrapped_key() else {
            return Err(EnvelopeError::KeyringRequired(
                header.master_key_id_hex().unwrap_or_default(),
            ));
        };
        let data_key = kek.unwrap(wrapped).await?;
        if data_key.len() != DATA_KEY_LEN {
            return Err(EnvelopeError::MalformedHeader(format!(
                "the wrapped data key unwrapped to {} bytes, not {DATA_KEY_LEN}",
                data_key.len()
            )));
        }
        Self::unlock_with(header, &data_key, context)
    }

    /// Unlocks either kind of file: a 3-level file needs `keyring` (its master key is
    /// unwrapped with `kek`), a 2-level file only `kek`.
    pub async fn unlock(
        header: &Header,
        kek: &dyn Kek,
        keyring: Option<&Keyring>,
        context: &[u8],
    ) -> Result<Self> {
        match (header.master_key_id(), keyring) {
            (None, _) => Self::from_kek(header, kek, context).await,
            (Some(id), None) => Err(EnvelopeError::KeyringRequired(crate::hex::encode(id))),
            (Some(id), Some(keyring)) => {
                if id != keyring.master_key_id() {
                    return Err(EnvelopeError::WrongKeyring {
                        file: crate::hex::encode(id),
                        keyring: keyring.master_key_id_hex(),
                    });
                }
                let master = keyring.unwrap_master_key(kek).await?;
                Self::from_master_key(header, &master, context)
            }
        }
    }

    /// [`Decryptor::unlock`] through `cache`: a 3-level file that `keyring` fits takes its
    /// master key from the cache, unwrapped with `kek` only on the cache's first use of that
    /// keyring, so many files cost one KEK call. Anything else (a 2-level file, no keyring, a
    /// keyring that does not fit, which is named in the error) is [`Decryptor::unlock`].
    pub async fn unlock_cached(
        header: &Header,
        kek: &dyn Kek,
        keyring: Option<&Keyring>,
        cache: &MasterKeyCache,
        context: &[u8],
    ) -> Result<Self> {
        match (header.master_key_id(), keyring) {
            (Some(id), Some(keyring)) if id == keyring.master_key_id() => {
                let master = cache.get_or_unwrap(keyring, kek).await?;
                Self::from_master_key(header, &master, context)
            }
            _ => Self::unlock(header, kek, keyring, context).await,
        }
    }

    fn unlock_with(header: &Header, material: &[u8], context: &[u8]) -> Result<Self> {
        let keys = derive(material, header.salt(), context)?;
        let mac: [u8; MAC_LEN] = hmac_sha256(keys.mac_key.as_ref(), header.authenticated());
        if !keyshift_crypto::constant_time_eq(&mac, header.mac()) {
            return Err(EnvelopeError::HeaderTampered);
        }
        if !keyshift_crypto::constant_time_eq(&keys.commitment, header.key_commitment()) {
            return Err(EnvelopeError::WrongContext);
        }
        Ok(Self {
            header: header.clone(),
            key: keys.segment_key,
            digest: sha256(header.authenticated()),
        })
    }

    /// The header this decryptor was unlocked with.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Opens segment `index` from `sealed` (ciphertext || tag) into `out`.
    pub(crate) fn open(&self, index: u64, last: bool, sealed: &[u8], out: &mut [u8]) -> Result<()> {
        let counter = segment_index(index)?;
        let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        self.key
            .open_to(
                &nonce(self.header.nonce_prefix(), counter, last),
                &self.digest,
                ciphertext,
                tag,
                &mut out[..ciphertext.len()],
            )
            .map_err(|_| EnvelopeError::SegmentTampered {
                index,
                is_final: false,
            })
    }

    /// After `sealed` failed to open with flag `expected_last`, whether it opens with the
    /// other flag (which names the failure precisely).
    pub(crate) fn misfit(
        &self,
        index: u64,
        expected_last: bool,
        sealed: &[u8],
        out: &mut [u8],
    ) -> Misfit {
        let full = self.header.segment_size() as usize + TAG_LEN;
        // A non-last segment is always full-size.
        if expected_last && sealed.len() != full {
            return Misfit::Tampered;
        }
        let result = self.open(index, !expected_last, sealed, out);
        zeroize::Zeroize::zeroize(out);
        match (result, expected_last) {
            (Ok(()), true) => Misfit::NotLastAtEnd,
            (Ok(()), false) => Misfit::LastWithMore,
            (Err(_), _) => Misfit::Tampered,
        }
    }

    /// Decrypts the segments that follow the header (`reader` is where
    /// [`Header::read_from`] left it) into `writer`; returns the plaintext length.
    ///
    /// Each segment is written only after its tag verified, so no unauthenticated byte is
    /// ever written. If a later segment fails, the earlier, authentic segments have been
    /// written already: the error says how many bytes, and the output must be discarded
    /// (see [`DecryptStreamError`]).
    pub fn decrypt_stream<R: Read, W: Write>(
        &self,
        mut reader: R,
        mut writer: W,
    ) -> std::result::Result<u64, DecryptStreamError> {
        let mut written = 0u64;
        let result = self.decrypt_segments(&mut reader, &mut writer, &mut written);
        result
            .map(|()| written)
            .map_err(|error| DecryptStreamError {
                error,
                plaintext_written: written,
            })
    }

    fn decrypt_segments<R: Read, W: Write>(
        &self,
        reader: &mut R,
        writer: &mut W,
        written: &mut u64,
    ) -> Result<()> {
        let size = self.header.segment_size() as usize;
        let full = size + TAG_LEN;
        // One byte past a full segment shows whether another follows.
        let mut sealed = vec![0u8; full + 1];
        let mut plain = Zeroizing::new(vec![0u8; size]);
        let mut carry: Option<u8> = None;
        let mut index: u64 = 0;
        loop {
            let mut filled = 0;
            if let Some(byte) = carry.take() {
                sealed[0] = byte;
                filled = 1;
            }
            filled += read_full(reader, &mut sealed[filled..])?;
            let more = filled > full;
            let len = if more {
                carry = Some(sealed[full]);
                full
            } else {
                filled
            };
            if len < TAG_LEN {
                return Err(EnvelopeError::Truncated(if index == 0 && len == 0 {
                    "no segment follows the header".into()
                } else {
                    format!("the input ends inside segment {index}, before its tag")
                }));
            }
            let last = !more;
            let chunk = &sealed[..len];
            if self.open(index, last, chunk, &mut plain).is_err() {
                return Err(match self.misfit(index, last, chunk, &mut plain) {
                    Misfit::LastWithMore => EnvelopeError::TrailingData {
                        last_segment: index,
                    },
                    Misfit::NotLastAtEnd => EnvelopeError::Truncated(format!(
                        "segment {index} is not the last one: the segments after it are missing"
                    )),
                    Misfit::Tampered => EnvelopeError::SegmentTampered {
                        index,
                        is_final: last,
                    },
                });
            }
            let plain_len = len - TAG_LEN;
            writer.write_all(&plain[..plain_len])?;
            *written += plain_len as u64;
            if last {
                writer.flush()?;
                return Ok(());
            }
            index += 1;
        }
    }

    /// Decrypts a whole file held in memory (header included).
    pub fn decrypt_slice(&self, file: &[u8]) -> Result<Vec<u8>> {
        let header = self.header.as_bytes();
        if file.len() < header.len() || &file[..header.len()] != header {
            return Err(EnvelopeError::InvalidInput(
                "the file's header is not the one this decryptor was unlocked with".into(),
            ));
        }
        let body = &file[header.len()..];
        let mut out = Vec::with_capacity(body.len());
        self.decrypt_stream(body, &mut out)?;
        Ok(out)
    }

    /// Decrypts `len` plaintext bytes from `offset` (fewer at the end of the file, none
    /// past it) out of a seekable file (header included), reading only the header, the
    /// segments that hold the range, and the final segment, which is always authenticated
    /// so that the plaintext length (and so a truncation) is established by the key
    /// holder, not by the file size.
    pub fn decrypt_range<R: Read + Seek>(
        &self,
        mut reader: R,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let header = self.header.as_bytes();
        let header_len = header.len() as u64;
        let file_len = reader.seek(SeekFrom::End(0))?;
        reader.seek(SeekFrom::Start(0))?;
        let mut found = vec![0u8; header.len()];
        if read_full(&mut reader, &mut found)? < header.len() || found != header {
            return Err(EnvelopeError::InvalidInput(
                "the file's header is not the one this decryptor was unlocked with".into(),
            ));
        }
        let size = u64::from(self.header.segment_size());
        let full = size + TAG_LEN as u64;
        let body = file_len - header_len;
        if body == 0 {
            return Err(EnvelopeError::Truncated(
                "no segment follows the header".into(),
            ));
        }
        let segments = body.div_ceil(full);
        let last_index = segments - 1;
        let last_sealed_len = body - last_index * full;
        if last_sealed_len < TAG_LEN as u64 {
            return Err(EnvelopeError::Truncated(format!(
                "the input ends inside segment {last_index}, before its tag"
            )));
        }
        segment_index(last_index)?;

        let mut sealed = vec![0u8; full as usize];
        let mut plain = Zeroizing::new(vec![0u8; size as usize]);
        let mut last_plain = Zeroizing::new(vec![0u8; size as usize]);
        // The final segment first: it fixes the plaintext length.
        let chunk = &mut sealed[..last_sealed_len as usize];
        reader.seek(SeekFrom::Start(header_len + last_index * full))?;
        read_full(&mut reader, chunk)?;
        if self.open(last_index, true, chunk, &mut last_plain).is_err() {
            return Err(
                match self.misfit(last_index, true, chunk, &mut last_plain) {
                    Misfit::NotLastAtEnd => EnvelopeError::Truncated(format!(
                    "segment {last_index} is not the last one: the segments after it are missing"
                )),
                    _ => EnvelopeError::SegmentTampered {
                        index: last_index,
                        is_final: true,
                    },
                },
            );
        }
        let plaintext_len = last_index * size + (last_sealed_len - TAG_LEN as u64);
        if len == 0 || offset >= plaintext_len {
            return Ok(Vec::new());
        }
        let end = offset.saturating_add(len).min(plaintext_len);
        let mut out = Vec::with_capacity(usize::try_from(end - offset).unwrap_or(0));
        for index in offset / size..=(end - 1) / size {
            let start = index * size;
            let segment: &[u8] = if index == last_index {
                &last_plain
            } else {
                reader.seek(SeekFrom::Start(header_len + index * full))?;
                if read_full(&mut reader, &mut sealed)? < sealed.len() {
                    return Err(EnvelopeError::Truncated(format!(
                        "the input ends inside segment {index}"
                    )));
                }
                self.open(index, false, &sealed, &mut plain)?;
                &plain
            };
            let from = (offset.max(start) - start) as usize;
            let to = (end.min(start + size) - start) as usize;
            out.extend_from_slice(&segment[from..to]);
        }
        Ok(out)
    }
}

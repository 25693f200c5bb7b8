//! AES modes on raw key bytes: GCM, CBC (with and without PKCS#7 padding), and
//! key wrap (RFC 3394 KW, RFC 5649 KWP).
//!
//! aws-lc-rs offers key wrap only for 128- and 256-bit keys, so the 192-bit case
//! runs RFC 3394/5649 here on top of aws-lc's AES block function; unit tests
//! check that path against aws-lc's own KW/KWP for the other two key sizes, and
//! the Wycheproof suite covers all three.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    self, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::key_wrap::{self, AesKek, KeyWrap, KeyWrapPadded};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{invalid_input, invalid_key, CryptoError, Result};

/// GCM nonce length we accept and generate.
pub(crate) const GCM_IV_LEN: usize = 12;
/// GCM tag length we produce and require.
pub(crate) const GCM_TAG_LEN: usize = 16;
/// CBC IV length.
pub(crate) const CBC_IV_LEN: usize = 16;
const BLOCK: usize = 16;
/// Largest plaintext AES-GCM takes under one nonce (2^36 - 32 bytes).
const GCM_MAX_PLAINTEXT: u64 = (1 << 36) - 32;

fn gcm_algorithm(key: &[u8]) -> Result<&'static aead::Algorithm> {
    match key.len() {
        16 => Ok(&aead::AES_128_GCM),
        24 => Ok(&aead::AES_192_GCM),
        32 => Ok(&aead::AES_256_GCM),
        _ => Err(invalid_key("AES key must be 128, 192 or 256 bits")),
    }
}

fn block_algorithm(key: &[u8]) -> Result<&'static cipher::Algorithm> {
    match key.len() {
        16 => Ok(&cipher::AES_128),
        24 => Ok(&cipher::AES_192),
        32 => Ok(&cipher::AES_256),
        _ => Err(invalid_key("AES key must be 128, 192 or 256 bits")),
    }
}

fn gcm_key(key: &[u8]) -> Result<LessSafeKey> {
    let unbound = UnboundKey::new(gcm_algorithm(key)?, key).map_err(|_| CryptoError::Internal)?;
    Ok(LessSafeKey::new(unbound))
}

/// AES-GCM encryption with a 12-byte nonce; returns ciphertext and 16-byte tag.
pub(crate) fn gcm_seal(
    key: &[u8],
    nonce: &[u8; GCM_IV_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<u8>)> {
    if plaintext.len() as u64 > GCM_MAX_PLAINTEXT {
        return Err(invalid_input("plaintext too long for AES-GCM"));
    }
    let key = gcm_key(key)?;
    let mut tag = Vec::new();
    let ciphertext = encrypt_in_place(plaintext, 0, |in_out| {
        let t = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                in_out,
            )
            .map_err(|_| CryptoError::Internal)?;
        tag = t.as_ref().to_vec();
        Ok(())
    })?;
    Ok((ciphertext, tag))
}

/// Copies `plaintext` into a buffer with `extra` spare capacity (so padding
/// never reallocates and leaves a stray plaintext copy behind), runs `encrypt`
/// on it, and wipes the buffer if encryption fails.
fn encrypt_in_place(
    plaintext: &[u8],
    extra: usize,
    encrypt: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(plaintext.len() + extra);
    buf.extend_from_slice(plaintext);
    match encrypt(&mut buf) {
        Ok(()) => Ok(buf),
        Err(err) => {
            buf.zeroize();
            Err(err)
        }
    }
}

/// AES-GCM decryption; `nonce` must be 12 bytes and `tag` 16 bytes.
pub(crate) fn gcm_open(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    if nonce.len() != GCM_IV_LEN {
        return Err(invalid_input("AES-GCM iv must be 12 bytes"));
    }
    if tag.len() != GCM_TAG_LEN {
        return Err(invalid_input("AES-GCM tag must be 16 bytes"));
    }
    let key = gcm_key(key)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Internal)?;
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    key.open_in_place_separate_tag(nonce, Aad::from(aad), tag, &mut in_out)
        .map_err(|_| CryptoError::DecryptionFailed)?;
    Ok(in_out)
}

fn cbc_iv(iv: &[u8]) -> Result<FixedLength<CBC_IV_LEN>> {
    FixedLength::<CBC_IV_LEN>::try_from(iv)
        .map_err(|_| invalid_input("AES-CBC iv must be 16 bytes"))
}

fn unbound_cipher_key(key: &[u8]) -> Result<UnboundCipherKey> {
    UnboundCipherKey::new(block_algorithm(key)?, key).map_err(|_| CryptoError::Internal)
}

/// AES-CBC encryption; with `pad` false the input must be a whole number of blocks.
pub(crate) fn cbc_encrypt(key: &[u8], iv: &[u8], plaintext: &[u8], pad: bool) -> Result<Vec<u8>> {
    let context = EncryptionContext::Iv128(cbc_iv(iv)?);
    if !pad && !plaintext.len().is_multiple_of(BLOCK) {
        return Err(invalid_input(
            "AES-CBC without padding needs a multiple of 16 bytes",
        ));
    }
    let unbound = unbound_cipher_key(key)?;
    encrypt_in_place(plaintext, BLOCK, |in_out| {
        if pad {
            let key =
                PaddedBlockEncryptingKey::cbc_pkcs7(unbound).map_err(|_| CryptoError::Internal)?;
            key.less_safe_encrypt(in_out, context)
        } else {
            let key = EncryptingKey::cbc(unbound).map_err(|_| CryptoError::Internal)?;
            key.less_safe_encrypt(in_out, context)
        }
        .map(|_| ())
        .map_err(|_| CryptoError::Internal)
    })
}

/// AES-CBC decryption; bad PKCS#7 padding is `DecryptionFailed`.
pub(crate) fn cbc_decrypt(
    key: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
    pad: bool,
) -> Result<Zeroizing<Vec<u8>>> {
    let context = DecryptionContext::Iv128(cbc_iv(iv)?);
    if !ciphertext.len().is_multiple_of(BLOCK) || (pad && ciphertext.is_empty()) {
        return Err(invalid_input(
            "AES-CBC ciphertext must be a non-empty multiple of 16 bytes",
        ));
    }
    let unbound = unbound_cipher_key(key)?;
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    let len = if pad {
        let key =
            PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| CryptoError::Internal)?;
        key.decrypt(&mut in_out, context)
            .map_err(|_| CryptoError::DecryptionFailed)?
            .len()
    } else {
        let key = DecryptingKey::cbc(unbound).map_err(|_| CryptoError::Internal)?;
        key.decrypt(&mut in_out, context)
            .map_err(|_| CryptoError::Internal)?
            .len()
    };
    in_out.truncate(len);
    Ok(in_out)
}

// ---------------------------------------------------------------------------
// Key wrap
// ---------------------------------------------------------------------------

/// RFC 3394 default initial value.
const KW_IV: [u8; 8] = [0xA6; 8];
/// RFC 5649 alternative initial value prefix.
const KWP_AIV_PREFIX: [u8; 4] = [0xA6, 0x59, 0x59, 0xA6];

fn kek(key: &[u8]) -> Result<Option<AesKek>> {
    let cipher = match key.len() {
        16 => &key_wrap::AES_128,
        32 => &key_wrap::AES_256,
        24 => return Ok(None),
        _ => return Err(invalid_key("AES key must be 128, 192 or 256 bits")),
    };
    AesKek::new(cipher, key)
        .map(Some)
        .map_err(|_| CryptoError::Internal)
}

/// RFC 3394 wrap. The key data must be at least 16 bytes and a multiple of 8.
pub(crate) fn kw_wrap(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    if plaintext.len() < 16 || !plaintext.len().is_multiple_of(8) {
        return Err(invalid_input(
            "AES key wrap input must be at least 16 bytes and a multiple of 8",
        ));
    }
    match kek(key)? {
        Some(kek) => {
            let mut out = vec![0u8; plaintext.len() + 8];
            let len = kek
                .wrap(plaintext, &mut out)
                .map_err(|_| CryptoError::Internal)?
                .len();
            out.truncate(len);
            Ok(out)
        }
        None => soft::wrap(key, KW_IV, plaintext),
    }
}

/// RFC 3394 unwrap; an integrity failure is `DecryptionFailed`.
pub(crate) fn kw_unwrap(key: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err(invalid_input(
            "AES key wrap ciphertext must be at least 24 bytes and a multiple of 8",
        ));
    }
    match kek(key)? {
        Some(kek) => {
            let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
            let len = kek
                .unwrap(wrapped, &mut out)
                .map_err(|_| CryptoError::DecryptionFailed)?
                .len();
            out.truncate(len);
            Ok(out)
        }
        None => {
            let (a, data) = soft::unwrap(key, wrapped)?;
            if verify_slices_are_equal(&a, &KW_IV).is_err() {
                return Err(CryptoError::DecryptionFailed);
            }
            Ok(data)
        }
    }
}

/// RFC 5649 wrap with padding. The key data must not be empty.
pub(crate) fn kwp_wrap(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mli =
        u32::try_from(plaintext.len()).map_err(|_| invalid_input("AES key wrap input too long"))?;
    if plaintext.is_empty() {
        return Err(invalid_input("AES key wrap input must not be empty"));
    }
    match kek(key)? {
        Some(kek) => {
            let mut out = vec![0u8; plaintext.len() + 15];
            let len = kek
                .wrap_with_padding(plaintext, &mut out)
                .map_err(|_| CryptoError::Internal)?
                .len();
            out.truncate(len);
            Ok(out)
        }
        None => {
            let mut aiv = [0u8; 8];
            aiv[..4].copy_from_slice(&KWP_AIV_PREFIX);
            aiv[4..].copy_from_slice(&mli.to_be_bytes());
            let padded_len = plaintext.len().div_ceil(8) * 8;
            let mut padded = Zeroizing::new(vec![0u8; padded_len]);
            padded[..plaintext.len()].copy_from_slice(plaintext);
            if padded_len == 8 {
                // A single 64-bit block is encrypted directly (RFC 5649 section 4.1).
                let mut block = Zeroizing::new([0u8; BLOCK]);
                block[..8].copy_from_slice(&aiv);
                block[8..].copy_from_slice(&padded);
                soft::Aes::new(key)?.encrypt_block(&mut block)?;
                Ok(block.to_vec())
            } else {
                soft::wrap(key, aiv, &padded)
            }
        }
    }
}

/// RFC 5649 unwrap; any integrity or padding failure is `DecryptionFailed`.
pub(crate) fn kwp_unwrap(key: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(invalid_input(
            "AES key wrap ciphertext must be at least 16 bytes and a multiple of 8",
        ));
    }
    match kek(key)? {
        Some(kek) => {
            let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
            let len = kek
                .unwrap_with_padding(wrapped, &mut out)
                .map_err(|_| CryptoError::DecryptionFailed)?
                .len();
            out.truncate(len);
            Ok(out)
        }
        None => {
            let (a, mut data) = if wrapped.len() == BLOCK {
                let mut block = Zeroizing::new([0u8; BLOCK]);
                block.copy_from_slice(wrapped);
                soft::Aes::new(key)?.decrypt_block(&mut block)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(&block[..8]);
                (a, Zeroizing::new(block[8..].to_vec()))
            } else {
                soft::unwrap(key, wrapped)?
            };
            // Check the prefix, the length and the zero padding without branching
            // on which part failed.
            let mut ok = verify_slices_are_equal(&a[..4], &KWP_AIV_PREFIX).is_ok();
            let mli = u32::from_be_bytes([a[4], a[5], a[6], a[7]]) as usize;
            let n = data.len();
            ok &= mli <= n && n - mli < 8;
            let pad_start = mli.min(n);
            ok &= data[pad_start..].iter().fold(0u8, |acc, b| acc | b) == 0;
            if !ok {
                return Err(CryptoError::DecryptionFailed);
            }
            data.truncate(mli);
            Ok(data)
        }
    }
}

/// RFC 3394 `W` and `W^-1` over aws-lc's AES block function, for the key sizes
/// aws-lc-rs has no key wrap for.
mod soft {
    use super::*;

    /// One AES key used block by block (ECB on a single block).
    pub(super) struct Aes<'k> {
        key: &'k [u8],
    }

    impl<'k> Aes<'k> {
        pub(super) fn new(key: &'k [u8]) -> Result<Self> {
            block_algorithm(key)?;
            Ok(Self { key })
        }

        pub(super) fn encrypt_block(&self, block: &mut [u8; BLOCK]) -> Result<()> {
            let key = EncryptingKey::ecb(unbound_cipher_key(self.key)?)
                .map_err(|_| CryptoError::Internal)?;
            key.less_safe_encrypt(block, EncryptionContext::None)
                .map_err(|_| CryptoError::Internal)?;
            Ok(())
        }

        pub(super) fn decrypt_block(&self, block: &mut [u8; BLOCK]) -> Result<()> {
            let key = DecryptingKey::ecb(unbound_cipher_key(self.key)?)
                .map_err(|_| CryptoError::Internal)?;
            key.decrypt(block, DecryptionContext::None)
                .map_err(|_| CryptoError::Internal)?;
            Ok(())
        }
    }

    /// `W(S)` with initial value `iv`; `plaintext` is a multiple of 8, at least 16 bytes.
    pub(super) fn wrap(key: &[u8], iv: [u8; 8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let aes = Aes::new(key)?;
        let n = plaintext.len() / 8;
        let mut a = iv;
        let mut r = Zeroizing::new(plaintext.to_vec());
        let mut block = Zeroizing::new([0u8; BLOCK]);
        for j in 0..6u64 {
            for i in 0..n {
                block[..8].copy_from_slice(&a);
                block[8..].copy_from_slice(&r[i * 8..i * 8 + 8]);
                aes.encrypt_block(&mut block)?;
                let t = (n as u64) * j + (i as u64) + 1;
                a.copy_from_slice(&block[..8]);
                for (byte, t_byte) in a.iter_mut().zip(t.to_be_bytes()) {
                    *byte ^= t_byte;
                }
                r[i * 8..i * 8 + 8].copy_from_slice(&block[8..]);
            }
        }
        let mut out = Vec::with_capacity(plaintext.len() + 8);
        out.extend_from_slice(&a);
        out.extend_from_slice(&r);
        Ok(out)
    }

    /// `W^-1(C)`: returns the recovered initial value and the key data, unchecked.
    pub(super) fn unwrap(key: &[u8], wrapped: &[u8]) -> Result<([u8; 8], Zeroizing<Vec<u8>>)> {
        let aes = Aes::new(key)?;
        let n = wrapped.len() / 8 - 1;
        let mut a = [0u8; 8];
        a.copy_from_slice(&wrapped[..8]);
        let mut r = Zeroizing::new(wrapped[8..].to_vec());
        let mut block = Zeroizing::new([0u8; BLOCK]);
        for j in (0..6u64).rev() {
            for i in (0..n).rev() {
                let t = (n as u64) * j + (i as u64) + 1;
                for (byte, t_byte) in a.iter_mut().zip(t.to_be_bytes()) {
                    *byte ^= t_byte;
                }
                block[..8].copy_from_slice(&a);
                block[8..].copy_from_slice(&r[i * 8..i * 8 + 8]);
                aes.decrypt_block(&mut block)?;
                a.copy_from_slice(&block[..8]);
                r[i * 8..i * 8 + 8].copy_from_slice(&block[8..]);
            }
        }
        Ok((a, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// The 192-bit path is our own code: check it gives what aws-lc gives for the
    /// key sizes aws-lc handles.
    #[test]
    fn soft_key_wrap_matches_aws_lc() {
        for key_len in [16usize, 32] {
            let key = pattern(key_len, 7);
            for data_len in [16usize, 24, 32, 40, 64] {
                let data = pattern(data_len, 3);
                let ours = soft::wrap(&key, KW_IV, &data).unwrap();
                assert_eq!(
                    ours,
                    kw_wrap(&key, &data).unwrap(),
                    "KW {key_len}/{data_len}"
                );
                let (a, back) = soft::unwrap(&key, &ours).unwrap();
                assert_eq!(a, KW_IV);
                assert_eq!(back.as_slice(), data.as_slice());
            }
        }
    }

    #[test]
    fn soft_kwp_matches_aws_lc() {
        for key_len in [16usize, 32] {
            let key = pattern(key_len, 9);
            for data_len in [1usize, 5, 8, 9, 16, 20, 31, 64] {
                let data = pattern(data_len, 1);
                let aws = kwp_wrap(&key, &data).unwrap();
                // Run the soft KWP by hand for this key size.
                let mut aiv = [0u8; 8];
                aiv[..4].copy_from_slice(&KWP_AIV_PREFIX);
                aiv[4..].copy_from_slice(&(data_len as u32).to_be_bytes());
                let padded_len = data_len.div_ceil(8) * 8;
                let mut padded = vec![0u8; padded_len];
                padded[..data_len].copy_from_slice(&data);
                let ours = if padded_len == 8 {
                    let mut block = [0u8; 16];
                    block[..8].copy_from_slice(&aiv);
                    block[8..].copy_from_slice(&padded);
                    soft::Aes::new(&key)
                        .unwrap()
                        .encrypt_block(&mut block)
                        .unwrap();
                    block.to_vec()
                } else {
                    soft::wrap(&key, aiv, &padded).unwrap()
                };
                assert_eq!(ours, aws, "KWP {key_len}/{data_len}");
            }
        }
    }

    #[test]
    fn key_wrap_192_round_trip_and_tamper() {
        let key = pattern(24, 5);
        for data_len in [16usize, 24, 40] {
            let data = pattern(data_len, 2);
            let wrapped = kw_wrap(&key, &data).unwrap();
            assert_eq!(
                kw_unwrap(&key, &wrapped).unwrap().as_slice(),
                data.as_slice()
            );
            let mut bad = wrapped.clone();
            bad[3] ^= 1;
            assert_eq!(kw_unwrap(&key, &bad), Err(CryptoError::DecryptionFailed));
        }
        for data_len in [1usize, 7, 8, 9, 33] {
            let data = pattern(data_len, 4);
            let wrapped = kwp_wrap(&key, &data).unwrap();
            assert_eq!(
                kwp_unwrap(&key, &wrapped).unwrap().as_slice(),
                data.as_slice()
            );
            let mut bad = wrapped.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x80;
            assert_eq!(kwp_unwrap(&key, &bad), Err(CryptoError::DecryptionFailed));
        }
    }
}

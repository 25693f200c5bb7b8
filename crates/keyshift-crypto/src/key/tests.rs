use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::*;
use crate::digest::{sha256, sha384, sha512};
use crate::token::verify_es256;

use EncryptionAlgorithm as E;
use SignatureAlgorithm as S;

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn rsa2048() -> &'static KeyMaterial {
    static KEY: OnceLock<KeyMaterial> = OnceLock::new();
    KEY.get_or_init(|| KeyMaterial::generate_rsa(2048).unwrap())
}

fn digest_for(alg: SignatureAlgorithm, msg: &[u8]) -> Vec<u8> {
    match alg.digest_len() {
        32 => sha256(msg).to_vec(),
        48 => sha384(msg).to_vec(),
        _ => sha512(msg).to_vec(),
    }
}

fn is_mismatch<T: fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(CryptoError::AlgorithmMismatch(_)))
}

fn is_invalid_input<T: fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(CryptoError::InvalidInput(_)))
}

fn is_invalid_key<T: fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(CryptoError::InvalidKey(_)))
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

#[test]
fn algorithm_names_round_trip() {
    for alg in E::ALL {
        assert_eq!(E::from_name(alg.name()), Some(alg));
    }
    for alg in S::ALL {
        assert_eq!(S::from_name(alg.name()), Some(alg));
    }
    assert_eq!(E::from_name("RSA-OAEP-256"), Some(E::RsaOaep256));
    assert_eq!(
        E::from_name("CKM_AES_KEY_WRAP_PAD"),
        Some(E::CkmAesKeyWrapPad)
    );
    assert_eq!(E::from_name("rsa-oaep"), None);
    assert_eq!(E::from_name("A256CBC-HS512"), None);
    assert_eq!(S::from_name("ES256K"), Some(S::Es256K));
    assert_eq!(S::from_name("HS256"), None);
    assert_eq!(S::Es512.digest_len(), 64);
    assert_eq!(S::Ps384.digest_len(), 48);
    assert_eq!(S::Es256K.digest_len(), 32);
    for curve in Curve::ALL {
        assert_eq!(Curve::from_jwk_name(curve.jwk_name()), Some(curve));
    }
    assert_eq!(Curve::from_jwk_name("SECP256K1"), Some(Curve::P256K));
    assert_eq!(Curve::from_jwk_name("P-192"), None);
    assert_eq!(Curve::P521.coordinate_len(), 66);
}

#[test]
fn random_bytes_has_the_length_asked() {
    assert_eq!(random_bytes(0).unwrap().len(), 0);
    let a = random_bytes(32).unwrap();
    assert_eq!(a.len(), 32);
    assert_ne!(a, random_bytes(32).unwrap());
}

// ---------------------------------------------------------------------------
// RSA
// ---------------------------------------------------------------------------

#[test]
fn rsa_generate_sizes() {
    let key = rsa2048();
    assert_eq!(key.family(), KeyFamily::Rsa);
    assert_eq!(key.size_bits(), 2048);
    assert_eq!(key.curve(), None);
    let PublicKey::Rsa { n, e } = key.public_key() else {
        panic!("not RSA")
    };
    assert_eq!(n.len(), 256);
    assert_ne!(n[0], 0);
    assert_eq!(e, vec![1, 0, 1]);
    for bits in [3072, 4096] {
        assert_eq!(KeyMaterial::generate_rsa(bits).unwrap().size_bits(), bits);
    }
    for bits in [0, 1024, 2047, 2049, 8192] {
        assert!(is_invalid_input(KeyMaterial::generate_rsa(bits)), "{bits}");
    }
}

#[test]
fn rsa_encrypt_decrypt_round_trip() {
    let key = rsa2048();
    for alg in [E::RsaOaep, E::RsaOaep256, E::Rsa1_5] {
        for len in [0usize, 1, 32, 100] {
            let msg = vec![0x5a; len];
            let out = key.encrypt(alg, &msg, None, None).unwrap();
            assert_eq!(out.ciphertext.len(), 256);
            assert_eq!((out.iv.clone(), out.tag.clone()), (None, None));
            let back = key.decrypt(alg, &out.ciphertext, None, None, None).unwrap();
            assert_eq!(back.as_slice(), msg.as_slice(), "{alg:?} {len}");
            let wrapped = key.wrap_key(alg, &msg).unwrap();
            assert_eq!(
                key.unwrap_key(alg, &wrapped).unwrap().as_slice(),
                msg.as_slice()
            );
        }
    }
    // Randomized padding: two encryptions differ.
    let a = key.encrypt(E::RsaOaep256, b"k", None, None).unwrap();
    let b = key.encrypt(E::RsaOaep256, b"k", None, None).unwrap();
    assert_ne!(a.ciphertext, b.ciphertext);
    // Empty iv/aad count as absent.
    assert!(key.encrypt(E::RsaOaep, b"k", Some(&[]), Some(&[])).is_ok());
}

#[test]
fn rsa_encrypt_limits_and_failures() {
    let key = rsa2048();
    // Max plaintext: k - 2*hLen - 2 for OAEP, k - 11 for PKCS#1 v1.5.
    assert!(key.encrypt(E::RsaOaep, &[1; 214], None, None).is_ok());
    assert!(is_invalid_input(key.encrypt(
        E::RsaOaep,
        &[1; 215],
        None,
        None
    )));
    assert!(key.encrypt(E::RsaOaep256, &[1; 190], None, None).is_ok());
    assert!(is_invalid_input(key.encrypt(
        E::RsaOaep256,
        &[1; 191],
        None,
        None
    )));
    assert!(key.encrypt(E::Rsa1_5, &[1; 245], None, None).is_ok());
    assert!(is_invalid_input(key.encrypt(
        E::Rsa1_5,
        &[1; 246],
        None,
        None
    )));
    assert!(is_invalid_input(key.wrap_key(E::RsaOaep, &[1; 300])));

    let ct = key
        .encrypt(E::RsaOaep256, b"secret", None, None)
        .unwrap()
        .ciphertext;
    let mut bad = ct.clone();
    bad[100] ^= 1;
    assert_eq!(
        key.decrypt(E::RsaOaep256, &bad, None, None, None),
        Err(CryptoError::DecryptionFailed)
    );
    // Decrypting with the other OAEP hash fails the same way.
    assert_eq!(
        key.decrypt(E::RsaOaep, &ct, None, None, None),
        Err(CryptoError::DecryptionFailed)
    );
    assert!(is_invalid_input(key.decrypt(
        E::RsaOaep256,
        &ct[1..],
        None,
        None,
        None
    )));
    assert!(is_invalid_input(key.decrypt(
        E::RsaOaep256,
        &[],
        None,
        None,
        None
    )));
    assert!(is_invalid_input(key.unwrap_key(E::RsaOaep256, &[0; 257])));
    // Parameters RSA does not take.
    assert!(is_invalid_input(key.encrypt(
        E::RsaOaep,
        b"k",
        Some(&[0; 12]),
        None
    )));
    assert!(is_invalid_input(key.encrypt(
        E::RsaOaep,
        b"k",
        None,
        Some(b"aad")
    )));
    assert!(is_invalid_input(key.decrypt(
        E::RsaOaep,
        &ct,
        None,
        None,
        Some(&[0; 16])
    )));
    // AES algorithms on an RSA key.
    for alg in [E::A256Gcm, E::A128Kw, E::CkmAesKeyWrap, E::A128CbcPad] {
        assert!(is_mismatch(key.encrypt(alg, b"k", None, None)), "{alg:?}");
        assert!(
            is_mismatch(key.decrypt(alg, &ct, None, None, None)),
            "{alg:?}"
        );
        assert!(is_mismatch(key.wrap_key(alg, &[0; 16])), "{alg:?}");
        assert!(is_mismatch(key.unwrap_key(alg, &[0; 24])), "{alg:?}");
    }
}

#[test]
fn rsa_sign_verify_all_algorithms() {
    let key = rsa2048();
    let public = key.public_key();
    for alg in [S::Rs256, S::Rs384, S::Rs512, S::Ps256, S::Ps384, S::Ps512] {
        let digest = digest_for(alg, b"message");
        let sig = key.sign(alg, &digest).unwrap();
        assert_eq!(sig.len(), 256);
        assert!(key.verify(alg, &digest, &sig).unwrap(), "{alg:?}");
        assert!(verify_with_public(&public, alg, &digest, &sig).unwrap());
        let other = digest_for(alg, b"messagf");
        assert!(!key.verify(alg, &other, &sig).unwrap());
        let mut bad = sig.clone();
        bad[7] ^= 0x10;
        assert!(!key.verify(alg, &digest, &bad).unwrap());
        assert!(!key.verify(alg, &digest, &sig[1..]).unwrap());
        assert!(!key.verify(alg, &digest, &[]).unwrap());
        // Digest length must match the algorithm.
        assert!(is_invalid_input(key.sign(alg, &digest[1..])));
        assert!(is_invalid_input(key.sign(alg, &[])));
        assert!(is_invalid_input(key.verify(alg, &digest[1..], &sig)));
    }
    // PKCS#1 v1.5 is deterministic, PSS is salted.
    let d = digest_for(S::Rs256, b"x");
    assert_eq!(
        key.sign(S::Rs256, &d).unwrap(),
        key.sign(S::Rs256, &d).unwrap()
    );
    assert_ne!(
        key.sign(S::Ps256, &d).unwrap(),
        key.sign(S::Ps256, &d).unwrap()
    );
    // A PKCS#1 signature is not a PSS signature.
    let sig = key.sign(S::Rs256, &d).unwrap();
    assert!(!key.verify(S::Ps256, &d, &sig).unwrap());
    // ECDSA on an RSA key.
    for alg in [S::Es256, S::Es384, S::Es512, S::Es256K] {
        let digest = digest_for(alg, b"m");
        assert!(is_mismatch(key.sign(alg, &digest)), "{alg:?}");
        assert!(is_mismatch(key.verify(alg, &digest, &[0; 64])), "{alg:?}");
    }
}

#[test]
fn verify_with_public_rejects_malformed_keys() {
    let d = digest_for(S::Rs256, b"m");
    let small = PublicKey::Rsa {
        n: vec![0xC1; 128],
        e: vec![1, 0, 1],
    };
    assert!(is_invalid_key(verify_with_public(
        &small,
        S::Rs256,
        &d,
        &[0; 128]
    )));
    let zero_e = PublicKey::Rsa {
        n: vec![0xC1; 256],
        e: vec![0],
    };
    assert!(is_invalid_key(verify_with_public(
        &zero_e,
        S::Rs256,
        &d,
        &[0; 256]
    )));
    let off_curve = PublicKey::Ec {
        crv: Curve::P256,
        x: vec![1; 32],
        y: vec![2; 32],
    };
    assert!(is_invalid_key(verify_with_public(
        &off_curve,
        S::Es256,
        &d,
        &[0; 64]
    )));
    let too_long = PublicKey::Ec {
        crv: Curve::P256,
        x: vec![1; 33],
        y: vec![2; 32],
    };
    assert!(is_invalid_key(verify_with_public(
        &too_long,
        S::Es256,
        &d,
        &[0; 64]
    )));
    let oct = PublicKey::Oct { bits: 256 };
    assert!(is_mismatch(verify_with_public(
        &oct,
        S::Rs256,
        &d,
        &[0; 64]
    )));
    assert!(is_mismatch(verify_with_public(
        &oct,
        S::Es256,
        &d,
        &[0; 64]
    )));
}

// ---------------------------------------------------------------------------
// EC
// ---------------------------------------------------------------------------

#[test]
fn ec_generate_sign_verify_every_curve() {
    let pairs = [
        (Curve::P256, S::Es256, 256),
        (Curve::P384, S::Es384, 384),
        (Curve::P521, S::Es512, 521),
        (Curve::P256K, S::Es256K, 256),
    ];
    for (curve, alg, bits) in pairs {
        let key = KeyMaterial::generate_ec(curve).unwrap();
        assert_eq!(key.family(), KeyFamily::Ec);
        assert_eq!(key.curve(), Some(curve));
        assert_eq!(key.size_bits(), bits);
        let public = key.public_key();
        let PublicKey::Ec { crv, x, y } = &public else {
            panic!("not EC")
        };
        assert_eq!(*crv, curve);
        assert_eq!(
            (x.len(), y.len()),
            (curve.coordinate_len(), curve.coordinate_len())
        );

        let digest = digest_for(alg, b"message");
        let sig = key.sign(alg, &digest).unwrap();
        assert_eq!(sig.len(), 2 * curve.coordinate_len(), "{alg:?}");
        assert!(key.verify(alg, &digest, &sig).unwrap());
        assert!(verify_with_public(&public, alg, &digest, &sig).unwrap());
        assert!(!key.verify(alg, &digest_for(alg, b"other"), &sig).unwrap());
        let mut bad = sig.clone();
        bad[3] ^= 1;
        assert!(!key.verify(alg, &digest, &bad).unwrap());
        assert!(!key.verify(alg, &digest, &sig[..sig.len() - 1]).unwrap());
        assert!(is_invalid_input(key.sign(alg, &digest[..20])));
        assert!(is_invalid_input(key.verify(alg, &[0; 20], &sig)));

        // Every other signature algorithm is a mismatch on this key.
        for other in S::ALL.into_iter().filter(|a| *a != alg) {
            let d = digest_for(other, b"m");
            assert!(is_mismatch(key.sign(other, &d)), "{other:?} on {curve:?}");
            assert!(
                is_mismatch(key.verify(other, &d, &sig)),
                "{other:?} on {curve:?}"
            );
        }
        // No encryption with an EC key.
        for enc in [E::RsaOaep, E::RsaOaep256, E::Rsa1_5, E::A256Gcm, E::A256Kw] {
            assert!(is_mismatch(key.encrypt(enc, b"k", None, None)), "{enc:?}");
            assert!(
                is_mismatch(key.decrypt(enc, &[0; 32], None, None, None)),
                "{enc:?}"
            );
            assert!(is_mismatch(key.wrap_key(enc, &[0; 32])), "{enc:?}");
            assert!(is_mismatch(key.unwrap_key(enc, &[0; 40])), "{enc:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// oct
// ---------------------------------------------------------------------------

fn oct(bits: u32) -> KeyMaterial {
    KeyMaterial::generate_oct(bits).unwrap()
}

fn sized(bits: u32) -> [E; 5] {
    match bits {
        128 => [
            E::A128Gcm,
            E::A128Kw,
            E::A128KwPad,
            E::A128Cbc,
            E::A128CbcPad,
        ],
        192 => [
            E::A192Gcm,
            E::A192Kw,
            E::A192KwPad,
            E::A192Cbc,
            E::A192CbcPad,
        ],
        _ => [
            E::A256Gcm,
            E::A256Kw,
            E::A256KwPad,
            E::A256Cbc,
            E::A256CbcPad,
        ],
    }
}

#[test]
fn oct_round_trips_for_every_size_and_algorithm() {
    let iv16 = [7u8; 16];
    for bits in [128u32, 192, 256] {
        let key = oct(bits);
        assert_eq!(key.family(), KeyFamily::Oct);
        assert_eq!(key.size_bits(), bits);
        assert_eq!(key.public_key(), PublicKey::Oct { bits });
        let [gcm, kw, kwp, cbc, cbcpad] = sized(bits);

        // GCM with a generated IV, with a caller IV, with and without AAD.
        for msg in [&b""[..], b"x", &[9u8; 100]] {
            let out = key.encrypt(gcm, msg, None, Some(b"aad")).unwrap();
            let iv = out.iv.clone().unwrap();
            let tag = out.tag.clone().unwrap();
            assert_eq!((iv.len(), tag.len()), (12, 16));
            assert_eq!(out.ciphertext.len(), msg.len());
            let back = key
                .decrypt(gcm, &out.ciphertext, Some(&iv), Some(b"aad"), Some(&tag))
                .unwrap();
            assert_eq!(back.as_slice(), msg);
        }
        let out = key.encrypt(gcm, b"hello", Some(&[1; 12]), None).unwrap();
        assert_eq!(out.iv.as_deref(), Some(&[1u8; 12][..]));
        let back = key
            .decrypt(
                gcm,
                &out.ciphertext,
                Some(&[1; 12]),
                None,
                out.tag.as_deref(),
            )
            .unwrap();
        assert_eq!(back.as_slice(), b"hello");
        let a = key.encrypt(gcm, b"same", None, None).unwrap();
        let b = key.encrypt(gcm, b"same", None, None).unwrap();
        assert_ne!(a.iv, b.iv, "a fresh IV each time");

        // CBC without padding: whole blocks only.
        let msg = [3u8; 32];
        let out = key.encrypt(cbc, &msg, Some(&iv16), None).unwrap();
        assert_eq!(out.iv.as_deref(), Some(&iv16[..]));
        assert_eq!((out.ciphertext.len(), out.tag.clone()), (32, None));
        let back = key
            .decrypt(cbc, &out.ciphertext, Some(&iv16), None, None)
            .unwrap();
        assert_eq!(back.as_slice(), &msg);

        // CBC with PKCS#7.
        for len in [0usize, 1, 15, 16, 17, 33] {
            let msg = vec![0xA5; len];
            let out = key.encrypt(cbcpad, &msg, Some(&iv16), None).unwrap();
            assert_eq!(out.ciphertext.len(), (len / 16 + 1) * 16);
            let back = key
                .decrypt(cbcpad, &out.ciphertext, Some(&iv16), None, None)
                .unwrap();
            assert_eq!(back.as_slice(), msg.as_slice(), "{cbcpad:?} {len}");
        }

        // Key wrap through wrap_key and through encrypt.
        for alg in [kw, E::CkmAesKeyWrap] {
            for len in [16usize, 24, 32, 64] {
                let cek = vec![0x11; len];
                let wrapped = key.wrap_key(alg, &cek).unwrap();
                assert_eq!(wrapped.len(), len + 8);
                assert_eq!(
                    key.unwrap_key(alg, &wrapped).unwrap().as_slice(),
                    cek.as_slice()
                );
                let out = key.encrypt(alg, &cek, None, None).unwrap();
                assert_eq!(out.ciphertext, wrapped, "KW is deterministic");
                let back = key.decrypt(alg, &out.ciphertext, None, None, None).unwrap();
                assert_eq!(back.as_slice(), cek.as_slice());
            }
        }
        for alg in [kwp, E::CkmAesKeyWrapPad] {
            for len in [1usize, 7, 8, 9, 16, 20, 32, 65] {
                let cek = vec![0x22; len];
                let wrapped = key.wrap_key(alg, &cek).unwrap();
                assert_eq!(wrapped.len(), len.div_ceil(8) * 8 + 8);
                assert_eq!(
                    key.unwrap_key(alg, &wrapped).unwrap().as_slice(),
                    cek.as_slice()
                );
                let back = key.decrypt(alg, &wrapped, None, None, None).unwrap();
                assert_eq!(back.as_slice(), cek.as_slice());
            }
        }
    }
}

#[test]
fn oct_key_size_must_fit_the_algorithm() {
    for bits in [128u32, 192, 256] {
        let key = oct(bits);
        for other in [128u32, 192, 256].into_iter().filter(|b| *b != bits) {
            for alg in sized(other) {
                assert!(
                    is_mismatch(key.encrypt(alg, &[0; 32], Some(&[0; 16]), None)),
                    "{alg:?}"
                );
                assert!(is_mismatch(key.decrypt(
                    alg,
                    &[0; 32],
                    Some(&[0; 12]),
                    None,
                    Some(&[0; 16])
                )));
                assert!(is_mismatch(key.wrap_key(alg, &[0; 32])));
                assert!(is_mismatch(key.unwrap_key(alg, &[0; 40])));
            }
        }
        // RSA algorithms and signatures on an oct key.
        for alg in [E::RsaOaep, E::RsaOaep256, E::Rsa1_5] {
            assert!(is_mismatch(key.encrypt(alg, b"k", None, None)));
            assert!(is_mismatch(key.decrypt(alg, &[0; 256], None, None, None)));
            assert!(is_mismatch(key.wrap_key(alg, &[0; 16])));
            assert!(is_mismatch(key.unwrap_key(alg, &[0; 256])));
        }
        for alg in S::ALL {
            let d = digest_for(alg, b"m");
            assert!(is_mismatch(key.sign(alg, &d)));
            assert!(is_mismatch(key.verify(alg, &d, &[0; 64])));
        }
        // GCM and CBC are not key-wrap algorithms.
        let [gcm, _, _, cbc, cbcpad] = sized(bits);
        for alg in [gcm, cbc, cbcpad] {
            assert!(is_mismatch(key.wrap_key(alg, &[0; 16])), "{alg:?}");
            assert!(is_mismatch(key.unwrap_key(alg, &[0; 24])), "{alg:?}");
        }
    }
    for bits in [0u32, 64, 100, 512] {
        assert!(is_invalid_input(KeyMaterial::generate_oct(bits)), "{bits}");
    }
}

#[test]
fn gcm_rejects_tampering_and_bad_parameters() {
    let key = oct(256);
    let out = key
        .encrypt(E::A256Gcm, b"attack at dawn", None, Some(b"hdr"))
        .unwrap();
    let iv = out.iv.unwrap();
    let tag = out.tag.unwrap();
    let ct = out.ciphertext;
    let fail = Err(CryptoError::DecryptionFailed);
    let mut bad_tag = tag.clone();
    bad_tag[15] ^= 1;
    assert_eq!(
        key.decrypt(E::A256Gcm, &ct, Some(&iv), Some(b"hdr"), Some(&bad_tag)),
        fail
    );
    let mut bad_ct = ct.clone();
    bad_ct[0] ^= 1;
    assert_eq!(
        key.decrypt(E::A256Gcm, &bad_ct, Some(&iv), Some(b"hdr"), Some(&tag)),
        fail
    );
    let mut bad_iv = iv.clone();
    bad_iv[0] ^= 1;
    assert_eq!(
        key.decrypt(E::A256Gcm, &ct, Some(&bad_iv), Some(b"hdr"), Some(&tag)),
        fail
    );
    assert_eq!(
        key.decrypt(E::A256Gcm, &ct, Some(&iv), Some(b"hdx"), Some(&tag)),
        fail
    );
    assert_eq!(
        key.decrypt(E::A256Gcm, &ct, Some(&iv), None, Some(&tag)),
        fail
    );
    assert_eq!(
        key.decrypt(E::A256Gcm, &ct[1..], Some(&iv), Some(b"hdr"), Some(&tag)),
        fail
    );
    // Another key of the same size.
    assert_eq!(
        oct(256).decrypt(E::A256Gcm, &ct, Some(&iv), Some(b"hdr"), Some(&tag)),
        fail
    );

    // Missing or mis-sized iv/tag are the caller's mistake, not a failed decryption.
    assert!(is_invalid_input(key.decrypt(
        E::A256Gcm,
        &ct,
        None,
        Some(b"hdr"),
        Some(&tag)
    )));
    assert!(is_invalid_input(key.decrypt(
        E::A256Gcm,
        &ct,
        Some(&iv),
        Some(b"hdr"),
        None
    )));
    assert!(is_invalid_input(key.decrypt(
        E::A256Gcm,
        &ct,
        Some(&[0; 16]),
        None,
        Some(&tag)
    )));
    assert!(is_invalid_input(key.decrypt(
        E::A256Gcm,
        &ct,
        Some(&iv),
        None,
        Some(&tag[..12])
    )));
    assert!(is_invalid_input(key.encrypt(
        E::A256Gcm,
        b"x",
        Some(&[0; 16]),
        None
    )));
    assert!(is_invalid_input(key.encrypt(
        E::A256Gcm,
        b"x",
        Some(&[0; 8]),
        None
    )));
}

#[test]
fn cbc_rejects_bad_parameters_and_padding() {
    let key = oct(128);
    let iv = [0u8; 16];
    // IV is required and must be 16 bytes.
    assert!(is_invalid_input(key.encrypt(
        E::A128Cbc,
        &[0; 16],
        None,
        None
    )));
    assert!(is_invalid_input(key.encrypt(
        E::A128CbcPad,
        b"x",
        Some(&[0; 12]),
        None
    )));
    assert!(is_invalid_input(key.decrypt(
        E::A128CbcPad,
        &[0; 16],
        None,
        None,
        None
    )));
    assert!(is_invalid_input(key.decrypt(
        E::A128Cbc,
        &[0; 16],
        Some(&[0; 17]),
        None,
        None
    )));
    // No padding: whole blocks only.
    assert!(is_invalid_input(key.encrypt(
        E::A128Cbc,
        &[0; 15],
        Some(&iv),
        None
    )));
    assert!(is_invalid_input(key.decrypt(
        E::A128Cbc,
        &[0; 17],
        Some(&iv),
        None,
        None
    )));
    assert!(is_invalid_input(key.decrypt(
        E::A128CbcPad,
        &[0; 17],
        Some(&iv),
        None,
        None
    )));
    assert!(is_invalid_input(key.decrypt(
        E::A128CbcPad,
        &[],
        Some(&iv),
        None,
        None
    )));
    // CBC takes no aad or tag.
    assert!(is_invalid_input(key.encrypt(
        E::A128Cbc,
        &[0; 16],
        Some(&iv),
        Some(b"a")
    )));
    assert!(is_invalid_input(key.decrypt(
        E::A128Cbc,
        &[0; 16],
        Some(&iv),
        None,
        Some(&[1])
    )));
    // A block whose plaintext ends in an impossible pad byte (0x00 or 0x11).
    for last in [0x00u8, 0x11, 0xFF] {
        let mut block = [0x41u8; 16];
        block[15] = last;
        let ct = key
            .encrypt(E::A128Cbc, &block, Some(&iv), None)
            .unwrap()
            .ciphertext;
        assert_eq!(
            key.decrypt(E::A128CbcPad, &ct, Some(&iv), None, None),
            Err(CryptoError::DecryptionFailed),
            "pad byte {last:#x}"
        );
    }
    // Pad bytes that disagree: ... 0x01 0x02.
    let mut block = [0x41u8; 16];
    block[14] = 0x01;
    block[15] = 0x02;
    let ct = key
        .encrypt(E::A128Cbc, &block, Some(&iv), None)
        .unwrap()
        .ciphertext;
    assert_eq!(
        key.decrypt(E::A128CbcPad, &ct, Some(&iv), None, None),
        Err(CryptoError::DecryptionFailed)
    );
}

#[test]
fn key_wrap_rejects_bad_input_and_tampering() {
    for bits in [128u32, 192, 256] {
        let key = oct(bits);
        let [_, kw, kwp, _, _] = sized(bits);
        // RFC 3394 needs at least two 64-bit blocks.
        assert!(is_invalid_input(key.wrap_key(kw, &[0; 8])));
        assert!(is_invalid_input(key.wrap_key(kw, &[0; 20])));
        assert!(is_invalid_input(key.wrap_key(kw, &[])));
        assert!(is_invalid_input(key.wrap_key(kwp, &[])));
        assert!(is_invalid_input(key.unwrap_key(kw, &[0; 16])));
        assert!(is_invalid_input(key.unwrap_key(kw, &[0; 25])));
        assert!(is_invalid_input(key.unwrap_key(kwp, &[0; 8])));
        assert!(is_invalid_input(key.unwrap_key(kwp, &[0; 20])));
        // Key wrap takes no iv, aad or tag.
        assert!(is_invalid_input(key.encrypt(
            kw,
            &[0; 16],
            Some(&[0; 8]),
            None
        )));
        assert!(is_invalid_input(key.decrypt(
            kwp,
            &[0; 16],
            None,
            Some(b"a"),
            None
        )));

        let wrapped = key.wrap_key(kw, &[0x33; 32]).unwrap();
        for i in [0usize, 8, wrapped.len() - 1] {
            let mut bad = wrapped.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                key.unwrap_key(kw, &bad),
                Err(CryptoError::DecryptionFailed),
                "{bits} {i}"
            );
        }
        assert_eq!(
            oct(bits).unwrap_key(kw, &wrapped),
            Err(CryptoError::DecryptionFailed)
        );
        // A KW blob is not a KWP blob.
        assert_eq!(
            key.unwrap_key(kwp, &wrapped),
            Err(CryptoError::DecryptionFailed)
        );
        for len in [5usize, 8, 20] {
            let wrapped = key.wrap_key(kwp, &vec![0x44; len]).unwrap();
            let mut bad = wrapped.clone();
            bad[2] ^= 0x80;
            assert_eq!(
                key.unwrap_key(kwp, &bad),
                Err(CryptoError::DecryptionFailed)
            );
        }
    }
}

/// RFC 3394 section 4 and RFC 5649 section 6 examples.
#[test]
fn key_wrap_known_answers() {
    let kek = hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
    let data = hex("00112233445566778899AABBCCDDEEFF");
    let cases = [
        (16, "1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5"),
        (24, "96778B25AE6CA435 F92B5B97C050AED2 468AB8A17AD84E5D"),
        (32, "64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7"),
    ];
    for (len, expected) in cases {
        let key = KeyMaterial::from_bytes(&[&[TAG_OCT], &kek[..len]].concat()).unwrap();
        let wrapped = key.wrap_key(E::CkmAesKeyWrap, &data).unwrap();
        assert_eq!(wrapped, hex(expected), "KEK {len}");
        assert_eq!(
            key.unwrap_key(E::CkmAesKeyWrap, &wrapped)
                .unwrap()
                .as_slice(),
            data
        );
    }
    // RFC 5649: a 192-bit KEK, 20- and 7-byte keys.
    let mut parts = {
        let mut parts = JwkParts::default();
        parts.family = Some(KeyFamily::Oct);
        parts
    };
    parts.k = Some(hex("5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8"));
    let key = KeyMaterial::from_jwk(&parts).unwrap();
    let cases = [
        (
            "c37b7e6492584340 bed1220780894115 5068f738",
            "138bdeaa9b8fa7fc 61f97742e72248ee 5ae6ae5360d1ae6a 5f54f373fa543b6a",
        ),
        ("466f7250617369", "afbeb0f07dfbf541 9200f2ccb50bb24f"),
    ];
    for (plain, wrapped) in cases {
        assert_eq!(
            key.wrap_key(E::A192KwPad, &hex(plain)).unwrap(),
            hex(wrapped)
        );
        assert_eq!(
            key.unwrap_key(E::A192KwPad, &hex(wrapped))
                .unwrap()
                .as_slice(),
            hex(plain)
        );
    }
}

// ---------------------------------------------------------------------------
// Serialization
// ---------------------------------------------------------------------------

#[test]
fn to_bytes_from_bytes_round_trip() {
    let mut keys = vec![KeyMaterial::from_bytes(&rsa2048().to_bytes()).unwrap()];
    for curve in Curve::ALL {
        keys.push(KeyMaterial::generate_ec(curve).unwrap());
    }
    for bits in [128, 192, 256] {
        keys.push(oct(bits));
    }
    for key in &keys {
        let bytes = key.to_bytes();
        let again = KeyMaterial::from_bytes(&bytes).unwrap();
        assert_eq!(again.family(), key.family());
        assert_eq!(again.size_bits(), key.size_bits());
        assert_eq!(again.curve(), key.curve());
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(again.to_bytes().as_slice(), bytes.as_slice());
        match key.family() {
            KeyFamily::Oct => {
                let alg = E::CkmAesKeyWrapPad;
                let wrapped = key.wrap_key(alg, b"data key").unwrap();
                assert_eq!(
                    again.unwrap_key(alg, &wrapped).unwrap().as_slice(),
                    b"data key"
                );
            }
            _ => {
                let alg = match key.curve() {
                    Some(Curve::P256) => S::Es256,
                    Some(Curve::P384) => S::Es384,
                    Some(Curve::P521) => S::Es512,
                    Some(Curve::P256K) => S::Es256K,
                    None => S::Ps256,
                };
                let d = digest_for(alg, b"m");
                assert!(key.verify(alg, &d, &again.sign(alg, &d).unwrap()).unwrap());
            }
        }
    }
    let rsa = rsa2048();
    let restored = KeyMaterial::from_bytes(&rsa.to_bytes()).unwrap();
    let ct = rsa
        .encrypt(E::RsaOaep, b"k", None, None)
        .unwrap()
        .ciphertext;
    assert_eq!(
        restored
            .decrypt(E::RsaOaep, &ct, None, None, None)
            .unwrap()
            .as_slice(),
        b"k"
    );
}

#[test]
fn from_bytes_rejects_garbage_without_panicking() {
    assert!(is_invalid_key(KeyMaterial::from_bytes(&[])));
    assert!(is_invalid_key(KeyMaterial::from_bytes(&[0x00])));
    assert!(is_invalid_key(KeyMaterial::from_bytes(&[0xFF, 1, 2, 3])));
    for tag in [TAG_RSA, TAG_EC, TAG_OCT] {
        assert!(is_invalid_key(KeyMaterial::from_bytes(&[tag])), "{tag}");
        assert!(
            is_invalid_key(KeyMaterial::from_bytes(&[tag, 0x30, 0x03, 1, 2])),
            "{tag}"
        );
    }
    assert!(is_invalid_key(KeyMaterial::from_bytes(
        &[&[TAG_OCT][..], &[0; 15]].concat()
    )));
    assert!(is_invalid_key(KeyMaterial::from_bytes(
        &[&[TAG_OCT][..], &[0; 33]].concat()
    )));

    // Every truncation of a valid EC and RSA encoding, and every tag swap.
    let ec = KeyMaterial::generate_ec(Curve::P384).unwrap().to_bytes();
    for len in 0..ec.len() {
        assert!(
            KeyMaterial::from_bytes(&ec[..len]).is_err(),
            "EC prefix {len}"
        );
    }
    let rsa = rsa2048().to_bytes();
    for len in (0..rsa.len()).step_by(7) {
        assert!(
            KeyMaterial::from_bytes(&rsa[..len]).is_err(),
            "RSA prefix {len}"
        );
    }
    let mut swapped = ec.to_vec();
    swapped[0] = TAG_RSA;
    assert!(is_invalid_key(KeyMaterial::from_bytes(&swapped)));
    let mut swapped = rsa.to_vec();
    swapped[0] = TAG_EC;
    assert!(is_invalid_key(KeyMaterial::from_bytes(&swapped)));
    // Flipped bytes and random inputs: an error or a key, never a panic.
    for i in (1..ec.len()).step_by(3) {
        let mut bad = ec.to_vec();
        bad[i] ^= 0x5A;
        let _ = KeyMaterial::from_bytes(&bad);
    }
    for len in [1usize, 2, 17, 33, 100, 1000] {
        for _ in 0..20 {
            let _ = KeyMaterial::from_bytes(&random_bytes(len).unwrap());
            let mut tagged = random_bytes(len).unwrap();
            tagged[0] = TAG_RSA + (len % 3) as u8;
            let _ = KeyMaterial::from_bytes(&tagged);
        }
    }
}

// ---------------------------------------------------------------------------
// JWK import (RFC 7515 appendix A keys)
// ---------------------------------------------------------------------------

/// The RSA key of RFC 7515 appendix A.2.1.
fn rfc7515_rsa() -> JwkParts {
    let mut parts = JwkParts::default();
    parts.family = Some(KeyFamily::Rsa);
    parts.n = Some(b64(
        "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJ\
             PMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0\
             LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uD\
             Zlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2\
             PAcDTW9gb54h4FRWyuXpoQ",
    ));
    parts.e = Some(b64("AQAB"));
    parts.d = Some(b64(
        "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9S\
             E-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVd\
             xzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQ\
             UShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjn\
             czT0QU91p1DhOVRuOopznQ",
    ));
    parts.p = Some(b64(
        "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQT\
             a9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV\
             5z-y2XDwGUc",
    ));
    parts.q = Some(b64(
        "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7\
             C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rj\
             cJIDEz9RWdc",
    ));
    parts.dp = Some(b64(
        "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_P\
             I7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1Xs\
             mvkxHQAdYo0",
    ));
    parts.dq = Some(b64(
        "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oK\
             r6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTd\
             lqvd0tIiTHU",
    ));
    parts.qi = Some(b64(
        "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_\
             QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0J\
             KSHuLFkuQ3U",
    ));
    parts
}

/// The signing input shared by RFC 7515 appendices A.2 and A.3 (header differs).
const A2_INPUT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const A3_INPUT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

#[test]
fn rsa_jwk_reproduces_rfc7515_a2_signature() {
    let parts = rfc7515_rsa();
    let key = KeyMaterial::from_jwk(&parts).unwrap();
    assert_eq!(key.size_bits(), 2048);
    assert_eq!(
        key.public_key(),
        PublicKey::Rsa {
            n: parts.n.clone().unwrap(),
            e: parts.e.clone().unwrap()
        }
    );
    let expected = b64(
        "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt\
         _O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArL\
         IARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7no\
         OPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQ\
         Ge77Rw",
    );
    let digest = sha256(A2_INPUT.as_bytes());
    assert_eq!(key.sign(S::Rs256, &digest).unwrap(), expected);
    assert!(verify_with_public(&key.public_key(), S::Rs256, &digest, &expected).unwrap());
    // Round trip through our serialization keeps the same key.
    let again = KeyMaterial::from_bytes(&key.to_bytes()).unwrap();
    assert_eq!(again.sign(S::Rs256, &digest).unwrap(), expected);
    // A leading zero on n or e is tolerated.
    let mut padded = rfc7515_rsa();
    padded.n.as_mut().unwrap().insert(0, 0);
    padded.e = Some(vec![0, 1, 0, 1]);
    assert_eq!(
        KeyMaterial::from_jwk(&padded).unwrap().public_key(),
        key.public_key()
    );
}

#[test]
fn rsa_jwk_negative_cases() {
    // Any CRT member missing.
    for strip in ["d", "p", "q", "dp", "dq", "qi", "n", "e"] {
        let mut parts = rfc7515_rsa();
        match strip {
            "d" => parts.d = None,
            "p" => parts.p = None,
            "q" => parts.q = None,
            "dp" => parts.dp = None,
            "dq" => parts.dq = None,
            "qi" => parts.qi = None,
            "n" => parts.n = None,
            _ => parts.e = None,
        }
        assert!(
            is_invalid_key(KeyMaterial::from_jwk(&parts)),
            "without {strip}"
        );
    }
    // Inconsistent members.
    let mut parts = rfc7515_rsa();
    parts.dp.as_mut().unwrap()[10] ^= 1;
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    let mut parts = rfc7515_rsa();
    parts.n.as_mut().unwrap()[100] ^= 1;
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    let mut parts = rfc7515_rsa();
    parts.e = Some(vec![3]);
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    let mut parts = rfc7515_rsa();
    parts.d = Some(vec![]);
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    let mut parts = rfc7515_rsa();
    parts.n = Some(vec![0; 256]);
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    // No kty.
    let mut parts = rfc7515_rsa();
    parts.family = None;
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    // RSA members under kty EC.
    let mut parts = rfc7515_rsa();
    parts.family = Some(KeyFamily::Ec);
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
}

/// The EC key of RFC 7515 appendix A.3.1.
fn rfc7515_p256() -> JwkParts {
    let mut parts = JwkParts::default();
    parts.family = Some(KeyFamily::Ec);
    parts.crv = Some(Curve::P256);
    parts.x = Some(b64("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"));
    parts.y = Some(b64("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"));
    parts.d = Some(b64("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"));
    parts
}

#[test]
fn ec_jwk_verifies_rfc7515_a3_and_a4() {
    let parts = rfc7515_p256();
    let key = KeyMaterial::from_jwk(&parts).unwrap();
    assert_eq!(key.curve(), Some(Curve::P256));
    let sig = b64(
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
    );
    let digest = sha256(A3_INPUT.as_bytes());
    assert!(key.verify(S::Es256, &digest, &sig).unwrap());
    let ours = key.sign(S::Es256, &digest).unwrap();
    let (x, y) = (parts.x.clone().unwrap(), parts.y.clone().unwrap());
    assert!(verify_es256(&x, &y, A3_INPUT.as_bytes(), &ours));

    // A.4: ES512 on P-521 over "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA".
    let p521 = {
        let mut parts = JwkParts::default();
        parts.family = Some(KeyFamily::Ec);
        parts.crv = Some(Curve::P521);
        parts.x = Some(b64(
            "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk",
        ));
        parts.y = Some(b64(
            "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2",
        ));
        parts.d = Some(b64(
            "AY5pb7A0UFiB3RELSD64fTLOSV_jazdF7fLYyuTw8lOfRhWg6Y6rUrPAxerEzgdRhajnu0ferB0d53vM9mE15j2C",
        ));
        parts
    };
    let key = KeyMaterial::from_jwk(&p521).unwrap();
    assert_eq!(key.size_bits(), 521);
    let sig = b64(
        "AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7Xdt\
         AG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn",
    );
    let digest = sha512(b"eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA");
    assert!(key.verify(S::Es512, &digest, &sig).unwrap());
    assert!(verify_with_public(&key.public_key(), S::Es512, &digest, &sig).unwrap());
    assert!(!key.verify(S::Es512, &sha512(b"other"), &sig).unwrap());
}

#[test]
fn ec_jwk_negative_cases() {
    // x/y of another key.
    let other = KeyMaterial::generate_ec(Curve::P256).unwrap();
    let PublicKey::Ec { x, y, .. } = other.public_key() else {
        panic!("not EC")
    };
    let mut parts = rfc7515_p256();
    parts.x = Some(x);
    parts.y = Some(y);
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    // y of the negated point: on the curve, but not d's point.
    let mut parts = rfc7515_p256();
    let p = hex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
    let y = parts.y.clone().unwrap();
    let mut neg = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let v = p[i] as i16 - y[i] as i16 - borrow;
        borrow = i16::from(v < 0);
        neg[i] = v.rem_euclid(256) as u8;
    }
    parts.y = Some(neg);
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    // Off-curve point.
    let mut parts = rfc7515_p256();
    parts.y.as_mut().unwrap()[31] ^= 1;
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    // Wrong curve for the members.
    let mut parts = rfc7515_p256();
    parts.crv = Some(Curve::P256K);
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    let mut parts = rfc7515_p256();
    parts.crv = Some(Curve::P384);
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    // Missing members.
    for strip in ["crv", "d", "x", "y"] {
        let mut parts = rfc7515_p256();
        match strip {
            "crv" => parts.crv = None,
            "d" => parts.d = None,
            "x" => parts.x = None,
            _ => parts.y = None,
        }
        assert!(
            is_invalid_key(KeyMaterial::from_jwk(&parts)),
            "without {strip}"
        );
    }
    // Over-long member; d = 0; d = n (order).
    let mut parts = rfc7515_p256();
    parts.x.as_mut().unwrap().insert(0, 1);
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    let mut parts = rfc7515_p256();
    parts.d = Some(vec![0; 32]);
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    let mut parts = rfc7515_p256();
    parts.d = Some(hex(
        "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
    ));
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
    // A leading zero byte on a member is tolerated.
    let mut parts = rfc7515_p256();
    parts.x = Some([&[0u8][..], parts.x.as_deref().unwrap()].concat());
    assert!(
        KeyMaterial::from_jwk(&parts).is_ok(),
        "x with a leading zero byte"
    );
}

#[test]
fn oct_jwk() {
    for len in [16usize, 24, 32] {
        let parts = {
            let mut parts = JwkParts::default();
            parts.family = Some(KeyFamily::Oct);
            parts.k = Some(vec![0x42; len]);
            parts
        };
        let key = KeyMaterial::from_jwk(&parts).unwrap();
        assert_eq!(key.size_bits(), len as u32 * 8);
        assert_eq!(key.to_bytes()[1..], vec![0x42; len][..]);
    }
    for len in [0usize, 8, 20, 31, 64] {
        let parts = {
            let mut parts = JwkParts::default();
            parts.family = Some(KeyFamily::Oct);
            parts.k = Some(vec![0x42; len]);
            parts
        };
        assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)), "{len}");
    }
    let parts = {
        let mut parts = JwkParts::default();
        parts.family = Some(KeyFamily::Oct);
        parts
    };
    assert!(is_invalid_key(KeyMaterial::from_jwk(&parts)));
}

// ---------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------

#[test]
fn debug_never_shows_key_material() {
    let secret = [0xABu8; 32];
    let key = KeyMaterial::from_bytes(&[&[TAG_OCT][..], &secret].concat()).unwrap();
    let shown = format!("{key:?}");
    assert!(shown.contains("Oct") && shown.contains("256"), "{shown}");
    assert!(
        !shown.contains("171") && !shown.to_lowercase().contains("ab"),
        "{shown}"
    );

    let parts = rfc7515_p256();
    let shown = format!("{parts:?}");
    assert!(shown.contains("\"d\""), "{shown}");
    assert!(!shown.contains("142"), "d starts with 0x8e = 142: {shown}");

    let rsa = format!("{:?}", rsa2048());
    assert!(rsa.len() < 120, "{rsa}");

    // Errors carry no key bytes either.
    let mut bad = rfc7515_rsa();
    bad.dp.as_mut().unwrap()[0] ^= 1;
    let err = KeyMaterial::from_jwk(&bad).unwrap_err().to_string();
    assert!(err.len() < 100, "{err}");
}

//! `Pkcs11Backend` against SoftHSM2: every HSM key type and every operation, checked by the
//! software side of this crate; the key material shown not to be extractable through PKCS#11;
//! and the refusals.
//!
//! Needs SoftHSM2 (`softhsm2-util` and its module; `apt-get install softhsm2`). Without it the
//! tests say so and pass, unless `KEYSHIFT_E2E_REQUIRE_SOFTHSM` is set (CI sets it): then they
//! fail. The module is taken from `KEYSHIFT_PKCS11_MODULE`, else from the usual install paths.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` and its token directory once, when the module is initialized,
//! and a PKCS#11 module is initialized once per process. So the tests share one SoftHSM2 set-up in
//! a temporary directory, made when the first test starts with one fresh token per test in it, and
//! removed when the last test running lets go of it (the backend finalizes the module then); a
//! test that starts later makes a new one. Each test works in its own token, so they run in
//! parallel.

#![cfg(feature = "pkcs11")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;
use keyshift_crypto::digest::{sha256, sha384, sha512};
use keyshift_crypto::pkcs11::{PinSource, Pkcs11Backend, Pkcs11Config};
use keyshift_crypto::{
    encrypt_with_public, verify_with_public, CryptoError, Curve, EncryptionAlgorithm as E,
    HsmBackend, HsmKey, HsmKeyRef, HsmKeySpec, JwkParts, KeyFamily, KeyMaterial, PublicKey,
    SignatureAlgorithm as S,
};

const MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];
const PIN: &str = "4321-test-user";
const SO_PIN: &str = "87654321";
/// The environment variable a test reads the PIN from (set with the SoftHSM2 set-up).
const PIN_ENV: &str = "KEYSHIFT_TEST_PKCS11_PIN";
/// One token per test, all made when the set-up is.
const TOKENS: &[&str] = &[
    "rsa", "ec", "oct", "extract", "destroy", "misuse", "pin", "pool", "open", "known", "import",
    "release",
];

/// The SoftHSM2 set-up the running tests share: a configuration and token directory of its own.
struct SoftHsm {
    dir: tempfile::TempDir,
    module: PathBuf,
}

static CURRENT: Mutex<Weak<SoftHsm>> = Mutex::new(Weak::new());

fn module_path() -> Option<PathBuf> {
    match std::env::var_os("KEYSHIFT_PKCS11_MODULE") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => MODULE_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|path| path.is_file()),
    }
}

fn softhsm2_util_present() -> bool {
    Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The shared set-up, or `None` (with a message) when SoftHSM2 is not installed; panics then if
/// `KEYSHIFT_E2E_REQUIRE_SOFTHSM` is set.
fn softhsm() -> Option<Arc<SoftHsm>> {
    let module = module_path();
    if module.is_none() || !softhsm2_util_present() {
        let reason = format!(
            "SoftHSM2 is not installed (softhsm2-util, and its module in {} or \
             $KEYSHIFT_PKCS11_MODULE; apt-get install softhsm2)",
            MODULE_PATHS.join(", ")
        );
        if std::env::var_os("KEYSHIFT_E2E_REQUIRE_SOFTHSM").is_some_and(|v| !v.is_empty()) {
            panic!("{reason}, and KEYSHIFT_E2E_REQUIRE_SOFTHSM is set");
        }
        eprintln!("skipped: {reason}");
        return None;
    }
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(shared) = current.upgrade() {
        return Some(shared);
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    for label in TOKENS {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", PIN])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // No backend is open now (none outlives the set-up it was made in), so the module is not
    // initialized: the next C_Initialize reads this configuration.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    std::env::set_var(PIN_ENV, PIN);
    let shared = Arc::new(SoftHsm {
        dir,
        module: module.unwrap(),
    });
    *current = Arc::downgrade(&shared);
    Some(shared)
}

impl SoftHsm {
    fn pin_file(&self, pin: &str) -> PathBuf {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let path = self
            .dir
            .path()
            .join(format!("pin-{}", COUNT.fetch_add(1, Ordering::SeqCst)));
        std::fs::write(&path, format!("{pin}\n")).unwrap();
        path
    }

    fn config(&self, token: &str) -> Pkcs11Config {
        assert!(TOKENS.contains(&token), "add {token:?} to TOKENS");
        Pkcs11Config::new(&self.module, token, PinSource::Env(PIN_ENV.into()))
    }

    fn backend(&self, token: &str) -> Pkcs11Backend {
        Pkcs11Backend::connect(&self.config(token)).unwrap()
    }
}

/// A session of the test's own on the token, straight through cryptoki, to look at objects the
/// way any PKCS#11 application could. The backend of the same process holds the login (PKCS#11
/// login is per application), so this session is logged in as the user too: what it cannot read,
/// no one with the PIN can.
struct RawToken {
    session: Session,
    _pkcs11: Pkcs11,
}

fn raw_token(module: &Path, label: &str) -> RawToken {
    let pkcs11 = Pkcs11::new(module).unwrap();
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => panic!("a backend should have initialized the module already"),
        Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("{e}"),
    }
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).unwrap().label() == label)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    // Never finalized here: the backend's module is the same library.
    RawToken {
        session,
        _pkcs11: pkcs11,
    }
}

fn digest_for(alg: S, message: &[u8]) -> Vec<u8> {
    match alg.digest_len() {
        32 => sha256(message).to_vec(),
        48 => sha384(message).to_vec(),
        _ => sha512(message).to_vec(),
    }
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x01;
    out
}

fn is_unsupported_naming(result: &Result<impl std::fmt::Debug, CryptoError>, what: &str) -> bool {
    matches!(result, Err(CryptoError::Unsupported(m)) if m.contains(what))
}

#[test]
fn rsa_keys_sign_decrypt_and_unwrap_in_the_token() {
    let Some(hsm) = softhsm() else { return };
    let backend = hsm.backend("rsa");
    for bits in [2048u32, 3072] {
        let key = backend
            .generate(HsmKeySpec::Rsa { bits }, &format!("rsa-{bits}"))
            .unwrap();
        assert_eq!((key.family(), key.size_bits()), (KeyFamily::Rsa, bits));
        assert_eq!(key.label, format!("rsa-{bits}"));
        let PublicKey::Rsa { e, .. } = &key.public else {
            panic!("{:?}", key.public)
        };
        assert_eq!(e, &[1, 0, 1]);
        assert_eq!(backend.open(&key.reference).unwrap(), key);

        // Signed in the token, verified in software with the public part only.
        for alg in [S::Rs256, S::Rs384, S::Rs512, S::Ps256, S::Ps384, S::Ps512] {
            let digest = digest_for(alg, format!("message {bits}").as_bytes());
            let signature = backend.sign(&key, alg, &digest).unwrap();
            assert_eq!(signature.len(), bits as usize / 8, "{}", alg.name());
            assert!(
                verify_with_public(&key.public, alg, &digest, &signature).unwrap(),
                "{} {bits}",
                alg.name()
            );
            assert!(backend.verify(&key, alg, &digest, &signature).unwrap());
            let other = digest_for(alg, b"another message");
            assert!(!verify_with_public(&key.public, alg, &other, &signature).unwrap());
            assert!(!backend
                .verify(&key, alg, &digest, &flipped(&signature, 9))
                .unwrap());
        }
        // PKCS#1 v1.5 is deterministic: the token's signature is the one the standard defines,
        // byte for byte, whatever the verifier; PSS is randomized.
        let digest = sha256(b"deterministic");
        assert_eq!(
            backend.sign(&key, S::Rs256, &digest).unwrap(),
            backend.sign(&key, S::Rs256, &digest).unwrap()
        );
        assert_ne!(
            backend.sign(&key, S::Ps256, &digest).unwrap(),
            backend.sign(&key, S::Ps256, &digest).unwrap()
        );

        let secret = b"a 32-byte data encryption key..";
        for alg in [E::RsaOaep, E::Rsa1_5, E::RsaOaep256] {
            // Encrypted in software with the public key, decrypted in the token.
            let software = encrypt_with_public(&key.public, alg, secret).unwrap();
            let decrypted = backend.decrypt(&key, alg, &software, None, None, None);
            if alg == E::RsaOaep256 {
                // SoftHSM2 2.6.1 does OAEP with SHA-1 only; a token that can, must get it right.
                if is_unsupported_naming(&decrypted, "CKM_RSA_PKCS_OAEP (SHA-256, MGF1-SHA-256)") {
                    assert!(is_unsupported_naming(
                        &backend.encrypt(&key, alg, secret, None, None),
                        "CKM_RSA_PKCS_OAEP (SHA-256"
                    ));
                    assert!(is_unsupported_naming(
                        &backend.unwrap_key(&key, alg, &software),
                        "SHA-256"
                    ));
                    continue;
                }
            }
            assert_eq!(decrypted.unwrap().as_slice(), secret, "{}", alg.name());

            // Encrypted in the token (randomized padding), decrypted in the token.
            let out = backend.encrypt(&key, alg, secret, None, None).unwrap();
            assert_eq!((out.iv, out.tag), (None, None));
            assert_eq!(out.ciphertext.len(), bits as usize / 8);
            assert_ne!(out.ciphertext, software);
            let back = backend
                .decrypt(&key, alg, &out.ciphertext, None, None, None)
                .unwrap();
            assert_eq!(back.as_slice(), secret);

            // wrapKey in the token, unwrapKey in the token.
            let wrapped = backend.wrap_key(&key, alg, secret).unwrap();
            let unwrapped = backend.unwrap_key(&key, alg, &wrapped).unwrap();
            assert_eq!(unwrapped.as_slice(), secret);
            let unwrapped = backend.unwrap_key(&key, alg, &software).unwrap();
            assert_eq!(unwrapped.as_slice(), secret);

            // A tampered ciphertext does not decrypt (PKCS#1 v1.5 may, rarely, unpad to
            // something else: never to the secret).
            let tampered = flipped(&out.ciphertext, 20);
            match backend.decrypt(&key, alg, &tampered, None, None, None) {
                Err(CryptoError::DecryptionFailed) => {}
                Ok(other) if alg == E::Rsa1_5 => assert_ne!(other.as_slice(), secret),
                other => panic!("{} tampered: {other:?}", alg.name()),
            }
            // Wrong lengths are the caller's error, found before the token is asked.
            assert!(matches!(
                backend.decrypt(&key, alg, &out.ciphertext[1..], None, None, None),
                Err(CryptoError::InvalidInput(_))
            ));
            assert!(matches!(
                backend.encrypt(&key, alg, &vec![0u8; bits as usize / 8], None, None),
                Err(CryptoError::InvalidInput(_))
            ));
            assert!(matches!(
                backend.encrypt(&key, alg, secret, Some(&[0; 12]), None),
                Err(CryptoError::InvalidInput(_))
            ));
        }
        // Algorithms of other key types.
        for alg in [E::A256Gcm, E::A256Kw, E::A128CbcPad] {
            assert!(matches!(
                backend.encrypt(&key, alg, secret, None, None),
                Err(CryptoError::AlgorithmMismatch(_))
            ));
        }
        assert!(matches!(
            backend.sign(&key, S::Es256, &sha256(b"m")),
            Err(CryptoError::AlgorithmMismatch(_))
        ));
        assert!(matches!(
            backend.sign(&key, S::Rs256, &sha384(b"m")),
            Err(CryptoError::InvalidInput(_))
        ));
        backend.destroy(&key.reference).unwrap();
    }
}

#[test]
fn ec_keys_sign_in_the_token() {
    let Some(hsm) = softhsm() else { return };
    let backend = hsm.backend("ec");
    for (curve, alg) in [
        (Curve::P256, S::Es256),
        (Curve::P384, S::Es384),
        (Curve::P521, S::Es512),
        (Curve::P256K, S::Es256K),
    ] {
        let key = match backend.generate(HsmKeySpec::Ec { curve }, curve.jwk_name()) {
            Ok(key) => key,
            // A token without secp256k1 must say so, naming the curve.
            Err(CryptoError::Unsupported(m)) if curve == Curve::P256K => {
                assert!(m.contains("CKM_EC_KEY_PAIR_GEN on P-256K"), "{m}");
                eprintln!("this token has no secp256k1: {m}");
                continue;
            }
            Err(e) => panic!("{}: {e}", curve.jwk_name()),
        };
        assert_eq!(key.curve(), Some(curve));
        assert_eq!(key.size_bits(), curve.field_bits());
        let PublicKey::Ec { x, y, .. } = &key.public else {
            panic!()
        };
        assert_eq!(
            (x.len(), y.len()),
            (curve.coordinate_len(), curve.coordinate_len())
        );
        assert_eq!(backend.open(&key.reference).unwrap(), key);

        let digest = digest_for(alg, curve.jwk_name().as_bytes());
        let signature = backend.sign(&key, alg, &digest).unwrap();
        assert_eq!(signature.len(), 2 * curve.coordinate_len());
        assert!(verify_with_public(&key.public, alg, &digest, &signature).unwrap());
        assert!(backend.verify(&key, alg, &digest, &signature).unwrap());
        assert!(!verify_with_public(&key.public, alg, &flipped(&digest, 0), &signature).unwrap());
        assert!(!verify_with_public(&key.public, alg, &digest, &flipped(&signature, 3)).unwrap());

        // ECDSA on another curve's algorithm, RSA algorithms, encryption: refused before the
        // token is asked.
        let other = if alg == S::Es384 { S::Es256 } else { S::Es384 };
        assert!(matches!(
            backend.sign(&key, other, &digest_for(other, b"m")),
            Err(CryptoError::AlgorithmMismatch(_))
        ));
        assert!(matches!(
            backend.sign(&key, S::Ps256, &sha256(b"m")),
            Err(CryptoError::AlgorithmMismatch(_))
        ));
        for alg in [E::RsaOaep, E::A256Gcm, E::A256Kw] {
            assert!(matches!(
                backend.encrypt(&key, alg, b"0123456789abcdef", None, None),
                Err(CryptoError::AlgorithmMismatch(_))
            ));
            assert!(matches!(
                backend.wrap_key(&key, alg, b"0123456789abcdef"),
                Err(CryptoError::AlgorithmMismatch(_))
            ));
        }
        backend.destroy(&key.reference).unwrap();
    }
}

#[test]
fn aes_keys_encrypt_and_wrap_in_the_token() {
    let Some(hsm) = softhsm() else { return };
    let backend = hsm.backend("oct");
    let data = b"The quick brown fox jumps over the lazy dog (43+)";
    for (bits, gcm, kw, kwp, cbc, cbc_pad) in [
        (
            128u32,
            E::A128Gcm,
            E::A128Kw,
            E::A128KwPad,
            E::A128Cbc,
            E::A128CbcPad,
        ),
        (
            192,
            E::A192Gcm,
            E::A192Kw,
            E::A192KwPad,
            E::A192Cbc,
            E::A192CbcPad,
        ),
        (
            256,
            E::A256Gcm,
            E::A256Kw,
            E::A256KwPad,
            E::A256Cbc,
            E::A256CbcPad,
        ),
    ] {
        let key = backend
            .generate(HsmKeySpec::Oct { bits }, &format!("aes-{bits}"))
            .unwrap();
        assert_eq!(key.public, PublicKey::Oct { bits });
        assert_eq!(backend.open(&key.reference).unwrap(), key);

        // AES-GCM: the token makes the IV when none is given; tag, IV, AAD and ciphertext are
        // all authenticated.
        let out = backend
            .encrypt(&key, gcm, data, None, Some(b"aad"))
            .unwrap();
        let (iv, tag) = (out.iv.clone().unwrap(), out.tag.clone().unwrap());
        assert_eq!(
            (iv.len(), tag.len(), out.ciphertext.len()),
            (12, 16, data.len())
        );
        let open = |ct: &[u8], iv: &[u8], aad: &[u8], tag: &[u8]| {
            backend.decrypt(&key, gcm, ct, Some(iv), Some(aad), Some(tag))
        };
        assert_eq!(
            open(&out.ciphertext, &iv, b"aad", &tag).unwrap().as_slice(),
            data
        );
        for bad in [
            open(&flipped(&out.ciphertext, 5), &iv, b"aad", &tag),
            open(&out.ciphertext, &iv, b"aad", &flipped(&tag, 15)),
            open(&out.ciphertext, &flipped(&iv, 0), b"aad", &tag),
            open(&out.ciphertext, &iv, b"aae", &tag),
        ] {
            assert_eq!(bad.unwrap_err(), CryptoError::DecryptionFailed);
        }
        // A given IV is used as given: the same IV gives the same ciphertext (CTR mode), another
        // IV another one.
        let again = backend
            .encrypt(&key, gcm, data, Some(&iv), Some(b"aad"))
            .unwrap();
        assert_eq!(
            (again.ciphertext, again.tag),
            (out.ciphertext.clone(), Some(tag))
        );
        let fresh = backend.encrypt(&key, gcm, data, None, None).unwrap();
        assert_ne!(fresh.iv.as_deref(), Some(iv.as_slice()));
        assert!(matches!(
            backend.decrypt(&key, gcm, &out.ciphertext, Some(&iv), None, None),
            Err(CryptoError::InvalidInput(_))
        ));

        // AES-CBC and AES-CBC-PAD, cross-checked: CBC-PAD of P is CBC of P with its PKCS#7
        // padding, and the last block changes nothing before it.
        let cbc_iv = [0x42u8; 16];
        let padded_len = (data.len() / 16 + 1) * 16;
        let pad = (padded_len - data.len()) as u8;
        let mut padded = data.to_vec();
        padded.resize(padded_len, pad);
        let with_pad = backend
            .encrypt(&key, cbc_pad, data, Some(&cbc_iv), None)
            .unwrap();
        let by_hand = backend
            .encrypt(&key, cbc, &padded, Some(&cbc_iv), None)
            .unwrap();
        assert_eq!(with_pad.ciphertext, by_hand.ciphertext);
        assert_eq!(with_pad.iv.as_deref(), Some(cbc_iv.as_slice()));
        let back = backend
            .decrypt(
                &key,
                cbc_pad,
                &with_pad.ciphertext,
                Some(&cbc_iv),
                None,
                None,
            )
            .unwrap();
        assert_eq!(back.as_slice(), data);
        let back = backend
            .decrypt(&key, cbc, &by_hand.ciphertext, Some(&cbc_iv), None, None)
            .unwrap();
        assert_eq!(back.as_slice(), padded.as_slice());
        // CBC has no integrity: a flipped bit gives other plaintext, or bad padding.
        let last = with_pad.ciphertext.len() - 20;
        match backend.decrypt(
            &key,
            cbc_pad,
            &flipped(&with_pad.ciphertext, last),
            Some(&cbc_iv),
            None,
            None,
        ) {
            Err(CryptoError::DecryptionFailed) => {}
            Ok(other) => assert_ne!(other.as_slice(), data),
            Err(e) => panic!("{e}"),
        }
        assert!(matches!(
            backend.encrypt(&key, cbc, data, Some(&cbc_iv), None),
            Err(CryptoError::InvalidInput(_))
        ));
        assert!(matches!(
            backend.encrypt(&key, cbc_pad, data, None, None),
            Err(CryptoError::InvalidInput(_))
        ));

        // Key wrap (RFC 3394) and with padding (RFC 5649), wrapped and unwrapped in the token.
        // KW is deterministic: the sized name and CKM_AES_KEY_WRAP are the same algorithm.
        let dek = [0x5au8; 32];
        for (alg, any_size) in [(kw, E::CkmAesKeyWrap), (kwp, E::CkmAesKeyWrapPad)] {
            let wrapped = backend.wrap_key(&key, alg, &dek).unwrap();
            assert_eq!(wrapped.len(), 40);
            assert_eq!(backend.wrap_key(&key, any_size, &dek).unwrap(), wrapped);
            // encrypt/decrypt with a key-wrap algorithm is wrap/unwrap.
            let out = backend.encrypt(&key, alg, &dek, None, None).unwrap();
            assert_eq!(out.ciphertext, wrapped);
            assert_eq!(
                backend.unwrap_key(&key, alg, &wrapped).unwrap().as_slice(),
                &dek
            );
            assert_eq!(
                backend
                    .decrypt(&key, any_size, &wrapped, None, None, None)
                    .unwrap()
                    .as_slice(),
                &dek
            );
            for at in [0, 17, 39] {
                assert_eq!(
                    backend.unwrap_key(&key, alg, &flipped(&wrapped, at)),
                    Err(CryptoError::DecryptionFailed),
                    "{} tampered at {at}",
                    alg.name()
                );
            }
        }
        assert_ne!(
            backend.wrap_key(&key, kw, &dek).unwrap(),
            backend.wrap_key(&key, kwp, &dek).unwrap()
        );
        // Padding lets KWP take any length (where the token does it right: see
        // aes_in_the_token_matches_software_with_a_known_key); KW needs multiples of 8 from 16.
        for len in [1usize, 7, 8, 20, 24, 33] {
            let short: Vec<u8> = (0..len as u8).collect();
            match backend.wrap_key(&key, kwp, &short) {
                Ok(wrapped) => assert_eq!(
                    backend.unwrap_key(&key, kwp, &wrapped).unwrap().as_slice(),
                    short.as_slice()
                ),
                Err(CryptoError::Unsupported(_)) if len % 8 != 0 => {}
                Err(e) => panic!("{len}: {e}"),
            }
            if len < 16 || len % 8 != 0 {
                assert!(matches!(
                    backend.wrap_key(&key, kw, &short),
                    Err(CryptoError::InvalidInput(_))
                ));
            }
        }

        // Wrong sizes and types: an A256 algorithm on a 128-bit key, RSA, signing.
        let wrong = if bits == 256 { E::A128Gcm } else { E::A256Gcm };
        assert!(matches!(
            backend.encrypt(&key, wrong, data, None, None),
            Err(CryptoError::AlgorithmMismatch(_))
        ));
        assert!(matches!(
            backend.wrap_key(&key, E::RsaOaep, &dek),
            Err(CryptoError::AlgorithmMismatch(_))
        ));
        assert!(matches!(
            backend.wrap_key(&key, gcm, &dek),
            Err(CryptoError::AlgorithmMismatch(_))
        ));
        assert!(matches!(
            backend.sign(&key, S::Es256, &sha256(b"m")),
            Err(CryptoError::AlgorithmMismatch(_))
        ));
        backend.destroy(&key.reference).unwrap();
    }
}

/// What PKCS#11 gives of each key: no secret attribute, no wrap, no way to turn the flags back.
#[test]
fn key_material_cannot_leave_the_token() {
    let Some(hsm) = softhsm() else { return };
    let backend = hsm.backend("extract");
    let rsa = backend
        .generate(HsmKeySpec::Rsa { bits: 2048 }, "rsa")
        .unwrap();
    let ec = backend
        .generate(HsmKeySpec::Ec { curve: Curve::P256 }, "ec")
        .unwrap();
    let aes = backend
        .generate(HsmKeySpec::Oct { bits: 256 }, "aes")
        .unwrap();
    let raw = raw_token(&hsm.module, "extract");
    let session = &raw.session;

    // An extractable AES key of the test's own, the kind C_WrapKey needs to take a key out.
    let wrapper = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32u64.into()),
                Attribute::Token(false),
                Attribute::Wrap(true),
                Attribute::Extractable(true),
            ],
        )
        .unwrap();

    let secret_attributes: &[(&HsmKey, ObjectClass, &[AttributeType])] = &[
        (
            &rsa,
            ObjectClass::PRIVATE_KEY,
            &[
                AttributeType::PrivateExponent,
                AttributeType::Prime1,
                AttributeType::Prime2,
                AttributeType::Exponent1,
                AttributeType::Exponent2,
                AttributeType::Coefficient,
            ],
        ),
        (&ec, ObjectClass::PRIVATE_KEY, &[AttributeType::Value]),
        (&aes, ObjectClass::SECRET_KEY, &[AttributeType::Value]),
    ];
    for (key, class, secrets) in secret_attributes {
        let found = session
            .find_objects(&[
                Attribute::Class(*class),
                Attribute::Id(key.reference.as_bytes().to_vec()),
            ])
            .unwrap();
        let [object] = found.as_slice() else {
            panic!("{found:?}")
        };
        let object = *object;

        // Made as the backend says.
        let flags = session
            .get_attributes(
                object,
                &[
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Local,
                    AttributeType::Derive,
                ],
            )
            .unwrap();
        for expected in [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(true),
            Attribute::Local(true),
            Attribute::Derive(false),
        ] {
            assert!(
                flags.contains(&expected),
                "{:?}: {expected:?} in {flags:?}",
                key.family()
            );
        }

        // Reading the secret parts: sensitive, and nothing comes back.
        for attribute in *secrets {
            let info = session.get_attribute_info(object, &[*attribute]).unwrap();
            assert!(
                matches!(info.as_slice(), [AttributeInfo::Sensitive]),
                "{:?} {attribute:?}: {info:?}",
                key.family()
            );
            assert!(session
                .get_attributes(object, &[*attribute])
                .unwrap()
                .is_empty());
        }

        // Wrapping it out with a key the caller holds.
        for mechanism in [Mechanism::AesKeyWrapPad, Mechanism::AesKeyWrap] {
            match session.wrap_key(&mechanism, wrapper, object) {
                Err(Pkcs11Error::Pkcs11(RvError::KeyUnextractable, _)) => {}
                other => panic!("{:?} wrapped: {other:?}", key.family()),
            }
        }

        // Turning the flags back.
        for flip in [Attribute::Extractable(true), Attribute::Sensitive(false)] {
            match session.update_attributes(object, std::slice::from_ref(&flip)) {
                Err(Pkcs11Error::Pkcs11(RvError::AttributeReadOnly, _)) => {}
                other => panic!("{:?} {flip:?}: {other:?}", key.family()),
            }
        }
        // Nor by copying it into an object that would be extractable.
        match session.copy_object(object, &[Attribute::Extractable(true)]) {
            Err(Pkcs11Error::Pkcs11(
                RvError::AttributeReadOnly
                | RvError::TemplateInconsistent
                | RvError::ActionProhibited,
                _,
            )) => {}
            Ok(copy) => {
                let copied = session
                    .get_attributes(copy, &[AttributeType::Extractable])
                    .unwrap();
                session.destroy_object(copy).unwrap();
                panic!("{:?} copied as {copied:?}", key.family());
            }
            Err(e) => panic!("{:?} copy: {e}", key.family()),
        }
        let still = session
            .get_attributes(
                object,
                &[AttributeType::Sensitive, AttributeType::Extractable],
            )
            .unwrap();
        assert_eq!(
            still,
            vec![Attribute::Sensitive(true), Attribute::Extractable(false)]
        );
    }
    // And the keys still work after all that.
    let digest = sha256(b"still here");
    let signature = backend.sign(&ec, S::Es256, &digest).unwrap();
    assert!(verify_with_public(&ec.public, S::Es256, &digest, &signature).unwrap());
    session.destroy_object(wrapper).unwrap();
    for key in [&rsa, &ec, &aes] {
        backend.destroy(&key.reference).unwrap();
    }
}

#[test]
fn destroyed_keys_are_gone() {
    let Some(hsm) = softhsm() else { return };
    let backend = hsm.backend("destroy");
    let rsa = backend
        .generate(HsmKeySpec::Rsa { bits: 2048 }, "rsa")
        .unwrap();
    let aes = backend
        .generate(HsmKeySpec::Oct { bits: 128 }, "aes")
        .unwrap();
    backend.destroy(&rsa.reference).unwrap();
    backend.destroy(&aes.reference).unwrap();

    let gone = |result: Result<(), CryptoError>| {
        assert!(
            matches!(result, Err(CryptoError::KeyNotFound(_))),
            "{result:?}"
        )
    };
    gone(backend.sign(&rsa, S::Rs256, &sha256(b"m")).map(drop));
    gone(
        backend
            .decrypt(&rsa, E::RsaOaep, &[1; 256], None, None, None)
            .map(drop),
    );
    gone(
        backend
            .encrypt(&rsa, E::RsaOaep, b"m", None, None)
            .map(drop),
    );
    gone(backend.wrap_key(&aes, E::A128Kw, &[1; 16]).map(drop));
    gone(
        backend
            .encrypt(&aes, E::A128Gcm, b"m", None, None)
            .map(drop),
    );
    gone(backend.open(&rsa.reference).map(drop));
    gone(backend.destroy(&aes.reference));
    // Nothing of either is left in the token, public key included.
    let raw = raw_token(&hsm.module, "destroy");
    for key in [&rsa, &aes] {
        let left = raw
            .session
            .find_objects(&[Attribute::Id(key.reference.as_bytes().to_vec())])
            .unwrap();
        assert!(left.is_empty());
    }
    // A reference the token never had.
    gone(
        backend
            .open(&HsmKeyRef::from_hex("00112233").unwrap())
            .map(drop),
    );
    // The stored description of one key does not open another type of key with its reference.
    let ec = backend
        .generate(HsmKeySpec::Ec { curve: Curve::P384 }, "ec")
        .unwrap();
    let posing = HsmKey {
        public: rsa.public.clone(),
        ..ec.clone()
    };
    gone(backend.sign(&posing, S::Rs256, &sha256(b"m")).map(drop));
    backend.destroy(&ec.reference).unwrap();
}

#[test]
fn misuse_is_refused_with_the_crates_errors() {
    let Some(hsm) = softhsm() else { return };
    let backend = hsm.backend("misuse");
    // Sizes the vault does not offer never reach the token.
    for spec in [
        HsmKeySpec::Rsa { bits: 1024 },
        HsmKeySpec::Oct { bits: 64 },
        HsmKeySpec::Oct { bits: 512 },
    ] {
        assert!(matches!(
            backend.generate(spec, "bad"),
            Err(CryptoError::InvalidInput(_))
        ));
    }
    let aes = backend
        .generate(HsmKeySpec::Oct { bits: 256 }, "aes")
        .unwrap();
    // AES-GCM with an IV of another length, CBC with a short IV, a key wrap input of odd size.
    assert!(matches!(
        backend.encrypt(&aes, E::A256Gcm, b"m", Some(&[0; 16]), None),
        Err(CryptoError::InvalidInput(_))
    ));
    assert!(matches!(
        backend.encrypt(&aes, E::A256Cbc, &[0; 16], Some(&[0; 12]), None),
        Err(CryptoError::InvalidInput(_))
    ));
    assert!(matches!(
        backend.unwrap_key(&aes, E::A256Kw, &[0; 20]),
        Err(CryptoError::InvalidInput(_))
    ));
    assert!(matches!(
        backend.decrypt(&aes, E::A256CbcPad, &[0; 15], Some(&[0; 16]), None, None),
        Err(CryptoError::InvalidInput(_))
    ));
    backend.destroy(&aes.reference).unwrap();
}

#[test]
fn the_pin_comes_from_a_file_or_the_environment_and_must_be_right() {
    let Some(hsm) = softhsm() else { return };
    let mut config = hsm.config("pin");

    // From a file, with the newline `echo` leaves.
    config.pin = PinSource::File(hsm.pin_file(PIN));
    let from_file = Pkcs11Backend::connect(&config).unwrap();
    assert_eq!(from_file.token_label(), "pin");
    drop(from_file);

    // Wrong: the token says so, and the message does not carry the PIN.
    config.pin = PinSource::File(hsm.pin_file("0000-wrong"));
    let err = Pkcs11Backend::connect(&config).unwrap_err();
    let CryptoError::Backend(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("CKR_PIN_INCORRECT"), "{message}");
    assert!(!message.contains("0000-wrong") && !message.contains(PIN));

    // Missing file, unset or empty variable: refused before the module is loaded.
    config.pin = PinSource::File(hsm.dir.path().join("no-such-pin"));
    assert!(
        matches!(Pkcs11Backend::connect(&config), Err(CryptoError::Backend(m)) if m.contains("PIN file"))
    );
    config.pin = PinSource::Env("KEYSHIFT_TEST_PKCS11_PIN_NEVER_SET".into());
    assert!(
        matches!(Pkcs11Backend::connect(&config), Err(CryptoError::Backend(m)) if m.contains("KEYSHIFT_TEST_PKCS11_PIN_NEVER_SET"))
    );
    config.pin = PinSource::File(hsm.pin_file(""));
    assert!(
        matches!(Pkcs11Backend::connect(&config), Err(CryptoError::Backend(m)) if m.contains("empty"))
    );

    // From the environment.
    config.pin = PinSource::Env(PIN_ENV.into());
    let backend = Pkcs11Backend::connect(&config).unwrap();
    let key = backend
        .generate(HsmKeySpec::Oct { bits: 128 }, "k")
        .unwrap();
    backend.destroy(&key.reference).unwrap();

    // An unknown token: the message lists the ones there are.
    let mut unknown = hsm.config("pin");
    unknown.token_label = "no-such-token".into();
    let err = Pkcs11Backend::connect(&unknown).unwrap_err();
    let CryptoError::Backend(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("no token labelled \"no-such-token\"") && message.contains("\"pin\""),
        "{message}"
    );

    // A module that is not there.
    let mut missing = hsm.config("pin");
    missing.module = hsm.dir.path().join("libnothing.so");
    assert!(
        matches!(Pkcs11Backend::connect(&missing), Err(CryptoError::Backend(m)) if m.contains("cannot load the PKCS#11 module"))
    );
}

/// Many threads share a backend whose pool is smaller than they are; a pool that stays busy
/// past its wait says so instead of hanging.
#[test]
fn sessions_are_pooled_across_threads() {
    let Some(hsm) = softhsm() else { return };
    let mut config = hsm.config("pool");
    config.max_sessions = 2;
    let backend = Arc::new(Pkcs11Backend::connect(&config).unwrap());
    let ec = backend
        .generate(HsmKeySpec::Ec { curve: Curve::P256 }, "ec")
        .unwrap();
    let aes = backend
        .generate(HsmKeySpec::Oct { bits: 256 }, "aes")
        .unwrap();
    let threads: Vec<_> = (0..8u8)
        .map(|i| {
            let (backend, ec, aes) = (backend.clone(), ec.clone(), aes.clone());
            std::thread::spawn(move || {
                for j in 0..10u8 {
                    let digest = sha256(&[i, j]);
                    let signature = backend.sign(&ec, S::Es256, &digest).unwrap();
                    assert!(verify_with_public(&ec.public, S::Es256, &digest, &signature).unwrap());
                    let out = backend
                        .encrypt(&aes, E::A256Gcm, &[i, j], None, None)
                        .unwrap();
                    let back = backend
                        .decrypt(
                            &aes,
                            E::A256Gcm,
                            &out.ciphertext,
                            out.iv.as_deref(),
                            None,
                            out.tag.as_deref(),
                        )
                        .unwrap();
                    assert_eq!(back.as_slice(), &[i, j]);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    backend.destroy(&ec.reference).unwrap();
    backend.destroy(&aes.reference).unwrap();

    // One session, held by a slow caller (RSA-4096 generation takes SoftHSM2 seconds): a caller
    // that comes meanwhile gives up after the wait, saying why.
    config.max_sessions = 1;
    config.session_wait = Duration::from_millis(100);
    let small = Arc::new(Pkcs11Backend::connect(&config).unwrap());
    let key = small.generate(HsmKeySpec::Oct { bits: 128 }, "k").unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let busy = {
        let (small, done) = (small.clone(), done.clone());
        std::thread::spawn(move || {
            for _ in 0..10 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let made = small
                    .generate(HsmKeySpec::Rsa { bits: 4096 }, "slow")
                    .unwrap();
                small.destroy(&made.reference).unwrap();
            }
        })
    };
    let mut answer = None;
    while !busy.is_finished() {
        match small.encrypt(&key, E::A128Gcm, b"m", None, None) {
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => {
                answer = Some(e);
                break;
            }
        }
    }
    done.store(true, Ordering::SeqCst);
    busy.join().unwrap();
    match answer {
        Some(CryptoError::Backend(m)) => assert!(m.contains("all 1 sessions stayed busy"), "{m}"),
        other => panic!("a caller of a busy one-session pool got {other:?}"),
    }
    // The pool works again once the session is back.
    assert!(small.encrypt(&key, E::A128Gcm, b"m", None, None).is_ok());
    small.destroy(&key.reference).unwrap();
}

/// Keys outlive the backend that made them: a new backend (a restart) opens them by reference.
#[test]
fn keys_are_opened_again_by_reference() {
    let Some(hsm) = softhsm() else { return };
    let (reference, public, signature, digest) = {
        let backend = hsm.backend("open");
        let key = backend
            .generate(
                HsmKeySpec::Ec { curve: Curve::P384 },
                "keyshift/vault/key/version",
            )
            .unwrap();
        let digest = sha384(b"before the restart");
        let signature = backend.sign(&key, S::Es384, &digest).unwrap();
        (key.reference.to_string(), key.public, signature, digest)
    };
    // The store kept the reference as text and the public part.
    let backend = hsm.backend("open");
    let key = backend
        .open(&HsmKeyRef::from_hex(&reference).unwrap())
        .unwrap();
    assert_eq!(key.public, public);
    assert_eq!(key.label, "keyshift/vault/key/version");
    assert!(verify_with_public(&key.public, S::Es384, &digest, &signature).unwrap());
    let again = backend.sign(&key, S::Es384, &digest).unwrap();
    assert!(verify_with_public(&public, S::Es384, &digest, &again).unwrap());
    backend.destroy(&key.reference).unwrap();
}

/// An AES key of known value put into the token (as an operator would import one) gives, through
/// the backend, exactly what the software implementation gives with the same key: the token's
/// modes are the standard ones, byte for byte.
#[test]
fn aes_in_the_token_matches_software_with_a_known_key() {
    let Some(hsm) = softhsm() else { return };
    let backend = hsm.backend("known");
    let raw = raw_token(&hsm.module, "known");
    for (bits, gcm, kw, kwp, cbc_pad) in [
        (128u32, E::A128Gcm, E::A128Kw, E::A128KwPad, E::A128CbcPad),
        (192, E::A192Gcm, E::A192Kw, E::A192KwPad, E::A192CbcPad),
        (256, E::A256Gcm, E::A256Kw, E::A256KwPad, E::A256CbcPad),
    ] {
        let value: Vec<u8> = (0..(bits / 8) as u8)
            .map(|i| i.wrapping_mul(37) ^ 0xa5)
            .collect();
        let id = vec![0xee, (bits / 8) as u8];
        raw.session
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Id(id.clone()),
                Attribute::Label(b"imported".to_vec()),
                Attribute::Value(value.clone()),
            ])
            .unwrap();
        let key = backend.open(&HsmKeyRef::from_bytes(&id).unwrap()).unwrap();
        assert_eq!(key.public, PublicKey::Oct { bits });
        let mut parts = JwkParts::default();
        parts.family = Some(KeyFamily::Oct);
        parts.k = Some(value);
        let software = KeyMaterial::from_jwk(&parts).unwrap();

        let data = b"known-answer plaintext, 37 bytes....";
        let iv = [7u8; 12];
        let token = backend
            .encrypt(&key, gcm, data, Some(&iv), Some(b"aad"))
            .unwrap();
        let soft = software
            .encrypt(gcm, data, Some(&iv), Some(b"aad"))
            .unwrap();
        assert_eq!(token, soft, "{}", gcm.name());
        let cbc_iv = [9u8; 16];
        let token = backend
            .encrypt(&key, cbc_pad, data, Some(&cbc_iv), None)
            .unwrap();
        let soft = software
            .encrypt(cbc_pad, data, Some(&cbc_iv), None)
            .unwrap();
        assert_eq!(token, soft, "{}", cbc_pad.name());
        for len in [16usize, 24, 32, 40] {
            let dek: Vec<u8> = (0..len as u8).collect();
            let token = backend.wrap_key(&key, kw, &dek).unwrap();
            assert_eq!(
                token,
                software.wrap_key(kw, &dek).unwrap(),
                "{} {len}",
                kw.name()
            );
        }
        for len in [1usize, 7, 8, 9, 16, 20, 32, 33] {
            let dek: Vec<u8> = (0..len as u8).collect();
            let soft = software.wrap_key(kwp, &dek).unwrap();
            // The token unwraps RFC 5649 from software, any length.
            let unwrapped = backend.unwrap_key(&key, kwp, &soft).unwrap();
            assert_eq!(unwrapped.as_slice(), dek.as_slice(), "{} {len}", kwp.name());
            // It wraps the same bytes software does, or says it cannot: SoftHSM2 2.6 wraps
            // lengths that are not a multiple of 8 wrongly, and the backend refuses those on it.
            match backend.wrap_key(&key, kwp, &dek) {
                Ok(token) => assert_eq!(token, soft, "{} {len}", kwp.name()),
                Err(CryptoError::Unsupported(m)) if len % 8 != 0 => {
                    assert!(m.contains("CKM_AES_KEY_WRAP_PAD"), "{m}")
                }
                Err(e) => panic!("{} {len}: {e}", kwp.name()),
            }
        }
        // Key wrap in software, unwrapped in the token; tampered, refused.
        let dek = [0x11u8; 32];
        let soft = software.wrap_key(kw, &dek).unwrap();
        assert_eq!(
            backend.unwrap_key(&key, kw, &soft).unwrap().as_slice(),
            &dek
        );
        assert_eq!(
            backend.unwrap_key(&key, kw, &flipped(&soft, 8)),
            Err(CryptoError::DecryptionFailed)
        );
        // Software AES-GCM opened in the token.
        let soft = software.encrypt(gcm, data, None, Some(b"aad")).unwrap();
        let opened = backend
            .decrypt(
                &key,
                gcm,
                &soft.ciphertext,
                soft.iv.as_deref(),
                Some(b"aad"),
                soft.tag.as_deref(),
            )
            .unwrap();
        assert_eq!(opened.as_slice(), data);
        backend.destroy(&key.reference).unwrap();
    }
}

#[test]
fn imported_keys_work_in_the_token_and_stay_there() {
    let Some(hsm) = softhsm() else { return };
    let backend = hsm.backend("import");
    let rsa = KeyMaterial::generate_rsa(2048).unwrap();
    let ec = KeyMaterial::generate_ec(Curve::P384).unwrap();
    let oct = KeyMaterial::generate_oct(256).unwrap();

    // RSA: the token signs and decrypts with the imported private key.
    let key = backend.import(&rsa, "imported-rsa", false).unwrap();
    assert_eq!(key.public, rsa.public_key());
    assert_eq!(key.label, "imported-rsa");
    let digest = sha256(b"imported");
    let signature = backend.sign(&key, S::Rs256, &digest).unwrap();
    assert!(verify_with_public(&rsa.public_key(), S::Rs256, &digest, &signature).unwrap());
    let wrapped = rsa.wrap_key(E::RsaOaep, &[9; 32]).unwrap();
    assert_eq!(
        backend
            .unwrap_key(&key, E::RsaOaep, &wrapped)
            .unwrap()
            .as_slice(),
        &[9; 32]
    );
    // The token encrypts with the imported public half; software opens it.
    let out = backend
        .encrypt(&key, E::Rsa1_5, b"to software", None, None)
        .unwrap();
    assert_eq!(
        rsa.decrypt(E::Rsa1_5, &out.ciphertext, None, None, None)
            .unwrap()
            .as_slice(),
        b"to software"
    );
    assert_eq!(backend.open(&key.reference).unwrap(), key);

    // EC: a signature the software public key verifies.
    let key = backend.import(&ec, "imported-ec", false).unwrap();
    assert_eq!(key.public, ec.public_key());
    let digest = sha384(b"imported");
    let signature = backend.sign(&key, S::Es384, &digest).unwrap();
    assert!(verify_with_public(&ec.public_key(), S::Es384, &digest, &signature).unwrap());

    // AES: what the token wraps, software unwraps with the same key.
    let key = backend.import(&oct, "imported-oct", false).unwrap();
    let wrapped = backend.wrap_key(&key, E::A256Kw, &[5; 32]).unwrap();
    assert_eq!(
        oct.unwrap_key(E::A256Kw, &wrapped).unwrap().as_slice(),
        &[5; 32]
    );

    // Imported keys are as unreadable as generated ones.
    let raw = raw_token(&hsm.module, "import");
    let handles = raw
        .session
        .find_objects(&[
            Attribute::Id(key.reference.as_bytes().to_vec()),
            Attribute::Class(ObjectClass::SECRET_KEY),
        ])
        .unwrap();
    assert_eq!(handles.len(), 1);
    let info = raw
        .session
        .get_attribute_info(handles[0], &[AttributeType::Value])
        .unwrap();
    assert!(matches!(info[0], AttributeInfo::Sensitive), "{info:?}");
    let attributes = raw
        .session
        .get_attributes(
            handles[0],
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )
        .unwrap();
    assert!(attributes.contains(&Attribute::Sensitive(true)));
    assert!(attributes.contains(&Attribute::Extractable(false)));
}

#[test]
fn exportable_keys_leave_the_token_only_wrapped() {
    let Some(hsm) = softhsm() else { return };
    let backend = hsm.backend("release");
    let enclave = KeyMaterial::generate_rsa(2048).unwrap();
    let wrap = keyshift_crypto::transfer::TransferWrap::RsaAesKeyWrap;

    // An exportable AES key: wrapped in the token for the enclave's public key, and the
    // enclave's private key opens it to the key the token uses.
    let key = backend
        .generate_with(HsmKeySpec::Oct { bits: 256 }, "exportable", true)
        .unwrap();
    let blob = backend
        .wrap_for_transfer(&key, &enclave.public_key(), wrap)
        .unwrap();
    let released = enclave.rsa_aes_key_unwrap(wrap.hash(), &blob).unwrap();
    assert_eq!(released.len(), 32);
    let software = KeyMaterial::from_transfer_plaintext(&released, true)
        .unwrap()
        .0;
    let wrapped = backend.wrap_key(&key, E::A256Kw, &[3; 24]).unwrap();
    assert_eq!(
        software.unwrap_key(E::A256Kw, &wrapped).unwrap().as_slice(),
        &[3; 24]
    );
    // Still not readable in the clear.
    let raw = raw_token(&hsm.module, "release");
    let handles = raw
        .session
        .find_objects(&[Attribute::Id(key.reference.as_bytes().to_vec())])
        .unwrap();
    let info = raw
        .session
        .get_attribute_info(handles[0], &[AttributeType::Value])
        .unwrap();
    assert!(matches!(info[0], AttributeInfo::Sensitive), "{info:?}");

    // OAEP with SHA-256: SoftHSM2 does not have it, and says so.
    let refused = backend.wrap_for_transfer(
        &key,
        &enclave.public_key(),
        keyshift_crypto::transfer::TransferWrap::RsaAesKeyWrap256,
    );
    assert!(
        is_unsupported_naming(&refused, "CKM_RSA_PKCS_OAEP with SHA-256"),
        "{refused:?}"
    );
    // A key made without export refuses.
    let kept = backend
        .generate(HsmKeySpec::Oct { bits: 256 }, "kept")
        .unwrap();
    let refused = backend.wrap_for_transfer(&kept, &enclave.public_key(), wrap);
    assert!(
        is_unsupported_naming(&refused, "not extractable"),
        "{refused:?}"
    );
    // An RSA private key: SoftHSM2 2.6 pads it before wrapping, so it is refused by name.
    let rsa = backend
        .generate_with(HsmKeySpec::Rsa { bits: 2048 }, "exportable-rsa", true)
        .unwrap();
    let refused = backend.wrap_for_transfer(&rsa, &enclave.public_key(), wrap);
    assert!(
        matches!(refused, Err(CryptoError::Unsupported(_))),
        "{refused:?}"
    );
    // Only RSA public keys wrap.
    let ec = KeyMaterial::generate_ec(Curve::P256).unwrap();
    assert!(backend
        .wrap_for_transfer(&key, &ec.public_key(), wrap)
        .is_err());
}

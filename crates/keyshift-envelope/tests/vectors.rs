//! The checked-in test vectors (`tests/vectors/*.json`): every one decrypts, re-encrypts
//! byte for byte from the same randomness, and is re-derived from the specification in
//! `docs/format.md` using only keyshift-crypto primitives (an independent reading of the
//! format, not the library's code path).
//!
//! `KEYSHIFT_WRITE_VECTORS=1 cargo test -p keyshift-envelope --test vectors` rewrites the
//! vectors and the fuzzing seed corpus from the fixed inputs below.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use keyshift_crypto::digest::{hmac_sha256, sha256};
use keyshift_crypto::gcm::Aes256GcmKey;
use keyshift_crypto::kdf::hkdf_sha256;
use keyshift_envelope::fuzzing::{
    sequence, FUZZ_CONTEXT, FUZZ_KEK_KEY, FUZZ_KEK_KID, FUZZ_MASTER_KEY, FUZZ_MASTER_KEY_ID,
};
use keyshift_envelope::{
    Decryptor, Encryptor, FileRandomness, Header, Keyring, LocalKek, MasterKey, Mode,
};
use serde_json::{json, Value};
use zeroize::Zeroizing;

const CREATED: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn randomness() -> FileRandomness {
    FileRandomness {
        salt: sequence(0x80),
        nonce_prefix: sequence(0xa0),
        data_key: Zeroizing::new(sequence(0x60)),
    }
}

fn kek() -> LocalKek {
    let mut kek = LocalKek::new();
    kek.insert(FUZZ_KEK_KID, &FUZZ_KEK_KEY).unwrap();
    kek
}

fn master() -> MasterKey {
    MasterKey::from_parts(FUZZ_MASTER_KEY_ID, &FUZZ_MASTER_KEY).unwrap()
}

struct Case {
    name: &'static str,
    description: &'static str,
    mode: Mode,
    segment_size: u32,
    plaintext: Vec<u8>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "two_level_small",
            description: "2-level: a random data key wrapped by the KEK (A256KW) in the header; one short segment",
            mode: Mode::TwoLevel,
            segment_size: 65_536,
            plaintext: b"Keyshift envelope, 2-level.".to_vec(),
        },
        Case {
            name: "three_level_small",
            description: "3-level: per-file key derived from the keyring's master key; one short segment",
            mode: Mode::ThreeLevel,
            segment_size: 65_536,
            plaintext: b"Keyshift envelope, 3-level.".to_vec(),
        },
        Case {
            name: "three_level_multi_segment",
            description: "3-level, 4096-byte segments: two full segments and a short last one (1000 bytes)",
            mode: Mode::ThreeLevel,
            segment_size: 4096,
            plaintext: (0..2 * 4096 + 1000).map(|i| (i % 251) as u8).collect(),
        },
        Case {
            name: "empty",
            description: "3-level, empty plaintext: one empty last segment (its tag only)",
            mode: Mode::ThreeLevel,
            segment_size: 65_536,
            plaintext: Vec::new(),
        },
    ]
}

async fn encrypt(mode: Mode, segment_size: u32, plaintext: &[u8]) -> Vec<u8> {
    let encryptor = match mode {
        Mode::ThreeLevel => {
            Encryptor::three_level_with(&master(), FUZZ_CONTEXT, segment_size, randomness())
                .unwrap()
        }
        Mode::TwoLevel => Encryptor::two_level_with(
            &kek(),
            FUZZ_KEK_KID,
            FUZZ_CONTEXT,
            segment_size,
            randomness(),
        )
        .await
        .unwrap(),
    };
    encryptor.encrypt_to_vec(plaintext).unwrap()
}

/// The derivations of docs/format.md, section "Keys".
fn derive(material: &[u8], salt: &[u8], context: &[u8]) -> ([u8; 32], [u8; 32], [u8; 32]) {
    let mut mac_key = [0u8; 32];
    hkdf_sha256(
        material,
        salt,
        b"keyshift-envelope/v1/header-mac",
        &mut mac_key,
    )
    .unwrap();
    let mut info = b"keyshift-envelope/v1/data-key\x00".to_vec();
    info.extend_from_slice(context);
    let mut okm = [0u8; 64];
    hkdf_sha256(material, salt, &info, &mut okm).unwrap();
    let (segment_key, commitment) = okm.split_at(32);
    (
        mac_key,
        segment_key.try_into().unwrap(),
        commitment.try_into().unwrap(),
    )
}

/// Decrypts a vector from the specification alone; returns the plaintext and the
/// intermediate values.
fn spec_decrypt(v: &Value) -> (Vec<u8>, Value) {
    let file = unhex(v["ciphertext"].as_str().unwrap());
    let context = unhex(v["context"].as_str().unwrap());
    assert_eq!(&file[..8], b"KEYSHENV");
    assert_eq!(file[8], 1);
    let mode = file[9];
    let segment_size = u32::from_be_bytes(file[10..14].try_into().unwrap()) as usize;
    let prefix = &file[14..21];
    let salt = &file[21..53];
    let commitment = &file[53..85];
    let (authenticated_len, material) = if mode == 3 {
        assert_eq!(hex(&file[85..101]), v["master_key_id"].as_str().unwrap());
        (101, unhex(v["master_key"].as_str().unwrap()))
    } else {
        (85, unhex(v["data_key"].as_str().unwrap()))
    };
    let mac = &file[authenticated_len..authenticated_len + 32];
    let mut at = authenticated_len + 32;
    if mode == 2 {
        let kid_len = u16::from_be_bytes([file[at], file[at + 1]]) as usize;
        let kid = std::str::from_utf8(&file[at + 2..at + 2 + kid_len]).unwrap();
        assert_eq!(kid, v["kek"]["kid"].as_str().unwrap());
        at += 2 + kid_len;
        let alg_len = file[at] as usize;
        assert_eq!(&file[at + 1..at + 1 + alg_len], b"A256KW");
        at += 1 + alg_len;
        let key_len = u16::from_be_bytes([file[at], file[at + 1]]) as usize;
        at += 2 + key_len;
    }
    let (mac_key, segment_key, expected_commitment) = derive(&material, salt, &context);
    let authenticated = &file[..authenticated_len];
    assert_eq!(hmac_sha256(&mac_key, authenticated).as_slice(), mac);
    assert_eq!(expected_commitment.as_slice(), commitment);
    let digest = sha256(authenticated);
    let key = Aes256GcmKey::new(&segment_key).unwrap();
    let mut plaintext = Vec::new();
    let body = &file[at..];
    let chunks: Vec<&[u8]> = body.chunks(segment_size + 16).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut nonce = [0u8; 12];
        nonce[..7].copy_from_slice(prefix);
        nonce[7..11].copy_from_slice(&(i as u32).to_be_bytes());
        nonce[11] = u8::from(i + 1 == chunks.len());
        let (ct, tag) = chunk.split_at(chunk.len() - 16);
        let mut out = vec![0u8; ct.len()];
        key.open_to(&nonce, &digest, ct, tag, &mut out).unwrap();
        plaintext.extend_from_slice(&out);
    }
    let intermediates = json!({
        "header_len": at,
        "header_mac_key": hex(&mac_key),
        "segment_key": hex(&segment_key),
        "key_commitment": hex(commitment),
        "header_digest": hex(&digest),
        "segments": chunks.len(),
    });
    (plaintext, intermediates)
}

async fn build_vector(case: &Case) -> Value {
    let file = encrypt(case.mode, case.segment_size, &case.plaintext).await;
    let random = randomness();
    let mut v = json!({
        "description": case.description,
        "format_version": 1,
        "mode": case.mode.byte(),
        "kek": { "kid": FUZZ_KEK_KID, "alg": "A256KW", "key": hex(&FUZZ_KEK_KEY) },
        "context": hex(FUZZ_CONTEXT),
        "context_utf8": std::str::from_utf8(FUZZ_CONTEXT).unwrap(),
        "salt": hex(&random.salt),
        "nonce_prefix": hex(&random.nonce_prefix),
        "segment_size": case.segment_size,
        "plaintext": hex(&case.plaintext),
        "ciphertext": hex(&file),
    });
    match case.mode {
        Mode::ThreeLevel => {
            let keyring = Keyring::wrap(&kek(), FUZZ_KEK_KID, CREATED, &master())
                .await
                .unwrap();
            v["master_key"] = hex(&FUZZ_MASTER_KEY).into();
            v["master_key_id"] = hex(&FUZZ_MASTER_KEY_ID).into();
            v["keyring"] = serde_json::from_str(&keyring.to_json()).unwrap();
        }
        Mode::TwoLevel => {
            v["data_key"] = hex(random.data_key.as_ref()).into();
        }
    }
    let (_, intermediates) = spec_decrypt(&v);
    v["intermediate"] = intermediates;
    v
}

#[tokio::test]
async fn vectors_decrypt_and_reencrypt_identically() {
    let write = std::env::var_os("KEYSHIFT_WRITE_VECTORS").is_some();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for case in cases() {
        let path = dir().join(format!("{}.json", case.name));
        if write {
            let v = build_vector(&case).await;
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
            let file = unhex(v["ciphertext"].as_str().unwrap());
            for target in ["parse_header", "decrypt_stream"] {
                std::fs::create_dir_all(corpus.join(target)).unwrap();
                let bytes = if target == "parse_header" {
                    file[..v["intermediate"]["header_len"].as_u64().unwrap() as usize].to_vec()
                } else {
                    file.clone()
                };
                std::fs::write(corpus.join(target).join(case.name), bytes).unwrap();
            }
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let file = unhex(v["ciphertext"].as_str().unwrap());
        let plaintext = unhex(v["plaintext"].as_str().unwrap());
        let context = unhex(v["context"].as_str().unwrap());

        // 1. The library decrypts it, through the keyring (3-level) or the KEK (2-level).
        let mut kek = LocalKek::new();
        kek.insert(
            v["kek"]["kid"].as_str().unwrap(),
            &unhex(v["kek"]["key"].as_str().unwrap()),
        )
        .unwrap();
        let header = Header::parse(&file).unwrap();
        let keyring = v
            .get("keyring")
            .map(|k| Keyring::from_json(&k.to_string()).unwrap());
        let decryptor = Decryptor::unlock(&header, &kek, keyring.as_ref(), &context)
            .await
            .unwrap();
        assert_eq!(
            decryptor.decrypt_slice(&file).unwrap(),
            plaintext,
            "{}",
            case.name
        );

        // 2. The specification alone decrypts it, to the same intermediate values.
        let (spec_plaintext, intermediates) = spec_decrypt(&v);
        assert_eq!(spec_plaintext, plaintext);
        assert_eq!(intermediates, v["intermediate"], "{}", case.name);

        // 3. Re-encrypting with the same randomness gives the same bytes.
        assert_eq!(case.plaintext, plaintext, "{}: the case changed", case.name);
        let again = encrypt(case.mode, case.segment_size, &plaintext).await;
        assert_eq!(
            hex(&again),
            hex(&file),
            "{}: re-encryption differs",
            case.name
        );
        if let Some(keyring) = keyring {
            let rebuilt = Keyring::wrap(&kek, FUZZ_KEK_KID, CREATED, &master())
                .await
                .unwrap();
            assert_eq!(rebuilt, keyring);
        }
    }
}

//! Where the root key comes from: the key file (`root.key`, the default), or Shamir shares held by
//! custodians (`root.json` says so). This module is the Shamir side without IO of its own: the
//! manifest `root.json`, the share text format, encryption of a share to a custodian's
//! certificate, and the unseal progress that collects shares until the threshold.
//!
//! A share's text is `keyshift-share-v1:<root id>:<generation>:<x>:<threshold>:<y>:<check>`:
//! `y` is the share's 32 bytes (base64url), `check` the first 8 bytes of SHA-256 of the text
//! before it (hex), so a mistyped share is caught at once. The manifest keeps, per share, a digest
//! binding it to this root, this share set (`generation`, bumped by every re-split) and its x:
//! a share of another deployment or of an older share set, or a corrupt one, is refused before it
//! is used. After the threshold, the recombined root must open the manifest's verifier, a known
//! value sealed under the root.

use keyshift_crypto::seal::SealingKey;
use keyshift_crypto::shamir::{self, Share};
use keyshift_crypto::{KeyMaterial, PublicKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

const SHARE_PREFIX: &str = "keyshift-share-v1";
const ENCRYPTED_PREFIX: &str = "keyshift-share-encrypted-v1";
const VERIFIER_AAD: &[u8] = b"keyshift/root-verifier/v1";
const VERIFIER_VALUE: &[u8] = b"keyshift root of trust";
const ROOT_LEN: usize = 32;

/// `root.json`: how this data directory's root key is kept. Never holds the root or a share.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RootManifest {
    /// `"shamir"`.
    pub mode: String,
    /// Random id of this root, in every share.
    pub root_id: String,
    /// The share set: 1 at init, bumped by every re-split (older shares stop verifying).
    pub generation: u32,
    /// Shares needed.
    pub threshold: u8,
    /// The shares of the current set.
    pub shares: Vec<ShareRecord>,
    /// The known value sealed under the root (base64url).
    pub verifier: String,
}

/// What the manifest keeps of one share.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShareRecord {
    /// The share's x (1..=255).
    pub id: u8,
    /// SHA-256 over the share's domain, root id, generation, x and bytes (base64url).
    pub digest: String,
    /// SHA-256 thumbprint (base64url) of the custodian certificate it was encrypted to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custodian: Option<String>,
}

/// Why a share was refused. Each is a `400` with its own inner code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareError {
    /// Not a share, or its checksum does not match (`InvalidShare`).
    Malformed(String),
    /// Still encrypted to a custodian (`ShareEncrypted`).
    Encrypted,
    /// Of another root (`WrongDeployment`).
    OtherRoot,
    /// Of an older or newer share set (`StaleShare`).
    OtherGeneration {
        /// The share's.
        share: u32,
        /// The manifest's.
        current: u32,
    },
    /// Its digest does not match the manifest (`InvalidShare`).
    Unrecognised(u8),
    /// Already given (`DuplicateShare`).
    Duplicate(u8),
    /// The shares recombine to a key that does not open the verifier (`InvalidShare`).
    WrongRoot,
}

impl ShareError {
    /// The inner error code.
    pub fn inner_code(&self) -> &'static str {
        match self {
            ShareError::Malformed(_) | ShareError::Unrecognised(_) | ShareError::WrongRoot => {
                "InvalidShare"
            }
            ShareError::Encrypted => "ShareEncrypted",
            ShareError::OtherRoot => "WrongDeployment",
            ShareError::OtherGeneration { .. } => "StaleShare",
            ShareError::Duplicate(_) => "DuplicateShare",
        }
    }
}

impl std::fmt::Display for ShareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShareError::Malformed(why) => write!(f, "not a Keyshift unseal share: {why}"),
            ShareError::Encrypted => f.write_str(
                "the share is encrypted to a custodian's certificate: decrypt it with the custodian's key (keyshift unseal --custodian-key)",
            ),
            ShareError::OtherRoot => f.write_str("the share belongs to another deployment's root"),
            ShareError::OtherGeneration { share, current } => write!(
                f,
                "the share belongs to share set {share}, but the root was re-split: the current set is {current}"
            ),
            ShareError::Unrecognised(x) => {
                write!(f, "share {x} does not match this root's share set (corrupt?)")
            }
            ShareError::Duplicate(x) => write!(f, "share {x} was already given"),
            ShareError::WrongRoot => f.write_str(
                "the shares recombine to a key that is not this deployment's root; the collected shares were discarded",
            ),
        }
    }
}

/// A parsed plaintext share.
#[derive(Debug)]
pub struct ShareText {
    /// The root it belongs to.
    pub root_id: String,
    /// The share set.
    pub generation: u32,
    /// Shares needed.
    pub threshold: u8,
    /// The share.
    pub share: Share,
}

fn checksum(body: &str) -> String {
    hex(&keyshift_crypto::digest::sha256(body.as_bytes())[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn share_digest(root_id: &str, generation: u32, share: &Share) -> String {
    let mut data = b"keyshift/share-digest/v1\0".to_vec();
    data.extend_from_slice(root_id.as_bytes());
    data.push(0);
    data.extend_from_slice(&generation.to_be_bytes());
    data.push(share.x);
    data.extend_from_slice(&share.y);
    let digest = keyshift_crypto::digest::sha256(&data);
    keyshift_api::b64::encode(&digest)
}

/// The text of a share.
pub fn format_share(
    root_id: &str,
    generation: u32,
    threshold: u8,
    share: &Share,
) -> Zeroizing<String> {
    let body = Zeroizing::new(format!(
        "{SHARE_PREFIX}:{root_id}:{generation}:{}:{threshold}:{}",
        share.x,
        keyshift_api::b64::encode(&share.y)
    ));
    Zeroizing::new(format!("{}:{}", body.as_str(), checksum(&body)))
}

/// Reads a share's text (surrounding white space allowed).
pub fn parse_share(text: &str) -> Result<ShareText, ShareError> {
    let text = text.trim();
    if text.starts_with(ENCRYPTED_PREFIX) {
        return Err(ShareError::Encrypted);
    }
    let malformed = |why: &str| ShareError::Malformed(why.to_owned());
    let (body, check) = text
        .rsplit_once(':')
        .ok_or_else(|| malformed("no checksum"))?;
    let parts: Vec<&str> = body.split(':').collect();
    let [prefix, root_id, generation, x, threshold, y] = parts.as_slice() else {
        return Err(malformed("expected 7 fields separated by ':'"));
    };
    if *prefix != SHARE_PREFIX {
        return Err(malformed("unknown prefix"));
    }
    if !keyshift_crypto::constant_time_eq(check.as_bytes(), checksum(body).as_bytes()) {
        return Err(malformed(
            "the checksum does not match (mistyped or corrupt)",
        ));
    }
    let generation = generation
        .parse()
        .map_err(|_| malformed("bad generation"))?;
    let x: u8 = x.parse().map_err(|_| malformed("bad share id"))?;
    let threshold: u8 = threshold.parse().map_err(|_| malformed("bad threshold"))?;
    if x == 0 || threshold < 2 {
        return Err(malformed("share id or threshold out of range"));
    }
    let y = Zeroizing::new(keyshift_api::b64::decode(y).map_err(|_| malformed("bad base64"))?);
    if y.len() != ROOT_LEN {
        return Err(malformed("a share is 32 bytes"));
    }
    Ok(ShareText {
        root_id: (*root_id).to_owned(),
        generation,
        threshold,
        share: Share { x, y },
    })
}

/// A custodian's certificate, as a share is encrypted to it.
#[derive(Debug, Clone)]
pub struct Custodian {
    /// The RSA public key (2048 bits or more).
    pub public_key: PublicKey,
    /// SHA-256 thumbprint of the DER certificate, base64url.
    pub thumbprint: String,
}

impl Custodian {
    /// The custodian of a PEM certificate.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let der = keyshift_crypto::x509::pem_certificates(pem)
            .into_iter()
            .next()
            .ok_or("no CERTIFICATE block")?;
        let cert = keyshift_crypto::x509::parse_certificate(&der).map_err(|e| e.to_string())?;
        Ok(Custodian {
            public_key: cert.public_key,
            thumbprint: keyshift_api::b64::encode(&cert.sha256_thumbprint),
        })
    }
}

/// A share encrypted to `custodian`: `keyshift-share-encrypted-v1:<x>:<thumbprint>:<blob>`, the
/// blob RSA-OAEP-256 of a fresh AES-256 key followed by the RFC 5649 wrap of the share's text
/// (`CKM_RSA_AES_KEY_WRAP` with SHA-256).
pub fn encrypt_share(share_text: &str, x: u8, custodian: &Custodian) -> Result<String, String> {
    let blob = keyshift_crypto::transfer::rsa_aes_key_wrap(
        &custodian.public_key,
        keyshift_crypto::transfer::OaepHash::Sha256,
        share_text.as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "{ENCRYPTED_PREFIX}:{x}:{}:{}",
        custodian.thumbprint,
        keyshift_api::b64::encode(&blob)
    ))
}

/// Decrypts an encrypted share with the custodian's RSA private key; plaintext shares are
/// returned as they are.
pub fn decrypt_share(text: &str, key: &KeyMaterial) -> Result<Zeroizing<String>, String> {
    let text = text.trim();
    let Some(rest) = text.strip_prefix(ENCRYPTED_PREFIX) else {
        return Ok(Zeroizing::new(text.to_owned()));
    };
    let blob = rest
        .rsplit(':')
        .next()
        .and_then(|b| keyshift_api::b64::decode(b).ok())
        .ok_or("the encrypted share is malformed")?;
    let plain = key
        .rsa_aes_key_unwrap(keyshift_crypto::transfer::OaepHash::Sha256, &blob)
        .map_err(|_| {
            "the share does not decrypt with this custodian key (another custodian's share?)"
        })?;
    String::from_utf8(plain.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| "the decrypted share is not text".into())
}

/// A new split of `root`: the manifest and each share's text (encrypted to `custodians[i]` when
/// custodians are given: one per share).
pub fn split_root(
    root: &SealingKey,
    root_id: &str,
    generation: u32,
    shares: u8,
    threshold: u8,
    custodians: &[Custodian],
) -> Result<(RootManifest, Vec<Zeroizing<String>>), String> {
    if !custodians.is_empty() && custodians.len() != usize::from(shares) {
        return Err(format!(
            "{} custodian certificates for {shares} shares: give one per share, or none",
            custodians.len()
        ));
    }
    let split = shamir::split(
        &root.to_bytes(),
        usize::from(shares),
        usize::from(threshold),
    )
    .map_err(|e| e.to_string())?;
    let mut records = Vec::new();
    let mut texts = Vec::new();
    for (i, share) in split.iter().enumerate() {
        let text = format_share(root_id, generation, threshold, share);
        let custodian = custodians.get(i);
        let text = match custodian {
            Some(c) => Zeroizing::new(encrypt_share(&text, share.x, c)?),
            None => text,
        };
        records.push(ShareRecord {
            id: share.x,
            digest: share_digest(root_id, generation, share),
            custodian: custodian.map(|c| c.thumbprint.clone()),
        });
        texts.push(text);
    }
    let verifier = root
        .seal(VERIFIER_AAD, VERIFIER_VALUE)
        .map_err(|e| e.to_string())?;
    Ok((
        RootManifest {
            mode: "shamir".into(),
            root_id: root_id.to_owned(),
            generation,
            threshold,
            shares: records,
            verifier: keyshift_api::b64::encode(&verifier),
        },
        texts,
    ))
}

impl RootManifest {
    /// Whether `root` is the root this manifest describes.
    pub fn verifies(&self, root: &SealingKey) -> bool {
        keyshift_api::b64::decode(&self.verifier)
            .ok()
            .and_then(|sealed| root.open(VERIFIER_AAD, &sealed).ok())
            .is_some_and(|v| v.as_slice() == VERIFIER_VALUE)
    }

    /// Checks one share against this manifest.
    pub fn check(&self, text: &str) -> Result<Share, ShareError> {
        let parsed = parse_share(text)?;
        if parsed.root_id != self.root_id {
            return Err(ShareError::OtherRoot);
        }
        if parsed.generation != self.generation {
            return Err(ShareError::OtherGeneration {
                share: parsed.generation,
                current: self.generation,
            });
        }
        let x = parsed.share.x;
        let digest = share_digest(&self.root_id, self.generation, &parsed.share);
        let known = self.shares.iter().find(|r| r.id == x).is_some_and(|r| {
            keyshift_crypto::constant_time_eq(r.digest.as_bytes(), digest.as_bytes())
        });
        if !known || parsed.threshold != self.threshold {
            return Err(ShareError::Unrecognised(x));
        }
        Ok(parsed.share)
    }

    /// Recombines the root from at least `threshold` shares (their texts) and checks it.
    pub fn recombine(&self, texts: &[&str]) -> Result<SealingKey, ShareError> {
        let mut progress = UnsealProgress::default();
        let mut root = None;
        for text in texts {
            root = progress.submit(self, text)?;
        }
        root.ok_or_else(|| {
            ShareError::Malformed(format!(
                "{} shares given, {} needed",
                texts.len(),
                self.threshold
            ))
        })
    }
}

/// The shares given so far to a sealed server.
#[derive(Debug, Default)]
pub struct UnsealProgress {
    generation: u32,
    shares: BTreeMap<u8, Share>,
}

impl UnsealProgress {
    /// How many valid shares are held.
    pub fn count(&self) -> usize {
        self.shares.len()
    }

    /// Forgets every share given.
    pub fn clear(&mut self) {
        self.shares.clear();
    }

    /// Takes one share. Returns the root once the threshold is reached (and forgets the shares).
    /// A re-split since the last share (another generation in the manifest) drops the shares of
    /// the old set.
    pub fn submit(
        &mut self,
        manifest: &RootManifest,
        text: &str,
    ) -> Result<Option<SealingKey>, ShareError> {
        if self.generation != manifest.generation {
            self.shares.clear();
            self.generation = manifest.generation;
        }
        let share = manifest.check(text)?;
        if self.shares.contains_key(&share.x) {
            return Err(ShareError::Duplicate(share.x));
        }
        self.shares.insert(share.x, share);
        if self.shares.len() < usize::from(manifest.threshold) {
            return Ok(None);
        }
        let shares: Vec<Share> = std::mem::take(&mut self.shares).into_values().collect();
        let bytes = shamir::combine(&shares).map_err(|_| ShareError::WrongRoot)?;
        let root = SealingKey::from_bytes(&bytes).map_err(|_| ShareError::WrongRoot)?;
        if !manifest.verifies(&root) {
            return Err(ShareError::WrongRoot);
        }
        Ok(Some(root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(n: u8, m: u8) -> (SealingKey, RootManifest, Vec<Zeroizing<String>>) {
        let root = SealingKey::generate().unwrap();
        let (manifest, texts) = split_root(&root, "r00t", 1, n, m, &[]).unwrap();
        (root, manifest, texts)
    }

    #[test]
    fn shares_round_trip_and_unseal_at_the_threshold() {
        let (root, manifest, texts) = setup(5, 3);
        assert_eq!(manifest.shares.len(), 5);
        let json = serde_json::to_string(&manifest).unwrap();
        assert!(!json.contains(&keyshift_api::b64::encode(&root.to_bytes())));
        let mut progress = UnsealProgress::default();
        assert!(progress.submit(&manifest, &texts[4]).unwrap().is_none());
        assert!(progress
            .submit(&manifest, &format!("\n {}\n", texts[1].as_str()))
            .unwrap()
            .is_none());
        assert_eq!(progress.count(), 2);
        let got = progress.submit(&manifest, &texts[2]).unwrap().unwrap();
        assert_eq!(got.to_bytes(), root.to_bytes());
        assert_eq!(progress.count(), 0, "shares are forgotten once used");
        let again = manifest
            .recombine(&[&texts[0], &texts[1], &texts[3]])
            .unwrap();
        assert_eq!(again.to_bytes(), root.to_bytes());
    }

    #[test]
    fn bad_shares_are_refused_before_use() {
        let (_, manifest, texts) = setup(3, 2);
        let good = texts[0].as_str();
        // Malformed: every field, and the checksum.
        let mut flipped = good.to_owned().into_bytes();
        let at = good.len() - 20;
        flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let truncated = &good[..good.len() - 3];
        let cases = [
            "",
            "hello",
            truncated,
            flipped.as_str(),
            "keyshift-share-v1:r00t:1:1:2:AAAA:0000000000000000",
        ];
        for case in cases {
            let err = manifest.check(case).unwrap_err();
            assert_eq!(err.inner_code(), "InvalidShare", "{case:?}: {err}");
        }
        // A share with a valid checksum but bytes that are not this set's.
        let forged = format_share(
            "r00t",
            1,
            2,
            &Share {
                x: 1,
                y: Zeroizing::new(vec![7; 32]),
            },
        );
        assert_eq!(
            manifest.check(&forged).unwrap_err(),
            ShareError::Unrecognised(1)
        );
        let short = format_share(
            "r00t",
            1,
            2,
            &Share {
                x: 1,
                y: Zeroizing::new(vec![7; 31]),
            },
        );
        assert_eq!(
            manifest.check(&short).unwrap_err().inner_code(),
            "InvalidShare"
        );
        let unknown_x = format_share(
            "r00t",
            1,
            2,
            &Share {
                x: 9,
                y: Zeroizing::new(vec![7; 32]),
            },
        );
        assert_eq!(
            manifest.check(&unknown_x).unwrap_err(),
            ShareError::Unrecognised(9)
        );
        // Another deployment's share, another share set's share.
        let (_, other, other_texts) = setup(3, 2);
        let mut other = other;
        other.root_id = "other".into();
        let (_, _, foreign) = {
            let root = SealingKey::generate().unwrap();
            let (m, t) = split_root(&root, "other", 1, 3, 2, &[]).unwrap();
            (root, m, t)
        };
        assert_eq!(
            manifest.check(&foreign[0]).unwrap_err(),
            ShareError::OtherRoot
        );
        assert_eq!(
            other.check(&other_texts[0]).unwrap_err(),
            ShareError::OtherRoot
        );
        let mut next = manifest.clone();
        next.generation = 2;
        assert_eq!(
            next.check(good).unwrap_err(),
            ShareError::OtherGeneration {
                share: 1,
                current: 2
            }
        );
        // Duplicates.
        let mut progress = UnsealProgress::default();
        progress.submit(&manifest, good).unwrap();
        assert_eq!(
            progress.submit(&manifest, good).unwrap_err(),
            ShareError::Duplicate(1)
        );
        assert_eq!(
            progress.count(),
            1,
            "a refused share does not reset progress"
        );
        // Encrypted shares must be decrypted first.
        assert_eq!(
            manifest
                .check("keyshift-share-encrypted-v1:1:x:y")
                .unwrap_err(),
            ShareError::Encrypted
        );
    }

    #[test]
    fn a_root_that_does_not_verify_is_refused() {
        let (_, manifest, texts) = setup(3, 2);
        let mut wrong = manifest.clone();
        wrong.verifier = manifest.verifier.replacen('A', "B", 1);
        if wrong.verifier == manifest.verifier {
            wrong.verifier = keyshift_api::b64::encode(&[1u8; 40]);
        }
        let mut progress = UnsealProgress::default();
        progress.submit(&wrong, &texts[0]).unwrap();
        assert_eq!(
            progress.submit(&wrong, &texts[1]).unwrap_err(),
            ShareError::WrongRoot
        );
        assert_eq!(progress.count(), 0);
    }

    #[test]
    fn shares_encrypted_to_custodians_decrypt_with_their_keys_only() {
        let keys: Vec<KeyMaterial> = (0..2)
            .map(|_| KeyMaterial::generate_rsa(2048).unwrap())
            .collect();
        let custodians: Vec<Custodian> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Custodian {
                public_key: k.public_key(),
                thumbprint: format!("cert{i}"),
            })
            .collect();
        let root = SealingKey::generate().unwrap();
        let (manifest, texts) = split_root(&root, "r00t", 1, 2, 2, &custodians).unwrap();
        assert_eq!(manifest.shares[1].custodian.as_deref(), Some("cert1"));
        assert!(texts[0].starts_with(ENCRYPTED_PREFIX));
        assert_eq!(
            manifest.check(&texts[0]).unwrap_err(),
            ShareError::Encrypted
        );
        assert!(decrypt_share(&texts[0], &keys[1]).is_err());
        let plain: Vec<Zeroizing<String>> = texts
            .iter()
            .zip(&keys)
            .map(|(t, k)| decrypt_share(t, k).unwrap())
            .collect();
        let got = manifest.recombine(&[&plain[0], &plain[1]]).unwrap();
        assert_eq!(got.to_bytes(), root.to_bytes());
        assert!(split_root(&root, "r00t", 1, 3, 2, &custodians).is_err());
    }
}

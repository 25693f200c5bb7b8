//! Bring your own key: the `.byok` transfer blob Azure defines (`key_hsm` of an import), opened
//! with a key-exchange key (KEK) of the same vault.
//!
//! ```json
//! {"schema_version": "1.0.0",
//!  "header": {"kid": "https://<vault>/keys/<kek>/<version>", "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"},
//!  "ciphertext": "BASE64URL(RSA-OAEP(KEK, SHA-1)(AES key) || AES-KWP(AES key, target))",
//!  "generator": "..."}
//! ```
//!
//! A KEK is an RSA-HSM key of 2048 to 4096 bits whose only operation is `import`: it can open
//! transfer blobs and do nothing else, and is never exportable. Every failure to open a blob is a
//! 400 that says which part is wrong, never anything of its content.

use crate::naming::printable;
use crate::Result;
use keyshift_api::ApiError;
use keyshift_crypto::transfer::TransferWrap;
use serde_json::{Map, Value};

/// The key operation of key-exchange keys, exclusive of every other.
pub const IMPORT_OP: &str = "import";

/// A parsed transfer blob.
#[derive(Debug)]
pub(crate) struct TransferBlob {
    /// The KEK's name, from `header.kid`.
    pub kek_name: String,
    /// The KEK's version, from `header.kid`.
    pub kek_version: String,
    /// The wrapping method (`header.enc`).
    pub wrap: TransferWrap,
    /// OAEP block || KWP wrap.
    pub ciphertext: Vec<u8>,
}

fn bad(what: impl std::fmt::Display) -> ApiError {
    ApiError::bad_parameter(format!(
        "The BYOK transfer blob (key_hsm) is invalid: {what}."
    ))
    .with_inner("InvalidTransferBlob")
}

/// A member by name, matched case-insensitively (clients differ in casing).
fn member<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn string<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str> {
    member(obj, name)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("'{name}' is missing or not a string")))
}

/// The name and version of a versioned key identifier `https://<host>/keys/<name>/<version>`.
fn kek_of(kid: &str) -> Result<(String, String)> {
    let path = kid
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| path)
        .ok_or_else(|| bad("header.kid is not a key identifier"))?;
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match segments.as_slice() {
        [keys, name, version] if keys.eq_ignore_ascii_case("keys") && !name.is_empty() => {
            if version.len() != 32 || !version.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("header.kid must name the key-exchange key's version"));
            }
            Ok(((*name).to_owned(), version.to_ascii_lowercase()))
        }
        [keys, _] if keys.eq_ignore_ascii_case("keys") => Err(bad(
            "header.kid must be the versioned identifier of the key-exchange key",
        )),
        _ => Err(bad(format!(
            "header.kid '{}' is not a key identifier",
            printable(kid)
        ))),
    }
}

/// Parses the decoded `key_hsm`: the whole `.byok` JSON document.
pub(crate) fn parse_blob(bytes: &[u8]) -> Result<TransferBlob> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|_| bad("it is not a JSON document"))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| bad("it is not a JSON object"))?;
    let schema = string(obj, "schema_version")?;
    if schema != "1.0.0" && schema != "1.0" {
        return Err(bad(format!(
            "schema_version '{}' is not supported (1.0.0)",
            printable(schema)
        )));
    }
    let header = member(obj, "header")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("'header' is missing or not an object"))?;
    let alg = string(header, "alg")?;
    if !alg.eq_ignore_ascii_case("dir") {
        return Err(bad(format!(
            "header.alg '{}' is not supported (dir)",
            printable(alg)
        )));
    }
    let enc = string(header, "enc")?;
    let wrap = TransferWrap::ALL
        .into_iter()
        .find(|w| w.name().eq_ignore_ascii_case(enc))
        .ok_or_else(|| {
            bad(format!(
                "header.enc '{}' is not supported (CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_256 or RSA_AES_KEY_WRAP_384)",
                printable(enc)
            ))
        })?;
    let (kek_name, kek_version) = kek_of(string(header, "kid")?)?;
    let ciphertext = keyshift_api::b64::decode(string(obj, "ciphertext")?)
        .map_err(|_| bad("'ciphertext' is not base64url"))?;
    if ciphertext.is_empty() {
        return Err(bad("'ciphertext' is empty"));
    }
    Ok(TransferBlob {
        kek_name,
        kek_version,
        wrap,
        ciphertext,
    })
}

/// Whether `key_ops` make a key-exchange key; refuses `import` alongside anything else.
pub(crate) fn is_kek(key_ops: &[String]) -> Result<bool> {
    if !key_ops.iter().any(|o| o == IMPORT_OP) {
        return Ok(false);
    }
    if key_ops.len() != 1 {
        return Err(ApiError::bad_parameter(
            "The 'import' key operation is mutually exclusive with every other operation: a key-exchange key has key_ops [\"import\"] only.",
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    const KID: &str = "https://v.localhost:8443/keys/kek/0123456789abcdef0123456789abcdef";

    fn blob(v: Value) -> Result<TransferBlob> {
        parse_blob(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn parses_azure_blobs_in_any_member_casing() {
        let b = blob(json!({"schema_version": "1.0.0",
            "header": {"kid": KID, "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"},
            "ciphertext": "AAEC", "generator": "test"}))
        .unwrap();
        assert_eq!(
            (b.kek_name.as_str(), b.kek_version.as_str(), b.wrap),
            (
                "kek",
                "0123456789abcdef0123456789abcdef",
                TransferWrap::RsaAesKeyWrap
            )
        );
        assert_eq!(b.ciphertext, vec![0, 1, 2]);
        let b = blob(json!({"Schema_Version": "1.0",
            "Header": {"KID": KID, "ALG": "DIR", "Enc": "rsa_aes_key_wrap_384"},
            "CipherText": "AAEC"}))
        .unwrap();
        assert_eq!(b.wrap, TransferWrap::RsaAesKeyWrap384);
    }

    #[test]
    fn every_malformed_part_is_refused() {
        let ok_header = json!({"kid": KID, "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"});
        let with = |k: &str, v: Value| {
            let mut doc =
                json!({"schema_version": "1.0.0", "header": ok_header, "ciphertext": "AAEC"});
            doc[k] = v;
            doc
        };
        let header = |k: &str, v: Value| {
            let mut h = ok_header.clone();
            h[k] = v;
            with("header", h)
        };
        for bad_doc in [
            json!([]),
            with("schema_version", json!("2.0")),
            with("schema_version", json!(1)),
            with("header", json!("x")),
            with("ciphertext", json!("!!!")),
            with("ciphertext", json!("")),
            with("ciphertext", json!(5)),
            header("alg", json!("RSA-OAEP")),
            header("enc", json!("A256KW")),
            header("enc", json!(null)),
            header("kid", json!("https://v/keys/kek")),
            header("kid", json!("https://v/keys/kek/notaversion")),
            header(
                "kid",
                json!("https://v/secrets/kek/0123456789abcdef0123456789abcdef"),
            ),
            header("kid", json!("kek")),
        ] {
            let e = blob(bad_doc.clone()).unwrap_err();
            assert_eq!(e.code, keyshift_api::ErrorCode::BadParameter, "{bad_doc}");
        }
        assert!(parse_blob(b"not json").is_err());
    }

    #[test]
    fn import_is_exclusive() {
        let ops = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(is_kek(&ops(&["import"])).unwrap());
        assert!(!is_kek(&ops(&["sign", "verify"])).unwrap());
        assert!(is_kek(&ops(&["import", "decrypt"])).is_err());
    }
}

//! Base64url (RFC 4648 section 5) without padding on output; padded, unpadded and standard
//! alphabets accepted on input, as the SDKs send either.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Deserializer, Serializer};

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Encodes bytes as padded standard base64 (RFC 4648 section 4), as `x5c` certificates are.
pub fn encode_standard(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes base64url or standard base64, padded or not.
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let text = text.trim();
    let url_safe = !text.contains(['+', '/']);
    let padded = text.ends_with('=');
    match (url_safe, padded) {
        (true, false) => URL_SAFE_NO_PAD.decode(text),
        (true, true) => URL_SAFE.decode(text),
        (false, false) => STANDARD_NO_PAD.decode(text),
        (false, true) => STANDARD.decode(text),
    }
}

/// Serde adapter for `Vec<u8>` fields.
pub mod bytes {
    use super::*;

    /// Serializes as unpadded base64url.
    pub fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(value))
    }

    /// Deserializes base64url or base64.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        decode(&text).map_err(|e| serde::de::Error::custom(format!("invalid base64url value: {e}")))
    }
}

/// Serde adapter for `Option<Vec<u8>>` fields.
pub mod opt_bytes {
    use super::*;

    /// Serializes as unpadded base64url; `None` is skipped by the field attribute.
    pub fn serialize<S: Serializer>(
        value: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.serialize_str(&encode(v)),
            None => serializer.serialize_none(),
        }
    }

    /// Deserializes base64url or base64; JSON null is `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|t| decode(&t))
            .transpose()
            .map_err(|e| serde::de::Error::custom(format!("invalid base64url value: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_alphabet_and_padding() {
        let bytes = vec![0xfb, 0xff, 0x01];
        assert_eq!(encode(&bytes), "-_8B");
        for text in ["-_8B", "+/8B", "-_8B", "+/8B"] {
            assert_eq!(decode(text).unwrap(), bytes);
        }
        assert_eq!(decode("AQ==").unwrap(), vec![1]);
        assert_eq!(decode("AQ").unwrap(), vec![1]);
        assert!(decode("A").is_err());
        assert!(decode("*&^").is_err());
    }
}

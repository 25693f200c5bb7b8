//! Names and ids.

use crate::Result;
use keyshift_api::ApiError;

/// Key names: `^[0-9a-zA-Z-]+$`, 1 to 127 characters.
pub fn check_key_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 127
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ApiError::bad_parameter(format!(
            "The key name '{}' is invalid: use 1 to 127 characters among 0-9, a-z, A-Z and '-'.",
            printable(name)
        )));
    }
    Ok(())
}

/// Vault names: a DNS label, 3 to 24 characters, letters, digits and '-', starting with a letter.
pub fn check_vault_name(name: &str) -> Result<()> {
    let ok = (3..=24).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.as_bytes()[0].is_ascii_alphabetic()
        && !name.ends_with('-')
        && !name.contains("--");
    if !ok {
        return Err(ApiError::bad_parameter(format!(
            "The vault name '{}' is invalid: 3 to 24 letters, digits and single hyphens, starting with a letter.",
            printable(name)
        )));
    }
    Ok(())
}

/// A name fit to echo in a message: at most 130 printable ASCII characters.
pub fn printable(text: &str) -> String {
    text.chars()
        .take(130)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// A fresh 32-hex-character id (a version id, a vault id).
pub fn new_id() -> Result<String> {
    let bytes = keyshift_crypto::random_bytes(16).map_err(|_| ApiError::internal())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The store key of a key: `{vault_id}/{name_lower}`.
pub fn key_key(vault_id: &str, name: &str) -> String {
    format!("{vault_id}/{}", name.to_ascii_lowercase())
}

/// The store key of a version.
pub fn version_key(vault_id: &str, name: &str, version: &str) -> String {
    format!("{vault_id}/{}/{version}", name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        assert!(check_key_name("my-Key-1").is_ok());
        assert!(check_key_name(&"a".repeat(127)).is_ok());
        for bad in ["", "a b", "a_b", "é", "a/b", &"a".repeat(128)] {
            assert!(check_key_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vault_names() {
        assert!(check_vault_name("kv-west").is_ok());
        for bad in ["ab", "1abc", "abc-", "a--b", "a.b", &"a".repeat(25)] {
            assert!(check_vault_name(bad).is_err(), "{bad}");
        }
    }
}

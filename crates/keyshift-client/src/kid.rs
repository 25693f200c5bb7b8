//! Vault URLs and key identifiers (`kid`s). Both arrive from configuration, from other services and
//! from the server's own answers, so both are parsed as untrusted input: `https` only, no user info,
//! query or fragment, no dot segments or backslashes, and key names and versions checked against the
//! API's rules before they become part of a request path.

use crate::error::ClientError;
use reqwest::Url;
use std::fmt;

/// Longest identifier accepted, far above any real one.
const MAX_ID_LEN: usize = 2048;
/// Key names: `^[0-9a-zA-Z-]+$`, at most 127 characters (SPEC create/import/rotate).
const MAX_NAME_LEN: usize = 127;

/// The base URL of a vault or managed HSM: `https://host[:port]`, normalized (lowercase host, no
/// default port, no trailing slash).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VaultUrl {
    base: String,
    host: String,
}

impl VaultUrl {
    /// Parses `https://host[:port]`, with or without a trailing `/`.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::invalid_input(format!("invalid vault URL: {why}"));
        let (authority, path) = split_https(text).map_err(|why| bad(&why))?;
        if !(path.is_empty() || path == "/") {
            return Err(bad("a vault URL has no path"));
        }
        Self::from_authority(authority).map_err(|why| bad(&why))
    }

    fn from_authority(authority: &str) -> Result<Self, String> {
        if authority.is_empty() {
            return Err("no host".into());
        }
        if authority.contains('@') {
            return Err("user info is not allowed".into());
        }
        let url = Url::parse(&format!("https://{authority}/")).map_err(|e| e.to_string())?;
        let host = url.host_str().ok_or("no host")?.to_ascii_lowercase();
        Ok(VaultUrl {
            base: url.origin().ascii_serialization(),
            host,
        })
    }

    /// `https://host[:port]`.
    pub fn as_str(&self) -> &str {
        &self.base
    }

    /// The host name (or IP literal), lowercase, without port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The key `name` (latest version) in this vault.
    pub fn key(&self, name: &str) -> Result<Kid, ClientError> {
        Kid::new(self.clone(), name, None)
    }

    /// Version `version` of key `name` in this vault.
    pub fn key_version(&self, name: &str, version: &str) -> Result<Kid, ClientError> {
        Kid::new(self.clone(), name, Some(version))
    }

    /// Whether `url` has this vault's scheme, host and port.
    pub(crate) fn same_origin(&self, url: &Url) -> bool {
        url.origin().ascii_serialization() == self.base
    }

    /// `base + path`, parsed.
    pub(crate) fn join(&self, path_and_query: &str) -> Result<Url, ClientError> {
        Url::parse(&format!("{}{}", self.base, path_and_query))
            .map_err(|e| ClientError::invalid_input(format!("invalid request URL: {e}")))
    }
}

impl fmt::Display for VaultUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

impl fmt::Debug for VaultUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultUrl({})", self.base)
    }
}

/// A key identifier: vault, key name and, when pinned, a version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kid {
    /// The vault the key lives in.
    pub vault_url: VaultUrl,
    /// The key name, as given (names compare case-insensitively on the server).
    pub name: String,
    /// The version (32 hex characters), or `None` for the latest.
    pub version: Option<String>,
}

impl Kid {
    /// Builds a kid from parts, validating the name and version.
    pub fn new(
        vault_url: VaultUrl,
        name: &str,
        version: Option<&str>,
    ) -> Result<Self, ClientError> {
        validate_key_name(name)?;
        if let Some(v) = version {
            validate_version(v)?;
        }
        Ok(Kid {
            vault_url,
            name: name.to_owned(),
            version: version.map(str::to_owned),
        })
    }

    /// The path of the key, with the version segment empty when unpinned, as the SDKs send it:
    /// `/keys/{name}/{version}` or `/keys/{name}/`.
    pub(crate) fn path(&self) -> String {
        format!(
            "/keys/{}/{}",
            self.name,
            self.version.as_deref().unwrap_or_default()
        )
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/keys/{}", self.vault_url, self.name)?;
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Kid {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_kid(s)
    }
}

/// Parses and validates `https://host[:port]/keys/{name}[/{version}]`.
pub fn parse_kid(text: &str) -> Result<Kid, ClientError> {
    let bad = |why: &str| ClientError::invalid_input(format!("invalid key identifier: {why}"));
    let (authority, path) = split_https(text).map_err(|why| bad(&why))?;
    let vault_url = VaultUrl::from_authority(authority).map_err(|why| bad(&why))?;
    let segments: Vec<&str> = path.split('/').collect();
    // A path starting with '/' splits into ["", "keys", name, (version)].
    let (name, version) = match segments.as_slice() {
        ["", keys, name] if keys.eq_ignore_ascii_case("keys") => (*name, None),
        ["", keys, name, version] if keys.eq_ignore_ascii_case("keys") => (*name, Some(*version)),
        _ => return Err(bad("expected /keys/{name} or /keys/{name}/{version}")),
    };
    validate_key_name(name).map_err(|e| bad(e.message()))?;
    if let Some(v) = version {
        validate_version(v).map_err(|e| bad(e.message()))?;
    }
    Ok(Kid {
        vault_url,
        name: name.to_owned(),
        version: version.map(str::to_owned),
    })
}

/// Checks a key name: 1 to 127 of `0-9 a-z A-Z -`.
pub fn validate_key_name(name: &str) -> Result<(), ClientError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ClientError::invalid_input(
            "a key name is 1 to 127 characters",
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ClientError::invalid_input(
            "a key name may contain only letters, digits and '-'",
        ));
    }
    Ok(())
}

/// Checks a key version: 32 hexadecimal characters.
pub fn validate_version(version: &str) -> Result<(), ClientError> {
    if version.len() != 32 || !version.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ClientError::invalid_input(
            "a key version is 32 hexadecimal characters",
        ));
    }
    Ok(())
}

/// Splits `https://authority/path` into authority and path after the checks common to vault URLs
/// and kids. Rejects what URL parsers would silently rewrite (`\`, dot segments, `%` escapes).
fn split_https(text: &str) -> Result<(&str, &str), String> {
    if text.len() > MAX_ID_LEN {
        return Err("too long".into());
    }
    if text
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return Err("contains whitespace, control characters or '\\'".into());
    }
    let rest = match text.get(..8) {
        Some(scheme) if scheme.eq_ignore_ascii_case("https://") => &text[8..],
        _ => return Err("the scheme must be https".into()),
    };
    if rest.contains(['?', '#']) {
        return Err("no query or fragment allowed".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if path.contains('%') || path.split('/').any(|s| s == "." || s == "..") {
        return Err("no escapes or dot segments allowed in the path".into());
    }
    Ok((authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "78deebed173b48e48f55abf87ed4cf71";

    #[test]
    fn parses_versioned_and_unversioned_kids() {
        let k = parse_kid(&format!("https://kv.example:8443/keys/payments-kek/{V}")).unwrap();
        assert_eq!(k.vault_url.as_str(), "https://kv.example:8443");
        assert_eq!(k.name, "payments-kek");
        assert_eq!(k.version.as_deref(), Some(V));
        assert_eq!(
            k.to_string(),
            format!("https://kv.example:8443/keys/payments-kek/{V}")
        );
        let k = parse_kid("https://MyVault.Vault.Azure.Net:443/keys/K1").unwrap();
        assert_eq!(k.vault_url.as_str(), "https://myvault.vault.azure.net");
        assert_eq!(k.vault_url.host(), "myvault.vault.azure.net");
        assert_eq!(k.version, None);
        assert_eq!(k.path(), "/keys/K1/");
        let ip = parse_kid("https://[::1]:8443/keys/a").unwrap();
        assert_eq!(ip.vault_url.as_str(), "https://[::1]:8443");
    }

    #[test]
    fn refuses_malformed_kids() {
        let long_name = "a".repeat(128);
        let long_name_kid = format!("https://v/keys/{long_name}");
        let huge = format!("https://v/keys/{}", "a".repeat(5000));
        let cases = [
            "",
            "keys/k1",
            "http://v.example/keys/k1",
            "ftp://v.example/keys/k1",
            "https://",
            "https:///keys/k1",
            "https://user:pw@v.example/keys/k1",
            "https://v.example@evil.example/keys/k1",
            "https://v.example/keys",
            "https://v.example/keys/",
            "https://v.example/keys/k1/",
            "https://v.example/keys//",
            "https://v.example/secrets/k1",
            "https://v.example/keys/k1/not-a-version",
            "https://v.example/keys/k1/78DEEBED173B48E48F55ABF87ED4CF7",
            "https://v.example/keys/k1/78deebed173b48e48f55abf87ed4cf71/encrypt",
            "https://v.example/keys/k_1",
            "https://v.example/keys/k.1",
            "https://v.example/keys/k%2F1",
            "https://v.example/keys/../keys/k1",
            "https://v.example/keys/./k1",
            "https://v.example\\keys\\k1",
            "https://v.example/keys/k1?api-version=7.4",
            "https://v.example/keys/k1#frag",
            "https://v.example/keys/k 1",
            "https://v.example/keys/k1\n",
            "https://v.exa mple/keys/k1",
            "https://v.example:99999/keys/k1",
            "https://v.example/keys/ключ",
            &long_name_kid,
            &huge,
        ];
        for case in cases {
            let err = parse_kid(case).expect_err(case);
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{case}");
        }
        // 127 characters is the longest name.
        parse_kid(&format!("https://v/keys/{}", "a".repeat(127))).unwrap();
    }

    #[test]
    fn vault_urls_normalize_and_refuse_paths() {
        let v = VaultUrl::parse("https://KV.localhost:8443/").unwrap();
        assert_eq!(v.as_str(), "https://kv.localhost:8443");
        assert_eq!(v.to_string(), "https://kv.localhost:8443");
        for bad in [
            "http://kv.localhost",
            "https://kv.localhost/keys",
            "https://kv.localhost?x=1",
            "https://a@kv.localhost",
            "kv.localhost",
        ] {
            assert!(VaultUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(v.key("bad name").is_err());
        assert!(v.key_version("k", "1").is_err());
        assert_eq!(
            v.key_version("k", V).unwrap().path(),
            format!("/keys/k/{V}")
        );
    }
}

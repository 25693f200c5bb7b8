//! Bearer challenges: `WWW-Authenticate: Bearer authorization="<authority>/<tenant>",
//! resource="<resource>"` (or `scope="..."`), as Key Vault, Managed HSM and Keyshift send them on
//! a 401. The header comes from the server, so nothing in it is trusted: the scope it names is
//! accepted only for a resource the vault belongs to, and the authority (where a client secret
//! would go) is checked by the credential, see [`crate::ClientSecretCredential::for_challenge`].

use crate::error::ClientError;
use crate::kid::VaultUrl;
use reqwest::Url;

/// A parsed bearer challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    /// `authorization` (or `authorization_uri`): `<authority>/<tenant>`.
    pub authorization: Option<String>,
    /// `resource`.
    pub resource: Option<String>,
    /// `scope`, when the server names one directly.
    pub scope: Option<String>,
}

/// Longest header value read.
const MAX_HEADER_LEN: usize = 4096;

impl BearerChallenge {
    /// Parses a `WWW-Authenticate` value; `None` unless it is a Bearer challenge with at least
    /// one of the parameters above.
    pub fn parse(header: &str) -> Option<Self> {
        if header.len() > MAX_HEADER_LEN {
            return None;
        }
        let header = header.trim();
        let scheme_end = header.find(char::is_whitespace)?;
        if !header[..scheme_end].eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut challenge = BearerChallenge {
            authorization: None,
            resource: None,
            scope: None,
        };
        for (name, value) in params(&header[scheme_end..])? {
            let slot = match name.to_ascii_lowercase().as_str() {
                "authorization" | "authorization_uri" => &mut challenge.authorization,
                "resource" => &mut challenge.resource,
                "scope" => &mut challenge.scope,
                _ => continue,
            };
            if slot.is_none() && !value.is_empty() {
                *slot = Some(value);
            }
        }
        let any = challenge.authorization.is_some()
            || challenge.resource.is_some()
            || challenge.scope.is_some();
        any.then_some(challenge)
    }

    /// The scope to ask a token for when calling `vault`: `scope`, or `resource + "/.default"`.
    ///
    /// The resource must be `https` and its host must be the vault's host or a parent domain of it
    /// (`vault.azure.net` for `myvault.vault.azure.net`, `localhost` for `kv.localhost`), ports
    /// ignored, as the Azure SDKs check it. Otherwise a server could have this client fetch a
    /// token meant for another service and keep it.
    pub fn scope_for(&self, vault: &VaultUrl) -> Result<String, ClientError> {
        let refuse =
            |why: String| ClientError::new(crate::ErrorKind::Unauthorized, why).with_status(401);
        let (resource, scope) = match (&self.scope, &self.resource) {
            (Some(scope), _) => {
                let resource = scope.strip_suffix("/.default").unwrap_or(scope);
                (resource.to_owned(), scope.clone())
            }
            (None, Some(resource)) => (
                resource.clone(),
                format!("{}/.default", resource.trim_end_matches('/')),
            ),
            (None, None) => {
                return Err(refuse(
                    "the bearer challenge names neither a resource nor a scope".into(),
                ))
            }
        };
        let host = https_host(&resource).ok_or_else(|| {
            refuse(format!(
                "the challenge resource {resource:?} is not an https URL"
            ))
        })?;
        if !host_within(vault.host(), &host) {
            return Err(refuse(format!(
                "the challenge resource {resource:?} does not match the vault host {}",
                vault.host()
            )));
        }
        Ok(scope)
    }
}

/// Splits `k1="v1", k2=v2` into pairs. Values may be quoted; a malformed list gives `None`.
fn params(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text.trim_start_matches([' ', '\t', ',']);
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().to_owned();
        if name.is_empty() || name.contains([' ', ',', '"']) {
            return None;
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"')?;
            value = quoted[..end].to_owned();
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        out.push((name, value));
        rest = rest.trim_start_matches([' ', '\t', ',']);
    }
    Some(out)
}

/// The lowercase host of an `https` URL without user info, or `None`.
pub(crate) fn https_host(text: &str) -> Option<String> {
    let url = Url::parse(text).ok()?;
    if url.scheme() != "https" || !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    url.host_str().map(str::to_ascii_lowercase)
}

/// Whether `host` is `domain` or a subdomain of it.
fn host_within(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(url: &str) -> VaultUrl {
        VaultUrl::parse(url).unwrap()
    }

    #[test]
    fn parses_the_challenges_services_send() {
        let azure = BearerChallenge::parse(
            r#"Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net""#,
        )
        .unwrap();
        assert_eq!(
            azure.authorization.as_deref(),
            Some("https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47")
        );
        assert_eq!(
            azure
                .scope_for(&vault("https://myvault.vault.azure.net"))
                .unwrap(),
            "https://vault.azure.net/.default"
        );
        let keyshift = BearerChallenge::parse(
            r#"Bearer authorization="https://localhost:8443/tenant-1", resource="https://localhost:8443""#,
        )
        .unwrap();
        assert_eq!(
            keyshift
                .scope_for(&vault("https://localhost:8443"))
                .unwrap(),
            "https://localhost:8443/.default"
        );
        assert_eq!(
            keyshift
                .scope_for(&vault("https://kv.localhost:9000"))
                .unwrap(),
            "https://localhost:8443/.default"
        );
        let scoped = BearerChallenge::parse(
            "bearer authorization_uri=https://login.example/t1,scope=\"https://managedhsm.azure.net/.default\"",
        )
        .unwrap();
        assert_eq!(
            scoped.authorization.as_deref(),
            Some("https://login.example/t1")
        );
        assert_eq!(
            scoped
                .scope_for(&vault("https://hsm1.managedhsm.azure.net"))
                .unwrap(),
            "https://managedhsm.azure.net/.default"
        );
    }

    #[test]
    fn refuses_malformed_challenges() {
        for header in [
            "",
            "Bearer",
            "Basic realm=\"x\"",
            "Bearerx resource=\"https://a\"",
            "Bearer resource=\"https://a",
            "Bearer =x",
            "Bearer realm=\"x\"",
            "Bearer resource=\"\"",
            &format!("Bearer resource=\"https://{}\"", "a".repeat(5000)),
        ] {
            assert_eq!(BearerChallenge::parse(header), None, "{header}");
        }
    }

    #[test]
    fn refuses_resources_outside_the_vault() {
        let v = vault("https://myvault.vault.azure.net");
        for resource in [
            "https://storage.azure.com",
            "https://evil.example",
            "https://azure.net.evil.example",
            "https://tvault.azure.net",
            "http://vault.azure.net",
            "https://user@vault.azure.net",
            "vault.azure.net",
        ] {
            let c = BearerChallenge {
                authorization: None,
                resource: Some(resource.into()),
                scope: None,
            };
            let e = c.scope_for(&v).expect_err(resource);
            assert_eq!(e.kind(), crate::ErrorKind::Unauthorized);
        }
        let none = BearerChallenge {
            authorization: Some("https://login.example/t".into()),
            resource: None,
            scope: None,
        };
        assert!(none.scope_for(&v).is_err());
    }
}

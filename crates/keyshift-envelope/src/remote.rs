//! A KEK in a vault that speaks the Azure Key Vault keys API (Keyshift, or Azure Key Vault
//! itself), reached through `keyshift-client`. Enabled by the `remote` feature.

use crate::kek::{Kek, KekError, WrappedKey};
use keyshift_client::{parse_kid, ClientError, ErrorKind, KeyClient};
use std::collections::HashMap;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// Wraps with `A256KW` under oct keys and `RSA-OAEP-256` under RSA keys, learning each key's type
/// once (`GET` of the key, which needs the keys/read action besides wrap and unwrap).
#[derive(Debug)]
pub struct RemoteKek {
    client: KeyClient,
    /// Key type by versioned kid (or kid as given).
    kinds: Mutex<HashMap<String, &'static str>>,
}

impl RemoteKek {
    /// A KEK reached through `client` (its credential decides who the caller is).
    pub fn new(client: KeyClient) -> Self {
        RemoteKek {
            client,
            kinds: Mutex::default(),
        }
    }

    async fn algorithm(&self, kid: &str) -> Result<&'static str, KekError> {
        if let Some(alg) = self
            .kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
        {
            return Ok(alg);
        }
        let parsed = parse_kid(kid).map_err(kek_error)?;
        let bundle = self
            .client
            .get_key(&parsed.vault_url, &parsed.name, parsed.version.as_deref())
            .await
            .map_err(kek_error)?;
        let kty = bundle.key.kty.unwrap_or_default();
        let alg = match kty.as_str() {
            "oct" | "oct-HSM" => "A256KW",
            "RSA" | "RSA-HSM" => "RSA-OAEP-256",
            other => {
                return Err(KekError::Other(format!(
                    "a {other} key cannot wrap keys: use an oct or RSA key as the KEK"
                )))
            }
        };
        self.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kid.to_owned(), alg);
        Ok(alg)
    }
}

fn kek_error(e: ClientError) -> KekError {
    let text = e.to_string();
    match e.kind() {
        ErrorKind::NotFound => KekError::NotFound(text),
        ErrorKind::Forbidden | ErrorKind::Unauthorized => KekError::Forbidden(text),
        ErrorKind::Throttled | ErrorKind::Unavailable | ErrorKind::Transport => {
            KekError::Unavailable(text)
        }
        // The vault refuses a wrapped key its key did not make with 400 BadParameter.
        ErrorKind::BadRequest => KekError::UnwrapFailed(text),
        _ => KekError::Other(text),
    }
}

#[async_trait::async_trait]
impl Kek for RemoteKek {
    async fn wrap(&self, kid: &str, key: &[u8]) -> Result<WrappedKey, KekError> {
        let alg = self.algorithm(kid).await?;
        let parsed = parse_kid(kid).map_err(kek_error)?;
        let out =
            self.client
                .wrap_key(&parsed, alg, key)
                .await
                .map_err(|e| match kek_error(e) {
                    // A wrap refused as a bad request is not an integrity failure.
                    KekError::UnwrapFailed(text) => KekError::Other(text),
                    other => other,
                })?;
        Ok(WrappedKey {
            kid: out.kid.clone(),
            alg: alg.to_owned(),
            bytes: out.value.clone(),
        })
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<Zeroizing<Vec<u8>>, KekError> {
        let parsed = parse_kid(&wrapped.kid).map_err(kek_error)?;
        let mut out = self
            .client
            .unwrap_key(&parsed, &wrapped.alg, &wrapped.bytes)
            .await
            .map_err(kek_error)?;
        Ok(Zeroizing::new(std::mem::take(&mut out.value)))
    }
}

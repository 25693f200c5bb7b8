//! A key inside a PKCS#11 token (an HSM; SoftHSM2 in the tests), wrapped for a vault's
//! key-exchange key by the token itself: the key is never in this process in the clear.
//!
//! The blob has the layout of `CKM_RSA_AES_KEY_WRAP`, built in two steps that any token with
//! AES key wrap and RSA-OAEP can do: a fresh AES-256 session key wraps the target key
//! (`CKM_AES_KEY_WRAP_PAD`, RFC 5649), then the key-exchange key's public key, imported as a
//! session object, wraps that AES key (`CKM_RSA_PKCS_OAEP`); ciphertext = RSA part || AES part.
//! The one-step mechanism `CKM_RSA_AES_KEY_WRAP` (0x1091) is not used even where a token has it:
//! cryptoki 0.12 cannot name it through its safe API (its mechanism lists drop the value and its
//! vendor-defined escape starts at 0x80000000), and SoftHSM2 2.6.1 does not implement it.

use anyhow::{anyhow, bail, Context, Result};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyshift_crypto::transfer::{OaepHash, TransferWrap};
use keyshift_crypto::{Curve, KeyFamily, PublicKey};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable naming the PKCS#11 module when `--pkcs11-module` is not given.
pub const MODULE_ENV: &str = "KEYSHIFT_PKCS11_MODULE";
/// The environment variable holding the user PIN when `--pin-file` is not given.
pub const PIN_ENV: &str = "KEYSHIFT_PKCS11_PIN";

/// `keyshift byok wrap` options that take the key from a PKCS#11 token instead of `--key`.
///
/// `--token-label`, not `--pkcs11-module`, is what `--key` excludes: the module may come from
/// `KEYSHIFT_PKCS11_MODULE`, read by [`TokenArgs::source`] rather than by clap, which counts an
/// `env` value as given and would then refuse every `--key` where the variable is set. Each
/// option also conflicts with `--key` itself: clap waives a `requires` whose target conflicts with
/// a present argument, so `requires = "token_label"` alone would let `--key F --key-id 01` through.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TokenArgs {
    /// The key is in the PKCS#11 token with this label (instead of --key).
    #[arg(long, requires = "token_key")]
    pub token_label: Option<String>,
    /// The token's PKCS#11 module, a shared library such as /usr/lib/softhsm/libsofthsm2.so
    /// [default: $KEYSHIFT_PKCS11_MODULE].
    #[arg(
        long,
        value_name = "LIBRARY",
        conflicts_with = "key",
        requires = "token_label"
    )]
    pub pkcs11_module: Option<PathBuf>,
    /// A file holding the token's user PIN [default: $KEYSHIFT_PKCS11_PIN]. There is no --pin:
    /// a PIN on the command line is visible to every user of the machine.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "key",
        requires = "token_label"
    )]
    pub pin_file: Option<PathBuf>,
    /// The label (CKA_LABEL) of the key in the token.
    #[arg(
        long,
        group = "token_key",
        conflicts_with = "key",
        requires = "token_label"
    )]
    pub key_label: Option<String>,
    /// The id (CKA_ID) of the key in the token, in hex (as pkcs11-tool --id takes it).
    #[arg(
        long,
        value_name = "HEX",
        group = "token_key",
        conflicts_with = "key",
        requires = "token_label"
    )]
    pub key_id: Option<String>,
}

/// Which object of the token is the key to transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKeyRef {
    /// By `CKA_LABEL`.
    Label(String),
    /// By `CKA_ID`.
    Id(Vec<u8>),
}

impl std::fmt::Display for TokenKeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenKeyRef::Label(label) => write!(f, "key labelled {label:?}"),
            TokenKeyRef::Id(id) => write!(f, "key with id {}", hex(id)),
        }
    }
}

/// A token key and how to reach it.
#[derive(Debug)]
pub struct TokenKeySource {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The user PIN (redacted in `Debug`, zeroized on drop).
    pub pin: AuthPin,
    /// The key.
    pub key: TokenKeyRef,
}

impl TokenArgs {
    /// Resolves the module and the PIN (flags, then environment) and the key reference.
    pub fn source(&self) -> Result<TokenKeySource> {
        let token_label = self
            .token_label
            .clone()
            .ok_or_else(|| anyhow!("--token-label is required to use a PKCS#11 token"))?;
        let module = match &self.pkcs11_module {
            Some(path) => path.clone(),
            None => std::env::var_os(MODULE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| {
                    anyhow!("the token's PKCS#11 module is needed: give --pkcs11-module or set {MODULE_ENV}")
                })?,
        };
        let key = match (&self.key_label, &self.key_id) {
            (Some(label), None) => TokenKeyRef::Label(label.clone()),
            (None, Some(id)) => TokenKeyRef::Id(parse_hex_id(id)?),
            _ => bail!("name the key in the token with --key-label or --key-id"),
        };
        Ok(TokenKeySource {
            module,
            token_label,
            pin: read_pin(self.pin_file.as_deref())?,
            key,
        })
    }
}

/// A `CKA_ID` given in hex, as pkcs11-tool prints and takes it (`:` separators allowed).
fn parse_hex_id(text: &str) -> Result<Vec<u8>> {
    let digits: String = text
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if digits.is_empty()
        || !digits.len().is_multiple_of(2)
        || !digits.chars().all(|c| c.is_ascii_hexdigit())
    {
        bail!(
            "--key-id must be hex digits, an even number of them (e.g. 01 or 4b:53), not {text:?}"
        );
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|e| anyhow!("--key-id: {e}")))
        .collect()
}

fn read_pin(pin_file: Option<&Path>) -> Result<AuthPin> {
    let text = match pin_file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the PIN file {}", path.display()))?,
        ),
        None => Zeroizing::new(
            std::env::var(PIN_ENV)
                .ok()
                .filter(|pin| !pin.is_empty())
                .ok_or_else(|| {
                    anyhow!("the token's user PIN is needed: give --pin-file FILE or set {PIN_ENV}")
                })?,
        ),
    };
    Ok(AuthPin::from(pin_text(&text)?))
}

/// The PIN in a PIN file's text: a file written with `echo` ends with a newline that is not
/// part of the PIN.
fn pin_text(text: &str) -> Result<&str> {
    let pin = text.trim_end_matches(['\r', '\n']);
    if pin.is_empty() {
        bail!("the user PIN is empty");
    }
    Ok(pin)
}

/// What a token key is, as the vault's import needs to be told (`kty`, `crv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenKeyKind {
    /// RSA, EC or AES (oct).
    pub family: KeyFamily,
    /// The modulus or AES key size, or the curve's size, in bits.
    pub bits: u32,
    /// The curve of an EC key.
    pub curve: Option<Curve>,
}

/// What the token must offer, in the order it is used.
const MECHANISMS: [(MechanismType, &str); 3] = [
    (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
    (MechanismType::AES_KEY_WRAP_PAD, "CKM_AES_KEY_WRAP_PAD"),
    (MechanismType::RSA_PKCS_OAEP, "CKM_RSA_PKCS_OAEP"),
];

/// A token key, wrapped for a key-exchange key.
#[derive(Debug)]
pub struct TokenWrapped {
    /// `RSA-OAEP(kek, ephemeral AES key) || AES-KWP(ephemeral, key)`.
    pub ciphertext: Vec<u8>,
    /// What the key is.
    pub kind: TokenKeyKind,
    /// The mechanisms the token used, in order.
    pub mechanisms: [&'static str; 3],
}

/// Logs in to the token, finds the key and has the token wrap it for `kek` with `wrap`.
pub fn wrap_token_key(
    source: &TokenKeySource,
    kek: &PublicKey,
    wrap: TransferWrap,
) -> Result<TokenWrapped> {
    let module = source.module.display();
    let pkcs11 = Pkcs11::new(&source.module)
        .map_err(|e| anyhow!("cannot load the PKCS#11 module {module}: {e}"))?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| anyhow!("cannot initialize the PKCS#11 module {module}: {}", ckr(&e)))?;
    let result = wrap_in_session(&pkcs11, source, kek, wrap);
    // Every session is closed by now (their session objects with them).
    if let Err(e) = pkcs11.finalize() {
        tracing::debug!("C_Finalize: {}", ckr(&e));
    }
    result
}

fn wrap_in_session(
    pkcs11: &Pkcs11,
    source: &TokenKeySource,
    kek: &PublicKey,
    wrap: TransferWrap,
) -> Result<TokenWrapped> {
    let token = &source.token_label;
    let slot = find_token(pkcs11, token, &source.module)?;
    let available = pkcs11
        .get_mechanism_list(slot)
        .map_err(|e| anyhow!("token {token:?}: cannot list its mechanisms: {}", ckr(&e)))?;
    for (needed, name) in MECHANISMS {
        if !available.contains(&needed) {
            bail!("token {token:?} does not offer {name}, which wrapping a key for transfer needs");
        }
    }
    // Read-only: nothing is written to the token; session objects are allowed in such a session.
    let session = pkcs11
        .open_ro_session(slot)
        .map_err(|e| anyhow!("token {token:?}: cannot open a session: {}", ckr(&e)))?;
    match session.login(UserType::User, Some(&source.pin)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(Pkcs11Error::Pkcs11(RvError::PinIncorrect, _)) => {
            bail!("token {token:?} refused the user PIN: it is wrong (CKR_PIN_INCORRECT)")
        }
        Err(Pkcs11Error::Pkcs11(RvError::PinLocked, _)) => {
            bail!("token {token:?}: the user PIN is locked after too many wrong tries (CKR_PIN_LOCKED)")
        }
        Err(e) => bail!("token {token:?}: cannot log in as user: {}", ckr(&e)),
    }
    let target = find_key(&session, &source.key, token)?;
    let kind = key_kind(&session, target, &source.key, token)?;

    let mut objects = SessionObjects {
        session: &session,
        handles: Vec::new(),
    };
    let wrapped = wrap_with_session_keys(&mut objects, target, kek, wrap, &source.key, token);
    // Destroyed before logging out: the session key is a private object, out of reach after it.
    drop(objects);
    let wrapped = wrapped?;
    if let Err(e) = session.logout() {
        tracing::debug!("C_Logout: {}", ckr(&e));
    }
    Ok(TokenWrapped {
        ciphertext: wrapped,
        kind,
        mechanisms: MECHANISMS.map(|(_, name)| name),
    })
}

/// The two wraps, with session objects recorded in `objects` for the caller to destroy.
fn wrap_with_session_keys(
    objects: &mut SessionObjects<'_>,
    target: ObjectHandle,
    kek: &PublicKey,
    wrap: TransferWrap,
    key: &TokenKeyRef,
    token: &str,
) -> Result<Vec<u8>> {
    let PublicKey::Rsa { n, e } = kek else {
        bail!("the key-exchange key is not an RSA key");
    };
    let session = objects.session;
    let kek_handle = session
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::Wrap(true),
            Attribute::Encrypt(false),
            Attribute::Verify(false),
            Attribute::Modulus(n.clone()),
            Attribute::PublicExponent(e.clone()),
            Attribute::Label(b"keyshift key-exchange key".to_vec()),
        ])
        .map_err(|e| {
            anyhow!(
                "token {token:?}: cannot import the key-exchange key's public key as a session object: {}",
                ckr(&e)
            )
        })?;
    objects.handles.push(kek_handle);
    let ephemeral = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::Wrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
            ],
        )
        .map_err(|e| {
            anyhow!(
                "token {token:?}: cannot generate an AES-256 session key: {}",
                ckr(&e)
            )
        })?;
    objects.handles.push(ephemeral);
    let wrapped_key = session
        .wrap_key(&Mechanism::AesKeyWrapPad, ephemeral, target)
        .map_err(|e| match e {
            Pkcs11Error::Pkcs11(RvError::KeyUnextractable, _) => anyhow!(
                "the {key} in token {token:?} is not extractable (CKR_KEY_UNEXTRACTABLE): it cannot be transferred"
            ),
            e => anyhow!(
                "token {token:?} cannot wrap the {key} with CKM_AES_KEY_WRAP_PAD: {}",
                ckr(&e)
            ),
        })?;
    let (hash, mgf) = match wrap.hash() {
        OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        OaepHash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
    };
    let oaep = PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty());
    let mut ciphertext = session
        .wrap_key(&Mechanism::RsaPkcsOaep(oaep), kek_handle, ephemeral)
        .map_err(|e| match wrap.hash() {
            OaepHash::Sha1 => anyhow!(
                "token {token:?} cannot wrap the session key with CKM_RSA_PKCS_OAEP (SHA-1): {}",
                ckr(&e)
            ),
            _ => anyhow!(
                "token {token:?} refused CKM_RSA_PKCS_OAEP with {hash} for --enc {} ({}); tokens such as SoftHSM2 2.6.1 do OAEP with SHA-1 only: use --enc {}",
                wrap.name(),
                ckr(&e),
                TransferWrap::RsaAesKeyWrap.name()
            ),
        })?;
    ciphertext.extend_from_slice(&wrapped_key);
    Ok(ciphertext)
}

/// Session objects made for one wrap, destroyed on drop, whatever happened. (Closing the session
/// would destroy them too; this does not wait for it, nor for a logout that hides private ones.)
struct SessionObjects<'a> {
    session: &'a Session,
    handles: Vec<ObjectHandle>,
}

impl Drop for SessionObjects<'_> {
    fn drop(&mut self) {
        for handle in self.handles.drain(..) {
            if let Err(e) = self.session.destroy_object(handle) {
                tracing::warn!("cannot destroy a session object: {}", ckr(&e));
            }
        }
    }
}

fn find_token(pkcs11: &Pkcs11, label: &str, module: &Path) -> Result<Slot> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| anyhow!("{}: cannot list the slots: {}", module.display(), ckr(&e)))?;
    let mut labels = Vec::new();
    for slot in slots {
        let Ok(info) = pkcs11.get_token_info(slot) else {
            continue;
        };
        if !info.token_initialized() {
            continue;
        }
        if info.label() == label {
            return Ok(slot);
        }
        labels.push(format!("{:?}", info.label()));
    }
    if labels.is_empty() {
        bail!(
            "no token labelled {label:?} in {}: it has no initialized token",
            module.display()
        )
    }
    bail!(
        "no token labelled {label:?} in {} (its tokens: {})",
        module.display(),
        labels.join(", ")
    )
}

fn find_key(session: &Session, key: &TokenKeyRef, token: &str) -> Result<ObjectHandle> {
    let by = match key {
        TokenKeyRef::Label(label) => Attribute::Label(label.as_bytes().to_vec()),
        TokenKeyRef::Id(id) => Attribute::Id(id.clone()),
    };
    let mut keys = Vec::new();
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
        keys.extend(
            session
                .find_objects(&[Attribute::Class(class), by.clone()])
                .map_err(|e| {
                    anyhow!("token {token:?}: cannot search for the {key}: {}", ckr(&e))
                })?,
        );
    }
    match keys.as_slice() {
        [one] => Ok(*one),
        [] if session.find_objects(&[by]).is_ok_and(|other| !other.is_empty()) => bail!(
            "token {token:?} has no private or secret {key}, only public keys, certificates or data objects"
        ),
        [] => bail!("token {token:?} has no {key} (after login as user)"),
        more => bail!(
            "token {token:?} has {} private or secret keys that match the {key}: name one with --key-id",
            more.len()
        ),
    }
}

/// The family, size and curve of the key, refusing a key that cannot leave the token or that a
/// vault cannot hold.
fn key_kind(
    session: &Session,
    handle: ObjectHandle,
    key: &TokenKeyRef,
    token: &str,
) -> Result<TokenKeyKind> {
    let attributes = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::Extractable,
                AttributeType::Modulus,
                AttributeType::EcParams,
                AttributeType::ValueLen,
            ],
        )
        .map_err(|e| {
            anyhow!(
                "token {token:?}: cannot read the {key}'s attributes: {}",
                ckr(&e)
            )
        })?;
    let (mut key_type, mut extractable, mut modulus, mut ec_params, mut value_len) =
        (None, None, None, None, None);
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::Extractable(x) => extractable = Some(x),
            Attribute::Modulus(n) => modulus = Some(n),
            Attribute::EcParams(p) => ec_params = Some(p),
            Attribute::ValueLen(len) => value_len = Some(usize::from(len)),
            _ => {}
        }
    }
    if extractable != Some(true) {
        bail!(
            "the {key} in token {token:?} was created non-extractable (CKA_EXTRACTABLE false): no token lets such a key out, so it cannot be transferred; \
             bring a key that was generated extractable (pkcs11-tool --extractable)"
        );
    }
    match key_type {
        Some(t) if t == KeyType::RSA => {
            let n = modulus
                .ok_or_else(|| anyhow!("token {token:?}: the RSA {key} has no readable modulus"))?;
            Ok(TokenKeyKind {
                family: KeyFamily::Rsa,
                bits: bit_length(&n),
                curve: None,
            })
        }
        Some(t) if t == KeyType::EC => {
            let params = ec_params
                .ok_or_else(|| anyhow!("token {token:?}: the EC {key} has no CKA_EC_PARAMS"))?;
            let curve = curve_of_ec_params(&params).ok_or_else(|| {
                anyhow!(
                    "the EC {key} in token {token:?} is on a curve a vault does not hold (CKA_EC_PARAMS {}): P-256, P-384, P-521 and secp256k1 are supported",
                    hex(&params)
                )
            })?;
            Ok(TokenKeyKind {
                family: KeyFamily::Ec,
                bits: curve_bits(curve),
                curve: Some(curve),
            })
        }
        Some(t) if t == KeyType::AES => {
            let bytes = value_len
                .ok_or_else(|| anyhow!("token {token:?}: the AES {key} has no CKA_VALUE_LEN"))?;
            if ![16, 24, 32].contains(&bytes) {
                bail!("the AES {key} in token {token:?} is {bytes} bytes long: a vault holds 128, 192 and 256-bit AES keys");
            }
            Ok(TokenKeyKind {
                family: KeyFamily::Oct,
                bits: u32::try_from(bytes * 8)?,
                curve: None,
            })
        }
        Some(other) => bail!(
            "the {key} in token {token:?} is of type {other}: a vault imports RSA, EC and AES keys"
        ),
        None => bail!("token {token:?}: the {key} has no readable CKA_KEY_TYPE"),
    }
}

/// The named curve of a `CKA_EC_PARAMS` (DER of the curve's OID, as every token writes it).
fn curve_of_ec_params(params: &[u8]) -> Option<Curve> {
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    const P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
    const SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
    match params {
        P256 => Some(Curve::P256),
        P384 => Some(Curve::P384),
        P521 => Some(Curve::P521),
        SECP256K1 => Some(Curve::P256K),
        _ => None,
    }
}

fn curve_bits(curve: Curve) -> u32 {
    match curve {
        Curve::P256 | Curve::P256K => 256,
        Curve::P384 => 384,
        Curve::P521 => 521,
    }
}

fn bit_length(big_endian: &[u8]) -> u32 {
    let Some(first) = big_endian.iter().position(|b| *b != 0) else {
        return 0;
    };
    let rest = u32::try_from(big_endian.len() - first - 1).unwrap_or(u32::MAX / 16);
    rest * 8 + (8 - big_endian[first].leading_zeros())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A PKCS#11 failure as its `CKR_*` name, the one every token's documentation uses.
fn ckr(error: &Pkcs11Error) -> String {
    match error {
        Pkcs11Error::Pkcs11(rv, function) => {
            let name: String = format!("{rv:?}")
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    let sep = (i > 0 && c.is_ascii_uppercase()).then_some('_');
                    sep.into_iter()
                        .chain(std::iter::once(c.to_ascii_uppercase()))
                })
                .collect();
            format!("C_{function:?} returned CKR_{name}")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_hex() {
        assert_eq!(parse_hex_id("01").unwrap(), vec![1]);
        assert_eq!(parse_hex_id("4b:53").unwrap(), vec![0x4b, 0x53]);
        assert_eq!(parse_hex_id("0xA0ff").unwrap(), vec![0xa0, 0xff]);
        for bad in ["", "1", "zz", "0x", "01 02"] {
            assert!(parse_hex_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn named_curves_are_recognised_and_others_are_not() {
        let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert_eq!(curve_of_ec_params(&p256), Some(Curve::P256));
        assert_eq!(
            curve_of_ec_params(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]),
            Some(Curve::P384)
        );
        // brainpoolP256r1, and explicit parameters (a SEQUENCE): not a vault's curve.
        let brainpool = [
            0x06, 0x09, 0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07,
        ];
        assert_eq!(curve_of_ec_params(&brainpool), None);
        assert_eq!(curve_of_ec_params(&[0x30, 0x00]), None);
    }

    #[test]
    fn pkcs11_errors_read_as_ckr_names() {
        let e = Pkcs11Error::Pkcs11(RvError::PinIncorrect, cryptoki::context::Function::Login);
        assert_eq!(ckr(&e), "C_Login returned CKR_PIN_INCORRECT");
        let e = Pkcs11Error::Pkcs11(
            RvError::MechanismParamInvalid,
            cryptoki::context::Function::WrapKey,
        );
        assert_eq!(ckr(&e), "C_WrapKey returned CKR_MECHANISM_PARAM_INVALID");
    }

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_length(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[0xc5; 256]), 2048);
        assert_eq!(bit_length(&[]), 0);
    }

    #[test]
    fn the_pin_comes_from_a_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "1234\n").unwrap();
        assert!(read_pin(Some(&path)).is_ok());
        std::fs::write(&path, "\n").unwrap();
        assert!(read_pin(Some(&path)).is_err());
        assert!(read_pin(Some(&dir.path().join("missing"))).is_err());
        assert_eq!(pin_text("1234\r\n").unwrap(), "1234");
        assert_eq!(pin_text(" 12 34").unwrap(), " 12 34");
    }
}

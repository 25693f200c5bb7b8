//! `-HSM` keys in a PKCS#11 token: [`Pkcs11Backend`] implements [`HsmBackend`]
//! with the `cryptoki` crate (module loaded at run time; SoftHSM2 in the tests).
//!
//! Keys are made in the token as token objects with `CKA_SENSITIVE` true,
//! `CKA_EXTRACTABLE` false and `CKA_PRIVATE` true, a random 16-byte `CKA_ID` (the
//! [`HsmKeyRef`]) and the caller's `CKA_LABEL`, and only the usage flags their
//! family needs. Every operation with the private or secret part runs in the
//! token; a mechanism the token lacks is [`CryptoError::Unsupported`], named,
//! and never done in software (there is nothing to do it with).
//!
//! Sessions: one is opened at [`Pkcs11Backend::connect`] to log in (PKCS#11
//! login holds for the whole application and token while any session stays
//! open) and kept for the backend's life; operations borrow read-write sessions
//! from a pool of at most [`Pkcs11Config::max_sessions`], shared by all threads.
//! Every call blocks: async callers use a blocking thread.

mod errors;
mod mechanism;
mod session;
mod transfer;

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::{Zeroize, Zeroizing};

use self::errors::{ckr, map_error, Doing};
use self::mechanism::Chosen;
use self::session::{ModuleLease, PooledSession, SessionPool};
use crate::algorithm::{EncryptionAlgorithm, SignatureAlgorithm};
use crate::error::{invalid_input, invalid_key, CryptoError, Result};
use crate::hsm::checks::{cipher_params, CipherParams};
use crate::hsm::{HsmBackend, HsmKey, HsmKeyFacts, HsmKeyRef, HsmKeySpec};
use crate::jwk::{strip_leading_zeros, PublicKey};
use crate::key::{EncryptOutput, KeyMaterial};
use crate::random_bytes;
use crate::transfer::TransferWrap;

/// Sessions a backend opens at most, besides the one that holds the login,
/// unless configured otherwise.
pub const DEFAULT_MAX_SESSIONS: usize = 8;
/// How long an operation waits for a free session before it fails, unless
/// configured otherwise.
pub const DEFAULT_SESSION_WAIT: Duration = Duration::from_secs(30);

/// Length of the random `CKA_ID` given to each key.
const ID_LEN: usize = 16;
const GCM_IV_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;
const BLOCK: usize = 16;

/// Where the token's user PIN comes from. There is deliberately no way to give
/// the PIN itself: a PIN in an argument or a configuration file ends up in shell
/// histories, process lists and backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN (a trailing newline is not part of it). Keep it
    /// mode 0600.
    File(PathBuf),
    /// The environment variable with this name.
    Env(String),
}

impl PinSource {
    fn read(&self) -> Result<AuthPin> {
        let text = match self {
            PinSource::File(path) => {
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    CryptoError::Backend(format!(
                        "cannot read the PIN file {}: {}",
                        path.display(),
                        e.kind()
                    ))
                })?)
            }
            PinSource::Env(name) => Zeroizing::new(std::env::var(name).map_err(|_| {
                CryptoError::Backend(format!(
                    "the user PIN is to come from the environment variable {name}, which is not set"
                ))
            })?),
        };
        let pin = text.trim_end_matches(['\r', '\n']);
        if pin.is_empty() {
            return Err(CryptoError::Backend("the user PIN is empty".into()));
        }
        Ok(AuthPin::from(pin))
    }
}

/// How to reach the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// The token's PKCS#11 module, such as `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label (`CKA_LABEL` of the token, as `pkcs11-tool -L` shows it).
    pub token_label: String,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// Most sessions open for operations at once (at least 1).
    pub max_sessions: usize,
    /// How long an operation waits for a free session.
    pub session_wait: Duration,
}

impl Pkcs11Config {
    /// A configuration with the default pool size and wait.
    pub fn new(module: impl Into<PathBuf>, token_label: impl Into<String>, pin: PinSource) -> Self {
        Self {
            module: module.into(),
            token_label: token_label.into(),
            pin,
            max_sessions: DEFAULT_MAX_SESSIONS,
            session_wait: DEFAULT_SESSION_WAIT,
        }
    }
}

/// Keys in one PKCS#11 token. See the [module documentation](self).
pub struct Pkcs11Backend {
    // Fields drop in this order: pooled sessions, then the login session, then
    // the module (C_Finalize when no other backend in the process uses it).
    pool: SessionPool,
    /// Holds the token's login for as long as the backend lives; never used for
    /// operations (a session is not `Sync`, hence the mutex).
    _login: Mutex<Session>,
    token: String,
    /// The token's manufacturer and model, as it describes itself.
    platform: String,
    mechanisms: Vec<MechanismType>,
    quirks: Quirks,
    module: ModuleLease,
}

/// What a known token gets wrong, found from the module's own description.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Quirks {
    /// SoftHSM2 up to 2.6 zero-pads the key to a multiple of 8 bytes before
    /// `CKM_AES_KEY_WRAP_PAD` and records the padded length, so what it wraps
    /// from any other length unwraps elsewhere (RFC 5649) longer than it was.
    /// Its unwrap is right.
    kwp_wrap_whole_blocks_only: bool,
}

impl Quirks {
    fn of(pkcs11: &Pkcs11) -> Self {
        let Ok(info) = pkcs11.get_library_info() else {
            return Self::default();
        };
        let version = info.library_version();
        let softhsm_2_6 = info.manufacturer_id().starts_with("SoftHSM")
            && (version.major(), version.minor()) <= (2, 6);
        Self {
            kwp_wrap_whole_blocks_only: softhsm_2_6,
        }
    }
}

impl fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.module.path())
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Backend {
    /// Loads the module (or shares it with another backend of this process),
    /// finds the token by label and logs in as user. Errors name the module, the
    /// token and the `CKR_*` code, never the PIN.
    pub fn connect(config: &Pkcs11Config) -> Result<Self> {
        let pin = config.pin.read()?;
        let module = ModuleLease::acquire(&config.module)?;
        let token = config.token_label.clone();
        let slot = find_token(module.pkcs11(), &token, &config.module)?;
        let backend_error = |what: &str, e: &Pkcs11Error| {
            CryptoError::Backend(format!("token {token:?}: {what}: {}", ckr(e)))
        };
        let mechanisms = module
            .pkcs11()
            .get_mechanism_list(slot)
            .map_err(|e| backend_error("cannot list its mechanisms", &e))?;
        let login = module
            .pkcs11()
            .open_rw_session(slot)
            .map_err(|e| backend_error("cannot open a session", &e))?;
        match login.login(UserType::User, Some(&pin)) {
            // Another backend of this process is logged in to this token already.
            Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e @ Pkcs11Error::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(backend_error("the user PIN is wrong", &e))
            }
            Err(e @ Pkcs11Error::Pkcs11(RvError::PinLocked, _)) => {
                return Err(backend_error(
                    "the user PIN is locked after too many wrong tries",
                    &e,
                ))
            }
            Err(e) => return Err(backend_error("cannot log in as user", &e)),
        }
        drop(pin);
        let quirks = Quirks::of(module.pkcs11());
        let platform = module
            .pkcs11()
            .get_token_info(slot)
            .map(|info| format!("{} {}", info.manufacturer_id().trim(), info.model().trim()))
            .unwrap_or_else(|_| "PKCS#11 token".into());
        let pool = SessionPool::new(
            module.pkcs11().clone(),
            slot,
            &token,
            config.max_sessions,
            config.session_wait,
        );
        Ok(Self {
            pool,
            _login: Mutex::new(login),
            token,
            platform,
            mechanisms,
            quirks,
            module,
        })
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token
    }

    /// The token's manufacturer and model, such as `SoftHSM project SoftHSM v2`.
    pub fn platform(&self) -> &str {
        &self.platform
    }

    fn require(&self, mechanism: MechanismType, name: &str) -> Result<()> {
        if self.mechanisms.contains(&mechanism) {
            Ok(())
        } else {
            Err(CryptoError::Unsupported(format!(
                "token {:?} does not offer {name}",
                self.token
            )))
        }
    }

    fn session(&self) -> Result<PooledSession<'_>> {
        self.pool.session()
    }

    /// The error for a failed call on `session`, which is closed rather than
    /// reused when the error says it is broken.
    fn fail(&self, session: &PooledSession<'_>, doing: Doing<'_>, e: &Pkcs11Error) -> CryptoError {
        session.note(e);
        map_error(&self.token, doing, e)
    }

    /// The one object of `class` that is `key`, checked to be of its family
    /// (and, for AES, of its size).
    fn find(
        &self,
        session: &PooledSession<'_>,
        key: &HsmKey,
        class: ObjectClass,
    ) -> Result<ObjectHandle> {
        let mut template = vec![
            Attribute::Class(class),
            Attribute::Id(key.reference.as_bytes().to_vec()),
        ];
        match &key.public {
            PublicKey::Rsa { .. } => template.push(Attribute::KeyType(KeyType::RSA)),
            PublicKey::Ec { .. } => template.push(Attribute::KeyType(KeyType::EC)),
            PublicKey::Oct { bits } => {
                template.push(Attribute::KeyType(KeyType::AES));
                template.push(Attribute::ValueLen(u64::from(bits / 8).into()));
            }
        }
        let found = session
            .find_objects(&template)
            .map_err(|e| self.fail(session, Doing::Read, &e))?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(CryptoError::KeyNotFound(format!(
                "token {:?} has no {class} of this type with id {}",
                self.token, key.reference
            ))),
            more => Err(CryptoError::Backend(format!(
                "token {:?} has {} objects of class {class} with id {}",
                self.token,
                more.len(),
                key.reference
            ))),
        }
    }

    fn rsa_modulus_len(key: &HsmKey) -> usize {
        (key.size_bits() as usize).div_ceil(8)
    }

    fn rsa_encrypt(
        &self,
        key: &HsmKey,
        alg: EncryptionAlgorithm,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let chosen = mechanism::rsa_encryption(alg)?;
        let max = Self::rsa_modulus_len(key).saturating_sub(mechanism::rsa_padding_overhead(alg));
        if plaintext.len() > max {
            return Err(invalid_input(
                "plaintext too long for this RSA key and padding",
            ));
        }
        self.require(chosen.mechanism.mechanism_type(), chosen.name)?;
        let session = self.session()?;
        let public = self.find(&session, key, ObjectClass::PUBLIC_KEY)?;
        session
            .encrypt(&chosen.mechanism, public, plaintext)
            .map_err(|e| self.fail(&session, Doing::Use(chosen.name), &e))
    }

    fn rsa_decrypt(
        &self,
        key: &HsmKey,
        alg: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let chosen = mechanism::rsa_encryption(alg)?;
        if ciphertext.len() != Self::rsa_modulus_len(key) {
            return Err(invalid_input(
                "RSA ciphertext length must equal the modulus length",
            ));
        }
        self.require(chosen.mechanism.mechanism_type(), chosen.name)?;
        let session = self.session()?;
        let private = self.find(&session, key, ObjectClass::PRIVATE_KEY)?;
        session
            .decrypt(&chosen.mechanism, private, ciphertext)
            .map(Zeroizing::new)
            .map_err(|e| self.fail(&session, Doing::Open(chosen.name), &e))
    }

    /// One AES operation in the token with the secret key.
    fn aes(
        &self,
        key: &HsmKey,
        chosen: &Chosen,
        input: &[u8],
        decrypting: bool,
    ) -> Result<Vec<u8>> {
        self.require(chosen.mechanism.mechanism_type(), chosen.name)?;
        let session = self.session()?;
        let secret = self.find(&session, key, ObjectClass::SECRET_KEY)?;
        if decrypting {
            session
                .decrypt(&chosen.mechanism, secret, input)
                .map_err(|e| self.fail(&session, Doing::Open(chosen.name), &e))
        } else {
            session
                .encrypt(&chosen.mechanism, secret, input)
                .map_err(|e| self.fail(&session, Doing::Use(chosen.name), &e))
        }
    }

    fn gcm(
        &self,
        key: &HsmKey,
        iv: &[u8],
        aad: &[u8],
        input: &[u8],
        decrypting: bool,
    ) -> Result<Vec<u8>> {
        let mut iv = iv.to_vec();
        let params = GcmParams::new(&mut iv, aad, u64::from(GCM_TAG_LEN as u32 * 8).into())
            .map_err(|_| invalid_input("AES-GCM iv or aad too long"))?;
        self.require(MechanismType::AES_GCM, "CKM_AES_GCM")?;
        let mechanism = Mechanism::AesGcm(params);
        let session = self.session()?;
        let secret = self.find(&session, key, ObjectClass::SECRET_KEY)?;
        if decrypting {
            session
                .decrypt(&mechanism, secret, input)
                .map_err(|e| self.fail(&session, Doing::Open("CKM_AES_GCM"), &e))
        } else {
            session
                .encrypt(&mechanism, secret, input)
                .map_err(|e| self.fail(&session, Doing::Use("CKM_AES_GCM"), &e))
        }
    }

    fn key_wrap_mechanism(pad: bool) -> (Mechanism<'static>, &'static str) {
        if pad {
            (Mechanism::AesKeyWrapPad, "CKM_AES_KEY_WRAP_PAD")
        } else {
            (Mechanism::AesKeyWrap, "CKM_AES_KEY_WRAP")
        }
    }

    /// AES key wrap of the caller's bytes: PKCS#11 wraps keys, not data, so the
    /// bytes become a session object (a generic secret, gone with the call) that
    /// the token key wraps with `C_WrapKey`.
    fn aes_wrap(&self, key: &HsmKey, pad: bool, key_bytes: &[u8]) -> Result<Vec<u8>> {
        if pad {
            if key_bytes.is_empty() || u32::try_from(key_bytes.len()).is_err() {
                return Err(invalid_input("AES key wrap input must not be empty"));
            }
        } else if key_bytes.len() < 16 || !key_bytes.len().is_multiple_of(8) {
            return Err(invalid_input(
                "AES key wrap input must be at least 16 bytes and a multiple of 8",
            ));
        }
        let (mechanism, name) = Self::key_wrap_mechanism(pad);
        self.require(mechanism.mechanism_type(), name)?;
        if pad && self.quirks.kwp_wrap_whole_blocks_only && !key_bytes.len().is_multiple_of(8) {
            return Err(CryptoError::Unsupported(format!(
                "token {:?} cannot do {name} of {} bytes: SoftHSM2 up to 2.6 pads the key \
                 before wrapping and the result does not unwrap to it elsewhere; lengths that \
                 are a multiple of 8 are right",
                self.token,
                key_bytes.len()
            )));
        }
        let session = self.session()?;
        let kek = self.find(&session, key, ObjectClass::SECRET_KEY)?;
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Value(key_bytes.to_vec()),
        ];
        let created = session.create_object(&template);
        wipe_values(&mut template);
        let object = SessionObject {
            session: &session,
            handle: created.map_err(|e| {
                self.fail(
                    &session,
                    Doing::Use("C_CreateObject of the key to wrap"),
                    &e,
                )
            })?,
        };
        session
            .wrap_key(&mechanism, kek, object.handle)
            .map_err(|e| self.fail(&session, Doing::Use(name), &e))
    }

    /// AES key unwrap to the caller: the token unwraps into a session object
    /// (extractable, not sensitive: its value is the answer) that is read and
    /// destroyed.
    fn aes_unwrap(&self, key: &HsmKey, pad: bool, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let min = if pad { 16 } else { 24 };
        if wrapped.len() < min || !wrapped.len().is_multiple_of(8) {
            return Err(invalid_input(format!(
                "AES key wrap ciphertext must be at least {min} bytes and a multiple of 8"
            )));
        }
        let (mechanism, name) = Self::key_wrap_mechanism(pad);
        self.require(mechanism.mechanism_type(), name)?;
        let session = self.session()?;
        let kek = self.find(&session, key, ObjectClass::SECRET_KEY)?;
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ];
        let object = SessionObject {
            session: &session,
            handle: session
                .unwrap_key(&mechanism, kek, wrapped, &template)
                .map_err(|e| self.fail(&session, Doing::Open(name), &e))?,
        };
        let attributes = session
            .get_attributes(object.handle, &[AttributeType::Value])
            .map_err(|e| self.fail(&session, Doing::Read, &e))?;
        attributes
            .into_iter()
            .find_map(|attribute| match attribute {
                Attribute::Value(value) => Some(Zeroizing::new(value)),
                _ => None,
            })
            .ok_or_else(|| {
                CryptoError::Backend(format!(
                    "token {:?}: the unwrapped key's value cannot be read",
                    self.token
                ))
            })
    }

    /// Reads the public part of a key pair, or the size of a secret key.
    fn public_part(
        &self,
        session: &PooledSession<'_>,
        objects: &[(ObjectHandle, ObjectClass, KeyType)],
        reference: &HsmKeyRef,
    ) -> Result<(PublicKey, String)> {
        let secret_or_private = objects
            .iter()
            .find(|(_, class, _)| {
                *class == ObjectClass::PRIVATE_KEY || *class == ObjectClass::SECRET_KEY
            })
            .ok_or_else(|| {
                CryptoError::KeyNotFound(format!(
                    "token {:?} has no private or secret key with id {reference}",
                    self.token
                ))
            })?;
        let (handle, _, key_type) = *secret_or_private;
        let read = |handle, types: &[AttributeType]| {
            session
                .get_attributes(handle, types)
                .map_err(|e| self.fail(session, Doing::Read, &e))
        };
        let mut label = String::new();
        let mut modulus = None;
        let mut exponent = None;
        let mut ec_params = None;
        let mut value_len = None;
        for attribute in read(
            handle,
            &[
                AttributeType::Label,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::EcParams,
                AttributeType::ValueLen,
            ],
        )? {
            match attribute {
                Attribute::Label(bytes) => label = String::from_utf8_lossy(&bytes).into_owned(),
                Attribute::Modulus(n) => modulus = Some(n),
                Attribute::PublicExponent(e) => exponent = Some(e),
                Attribute::EcParams(p) => ec_params = Some(p),
                Attribute::ValueLen(len) => value_len = Some(usize::from(len)),
                _ => {}
            }
        }
        let unreadable = |what: &str| {
            CryptoError::Backend(format!(
                "token {:?}: key {reference} has no readable {what}",
                self.token
            ))
        };
        let public = if key_type == KeyType::RSA {
            let (Some(n), Some(e)) = (modulus, exponent) else {
                return Err(unreadable("CKA_MODULUS or CKA_PUBLIC_EXPONENT"));
            };
            PublicKey::Rsa {
                n: strip_leading_zeros(&n).to_vec(),
                e: strip_leading_zeros(&e).to_vec(),
            }
        } else if key_type == KeyType::EC {
            let params = ec_params.ok_or_else(|| unreadable("CKA_EC_PARAMS"))?;
            let curve = mechanism::curve_of_params(&params)
                .ok_or_else(|| invalid_key("the token key is on a curve a vault does not hold"))?;
            let (public, _, _) = objects
                .iter()
                .find(|(_, class, _)| *class == ObjectClass::PUBLIC_KEY)
                .ok_or_else(|| unreadable("public key object"))?;
            let point = read(*public, &[AttributeType::EcPoint])?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                })
                .ok_or_else(|| unreadable("CKA_EC_POINT"))?;
            let (x, y) = mechanism::ec_point_xy(curve, &point)?;
            PublicKey::Ec { crv: curve, x, y }
        } else if key_type == KeyType::AES {
            let bytes = value_len.ok_or_else(|| unreadable("CKA_VALUE_LEN"))?;
            if ![16, 24, 32].contains(&bytes) {
                return Err(invalid_key(format!(
                    "the token's AES key {reference} is {} bits: a vault holds 128, 192 and \
                     256-bit keys",
                    bytes * 8
                )));
            }
            PublicKey::Oct {
                bits: u32::try_from(bytes * 8).map_err(|_| invalid_key("AES key too long"))?,
            }
        } else {
            return Err(invalid_key(format!(
                "the token key {reference} is of type {key_type}, not RSA, EC or AES"
            )));
        };
        Ok((public, label))
    }

    /// The objects with `reference` as `CKA_ID`, with their class and key type.
    fn objects(
        &self,
        session: &PooledSession<'_>,
        reference: &HsmKeyRef,
    ) -> Result<Vec<(ObjectHandle, ObjectClass, KeyType)>> {
        let handles = session
            .find_objects(&[Attribute::Id(reference.as_bytes().to_vec())])
            .map_err(|e| self.fail(session, Doing::Read, &e))?;
        let mut objects = Vec::with_capacity(handles.len());
        for handle in handles {
            let mut class = None;
            let mut key_type = None;
            for attribute in session
                .get_attributes(handle, &[AttributeType::Class, AttributeType::KeyType])
                .map_err(|e| self.fail(session, Doing::Read, &e))?
            {
                match attribute {
                    Attribute::Class(c) => class = Some(c),
                    Attribute::KeyType(t) => key_type = Some(t),
                    _ => {}
                }
            }
            if let (Some(class), Some(key_type)) = (class, key_type) {
                objects.push((handle, class, key_type));
            }
        }
        Ok(objects)
    }
}

/// The template attributes every key object gets.
fn owned_by_token(id: &[u8], label: &str) -> [Attribute; 4] {
    [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// What a private or secret key object must be: kept in the token, never readable; an exportable
/// one may leave it wrapped (`C_WrapKey`), for secure key release.
fn kept_in_token(exportable: bool) -> [Attribute; 2] {
    [
        Attribute::Sensitive(true),
        Attribute::Extractable(exportable),
    ]
}

fn wipe_values(template: &mut [Attribute]) {
    for attribute in template {
        if let Attribute::Value(value) = attribute {
            value.zeroize();
        }
    }
}

/// A session object destroyed when the call that made it ends, however it ends.
struct SessionObject<'s, 'p> {
    session: &'s PooledSession<'p>,
    handle: ObjectHandle,
}

impl Drop for SessionObject<'_, '_> {
    fn drop(&mut self) {
        if self.session.destroy_object(self.handle).is_err() {
            // Closing the session destroys its objects: it is not lent again.
            self.session.discard();
        }
    }
}

impl HsmBackend for Pkcs11Backend {
    fn generate_with(&self, spec: HsmKeySpec, label: &str, exportable: bool) -> Result<HsmKey> {
        spec.check()?;
        let id = random_bytes(ID_LEN)?;
        let reference = HsmKeyRef::from_bytes(&id)?;
        let session = self.session()?;
        let ours = owned_by_token(&id, label);
        let handles = match spec {
            HsmKeySpec::Rsa { bits } => {
                let name = "CKM_RSA_PKCS_KEY_PAIR_GEN";
                self.require(MechanismType::RSA_PKCS_KEY_PAIR_GEN, name)?;
                let mut public = vec![
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::ModulusBits(u64::from(bits).into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    Attribute::Verify(true),
                    Attribute::Encrypt(true),
                    Attribute::Wrap(true),
                    Attribute::Derive(false),
                ];
                public.extend(ours.iter().cloned());
                let mut private = vec![
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Sign(true),
                    Attribute::Decrypt(true),
                    Attribute::Unwrap(true),
                    Attribute::Derive(false),
                ];
                private.extend(ours.iter().cloned());
                private.extend(kept_in_token(exportable));
                let (public, private) = session
                    .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
                    .map_err(|e| {
                        self.fail(
                            &session,
                            Doing::Generate(&format!("{name} of {bits} bits")),
                            &e,
                        )
                    })?;
                vec![public, private]
            }
            HsmKeySpec::Ec { curve } => {
                let name = format!("CKM_EC_KEY_PAIR_GEN on {}", curve.jwk_name());
                self.require(MechanismType::ECC_KEY_PAIR_GEN, &name)?;
                let mut public = vec![
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::KeyType(KeyType::EC),
                    Attribute::EcParams(mechanism::curve_params(curve).to_vec()),
                    Attribute::Verify(true),
                    Attribute::Encrypt(false),
                    Attribute::Wrap(false),
                    Attribute::Derive(false),
                ];
                public.extend(ours.iter().cloned());
                let mut private = vec![
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(KeyType::EC),
                    Attribute::Sign(true),
                    Attribute::Decrypt(false),
                    Attribute::Unwrap(false),
                    Attribute::Derive(false),
                ];
                private.extend(ours.iter().cloned());
                private.extend(kept_in_token(exportable));
                let (public, private) = session
                    .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
                    .map_err(|e| self.fail(&session, Doing::Generate(&name), &e))?;
                vec![public, private]
            }
            HsmKeySpec::Oct { bits } => {
                let name = "CKM_AES_KEY_GEN";
                self.require(MechanismType::AES_KEY_GEN, name)?;
                let mut template = vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(u64::from(bits / 8).into()),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                    Attribute::Sign(false),
                    Attribute::Verify(false),
                    Attribute::Derive(false),
                ];
                template.extend(ours.iter().cloned());
                template.extend(kept_in_token(exportable));
                let secret = session
                    .generate_key(&Mechanism::AesKeyGen, &template)
                    .map_err(|e| {
                        self.fail(
                            &session,
                            Doing::Generate(&format!("{name} of {bits} bits")),
                            &e,
                        )
                    })?;
                vec![secret]
            }
        };
        let described = self
            .objects(&session, &reference)
            .and_then(|objects| self.public_part(&session, &objects, &reference));
        match described {
            Ok((public, label)) => Ok(HsmKey {
                reference,
                label,
                public,
            }),
            Err(e) => {
                // A key nobody can describe is a key nobody will use or purge.
                for handle in handles {
                    let _ = session.destroy_object(handle);
                }
                Err(e)
            }
        }
    }

    fn import(&self, material: &KeyMaterial, label: &str, exportable: bool) -> Result<HsmKey> {
        self.import_material(material, label, exportable)
    }

    fn wrap_for_transfer(
        &self,
        key: &HsmKey,
        kek: &PublicKey,
        wrap: TransferWrap,
    ) -> Result<Vec<u8>> {
        self.wrap_out(key, kek, wrap)
    }

    fn open(&self, reference: &HsmKeyRef) -> Result<HsmKey> {
        let session = self.session()?;
        let objects = self.objects(&session, reference)?;
        let (public, label) = self.public_part(&session, &objects, reference)?;
        Ok(HsmKey {
            reference: reference.clone(),
            label,
            public,
        })
    }

    fn sign(&self, key: &HsmKey, alg: SignatureAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        key.check_signature(alg, digest)?;
        let (chosen, digest_info) = mechanism::signing(alg);
        self.require(chosen.mechanism.mechanism_type(), chosen.name)?;
        let data = if digest_info {
            let mut data = mechanism::digest_info_prefix(digest.len()).to_vec();
            data.extend_from_slice(digest);
            data
        } else {
            digest.to_vec()
        };
        let session = self.session()?;
        let private = self.find(&session, key, ObjectClass::PRIVATE_KEY)?;
        session
            .sign(&chosen.mechanism, private, &data)
            .map_err(|e| self.fail(&session, Doing::Use(chosen.name), &e))
    }

    fn encrypt(
        &self,
        key: &HsmKey,
        alg: EncryptionAlgorithm,
        plaintext: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
    ) -> Result<EncryptOutput> {
        match cipher_params(key, alg, false, iv, aad, None)? {
            CipherParams::Rsa => Ok(EncryptOutput {
                ciphertext: self.rsa_encrypt(key, alg, plaintext)?,
                iv: None,
                tag: None,
            }),
            CipherParams::Gcm { iv, aad, .. } => {
                let iv = match iv {
                    Some(iv) => iv.to_vec(),
                    None => random_bytes(GCM_IV_LEN)?,
                };
                let mut ciphertext = self.gcm(key, &iv, aad, plaintext, false)?;
                let Some(split) = ciphertext.len().checked_sub(GCM_TAG_LEN) else {
                    return Err(CryptoError::Backend(format!(
                        "token {:?}: CKM_AES_GCM gave no tag",
                        self.token
                    )));
                };
                let tag = ciphertext.split_off(split);
                Ok(EncryptOutput {
                    ciphertext,
                    iv: Some(iv),
                    tag: Some(tag),
                })
            }
            CipherParams::Cbc { iv, pad } => {
                if !pad && !plaintext.len().is_multiple_of(BLOCK) {
                    return Err(invalid_input(
                        "AES-CBC without padding needs a multiple of 16 bytes",
                    ));
                }
                let chosen = cbc(iv, pad)?;
                Ok(EncryptOutput {
                    ciphertext: self.aes(key, &chosen, plaintext, false)?,
                    iv: Some(iv.to_vec()),
                    tag: None,
                })
            }
            CipherParams::KeyWrap { pad } => Ok(EncryptOutput {
                ciphertext: self.aes_wrap(key, pad, plaintext)?,
                iv: None,
                tag: None,
            }),
        }
    }

    fn decrypt(
        &self,
        key: &HsmKey,
        alg: EncryptionAlgorithm,
        ciphertext: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
        tag: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        match cipher_params(key, alg, true, iv, aad, tag)? {
            CipherParams::Rsa => self.rsa_decrypt(key, alg, ciphertext),
            CipherParams::Gcm { iv, aad, tag } => {
                let (Some(iv), Some(tag)) = (iv, tag) else {
                    return Err(invalid_input(
                        "AES-GCM needs a 12-byte iv and a 16-byte tag",
                    ));
                };
                let mut input = Vec::with_capacity(ciphertext.len() + tag.len());
                input.extend_from_slice(ciphertext);
                input.extend_from_slice(tag);
                self.gcm(key, iv, aad, &input, true).map(Zeroizing::new)
            }
            CipherParams::Cbc { iv, pad } => {
                if !ciphertext.len().is_multiple_of(BLOCK) || (pad && ciphertext.is_empty()) {
                    return Err(invalid_input(
                        "AES-CBC ciphertext must be a non-empty multiple of 16 bytes",
                    ));
                }
                let chosen = cbc(iv, pad)?;
                self.aes(key, &chosen, ciphertext, true).map(Zeroizing::new)
            }
            CipherParams::KeyWrap { pad } => self.aes_unwrap(key, pad, ciphertext),
        }
    }

    fn wrap_key(
        &self,
        key: &HsmKey,
        alg: EncryptionAlgorithm,
        key_bytes: &[u8],
    ) -> Result<Vec<u8>> {
        match cipher_params(key, alg, false, None, None, None)? {
            CipherParams::Rsa => self.rsa_encrypt(key, alg, key_bytes),
            CipherParams::KeyWrap { pad } => self.aes_wrap(key, pad, key_bytes),
            _ => Err(crate::error::mismatch(format!(
                "{} is not a key wrap algorithm",
                alg.name()
            ))),
        }
    }

    fn unwrap_key(
        &self,
        key: &HsmKey,
        alg: EncryptionAlgorithm,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        match cipher_params(key, alg, true, None, None, None)? {
            CipherParams::Rsa => self.rsa_decrypt(key, alg, wrapped),
            CipherParams::KeyWrap { pad } => self.aes_unwrap(key, pad, wrapped),
            _ => Err(crate::error::mismatch(format!(
                "{} is not a key wrap algorithm",
                alg.name()
            ))),
        }
    }

    fn facts(&self, key: &HsmKey) -> Result<HsmKeyFacts> {
        let session = self.session()?;
        let class = match key.public {
            PublicKey::Oct { .. } => ObjectClass::SECRET_KEY,
            _ => ObjectClass::PRIVATE_KEY,
        };
        let handle = self.find(&session, key, class)?;
        let mut facts = HsmKeyFacts {
            local: false,
            sensitive: false,
            always_sensitive: false,
            extractable: true,
            never_extractable: false,
        };
        for attribute in session
            .get_attributes(
                handle,
                &[
                    AttributeType::Local,
                    AttributeType::Sensitive,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                ],
            )
            .map_err(|e| self.fail(&session, Doing::Read, &e))?
        {
            match attribute {
                Attribute::Local(v) => facts.local = v,
                Attribute::Sensitive(v) => facts.sensitive = v,
                Attribute::AlwaysSensitive(v) => facts.always_sensitive = v,
                Attribute::Extractable(v) => facts.extractable = v,
                Attribute::NeverExtractable(v) => facts.never_extractable = v,
                _ => {}
            }
        }
        Ok(facts)
    }

    fn destroy(&self, reference: &HsmKeyRef) -> Result<()> {
        let session = self.session()?;
        let objects = self.objects(&session, reference)?;
        if objects.is_empty() {
            return Err(CryptoError::KeyNotFound(format!(
                "token {:?} has no key with id {reference}",
                self.token
            )));
        }
        for (handle, _, _) in objects {
            session
                .destroy_object(handle)
                .map_err(|e| self.fail(&session, Doing::Destroy, &e))?;
        }
        Ok(())
    }
}

fn cbc(iv: &[u8], pad: bool) -> Result<Chosen> {
    let iv: [u8; BLOCK] = iv
        .try_into()
        .map_err(|_| invalid_input("AES-CBC iv must be 16 bytes"))?;
    Ok(if pad {
        Chosen {
            mechanism: Mechanism::AesCbcPad(iv),
            name: "CKM_AES_CBC_PAD",
        }
    } else {
        Chosen {
            mechanism: Mechanism::AesCbc(iv),
            name: "CKM_AES_CBC",
        }
    })
}

/// The slot of the initialized token labelled `label`.
fn find_token(pkcs11: &Pkcs11, label: &str, module: &std::path::Path) -> Result<Slot> {
    let slots = pkcs11.get_slots_with_token().map_err(|e| {
        CryptoError::Backend(format!(
            "{}: cannot list the slots: {}",
            module.display(),
            ckr(&e)
        ))
    })?;
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
    Err(CryptoError::Backend(if labels.is_empty() {
        format!(
            "no token labelled {label:?} in {}: it has no initialized token",
            module.display()
        )
    } else {
        format!(
            "no token labelled {label:?} in {} (its tokens: {})",
            module.display(),
            labels.join(", ")
        )
    }))
}

// Backends are shared between request handlers.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Pkcs11Backend>();
};

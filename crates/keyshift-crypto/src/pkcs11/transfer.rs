//! Keys into and out of the token. An RSA or EC import arrives wrapped under a session
//! key and is unwrapped into a token object (`C_UnwrapKey`); an AES import is created
//! with its value (`C_CreateObject`, as SoftHSM2 cannot size an unwrapped AES key); the
//! object is sensitive either way, and the material was in this process's memory
//! already (zeroized after). An exportable key
//! leaves wrapped for an RSA public key with `CKM_RSA_AES_KEY_WRAP` semantics, composed
//! in the token from `CKM_AES_KEY_WRAP_PAD` and `CKM_RSA_PKCS_OAEP` with a session AES
//! key that never leaves it unwrapped.

use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use zeroize::Zeroizing;

use super::errors::Doing;
use super::session::PooledSession;
use super::{kept_in_token, mechanism, owned_by_token, wipe_values, Pkcs11Backend, ID_LEN};
use crate::error::{invalid_key, CryptoError, Result};
use crate::hsm::{HsmKey, HsmKeyRef};
use crate::jwk::PublicKey;
use crate::key::KeyMaterial;
use crate::random_bytes;
use crate::transfer::{aes_kwp_wrap, OaepHash, TransferWrap};

const KWP: &str = "CKM_AES_KEY_WRAP_PAD";

/// Session objects made for one call, destroyed when it ends however it ends.
struct Scratch<'s, 'p> {
    session: &'s PooledSession<'p>,
    handles: Vec<ObjectHandle>,
}

impl Drop for Scratch<'_, '_> {
    fn drop(&mut self) {
        for handle in self.handles.drain(..) {
            if self.session.destroy_object(handle).is_err() {
                // Closing the session destroys its objects: it is not lent again.
                self.session.discard();
            }
        }
    }
}

/// `CKA_EC_POINT`: the uncompressed point in a DER `OCTET STRING`.
fn ec_point_der(x: &[u8], y: &[u8]) -> Vec<u8> {
    let len = 1 + x.len() + y.len();
    let mut der = vec![0x04];
    if len < 128 {
        der.push(len as u8);
    } else {
        der.extend([0x81, len as u8]);
    }
    der.push(0x04);
    der.extend_from_slice(x);
    der.extend_from_slice(y);
    der
}

impl Pkcs11Backend {
    /// See [`crate::HsmBackend::import`].
    pub(super) fn import_material(
        &self,
        material: &KeyMaterial,
        label: &str,
        exportable: bool,
    ) -> Result<HsmKey> {
        self.require(MechanismType::AES_KEY_WRAP_PAD, KWP)?;
        let public = material.public_key();
        let id = random_bytes(ID_LEN)?;
        let reference = HsmKeyRef::from_bytes(&id)?;
        let session = self.session()?;
        let mut scratch = Scratch {
            session: &session,
            handles: Vec::new(),
        };
        // A session key whose value this process chose: the material is wrapped under it here
        // and unwrapped by the token into the key object.
        let kek_value = Zeroizing::new(random_bytes(32)?);
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Unwrap(true),
            Attribute::Wrap(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Value(kek_value.to_vec()),
        ];
        let created = session.create_object(&template);
        wipe_values(&mut template);
        scratch.handles.push(created.map_err(|e| {
            self.fail(
                &session,
                Doing::Use("C_CreateObject of a session key for an import"),
                &e,
            )
        })?);
        let wrapped = aes_kwp_wrap(&kek_value, &material.transfer_plaintext())?;
        let ours = owned_by_token(&id, label);
        let mut target = match &public {
            PublicKey::Rsa { .. } => vec![
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Sign(true),
                Attribute::Decrypt(true),
                Attribute::Unwrap(true),
                Attribute::Derive(false),
            ],
            PublicKey::Ec { .. } => vec![
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Sign(true),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
            ],
            PublicKey::Oct { .. } => vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Sign(false),
                Attribute::Verify(false),
                Attribute::Derive(false),
            ],
        };
        target.extend(ours.iter().cloned());
        target.extend(kept_in_token(exportable));
        let key = if matches!(public, PublicKey::Oct { .. }) {
            // SoftHSM2 leaves CKA_VALUE_LEN of an unwrapped AES key at 0 and refuses it in the
            // template: an AES key is created with its value instead (wiped from the template).
            target.push(Attribute::Value(material.transfer_plaintext().to_vec()));
            let created = session.create_object(&target);
            wipe_values(&mut target);
            created
                .map_err(|e| self.fail(&session, Doing::Use("C_CreateObject of an AES key"), &e))?
        } else {
            session
                .unwrap_key(
                    &Mechanism::AesKeyWrapPad,
                    scratch.handles[0],
                    &wrapped,
                    &target,
                )
                .map_err(|e| self.fail(&session, Doing::Use(KWP), &e))?
        };
        let mut made = vec![key];
        let public_object = match &public {
            PublicKey::Rsa { n, e } => Some(vec![
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Modulus(n.clone()),
                Attribute::PublicExponent(e.clone()),
                Attribute::Verify(true),
                Attribute::Encrypt(true),
                Attribute::Wrap(true),
                Attribute::Derive(false),
            ]),
            PublicKey::Ec { crv, x, y } => Some(vec![
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(mechanism::curve_params(*crv).to_vec()),
                Attribute::EcPoint(ec_point_der(x, y)),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Wrap(false),
                Attribute::Derive(false),
            ]),
            PublicKey::Oct { .. } => None,
        };
        let described = public_object
            .map(|mut template| {
                template.extend(ours.iter().cloned());
                session
                    .create_object(&template)
                    .map(|handle| made.push(handle))
                    .map_err(|e| {
                        self.fail(&session, Doing::Use("C_CreateObject of a public key"), &e)
                    })
            })
            .transpose()
            .and_then(|_| self.objects(&session, &reference))
            .and_then(|objects| self.public_part(&session, &objects, &reference))
            .and_then(|(found, label)| {
                // The token holds what was meant, or the import is undone.
                if found == public {
                    Ok(label)
                } else {
                    Err(invalid_key(
                        "the token's copy of the imported key differs from it",
                    ))
                }
            });
        match described {
            Ok(label) => Ok(HsmKey {
                reference,
                label,
                public,
            }),
            Err(e) => {
                for handle in made {
                    let _ = session.destroy_object(handle);
                }
                Err(e)
            }
        }
    }

    /// See [`crate::HsmBackend::wrap_for_transfer`].
    pub(super) fn wrap_out(
        &self,
        key: &HsmKey,
        kek: &PublicKey,
        wrap: TransferWrap,
    ) -> Result<Vec<u8>> {
        let PublicKey::Rsa { n, e } = kek else {
            return Err(invalid_key("a key is wrapped for an RSA public key only"));
        };
        self.require(MechanismType::AES_KEY_WRAP_PAD, KWP)?;
        self.require(MechanismType::RSA_PKCS_OAEP, "CKM_RSA_PKCS_OAEP")?;
        let (hash, mgf, hash_name) = match wrap.hash() {
            OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, "SHA-1"),
            OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, "SHA-256"),
            OaepHash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, "SHA-384"),
        };
        let class = match key.public {
            PublicKey::Oct { .. } => ObjectClass::SECRET_KEY,
            _ => ObjectClass::PRIVATE_KEY,
        };
        if class != ObjectClass::SECRET_KEY && self.quirks.kwp_wrap_whole_blocks_only {
            return Err(CryptoError::Unsupported(format!(
                "token {:?} cannot wrap RSA or EC private keys faithfully with {KWP} \
                 (SoftHSM2 up to 2.6 pads them first): only AES keys are released from it",
                self.token
            )));
        }
        let session = self.session()?;
        let target = self.find(&session, key, class)?;
        let mut scratch = Scratch {
            session: &session,
            handles: Vec::new(),
        };
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
            ])
            .map_err(|e| {
                self.fail(
                    &session,
                    Doing::Use("C_CreateObject of the wrapping public key"),
                    &e,
                )
            })?;
        scratch.handles.push(kek_handle);
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
            .map_err(|e| self.fail(&session, Doing::Generate("CKM_AES_KEY_GEN"), &e))?;
        scratch.handles.push(ephemeral);
        let wrapped_key = session
            .wrap_key(&Mechanism::AesKeyWrapPad, ephemeral, target)
            .map_err(|e| match e {
                Pkcs11Error::Pkcs11(RvError::KeyUnextractable, _) => {
                    CryptoError::Unsupported(format!(
                        "token {:?}: key {} is not extractable (CKR_KEY_UNEXTRACTABLE)",
                        self.token, key.reference
                    ))
                }
                e => self.fail(&session, Doing::Use(KWP), &e),
            })?;
        let oaep = PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty());
        let name = format!("CKM_RSA_PKCS_OAEP with {hash_name}");
        let mut out = session
            .wrap_key(&Mechanism::RsaPkcsOaep(oaep), kek_handle, ephemeral)
            .map_err(|e| self.fail(&session, Doing::Use(&name), &e))?;
        out.extend_from_slice(&wrapped_key);
        drop(scratch);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_are_wrapped_in_der_octet_strings() {
        let short = ec_point_der(&[1; 32], &[2; 32]);
        assert_eq!(&short[..3], &[0x04, 65, 0x04]);
        assert_eq!(short.len(), 67);
        let long = ec_point_der(&[1; 66], &[2; 66]);
        assert_eq!(&long[..4], &[0x04, 0x81, 133, 0x04]);
        assert_eq!(long.len(), 136);
    }
}

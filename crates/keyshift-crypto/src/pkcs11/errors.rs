//! PKCS#11 return values as this crate's errors, named the way token manuals name them.

use cryptoki::context::Function;
use cryptoki::error::{Error as Pkcs11Error, RvError};

use crate::error::CryptoError;

/// A PKCS#11 failure as `C_<Function> returned CKR_<CODE>`.
pub(super) fn ckr(error: &Pkcs11Error) -> String {
    match error {
        Pkcs11Error::Pkcs11(rv, function) => {
            format!(
                "C_{function:?} returned CKR_{}",
                screaming_snake(&format!("{rv:?}"))
            )
        }
        other => other.to_string(),
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// What the token was asked to do, for the error message and for which codes
/// mean the caller's data was bad.
#[derive(Debug, Clone, Copy)]
pub(super) enum Doing<'a> {
    /// Generating a key with a mechanism (e.g. `CKM_EC_KEY_PAIR_GEN on secp256k1`).
    Generate(&'a str),
    /// Looking up or reading a key's objects.
    Read,
    /// Destroying a key's objects.
    Destroy,
    /// Signing, encrypting or wrapping with a mechanism: the input is ours to
    /// check first, so a refusal is the token's.
    Use(&'a str),
    /// Decrypting or unwrapping with a mechanism: data the token refuses
    /// (bad tag, padding, integrity check) is a failed decryption.
    Open(&'a str),
}

/// The error for a failed call, in the words of the operation.
pub(super) fn map_error(token: &str, doing: Doing<'_>, error: &Pkcs11Error) -> CryptoError {
    let code = ckr(error);
    let rv = match error {
        Pkcs11Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    };
    let mechanism = match doing {
        Doing::Generate(m) | Doing::Use(m) | Doing::Open(m) => Some(m),
        Doing::Read | Doing::Destroy => None,
    };
    match (rv, mechanism) {
        // The token does not have the mechanism, or not with these parameters
        // (SoftHSM2 answers CKR_ARGUMENTS_BAD to OAEP with SHA-256), or not
        // this curve or key size.
        (
            Some(
                RvError::MechanismInvalid
                | RvError::MechanismParamInvalid
                | RvError::ArgumentsBad
                | RvError::FunctionNotSupported
                | RvError::CurveNotSupported
                | RvError::DomainParamsInvalid,
            ),
            Some(m),
        ) => CryptoError::Unsupported(format!("token {token:?} cannot do {m} ({code})")),
        (Some(RvError::KeySizeRange | RvError::TemplateInconsistent), Some(m))
            if matches!(doing, Doing::Generate(_)) =>
        {
            CryptoError::Unsupported(format!("token {token:?} cannot do {m} ({code})"))
        }
        (
            Some(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::WrappedKeyInvalid
                | RvError::WrappedKeyLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange,
            ),
            _,
        ) if matches!(doing, Doing::Open(_)) => CryptoError::DecryptionFailed,
        // SoftHSM2 answers CKR_GENERAL_ERROR from C_Decrypt when the data does not open (a GCM
        // tag, OAEP or PKCS#7 padding that does not check): once the operation has started, the
        // caller's data is what failed. A token really failing then reads as a bad ciphertext;
        // it fails the same way at C_DecryptInit and at every other call, where it stays a
        // backend failure.
        (Some(RvError::GeneralError), _)
            if matches!(doing, Doing::Open(_))
                && matches!(
                    error,
                    Pkcs11Error::Pkcs11(_, Function::Decrypt | Function::UnwrapKey)
                ) =>
        {
            CryptoError::DecryptionFailed
        }
        (Some(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid), _) => {
            CryptoError::KeyNotFound(format!("token {token:?}: the key is gone ({code})"))
        }
        (_, Some(m)) => CryptoError::Backend(format!("token {token:?}: {m} failed: {code}")),
        (_, None) => CryptoError::Backend(format!("token {token:?}: {code}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_read_as_ckr_names() {
        let e = Pkcs11Error::Pkcs11(RvError::PinIncorrect, Function::Login);
        assert_eq!(ckr(&e), "C_Login returned CKR_PIN_INCORRECT");
        let e = Pkcs11Error::Pkcs11(RvError::MechanismParamInvalid, Function::WrapKey);
        assert_eq!(ckr(&e), "C_WrapKey returned CKR_MECHANISM_PARAM_INVALID");
    }

    #[test]
    fn codes_map_to_what_they_mean_for_the_operation() {
        let bad_data = Pkcs11Error::Pkcs11(RvError::EncryptedDataInvalid, Function::Decrypt);
        assert_eq!(
            map_error("t", Doing::Open("CKM_AES_GCM"), &bad_data),
            CryptoError::DecryptionFailed
        );
        // The same code on the way in is not a decryption failure to hide.
        assert!(matches!(
            map_error("t", Doing::Use("CKM_AES_GCM"), &bad_data),
            CryptoError::Backend(_)
        ));
        let params = Pkcs11Error::Pkcs11(RvError::ArgumentsBad, Function::DecryptInit);
        match map_error("t", Doing::Open("CKM_RSA_PKCS_OAEP (SHA-256)"), &params) {
            CryptoError::Unsupported(m) => {
                assert!(
                    m.contains("CKM_RSA_PKCS_OAEP (SHA-256)") && m.contains("CKR_ARGUMENTS_BAD")
                )
            }
            other => panic!("{other:?}"),
        }
        let general = Pkcs11Error::Pkcs11(RvError::GeneralError, Function::Decrypt);
        assert_eq!(
            map_error("t", Doing::Open("CKM_AES_GCM"), &general),
            CryptoError::DecryptionFailed
        );
        let general = Pkcs11Error::Pkcs11(RvError::GeneralError, Function::DecryptInit);
        assert!(matches!(
            map_error("t", Doing::Open("CKM_AES_GCM"), &general),
            CryptoError::Backend(_)
        ));
        let gone = Pkcs11Error::Pkcs11(RvError::KeyHandleInvalid, Function::SignInit);
        assert!(matches!(
            map_error("t", Doing::Use("CKM_ECDSA"), &gone),
            CryptoError::KeyNotFound(_)
        ));
    }
}

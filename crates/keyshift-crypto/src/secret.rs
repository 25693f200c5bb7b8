//! Client-secret hashing with Argon2id (PHC string format).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use rand_core::OsRng;

use crate::error::{CryptoError, Result};

/// Hashes a client secret with Argon2id (the argon2 crate's default parameters,
/// the OWASP minimum: 19 MiB, 2 passes, 1 lane) and a random salt; returns the
/// PHC string to store.
pub fn hash_secret(secret: &[u8]) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret, &salt)
        .map(|hash| hash.to_string())
        .map_err(|_| CryptoError::Internal)
}

/// Checks `secret` against a PHC string made by [`hash_secret`]. Only Argon2id
/// hashes are accepted; a malformed string is `false`. The final comparison is
/// constant-time (done by the argon2 crate).
pub fn verify_secret(secret: &[u8], phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    Argon2::default().verify_password(secret, &parsed).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let phc = hash_secret(b"correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(verify_secret(b"correct horse", &phc));
        assert!(!verify_secret(b"correct horsf", &phc));
        assert!(!verify_secret(b"", &phc));
    }

    #[test]
    fn malformed_or_foreign_hashes_are_false() {
        assert!(!verify_secret(b"x", ""));
        assert!(!verify_secret(b"x", "not a phc string"));
        assert!(!verify_secret(b"x", "$argon2id$v=19$m=19456,t=2,p=1$"));
        // Argon2i is refused even when the secret is right.
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            argon2::Version::V0x13,
            argon2::Params::new(8, 1, 1, None).unwrap(),
        )
        .hash_password(b"x", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(!verify_secret(b"x", &argon2i));
    }
}

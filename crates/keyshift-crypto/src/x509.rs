//! The public key and thumbprints of an X.509 certificate, for certificate client credentials.
//! Certificates come from administrators, but are parsed as untrusted bytes: any failure is an
//! error, never a panic.

use crate::{CryptoError, PublicKey, Result};

/// What Keyshift keeps of a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateKey {
    /// The RSA public key.
    pub public_key: PublicKey,
    /// SHA-1 of the DER certificate (`x5t`).
    pub sha1_thumbprint: [u8; 20],
    /// SHA-256 of the DER certificate (`x5t#S256`).
    pub sha256_thumbprint: [u8; 32],
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

/// Parses one DER certificate. Only RSA keys of 2048 bits or more are accepted, as Azure does for
/// certificate credentials.
pub fn parse_certificate(der: &[u8]) -> Result<CertificateKey> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| CryptoError::InvalidKey("not a DER X.509 certificate".into()))?;
    if !rest.is_empty() {
        return Err(CryptoError::InvalidKey(
            "trailing bytes after the certificate".into(),
        ));
    }
    let public_key = match cert.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => PublicKey::Rsa {
            n: strip_zeros(rsa.modulus),
            e: strip_zeros(rsa.exponent),
        },
        _ => {
            return Err(CryptoError::InvalidKey(
                "only RSA certificates are supported".into(),
            ))
        }
    };
    if let PublicKey::Rsa { n, .. } = &public_key {
        if n.len() < 256 {
            return Err(CryptoError::InvalidKey(
                "the certificate's RSA key is shorter than 2048 bits".into(),
            ));
        }
    }
    Ok(CertificateKey {
        public_key,
        sha1_thumbprint: crate::digest::sha1(der),
        sha256_thumbprint: crate::digest::sha256(der),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The DER certificates of a PEM text (other blocks, such as a private key, are skipped).
pub fn pem_certificates(text: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(text)
        .map_while(|p| p.ok())
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect()
}

fn strip_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_certificate(b"").is_err());
        assert!(parse_certificate(&[0x30, 0x82, 0xff, 0xff]).is_err());
        assert!(parse_certificate(&[0u8; 64]).is_err());
        assert!(pem_certificates(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_empty());
        assert!(pem_certificates(b"nothing here").is_empty());
    }
}

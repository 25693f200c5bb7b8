//! What the vault writes to the store. Values are JSON; key material inside them is sealed.

use keyshift_api::keys::{JsonWebKey, KeyReleasePolicy, KeyRotationPolicy, Tags};
use serde::{Deserialize, Serialize};

/// Store namespaces.
pub mod ns {
    /// Deployment-wide settings and secrets (sealed).
    pub const META: &str = "meta";
    /// Security domains: id -> wrapped key.
    pub const SECURITY_DOMAIN: &str = "security_domain";
    /// Vaults by lowercase name.
    pub const VAULT: &str = "vault";
    /// Live keys: `{vault_id}/{name_lower}`.
    pub const KEY: &str = "key";
    /// Soft-deleted keys: `{vault_id}/{name_lower}`.
    pub const DELETED_KEY: &str = "deleted_key";
    /// Key versions: `{vault_id}/{name_lower}/{version}`.
    pub const KEY_VERSION: &str = "key_version";
    /// Principals by client id.
    pub const PRINCIPAL: &str = "principal";
    /// Role assignments: `{vault_id}/{assignment name}`.
    pub const ROLE_ASSIGNMENT: &str = "role_assignment";
    /// Custom role definitions: `{vault_id}/{guid}`.
    pub const ROLE_DEFINITION: &str = "role_definition";
    /// Audit events, one record per committed batch, keyed by its first sequence number
    /// (20 digits, so key order is chain order).
    pub const AUDIT: &str = "audit";
    /// Pending copies of the audit events of changes, by request id, until chained.
    pub const AUDIT_PENDING: &str = "audit_pending";
    /// Key usage counters: `{vault_id}/{name_lower}/{version}/{principal}/{operation}`.
    pub const KEY_USAGE: &str = "key_usage";
    /// External OIDC issuers trusted for workload identity federation, by issuer URL.
    pub const TRUSTED_ISSUER: &str = "trusted_issuer";
    /// Attestation authorities trusted for secure key release, by issuer URL without a trailing
    /// `/`. Values are [`super::TrustedIssuerRecord`]s: the same shape as federation issuers.
    pub const ATTESTATION_AUTHORITY: &str = "attestation_authority";
    /// HSM token objects and the key versions that name them: `{token label}/{reference hex}`.
    pub const HSM_OBJECT: &str = "hsm_object";
}

/// The key versions (their `key_version` store keys) that name one HSM token object. The object
/// is destroyed when the last of them is purged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HsmObjectRecord {
    /// Store keys of the versions.
    pub users: Vec<String>,
}

/// Kind of vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VaultKind {
    /// A key vault: software and HSM key types.
    Vault,
    /// A managed HSM: HSM key types only.
    ManagedHsm,
}

/// Deployment-wide record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// Tenant id of this deployment's token issuer.
    pub tenant_id: String,
    /// The default security domain.
    pub default_security_domain: String,
    /// Token signing key (PKCS#8), sealed under the root key.
    #[serde(with = "keyshift_api::b64::bytes")]
    pub token_signing_key: Vec<u8>,
    /// When the deployment was initialised.
    pub created: i64,
    /// Object id of the administrator created at first start: Administrator at `/` of every vault.
    #[serde(default)]
    pub administrator: Option<String>,
    /// Public parts of token signing keys rotated out, kept so that tokens they signed stay valid
    /// until they expire.
    #[serde(default)]
    pub retired_token_keys: Vec<RetiredTokenKey>,
}

/// The public point of a retired token signing key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetiredTokenKey {
    /// x coordinate.
    #[serde(with = "keyshift_api::b64::bytes")]
    pub x: Vec<u8>,
    /// y coordinate.
    #[serde(with = "keyshift_api::b64::bytes")]
    pub y: Vec<u8>,
    /// When it stopped signing.
    pub retired_at: i64,
}

/// A security domain: the key that seals every key version of its vaults and every backup blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecurityDomainRecord {
    /// Id (32 hex).
    pub id: String,
    /// The domain key, sealed under the root key.
    #[serde(with = "keyshift_api::b64::bytes")]
    pub sealed_key: Vec<u8>,
    /// Created.
    pub created: i64,
}

/// A vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultRecord {
    /// Stable id (32 hex), used in store keys and sealing AAD.
    pub id: String,
    /// Name as given (DNS label).
    pub name: String,
    /// Kind.
    pub kind: VaultKind,
    /// Security domain id.
    pub security_domain: String,
    /// Soft-delete retention, 7 to 90 days, fixed at creation.
    pub retention_days: u32,
    /// Purge protection: can be switched on, never off.
    pub purge_protection: bool,
    /// A port of its own, for clients that cannot resolve `<name>.localhost`.
    pub port: Option<u16>,
    /// Whether this is the default vault (served on the main listener without a host name).
    pub default: bool,
    /// Created.
    pub created: i64,
    /// The store revision this copy was read at, which commits that add keys check. Not stored.
    #[serde(skip)]
    pub revision: i64,
}

/// Rotation policy as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRotationPolicy {
    /// The policy as the client sees it (without `id`).
    pub policy: KeyRotationPolicy,
}

/// Soft-delete state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Deletion {
    /// When it was deleted.
    pub deleted_date: i64,
    /// When it will be purged.
    pub scheduled_purge_date: i64,
}

/// A key (all versions share it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Name with the casing it was created with.
    pub name: String,
    /// The current version.
    pub latest: String,
    /// How many versions exist.
    pub version_count: u32,
    /// Created.
    pub created: i64,
    /// Rotation policy, if one was set.
    #[serde(default)]
    pub rotation_policy: Option<KeyRotationPolicy>,
    /// Present while soft-deleted.
    #[serde(default)]
    pub deleted: Option<Deletion>,
}

/// A key version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Version id (32 lowercase hex).
    pub version: String,
    /// `RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`, `oct-HSM`.
    pub kty: String,
    /// Permitted operations, canonical spelling.
    pub key_ops: Vec<String>,
    /// Public members (n, e, crv, x, y).
    pub public: JsonWebKey,
    /// Size in bits (RSA, oct) or curve size.
    pub size_bits: u32,
    /// Enabled.
    pub enabled: bool,
    /// Not before.
    pub nbf: Option<i64>,
    /// Expiry.
    pub exp: Option<i64>,
    /// Exportable.
    #[serde(default)]
    pub exportable: Option<bool>,
    /// Created.
    pub created: i64,
    /// Updated.
    pub updated: i64,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Tags>,
    /// Release policy.
    #[serde(default)]
    pub release_policy: Option<KeyReleasePolicy>,
    /// Private material sealed under the security-domain key, AAD = vault id, key name, version;
    /// for a version held in an HSM, the token object's reference, sealed the same way.
    #[serde(with = "keyshift_api::b64::bytes")]
    pub sealed: Vec<u8>,
    /// The label of the HSM token holding this version, when one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm_token: Option<String>,
}

/// A client certificate of a principal: its RSA public key and thumbprints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrincipalCertificate {
    /// SHA-1 thumbprint, base64url (`x5t`).
    pub x5t: String,
    /// SHA-256 thumbprint, base64url (`x5t#S256`).
    pub x5t_s256: String,
    /// RSA modulus.
    #[serde(with = "keyshift_api::b64::bytes")]
    pub n: Vec<u8>,
    /// RSA exponent.
    #[serde(with = "keyshift_api::b64::bytes")]
    pub e: Vec<u8>,
    /// End of the certificate's validity.
    pub not_after: i64,
}

/// A service principal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrincipalRecord {
    /// Object id (the principal id roles are assigned to).
    pub id: String,
    /// Client (application) id.
    pub client_id: String,
    /// Display name.
    pub display_name: String,
    /// Argon2id PHC strings of its client secrets.
    pub secret_hashes: Vec<String>,
    /// Disabled principals get no tokens and their tokens stop working.
    pub enabled: bool,
    /// Certificates whose keys may sign client assertions (RFC 7523).
    #[serde(default)]
    pub certificates: Vec<PrincipalCertificate>,
    /// External identities (issuer and subject) whose tokens this principal accepts as client
    /// assertions: workload identity federation.
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredential>,
    /// May manage principals and trusted issuers through the admin API. The administrator
    /// recorded in the deployment record is one whatever this says (data made before the flag).
    #[serde(default)]
    pub deployment_admin: bool,
    /// Created.
    pub created: i64,
}

/// The audience Azure AD expects of federated tokens, and the default of a federated credential.
pub const DEFAULT_FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";

/// One external identity a principal trusts: tokens of `issuer` about `subject`, for one of
/// `audiences`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FederatedCredential {
    /// Name, unique within the principal.
    pub name: String,
    /// Issuer URL, compared exactly with the token's `iss`; must be a trusted issuer.
    pub issuer: String,
    /// Compared exactly with the token's `sub`, e.g. `system:serviceaccount:payments:api`.
    pub subject: String,
    /// The token's `aud` must contain one of these.
    pub audiences: Vec<String>,
}

/// Where the signing keys of a trusted issuer are published.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum JwksSource {
    /// A JWKS document in a file on the server's host, re-read when it changes.
    File {
        /// Absolute path.
        path: String,
    },
    /// A JWKS document fetched over HTTPS by the server.
    Url {
        /// `https://` URL.
        url: String,
        /// A PEM file of CA certificates trusted for this URL besides the system roots.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_file: Option<String>,
    },
}

/// An external OIDC issuer whose tokens may be exchanged for Keyshift tokens; the same record
/// describes an attestation authority trusted for secure key release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrustedIssuerRecord {
    /// Issuer URL, compared exactly with `iss`.
    pub issuer: String,
    /// Where its keys are.
    pub jwks: JwksSource,
    /// Signature algorithms accepted from it (JWA names, asymmetric only).
    pub algorithms: Vec<String>,
    /// When it was trusted (or last changed).
    pub updated: i64,
}

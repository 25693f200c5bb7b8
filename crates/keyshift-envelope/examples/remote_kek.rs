//! How an application adopts envelope encryption with its KEK in a vault (Keyshift, or Azure Key
//! Vault): make a keyring once, then encrypt and decrypt locally with keys derived from its master
//! key. Against a running `keyshift serve`:
//!
//! ```sh
//! cargo run -p keyshift-envelope --features remote --example remote_kek -- \
//!     keyshift-data/admin.json https://localhost:8443/keys/app-kek
//! ```
//!
//! (Create the KEK first, e.g. `{"kty": "oct-HSM"}` or `{"kty": "RSA", "key_size": 3072}`.)

use keyshift_client::{AdminJson, KeyClient};
use keyshift_envelope::{Decryptor, Encryptor, Header, Keyring, MasterKeyCache, RemoteKek};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(admin), Some(kek_kid)) = (args.next(), args.next()) else {
        return Err("usage: remote_kek <admin.json> <KEK kid>".into());
    };
    // The application's identity: a service principal's client credentials.
    let admin = AdminJson::read(&admin)?;
    let client = KeyClient::builder()
        .credential(Arc::new(admin.credential()?))
        .ca_pem(Some(&admin.ca_pem()?))
        .build()?;
    let kek = RemoteKek::new(client);

    // Once: a keyring (store it with the application's configuration; it holds no secret in the
    // clear). One vault call.
    let (keyring, _) = Keyring::create(&kek, &kek_kid, 1_767_225_600).await?;
    println!("keyring: {}", keyring.to_json());

    // Per process: the master key, unwrapped once and cached for a few minutes.
    let cache = MasterKeyCache::default();
    let master = cache.get_or_unwrap(&keyring, &kek).await?;

    // Per object: no vault call at all.
    let context = b"tenant=acme;object=orders/42";
    let sealed = Encryptor::three_level(&master, context, keyshift_envelope::DEFAULT_SEGMENT_SIZE)?
        .encrypt_to_vec(b"order 42: 3 widgets")?;
    let header = Header::parse(&sealed)?;
    let plain = Decryptor::from_master_key(&header, &master, context)?.decrypt_slice(&sealed)?;
    println!("round trip: {}", String::from_utf8_lossy(&plain));

    // When the KEK must move (another vault, an HSM, another region): rewrap the keyring only.
    // `keyshift keyring rewrap --keyring keyring.json --kek <new kid>` does this on the command line.
    Ok(())
}

//! The three-level hierarchy end to end with in-process KEKs:
//! keyring create -> encrypt with a context -> decrypt -> rewrap the keyring to a new KEK
//! -> the old ciphertext still decrypts through the rewrapped keyring, with the old KEK gone.
//!
//! ```sh
//! cargo run -p keyshift-envelope --example three_levels
//! ```

use keyshift_envelope::{
    Decryptor, Encryptor, EnvelopeError, Header, Keyring, LocalKek, DEFAULT_SEGMENT_SIZE,
};

const OLD_KEK: &str = "https://vault.example/keys/kek-2025/8c2f4a1d9e0b4f6a8d3c2b1a0f9e8d7c";
const NEW_KEK: &str = "https://vault.example/keys/kek-2026/1f2e3d4c5b6a79880716253443526170";

async fn run() -> Result<(), EnvelopeError> {
    let mut kek = LocalKek::new();
    kek.generate(OLD_KEK)?;
    kek.generate(NEW_KEK)?;

    // 1. One keyring: a master key wrapped by the KEK (one vault call).
    let (keyring, master) = Keyring::create(&kek, OLD_KEK, 1_767_225_600).await?;
    println!("keyring.json:\n{}", keyring.to_json());

    // 2. Encrypt under a context: no vault call, the file key is derived locally.
    let context = b"tenant=acme;object=invoices/2026-01.pdf";
    let plaintext = b"Invoice 2026-01: 1,234.56 EUR".repeat(4000); // ~116 KiB: two segments
    let mut file = Vec::new();
    Encryptor::three_level(&master, context, DEFAULT_SEGMENT_SIZE)?
        .encrypt_stream(&plaintext[..], &mut file)?;
    let header = Header::parse(&file)?;
    println!(
        "encrypted {} bytes into {} (header {} bytes, master key {})",
        plaintext.len(),
        file.len(),
        header.len(),
        header.master_key_id_hex().unwrap_or_default()
    );

    // 3. Decrypt: the header names the master key; the keyring's KEK unwraps it.
    let decryptor = Decryptor::unlock(&header, &kek, Some(&keyring), context).await?;
    let mut out = Vec::new();
    decryptor.decrypt_stream(&file[header.len()..], &mut out)?;
    assert_eq!(out, plaintext);
    println!("decrypted: {} bytes match", out.len());
    // The wrong context is refused by name.
    match Decryptor::unlock(&header, &kek, Some(&keyring), b"tenant=other").await {
        Err(EnvelopeError::WrongContext) => println!("another context: refused (WrongContext)"),
        other => panic!("expected WrongContext, got {other:?}"),
    }

    // 4. Rotate the KEK: rewrap the master key only (O(1)); keep the old record as .prev.
    let rewrapped = keyring.rewrap(&kek, &kek, NEW_KEK).await?;
    println!(
        "rewrapped: master key {} now under {}",
        rewrapped.master_key_id_hex(),
        rewrapped.kek_kid()
    );
    kek.remove(OLD_KEK);

    // 5. The old file, untouched, opens through the rewrapped keyring; the old record no
    //    longer does.
    let decryptor = Decryptor::unlock(&header, &kek, Some(&rewrapped), context).await?;
    assert_eq!(decryptor.decrypt_slice(&file)?, plaintext);
    println!("old ciphertext decrypts through the rewrapped keyring");
    match Decryptor::unlock(&header, &kek, Some(&keyring), context).await {
        Err(err) => println!("old keyring record: {err}"),
        Ok(_) => panic!("the old KEK was removed"),
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(run())?;
    Ok(())
}

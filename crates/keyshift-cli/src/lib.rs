//! The `keyshift` command line, as a library so that each command is testable in-process.

// The options' doc comments are also their `--help` text, where `<data-dir>` is a placeholder,
// not an HTML tag, and a default URL is printed as it is, not linked.
#![allow(rustdoc::invalid_html_tags, rustdoc::bare_urls)]

mod attestation_cmd;
mod audit_cmd;
mod byok_cmd;
pub mod config;
pub mod datadir;
mod domain_cmd;
mod envelope_cmd;
mod identity_cmd;
mod local_audit;
mod migrate_cmd;
mod pkcs11;
pub mod root_of_trust;
pub mod seal_cmd;
pub mod serve;
mod vault_cmd;

use clap::{Parser, Subcommand};
use config::{CommonArgs, ServeArgs};
use std::process::ExitCode;

/// Keyshift: a key vault that speaks the Azure Key Vault keys API, built for moving key workloads.
#[derive(Debug, Parser)]
#[command(name = "keyshift", version, about)]
pub struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (creates the data directory on first start).
    Serve(ServeArgs),
    /// Manage vaults.
    #[command(subcommand)]
    Vault(vault_cmd::VaultCommand),
    /// Manage service principals.
    #[command(subcommand)]
    Principal(identity_cmd::PrincipalCommand),
    /// Manage role assignments.
    #[command(subcommand)]
    Role(identity_cmd::RoleCommand),
    /// Manage the token issuer.
    #[command(subcommand)]
    Token(identity_cmd::TokenCommand),
    /// Read, export and verify the audit log.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Key reports.
    #[command(subcommand)]
    Key(audit_cmd::KeyCommand),
    /// Keyrings of envelope encryption: a master key wrapped by a KEK in a vault.
    #[command(subcommand)]
    Keyring(envelope_cmd::KeyringCommand),
    /// Encrypt files, standard input or directory trees (envelope encryption, KEK in a vault).
    Encrypt(envelope_cmd::EncryptArgs),
    /// Decrypt what `keyshift encrypt` wrote.
    Decrypt(envelope_cmd::DecryptArgs),
    /// Bring your own key: export a key-exchange key, wrap a key into a transfer blob.
    #[command(subcommand)]
    Byok(byok_cmd::ByokCommand),
    /// Show an envelope file's header without decrypting it.
    Inspect {
        /// The file, or `-` for standard input.
        file: std::path::PathBuf,
    },
    /// Manage the external OIDC issuers trusted for workload identity federation.
    #[command(subcommand)]
    Federation(identity_cmd::FederationCommand),
    /// Manage the attestation authorities trusted for secure key release.
    #[command(subcommand)]
    Attestation(attestation_cmd::AttestationCommand),
    /// Development tools for secure key release: `--insecure-test-authority` runs a local
    /// attestation authority that signs anything.
    Attest(attestation_cmd::AttestArgs),
    /// Key workload migration campaigns: plan, apply, resume, status, verify, retire.
    #[command(subcommand)]
    Migrate(migrate_cmd::MigrateCommand),
    /// Split a new deployment's root key into shares held by custodians (or re-split it with
    /// --reshare); `keyshift serve` then starts sealed.
    Init(seal_cmd::InitArgs),
    /// Give one share to a sealed server.
    Unseal(seal_cmd::UnsealArgs),
    /// Seal a running server: it drops the root key and every key it unsealed.
    Seal(seal_cmd::SealArgs),
    /// The security domain: split it to custodians, or give it to a vault of another deployment.
    #[command(subcommand)]
    SecurityDomain(domain_cmd::SecurityDomainCommand),
    /// Full backups of a vault, and restoring them (all, or one key).
    #[command(subcommand)]
    Backup(domain_cmd::BackupCommand),
    /// Rekey envelope files in place: decrypt with the old keys, encrypt with new data keys under
    /// a new KEK or keyring.
    Rekey(migrate_cmd::RekeyArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    main_with_args(std::env::args_os())
}

/// The binary's entry point with explicit arguments (the first is the program name): what a test
/// runs in a child process of its own when it needs the real command, SIGKILL included.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    // aws-lc seeds its random generator from CPU jitter (tens of milliseconds) the first time a
    // process asks for randomness. Start that now, on the other core, beside argument parsing,
    // file reads and the TLS set-up, rather than inside the first TLS handshake: most commands
    // reach a vault, and `keyshift encrypt` of a file pays it on every run.
    std::thread::spawn(|| {
        let _ = keyshift_crypto::random_bytes(1);
    });
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(&cli.common, &args).await,
            Command::Vault(cmd) => vault_cmd::run(&cli.common, cmd).await,
            Command::Principal(cmd) => identity_cmd::run_principal(&cli.common, cmd).await,
            Command::Role(cmd) => identity_cmd::run_role(&cli.common, cmd).await,
            Command::Token(cmd) => identity_cmd::run_token(&cli.common, cmd).await,
            Command::Audit(cmd) => audit_cmd::run_audit(&cli.common, cmd).await,
            Command::Key(cmd) => audit_cmd::run_key(&cli.common, cmd).await,
            Command::Keyring(cmd) => envelope_cmd::run_keyring(&cli.common, cmd).await,
            Command::Encrypt(args) => envelope_cmd::run_encrypt(&cli.common, args).await,
            Command::Decrypt(args) => envelope_cmd::run_decrypt(&cli.common, args).await,
            Command::Inspect { file } => envelope_cmd::run_inspect(&file),
            Command::Byok(cmd) => byok_cmd::run(&cli.common, cmd).await,
            Command::Federation(cmd) => identity_cmd::run_federation(&cli.common, cmd).await,
            Command::Attestation(cmd) => attestation_cmd::run(&cli.common, cmd).await,
            Command::Attest(args) => attestation_cmd::run_attest(&args).await,
            Command::Migrate(cmd) => migrate_cmd::run(&cli.common, cmd).await,
            Command::Init(args) => seal_cmd::run_init(&cli.common, args),
            Command::Unseal(args) => seal_cmd::run_unseal(&cli.common, args).await,
            Command::Seal(args) => seal_cmd::run_seal(&cli.common, args).await,
            Command::Rekey(args) => migrate_cmd::run_rekey(&cli.common, args).await,
            Command::SecurityDomain(cmd) => domain_cmd::run_security_domain(&cli.common, cmd).await,
            Command::Backup(cmd) => domain_cmd::run_backup(&cli.common, cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

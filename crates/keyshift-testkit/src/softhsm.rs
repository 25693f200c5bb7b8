//! A SoftHSM2 set-up for test servers whose `-HSM` keys live in a real PKCS#11 token.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` and its token directory once, when the module is initialized,
//! and a module is initialized once per process. So the first call makes one set-up for the
//! whole test process, with [`TOKENS`] fresh tokens in it, points `SOFTHSM2_CONF` at it, and hands
//! a token to each server that asks; set-ups left behind by test processes that have exited are
//! removed then.
//!
//! Without SoftHSM2 installed, [`softhsm`] says so and returns `None` (the test is skipped),
//! unless `KEYSHIFT_E2E_REQUIRE_SOFTHSM` is set (CI sets it): then it panics.

use keyshift_cli::config::HsmSettings;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

const MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];
/// Tokens made per test process.
pub const TOKENS: usize = 12;
const PIN: &str = "4321-test-user";
const SO_PIN: &str = "87654321";
const PREFIX: &str = "keyshift-softhsm-";

/// The process's SoftHSM2 set-up.
#[derive(Debug)]
pub struct SoftHsm {
    dir: PathBuf,
    module: PathBuf,
    next: AtomicUsize,
}

fn module_path() -> Option<PathBuf> {
    match std::env::var_os("KEYSHIFT_PKCS11_MODULE") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => MODULE_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|path| path.is_file()),
    }
}

/// Removes the set-ups of test processes that are gone.
fn remove_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The process's SoftHSM2 set-up, made on first use; `None` when SoftHSM2 is not installed.
pub fn softhsm() -> Option<&'static SoftHsm> {
    static SHARED: OnceLock<Option<SoftHsm>> = OnceLock::new();
    SHARED.get_or_init(make).as_ref()
}

fn make() -> Option<SoftHsm> {
    let util = Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    let Some(module) = module_path().filter(|_| util) else {
        let reason = "SoftHSM2 is not installed (softhsm2-util and libsofthsm2.so; apt-get install softhsm2)";
        if std::env::var_os("KEYSHIFT_E2E_REQUIRE_SOFTHSM").is_some_and(|v| !v.is_empty()) {
            panic!("{reason}, and KEYSHIFT_E2E_REQUIRE_SOFTHSM is set");
        }
        eprintln!("SKIPPED: {reason}");
        return None;
    };
    let tmp = std::env::temp_dir();
    remove_stale(&tmp);
    let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    for i in 0..TOKENS {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", &format!("ks-test-{i}")])
            .args(["--so-pin", SO_PIN, "--pin", PIN])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pin = dir.join("pin");
    std::fs::write(&pin, format!("{PIN}\n")).unwrap();
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Before any module is initialized in this process: the first C_Initialize reads it.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    Some(SoftHsm {
        dir,
        module,
        next: AtomicUsize::new(0),
    })
}

impl SoftHsm {
    /// Settings of a fresh token of this set-up, for one server.
    pub fn token(&self) -> HsmSettings {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        assert!(
            i < TOKENS,
            "raise softhsm::TOKENS: {TOKENS} tokens are used up"
        );
        HsmSettings {
            module: self.module.clone(),
            token_label: format!("ks-test-{i}"),
            pin_file: Some(self.dir.join("pin")),
            max_sessions: None,
        }
    }

    /// The PKCS#11 module.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The user PIN of every token.
    pub fn pin(&self) -> &'static str {
        PIN
    }
}

//! The PKCS#11 module, initialized once per process however many backends use it,
//! and a bounded pool of read-write sessions on one token.

use std::collections::HashMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use super::errors::ckr;
use crate::error::{CryptoError, Result};

/// A lock that a panic elsewhere does not poison for everyone: the state under
/// these locks stays consistent between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Modules in use in this process by path: the context and how many leases hold
/// it. A PKCS#11 module is process-wide (C_Initialize once, C_Finalize once), so
/// two backends on one module share it, and the last one out finalizes it.
static MODULES: Mutex<Option<HashMap<PathBuf, Loaded>>> = Mutex::new(None);

struct Loaded {
    pkcs11: Pkcs11,
    leases: usize,
    /// False when something else in the process had initialized the module
    /// first: then it is theirs to finalize.
    owned: bool,
}

/// One backend's hold on a loaded, initialized module.
pub(super) struct ModuleLease {
    path: PathBuf,
    pkcs11: Pkcs11,
}

impl ModuleLease {
    pub(super) fn acquire(path: &Path) -> Result<Self> {
        let mut modules = lock(&MODULES);
        let modules = modules.get_or_insert_with(HashMap::new);
        if let Some(loaded) = modules.get_mut(path) {
            loaded.leases += 1;
            return Ok(Self {
                path: path.to_path_buf(),
                pkcs11: loaded.pkcs11.clone(),
            });
        }
        let shown = path.display();
        let pkcs11 = Pkcs11::new(path).map_err(|e| {
            CryptoError::Backend(format!("cannot load the PKCS#11 module {shown}: {e}"))
        })?;
        let owned = match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => true,
            Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
            Err(e) => {
                return Err(CryptoError::Backend(format!(
                    "cannot initialize the PKCS#11 module {shown}: {}",
                    ckr(&e)
                )))
            }
        };
        modules.insert(
            path.to_path_buf(),
            Loaded {
                pkcs11: pkcs11.clone(),
                leases: 1,
                owned,
            },
        );
        Ok(Self {
            path: path.to_path_buf(),
            pkcs11,
        })
    }

    pub(super) fn pkcs11(&self) -> &Pkcs11 {
        &self.pkcs11
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ModuleLease {
    fn drop(&mut self) {
        // Under the lock, so that a backend being made meanwhile either shares
        // this module or initializes it again after C_Finalize, never in between.
        let mut modules = lock(&MODULES);
        let Some(modules) = modules.as_mut() else {
            return;
        };
        let last = match modules.get_mut(&self.path) {
            Some(loaded) => {
                loaded.leases -= 1;
                loaded.leases == 0
            }
            None => false,
        };
        if last {
            if let Some(loaded) = modules.remove(&self.path) {
                if loaded.owned {
                    // A failed C_Finalize at teardown leaves nothing to undo and
                    // nobody to tell (drop cannot return it).
                    let _ = loaded.pkcs11.finalize();
                }
            }
        }
    }
}

struct PoolState {
    idle: Vec<Session>,
    /// Sessions open, idle or lent out.
    open: usize,
}

/// At most `max` read-write sessions on one token, reused across threads.
///
/// The token's login is held by a session outside the pool (see
/// [`super::Pkcs11Backend`]); PKCS#11 login is per token for the whole
/// application, so every session opened here is logged in too.
pub(super) struct SessionPool {
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
    wait: Duration,
    pkcs11: Pkcs11,
    slot: Slot,
    token: String,
}

impl SessionPool {
    pub(super) fn new(pkcs11: Pkcs11, slot: Slot, token: &str, max: usize, wait: Duration) -> Self {
        Self {
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            max: max.max(1),
            wait,
            pkcs11,
            slot,
            token: token.to_owned(),
        }
    }

    /// An idle session, a new one while fewer than `max` are open, or the first
    /// one given back within the wait.
    pub(super) fn session(&self) -> Result<PooledSession<'_>> {
        let deadline = Instant::now() + self.wait;
        let mut state = lock(&self.state);
        loop {
            if let Some(session) = state.idle.pop() {
                return Ok(PooledSession::new(self, session));
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.pkcs11.open_rw_session(self.slot) {
                    Ok(session) => Ok(PooledSession::new(self, session)),
                    Err(e) => {
                        self.forget_one();
                        Err(CryptoError::Backend(format!(
                            "token {:?}: cannot open a session: {}",
                            self.token,
                            ckr(&e)
                        )))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CryptoError::Backend(format!(
                    "token {:?}: all {} sessions stayed busy for {:?}",
                    self.token, self.max, self.wait
                )));
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    fn forget_one(&self) {
        lock(&self.state).open -= 1;
        self.freed.notify_one();
    }

    fn give_back(&self, session: Session) {
        lock(&self.state).idle.push(session);
        self.freed.notify_one();
    }
}

/// A session lent by the pool; given back on drop, or closed when an error said
/// it is no longer usable.
pub(super) struct PooledSession<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
    broken: std::cell::Cell<bool>,
}

impl<'a> PooledSession<'a> {
    fn new(pool: &'a SessionPool, session: Session) -> Self {
        Self {
            pool,
            session: Some(session),
            broken: std::cell::Cell::new(false),
        }
    }

    /// Notes an error of a call on this session: one that says the session or
    /// the device is gone makes the pool close the session instead of reusing it.
    pub(super) fn note(&self, error: &Pkcs11Error) {
        if let Pkcs11Error::Pkcs11(rv, _) = error {
            if matches!(
                rv,
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::DeviceRemoved
                    | RvError::DeviceError
                    | RvError::TokenNotPresent
                    | RvError::UserNotLoggedIn
                    | RvError::OperationActive
                    | RvError::CryptokiNotInitialized
            ) {
                self.discard();
            }
        }
    }

    /// Has the pool close this session instead of lending it again.
    pub(super) fn discard(&self) {
        self.broken.set(true);
    }
}

impl Deref for PooledSession<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        // Present from construction until drop.
        match &self.session {
            Some(session) => session,
            None => unreachable!("a pooled session is present until dropped"),
        }
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            if self.broken.get() {
                drop(session);
                self.pool.forget_one();
            } else {
                self.pool.give_back(session);
            }
        }
    }
}

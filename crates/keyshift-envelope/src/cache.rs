//! A time-limited cache of unwrapped master keys, so that encrypting or decrypting many
//! files under one keyring costs one KEK call, not one per file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::kek::Kek;
use crate::keyring::{Keyring, MasterKey, MASTER_KEY_ID_LEN};

/// How long a master key stays cached unless configured otherwise.
pub const DEFAULT_MASTER_KEY_TTL: Duration = Duration::from_secs(5 * 60);

/// Cached keys with the instant each expires.
type Entries = HashMap<[u8; MASTER_KEY_ID_LEN], (Arc<MasterKey>, Instant)>;

/// Unwrapped master keys by master-key id, each for at most the time limit after it was
/// unwrapped.
///
/// An evicted or expired key is dropped from the cache at once and zeroized when the last
/// `Arc` handed out for it is dropped: callers should hold the `Arc` only for the
/// operation at hand. Expiry uses the monotonic clock (`Instant`), not wall time.
#[derive(Debug)]
pub struct MasterKeyCache {
    ttl: Duration,
    entries: Mutex<Entries>,
    /// Held while a missing key is unwrapped, so concurrent misses make one KEK call.
    unwrapping: tokio::sync::Mutex<()>,
}

impl Default for MasterKeyCache {
    fn default() -> Self {
        Self::new(DEFAULT_MASTER_KEY_TTL)
    }
}

impl MasterKeyCache {
    /// A cache keeping each master key for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            unwrapping: tokio::sync::Mutex::new(()),
        }
    }

    /// The time limit.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the map half-updated: every
        // critical section is a single insert, remove or lookup.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached master key of `keyring`, or the key unwrapped with `kek` (and cached).
    /// Concurrent misses make one KEK call: the first unwraps while the others wait for it,
    /// then find the key cached (misses for different keyrings wait for each other too; they
    /// are rare: once per keyring and time limit). Hits never wait.
    pub async fn get_or_unwrap(&self, keyring: &Keyring, kek: &dyn Kek) -> Result<Arc<MasterKey>> {
        if let Some(key) = self.get(keyring.master_key_id()) {
            return Ok(key);
        }
        let _one_at_a_time = self.unwrapping.lock().await;
        if let Some(key) = self.get(keyring.master_key_id()) {
            return Ok(key);
        }
        let key = Arc::new(keyring.unwrap_master_key(kek).await?);
        self.insert(Arc::clone(&key));
        Ok(key)
    }

    /// The cached key of `id` if it has not expired.
    pub fn get(&self, id: &[u8; MASTER_KEY_ID_LEN]) -> Option<Arc<MasterKey>> {
        self.get_at(id, Instant::now())
    }

    /// [`MasterKeyCache::get`] as seen at `now` (tests).
    #[doc(hidden)]
    pub fn get_at(&self, id: &[u8; MASTER_KEY_ID_LEN], now: Instant) -> Option<Arc<MasterKey>> {
        let mut entries = self.entries();
        match entries.get(id) {
            Some((key, expires)) if now < *expires => Some(Arc::clone(key)),
            Some(_) => {
                entries.remove(id);
                None
            }
            None => None,
        }
    }

    /// Caches `key` for the time limit from now (replacing an entry of the same id).
    pub fn insert(&self, key: Arc<MasterKey>) {
        let expires = Instant::now() + self.ttl;
        self.entries().insert(*key.id(), (key, expires));
    }

    /// Drops the key of `id`; returns whether it was cached.
    pub fn evict(&self, id: &[u8; MASTER_KEY_ID_LEN]) -> bool {
        self.entries().remove(id).is_some()
    }

    /// Drops every expired entry (also done lazily by `get`).
    pub fn purge_expired(&self) {
        let now = Instant::now();
        self.entries().retain(|_, (_, expires)| now < *expires);
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.entries().clear();
    }

    /// Number of entries, expired ones included until purged.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kek::{KekError, LocalKek, WrappedKey};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use zeroize::Zeroizing;

    const KID: &str = "https://vault.example/keys/kek/00000000000000000000000000000001";

    /// Counts unwraps, to show the cache saves them.
    #[derive(Debug)]
    struct Counting {
        inner: LocalKek,
        unwraps: AtomicUsize,
    }

    impl Counting {
        /// Counting unwraps under `inner`.
        fn new(inner: LocalKek) -> Self {
            Counting {
                inner,
                unwraps: AtomicUsize::new(0),
            }
        }

        /// Counting unwraps under a fresh local KEK holding [`KID`].
        fn with_kid() -> Self {
            let mut inner = LocalKek::new();
            inner.generate(KID).unwrap();
            Self::new(inner)
        }
    }

    #[async_trait::async_trait]
    impl Kek for Counting {
        async fn wrap(&self, kid: &str, key: &[u8]) -> std::result::Result<WrappedKey, KekError> {
            self.inner.wrap(kid, key).await
        }
        async fn unwrap(
            &self,
            wrapped: &WrappedKey,
        ) -> std::result::Result<Zeroizing<Vec<u8>>, KekError> {
            self.unwraps.fetch_add(1, Ordering::SeqCst);
            // As a vault call would: let other tasks run meanwhile.
            tokio::task::yield_now().await;
            self.inner.unwrap(wrapped).await
        }
    }

    #[tokio::test]
    async fn caches_until_the_time_limit() {
        let kek = Counting::with_kid();
        let (keyring, master) = Keyring::create(&kek, KID, 0).await.unwrap();
        let cache = MasterKeyCache::new(Duration::from_secs(60));
        assert_eq!(cache.ttl(), Duration::from_secs(60));
        let a = cache.get_or_unwrap(&keyring, &kek).await.unwrap();
        let b = cache.get_or_unwrap(&keyring, &kek).await.unwrap();
        assert_eq!(kek.unwraps.load(Ordering::SeqCst), 1);
        assert_eq!(a.secret(), master.secret());
        assert!(Arc::ptr_eq(&a, &b));

        // Past the limit the entry is gone and the next call unwraps again.
        let later = Instant::now() + Duration::from_secs(61);
        assert!(cache.get_at(keyring.master_key_id(), later).is_none());
        assert!(cache.is_empty());
        cache.get_or_unwrap(&keyring, &kek).await.unwrap();
        assert_eq!(kek.unwraps.load(Ordering::SeqCst), 2);

        assert!(cache.evict(keyring.master_key_id()));
        assert!(!cache.evict(keyring.master_key_id()));
        cache.insert(a);
        cache.clear();
        assert_eq!(cache.len(), 0);
        assert_eq!(MasterKeyCache::default().ttl(), DEFAULT_MASTER_KEY_TTL);
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_kek_call() {
        let kek = Counting::with_kid();
        let (keyring, master) = Keyring::create(&kek, KID, 0).await.unwrap();
        let cache = MasterKeyCache::default();
        let get = || cache.get_or_unwrap(&keyring, &kek);
        let (a, b, c, d) = tokio::join!(get(), get(), get(), get());
        assert_eq!(kek.unwraps.load(Ordering::SeqCst), 1);
        for k in [a, b, c, d] {
            assert_eq!(k.unwrap().secret(), master.secret());
        }
        // A failed unwrap is not cached, and the next caller tries again.
        let (other, _) = Keyring::create(&kek, KID, 0).await.unwrap();
        let empty = Counting::new(LocalKek::new());
        let (x, y) = tokio::join!(
            cache.get_or_unwrap(&other, &empty),
            cache.get_or_unwrap(&other, &empty)
        );
        assert!(x.is_err() && y.is_err());
        assert_eq!(empty.unwraps.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn unlock_cached_unwraps_a_keyring_once_and_falls_back_for_the_rest() {
        use crate::stream::{Decryptor, Encryptor};
        let kek = Counting::with_kid();
        let unwraps = || kek.unwraps.load(Ordering::SeqCst);
        let (keyring, master) = Keyring::create(&kek, KID, 0).await.unwrap();
        let (other, _) = Keyring::create(&kek, KID, 0).await.unwrap();
        let three = |text: &[u8]| {
            Encryptor::three_level(&master, b"ctx", 4096)
                .unwrap()
                .encrypt_to_vec(text)
                .unwrap()
        };
        let files = [three(b"one"), three(b"two"), three(b"three")];
        let cache = MasterKeyCache::default();
        for (file, text) in files.iter().zip([&b"one"[..], b"two", b"three"]) {
            let header = crate::Header::parse(file).unwrap();
            let d = Decryptor::unlock_cached(&header, &kek, Some(&keyring), &cache, b"ctx")
                .await
                .unwrap();
            assert_eq!(d.decrypt_slice(file).unwrap(), text);
        }
        assert_eq!(unwraps(), 1, "three files of one keyring, one KEK call");

        // A keyring that does not fit is named, not tried; none at all is asked for.
        let header = crate::Header::parse(&files[0]).unwrap();
        let wrong = Decryptor::unlock_cached(&header, &kek, Some(&other), &cache, b"ctx").await;
        assert!(
            matches!(wrong, Err(crate::EnvelopeError::WrongKeyring { .. })),
            "{wrong:?}"
        );
        let none = Decryptor::unlock_cached(&header, &kek, None, &cache, b"ctx").await;
        assert!(
            matches!(none, Err(crate::EnvelopeError::KeyringRequired(_))),
            "{none:?}"
        );
        // The wrong context is refused even with the master key cached.
        let context =
            Decryptor::unlock_cached(&header, &kek, Some(&keyring), &cache, b"other").await;
        assert!(context.is_err());
        assert_eq!(unwraps(), 1);

        // A 2-level file unwraps its own data key every time: nothing of it is cached.
        let two = Encryptor::two_level(&kek, KID, b"ctx", 4096)
            .await
            .unwrap()
            .encrypt_to_vec(b"two-level")
            .unwrap();
        let header = crate::Header::parse(&two).unwrap();
        for n in 2..4 {
            let d = Decryptor::unlock_cached(&header, &kek, Some(&keyring), &cache, b"ctx")
                .await
                .unwrap();
            assert_eq!(d.decrypt_slice(&two).unwrap(), b"two-level");
            assert_eq!(unwraps(), n);
        }
    }

    #[test]
    fn zero_ttl_never_serves() {
        let cache = MasterKeyCache::new(Duration::ZERO);
        let key = Arc::new(MasterKey::generate().unwrap());
        let id = *key.id();
        cache.insert(key);
        assert!(cache.get(&id).is_none());
        cache.insert(Arc::new(MasterKey::generate().unwrap()));
        cache.purge_expired();
        assert!(cache.is_empty());
    }
}

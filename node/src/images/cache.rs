//! The image store's content-addressed cache on disk.
//!
//! ```text
//! blobs/sha256/<hex>   manifests, configs and layers, each verified against its digest
//! refs/<hex>           what a tag resolved to: {"reference", "digest"}; the file name is the
//!                      sha256 of the reference, so any reference fits in one file name
//! tmp/                 writes in flight; renamed into blobs/ or refs/ only once complete
//! ```
//!
//! Nothing unverified or partial is ever visible under `blobs/`: bytes are hashed as they
//! arrive, checked against the digest and size the caller expects, fsynced, and only then
//! renamed into place. Two processes writing one blob each use their own temporary file and
//! rename equal bytes over each other. Within a process, [`BlobCache::lock`] makes concurrent
//! pulls of one blob wait for a single download.

use futures::{Stream, StreamExt};
use sha2::Digest as _;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedMutexGuard;

/// Temporary files untouched for this long were left by a process that died mid-write. A
/// live download writes far more often: the registry client gives up after a minute without
/// data.
const STALE_TMP: Duration = Duration::from_secs(24 * 60 * 60);

/// Large enough that a layer is written in few system calls, small enough per download.
const WRITE_BUFFER: usize = 1 << 20;

/// Why a blob was not stored. The caller turns these into messages naming the image.
#[derive(Debug)]
pub(super) enum BlobError {
    /// Only `sha256:<64 hex>` digests name blobs here.
    UnsupportedDigest,
    /// The source stream failed (for a download: the network or the client's own check).
    Source(io::Error),
    /// More bytes arrived than the descriptor's size; the download was cut off there.
    TooLarge,
    /// The stream ended with a different number of bytes than the descriptor's size.
    SizeMismatch { actual: u64 },
    DigestMismatch { actual: String },
    /// Writing the cache itself failed.
    Io(io::Error),
}

impl From<io::Error> for BlobError {
    fn from(e: io::Error) -> Self {
        BlobError::Io(e)
    }
}

type LockMap = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

#[derive(Clone)]
pub(super) struct BlobCache {
    root: Arc<PathBuf>,
    /// One lock per digest being written, so concurrent pulls share one download.
    locks: LockMap,
}

/// `sha256:` and 64 lowercase hex digits: the only digests blobs are stored under. Checking
/// the form also keeps a hostile manifest from naming a path outside `blobs/`.
pub(super) fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

pub(super) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

impl BlobCache {
    pub(super) fn open(root: &Path) -> io::Result<Self> {
        for dir in ["blobs/sha256", "refs", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        sweep_stale_tmp(&root.join("tmp"));
        Ok(Self { root: Arc::new(root.to_owned()), locks: Arc::default() })
    }

    pub(super) fn path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:").filter(|_| is_sha256_digest(digest))?;
        Some(self.root.join("blobs/sha256").join(hex))
    }

    /// Whether the blob is cached with the expected size. Only the size is checked: the bytes
    /// were verified before the rename that made them visible, and re-hashing every layer on
    /// every pod start would cost more than the download it saves.
    pub(super) fn has(&self, digest: &str, size: u64) -> bool {
        self.path(digest).and_then(|p| std::fs::metadata(p).ok()).is_some_and(|m| m.is_file() && m.len() == size)
    }

    /// A small cached blob (a manifest), re-hashed because that is cheap for its size.
    pub(super) fn read_verified(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.path(digest)?).ok()?;
        (sha256_digest(&bytes) == digest).then_some(bytes)
    }

    /// Waits until no other task of this process is writing `digest`; held while checking
    /// the cache and downloading, so the second puller finds the first one's blob.
    pub(super) async fn lock(&self, digest: &str) -> DigestLock {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(locks.entry(digest.to_owned()).or_default())
        };
        let guard = Arc::clone(&lock).lock_owned().await;
        DigestLock { locks: Arc::clone(&self.locks), digest: digest.to_owned(), lock, guard: Some(guard) }
    }

    /// Streams a blob into the cache, verifying its size and sha256 before it becomes visible.
    pub(super) async fn write_stream<S, B>(&self, digest: &str, size: u64, mut chunks: S) -> Result<PathBuf, BlobError>
    where
        S: Stream<Item = io::Result<B>> + Unpin,
        B: AsRef<[u8]>,
    {
        let dest = self.path(digest).ok_or(BlobError::UnsupportedDigest)?;
        let tmp = TempFile::new(&self.root, digest);
        let mut file = tokio::fs::File::create(&tmp.path).await?;
        let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, &mut file);
        let mut hasher = sha2::Sha256::new();
        let mut written = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(BlobError::Source)?;
            let chunk = chunk.as_ref();
            written += chunk.len() as u64;
            // Stop a registry that sends more than it promised before it fills the disk.
            if written > size {
                return Err(BlobError::TooLarge);
            }
            hasher.update(chunk);
            out.write_all(chunk).await?;
        }
        out.flush().await?;
        if written != size {
            return Err(BlobError::SizeMismatch { actual: written });
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(BlobError::DigestMismatch { actual });
        }
        file.sync_all().await?;
        drop(file);
        tmp.persist(&dest).await?;
        Ok(dest)
    }

    /// Stores bytes already in memory (manifests) under their digest, verified the same way.
    pub(super) async fn write_bytes(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, BlobError> {
        let chunks = futures::stream::iter([Ok::<_, io::Error>(bytes)]);
        self.write_stream(digest, bytes.len() as u64, chunks).await
    }

    /// The manifest digest `reference` (a tag) last resolved to.
    pub(super) fn read_ref(&self, reference: &str) -> Option<String> {
        let bytes = std::fs::read(self.ref_path(reference)).ok()?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        // The name is a hash; the content says which reference it is for.
        if doc["reference"] != reference {
            return None;
        }
        doc["digest"].as_str().filter(|d| is_sha256_digest(d)).map(str::to_owned)
    }

    pub(super) async fn write_ref(&self, reference: &str, digest: &str) -> io::Result<()> {
        let doc = serde_json::json!({ "reference": reference, "digest": digest });
        let tmp = TempFile::new(&self.root, "ref");
        let mut file = tokio::fs::File::create(&tmp.path).await?;
        file.write_all(doc.to_string().as_bytes()).await?;
        file.sync_all().await?;
        drop(file);
        tmp.persist(&self.ref_path(reference)).await
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        let name = sha256_digest(reference.as_bytes());
        self.root.join("refs").join(name.trim_start_matches("sha256:"))
    }
}

/// Holds one digest's lock; dropping it releases the lock and forgets the lock when no one
/// else wants it, so the map does not grow with every blob ever pulled.
pub(super) struct DigestLock {
    locks: LockMap,
    digest: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for DigestLock {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody is waiting. New waiters need the map's mutex,
        // held here, to get a reference, so none can appear while we decide.
        if Arc::strong_count(&self.lock) == 2 && locks.get(&self.digest).is_some_and(|l| Arc::ptr_eq(l, &self.lock)) {
            locks.remove(&self.digest);
        }
    }
}

/// A file in `tmp/` that is removed unless persisted, also when the pull is cancelled
/// (its future dropped) halfway through a download.
struct TempFile {
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    fn new(root: &Path, label: &str) -> Self {
        let label = label.trim_start_matches("sha256:");
        let path = root.join("tmp").join(format!("{label}-{}", uuid::Uuid::new_v4()));
        Self { path, persisted: false }
    }

    /// Renames the complete, fsynced file into place, then syncs the directory so the new
    /// name survives a crash too.
    async fn persist(mut self, dest: &Path) -> io::Result<()> {
        tokio::fs::rename(&self.path, dest).await?;
        self.persisted = true;
        if let Some(dir) = dest.parent() {
            // Best effort: not every file system can sync a directory.
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _ = d.sync_all().await;
            }
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes temporary files a crashed process left behind; fresh ones may be another
/// process's download in flight and are left alone.
fn sweep_stale_tmp(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let stale = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > STALE_TMP);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::test_support::TempDir;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir).expect("dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = io::Result<&'static [u8]>> + Unpin {
        futures::stream::iter(parts.iter().map(|p| Ok(*p)).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn a_verified_blob_becomes_visible_whole() {
        let dir = TempDir::new("cache");
        let cache = BlobCache::open(&dir.0).expect("open");
        let digest = sha256_digest(b"hello world");
        let path = cache.write_stream(&digest, 11, chunks(&[b"hello ", b"world"])).await.expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"hello world");
        assert!(cache.has(&digest, 11));
        assert!(!cache.has(&digest, 12), "a cache hit must have the descriptor's size");
        assert_eq!(cache.read_verified(&digest).as_deref(), Some(&b"hello world"[..]));
        assert!(entries(&dir.0.join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn bytes_that_do_not_match_leave_nothing_behind() {
        let dir = TempDir::new("cache");
        let cache = BlobCache::open(&dir.0).expect("open");
        let digest = sha256_digest(b"hello world");
        let blobs = dir.0.join("blobs/sha256");

        let err = cache.write_stream(&digest, 11, chunks(&[b"hello", b" worle"])).await.expect_err("wrong bytes");
        assert!(matches!(&err, BlobError::DigestMismatch { actual } if *actual == sha256_digest(b"hello worle")), "{err:?}");
        let err = cache.write_stream(&digest, 11, chunks(&[b"hello world", b"!"])).await.expect_err("too long");
        assert!(matches!(err, BlobError::TooLarge), "{err:?}");
        let err = cache.write_stream(&digest, 11, chunks(&[b"hello"])).await.expect_err("too short");
        assert!(matches!(err, BlobError::SizeMismatch { actual: 5 }), "{err:?}");
        let failing = futures::stream::iter(vec![Ok(&b"hello"[..]), Err(io::Error::other("connection reset"))]);
        let err = cache.write_stream(&digest, 11, failing).await.expect_err("network failure");
        assert!(matches!(err, BlobError::Source(_)), "{err:?}");
        let err = cache.write_stream("sha256:../../etc/passwd", 11, chunks(&[b"hello world"])).await.expect_err("bad digest");
        assert!(matches!(err, BlobError::UnsupportedDigest), "{err:?}");

        assert!(entries(&blobs).is_empty(), "a refused blob must not be visible");
        assert!(entries(&dir.0.join("tmp")).is_empty(), "refused downloads must be cleaned up");
        assert!(!cache.has(&digest, 11));
    }

    #[tokio::test]
    async fn a_cancelled_download_leaves_nothing_behind() {
        let dir = TempDir::new("cache");
        let cache = BlobCache::open(&dir.0).expect("open");
        let digest = sha256_digest(b"hello world");
        // The stream stalls after its first chunk; the pull is abandoned (e.g. the pod deleted).
        let stalled = futures::stream::iter(vec![Ok(&b"hello"[..])]).chain(futures::stream::pending());
        let write = cache.write_stream(&digest, 11, stalled);
        assert!(tokio::time::timeout(Duration::from_millis(50), write).await.is_err());
        assert!(entries(&dir.0.join("tmp")).is_empty());
        assert!(entries(&dir.0.join("blobs/sha256")).is_empty());
    }

    #[tokio::test]
    async fn concurrent_writers_of_one_blob_all_succeed() {
        let dir = TempDir::new("cache");
        let cache = BlobCache::open(&dir.0).expect("open");
        let digest = sha256_digest(b"same bytes");
        let writes = (0..8).map(|_| cache.write_bytes(&digest, b"same bytes"));
        for result in futures::future::join_all(writes).await {
            result.expect("every writer succeeds");
        }
        assert_eq!(entries(&dir.0.join("blobs/sha256")), vec![digest.trim_start_matches("sha256:").to_owned()]);
        assert!(entries(&dir.0.join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn digest_locks_serialise_and_are_forgotten_when_free() {
        let dir = TempDir::new("cache");
        let cache = BlobCache::open(&dir.0).expect("open");
        let first = cache.lock("sha256:a").await;
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.lock("sha256:a").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the second locker must wait");
        drop(first);
        let second = waiter.await.expect("join");
        assert_eq!(cache.locks.lock().map(|l| l.len()).unwrap_or(0), 1, "still wanted");
        drop(second);
        assert_eq!(cache.locks.lock().map(|l| l.len()).unwrap_or(1), 0, "free locks are forgotten");
    }

    #[tokio::test]
    async fn refs_round_trip_and_stale_temporaries_are_swept() {
        let dir = TempDir::new("cache");
        let cache = BlobCache::open(&dir.0).expect("open");
        let digest = sha256_digest(b"manifest");
        assert_eq!(cache.read_ref("127.0.0.1:5000/x:v1"), None);
        cache.write_ref("127.0.0.1:5000/x:v1", &digest).await.expect("write ref");
        assert_eq!(cache.read_ref("127.0.0.1:5000/x:v1"), Some(digest));
        assert_eq!(cache.read_ref("127.0.0.1:5000/x:v2"), None);

        let old = dir.0.join("tmp/old");
        let fresh = dir.0.join("tmp/fresh");
        for f in [&old, &fresh] {
            std::fs::write(f, b"partial").expect("write");
        }
        let long_ago = std::time::SystemTime::now() - STALE_TMP - Duration::from_secs(60);
        std::fs::File::options().write(true).open(&old).and_then(|f| f.set_modified(long_ago)).expect("age");
        BlobCache::open(&dir.0).expect("reopen");
        assert_eq!(entries(&dir.0.join("tmp")), vec!["fresh".to_owned()]);
    }
}

//! Registry storage on disk, content-addressed:
//!
//! ```text
//! blobs/sha256/<hex>                                    every blob and manifest, by digest
//! repositories/<name>/_layers/sha256/<hex>              empty: the blob belongs to <name>
//! repositories/<name>/_manifests/revisions/sha256/<hex> the manifest's media type
//! repositories/<name>/_manifests/tags/<tag>             the digest the tag points at
//! repositories/<name>/_referrers/<subject hex>/<hex>    descriptor of a manifest whose subject is <subject>
//! uploads/<uuid>/{data,repo}                            blob uploads in progress
//! tmp/                                                  monolithic writes before their rename
//! ```
//!
//! Blob bytes are hashed as they arrive, checked against the digest the client names,
//! fsynced, and only then renamed into `blobs/`: a reader sees a whole verified blob or none.
//! Repository names are validated ([`RepoName`]), so they map to folders without escaping
//! the root or meeting the `_`-prefixed folders.

use crate::error::{ErrorCode, RegistryError};
use crate::names::{Digest, ManifestRef, RepoName};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::Digest as _;
use std::collections::HashMap;
use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// Manifests larger than this are refused, as CNCF distribution does (4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

#[derive(Clone)]
pub struct Storage {
    root: Arc<PathBuf>,
    /// Running sha256 of each upload in progress, so a chunked upload is hashed once.
    /// Lost on restart; the upload's bytes are then re-hashed from disk.
    uploads: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadProgress>>>>>,
}

#[derive(Default)]
struct UploadProgress {
    hasher: Option<sha2::Sha256>,
    size: u64,
}

/// A manifest as stored: its digest, media type and bytes.
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

fn io_err(context: &str) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |e| RegistryError::io(context, e)
}

impl Storage {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        for dir in ["blobs/sha256", "repositories", "uploads"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        // Whatever was half-written when the process last stopped is garbage.
        let _ = std::fs::remove_dir_all(root.join("tmp"));
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(Self { root: Arc::new(root.to_owned()), uploads: Default::default() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn repo_dir(&self, name: &RepoName) -> PathBuf {
        self.root.join("repositories").join(name.as_str())
    }

    fn layer_link(&self, name: &RepoName, digest: &Digest) -> PathBuf {
        self.repo_dir(name).join("_layers/sha256").join(digest.hex())
    }

    fn revision_link(&self, name: &RepoName, digest: &Digest) -> PathBuf {
        self.repo_dir(name).join("_manifests/revisions/sha256").join(digest.hex())
    }

    fn tag_link(&self, name: &RepoName, tag: &str) -> PathBuf {
        self.repo_dir(name).join("_manifests/tags").join(tag)
    }

    pub fn repository_exists(&self, name: &RepoName) -> bool {
        self.repo_dir(name).join("_manifests").is_dir() || self.repo_dir(name).join("_layers").is_dir()
    }

    /// The blob's path and size if `name` may serve it.
    pub fn blob(&self, name: &RepoName, digest: &Digest) -> Option<(PathBuf, u64)> {
        if !self.layer_link(name, digest).exists() && !self.revision_link(name, digest).exists() {
            return None;
        }
        let path = self.blob_path(digest);
        let size = std::fs::metadata(&path).ok()?.len();
        Some((path, size))
    }

    pub fn link_blob(&self, name: &RepoName, digest: &Digest) -> Result<(), RegistryError> {
        write_atomically(&self.root, &self.layer_link(name, digest), b"").map_err(io_err("linking a blob"))
    }

    pub fn delete_blob(&self, name: &RepoName, digest: &Digest) -> Result<(), RegistryError> {
        match std::fs::remove_file(self.layer_link(name, digest)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(RegistryError::blob_unknown(digest)),
            Err(e) => Err(RegistryError::io("deleting a blob", e)),
        }
    }

    /// Cross-repository mount: link `from`'s blob into `name` without a copy.
    pub fn mount_blob(&self, name: &RepoName, digest: &Digest, from: &RepoName) -> Result<bool, RegistryError> {
        if self.blob(from, digest).is_none() {
            return Ok(false);
        }
        self.link_blob(name, digest)?;
        Ok(true)
    }

    /// Writes a whole blob from one request body (monolithic upload) and links it.
    pub async fn put_blob<S, E>(&self, name: &RepoName, expected: &Digest, body: S) -> Result<u64, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp = self.root.join("tmp").join(uuid::Uuid::new_v4().to_string());
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io_err("creating a blob"))?;
            let mut hasher = sha2::Sha256::new();
            let size = append_hashing(&mut file, body, &mut hasher).await?;
            self.commit(&mut file, &tmp, hasher, expected).await?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        let size = result?;
        self.link_blob(name, expected)?;
        Ok(size)
    }

    /// Checks the digest, makes the bytes durable, then renames them into `blobs/`.
    async fn commit(&self, file: &mut tokio::fs::File, from: &Path, hasher: sha2::Sha256, expected: &Digest) -> Result<(), RegistryError> {
        let actual = Digest::from_hash(hasher.finalize().as_slice());
        if &actual != expected {
            return Err(RegistryError::new(ErrorCode::DigestInvalid, "provided digest did not match uploaded content")
                .with_detail(serde_json::json!({ "expected": expected.as_str(), "actual": actual.as_str() })));
        }
        file.sync_all().await.map_err(io_err("syncing a blob"))?;
        // Two pushes of the same blob both land here; the renames replace equal bytes.
        tokio::fs::rename(from, self.blob_path(expected)).await.map_err(io_err("storing a blob"))
    }

    pub fn start_upload(&self, name: &RepoName) -> Result<String, RegistryError> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.root.join("uploads").join(&id);
        std::fs::create_dir_all(&dir).map_err(io_err("starting an upload"))?;
        std::fs::write(dir.join("repo"), name.as_str()).map_err(io_err("starting an upload"))?;
        std::fs::File::create(dir.join("data")).map_err(io_err("starting an upload"))?;
        self.progress(&id);
        Ok(id)
    }

    fn upload_dir(&self, name: &RepoName, id: &str) -> Result<PathBuf, RegistryError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(RegistryError::upload_unknown());
        }
        let dir = self.root.join("uploads").join(id);
        match std::fs::read_to_string(dir.join("repo")) {
            Ok(owner) if owner == name.as_str() => Ok(dir),
            _ => Err(RegistryError::upload_unknown()),
        }
    }

    fn progress(&self, id: &str) -> Arc<tokio::sync::Mutex<UploadProgress>> {
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        uploads.entry(id.to_owned()).or_default().clone()
    }

    /// Bytes received so far.
    pub fn upload_size(&self, name: &RepoName, id: &str) -> Result<u64, RegistryError> {
        let dir = self.upload_dir(name, id)?;
        std::fs::metadata(dir.join("data")).map(|m| m.len()).map_err(|_| RegistryError::upload_unknown())
    }

    /// Appends one chunk. `start` is the first byte's offset from `Content-Range`, if sent;
    /// it must be where the upload is. A body cut short is rolled back, not kept.
    pub async fn append_upload<S, E>(&self, name: &RepoName, id: &str, start: Option<u64>, body: S) -> Result<u64, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let dir = self.upload_dir(name, id)?;
        let progress = self.progress(id);
        let mut progress = progress.lock().await;
        let data = dir.join("data");
        let mut file = tokio::fs::OpenOptions::new().write(true).open(&data).await.map_err(|_| RegistryError::upload_unknown())?;
        let size = file.metadata().await.map_err(io_err("reading an upload"))?.len();
        if let Some(start) = start {
            if start != size {
                return Err(RegistryError::new(ErrorCode::RangeInvalid, format!("chunk starts at {start} but the upload has {size} bytes"))
                    .with_detail(serde_json::json!({ "size": size })));
            }
        }
        let mut hasher = match progress.hasher.take() {
            Some(h) if progress.size == size => h,
            _ => rehash(&data).await?,
        };
        file.seek(SeekFrom::Start(size)).await.map_err(io_err("appending to an upload"))?;
        match append_hashing(&mut file, body, &mut hasher).await {
            Ok(n) => {
                progress.hasher = Some(hasher);
                progress.size = size + n;
                Ok(size + n)
            }
            Err(e) => {
                // Drop the partial chunk so the client can resend it from `size`.
                let _ = file.set_len(size).await;
                Err(e)
            }
        }
    }

    /// Appends the last chunk (maybe empty), checks the digest and publishes the blob.
    pub async fn finish_upload<S, E>(&self, name: &RepoName, id: &str, expected: &Digest, body: S) -> Result<u64, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let size = self.append_upload(name, id, None, body).await?;
        let dir = self.upload_dir(name, id)?;
        let progress = self.progress(id);
        let mut progress = progress.lock().await;
        let data = dir.join("data");
        let hasher = match progress.hasher.take() {
            Some(h) if progress.size == size => h,
            _ => rehash(&data).await?,
        };
        let mut file = tokio::fs::OpenOptions::new().write(true).open(&data).await.map_err(|_| RegistryError::upload_unknown())?;
        let committed = self.commit(&mut file, &data, hasher, expected).await;
        drop(progress);
        // Whether it succeeded or not, this upload is over: nothing of it stays around.
        self.cancel_upload(name, id)?;
        committed?;
        self.link_blob(name, expected)?;
        Ok(size)
    }

    pub fn cancel_upload(&self, name: &RepoName, id: &str) -> Result<(), RegistryError> {
        let dir = self.upload_dir(name, id)?;
        self.uploads.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        std::fs::remove_dir_all(dir).map_err(io_err("removing an upload"))
    }

    /// Stores a manifest already checked by the server, under its digest and maybe a tag.
    pub fn put_manifest(&self, name: &RepoName, reference: &ManifestRef, media_type: &str, body: &[u8], subject: Option<(&Digest, serde_json::Value)>) -> Result<Digest, RegistryError> {
        let digest = Digest::of(body);
        if let ManifestRef::Digest(d) = reference {
            if d != &digest {
                return Err(RegistryError::new(ErrorCode::DigestInvalid, "manifest digest did not match the reference")
                    .with_detail(serde_json::json!({ "expected": d.as_str(), "actual": digest.as_str() })));
            }
        }
        let write = |path: &Path, bytes: &[u8]| write_atomically(&self.root, path, bytes).map_err(io_err("storing a manifest"));
        write(&self.blob_path(&digest), body)?;
        write(&self.revision_link(name, &digest), media_type.as_bytes())?;
        if let Some((subject, descriptor)) = subject {
            let link = self.repo_dir(name).join("_referrers").join(subject.hex()).join(digest.hex());
            write(&link, descriptor.to_string().as_bytes())?;
        }
        if let ManifestRef::Tag(tag) = reference {
            write(&self.tag_link(name, tag), digest.as_str().as_bytes())?;
        }
        Ok(digest)
    }

    pub fn resolve(&self, name: &RepoName, reference: &ManifestRef) -> Result<Digest, RegistryError> {
        let unknown = || match reference {
            ManifestRef::Tag(t) => RegistryError::manifest_unknown(t),
            ManifestRef::Digest(d) => RegistryError::manifest_unknown(d.as_str()),
        };
        let digest = match reference {
            ManifestRef::Digest(d) => d.clone(),
            ManifestRef::Tag(tag) => {
                let text = std::fs::read_to_string(self.tag_link(name, tag)).map_err(|_| unknown())?;
                Digest::parse(text.trim()).map_err(|_| unknown())?
            }
        };
        if !self.revision_link(name, &digest).exists() {
            return Err(unknown());
        }
        Ok(digest)
    }

    pub fn manifest(&self, name: &RepoName, reference: &ManifestRef) -> Result<StoredManifest, RegistryError> {
        let digest = self.resolve(name, reference)?;
        let media_type = std::fs::read_to_string(self.revision_link(name, &digest)).map_err(io_err("reading a manifest"))?;
        let body = std::fs::read(self.blob_path(&digest)).map_err(io_err("reading a manifest"))?;
        Ok(StoredManifest { digest, media_type, body: body.into() })
    }

    pub fn has_manifest(&self, name: &RepoName, digest: &Digest) -> bool {
        self.revision_link(name, digest).exists()
    }

    /// By tag: removes the tag. By digest: removes the manifest, every tag naming it and its
    /// entry in the referrers of its subject.
    pub fn delete_manifest(&self, name: &RepoName, reference: &ManifestRef) -> Result<(), RegistryError> {
        let digest = self.resolve(name, reference)?;
        if let ManifestRef::Tag(tag) = reference {
            return std::fs::remove_file(self.tag_link(name, tag)).map_err(io_err("deleting a tag"));
        }
        for tag in self.tags(name)? {
            if let Ok(text) = std::fs::read_to_string(self.tag_link(name, &tag)) {
                if text.trim() == digest.as_str() {
                    let _ = std::fs::remove_file(self.tag_link(name, &tag));
                }
            }
        }
        if let Ok(dirs) = std::fs::read_dir(self.repo_dir(name).join("_referrers")) {
            for dir in dirs.flatten() {
                let _ = std::fs::remove_file(dir.path().join(digest.hex()));
            }
        }
        std::fs::remove_file(self.revision_link(name, &digest)).map_err(io_err("deleting a manifest"))
    }

    /// Tags in lexical order; `NAME_UNKNOWN` for a repository never pushed to.
    pub fn tags(&self, name: &RepoName) -> Result<Vec<String>, RegistryError> {
        if !self.repository_exists(name) {
            return Err(RegistryError::name_unknown(name));
        }
        let mut tags: Vec<String> = match std::fs::read_dir(self.repo_dir(name).join("_manifests/tags")) {
            Ok(entries) => entries.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|t| !t.starts_with('.')).collect(),
            Err(_) => Vec::new(),
        };
        tags.sort();
        Ok(tags)
    }

    /// Descriptors of the manifests whose `subject` is `digest`.
    pub fn referrers(&self, name: &RepoName, digest: &Digest) -> Vec<serde_json::Value> {
        let dir = self.repo_dir(name).join("_referrers").join(digest.hex());
        let mut out: Vec<serde_json::Value> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
        out
    }

    /// Repository names in lexical order (for `/v2/_catalog`).
    pub fn repositories(&self) -> Vec<String> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for e in entries.flatten() {
                let Ok(name) = e.file_name().into_string() else { continue };
                if name.starts_with('_') || !e.path().is_dir() {
                    continue;
                }
                let full = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                if e.path().join("_manifests").is_dir() {
                    out.push(full.clone());
                }
                walk(&e.path(), &full, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.root.join("repositories"), "", &mut out);
        out.sort();
        out
    }
}

/// Streams `body` to the end of `file`, hashing as it goes; returns the bytes written.
async fn append_hashing<S, E>(file: &mut tokio::fs::File, mut body: S, hasher: &mut sha2::Sha256) -> Result<u64, RegistryError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| RegistryError::new(ErrorCode::BlobUploadInvalid, format!("the request body ended early: {e}")))?;
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(io_err("writing a blob"))?;
        n += chunk.len() as u64;
    }
    out.flush().await.map_err(io_err("writing a blob"))?;
    Ok(n)
}

async fn rehash(path: &Path) -> Result<sha2::Sha256, RegistryError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut hasher = sha2::Sha256::new();
        let mut file = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match std::io::Read::read(&mut file, &mut buf)? {
                0 => return Ok(hasher),
                n => hasher.update(&buf[..n]),
            }
        }
    })
    .await
    .map_err(|e| RegistryError::io("hashing an upload", std::io::Error::other(e)))?
    .map_err(io_err("hashing an upload"))
}

/// Small files (links, tags, manifests) are written beside their place and renamed in.
fn write_atomically(root: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = root.join("tmp").join(uuid::Uuid::new_v4().to_string());
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

//! Content-addressed files under `data_dir/media`.
//!
//! A file is written to `tmp/` while it is hashed and counted, synced, then renamed to
//! `sha256/<first two hex>/<hash>`. Identical contents land on the same name, so they are
//! stored once; the rename is atomic, so a reader never sees half a file, and two writers of
//! the same content race harmlessly.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Temporary files older than this are left over from a crash and removed at start.
const STALE_TMP: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("content is larger than {0} bytes")]
    TooLarge(u64),
    /// The body being stored failed (a client that went away, a remote that broke off).
    #[error("reading the content failed: {0}")]
    Source(String),
    #[error("media store I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// What was stored: the name of its file and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256: String,
    pub size: u64,
}

pub struct MediaStore {
    root: PathBuf,
}

/// Removes a temporary file unless it was renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl MediaStore {
    /// Open (creating) the store at `root`, clearing temporary files a crash left behind.
    pub fn open(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("tmp"))?;
        std::fs::create_dir_all(root.join("sha256"))?;
        // Other processes may share the directory: only old files are abandoned ones.
        for entry in std::fs::read_dir(root.join("tmp"))?.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP);
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(MediaStore { root })
    }

    /// Where the file with this hash lives. `sha256` comes from our own database or hashing,
    /// never from a request, and is hex, so it cannot leave the store.
    pub fn path(&self, sha256: &str) -> PathBuf {
        let fan = sha256.get(..2).unwrap_or("00");
        self.root.join("sha256").join(fan).join(sha256)
    }

    /// Store `body`, refusing it once it passes `limit` bytes.
    pub async fn write<S, E>(&self, body: S, limit: u64) -> Result<Stored, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let name = format!("{:032x}", rand::random::<u128>());
        let tmp_path = self.root.join("tmp").join(name);
        let mut guard = TempFile(Some(tmp_path.clone()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .await?;
        let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, file);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Source(e.to_string()))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(StoreError::TooLarge(limit));
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        out.get_ref().sync_all().await?;
        drop(out);
        let sha256 = hex::encode(hasher.finalize());
        self.persist(&tmp_path, &sha256).await?;
        guard.0 = None;
        Ok(Stored { sha256, size })
    }

    /// Store bytes already in memory (thumbnails, which are small).
    pub async fn write_bytes(&self, bytes: Bytes) -> Result<Stored, StoreError> {
        let limit = bytes.len() as u64;
        let body = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
        self.write(body, limit).await
    }

    async fn persist(&self, tmp_path: &Path, sha256: &str) -> std::io::Result<()> {
        let target = self.path(sha256);
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        // Replacing an existing file with identical content is harmless and keeps this one
        // step (no check-then-act window).
        tokio::fs::rename(tmp_path, &target).await
    }

    /// Open a stored file: the file and its length.
    pub async fn open_file(&self, sha256: &str) -> std::io::Result<(tokio::fs::File, u64)> {
        let file = tokio::fs::File::open(self.path(sha256)).await?;
        let len = file.metadata().await?.len();
        Ok((file, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn identical_content_is_one_file_and_limits_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::open(dir.path().to_path_buf()).unwrap();
        let a = store
            .write(chunks(&[b"hello ", b"world"]), 100)
            .await
            .unwrap();
        let b = store.write(chunks(&[b"hello world"]), 100).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.size, 11);
        assert_eq!(
            a.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(
            std::fs::read(store.path(&a.sha256)).unwrap(),
            b"hello world"
        );

        let err = store
            .write(chunks(&[b"12345", b"67"]), 6)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge(6)));
        let failing = futures::stream::iter(vec![Ok(Bytes::from_static(b"x")), Err("gone")]);
        assert!(matches!(
            store.write(failing, 100).await.unwrap_err(),
            StoreError::Source(_)
        ));
        // Neither refused body left a temporary file behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}

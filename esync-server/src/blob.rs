//! Content-addressed blob store on the file system.
//!
//! A blob lives at `<root>/<first two hex digits>/<64 hex digits>`. Writes
//! are streamed (from an [`AsyncRead`] or fed chunk by chunk through a
//! [`BlobWriter`]), hashed while received, capped in size, written to a
//! temporary file under `<root>/tmp` and renamed into place only when the
//! digest (and length, if expected) match: a truncated upload, an
//! oversized one or one with the wrong hash leaves nothing behind. Reads
//! take a byte range (HTTP `Range`).

use std::io;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};
use thiserror::Error;
use tokio::fs::{self, File};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, Take};

use crate::store::Digest;

/// Size of the read buffer used when streaming from a reader.
const READ_BUF: usize = 64 * 1024;

/// A blob store operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BlobError {
    /// File-system error.
    #[error("blob store I/O: {0}")]
    Io(#[from] io::Error),
    /// The upload exceeded the size cap (nothing was stored).
    #[error("blob larger than the {limit}-byte limit")]
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// The upload's digest is not the expected one (nothing was stored).
    #[error("blob digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Expected digest (hex).
        expected: String,
        /// Digest of the received bytes (hex).
        actual: String,
    },
    /// The upload's length is not the expected one (nothing was stored).
    #[error("blob length mismatch: expected {expected}, got {actual}")]
    LengthMismatch {
        /// Expected length.
        expected: u64,
        /// Received length.
        actual: u64,
    },
    /// No blob with this digest.
    #[error("blob not found: {0}")]
    NotFound(String),
    /// The requested range is outside the blob.
    #[error("range {start}..{end} not satisfiable for a blob of {len} bytes")]
    RangeNotSatisfiable {
        /// Requested start.
        start: u64,
        /// Requested end (exclusive).
        end: u64,
        /// Blob length.
        len: u64,
    },
}

/// A stored blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its SHA-256.
    pub sha256: Digest,
    /// Its length.
    pub length: u64,
}

/// What an upload must be, checked before it is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// Required digest; `None` accepts any content (the digest is then the
    /// blob's name, not a check).
    pub sha256: Option<Digest>,
    /// Required length.
    pub length: Option<u64>,
}

impl Expect {
    /// Expect exactly this digest.
    pub fn sha256(d: Digest) -> Self {
        Self {
            sha256: Some(d),
            length: None,
        }
    }
}

/// Content-addressed blobs under one directory.
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
    max_len: u64,
}

impl BlobStore {
    /// Opens (creating) the store at `root`, refusing blobs over `max_len`
    /// bytes. Leftover temporary files of an interrupted process are removed.
    pub async fn open(root: impl Into<PathBuf>, max_len: u64) -> Result<Self, BlobError> {
        let root = root.into();
        let tmp = root.join("tmp");
        if fs::try_exists(&tmp).await? {
            fs::remove_dir_all(&tmp).await?;
        }
        fs::create_dir_all(&tmp).await?;
        Ok(Self { root, max_len })
    }

    /// The size cap.
    pub fn max_len(&self) -> u64 {
        self.max_len
    }

    /// Path of the blob `d` (whether or not it exists).
    pub fn path(&self, d: &Digest) -> PathBuf {
        let h = hex::encode(d);
        self.root.join(&h[..2]).join(h)
    }

    /// Starts a chunk-fed upload.
    pub async fn writer(&self, expect: Expect) -> Result<BlobWriter, BlobError> {
        let name = format!("{:032x}.part", rand::random::<u128>());
        let tmp = self.root.join("tmp").join(name);
        let file = File::create_new(&tmp).await?;
        Ok(BlobWriter {
            store: self.clone(),
            expect,
            tmp: Some(tmp),
            file: Some(file),
            hasher: Sha256::new(),
            len: 0,
        })
    }

    /// Stores everything `r` yields (until EOF).
    pub async fn put_reader<R: AsyncRead + Unpin>(
        &self,
        expect: Expect,
        mut r: R,
    ) -> Result<BlobInfo, BlobError> {
        let mut w = self.writer(expect).await?;
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n]).await?;
        }
        w.finish().await
    }

    /// Stores `bytes`.
    pub async fn put_bytes(&self, expect: Expect, bytes: &[u8]) -> Result<BlobInfo, BlobError> {
        let mut w = self.writer(expect).await?;
        w.write(bytes).await?;
        w.finish().await
    }

    /// Length of blob `d`, `None` if absent.
    pub async fn len(&self, d: &Digest) -> Result<Option<u64>, BlobError> {
        match fs::metadata(self.path(d)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens bytes `start..end` of blob `d` for streaming; `end` `None`
    /// means to the end. Returns the reader and the blob's full length.
    pub async fn open_range(
        &self,
        d: &Digest,
        start: u64,
        end: Option<u64>,
    ) -> Result<(Take<File>, u64), BlobError> {
        let mut f = match File::open(self.path(d)).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(hex::encode(d)))
            }
            Err(e) => return Err(e.into()),
        };
        let len = f.metadata().await?.len();
        let end = end.unwrap_or(len);
        if start > end || end > len || (start == end && len > 0) {
            return Err(BlobError::RangeNotSatisfiable { start, end, len });
        }
        f.seek(io::SeekFrom::Start(start)).await?;
        Ok((f.take(end - start), len))
    }

    /// Reads bytes `start..end` of blob `d` into memory (bounded by the
    /// size cap, as every blob is).
    pub async fn read_range(
        &self,
        d: &Digest,
        start: u64,
        end: Option<u64>,
    ) -> Result<Vec<u8>, BlobError> {
        let (mut r, _) = self.open_range(d, start, end).await?;
        let want = r.limit();
        let mut out = Vec::with_capacity(usize::try_from(want.min(self.max_len)).unwrap_or(0));
        r.read_to_end(&mut out).await?;
        Ok(out)
    }

    /// Reads all of blob `d`.
    pub async fn read(&self, d: &Digest) -> Result<Vec<u8>, BlobError> {
        self.read_range(d, 0, None).await
    }

    /// Whether blob `d` exists.
    pub async fn contains(&self, d: &Digest) -> Result<bool, BlobError> {
        Ok(self.len(d).await?.is_some())
    }
}

/// A streamed upload in progress. Dropping it without
/// [`BlobWriter::finish`] removes the temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    store: BlobStore,
    expect: Expect,
    tmp: Option<PathBuf>,
    file: Option<File>,
    hasher: Sha256,
    len: u64,
}

impl BlobWriter {
    /// Appends a chunk. Past the size cap (or the expected length) the
    /// upload is abandoned and the temporary file removed.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        let new_len = self.len.saturating_add(chunk.len() as u64);
        if new_len > self.store.max_len {
            self.abandon().await;
            return Err(BlobError::TooLarge {
                limit: self.store.max_len,
            });
        }
        if let Some(expected) = self.expect.length {
            if new_len > expected {
                self.abandon().await;
                return Err(BlobError::LengthMismatch {
                    expected,
                    actual: new_len,
                });
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("blob upload already finished or abandoned").into());
        };
        if let Err(e) = file.write_all(chunk).await {
            self.abandon().await;
            return Err(e.into());
        }
        self.hasher.update(chunk);
        self.len = new_len;
        Ok(())
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.len
    }

    /// Checks digest and length and moves the blob into place.
    pub async fn finish(mut self) -> Result<BlobInfo, BlobError> {
        let sha256: Digest = self.hasher.clone().finalize().into();
        if let Some(expected) = self.expect.length {
            if expected != self.len {
                self.abandon().await;
                return Err(BlobError::LengthMismatch {
                    expected,
                    actual: self.len,
                });
            }
        }
        if let Some(expected) = self.expect.sha256 {
            if expected != sha256 {
                self.abandon().await;
                return Err(BlobError::DigestMismatch {
                    expected: hex::encode(expected),
                    actual: hex::encode(sha256),
                });
            }
        }
        let (Some(mut file), Some(tmp)) = (self.file.take(), self.tmp.take()) else {
            return Err(io::Error::other("blob upload already finished or abandoned").into());
        };
        let done = async {
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            let dest = self.store.path(&sha256);
            if let Some(dir) = dest.parent() {
                fs::create_dir_all(dir).await?;
            }
            // Same name, same content: an existing blob is kept as it is.
            fs::rename(&tmp, &dest).await
        }
        .await;
        if let Err(e) = done {
            let _ = fs::remove_file(&tmp).await;
            return Err(e.into());
        }
        Ok(BlobInfo {
            sha256,
            length: self.len,
        })
    }

    async fn abandon(&mut self) {
        self.file = None;
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp).await;
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.file = None;
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

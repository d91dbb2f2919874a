//! Delta cache: each (from, to, format) patch is generated once (feature
//! `generate`).

use std::io;
use std::path::PathBuf;

use esync_proto::id::Sha256Digest;
use esync_proto::message::PatchFormat;

use super::generate::{generate_patch, GenerateError, GenerateOptions};
use crate::digest::{sha256, to_hex};

/// Identifies a patch: from which image, to which image, in which format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeltaKey {
    /// SHA-256 of the source image.
    pub from: Sha256Digest,
    /// SHA-256 of the target image.
    pub to: Sha256Digest,
    /// Patch format.
    pub format: PatchFormat,
}

impl DeltaKey {
    /// A file-name-safe name for the key.
    pub fn file_name(&self) -> String {
        let f = match self.format {
            PatchFormat::Bsdiff40 => "bsdiff40",
            PatchFormat::BsdiffZstd => "bsdiff-zstd",
            PatchFormat::BsdiffXz => "bsdiff-xz",
        };
        format!("{}-{}.{f}", to_hex(&self.from), to_hex(&self.to))
    }
}

/// Storage for generated patches.
pub trait DeltaCache {
    /// The cached patch for `key`, if any.
    fn get(&self, key: &DeltaKey) -> io::Result<Option<Vec<u8>>>;
    /// Stores a patch for `key`.
    fn put(&self, key: &DeltaKey, patch: &[u8]) -> io::Result<()>;
}

/// A [`DeltaCache`] in a directory, one file per key, written atomically
/// (temporary file, then rename).
#[derive(Clone, Debug)]
pub struct FsDeltaCache {
    dir: PathBuf,
}

impl FsDeltaCache {
    /// Uses (and creates) `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }
}

impl DeltaCache for FsDeltaCache {
    fn get(&self, key: &DeltaKey) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(key.file_name())) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put(&self, key: &DeltaKey, patch: &[u8]) -> io::Result<()> {
        let name = key.file_name();
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, patch)?;
        std::fs::rename(&tmp, self.dir.join(name))
    }
}

/// Returns the cached patch from `source` to `target`, generating and storing
/// it on a miss. The boolean tells whether it was a cache hit.
pub fn cached_patch(
    cache: &dyn DeltaCache,
    source: &[u8],
    target: &[u8],
    opts: &GenerateOptions,
) -> Result<(Vec<u8>, bool), GenerateError> {
    let key = DeltaKey {
        from: sha256(source),
        to: sha256(target),
        format: opts.format,
    };
    if let Some(p) = cache.get(&key)? {
        if super::format::sniff(&p) == Some(opts.format) {
            return Ok((p, true));
        }
    }
    let p = generate_patch(source, target, opts)?;
    cache.put(&key, &p)?;
    Ok((p, false))
}

//! Durable file helpers for the file-backed device and journal.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::Path;

/// Replaces `dir/name` with `bytes` atomically: writes `dir/name.tmp`,
/// fsyncs it, renames it over `dir/name`, then fsyncs `dir` so the rename
/// itself is durable. After a power loss the file holds either the old or
/// the new bytes.
pub fn atomic_write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &dst)?;
    sync_dir(dir)
}

/// fsyncs a directory (makes renames and creations in it durable).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads `path` if it exists, refusing files larger than `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    match fs::metadata(path) {
        Ok(m) if m.len() > max => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is {} bytes, more than {max}", path.display(), m.len()),
        )),
        Ok(_) => fs::read(path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

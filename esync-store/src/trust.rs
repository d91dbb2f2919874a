//! The file-backed Uptane/TUF trust store (feature `trust`): the I/O
//! adapter behind `esync_uptane::store::TrustStore` for the Agent binary
//! and the TUF client.
//!
//! Layout of the directory:
//!
//! - `ROLE.json` per trusted role (`root.json`, `timestamp.json`,
//!   `snapshot.json`, `targets.json`, delegated roles), holding exactly the
//!   bytes verified. `ROLE` is the role name percent-encoded
//!   ([`esync_uptane::metadata::percent_encode`]: every byte outside
//!   `[A-Za-z0-9._~-]`, `%` included), which is injective (`a/b` is
//!   `a%2Fb.json`, `a_b` is `a_b.json`) and keeps `/` out of file names, so
//!   no role name escapes the directory. This is the TUF conformance tests'
//!   contract too.
//! - `time`: the last time seen (seconds since the Unix epoch, decimal), the
//!   floor against freeze attacks, unless the store was made
//!   [`DirTrustStore::without_time_floor`].
//!
//! Every file is replaced atomically ([`crate::file::atomic_write`]).
//! [`TrustStore::load`] distinguishes a store that is not there (a missing
//! directory or file: fresh, empty) from one that is unreadable or corrupt
//! (a typed [`TrustStoreError`]: the rollback and freeze floors must never be
//! dropped silently, so the verifier refuses to open).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use esync_uptane::metadata::percent_encode;
use esync_uptane::store::{StoredState, TrustStore, TrustStoreError};
use esync_uptane::UnixTime;

use crate::file::{atomic_write, read_at_most};

/// Default bound on one role file, in bytes.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Name of the time floor file.
pub const TIME_FILE: &str = "time";
const SUFFIX: &str = ".json";
/// Longest `time` file accepted (an `i64` in decimal and a newline).
const MAX_TIME_BYTES: u64 = 24;

/// A trust store in a directory (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct DirTrustStore {
    dir: PathBuf,
    time_floor: bool,
    max_file_bytes: u64,
}

fn unreadable(path: &Path, e: &io::Error) -> TrustStoreError {
    TrustStoreError::Unreadable {
        what: path.display().to_string(),
        kind: e.kind(),
        message: e.to_string(),
    }
}

fn unwritable(path: &Path, e: &io::Error) -> TrustStoreError {
    TrustStoreError::Unwritable {
        what: path.display().to_string(),
        kind: e.kind(),
        message: e.to_string(),
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> TrustStoreError {
    TrustStoreError::Corrupt {
        what: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The role a file name holds, if it is one [`role_file_name`] makes
/// (other files, such as temporaries and `time`, are not roles).
pub fn role_of_file_name(file: &str) -> Option<String> {
    let stem = file.strip_suffix(SUFFIX)?;
    let b = stem.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = stem.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let role = String::from_utf8(out).ok()?;
    // Only the one canonical spelling is a role file (`%2f`, `%41` are not).
    (percent_encode(&role) == stem).then_some(role)
}

/// The file name of `role` (injective; never contains a path separator and
/// is never `.` or `..`).
pub fn role_file_name(role: &str) -> String {
    format!("{}{SUFFIX}", percent_encode(role))
}

impl DirTrustStore {
    /// A store in `dir`, keeping the time floor in `dir/time`. The
    /// directory is created at the first write if needed.
    pub fn new(dir: &Path) -> Self {
        DirTrustStore {
            dir: dir.to_path_buf(),
            time_floor: true,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }

    /// The same store without the time floor: `store_time` does nothing and
    /// `load` reports no last time. Only for callers bound to a contract
    /// that allows role files alone in the directory (the TUF conformance
    /// tests' client); the freeze floor is then the caller's concern.
    pub fn without_time_floor(mut self) -> Self {
        self.time_floor = false;
        self
    }

    /// The same store with another bound on each file's length.
    pub fn with_max_file_bytes(mut self, max: u64) -> Self {
        self.max_file_bytes = max;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, path: &Path, max: u64) -> Result<Option<Vec<u8>>, TrustStoreError> {
        match read_at_most(path, max) {
            Ok(Some(b)) if b.len() as u64 > max => {
                Err(corrupt(path, format!("longer than {max} bytes")))
            }
            Ok(r) => Ok(r),
            Err(e) => Err(unreadable(path, &e)),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), TrustStoreError> {
        fs::create_dir_all(&self.dir).map_err(|e| unwritable(&self.dir, &e))?;
        atomic_write(&self.dir, name, bytes).map_err(|e| unwritable(&self.dir.join(name), &e))
    }

    fn load_time(&self) -> Result<Option<UnixTime>, TrustStoreError> {
        let path = self.dir.join(TIME_FILE);
        let Some(bytes) = self.read(&path, MAX_TIME_BYTES)? else {
            return Ok(None);
        };
        let text =
            std::str::from_utf8(&bytes).map_err(|_| corrupt(&path, "time floor is not text"))?;
        let secs = text
            .trim()
            .parse::<i64>()
            .map_err(|e| corrupt(&path, format!("time floor {text:?} is not seconds: {e}")))?;
        Ok(Some(UnixTime(secs)))
    }
}

impl TrustStore for DirTrustStore {
    fn load(&mut self) -> Result<StoredState, TrustStoreError> {
        let mut state = StoredState::default();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(state),
            Err(e) => return Err(unreadable(&self.dir, &e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| unreadable(&self.dir, &e))?;
            let Some(role) = entry.file_name().to_str().and_then(role_of_file_name) else {
                continue;
            };
            let path = entry.path();
            // A file removed since the listing is absent, like any other.
            let Some(bytes) = self.read(&path, self.max_file_bytes)? else {
                continue;
            };
            if role == "root" {
                state.root = bytes;
            } else {
                state.roles.insert(role, bytes);
            }
        }
        if self.time_floor {
            state.last_time = self.load_time()?;
        }
        Ok(state)
    }

    fn store_role(&mut self, role: &str, bytes: &[u8]) -> Result<(), TrustStoreError> {
        self.write(&role_file_name(role), bytes)
    }

    fn remove_role(&mut self, role: &str) -> Result<(), TrustStoreError> {
        let path = self.dir.join(role_file_name(role));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unwritable(&path, &e)),
        }
    }

    fn store_time(&mut self, now: UnixTime) -> Result<(), TrustStoreError> {
        if !self.time_floor {
            return Ok(());
        }
        self.write(TIME_FILE, now.0.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use esync_uptane::{Error, Limits, Repository};

    use super::*;

    const TRICKY: &[&str] = &[
        "a/b",
        "a_b",
        "a%2Fb",
        "a%b",
        "a%2fb",
        "../x",
        "..",
        ".",
        "",
        "/",
        "\\",
        "a\\b",
        "root",
        "ROOT",
        "a b",
        "é",
        "a.json",
        "a.json.tmp",
        "time",
        "targets",
        "%",
        "x\0y",
    ];

    #[test]
    fn role_file_names_are_injective_and_stay_in_the_directory() {
        let names: BTreeSet<String> = TRICKY.iter().map(|r| role_file_name(r)).collect();
        assert_eq!(
            names.len(),
            TRICKY.len(),
            "two roles share a file: {names:?}"
        );
        for (role, name) in TRICKY.iter().zip(TRICKY.iter().map(|r| role_file_name(r))) {
            assert!(!name.contains(['/', '\\', '\0']), "{role:?} -> {name:?}");
            assert!(name != "." && name != ".." && name != TIME_FILE, "{name}");
            assert_eq!(role_of_file_name(&name).as_deref(), Some(*role), "{name}");
        }
        // Non-canonical spellings and other files are not roles.
        for other in [
            "a%2fb.json",
            "%41.json",
            "time",
            "root.json.tmp",
            "x.json.tmp",
            "a%.json",
        ] {
            assert_eq!(role_of_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn tricky_roles_round_trip_through_the_directory() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("trust");
        let mut s = DirTrustStore::new(&dir);
        for (i, role) in TRICKY.iter().enumerate() {
            s.store_role(role, format!("bytes {i}").as_bytes())
                .expect("store");
        }
        s.store_time(UnixTime(1_700_000_000)).expect("time");
        let st = s.load().expect("load");
        let root_at = TRICKY
            .iter()
            .position(|r| *r == "root")
            .expect("root listed");
        assert_eq!(st.root, format!("bytes {root_at}").into_bytes());
        for (i, role) in TRICKY.iter().enumerate().filter(|(_, r)| **r != "root") {
            assert_eq!(
                st.roles.get(*role),
                Some(&format!("bytes {i}").into_bytes()),
                "{role:?}"
            );
        }
        assert_eq!(st.roles.len(), TRICKY.len() - 1);
        assert_eq!(st.last_time, Some(UnixTime(1_700_000_000)));
        // Nothing was written outside the directory.
        let outside: Vec<_> = fs::read_dir(base.path()).expect("ls").collect();
        assert_eq!(outside.len(), 1);
        s.remove_role("a/b").expect("remove");
        let st = s.load().expect("load");
        assert!(!st.roles.contains_key("a/b") && st.roles.contains_key("a_b"));
    }

    #[test]
    fn absent_is_fresh() {
        let base = tempfile::tempdir().expect("tempdir");
        let mut s = DirTrustStore::new(&base.path().join("none"));
        assert_eq!(
            s.load().expect("absent is not an error"),
            StoredState::default()
        );
        let mut s = DirTrustStore::new(base.path());
        s.store_role("root", b"r").expect("store");
        assert_eq!(s.load().expect("load").last_time, None);
    }

    #[test]
    fn corrupt_time_floor_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = DirTrustStore::new(dir.path());
        s.store_role("root", b"r").expect("store");
        for bad in [&b"soon"[..], b"", b"12x", b"\xff\xfe", &[b'9'; 40]] {
            fs::write(dir.path().join(TIME_FILE), bad).expect("write");
            assert!(
                matches!(s.load(), Err(TrustStoreError::Corrupt { .. })),
                "{bad:?}: {:?}",
                s.load()
            );
        }
        // The verifier refuses to open on it, naming the file.
        let e = Repository::open(s.clone(), Limits::default())
            .err()
            .expect("refused");
        assert!(
            matches!(e, Error::Store(TrustStoreError::Corrupt { .. })),
            "{e}"
        );
        assert!(e.to_string().contains(TIME_FILE), "{e}");
        // Without the floor the file is not read.
        let mut s = s.without_time_floor();
        assert_eq!(s.load().expect("load").last_time, None);
    }

    #[test]
    fn unreadable_state_is_an_error() {
        let base = tempfile::tempdir().expect("tempdir");
        // The directory is a file: it cannot be listed (root can't list it either).
        let file = base.path().join("trust");
        fs::write(&file, b"x").expect("write");
        match DirTrustStore::new(&file).load() {
            Err(TrustStoreError::Unreadable { kind, .. }) => {
                assert_ne!(kind, io::ErrorKind::NotFound)
            }
            other => panic!("expected unreadable, got {other:?}"),
        }
        // A role file that cannot be read.
        let dir = base.path().join("d");
        fs::create_dir_all(dir.join("timestamp.json")).expect("mkdir");
        assert!(matches!(
            DirTrustStore::new(&dir).load(),
            Err(TrustStoreError::Unreadable { .. })
        ));
        // The time file that cannot be read.
        let dir = base.path().join("t");
        fs::create_dir_all(dir.join(TIME_FILE)).expect("mkdir");
        assert!(matches!(
            DirTrustStore::new(&dir).load(),
            Err(TrustStoreError::Unreadable { .. })
        ));
    }

    #[test]
    fn over_long_role_file_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("targets.json"), [b' '; 11]).expect("write");
        let mut s = DirTrustStore::new(dir.path()).with_max_file_bytes(10);
        assert!(matches!(s.load(), Err(TrustStoreError::Corrupt { .. })));
    }
}

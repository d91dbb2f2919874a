//! Sans-I/O verifier of one TUF repository (TUF 1.0 client workflow,
//! sections 5.3 to 5.6).
//!
//! The verifier never fetches anything itself. It says what it needs next
//! ([`Need`]: a file name and the most bytes the caller may read), the caller
//! fetches and hands the bytes back with [`Repository::provide`], until the
//! operation reports [`RepoProgress::RefreshDone`] or a lookup result:
//!
//! ```no_run
//! # use esync_uptane::repo::{Repository, RepoProgress, Response, Limits};
//! # use esync_uptane::store::MemoryStore;
//! # use esync_uptane::time::UnixTime;
//! # fn fetch(path: &str, max: u64) -> Option<Vec<u8>> { None }
//! # fn main() -> Result<(), esync_uptane::Error> {
//! # let root_bytes = Vec::new();
//! let mut repo = Repository::open(MemoryStore::new(root_bytes), Limits::default())?;
//! let mut progress = repo.begin_refresh(UnixTime(1_900_000_000))?;
//! while let RepoProgress::Need(need) = progress {
//!     let resp = fetch(&need.path(), need.max_length());
//!     progress = repo.provide(match &resp {
//!         Some(b) => Response::Bytes(b),
//!         None => Response::NotFound,
//!     })?;
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;

use crate::crypto::{check_length_and_hashes, RawSigned, SchemeSet};
use crate::error::{Error, Result};
use crate::metadata::{
    check_target_name, decode_signed, percent_encode, MetaFile, RoleMetadata, Root, Snapshot,
    TargetInfo, Targets, Timestamp,
};
use crate::store::TrustStore;
use crate::time::UnixTime;

/// Size caps and bounds of the verifier. The defaults are safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of one root file.
    pub max_root_size: u64,
    /// Most bytes of timestamp.json.
    pub max_timestamp_size: u64,
    /// Most bytes of snapshot.json when the timestamp gives no length.
    pub max_snapshot_size: u64,
    /// Most bytes of a targets file when the snapshot gives no length.
    pub max_targets_size: u64,
    /// Most root versions accepted in one refresh.
    pub max_root_rotations: u32,
    /// Most targets roles visited in one delegation search.
    pub max_delegations: usize,
    /// Key schemes this verifier is configured for (default: all). Keys of
    /// another scheme are ignored like keys of an unknown type: they never
    /// count toward a threshold (root, top-level roles, delegations) and
    /// their signatures are never checked.
    pub schemes: SchemeSet,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_root_size: 512 * 1024,
            max_timestamp_size: 16 * 1024,
            max_snapshot_size: 2 * 1024 * 1024,
            max_targets_size: 8 * 1024 * 1024,
            max_root_rotations: 32,
            max_delegations: 32,
            schemes: SchemeSet::ALL,
        }
    }
}

/// The next file the verifier needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Root version `version` (`VERSION.root.json`); [`Response::NotFound`]
    /// ends the root rotation chain.
    Root {
        /// Version wanted.
        version: u64,
        /// Most bytes to read.
        max_length: u64,
    },
    /// `timestamp.json`.
    Timestamp {
        /// Most bytes to read.
        max_length: u64,
    },
    /// The snapshot; `version` is set when snapshots are consistent.
    Snapshot {
        /// Version prefix of the file name, if consistent snapshots.
        version: Option<u64>,
        /// Most bytes to read.
        max_length: u64,
    },
    /// A targets role (top-level `targets` or delegated).
    Targets {
        /// Role name.
        role: String,
        /// Version prefix of the file name, if consistent snapshots.
        version: Option<u64>,
        /// Most bytes to read.
        max_length: u64,
    },
}

impl Need {
    /// Path of the file relative to the metadata base URL: `N.root.json`,
    /// `timestamp.json`, `[VERSION.]snapshot.json`, `[VERSION.]ROLE.json`
    /// (delegated role names percent-encoded).
    pub fn path(&self) -> String {
        let prefixed = |v: &Option<u64>, name: &str| match v {
            Some(v) => format!("{v}.{name}.json"),
            None => format!("{name}.json"),
        };
        match self {
            Need::Root { version, .. } => format!("{version}.root.json"),
            Need::Timestamp { .. } => "timestamp.json".into(),
            Need::Snapshot { version, .. } => prefixed(version, "snapshot"),
            Need::Targets { role, version, .. } => prefixed(version, &percent_encode(role)),
        }
    }

    /// Most bytes the caller may read for this file; reading more must stop
    /// at this cap (the verifier refuses longer answers anyway).
    pub fn max_length(&self) -> u64 {
        match self {
            Need::Root { max_length, .. }
            | Need::Timestamp { max_length }
            | Need::Snapshot { max_length, .. }
            | Need::Targets { max_length, .. } => *max_length,
        }
    }

    /// Role name of the file.
    pub fn role(&self) -> &str {
        match self {
            Need::Root { .. } => "root",
            Need::Timestamp { .. } => "timestamp",
            Need::Snapshot { .. } => "snapshot",
            Need::Targets { role, .. } => role,
        }
    }
}

/// The caller's answer to a [`Need`].
#[derive(Debug, Clone, Copy)]
pub enum Response<'a> {
    /// The file's bytes (at most `max_length`).
    Bytes(&'a [u8]),
    /// The repository has no such file (HTTP 404).
    NotFound,
}

/// Where an operation stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RepoProgress {
    /// Fetch this and call [`Repository::provide`].
    Need(Need),
    /// The top-level metadata is verified and current.
    RefreshDone,
    /// The target lookup found the target (entry of the role that lists it).
    Found(TargetInfo),
    /// No role trusted for this name lists the target.
    NotFound,
}

/// A verified metadata file: bytes as received, the raw signed form and the
/// decoded role.
#[derive(Debug, Clone)]
pub struct Trusted<R> {
    /// Bytes as received.
    pub bytes: Vec<u8>,
    /// Signatures and signed value.
    pub raw: RawSigned,
    /// Decoded role.
    pub meta: R,
}

fn parse<R: RoleMetadata>(what: &str, bytes: &[u8]) -> Result<Trusted<R>> {
    let raw = RawSigned::from_slice(what, bytes)?;
    let meta = decode_signed::<R>(what, &raw)?;
    Ok(Trusted {
        bytes: bytes.to_vec(),
        raw,
        meta,
    })
}

enum Op {
    Idle,
    Root { rotations: u32, start: Box<Root> },
    Timestamp,
    Snapshot,
    TopTargets,
    Lookup(Lookup),
}

struct Lookup {
    target: String,
    /// (role, parent) pairs, top of stack last.
    stack: Vec<(String, String)>,
    visited: BTreeSet<String>,
}

const TOP_LEVEL: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

/// The verifier of one repository, over a [`TrustStore`].
pub struct Repository<S: TrustStore> {
    store: S,
    limits: Limits,
    root: Trusted<Root>,
    timestamp: Option<Trusted<Timestamp>>,
    snapshot: Option<Trusted<Snapshot>>,
    targets: BTreeMap<String, Trusted<Targets>>,
    last_time: Option<UnixTime>,
    now: Option<UnixTime>,
    refreshed: bool,
    /// (delegating role, role) pairs whose signatures were checked since the
    /// last refresh began, so lookups do not verify the same file again.
    checked: BTreeSet<String>,
    op: Op,
}

fn store_err(e: crate::store::TrustStoreError) -> Error {
    Error::Store(e)
}

fn check_expiry(role: &str, expires: UnixTime, now: UnixTime) -> Result<()> {
    if now >= expires {
        return Err(Error::Expired {
            role: role.into(),
            expires: expires.to_rfc3339(),
            now: now.to_rfc3339(),
        });
    }
    Ok(())
}

impl<S: TrustStore> Repository<S> {
    /// Opens the verifier on the state in `store`. The stored root must be
    /// signed by a threshold of its own root keys. Other stored metadata is
    /// kept only if it still verifies under that root (it is then used for
    /// rollback checks).
    pub fn open(mut store: S, limits: Limits) -> Result<Self> {
        let state = store.load().map_err(store_err)?;
        if state.root.is_empty() {
            return Err(Error::NotProvisioned);
        }
        let root: Trusted<Root> = parse("root", &state.root)?;
        root.meta.verify_role("root", &root.raw, limits.schemes)?;
        let mut repo = Repository {
            store,
            limits,
            root,
            timestamp: None,
            snapshot: None,
            targets: BTreeMap::new(),
            last_time: state.last_time,
            now: None,
            refreshed: false,
            checked: BTreeSet::new(),
            op: Op::Idle,
        };
        for (name, bytes) in &state.roles {
            match name.as_str() {
                "timestamp" => repo.timestamp = parse("timestamp", bytes).ok(),
                "snapshot" => repo.snapshot = parse("snapshot", bytes).ok(),
                _ => {
                    if let Ok(t) = parse::<Targets>(name, bytes) {
                        repo.targets.insert(name.clone(), t);
                    }
                }
            }
        }
        repo.drop_unverifiable()?;
        Ok(repo)
    }

    /// The store (to persist or inspect it).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// The trusted root.
    pub fn root(&self) -> &Trusted<Root> {
        &self.root
    }

    /// The trusted timestamp, if any.
    pub fn timestamp(&self) -> Option<&Trusted<Timestamp>> {
        self.timestamp.as_ref()
    }

    /// The trusted snapshot, if any.
    pub fn snapshot(&self) -> Option<&Trusted<Snapshot>> {
        self.snapshot.as_ref()
    }

    /// A trusted targets role (`targets` or a delegated role loaded by a lookup).
    pub fn targets(&self, role: &str) -> Option<&Trusted<Targets>> {
        self.targets.get(role)
    }

    /// The top-level targets role, once a refresh has completed in this session.
    pub fn top_targets(&self) -> Option<&Targets> {
        if self.refreshed {
            self.targets.get("targets").map(|t| &t.meta)
        } else {
            None
        }
    }

    /// The time injected by the last refresh.
    pub fn now(&self) -> Option<UnixTime> {
        self.now
    }

    /// Starts the refresh of the top-level metadata at time `now`
    /// (TUF 5.3-5.5). Refuses a time before the last time seen.
    pub fn begin_refresh(&mut self, now: UnixTime) -> Result<RepoProgress> {
        if let Some(last) = self.last_time {
            if now < last {
                return Err(Error::TimeWentBackwards {
                    now: now.to_rfc3339(),
                    last: last.to_rfc3339(),
                });
            }
        }
        self.store.store_time(now).map_err(store_err)?;
        self.last_time = Some(now);
        self.now = Some(now);
        self.refreshed = false;
        self.checked.clear();
        self.op = Op::Root {
            rotations: 0,
            start: Box::new(self.root.meta.clone()),
        };
        self.guard(|r| r.advance())
    }

    /// Starts the search for `target` through the targets role and its
    /// delegations (TUF 5.6.7: pre-order depth-first, in priority order,
    /// honouring terminating delegations). Needs a completed refresh.
    pub fn begin_lookup(&mut self, target: &str) -> Result<RepoProgress> {
        if !self.refreshed {
            return Err(Error::State(
                "refresh the repository before looking up targets",
            ));
        }
        check_target_name(target)?;
        self.op = Op::Lookup(Lookup {
            target: target.to_string(),
            stack: vec![("targets".to_string(), String::new())],
            visited: BTreeSet::new(),
        });
        self.guard(|r| r.advance())
    }

    /// Hands in the answer to the last [`Need`].
    pub fn provide(&mut self, response: Response<'_>) -> Result<RepoProgress> {
        self.guard(|r| r.provide_inner(response))
    }

    /// Runs a refresh to completion with `fetch` (which returns `Ok(None)`
    /// for "not found" and must not read more than `need.max_length()`).
    pub fn refresh_with<E: Display>(
        &mut self,
        now: UnixTime,
        mut fetch: impl FnMut(&Need) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<()> {
        let p = self.begin_refresh(now)?;
        match self.drive(p, &mut fetch)? {
            RepoProgress::RefreshDone => Ok(()),
            _ => Err(Error::State("refresh ended unexpectedly")),
        }
    }

    /// Runs a target lookup to completion with `fetch`.
    pub fn find_target_with<E: Display>(
        &mut self,
        target: &str,
        mut fetch: impl FnMut(&Need) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Option<TargetInfo>> {
        let p = self.begin_lookup(target)?;
        match self.drive(p, &mut fetch)? {
            RepoProgress::Found(t) => Ok(Some(t)),
            RepoProgress::NotFound => Ok(None),
            _ => Err(Error::State("lookup ended unexpectedly")),
        }
    }

    /// Feeds `fetch` answers until the operation ends.
    pub fn drive<E: Display>(
        &mut self,
        mut progress: RepoProgress,
        fetch: &mut impl FnMut(&Need) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<RepoProgress> {
        while let RepoProgress::Need(need) = &progress {
            let got = match fetch(need) {
                Ok(got) => got,
                Err(e) => {
                    self.op = Op::Idle;
                    return Err(Error::Fetch {
                        file: need.path(),
                        reason: e.to_string(),
                    });
                }
            };
            progress = self.provide(match &got {
                Some(b) => Response::Bytes(b),
                None => Response::NotFound,
            })?;
        }
        Ok(progress)
    }

    fn guard(&mut self, f: impl FnOnce(&mut Self) -> Result<RepoProgress>) -> Result<RepoProgress> {
        let r = f(self);
        if r.is_err() {
            self.op = Op::Idle;
        }
        r
    }

    fn now_checked(&self) -> Result<UnixTime> {
        self.now.ok_or(Error::State("no time injected"))
    }

    fn current_need(&self) -> Result<Need> {
        match &self.op {
            Op::Idle => Err(Error::State("no operation in progress")),
            Op::Root { .. } => Ok(Need::Root {
                version: self.root.meta.version.saturating_add(1),
                max_length: self.limits.max_root_size,
            }),
            Op::Timestamp => Ok(Need::Timestamp {
                max_length: self.limits.max_timestamp_size,
            }),
            Op::Snapshot => {
                let m = self.snapshot_meta()?;
                Ok(Need::Snapshot {
                    version: self.root.meta.consistent_snapshot.then_some(m.version),
                    max_length: cap(m, self.limits.max_snapshot_size),
                })
            }
            Op::TopTargets => self.targets_need("targets"),
            Op::Lookup(l) => match l.stack.last() {
                Some((role, _)) => self.targets_need(role),
                None => Err(Error::State("lookup has nothing pending")),
            },
        }
    }

    fn targets_need(&self, role: &str) -> Result<Need> {
        let m = self.targets_meta(role)?;
        Ok(Need::Targets {
            role: role.to_string(),
            version: self.root.meta.consistent_snapshot.then_some(m.version),
            max_length: cap(m, self.limits.max_targets_size),
        })
    }

    fn snapshot_meta(&self) -> Result<&MetaFile> {
        let ts = self
            .timestamp
            .as_ref()
            .ok_or(Error::State("no trusted timestamp"))?;
        ts.meta.meta.get("snapshot.json").ok_or(Error::NotListed {
            file: "snapshot.json".into(),
            listed_in: "timestamp",
        })
    }

    fn targets_meta(&self, role: &str) -> Result<&MetaFile> {
        let snap = self
            .snapshot
            .as_ref()
            .ok_or(Error::State("no trusted snapshot"))?;
        let file = format!("{role}.json");
        snap.meta.meta.get(&file).ok_or(Error::NotListed {
            file,
            listed_in: "snapshot",
        })
    }

    fn provide_inner(&mut self, response: Response<'_>) -> Result<RepoProgress> {
        let need = self.current_need()?;
        let bytes = match response {
            Response::Bytes(b) => {
                if b.len() as u64 > need.max_length() {
                    return Err(Error::TooLong {
                        what: need.path(),
                        limit: need.max_length(),
                    });
                }
                b
            }
            Response::NotFound => {
                if let Op::Root { .. } = self.op {
                    return self.finish_root();
                }
                return Err(Error::NotFound(need.path()));
            }
        };
        match &mut self.op {
            Op::Idle => return Err(Error::State("no operation in progress")),
            Op::Root { rotations, .. } => {
                *rotations += 1;
                let done = *rotations >= self.limits.max_root_rotations;
                self.accept_root(bytes)?;
                if done {
                    return self.finish_root();
                }
            }
            Op::Timestamp => {
                self.accept_timestamp(bytes)?;
                self.op = Op::Snapshot;
            }
            Op::Snapshot => {
                self.accept_snapshot(bytes)?;
                self.op = Op::TopTargets;
            }
            Op::TopTargets => {
                let t = self.verify_targets("targets", "", bytes)?;
                self.keep_targets("targets", "", t)?;
                self.refreshed = true;
                self.op = Op::Idle;
                return Ok(RepoProgress::RefreshDone);
            }
            Op::Lookup(l) => {
                let (role, parent) = l
                    .stack
                    .last()
                    .cloned()
                    .ok_or(Error::State("empty lookup"))?;
                let t = self.verify_targets(&role, &parent, bytes)?;
                self.keep_targets(&role, &parent, t)?;
            }
        }
        self.advance()
    }

    /// Runs the state machine until it needs a file or finishes.
    fn advance(&mut self) -> Result<RepoProgress> {
        let now = self.now_checked()?;
        loop {
            match &mut self.op {
                Op::Idle => return Err(Error::State("no operation in progress")),
                Op::Root { .. } | Op::Timestamp => {
                    return Ok(RepoProgress::Need(self.current_need()?))
                }
                Op::Snapshot => {
                    let m = self.snapshot_meta()?.clone();
                    let usable = self
                        .snapshot
                        .as_ref()
                        .is_some_and(|s| s.meta.version == m.version && now < s.meta.expires);
                    if !usable {
                        return Ok(RepoProgress::Need(self.current_need()?));
                    }
                    self.op = Op::TopTargets;
                }
                Op::TopTargets => {
                    if self.cached_targets_usable("targets", "", now)? {
                        self.refreshed = true;
                        self.op = Op::Idle;
                        return Ok(RepoProgress::RefreshDone);
                    }
                    return Ok(RepoProgress::Need(self.current_need()?));
                }
                Op::Lookup(_) => {
                    if let Some(p) = self.lookup_step(now)? {
                        return Ok(p);
                    }
                }
            }
        }
    }

    /// One step of the delegation search; `None` means "call again".
    fn lookup_step(&mut self, now: UnixTime) -> Result<Option<RepoProgress>> {
        let max = self.limits.max_delegations;
        let Op::Lookup(l) = &mut self.op else {
            return Err(Error::State("not in a lookup"));
        };
        let Some((role, parent)) = l.stack.last().cloned() else {
            self.op = Op::Idle;
            return Ok(Some(RepoProgress::NotFound));
        };
        if l.visited.contains(&role) {
            l.stack.pop();
            return Ok(None);
        }
        if l.visited.len() >= max {
            return Err(Error::TooManyDelegations(max));
        }
        if !self.cached_targets_usable(&role, &parent, now)? {
            return Ok(Some(RepoProgress::Need(self.targets_need(&role)?)));
        }
        let t = &self
            .targets
            .get(&role)
            .ok_or(Error::State("targets role not loaded"))?
            .meta;
        let Op::Lookup(l) = &mut self.op else {
            return Err(Error::State("not in a lookup"));
        };
        l.stack.pop();
        if let Some(info) = t.targets.get(&l.target) {
            let found = info.clone();
            self.op = Op::Idle;
            return Ok(Some(RepoProgress::Found(found)));
        }
        l.visited.insert(role.clone());
        if let Some(d) = &t.delegations {
            let mut children = Vec::new();
            for child in &d.roles {
                if child.matches(&l.target) {
                    children.push((child.name.clone(), role.clone()));
                    if child.terminating {
                        l.stack.clear();
                        break;
                    }
                }
            }
            children.reverse();
            l.stack.extend(children);
        }
        Ok(None)
    }

    /// Whether the cached `role` can be used as is: version equal to the
    /// snapshot's, not expired, and still signed by the keys that delegate it.
    fn cached_targets_usable(&mut self, role: &str, parent: &str, now: UnixTime) -> Result<bool> {
        let m = self.targets_meta(role)?;
        let Some(t) = self.targets.get(role) else {
            return Ok(false);
        };
        if t.meta.version != m.version || now >= t.meta.expires {
            return Ok(false);
        }
        let key = format!("{parent}\u{0}{role}");
        if self.checked.contains(&key) {
            return Ok(true);
        }
        if self.check_targets_signature(role, parent, &t.raw).is_err() {
            return Ok(false);
        }
        self.checked.insert(key);
        Ok(true)
    }

    fn check_targets_signature(&self, role: &str, parent: &str, raw: &RawSigned) -> Result<()> {
        if role == "targets" {
            return self
                .root
                .meta
                .verify_role("targets", raw, self.limits.schemes);
        }
        let p = self
            .targets
            .get(parent)
            .ok_or(Error::State("delegating role not loaded"))?;
        let d = p.meta.delegations.as_ref().ok_or(Error::NotListed {
            file: format!("{role}.json"),
            listed_in: "delegations",
        })?;
        let dr = d
            .roles
            .iter()
            .find(|r| r.name == role)
            .ok_or(Error::NotListed {
                file: format!("{role}.json"),
                listed_in: "delegations",
            })?;
        raw.verify_threshold(role, &d.keys, &dr.keyids, dr.threshold, self.limits.schemes)
    }

    fn accept_root(&mut self, bytes: &[u8]) -> Result<()> {
        let new: Trusted<Root> = parse("root", bytes)?;
        // Signed by a threshold of the trusted root's keys, and of its own.
        self.root
            .meta
            .verify_role("root", &new.raw, self.limits.schemes)?;
        new.meta
            .verify_role("root", &new.raw, self.limits.schemes)?;
        let expected = self.root.meta.version.saturating_add(1);
        if new.meta.version != expected {
            return Err(Error::VersionMismatch {
                role: "root".into(),
                listed_by: "root rotation chain",
                expected,
                got: new.meta.version,
            });
        }
        self.store.store_role("root", bytes).map_err(store_err)?;
        self.root = new;
        Ok(())
    }

    fn finish_root(&mut self) -> Result<RepoProgress> {
        let now = self.now_checked()?;
        let Op::Root { start, .. } = &self.op else {
            return Err(Error::State("not updating root"));
        };
        check_expiry("root", self.root.meta.expires, now)?;
        // Fast-forward recovery: timestamp or snapshot keys rotated means the
        // trusted timestamp and snapshot are forgotten.
        let ts_or_snap = start.role_keys_changed(&self.root.meta, "timestamp")
            || start.role_keys_changed(&self.root.meta, "snapshot");
        let targets_rotated = start.role_keys_changed(&self.root.meta, "targets");
        if ts_or_snap {
            self.forget("timestamp")?;
            self.forget("snapshot")?;
        }
        if targets_rotated {
            self.forget("targets")?;
        }
        self.drop_unverifiable()?;
        self.op = Op::Timestamp;
        self.advance()
    }

    fn forget(&mut self, role: &str) -> Result<()> {
        match role {
            "timestamp" => self.timestamp = None,
            "snapshot" => self.snapshot = None,
            _ => {
                self.targets.remove(role);
            }
        }
        self.store.remove_role(role).map_err(store_err)
    }

    /// Drops stored top-level metadata no longer signed under the trusted root.
    fn drop_unverifiable(&mut self) -> Result<()> {
        let bad_ts = self.timestamp.as_ref().is_some_and(|t| {
            self.root
                .meta
                .verify_role("timestamp", &t.raw, self.limits.schemes)
                .is_err()
        });
        if bad_ts {
            self.forget("timestamp")?;
        }
        let bad_snap = self.snapshot.as_ref().is_some_and(|t| {
            self.root
                .meta
                .verify_role("snapshot", &t.raw, self.limits.schemes)
                .is_err()
        });
        if bad_snap {
            self.forget("snapshot")?;
        }
        let bad_targets = self.targets.get("targets").is_some_and(|t| {
            self.root
                .meta
                .verify_role("targets", &t.raw, self.limits.schemes)
                .is_err()
        });
        if bad_targets {
            self.forget("targets")?;
        }
        Ok(())
    }

    fn accept_timestamp(&mut self, bytes: &[u8]) -> Result<()> {
        let now = self.now_checked()?;
        let new: Trusted<Timestamp> = parse("timestamp", bytes)?;
        self.root
            .meta
            .verify_role("timestamp", &new.raw, self.limits.schemes)?;
        let new_snap = new.meta.meta.get("snapshot.json").ok_or(Error::NotListed {
            file: "snapshot.json".into(),
            listed_in: "timestamp",
        })?;
        if let Some(old) = &self.timestamp {
            if new.meta.version < old.meta.version {
                return Err(Error::Rollback {
                    role: "timestamp".into(),
                    trusted: old.meta.version,
                    new: new.meta.version,
                });
            }
            if let Some(old_snap) = old.meta.meta.get("snapshot.json") {
                if new_snap.version < old_snap.version {
                    return Err(Error::Rollback {
                        role: "snapshot".into(),
                        trusted: old_snap.version,
                        new: new_snap.version,
                    });
                }
            }
            if new.meta.version == old.meta.version {
                // Nothing new: keep the trusted one (it must still be fresh).
                return check_expiry("timestamp", old.meta.expires, now);
            }
        }
        check_expiry("timestamp", new.meta.expires, now)?;
        self.store
            .store_role("timestamp", bytes)
            .map_err(store_err)?;
        self.timestamp = Some(new);
        Ok(())
    }

    fn accept_snapshot(&mut self, bytes: &[u8]) -> Result<()> {
        let now = self.now_checked()?;
        let m = self.snapshot_meta()?.clone();
        check_length_and_hashes("snapshot", bytes, m.length, m.hashes.as_ref())?;
        let new: Trusted<Snapshot> = parse("snapshot", bytes)?;
        self.root
            .meta
            .verify_role("snapshot", &new.raw, self.limits.schemes)?;
        if new.meta.version != m.version {
            return Err(Error::VersionMismatch {
                role: "snapshot".into(),
                listed_by: "timestamp",
                expected: m.version,
                got: new.meta.version,
            });
        }
        if let Some(old) = &self.snapshot {
            for (file, old_meta) in &old.meta.meta {
                let Some(new_meta) = new.meta.meta.get(file) else {
                    return Err(Error::RoleDropped(file.clone()));
                };
                if new_meta.version < old_meta.version {
                    return Err(Error::Rollback {
                        role: file.trim_end_matches(".json").to_string(),
                        trusted: old_meta.version,
                        new: new_meta.version,
                    });
                }
            }
        }
        check_expiry("snapshot", new.meta.expires, now)?;
        self.store
            .store_role("snapshot", bytes)
            .map_err(store_err)?;
        self.snapshot = Some(new);
        Ok(())
    }

    fn verify_targets(&self, role: &str, parent: &str, bytes: &[u8]) -> Result<Trusted<Targets>> {
        let now = self.now_checked()?;
        if role != "targets" && TOP_LEVEL.contains(&role) {
            return Err(Error::Field {
                what: parent.into(),
                field: "delegations",
                reason: format!("delegated role may not be named {role:?}"),
            });
        }
        let m = self.targets_meta(role)?.clone();
        check_length_and_hashes(role, bytes, m.length, m.hashes.as_ref())?;
        let new: Trusted<Targets> = parse(role, bytes)?;
        self.check_targets_signature(role, parent, &new.raw)?;
        if new.meta.version != m.version {
            return Err(Error::VersionMismatch {
                role: role.into(),
                listed_by: "snapshot",
                expected: m.version,
                got: new.meta.version,
            });
        }
        check_expiry(role, new.meta.expires, now)?;
        Ok(new)
    }

    fn keep_targets(&mut self, role: &str, parent: &str, t: Trusted<Targets>) -> Result<()> {
        self.store.store_role(role, &t.bytes).map_err(store_err)?;
        self.checked.insert(format!("{parent}\u{0}{role}"));
        self.targets.insert(role.to_string(), t);
        Ok(())
    }
}

fn cap(m: &MetaFile, limit: u64) -> u64 {
    m.length.map_or(limit, |l| l.min(limit))
}

//! Multi-component update packages.
//!
//! A [`Package`] can only hold a consistent package: unique devices, no
//! dangling or cyclic dependency, every dependency in an earlier install
//! stage, unique deltas per component, sane policies. JSON decoding goes
//! through the same checks ([`Package::from_json`]).
//!
//! # How a package travels in Uptane targets metadata
//!
//! A package is not a separate signed file: each of its artifacts is one
//! entry of the targets metadata, so the package description is covered by
//! the same signatures and threshold as the images. For each component there
//! is one entry for the full image and one per delta ([`Package::target_entries`]):
//!
//! | target name | `length`, `hashes.sha256` | `custom.esync.artifact` |
//! | --- | --- | --- |
//! | `<package>/<device>/<version>/full` | the full image | `{"kind":"full"}` |
//! | `<package>/<device>/<version>/delta-<from>.<format>` | the patch bytes | `{"kind":"delta","format":"BsdiffZstd","from_version":"1.0.0"}` |
//!
//! (`<device>` is the device path without its leading `/`; `<format>` is
//! `bsdiff40`, `bsdiff-zstd` or `bsdiff-xz`.) Every entry's `custom` is
//! `{"esync": {...}}`, a [`TargetDescription`]: the package id, the
//! package-level download policy, the component count, the **whole**
//! component description (device, hardware id, version, release counter,
//! full image and every delta with length, sha256, chunk size and chunk-list
//! digest, dependencies, stage, policy) and which artifact this entry is.
//! The Uptane `length` and `hashes` of the entry must equal that artifact's
//! length and sha256 ([`TargetDescription::from_custom_json`] checks them
//! when given). The Client rebuilds and re-validates the package from the
//! entries with [`Package::from_target_descriptions`], and refuses it if a
//! component is missing (partial bundle).

use std::collections::{BTreeMap, BTreeSet};

use esync_proto::id::{DevicePath, HardwareId, ReleaseCounter, Sha256Digest, SoftwareVersion};
use esync_proto::message::PatchFormat;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A component's install precondition, in the one precondition language of
/// every side ([`esync_proto::precondition`]); it is parsed when the package
/// is built and again when a description is decoded.
pub use esync_proto::precondition::Precondition;

use crate::chunk::{ChunkError, ChunkPlan};
use crate::digest::{hex_digest, sha256};

/// Largest number of components in one package.
pub const MAX_COMPONENTS: usize = 256;
/// Largest number of deltas per component.
pub const MAX_DELTAS: usize = 16;

/// Package identifier: 1 to 64 bytes of `[a-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PackageId(String);

impl PackageId {
    /// Validates `s`.
    pub fn new(s: impl Into<String>) -> Result<Self, PackageError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && !s.bytes().all(|b| b == b'.');
        if ok {
            Ok(Self(s))
        } else {
            Err(PackageError::BadPackageId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PackageId {
    type Error = PackageError;
    fn try_from(s: String) -> Result<Self, PackageError> {
        Self::new(s)
    }
}

impl From<PackageId> for String {
    fn from(p: PackageId) -> String {
        p.0
    }
}

impl std::fmt::Display for PackageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bytes that travel as one target: a full image or a patch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Length in bytes.
    pub length: u64,
    /// SHA-256 of the bytes.
    #[serde(with = "hex_digest")]
    pub sha256: Sha256Digest,
    /// Chunk size of resumable transfers.
    pub chunk_size: u32,
    /// SHA-256 of the concatenated chunk hashes (see [`crate::chunk`]).
    #[serde(with = "hex_digest")]
    pub chunk_list_sha256: Sha256Digest,
}

impl Artifact {
    /// Describes `bytes` chunked by `chunk_size`.
    pub fn describe(bytes: &[u8], chunk_size: u32) -> Result<Self, PackageError> {
        let plan = ChunkPlan::compute(bytes, chunk_size)?;
        Ok(Self {
            length: bytes.len() as u64,
            sha256: sha256(bytes),
            chunk_size,
            chunk_list_sha256: plan.list_digest(),
        })
    }
}

/// A patch from an older version to this component's image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    /// Patch format.
    pub format: PatchFormat,
    /// Version the patch applies to.
    pub from_version: SoftwareVersion,
    /// Length of that source image.
    pub source_length: u64,
    /// SHA-256 the installed image must have.
    #[serde(with = "hex_digest")]
    pub source_sha256: Sha256Digest,
    /// The patch bytes.
    pub patch: Artifact,
}

/// What to do with this component when its package fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackBehaviour {
    /// Switch back to the previously active slot (A/B).
    SwitchSlot,
    /// Reinstall the backup version.
    RestoreBackup,
    /// The component cannot roll back; it is installed in the last stage of
    /// its package so that nothing after it can fail.
    None,
}

/// Install-time policy of one component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentPolicy {
    /// Vehicle-state precondition for installing.
    pub precondition: Option<Precondition>,
    /// Whether the user must consent to the install.
    pub consent_required: bool,
    /// What happens on failure of the package.
    pub rollback: RollbackBehaviour,
    /// How often a failed step may be retried (0 to 10).
    pub retry_limit: u8,
}

impl Default for ComponentPolicy {
    /// No precondition, no consent, A/B switch-back, 3 retries.
    fn default() -> Self {
        Self {
            precondition: None,
            consent_required: false,
            rollback: RollbackBehaviour::SwitchSlot,
            retry_limit: 3,
        }
    }
}

/// One updatable component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Target device.
    pub device: DevicePath,
    /// Hardware the image is built for.
    pub hardware_id: HardwareId,
    /// Version of the image.
    pub version: SoftwareVersion,
    /// Anti-rollback counter.
    pub release_counter: ReleaseCounter,
    /// The full image.
    pub image: Artifact,
    /// Patches from older versions, at most [`MAX_DELTAS`].
    #[serde(default)]
    pub deltas: Vec<Delta>,
    /// Devices whose component must be installed first.
    #[serde(default)]
    pub depends_on: Vec<DevicePath>,
    /// Install stage: stages run in increasing order; components of one
    /// stage install in parallel.
    pub stage: u16,
    /// Policy.
    #[serde(default)]
    pub policy: ComponentPolicy,
}

/// Network kinds a download may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkKind {
    /// Wi-Fi.
    Wifi,
    /// Wired Ethernet (workshop).
    Ethernet,
    /// Cellular.
    Cellular,
}

/// A daily time window in UTC minutes after midnight; `start > end` wraps
/// past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// First minute (0..1440).
    pub start_minute: u16,
    /// Minute after the last one (0..=1440).
    pub end_minute: u16,
}

impl TimeWindow {
    /// Whether `minute_of_day` (0..1440) lies in the window.
    pub fn contains(&self, minute_of_day: u16) -> bool {
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start_minute || minute_of_day < self.end_minute
        }
    }
}

/// Package-level download policy.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadPolicy {
    /// When downloads may run; `None` is any time.
    pub window: Option<TimeWindow>,
    /// Networks downloads may use; empty is any network.
    #[serde(default)]
    pub networks: Vec<NetworkKind>,
}

/// A package failed validation.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PackageError {
    /// Bad package id.
    #[error("package id must be 1 to 64 bytes of [a-z0-9._-]")]
    BadPackageId,
    /// No component.
    #[error("package has no component")]
    Empty,
    /// Too many components or deltas.
    #[error("too many {0}")]
    TooMany(&'static str),
    /// Two components for one device.
    #[error("two components target {0}")]
    DuplicateDevice(DevicePath),
    /// A dependency names no component of the package.
    #[error("{component} depends on {dependency}, which is not in the package")]
    UnknownDependency {
        /// The dependent.
        component: DevicePath,
        /// The missing dependency.
        dependency: DevicePath,
    },
    /// Dependencies form a cycle.
    #[error("dependency cycle through {0}")]
    Cycle(DevicePath),
    /// A dependency is not in an earlier stage.
    #[error("{component} (stage {stage}) depends on {dependency} (stage {dependency_stage}), which must be in an earlier stage")]
    StageOrder {
        /// The dependent.
        component: DevicePath,
        /// Its stage.
        stage: u16,
        /// The dependency.
        dependency: DevicePath,
        /// Its stage.
        dependency_stage: u16,
    },
    /// A component that cannot roll back is not in the last stage.
    #[error("{0} cannot roll back, so it must be in the last stage")]
    UnrollableNotLast(DevicePath),
    /// Invalid delta list.
    #[error("{component}: {reason}")]
    BadDelta {
        /// The component.
        component: DevicePath,
        /// What is wrong.
        reason: &'static str,
    },
    /// Invalid policy.
    #[error("{0}")]
    BadPolicy(&'static str),
    /// Chunking parameters.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// JSON.
    #[error("package JSON invalid: {0}")]
    Json(#[from] serde_json::Error),
    /// Target description does not match its Uptane entry or package.
    #[error("target description invalid: {0}")]
    BadTarget(&'static str),
}

/// The unvalidated shape of a package (what the JSON holds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    /// Package id.
    pub id: PackageId,
    /// Download policy.
    #[serde(default)]
    pub download: DownloadPolicy,
    /// Components.
    pub components: Vec<Component>,
}

/// A validated package.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PackageSpec", into = "PackageSpec")]
pub struct Package {
    spec: PackageSpec,
}

fn check_component(c: &Component) -> Result<(), PackageError> {
    let bad = |reason| PackageError::BadDelta {
        component: c.device.clone(),
        reason,
    };
    if c.deltas.len() > MAX_DELTAS {
        return Err(PackageError::TooMany("deltas"));
    }
    let mut seen = BTreeSet::new();
    for d in &c.deltas {
        if d.from_version == c.version {
            return Err(bad("delta from the version it produces"));
        }
        if d.source_sha256 == c.image.sha256 {
            return Err(bad("delta source is the target image"));
        }
        if !seen.insert((d.format, d.from_version.as_str(), d.source_sha256)) {
            return Err(bad("duplicate delta"));
        }
        ChunkPlan::compute(&[], d.patch.chunk_size)?;
    }
    ChunkPlan::compute(&[], c.image.chunk_size)?;
    if c.policy.retry_limit > 10 {
        return Err(PackageError::BadPolicy("retry limit above 10"));
    }
    if c.depends_on.len() > MAX_COMPONENTS {
        return Err(PackageError::TooMany("dependencies"));
    }
    Ok(())
}

impl TryFrom<PackageSpec> for Package {
    type Error = PackageError;

    fn try_from(spec: PackageSpec) -> Result<Self, PackageError> {
        if spec.components.is_empty() {
            return Err(PackageError::Empty);
        }
        if spec.components.len() > MAX_COMPONENTS {
            return Err(PackageError::TooMany("components"));
        }
        if let Some(w) = spec.download.window {
            if w.start_minute >= 1440 || w.end_minute > 1440 || w.start_minute == w.end_minute {
                return Err(PackageError::BadPolicy(
                    "time window minutes out of range or empty",
                ));
            }
        }
        let mut by_device: BTreeMap<&DevicePath, &Component> = BTreeMap::new();
        for c in &spec.components {
            check_component(c)?;
            if by_device.insert(&c.device, c).is_some() {
                return Err(PackageError::DuplicateDevice(c.device.clone()));
            }
        }
        for c in &spec.components {
            for d in &c.depends_on {
                if !by_device.contains_key(d) {
                    return Err(PackageError::UnknownDependency {
                        component: c.device.clone(),
                        dependency: d.clone(),
                    });
                }
            }
        }
        // Cycles (depth-first search with colours), reported before stages so
        // the error names the real problem.
        fn visit<'a>(
            d: &'a DevicePath,
            g: &BTreeMap<&'a DevicePath, &'a Component>,
            state: &mut BTreeMap<&'a DevicePath, bool>,
        ) -> Result<(), PackageError> {
            match state.get(d) {
                Some(true) => return Ok(()),
                Some(false) => return Err(PackageError::Cycle(d.clone())),
                None => {}
            }
            state.insert(d, false);
            if let Some(c) = g.get(d) {
                for dep in &c.depends_on {
                    visit(dep, g, state)?;
                }
            }
            state.insert(d, true);
            Ok(())
        }
        let mut state = BTreeMap::new();
        for c in &spec.components {
            visit(&c.device, &by_device, &mut state)?;
        }
        for c in &spec.components {
            for d in &c.depends_on {
                let dep = by_device[d];
                if dep.stage >= c.stage {
                    return Err(PackageError::StageOrder {
                        component: c.device.clone(),
                        stage: c.stage,
                        dependency: d.clone(),
                        dependency_stage: dep.stage,
                    });
                }
            }
        }
        let last = spec.components.iter().map(|c| c.stage).max().unwrap_or(0);
        for c in &spec.components {
            if c.policy.rollback == RollbackBehaviour::None && c.stage != last {
                return Err(PackageError::UnrollableNotLast(c.device.clone()));
            }
        }
        Ok(Self { spec })
    }
}

impl From<Package> for PackageSpec {
    fn from(p: Package) -> PackageSpec {
        p.spec
    }
}

/// Which artifact of a component a target entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ArtifactRef {
    /// The full image.
    Full,
    /// The delta with this format and source version.
    Delta {
        /// Patch format.
        format: PatchFormat,
        /// Source version.
        from_version: SoftwareVersion,
    },
}

/// One Uptane targets entry of a package (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct TargetEntry {
    /// Target name.
    pub name: String,
    /// Length of the artifact.
    pub length: u64,
    /// SHA-256 of the artifact.
    pub sha256: Sha256Digest,
    /// The `custom` object: `{"esync": <TargetDescription>}`.
    pub custom: serde_json::Value,
}

/// The signed description carried in `custom.esync` of a target entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDescription {
    /// Package id.
    pub package: PackageId,
    /// Package-level download policy.
    pub download: DownloadPolicy,
    /// Number of components in the package (to detect a withheld one).
    pub component_count: u32,
    /// The whole component description.
    pub component: Component,
    /// Which artifact this target entry is.
    pub artifact: ArtifactRef,
}

/// Short name of a patch format used in target names.
pub fn format_name(f: PatchFormat) -> &'static str {
    match f {
        PatchFormat::Bsdiff40 => "bsdiff40",
        PatchFormat::BsdiffZstd => "bsdiff-zstd",
        PatchFormat::BsdiffXz => "bsdiff-xz",
    }
}

impl TargetDescription {
    /// The artifact this entry carries.
    pub fn artifact(&self) -> Option<&Artifact> {
        match &self.artifact {
            ArtifactRef::Full => Some(&self.component.image),
            ArtifactRef::Delta { .. } => self.delta().map(|d| &d.patch),
        }
    }

    /// The delta this entry carries, if it is one.
    pub fn delta(&self) -> Option<&Delta> {
        match &self.artifact {
            ArtifactRef::Full => None,
            ArtifactRef::Delta {
                format,
                from_version,
            } => self
                .component
                .deltas
                .iter()
                .find(|d| d.format == *format && d.from_version == *from_version),
        }
    }

    /// The target name of this entry.
    pub fn target_name(&self) -> String {
        let c = &self.component;
        let dev = &c.device.as_str()[1..];
        match &self.artifact {
            ArtifactRef::Full => format!("{}/{dev}/{}/full", self.package, c.version),
            ArtifactRef::Delta {
                format,
                from_version,
            } => format!(
                "{}/{dev}/{}/delta-{from_version}.{}",
                self.package,
                c.version,
                format_name(*format)
            ),
        }
    }

    /// `{"esync": {...}}`, to put verbatim in the entry's `custom`.
    pub fn to_custom_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        // Serialising plain data with string keys cannot fail.
        m.insert(
            "esync".into(),
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        );
        serde_json::Value::Object(m)
    }

    /// Parses and checks the `custom` object of a target entry. When
    /// `entry` is given (`name`, `length`, `sha256` of the Uptane entry), they
    /// must match the described artifact.
    pub fn from_custom_json(
        custom: &serde_json::Value,
        entry: Option<(&str, u64, &Sha256Digest)>,
    ) -> Result<Self, PackageError> {
        let v = custom
            .get("esync")
            .ok_or(PackageError::BadTarget("custom has no \"esync\" object"))?;
        let d: TargetDescription = serde_json::from_value(v.clone())?;
        check_component(&d.component)?;
        let a = d.artifact().ok_or(PackageError::BadTarget(
            "artifact names no delta of the component",
        ))?;
        if let Some((name, length, sha)) = entry {
            if a.length != length || a.sha256 != *sha {
                return Err(PackageError::BadTarget(
                    "length or sha256 differs from the target entry",
                ));
            }
            if name != d.target_name() {
                return Err(PackageError::BadTarget(
                    "target name differs from the description",
                ));
            }
        }
        Ok(d)
    }
}

impl Package {
    /// Validates a spec.
    pub fn new(spec: PackageSpec) -> Result<Self, PackageError> {
        Self::try_from(spec)
    }

    /// Parses and validates JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, PackageError> {
        Ok(serde_json::from_slice(json)?)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_vec_pretty(&self.spec).unwrap_or_default()
    }

    /// Package id.
    pub fn id(&self) -> &PackageId {
        &self.spec.id
    }

    /// Download policy.
    pub fn download(&self) -> &DownloadPolicy {
        &self.spec.download
    }

    /// Components in package order.
    pub fn components(&self) -> &[Component] {
        &self.spec.components
    }

    /// The component for `device`.
    pub fn component(&self, device: &DevicePath) -> Option<&Component> {
        self.spec.components.iter().find(|c| c.device == *device)
    }

    /// Components grouped by stage, stages in increasing order.
    pub fn install_sequence(&self) -> Vec<(u16, Vec<&Component>)> {
        let mut m: BTreeMap<u16, Vec<&Component>> = BTreeMap::new();
        for c in &self.spec.components {
            m.entry(c.stage).or_default().push(c);
        }
        m.into_iter().collect()
    }

    /// The description of every artifact (full image and each delta).
    pub fn target_descriptions(&self) -> Vec<TargetDescription> {
        let mut out = Vec::new();
        for c in &self.spec.components {
            let base = TargetDescription {
                package: self.spec.id.clone(),
                download: self.spec.download.clone(),
                component_count: self.spec.components.len() as u32,
                component: c.clone(),
                artifact: ArtifactRef::Full,
            };
            for d in &c.deltas {
                out.push(TargetDescription {
                    artifact: ArtifactRef::Delta {
                        format: d.format,
                        from_version: d.from_version.clone(),
                    },
                    ..base.clone()
                });
            }
            out.insert(out.len() - c.deltas.len(), base);
        }
        out
    }

    /// The Uptane targets entries of this package.
    pub fn target_entries(&self) -> Vec<TargetEntry> {
        self.target_descriptions()
            .into_iter()
            .filter_map(|d| {
                let a = d.artifact()?.clone();
                Some(TargetEntry {
                    name: d.target_name(),
                    length: a.length,
                    sha256: a.sha256,
                    custom: d.to_custom_json(),
                })
            })
            .collect()
    }

    /// Rebuilds a package from the descriptions of its target entries (any
    /// subset that holds each component at least once). All must agree on
    /// the package id, download policy and component count, and every
    /// component must be present.
    pub fn from_target_descriptions(descs: &[TargetDescription]) -> Result<Self, PackageError> {
        let first = descs.first().ok_or(PackageError::Empty)?;
        let mut comps: BTreeMap<&DevicePath, &Component> = BTreeMap::new();
        for d in descs {
            if d.package != first.package
                || d.download != first.download
                || d.component_count != first.component_count
            {
                return Err(PackageError::BadTarget("entries of one package disagree"));
            }
            if let Some(prev) = comps.insert(&d.component.device, &d.component) {
                if prev != &d.component {
                    return Err(PackageError::BadTarget("entries disagree on a component"));
                }
            }
        }
        if comps.len() != first.component_count as usize {
            return Err(PackageError::BadTarget(
                "a component of the package is missing",
            ));
        }
        Package::new(PackageSpec {
            id: first.package.clone(),
            download: first.download.clone(),
            components: comps.into_values().cloned().collect(),
        })
    }
}

#[cfg(test)]
mod tests;

//! The input of orchestration: a package that is **verified and
//! downloaded** ([`ReadyPackage`]), and the up-front admission check that
//! runs before anything is downloaded ([`admit`]).
//!
//! The Server side of the Client (check-in, full Uptane verification,
//! download planning and downloads, consent: `core::session`) produces a
//! [`ReadyPackage`]; the orchestrator ([`crate::core::Client`]) consumes it.
//! The blobs themselves stay with the host: the orchestrator names a
//! [`BlobHandle`] and a byte range and the host answers
//! ([`crate::core::HostNeed::ReadBlob`]).

use std::collections::BTreeSet;

use esync_package::package::{
    Artifact, Component, Package, PackageError, RollbackBehaviour, TargetDescription,
};
use esync_proto::id::{DevicePath, Sha256Digest};
use esync_proto::message::{ImageEncoding, RoleBytes};
use serde::{Deserialize, Serialize};

use crate::core::inventory::Inventory;

/// A downloaded, verified blob the host keeps (file, partition, memory)
/// and reads for the orchestrator. The number is the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlobHandle(pub u64);

/// The Uptane metadata the Client forwards to one Agent so that it verifies
/// again itself (Director roles, and Image roles for full-verification
/// Agents), as in [`esync_proto::message::UpdateMetadata`] without the
/// update id (the orchestrator assigns it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedMetadata {
    /// Director repository roles.
    pub director: Vec<RoleBytes>,
    /// Image repository roles (empty for partial-verification Agents).
    pub image: Vec<RoleBytes>,
}

/// One component of a [`ReadyPackage`]: what travels to which Agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadyComponent {
    /// The Agent (device path of the package's component).
    pub device: DevicePath,
    /// The Uptane target name of the artifact sent (full image or delta).
    pub target_name: String,
    /// How the image travels: the full image, or a delta whose source is
    /// the Agent's installed image.
    pub encoding: ImageEncoding,
    /// The artifact sent (length, sha256, chunk size, chunk-list digest):
    /// the component's `image` or the chosen delta's `patch`.
    pub artifact: Artifact,
    /// SHA-256 of each chunk of the blob, in order (computed while it was
    /// downloaded); they must hash to [`Artifact::chunk_list_sha256`].
    pub chunk_hashes: Vec<Sha256Digest>,
    /// Where the host keeps the verified bytes.
    pub blob: BlobHandle,
    /// The metadata to forward to the Agent.
    pub metadata: ForwardedMetadata,
}

/// A package whose metadata was fully verified and whose blobs were
/// downloaded and hashed: the input of [`crate::core::Client::start`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadyPackage {
    /// The validated package description (stages, dependencies, policies).
    pub package: Package,
    /// Per component, what to send. Every component of [`Self::package`]
    /// must have exactly one entry: a component missing here (withheld by
    /// the Server, attack A13) makes the whole package refused.
    pub components: Vec<ReadyComponent>,
}

/// Why a package is refused before anything is downloaded or sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A target description does not decode or validate (e.g. a malformed
    /// precondition, which the description's decoder parses).
    #[error("target {target}: {source}")]
    Description {
        /// The target entry's name.
        target: String,
        /// Why.
        source: PackageError,
    },
    /// The package is inconsistent (dependency cycle, unknown dependency,
    /// stage order, missing component in the bundle).
    #[error("package: {0}")]
    Package(#[from] PackageError),
    /// A component targets a device that is not in the vehicle's inventory.
    #[error("{0} is not a device of this vehicle")]
    UnknownDevice(DevicePath),
    /// A component is built for other hardware than the Agent reports.
    #[error("{device}: built for {expected}, the Agent reports {reported}")]
    HardwareMismatch {
        /// The device.
        device: DevicePath,
        /// The component's hardware id.
        expected: String,
        /// The inventory's.
        reported: String,
    },
    /// A component of the package has no blob (withheld by the Server:
    /// A13), or a blob names no component.
    #[error("{0}: component withheld or not part of the package")]
    Withheld(DevicePath),
    /// The blob's description does not match the signed component.
    #[error("{device}: {why}")]
    BlobMismatch {
        /// The device.
        device: DevicePath,
        /// What differs.
        why: &'static str,
    },
    /// A component cannot be rolled back: the Client's atomic packages
    /// need every component to roll back.
    #[error("{0} cannot roll back; atomic packages need rollback on every component")]
    NotRollbackable(DevicePath),
}

/// A raw Uptane target entry as the Director lists it (name, length,
/// sha256, `custom`), before anything of it is downloaded.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetEntryRef<'a> {
    /// Target name.
    pub name: &'a str,
    /// Length.
    pub length: u64,
    /// SHA-256.
    pub sha256: &'a Sha256Digest,
    /// The `custom` object.
    pub custom: &'a serde_json::Value,
}

/// Checks a directed package **before anything is downloaded**: every
/// entry's description decodes (preconditions parse), the rebuilt package
/// validates (no cycle, no unknown dependency, stage order, no component
/// missing), and every component's device is in the inventory with the
/// component's hardware id.
pub fn admit(entries: &[TargetEntryRef<'_>], inventory: &Inventory) -> Result<Package, Refusal> {
    let mut descs = Vec::with_capacity(entries.len());
    for e in entries {
        let d = TargetDescription::from_custom_json(e.custom, Some((e.name, e.length, e.sha256)))
            .map_err(|source| Refusal::Description {
            target: e.name.to_string(),
            source,
        })?;
        descs.push(d);
    }
    let package = Package::from_target_descriptions(&descs)?;
    check_devices(&package, inventory)?;
    Ok(package)
}

fn check_devices(package: &Package, inventory: &Inventory) -> Result<(), Refusal> {
    for c in package.components() {
        check_device(c, inventory)?;
    }
    Ok(())
}

fn check_device(c: &Component, inventory: &Inventory) -> Result<(), Refusal> {
    let Some(agent) = inventory.agent(&c.device) else {
        return Err(Refusal::UnknownDevice(c.device.clone()));
    };
    if let Some(report) = &agent.report {
        if report.hardware_id != c.hardware_id {
            return Err(Refusal::HardwareMismatch {
                device: c.device.clone(),
                expected: c.hardware_id.to_string(),
                reported: report.hardware_id.to_string(),
            });
        }
    }
    if c.policy.rollback == RollbackBehaviour::None {
        return Err(Refusal::NotRollbackable(c.device.clone()));
    }
    Ok(())
}

impl ReadyPackage {
    /// Checks the package against the inventory and its blobs against the
    /// signed components (see [`Refusal`]). Called by
    /// [`crate::core::Client::start`] before any frame is sent.
    pub fn check(&self, inventory: &Inventory) -> Result<(), Refusal> {
        check_devices(&self.package, inventory)?;
        let mut seen = BTreeSet::new();
        for r in &self.components {
            let Some(c) = self.package.component(&r.device) else {
                return Err(Refusal::Withheld(r.device.clone()));
            };
            if !seen.insert(&r.device) {
                return Err(Refusal::BlobMismatch {
                    device: r.device.clone(),
                    why: "two blobs for one component",
                });
            }
            let bad = |why| Refusal::BlobMismatch {
                device: r.device.clone(),
                why,
            };
            match &r.encoding {
                ImageEncoding::Full => {
                    if r.artifact != c.image {
                        return Err(bad("full image differs from the signed one"));
                    }
                }
                ImageEncoding::Delta {
                    format,
                    from_version,
                    source_sha256,
                    patch_length,
                    patch_sha256,
                } => {
                    let found = c.deltas.iter().any(|d| {
                        d.format == *format
                            && d.from_version == *from_version
                            && d.source_sha256 == *source_sha256
                            && d.patch == r.artifact
                            && d.patch.length == *patch_length
                            && d.patch.sha256 == *patch_sha256
                    });
                    if !found {
                        return Err(bad("delta is not one the component signs"));
                    }
                }
            }
            if esync_package::chunk::chunk_list_digest(&r.chunk_hashes)
                != r.artifact.chunk_list_sha256
            {
                return Err(bad("chunk hashes differ from the signed chunk-list digest"));
            }
            let expected = r
                .artifact
                .length
                .div_ceil(u64::from(r.artifact.chunk_size.max(1)));
            if r.chunk_hashes.len() as u64 != expected {
                return Err(bad("chunk count differs from the artifact length"));
            }
        }
        for c in self.package.components() {
            if !seen.contains(&c.device) {
                return Err(Refusal::Withheld(c.device.clone()));
            }
        }
        Ok(())
    }

    /// The ready entry of `device`.
    pub fn component(&self, device: &DevicePath) -> Option<&ReadyComponent> {
        self.components.iter().find(|c| &c.device == device)
    }

    /// The Director's target name of `device`'s component: the full
    /// image's entry, which the Agent's verified metadata names (a delta
    /// travels under the same offer, described by its encoding).
    pub fn director_target_name(&self, device: &DevicePath) -> Option<String> {
        let component = self.package.component(device)?.clone();
        Some(
            TargetDescription {
                package: self.package.id().clone(),
                download: self.package.download().clone(),
                component_count: u32::try_from(self.package.components().len()).ok()?,
                component,
                artifact: esync_package::package::ArtifactRef::Full,
            }
            .target_name(),
        )
    }
}

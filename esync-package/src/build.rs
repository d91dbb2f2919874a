//! Building a [`Package`] from images: the artifacts are described
//! (length, digest, chunk list) from their bytes, which the builder keeps
//! content-addressed for publication.
//!
//! This is the layer above the model: [`crate::package`] knows nothing of
//! how patches are made, and with feature `generate` this module also
//! generates them (`PackageBuilder::component_with_deltas`, through
//! `delta::generate` and optionally `delta::cache`). Its
//! error, [`BuildError`], wraps the model's [`PackageError`] and the
//! generator's `GenerateError`; neither of those names the other, so the
//! module graph has no cycle (model ← generator ← builder).

use std::collections::BTreeMap;

use esync_proto::id::{DevicePath, HardwareId, ReleaseCounter, Sha256Digest, SoftwareVersion};
use esync_proto::message::PatchFormat;
use thiserror::Error;

#[cfg(feature = "generate")]
use crate::delta::cache::{cached_patch, DeltaCache};
#[cfg(feature = "generate")]
use crate::delta::generate::{generate_patch, GenerateError, GenerateOptions};
use crate::digest::{sha256, to_hex};
use crate::package::{
    Artifact, Component, ComponentPolicy, Delta, DownloadPolicy, Package, PackageError, PackageId,
    PackageSpec,
};

/// Building a package failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The package or one of its artifacts is invalid.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// Generating a patch failed (feature `generate`).
    #[cfg(feature = "generate")]
    #[error(transparent)]
    Generate(#[from] GenerateError),
}

/// Builds a [`Package`] and keeps the artifact bytes, content-addressed by
/// their SHA-256.
#[derive(Debug)]
pub struct PackageBuilder {
    id: PackageId,
    download: DownloadPolicy,
    chunk_size: u32,
    components: Vec<Component>,
    blobs: BTreeMap<Sha256Digest, Vec<u8>>,
}

/// Input for one component built from images.
#[derive(Clone, Debug)]
pub struct ComponentInput {
    /// Target device.
    pub device: DevicePath,
    /// Hardware id.
    pub hardware_id: HardwareId,
    /// New version.
    pub version: SoftwareVersion,
    /// Release counter.
    pub release_counter: ReleaseCounter,
    /// New image bytes.
    pub image: Vec<u8>,
    /// Dependencies.
    pub depends_on: Vec<DevicePath>,
    /// Install stage.
    pub stage: u16,
    /// Policy.
    pub policy: ComponentPolicy,
}

/// A built package and its artifact bytes.
#[derive(Debug)]
pub struct BuiltPackage {
    /// The validated package.
    pub package: Package,
    /// Artifacts by SHA-256 (file name: lower-case hex).
    pub blobs: BTreeMap<Sha256Digest, Vec<u8>>,
}

impl PackageBuilder {
    /// A new builder with the default chunk size.
    pub fn new(id: PackageId) -> Self {
        Self {
            id,
            download: DownloadPolicy::default(),
            chunk_size: crate::chunk::DEFAULT_CHUNK_SIZE,
            components: Vec::new(),
            blobs: BTreeMap::new(),
        }
    }

    /// Sets the download policy.
    pub fn download_policy(mut self, p: DownloadPolicy) -> Self {
        self.download = p;
        self
    }

    /// Sets the transfer chunk size of the artifacts added from now on.
    pub fn chunk_size(mut self, n: u32) -> Self {
        self.chunk_size = n;
        self
    }

    /// Adds a component whose artifacts are already described (no bytes kept).
    pub fn component(mut self, c: Component) -> Self {
        self.components.push(c);
        self
    }

    /// Adds a component from its image; `patches` are ready-made patches
    /// `(format, from_version, source image, patch bytes)`.
    pub fn component_from_image(
        mut self,
        input: ComponentInput,
        patches: Vec<(PatchFormat, SoftwareVersion, &[u8], Vec<u8>)>,
    ) -> Result<Self, BuildError> {
        let image = Artifact::describe(&input.image, self.chunk_size)?;
        let mut deltas = Vec::new();
        for (format, from_version, source, patch) in patches {
            deltas.push(Delta {
                format,
                from_version,
                source_length: source.len() as u64,
                source_sha256: sha256(source),
                patch: Artifact::describe(&patch, self.chunk_size)?,
            });
            self.blobs.insert(sha256(&patch), patch);
        }
        self.blobs.insert(image.sha256, input.image);
        self.components.push(Component {
            device: input.device,
            hardware_id: input.hardware_id,
            version: input.version,
            release_counter: input.release_counter,
            image,
            deltas,
            depends_on: input.depends_on,
            stage: input.stage,
            policy: input.policy,
        });
        Ok(self)
    }

    /// Adds a component from its image and older images, generating a patch
    /// from each older image in each of `formats` (through `cache` when
    /// given). Feature `generate`.
    #[cfg(feature = "generate")]
    pub fn component_with_deltas(
        self,
        input: ComponentInput,
        sources: &[(SoftwareVersion, Vec<u8>)],
        formats: &[PatchFormat],
        cache: Option<&dyn DeltaCache>,
    ) -> Result<Self, BuildError> {
        let mut patches = Vec::new();
        for (v, src) in sources {
            for &f in formats {
                let opts = GenerateOptions::new(f);
                let p = match cache {
                    Some(c) => cached_patch(c, src, &input.image, &opts)?.0,
                    None => generate_patch(src, &input.image, &opts)?,
                };
                patches.push((f, v.clone(), src.as_slice(), p));
            }
        }
        self.component_from_image(input, patches)
    }

    /// Validates and returns the package with its artifact bytes.
    pub fn build(self) -> Result<BuiltPackage, BuildError> {
        let package = Package::new(PackageSpec {
            id: self.id,
            download: self.download,
            components: self.components,
        })?;
        Ok(BuiltPackage {
            package,
            blobs: self.blobs,
        })
    }
}

/// File name of a content-addressed blob.
pub fn blob_name(d: &Sha256Digest) -> String {
    to_hex(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkError;

    fn input() -> ComponentInput {
        ComponentInput {
            device: DevicePath::new("/powertrain/ecm").expect("valid device path"),
            hardware_id: HardwareId::new("hw-1").expect("valid hardware id"),
            version: SoftwareVersion::new("2.0.0").expect("valid version"),
            release_counter: ReleaseCounter(2),
            image: b"new image".to_vec(),
            depends_on: vec![],
            stage: 0,
            policy: ComponentPolicy::default(),
        }
    }

    #[test]
    fn model_errors_come_back_as_build_errors() {
        let id = PackageId::new("pkg-1").expect("valid id");
        // A chunk size below the minimum is the model's error.
        let r = PackageBuilder::new(id.clone())
            .chunk_size(1)
            .component_from_image(input(), vec![]);
        assert!(
            matches!(
                r,
                Err(BuildError::Package(PackageError::Chunk(
                    ChunkError::ChunkSize(1)
                )))
            ),
            "{r:?}"
        );
        // An empty package is refused at `build`.
        let r = PackageBuilder::new(id.clone()).build();
        assert!(
            matches!(r, Err(BuildError::Package(PackageError::Empty))),
            "{r:?}"
        );
        // A valid one keeps its bytes by digest.
        let built = PackageBuilder::new(id)
            .component_from_image(input(), vec![])
            .and_then(PackageBuilder::build)
            .expect("valid package");
        let img = &built.package.components()[0].image;
        assert_eq!(built.blobs[&img.sha256], b"new image");
        assert_eq!(blob_name(&img.sha256), to_hex(&img.sha256));
    }

    #[cfg(feature = "generate")]
    #[test]
    fn generated_deltas_are_described_and_kept() {
        let id = PackageId::new("pkg-1").expect("valid id");
        let old = (0..5000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>();
        let mut inp = input();
        inp.image = old.iter().map(|b| b.wrapping_add(1)).collect();
        let built = PackageBuilder::new(id)
            .component_with_deltas(
                inp,
                &[(
                    SoftwareVersion::new("1.0.0").expect("valid version"),
                    old.clone(),
                )],
                &[PatchFormat::BsdiffZstd],
                None,
            )
            .and_then(PackageBuilder::build)
            .expect("valid package");
        let c = &built.package.components()[0];
        assert_eq!(c.deltas.len(), 1);
        assert_eq!(c.deltas[0].source_sha256, sha256(&old));
        let patch = &built.blobs[&c.deltas[0].patch.sha256];
        assert_eq!(sha256(patch), c.deltas[0].patch.sha256);
        // A bad chunk size found while generating is still the model's error.
        let r = PackageBuilder::new(PackageId::new("pkg-2").expect("valid id"))
            .chunk_size(1)
            .component_with_deltas(input(), &[], &[PatchFormat::BsdiffZstd], None);
        assert!(
            matches!(r, Err(BuildError::Package(PackageError::Chunk(_)))),
            "{r:?}"
        );
    }
}

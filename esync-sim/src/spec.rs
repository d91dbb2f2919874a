//! What a simulated fleet is made of ([`FleetSpec`]) and the deterministic
//! derivation of every vehicle from it: VINs, ECU mix (a primary and 1 to 5
//! other ECUs of distinct hardware types), ECU serials and each ECU's Uptane
//! ed25519 key, all from the spec's seed.

use esync_proto::id::{EcuSerial, HardwareId, ReleaseCounter, Sha256Digest, SoftwareVersion, Vin};
use esync_proto::message::InstalledImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::SimError;

/// One hardware type of the fleet and the image its ECUs leave the
/// factory with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcuType {
    /// Hardware id (registered per ECU; packages direct components by it).
    pub hardware_id: HardwareId,
    /// The image an ECU of this type runs before any update.
    pub factory: InstalledImage,
}

impl EcuType {
    /// A type whose factory image is synthetic: version `1.0.0`, release
    /// counter 1, 1 MiB, SHA-256 of `esync-sim factory image <hardware id>`.
    /// The Server does not know such an image (so it cannot make deltas
    /// from it and shows its version as unknown); upload real images and
    /// use [`EcuType::with_image`] when that matters.
    pub fn synthetic(hardware_id: HardwareId) -> Result<Self, SimError> {
        let sha: [u8; 32] = Sha256::digest(format!("esync-sim factory image {hardware_id}")).into();
        let factory = InstalledImage {
            version: SoftwareVersion::new("1.0.0").map_err(|e| SimError::Spec(e.to_string()))?,
            release_counter: ReleaseCounter(1),
            length: 1 << 20,
            sha256: Sha256Digest(sha),
        };
        Ok(Self {
            hardware_id,
            factory,
        })
    }

    /// A type whose factory image is `bytes` at `version`, release counter
    /// `release_counter` (the image the Server was given).
    pub fn with_image(
        hardware_id: HardwareId,
        version: SoftwareVersion,
        release_counter: u64,
        bytes: &[u8],
    ) -> Self {
        Self {
            hardware_id,
            factory: InstalledImage {
                version,
                release_counter: ReleaseCounter(release_counter),
                length: bytes.len() as u64,
                sha256: Sha256Digest(Sha256::digest(bytes).into()),
            },
        }
    }
}

/// A fleet to provision: `count` vehicles of one model and region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSpec {
    /// How many vehicles.
    pub count: usize,
    /// VIN prefix (VIN characters, at most 16); the rest of the 17
    /// characters is the vehicle's index, zero-padded.
    pub vin_prefix: String,
    /// Model (campaign targeting).
    pub model: String,
    /// Region (campaign targeting).
    pub region: String,
    /// The primary ECU's type (the Client: signs the vehicle manifest).
    pub primary: EcuType,
    /// Types the other ECUs are drawn from (distinct per vehicle: the
    /// Director directs a component only to a vehicle's single ECU of its
    /// hardware id).
    pub ecu_types: Vec<EcuType>,
    /// Fewest ECUs per vehicle, primary included (2 to 6).
    pub min_ecus: usize,
    /// Most ECUs per vehicle, primary included (2 to 6, at most
    /// `ecu_types.len() + 1`).
    pub max_ecus: usize,
    /// Seed of every derived choice and key.
    pub seed: u64,
}

/// The hardware ids of [`FleetSpec::demo`]'s ECU types.
pub const DEMO_HARDWARE_IDS: [&str; 5] = [
    "sim-engine",
    "sim-brake",
    "sim-infotainment",
    "sim-telematics",
    "sim-body",
];

/// Hardware id of [`FleetSpec::demo`]'s primary ECU.
pub const DEMO_PRIMARY_HARDWARE_ID: &str = "sim-gateway";

impl FleetSpec {
    /// `count` vehicles `prefix…` of model `sim-model`, region `eu`, a
    /// `sim-gateway` primary and 1 to 5 of the [`DEMO_HARDWARE_IDS`] types
    /// with synthetic factory images ([`EcuType::synthetic`]).
    pub fn demo(count: usize, vin_prefix: &str, seed: u64) -> Result<Self, SimError> {
        let hw = |s: &str| HardwareId::new(s).map_err(|e| SimError::Spec(e.to_string()));
        Ok(Self {
            count,
            vin_prefix: vin_prefix.to_owned(),
            model: "sim-model".into(),
            region: "eu".into(),
            primary: EcuType::synthetic(hw(DEMO_PRIMARY_HARDWARE_ID)?)?,
            ecu_types: DEMO_HARDWARE_IDS
                .iter()
                .map(|h| EcuType::synthetic(hw(h)?))
                .collect::<Result<_, _>>()?,
            min_ecus: 2,
            max_ecus: 6,
            seed,
        })
    }

    /// Checks the spec (before anything is registered).
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Spec(m));
        if self.vin_prefix.len() > 16 {
            return bad(format!(
                "VIN prefix {:?}: at most 16 characters",
                self.vin_prefix
            ));
        }
        let digits = 17 - self.vin_prefix.len();
        let room = 10u128.saturating_pow(digits as u32);
        if self.count as u128 > room {
            return bad(format!(
                "{} vehicles do not fit in the {digits} digits after prefix {:?}",
                self.count, self.vin_prefix
            ));
        }
        if self.count > 0 {
            self.vin(self.count - 1)?;
        }
        if !(2..=6).contains(&self.min_ecus)
            || !(2..=6).contains(&self.max_ecus)
            || self.min_ecus > self.max_ecus
        {
            return bad(format!(
                "ECUs per vehicle {}..={}: must be within 2..=6",
                self.min_ecus, self.max_ecus
            ));
        }
        if self.max_ecus - 1 > self.ecu_types.len() {
            return bad(format!(
                "{} ECUs per vehicle need {} distinct non-primary types, {} given",
                self.max_ecus,
                self.max_ecus - 1,
                self.ecu_types.len()
            ));
        }
        let mut ids: Vec<&str> = self
            .ecu_types
            .iter()
            .map(|t| t.hardware_id.as_str())
            .collect();
        ids.push(self.primary.hardware_id.as_str());
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return bad("hardware ids of the ECU types must be distinct".into());
        }
        if self.model.is_empty() || self.region.is_empty() {
            return bad("model and region must not be empty".into());
        }
        Ok(())
    }

    /// The VIN of vehicle `i`.
    pub fn vin(&self, i: usize) -> Result<Vin, SimError> {
        let digits = 17 - self.vin_prefix.len().min(17);
        Vin::new(format!("{}{i:0digits$}", self.vin_prefix))
            .map_err(|e| SimError::Spec(format!("VIN of vehicle {i}: {e}")))
    }

    /// A 32-byte value derived from the seed and `parts`.
    pub fn derive(&self, parts: &[&[u8]]) -> [u8; 32] {
        derive(self.seed, parts)
    }

    /// The ECUs of vehicle `vin` (index `i`): the primary first, then
    /// `min_ecus - 1 ..= max_ecus - 1` distinct types, each with its serial
    /// and key seed.
    pub fn ecus(&self, vin: &Vin) -> Result<Vec<EcuPlan>, SimError> {
        let pick = self.derive(&[b"ecu mix", vin.as_str().as_bytes()]);
        let span = (self.max_ecus - self.min_ecus + 1) as u64;
        let n = self.min_ecus + (u64::from_le_bytes(first8(&pick)) % span) as usize;
        // A deterministic shuffle of the types (keyed sort).
        let mut types: Vec<(&EcuType, [u8; 32])> = self
            .ecu_types
            .iter()
            .map(|t| {
                let k = self.derive(&[
                    b"ecu order",
                    vin.as_str().as_bytes(),
                    t.hardware_id.as_str().as_bytes(),
                ]);
                (t, k)
            })
            .collect();
        types.sort_by_key(|a| a.1);
        let mut out = Vec::with_capacity(n);
        let chosen =
            std::iter::once(&self.primary).chain(types.iter().take(n - 1).map(|(t, _)| *t));
        for (idx, t) in chosen.enumerate() {
            let serial = EcuSerial::new(format!("E{idx}-{vin}"))
                .map_err(|e| SimError::Spec(format!("ECU serial: {e}")))?;
            let key_seed = self.derive(&[
                b"ecu key",
                vin.as_str().as_bytes(),
                serial.as_str().as_bytes(),
            ]);
            out.push(EcuPlan {
                serial,
                hardware_id: t.hardware_id.clone(),
                primary: idx == 0,
                key_seed,
                factory: t.factory.clone(),
            });
        }
        Ok(out)
    }
}

/// A 32-byte value derived from `seed` and `parts` (SHA-256 of both, each
/// part length-prefixed).
pub fn derive(seed: u64, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"esync-sim\0");
    h.update(seed.to_le_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

fn first8(b: &[u8; 32]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[..8]);
    out
}

/// A u64 derived from a 32-byte value (its first 8 bytes).
pub(crate) fn u64_of(b: &[u8; 32]) -> u64 {
    u64::from_le_bytes(first8(b))
}

/// One ECU of a simulated vehicle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcuPlan {
    /// Serial (`E<index>-<VIN>`, the primary is `E0-…`).
    pub serial: EcuSerial,
    /// Hardware id.
    pub hardware_id: HardwareId,
    /// The primary (signs the vehicle manifest).
    pub primary: bool,
    /// Seed of its Uptane ed25519 key.
    #[serde(with = "hex32")]
    pub key_seed: [u8; 32],
    /// What it runs before any update.
    pub factory: InstalledImage,
}

impl EcuPlan {
    /// Its Uptane key.
    pub fn key(&self) -> esync_uptane::PrivateKey {
        esync_uptane::PrivateKey::from_seed(&self.key_seed)
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vehicles_are_deterministic_from_the_seed_and_ecus_distinct() {
        let spec = FleetSpec::demo(1000, "SMTEST", 7).expect("spec");
        spec.validate().expect("valid");
        let vin = spec.vin(42).expect("vin");
        assert_eq!(vin.as_str(), "SMTEST00000000042");
        let a = spec.ecus(&vin).expect("ecus");
        let b = spec.ecus(&vin).expect("ecus");
        assert_eq!(a, b);
        assert!((2..=6).contains(&a.len()));
        assert!(a[0].primary && a.iter().skip(1).all(|e| !e.primary));
        let mut hw: Vec<_> = a.iter().map(|e| e.hardware_id.clone()).collect();
        hw.sort();
        hw.dedup();
        assert_eq!(hw.len(), a.len());
        let other = FleetSpec {
            seed: 8,
            ..spec.clone()
        };
        assert_ne!(other.ecus(&vin).expect("ecus")[0].key_seed, a[0].key_seed);
        // Over many vehicles every size from 2 to 6 occurs.
        let mut sizes = std::collections::BTreeSet::new();
        for i in 0..200 {
            sizes.insert(spec.ecus(&spec.vin(i).expect("vin")).expect("ecus").len());
        }
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), vec![2, 3, 4, 5, 6]);
    }

    #[test]
    fn bad_specs_are_refused() {
        let ok = FleetSpec::demo(10, "SMV", 1).expect("spec");
        let cases = [
            FleetSpec {
                vin_prefix: "SMVOQ".into(),
                ..ok.clone()
            },
            FleetSpec {
                vin_prefix: "S".repeat(17),
                ..ok.clone()
            },
            FleetSpec {
                count: 11,
                vin_prefix: "S".repeat(16),
                ..ok.clone()
            },
            FleetSpec {
                min_ecus: 1,
                ..ok.clone()
            },
            FleetSpec {
                max_ecus: 7,
                ..ok.clone()
            },
            FleetSpec {
                ecu_types: ok.ecu_types[..2].to_vec(),
                ..ok.clone()
            },
        ];
        for c in cases {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}

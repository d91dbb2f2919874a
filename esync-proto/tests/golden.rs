//! Golden vectors: the exact bytes of a representative set of signed
//! envelopes. Any change to the wire format makes this test fail, so that it
//! shows up in review. To regenerate after an intended, versioned change:
//! `ESYNC_BLESS=1 cargo test -p esync-proto --test golden`.

mod common;

use std::path::PathBuf;

use common::*;
use esync_proto::envelope::{Envelope, EnvelopeSigner, SignedEnvelope};
use esync_proto::frame::{self, FrameLimits};
use esync_proto::id::Id128;
use esync_proto::message::Participant;

fn vector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn signer_for(p: &Participant) -> EnvelopeSigner {
    let seed = match p {
        Participant::Client => 1,
        Participant::Device(_) => 2,
        Participant::Listener(_) => 4,
    };
    EnvelopeSigner::new(p.clone(), key(seed), 1000, FrameLimits::default())
}

fn to_hex(bytes: &[u8]) -> String {
    let h = hex::encode(bytes);
    let mut out = String::new();
    for line in h.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("hex is ascii"));
        out.push('\n');
    }
    out
}

#[test]
fn golden_vectors_match() {
    let bless = std::env::var_os("ESYNC_BLESS").is_some();
    let mut failures = Vec::new();
    for (name, sender, recipient, payload) in representative() {
        let mut signer = signer_for(&sender);
        let frame = signer
            .seal(recipient, Id128([0x77; 16]), payload.clone(), NOW)
            .expect("representative messages fit");
        let path = vector_dir().join(format!("{name}.hex"));
        if bless {
            std::fs::write(&path, to_hex(&frame)).expect("write vector");
            continue;
        }
        let stored = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("missing vector {}: {e}", path.display()));
        let stored: String = stored.split_whitespace().collect();
        let stored = hex::decode(stored).expect("vector is hex");
        if stored != frame {
            failures.push(name);
            continue;
        }
        // The stored bytes decode to the same message and verify.
        let signed = SignedEnvelope::from_frame(&stored, FrameLimits::default()).unwrap();
        let env: Envelope = frame::decode_body(&signed.signed).unwrap();
        assert_eq!(env.payload, payload, "{name} decodes to its message");
        signed
            .verify_signature(&signer.verifying_key())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(
        failures.is_empty(),
        "wire format changed for {failures:?}: if intended, bump the protocol version and re-bless"
    );
}

#[test]
fn every_vector_file_is_checked() {
    let names: Vec<String> = representative()
        .iter()
        .map(|(n, ..)| format!("{n}.hex"))
        .collect();
    for entry in std::fs::read_dir(vector_dir()).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        assert!(names.contains(&file), "stale vector file {file}");
    }
}

/// `CollectItem::Artifact` (spelt `Artefact` before the one-name rename)
/// keeps its wire index: postcard encodes the variant by position.
#[test]
fn collect_item_artifact_keeps_its_wire_index() {
    use esync_proto::message::CollectItem;
    let item = CollectItem::Artifact("ecm.dump".into());
    let bytes = postcard::to_allocvec(&item).expect("encodes");
    assert_eq!(bytes, b"\x03\x08ecm.dump");
    assert_eq!(
        postcard::from_bytes::<CollectItem>(&bytes).expect("decodes"),
        item
    );
}

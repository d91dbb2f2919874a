//! TUF/Uptane metadata files: the signed envelope, canonical JSON, and the
//! four top-level roles decoded from it.
#![no_main]

use esync_uptane::canonical::to_canonical;
use esync_uptane::crypto::RawSigned;
use esync_uptane::metadata::{
    check_target_name, decode_signed, Root, Snapshot, Targets, Timestamp,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = RawSigned::from_slice("fuzz", data) else {
        return;
    };
    let _ = to_canonical(&raw.signed);
    if let Ok(root) = decode_signed::<Root>("root", &raw) {
        let _ = root.verify_role("root", &raw, esync_uptane::crypto::SchemeSet::default());
        let _ = root.role_keys_changed(&root, "targets");
    }
    if let Ok(targets) = decode_signed::<Targets>("targets", &raw) {
        for name in targets.targets.keys() {
            let _ = check_target_name(name);
        }
        for role in targets.delegations.iter().flat_map(|d| &d.roles) {
            let _ = role.matches("ecm/ecm-1.0.bin");
        }
    }
    let _ = decode_signed::<Snapshot>("snapshot", &raw);
    let _ = decode_signed::<Timestamp>("timestamp", &raw);
});

//! Package JSON and the target description in an Uptane entry's `custom`:
//! parsing and validation; what a valid package produces must be accepted.
#![no_main]

use esync_package::package::{Package, TargetDescription};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Package::from_json(data) {
        assert_eq!(
            Package::from_json(&p.to_json()).expect("own JSON parses"),
            p
        );
        for e in p.target_entries() {
            TargetDescription::from_custom_json(&e.custom, Some((&e.name, e.length, &e.sha256)))
                .expect("a package's own target entries are accepted");
        }
        let _ = Package::from_target_descriptions(&p.target_descriptions());
    }
    if let Ok(custom) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = TargetDescription::from_custom_json(&custom, None);
    }
});

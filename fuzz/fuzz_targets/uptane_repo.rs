//! The repository verifier fed arbitrary bytes for one of its fetches
//! (optionally re-signed with the role's real key) during a refresh and
//! target lookups; every other fetch gets the genuine file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, bool, &[u8])| {
    let (replace, resign, bytes) = input;
    esync_fuzz::drive_repo(replace % 8, resign, bytes);
});

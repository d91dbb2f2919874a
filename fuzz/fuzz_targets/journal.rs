//! The Agent's journal record as read back from storage: the checksummed
//! record (magic, layout, journal format version, body, checksum) and the
//! `JournalState` inside it, through `esync_agent::journal::decode_state`.
#![no_main]

use esync_agent::journal::{decode_state, encode_state, JOURNAL_FORMAT, JOURNAL_MAGIC};
use esync_store::record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As stored (a random record almost always fails the checksum).
    let _ = decode_state(data);
    // Past the checksum: `data` is the body of a correctly sealed record, of
    // this build's format and of the format a fuzzed first byte names.
    let _ = decode_state(&record::seal(
        JOURNAL_MAGIC,
        u16::from(data.first().copied().unwrap_or(0)),
        data,
    ));
    if let Ok(state) = decode_state(&record::seal(JOURNAL_MAGIC, JOURNAL_FORMAT, data)) {
        // Compared as bytes: a signal value may be a NaN float.
        let again = encode_state(&state).expect("a decoded state encodes");
        let reopened = decode_state(&again).expect("its own record opens");
        assert_eq!(encode_state(&reopened).expect("encodes"), again);
    }
});

//! The Agent's journal record as read back from storage: the sealed record
//! (magic, version, body, checksum) and the `JournalState` inside it.
#![no_main]

use esync_agent::device::sha256;
use esync_agent::journal::{JOURNAL_MAGIC, MAX_JOURNAL_BYTES};
use esync_agent::seal::{self, SEAL_VERSION};
use esync_agent::state::JournalState;
use libfuzzer_sys::fuzz_target;

fn open(record: &[u8]) -> Result<JournalState, seal::SealError> {
    seal::open("journal", JOURNAL_MAGIC, record, MAX_JOURNAL_BYTES)
}

fuzz_target!(|data: &[u8]| {
    // As stored (a random record almost always fails the checksum).
    let _ = open(data);
    // Past the checksum: `data` is the body of a correctly sealed record.
    let mut record = JOURNAL_MAGIC.to_vec();
    record.push(SEAL_VERSION);
    record.extend_from_slice(data);
    record.extend_from_slice(&sha256(data).0);
    if let Ok(state) = open(&record) {
        // Compared as bytes: a signal value may be a NaN float.
        let again = seal::seal(JOURNAL_MAGIC, &state).expect("a decoded state encodes");
        let reopened = open(&again).expect("its own record opens");
        assert_eq!(
            seal::seal(JOURNAL_MAGIC, &reopened).expect("encodes"),
            again
        );
    }
});

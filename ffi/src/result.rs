//! The result enum every entry point returns, and its messages.

use crate::{copy_text, guard, slice_mut};

/// What an entry point did. The numbers are stable: a value keeps its
/// meaning in every later version, new values are only added.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum esync_result {
    /// Success.
    ESYNC_RESULT_OK = 0,
    /// A required pointer argument was `NULL`.
    ESYNC_RESULT_NULL_ARGUMENT = 1,
    /// An argument is malformed (not UTF-8, not a valid identifier, a key of
    /// the wrong length, an unknown enum value).
    ESYNC_RESULT_INVALID_ARGUMENT = 2,
    /// The configuration is not usable (a limit out of range, a
    /// safety-critical Agent without a precondition, a required callback
    /// missing).
    ESYNC_RESULT_INVALID_CONFIG = 3,
    /// The caller's buffer is too small; nothing was written.
    ESYNC_RESULT_BUFFER_TOO_SMALL = 4,
    /// No frame is waiting to be sent.
    ESYNC_RESULT_NO_FRAME = 5,
    /// The Agent halted (power loss, journal or device failure, or an
    /// earlier panic): free the handle and create it again, which recovers
    /// from the journal.
    ESYNC_RESULT_HALTED = 6,
    /// A message of the Agent could not be signed or framed (it exceeds the
    /// frame limits); the Agent's state is journaled.
    ESYNC_RESULT_FRAME = 7,
    /// The Uptane verifier could not be opened (trust store unreadable or
    /// corrupt, pinned root invalid).
    ESYNC_RESULT_TRUST_STORE = 8,
    /// A panic was caught at the boundary; the handle is halted.
    ESYNC_RESULT_PANIC = 9,
    /// The Client refused the package (it does not decode, is inconsistent,
    /// or does not fit the inventory); nothing was sent.
    ESYNC_RESULT_REFUSED = 10,
    /// The Client runs a campaign already.
    ESYNC_RESULT_BUSY = 11,
    /// The session refused the Server's metadata (Uptane verification, a
    /// withheld component, targets that do not form a package); nothing
    /// was downloaded.
    ESYNC_RESULT_VERIFICATION = 12,
    /// The session gave up on a request after its retries.
    ESYNC_RESULT_GAVE_UP = 13,
    /// The session cannot take this call now (no request waiting, an answer
    /// that does not fit it); start a new check-in after a failure.
    ESYNC_RESULT_SESSION = 14,
}

impl esync_result {
    /// The message of a result value.
    pub fn message(self) -> &'static str {
        use esync_result::*;
        match self {
            ESYNC_RESULT_OK => "success",
            ESYNC_RESULT_NULL_ARGUMENT => "a required pointer argument was NULL",
            ESYNC_RESULT_INVALID_ARGUMENT => "an argument is malformed",
            ESYNC_RESULT_INVALID_CONFIG => "the configuration is not usable",
            ESYNC_RESULT_BUFFER_TOO_SMALL => "the buffer is too small",
            ESYNC_RESULT_NO_FRAME => "no frame is waiting to be sent",
            ESYNC_RESULT_HALTED => {
                "the handle halted: free the handle and create it again to recover"
            }
            ESYNC_RESULT_FRAME => "a message could not be signed or framed",
            ESYNC_RESULT_TRUST_STORE => "the Uptane trust store could not be opened",
            ESYNC_RESULT_PANIC => "internal error (a panic was caught); the handle is halted",
            ESYNC_RESULT_REFUSED => "the package is refused; nothing was sent",
            ESYNC_RESULT_BUSY => "a campaign is running already",
            ESYNC_RESULT_VERIFICATION => {
                "the Server's metadata failed verification; nothing was downloaded"
            }
            ESYNC_RESULT_GAVE_UP => "a request failed too often; the session gave up",
            ESYNC_RESULT_SESSION => "the session cannot take this call now",
        }
    }

    /// The result with this number, if there is one.
    pub fn from_u32(n: u32) -> Option<esync_result> {
        use esync_result::*;
        Some(match n {
            0 => ESYNC_RESULT_OK,
            1 => ESYNC_RESULT_NULL_ARGUMENT,
            2 => ESYNC_RESULT_INVALID_ARGUMENT,
            3 => ESYNC_RESULT_INVALID_CONFIG,
            4 => ESYNC_RESULT_BUFFER_TOO_SMALL,
            5 => ESYNC_RESULT_NO_FRAME,
            6 => ESYNC_RESULT_HALTED,
            7 => ESYNC_RESULT_FRAME,
            8 => ESYNC_RESULT_TRUST_STORE,
            9 => ESYNC_RESULT_PANIC,
            10 => ESYNC_RESULT_REFUSED,
            11 => ESYNC_RESULT_BUSY,
            12 => ESYNC_RESULT_VERIFICATION,
            13 => ESYNC_RESULT_GAVE_UP,
            14 => ESYNC_RESULT_SESSION,
            _ => return None,
        })
    }
}

/// Writes the message of `result` (a value of `esync_result`, passed as an
/// integer so any value is safe to pass) into `buf` (UTF-8, not
/// NUL-terminated, truncated to `len` bytes at a character boundary) and
/// its length into `*written`. An unknown value gets the message "unknown
/// result". The detail of the last failure of a handle is
/// `esync_agent_last_error`.
///
/// Ownership: `buf` and `written` are the caller's. Thread safety: may be
/// called from any thread at any time.
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes (or `NULL` with
/// `len == 0`); `written` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn esync_result_message(
    result: u32,
    buf: *mut u8,
    len: usize,
    written: *mut usize,
) -> esync_result {
    guard(|| {
        if written.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        // SAFETY: the caller guarantees `buf` is valid for `len` bytes.
        let Some(out) = (unsafe { slice_mut(buf, len) }) else {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        };
        let text = esync_result::from_u32(result).map_or("unknown result", esync_result::message);
        let n = copy_text(text, out);
        // SAFETY: checked non-null; the caller guarantees it is writable.
        unsafe { written.write(n) };
        esync_result::ESYNC_RESULT_OK
    })
}

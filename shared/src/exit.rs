//! Exit statuses of the tools as a type (after fd's `exit_codes.rs`), merged across parallel
//! work, and the Ctrl-C flag checked between files.
//!
//! | status | code | tracemark-embed | tracemark-detect |
//! |---|---|---|---|
//! | [`ExitStatus::Success`] | 0 | every output written; `ledger verify`: intact | a mark in every input |
//! | [`ExitStatus::Negative`] | 1 | `ledger verify`: the chain is broken | some input had no mark at the required confidence |
//! | [`ExitStatus::Error`] | 2 | some file failed (nothing written for it) | some input could not be examined |
//! | [`ExitStatus::Interrupted`] | 130 | Ctrl-C: files not started were skipped | Ctrl-C |

use std::sync::atomic::{AtomicBool, Ordering};

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    /// Everything asked for was done, and the answer is yes.
    Success,
    /// Done, and the answer is no (no mark; a broken ledger).
    Negative,
    /// Something could not be done.
    Error,
    /// Stopped by Ctrl-C.
    Interrupted,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Negative => 1,
            ExitStatus::Error => 2,
            ExitStatus::Interrupted => 130,
        }
    }

    /// The status a failed run ends with: a ledger that fails verification is a finding
    /// (1, like `ledger verify`), every other error is 2.
    pub fn for_error(err: &crate::Error) -> ExitStatus {
        match err {
            crate::Error::LedgerBroken { .. } => ExitStatus::Negative,
            _ => ExitStatus::Error,
        }
    }

    /// The status of two parts of one run: the more serious one (interrupted > error >
    /// negative > success).
    #[must_use]
    pub fn merge(self, other: ExitStatus) -> ExitStatus {
        self.max(other)
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s.code())
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C was pressed since [`install_interrupt_handler`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

extern "C" fn on_sigint(_: libc::c_int) {
    // A second Ctrl-C exits at once (fd's walk.rs); the first asks the run to stop between
    // files, so that outputs and ledger rows stay consistent.
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the Ctrl-C handler: the first Ctrl-C sets [`interrupted`], a second exits with
/// 130 at once. For binaries; the library never installs it itself.
pub fn install_interrupt_handler() {
    let handler = on_sigint as extern "C" fn(libc::c_int);
    // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_the_most_serious() {
        use ExitStatus::*;
        assert_eq!(Success.merge(Negative), Negative);
        assert_eq!(Error.merge(Negative), Error);
        assert_eq!(Negative.merge(Interrupted), Interrupted);
        assert_eq!(
            [Success, Negative, Error, Interrupted].map(ExitStatus::code),
            [0, 1, 2, 130]
        );
    }
}

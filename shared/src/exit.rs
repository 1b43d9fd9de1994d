//! Exit statuses of the tools as a type (after fd's `exit_codes.rs`), merged across parallel
//! work, the Ctrl-C flag checked between files, and the isolation of one file's panic.
//!
//! | status | code | tracemark-embed | tracemark-detect |
//! |---|---|---|---|
//! | [`ExitStatus::Success`] | 0 | every output written; `ledger verify`: intact | a mark in every input |
//! | [`ExitStatus::Negative`] | 1 | `ledger verify`: the chain is broken | some input had no mark at the required confidence |
//! | [`ExitStatus::Error`] | 2 | some file failed (nothing written for it) | some input could not be examined |
//! | [`ExitStatus::Interrupted`] | 130 | Ctrl-C: files not started were skipped | Ctrl-C |

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;
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

thread_local! {
    /// How many [`isolate`] calls are running on this thread.
    static ISOLATED: Cell<usize> = const { Cell::new(0) };
    /// Where the last panic on this thread happened (for the file's one-line error).
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs a panic hook that keeps a panic inside [`isolate`] quiet (it becomes that file's
/// error line) and leaves every other panic to the default hook. Idempotent.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ISOLATED.with(Cell::get) > 0 {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", crate_relative(l.file()), l.line()));
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                default(info);
            }
        }));
    });
}

/// A dependency's source path from its crate's folder on ("dicom-x-0.10.1/src/a.rs"), not
/// from the build machine's registry.
fn crate_relative(file: &str) -> &str {
    match file.find("/registry/src/") {
        Some(i) => {
            let rest = &file[i + "/registry/src/".len()..];
            rest.split_once('/').map_or(rest, |(_, r)| r)
        }
        None => file,
    }
}

/// Runs `work` on one file; a panic inside it (a decoder's, ours) becomes
/// [`crate::Error::Internal`] naming `path`, so that one hostile file never stops a batch
/// (issue 11, finding 2). With [`install_panic_hook`] the panic prints nothing else.
///
/// # Errors
/// `work`'s own error, or the panic as an error.
pub fn isolate<T>(
    path: &Path,
    stage: &'static str,
    work: impl FnOnce() -> crate::Result<T>,
) -> crate::Result<T> {
    ISOLATED.with(|n| n.set(n.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(work));
    ISOLATED.with(|n| n.set(n.get() - 1));
    result.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let message = message.lines().next().unwrap_or_default().to_string();
        let at = PANIC_AT.with(|p| p.borrow_mut().take());
        Err(crate::Error::Internal {
            path: path.into(),
            stage,
            what: match at {
                Some(at) => format!("{message} at {at}"),
                None => message,
            },
        })
    })
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

    #[test]
    fn a_panic_becomes_the_files_error() {
        install_panic_hook();
        let r: crate::Result<()> = isolate(Path::new("bad.dcm"), "stamping", || {
            let v: Vec<u8> = Vec::new();
            let i = v.len() + 3;
            Ok(std::hint::black_box(v)[i..].len()).map(|_| ())
        });
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.starts_with("bad.dcm: internal error while stamping") && !msg.contains('\n'),
            "{msg}"
        );
        assert_eq!(
            isolate(Path::new("good.png"), "stamping", || Ok(7)).unwrap(),
            7
        );
        // The count is back to zero: a later panic outside is the default hook's.
        assert_eq!(ISOLATED.with(Cell::get), 0);
    }
}

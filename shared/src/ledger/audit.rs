//! The chain of custody (issue 13): every examination with a ledger, and every command that
//! reads releases out of it (restore, show, export), is appended to the ledger as an audit
//! row: operator, UTC time in ms, the action, the evidence's path, size and SHA-256, the
//! verdict and who was named. Audit rows live in the same hash chain, under the same MAC and
//! head record as the releases, so `verify` (and an anchor) covers them: an edited, removed,
//! inserted or reordered audit row breaks the chain like any other. They are told from
//! releases by their format, `audit`, which no stamped file has, and never appear among the
//! releases ([`Ledger::entries`]).

use std::path::Path;

use super::{Entry, FileRecord, Ledger, ReleaseMeta};
use crate::error::Result;

/// The format column of an audit row.
pub const AUDIT_FORMAT: &str = "audit";

/// One access to record.
#[derive(Clone, Debug, PartialEq)]
pub struct Audit {
    /// What was done: "examine", "restore", "show", "export".
    pub action: String,
    /// Who did it (`--operator`), when given.
    pub operator: Option<String>,
    /// The evidence (the examined or restored file; the release for `show`), as named.
    pub subject: String,
    /// SHA-256 of the evidence file, hex; empty when there is none or it could not be read.
    pub sha256: String,
    /// Its size in bytes (0 when none).
    pub bytes: u64,
    /// The outcome in one word ("named", "marked", "no_mark", "restored", "error", "read").
    pub verdict: String,
    /// The releases named (release id, recipient), strongest first.
    pub named: Vec<(u64, String)>,
    /// Anything else worth keeping (p-value, tool version, the error), as JSON.
    pub detail: serde_json::Value,
}

impl Audit {
    /// The ledger row that records it: the first release named (or none: id 0, recipient
    /// empty) in the release columns, the action as purpose, the evidence as input.
    fn row(&self) -> (ReleaseMeta, FileRecord) {
        let (id, who) = self
            .named
            .first()
            .map_or((0, String::new()), |(id, who)| (*id, who.clone()));
        let params = serde_json::json!({
            "verdict": self.verdict,
            "named": self.named.iter().map(|(id, who)| serde_json::json!({
                "release_id": crate::report::payload_hex(*id),
                "recipient": who,
            })).collect::<Vec<_>>(),
            "detail": self.detail,
            "tool": concat!("tracemark ", env!("CARGO_PKG_VERSION")),
        });
        (
            ReleaseMeta {
                release_id: id,
                recipient: who,
                purpose: Some(self.action.clone()),
                operator: self.operator.clone(),
            },
            FileRecord {
                input_path: self.subject.clone(),
                input_sha256: self.sha256.clone(),
                output_path: String::new(),
                output_sha256: String::new(),
                format: AUDIT_FORMAT.into(),
                bytes: self.bytes,
                params: params.to_string(),
                content: Vec::new(),
                restore: Vec::new(),
            },
        )
    }
}

impl Ledger {
    /// Opens an existing ledger for appending audit rows (never creates one, never opens a
    /// file without write permission for writing).
    ///
    /// # Errors
    /// As [`Ledger::open`], a path where no ledger is, a read-only ledger file.
    pub fn open_for_audit(path: &Path, key: &crate::SecretKey) -> Result<Self> {
        if super::pg::is_url(path) {
            // A database's own permissions decide (a read-only role fails at the append).
            return Self::open(path, key);
        }
        let meta = std::fs::metadata(path).map_err(|e| crate::Error::io(path, e))?;
        if !meta.is_file() {
            return Err(super::content_err(path, "no ledger at this path"));
        }
        // A ledger file without write permission is evidence kept as it is (an auditor's
        // copy): never written, not even by a user whom the permissions do not stop.
        if meta.permissions().readonly() {
            return Err(super::content_err(path, "the ledger file is read-only"));
        }
        Self::open(path, key)
    }

    /// Appends an audit row at `created_ms`.
    ///
    /// # Errors
    /// Database errors; a ledger altered so that the row is not stored.
    pub fn append_audit(&mut self, audit: &Audit, created_ms: i64) -> Result<Entry> {
        let (meta, file) = audit.row();
        self.append(&meta, &file, created_ms, || Ok(()))
    }

    /// Records `audits` in the ledger at `path`, each at the time it is appended: what a
    /// command that read the ledger does last. A ledger that cannot be written (read-only,
    /// absent) is an error for the caller to report: the accesses are then not recorded.
    ///
    /// # Errors
    /// As [`Ledger::open_for_audit`] and [`Ledger::append_audit`].
    pub fn record_audits(path: &Path, key: &crate::SecretKey, audits: &[Audit]) -> Result<()> {
        if audits.is_empty() {
            return Ok(());
        }
        let mut ledger = Self::open_for_audit(path, key)?;
        for a in audits {
            ledger.append_audit(a, crate::report::now_ms())?;
        }
        Ok(())
    }

    /// The audit rows, in chain order.
    ///
    /// # Errors
    /// [`crate::Error::LedgerBroken`] (rows are verified as they are read); database errors.
    pub fn audit(&self) -> Result<Vec<Entry>> {
        Ok(self
            .trusted_rows()?
            .into_iter()
            .map(|r| r.entry)
            .filter(is_audit)
            .collect())
    }
}

/// Whether a ledger row is an audit row.
pub fn is_audit(e: &Entry) -> bool {
    e.file.format == AUDIT_FORMAT
}

//! The release ledger: who got which copy, provably.
//!
//! One SQLite table holds one row per file written for a release. The rows form a hash
//! chain: each row's hash covers its sequence number, the previous row's hash and every
//! field, and is authenticated by an HMAC under a key derived from the master key
//! (`tracemark/v1/ledger-mac`), so a row cannot be edited, removed, inserted, reordered or
//! forged without `verify` naming it. A MAC'd head record (row count and last hash) catches
//! the removal of the newest rows. The master key itself is never stored: only its key id.
//!
//! Appends run in a `BEGIN IMMEDIATE` transaction (WAL mode, busy timeout), so several
//! processes may stamp into one ledger at once. A ledger location that is a
//! `postgresql://` URL is the same ledger in a PostgreSQL database (module `pg`), which processes
//! on several machines append to. [`Ledger::append`] calls back before the
//! commit, so the caller can move the output file into place inside the transaction: a row
//! is committed only if its file was written, and a file whose commit fails can be removed.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::key::{SecretKey, hex};
use crate::prng;

mod anchor;
mod audit;
mod chain;
mod pg;
#[cfg(test)]
mod pg_tests;
mod transfer;

pub use anchor::Anchor;
pub use audit::{AUDIT_FORMAT, Audit, is_audit};
use chain::{head_mac, row_hash, row_mac};
#[doc(hidden)]
pub use pg::ScratchDatabase;
pub use pg::{is_url as is_server_url, redact as shown_location};
pub use transfer::ChainRow;

const FORMAT_TAG: &str = "tracemark-ledger-v2";
/// The format before content descriptors (issue 10): read by no current command.
const FORMAT_V1: &str = "tracemark-ledger-v1";

/// What a release is: one id, one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseMeta {
    /// The random 64-bit release id (the payload).
    pub release_id: u64,
    /// Who received it.
    pub recipient: String,
    /// Optional purpose or note.
    pub purpose: Option<String>,
    /// Optional operator.
    pub operator: Option<String>,
}

/// One file of a release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// Input path as given.
    pub input_path: String,
    /// SHA-256 of the input file, hex.
    pub input_sha256: String,
    /// Output path.
    pub output_path: String,
    /// SHA-256 of the output file, hex.
    pub output_sha256: String,
    /// Output format name.
    pub format: String,
    /// Output size in bytes.
    pub bytes: u64,
    /// Embedding parameters (JSON).
    pub params: String,
    /// The released image's content descriptors ([`crate::mark::content::encode`]), as
    /// given; stored sealed (encrypted under a key derived from the ledger key, so the
    /// database file alone shows nothing of the image).
    pub content: Vec<u8>,
    /// The restore side data ([`crate::restore::Restore::encode`]; empty when none), sealed
    /// with the content (it holds original sample values).
    pub restore: Vec<u8>,
}

/// Starts the sealed column of a row with restore side data: then a 4-byte big-endian
/// length of the content descriptors, the descriptors, the side data. (Rows without side data
/// store the descriptors alone, as before; descriptors never start with this tag.)
const RESTORE_TAG: &[u8] = b"\0tracemark-restore\0";

impl FileRecord {
    /// The bytes sealed in the row's content column (and hashed into the chain): the
    /// descriptors, then the restore side data when there is any.
    pub(crate) fn stored_content(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.restore.is_empty() {
            return std::borrow::Cow::Borrowed(&self.content);
        }
        let mut out =
            Vec::with_capacity(RESTORE_TAG.len() + 4 + self.content.len() + self.restore.len());
        out.extend_from_slice(RESTORE_TAG);
        out.extend_from_slice(&(self.content.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.content);
        out.extend_from_slice(&self.restore);
        std::borrow::Cow::Owned(out)
    }

    /// Splits [`FileRecord::stored_content`] back into descriptors and side data.
    fn split_content(stored: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        let framed = stored.strip_prefix(RESTORE_TAG).and_then(|rest| {
            let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let body = &rest[4..];
            (n <= body.len()).then(|| (body[..n].to_vec(), body[n..].to_vec()))
        });
        framed.unwrap_or((stored, Vec::new()))
    }
}

/// A ledger row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// The release.
    pub release: ReleaseMeta,
    /// UTC time of the append, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Key id of the key that stamped it.
    pub key_id: String,
    /// The file.
    pub file: FileRecord,
}

/// The outcome of [`Ledger::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Every row and the head check out.
    Intact {
        /// Rows verified.
        rows: i64,
    },
    /// The first row (by sequence) that fails, and why.
    Broken {
        /// Sequence number of the first bad row (or the position where one is missing).
        seq: i64,
        /// What failed.
        why: String,
    },
}

/// Whether the database holds the ledger's tables.
fn has_meta(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'ledger_meta'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Creates the tables and the head record in an open write transaction, unless a
/// concurrent creator already did.
fn create_tables(conn: &Connection, path: &Path, key: &SecretKey, key_id: &str) -> Result<()> {
    let err = db_err(path);
    if has_meta(conn).map_err(&err)? {
        return Ok(());
    }
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(&err)?;
    if tables > 0 {
        return Err(content_err(
            path,
            "not a tracemark ledger (an SQLite database with other tables)",
        ));
    }
    conn.execute_batch(
        "CREATE TABLE ledger_meta (format TEXT NOT NULL, key_id TEXT NOT NULL,
             head_count INTEGER NOT NULL, head_hash BLOB NOT NULL, head_mac BLOB NOT NULL);
         CREATE TABLE entries (seq INTEGER PRIMARY KEY, release_id TEXT NOT NULL,
             recipient TEXT NOT NULL, purpose TEXT, operator TEXT, created_ms INTEGER NOT NULL,
             key_id TEXT NOT NULL, input_path TEXT NOT NULL, input_sha256 TEXT NOT NULL,
             output_path TEXT NOT NULL, output_sha256 TEXT NOT NULL, format TEXT NOT NULL,
             bytes INTEGER NOT NULL, params TEXT NOT NULL, content BLOB NOT NULL,
             prev_hash BLOB NOT NULL,
             hash BLOB NOT NULL, mac BLOB NOT NULL);
         CREATE INDEX entries_release ON entries(release_id);",
    )
    .map_err(&err)?;
    let mac_key = prng::derive(key, &[b"tracemark/v1/ledger-mac"]);
    let head = head_mac(&mac_key, 0, &[0u8; 32]);
    conn.execute(
        "INSERT INTO ledger_meta VALUES (?1, ?2, 0, ?3, ?4)",
        params![FORMAT_TAG, key_id, [0u8; 32].to_vec(), head.to_vec()],
    )
    .map_err(&err)?;
    Ok(())
}

/// Runs `f` again while SQLite reports the database busy or locked, for up to 30 s.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The head record as stored: format, key id, row count, last hash, MAC.
type HeadRecord = (String, String, i64, Vec<u8>, Vec<u8>);

/// The head record as read.
enum HeadRead {
    Found(HeadRecord),
    Missing,
    /// Present but not as written (a wrong type, several records).
    Altered(String),
}

/// Where the rows are.
enum Db {
    Sqlite(Connection),
    Postgres(pg::Pg),
}

/// A read snapshot of either database (dropping it ends it).
#[allow(dead_code)] // held for its drop
enum Snapshot<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(pg::Snapshot<'a>),
}

/// One row about to be appended, built from the head it extends.
struct NewRow {
    entry: Entry,
    sealed: Vec<u8>,
    prev: [u8; 32],
    hash: [u8; 32],
    mac: [u8; 32],
    head_mac: [u8; 32],
}

impl NewRow {
    /// Something in the database that swallows or rewrites writes (a trigger): refuse.
    fn altered(&self, path: &Path, what: &str) -> Error {
        Error::LedgerBroken {
            path: path.into(),
            seq: self.entry.seq,
            why: format!("{what} (the database was altered)"),
        }
    }

    fn check_stored(&self, path: &Path, inserted: u64) -> Result<()> {
        if inserted != 1 {
            return Err(self.altered(path, "the row was not stored"));
        }
        Ok(())
    }

    fn check_head_moved(&self, path: &Path, updated: u64) -> Result<()> {
        if updated != 1 {
            return Err(self.altered(path, "the head record was not updated"));
        }
        Ok(())
    }

    /// The end of every append, whatever the database: the output moved into place
    /// (`persist`), then the `commit`. A commit that fails after `persist` succeeded is an
    /// error saying so: the caller removes the output.
    fn finish<E: std::fmt::Display>(
        self,
        path: &Path,
        persist: impl FnOnce() -> Result<()>,
        commit: impl FnOnce() -> std::result::Result<(), E>,
    ) -> Result<Entry> {
        persist()?;
        commit().map_err(|e| {
            content_err(
                path,
                format!("commit failed after the output was written: {e}"),
            )
        })?;
        Ok(self.entry)
    }
}

/// An open ledger.
pub struct Ledger {
    db: Db,
    path: std::path::PathBuf,
    mac_key: [u8; 32],
    /// Seals the content descriptors.
    content_key: [u8; 32],
    key_id: String,
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Ledger {
        path: path.into(),
        source,
    }
}

fn content_err(path: &Path, why: impl Into<String>) -> Error {
    Error::LedgerContent {
        path: path.into(),
        why: why.into(),
    }
}

/// A read-only connection that leaves the file byte for byte as it was: no journal-mode
/// switch, no `-wal`/`-shm` files. A ledger whose write-ahead log holds rows (a writer is
/// running, or one was killed) is read with that log, read-only; otherwise the file is
/// opened as immutable, which creates nothing beside it (an auditor's copy, write-once media).
fn connect_read_only(path: &Path) -> Result<Connection> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let live = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    let uri = format!(
        "file:{}?{}",
        uri_path(path),
        if live { "mode=ro" } else { "immutable=1" }
    );
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err(path))
}

/// A path percent-encoded for an SQLite URI (every byte but unreserved ones and '/').
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    abs.as_os_str()
        .as_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Ledger {
    /// Opens an existing ledger for reading, without changing the file in any way (no
    /// journal-mode switch, no `-wal`/`-shm` files beside it), and checks its schema and key. It is not yet verified: use
    /// [`Ledger::open_verified`] to read rows that will be trusted.
    ///
    /// # Errors
    /// A path where no file is, a file that is not a tracemark ledger, a ledger made with
    /// another key, a ledger whose database objects were changed ([`Error::LedgerBroken`]).
    pub fn open_read_only(path: &Path, key: &SecretKey) -> Result<Self> {
        if pg::is_url(path) {
            let shown = pg::redact(path);
            let db = pg::Pg::connect(path, &shown, true)?;
            if !db.has_meta(&shown)? {
                return Err(content_err(
                    &shown,
                    "not a tracemark ledger (no ledger tables)",
                ));
            }
            return Self::checked(Db::Postgres(db), &shown, key);
        }
        if !path.is_file() {
            return Err(content_err(path, "no ledger at this path"));
        }
        let conn = connect_read_only(path)?;
        if !has_meta(&conn)
            .map_err(|e| content_err(path, format!("not a tracemark ledger ({e})")))?
        {
            return Err(content_err(
                path,
                "not a tracemark ledger (no ledger tables)",
            ));
        }
        Self::checked(Db::Sqlite(conn), path, key)
    }

    /// Opens an existing ledger read-only (as [`Ledger::open_read_only`]) and verifies the
    /// whole chain and head before anything is read from it.
    ///
    /// # Errors
    /// As [`Ledger::open_read_only`], and [`Error::LedgerBroken`] naming the first bad row.
    pub fn open_verified(path: &Path, key: &SecretKey) -> Result<Self> {
        let ledger = Self::open_read_only(path, key)?;
        ledger.ensure_intact()?;
        Ok(ledger)
    }

    /// Opens (creating if absent) the ledger at `path` for `key`.
    ///
    /// # Errors
    /// A file that is not a tracemark ledger, a ledger made with another key, or a
    /// database error (read-only file, locked, corrupt).
    pub fn open(path: &Path, key: &SecretKey) -> Result<Self> {
        let key_id = key.key_id();
        if pg::is_url(path) {
            let shown = pg::redact(path);
            let db = pg::Pg::connect(path, &shown, false)?;
            if !db.has_meta(&shown)? {
                let mac_key = prng::derive(key, &[b"tracemark/v1/ledger-mac"]);
                db.create(
                    &shown,
                    (FORMAT_TAG, &key_id, head_mac(&mac_key, 0, &[0u8; 32])),
                )?;
            }
            return Self::checked(Db::Postgres(db), &shown, key);
        }
        let err = db_err(path);
        let conn = Connection::open(path).map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(&err)?;
        // Two processes opening a new ledger at once: switching to WAL and creating the
        // tables can report "locked" without waiting on the busy handler, so retry those.
        let _: String =
            retry_busy(|| conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)))
                .map_err(|e| content_err(path, format!("not a tracemark ledger ({e})")))?;
        if !retry_busy(|| has_meta(&conn)).map_err(&err)? {
            // Create under the write lock (taken up front, so a concurrent creator waits
            // and then finds the tables made).
            retry_busy(|| conn.execute_batch("BEGIN IMMEDIATE")).map_err(&err)?;
            let created = create_tables(&conn, path, key, &key_id);
            let end = if created.is_ok() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            conn.execute_batch(end).map_err(&err)?;
            created?;
        }
        Self::checked(Db::Sqlite(conn), path, key)
    }

    /// The checks every open makes: the format tag, the key (an edited key id in an
    /// otherwise authentic ledger is tampering, not another key), the database's objects.
    fn checked(db: Db, path: &Path, key: &SecretKey) -> Result<Self> {
        let key_id = key.key_id();
        let mac_key = prng::derive(key, &[b"tracemark/v1/ledger-mac"]);
        let broken = |seq: i64, why: &str| Error::LedgerBroken {
            path: path.into(),
            seq,
            why: why.into(),
        };
        let (format, stored_id, count, head, mac) = match db.head(path)? {
            HeadRead::Found(m) => m,
            HeadRead::Missing => return Err(broken(0, "the head record was deleted")),
            HeadRead::Altered(why) => {
                return Err(broken(0, &format!("the head record was altered ({why})")));
            }
        };
        if format == FORMAT_V1 {
            return Err(content_err(
                path,
                format!(
                    "written by an earlier tracemark (format '{FORMAT_V1}', without content descriptors); this version keeps '{FORMAT_TAG}': start a new ledger and keep the old one (and the version that wrote it) for its releases"
                ),
            ));
        }
        if format != FORMAT_TAG {
            return Err(content_err(
                path,
                format!("not a tracemark ledger (format '{format}')"),
            ));
        }
        if stored_id != key_id {
            let authentic = <[u8; 32]>::try_from(head.as_slice())
                .is_ok_and(|h| mac.as_slice() == head_mac(&mac_key, count, &h).as_slice());
            if authentic {
                return Err(broken(0, "the key id in the head record was edited"));
            }
            return Err(Error::WrongKey {
                path: path.into(),
                why: format!("ledger made with key id {stored_id}, not with this key ({key_id})"),
            });
        }
        let ledger = Ledger {
            db,
            path: path.into(),
            mac_key,
            content_key: prng::derive(key, &[b"tracemark/v2/ledger-content"]),
            key_id,
        };
        if let Some(why) = ledger.schema_problem()? {
            return Err(broken(0, &why));
        }
        Ok(ledger)
    }

    /// Checks that releases can be recorded: the file is writable and a write lock can be
    /// taken. Call it before any work, so that a read-only ledger fails up front.
    ///
    /// # Errors
    /// A read-only ledger (file mode, read-only medium) or a database error.
    pub fn check_writable(&self) -> Result<()> {
        let writable = match &self.db {
            Db::Sqlite(conn) => {
                !conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true)
                    && conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").is_ok()
            }
            Db::Postgres(pg) => pg.writable(),
        };
        if !writable {
            return Err(Error::Refused {
                path: self.path.clone(),
                why: "the ledger is read-only: releases cannot be recorded in it".into(),
            });
        }
        Ok(())
    }

    /// Appends one file of a release. `persist` runs inside the write transaction after the
    /// row is inserted and before the commit: move the finished output into place there.
    /// If `persist` fails, nothing is committed; if the commit fails after `persist`
    /// succeeded, the error says so and the caller must remove the output.
    ///
    /// # Errors
    /// Database errors, or the error of `persist`.
    pub fn append<F>(
        &mut self,
        release: &ReleaseMeta,
        file: &FileRecord,
        created_ms: i64,
        persist: F,
    ) -> Result<Entry>
    where
        F: FnOnce() -> Result<()>,
    {
        let sealed = self.seal(release.release_id, file);
        let make = |count: i64, prev: [u8; 32]| {
            let entry = Entry {
                seq: count + 1,
                release: release.clone(),
                created_ms,
                key_id: self.key_id.clone(),
                file: file.clone(),
            };
            let hash = row_hash(&entry, &prev);
            NewRow {
                mac: row_mac(&self.mac_key, &hash),
                head_mac: head_mac(&self.mac_key, entry.seq, &hash),
                entry,
                sealed,
                prev,
                hash,
            }
        };
        match &mut self.db {
            Db::Sqlite(conn) => sqlite_append(conn, &self.path, make, persist),
            Db::Postgres(pg) => pg.append(&self.path, make, persist),
        }
    }

    /// Every release row (audit rows left out: see [`Ledger::audit`]), in chain order.
    ///
    /// # Errors
    /// [`Error::LedgerBroken`] (rows are verified as they are read); database errors.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        Ok(self
            .trusted_rows()?
            .into_iter()
            .map(|r| r.entry)
            .filter(|e| !is_audit(e))
            .collect())
    }

    /// The rows of one release.
    ///
    /// # Errors
    /// [`Error::LedgerBroken`] (rows are verified as they are read); database errors.
    pub fn release(&self, id: u64) -> Result<Vec<Entry>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| e.release.release_id == id)
            .collect())
    }

    /// Every distinct release id, in order of first appearance.
    ///
    /// # Errors
    /// [`Error::LedgerBroken`] (rows are verified as they are read); database errors.
    pub fn release_ids(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for e in self.entries()? {
            if !ids.contains(&e.release.release_id) {
                ids.push(e.release.release_id);
            }
        }
        Ok(ids)
    }

    fn rows(&self) -> Result<Vec<Row>> {
        let rows = match &self.db {
            Db::Sqlite(conn) => sqlite_rows(conn, &self.path)?,
            Db::Postgres(pg) => pg.rows(&self.path)?,
        };
        Ok(rows
            .into_iter()
            .map(|mut row| {
                let sealed = std::mem::take(&mut row.entry.file.content);
                let stored = self.unseal(row.entry.release.release_id, &row.entry.file, sealed);
                (row.entry.file.content, row.entry.file.restore) =
                    FileRecord::split_content(stored);
                row
            })
            .collect())
    }

    /// The keystream that seals one row's content: keyed by the ledger key and the row's
    /// release, output path and input hash (so no two rows share one).
    fn content_stream(&self, release_id: u64, f: &FileRecord) -> rand_chacha::ChaCha20Rng {
        prng::stream(
            &SecretKey::from_bytes(self.content_key),
            &[
                &release_id.to_be_bytes(),
                f.output_path.as_bytes(),
                &[0],
                f.input_sha256.as_bytes(),
            ],
        )
    }

    fn seal(&self, release_id: u64, f: &FileRecord) -> Vec<u8> {
        let mut out = f.stored_content().into_owned();
        xor_stream(&mut self.content_stream(release_id, f), &mut out);
        out
    }

    fn unseal(&self, release_id: u64, f: &FileRecord, mut sealed: Vec<u8>) -> Vec<u8> {
        xor_stream(&mut self.content_stream(release_id, f), &mut sealed);
        sealed
    }
}

fn xor_stream(rng: &mut rand_chacha::ChaCha20Rng, bytes: &mut [u8]) {
    use rand::Rng;
    let mut block = [0u8; 64];
    for chunk in bytes.chunks_mut(64) {
        rng.fill_bytes(&mut block);
        chunk.iter_mut().zip(&block).for_each(|(b, k)| *b ^= k);
    }
}

impl Db {
    fn head(&self, path: &Path) -> Result<HeadRead> {
        let conn = match self {
            Db::Sqlite(conn) => conn,
            Db::Postgres(pg) => return pg.head(path),
        };
        let meta: rusqlite::Result<HeadRecord> = retry_busy(|| {
            conn.query_row(
                "SELECT format, key_id, head_count, head_hash, head_mac FROM ledger_meta",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
        });
        match meta {
            Ok(m) => Ok(HeadRead::Found(m)),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(HeadRead::Missing),
            Err(
                e @ (rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::FromSqlConversionFailure(..)),
            ) => Ok(HeadRead::Altered(e.to_string())),
            Err(e) => Err(content_err(path, format!("not a tracemark ledger ({e})"))),
        }
    }
}

/// [`Ledger::append`] in SQLite: one `BEGIN IMMEDIATE` transaction.
fn sqlite_append(
    conn: &mut Connection,
    path: &Path,
    make: impl FnOnce(i64, [u8; 32]) -> NewRow,
    persist: impl FnOnce() -> Result<()>,
) -> Result<Entry> {
    let err = db_err(path);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&err)?;
    let (count, prev): (i64, Vec<u8>) = tx
        .query_row("SELECT head_count, head_hash FROM ledger_meta", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(&err)?;
    let prev: [u8; 32] = prev
        .try_into()
        .map_err(|_| content_err(path, "corrupt head hash"))?;
    let row = make(count, prev);
    let r = &row.entry.release;
    let f = &row.entry.file;
    let inserted = tx
        .execute(
            "INSERT INTO entries VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            params![
                row.entry.seq,
                format!("{:016x}", r.release_id),
                r.recipient,
                r.purpose,
                r.operator,
                row.entry.created_ms,
                row.entry.key_id,
                f.input_path,
                f.input_sha256,
                f.output_path,
                f.output_sha256,
                f.format,
                f.bytes as i64,
                f.params,
                row.sealed,
                row.prev.to_vec(),
                row.hash.to_vec(),
                row.mac.to_vec()
            ],
        )
        .map_err(&err)?;
    row.check_stored(path, inserted as u64)?;
    let updated = tx
        .execute(
            "UPDATE ledger_meta SET head_count = ?1, head_hash = ?2, head_mac = ?3",
            params![row.entry.seq, row.hash.to_vec(), row.head_mac.to_vec()],
        )
        .map_err(&err)?;
    row.check_head_moved(path, updated as u64)?;
    row.finish(path, persist, || tx.commit())
}

/// Every row of an SQLite ledger, content still sealed.
fn sqlite_rows(conn: &Connection, path: &Path) -> Result<Vec<Row>> {
    let err = db_err(path);
    let mut st = conn
        .prepare("SELECT * FROM entries ORDER BY seq")
        .map_err(&err)?;
    st.query_map([], |r| {
        let id: String = r.get(1)?;
        Ok(Row {
            entry: Entry {
                seq: r.get(0)?,
                release: ReleaseMeta {
                    release_id: u64::from_str_radix(&id, 16).unwrap_or(u64::MAX),
                    recipient: r.get(2)?,
                    purpose: r.get(3)?,
                    operator: r.get(4)?,
                },
                created_ms: r.get(5)?,
                key_id: r.get(6)?,
                file: FileRecord {
                    input_path: r.get(7)?,
                    input_sha256: r.get(8)?,
                    output_path: r.get(9)?,
                    output_sha256: r.get(10)?,
                    format: r.get(11)?,
                    bytes: r.get::<_, i64>(12)? as u64,
                    params: r.get(13)?,
                    content: r.get(14)?,
                    restore: Vec::new(),
                },
            },
            release_hex: id,
            prev: r.get(15)?,
            hash: r.get(16)?,
            mac: r.get(17)?,
        })
    })
    .map_err(&err)?
    .collect::<rusqlite::Result<Vec<Row>>>()
    .map_err(&err)
}

struct Row {
    entry: Entry,
    release_hex: String,
    prev: Vec<u8>,
    hash: Vec<u8>,
    mac: Vec<u8>,
}

/// Hex SHA-256 of bytes (file hashes for [`FileRecord`]).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn meta(id: u64, who: &str) -> ReleaseMeta {
        ReleaseMeta {
            release_id: id,
            recipient: who.into(),
            purpose: Some("study".into()),
            operator: None,
        }
    }

    pub(super) fn file(n: u32) -> FileRecord {
        FileRecord {
            input_path: format!("in/{n}.png"),
            input_sha256: sha256_hex(&n.to_be_bytes()),
            output_path: format!("out/{n}.png"),
            output_sha256: sha256_hex(&(n + 1000).to_be_bytes()),
            format: "PNG".into(),
            bytes: 1000 + u64::from(n),
            params: r#"{"psnr_db":42}"#.into(),
            content: format!("descriptor of image {n}, long enough to look for").into_bytes(),
            // Every other row carries restore side data (sealed and chained with it).
            restore: if n.is_multiple_of(2) {
                format!("restore data of image {n}").into_bytes()
            } else {
                Vec::new()
            },
        }
    }

    fn filled(path: &Path, key: &SecretKey) {
        let mut l = Ledger::open(path, key).unwrap();
        for i in 0..5u32 {
            let who = if i < 3 { "Dr A" } else { "Dr B" };
            l.append(
                &meta(100 + u64::from(i / 3), who),
                &file(i),
                1_700_000_000_000 + i64::from(i),
                || Ok(()),
            )
            .unwrap();
        }
    }

    fn raw(path: &Path) -> Connection {
        Connection::open(path).unwrap()
    }

    #[test]
    fn intact_ledger_verifies_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.db");
        let key = SecretKey::from_bytes([1; 32]);
        filled(&p, &key);
        let l = Ledger::open(&p, &key).unwrap();
        assert_eq!(l.verify().unwrap(), Verification::Intact { rows: 5 });
        assert_eq!(l.release_ids().unwrap(), vec![100, 101]);
        assert_eq!(l.release(101).unwrap().len(), 2);
        // The key never reaches the database file, nor does a descriptor in the clear.
        let bytes = std::fs::read(&p).unwrap();
        assert!(!bytes.windows(32).any(|w| w == [1u8; 32]));
        assert!(!bytes.windows(13).any(|w| w == b"descriptor of"));
        assert_eq!(l.entries().unwrap()[2].file.content, file(2).content);
        assert_eq!(l.entries().unwrap()[2].file.restore, file(2).restore);
        assert_eq!(l.entries().unwrap()[1].file.restore, file(1).restore);
    }

    #[test]
    fn tampering_is_detected_and_the_row_named() {
        let key = SecretKey::from_bytes([2; 32]);
        let cases: [(&str, &str, i64); 5] = [
            (
                "edit the content descriptor",
                "UPDATE entries SET content = zeroblob(length(content)) WHERE seq = 4",
                4,
            ),
            (
                "edit recipient",
                "UPDATE entries SET recipient = 'Mallory' WHERE seq = 2",
                2,
            ),
            ("delete a row", "DELETE FROM entries WHERE seq = 3", 3),
            (
                "swap two rows",
                "UPDATE entries SET seq = -1 WHERE seq = 2; UPDATE entries SET seq = 2 WHERE seq = 4; UPDATE entries SET seq = 4 WHERE seq = -1",
                2,
            ),
            (
                "delete the newest row",
                "DELETE FROM entries WHERE seq = 5",
                5,
            ),
        ];
        for (name, sql, bad) in cases {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("l.db");
            filled(&p, &key);
            raw(&p).execute_batch(sql).unwrap();
            match Ledger::open(&p, &key).unwrap().verify().unwrap() {
                Verification::Broken { seq, .. } => assert_eq!(seq, bad, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn forged_appended_row_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.db");
        let key = SecretKey::from_bytes([3; 32]);
        filled(&p, &key);
        // A forger without the key copies the chain logic but must invent the MACs.
        let c = raw(&p);
        let prev: Vec<u8> = c
            .query_row("SELECT hash FROM entries WHERE seq = 5", [], |r| r.get(0))
            .unwrap();
        let e = Entry {
            seq: 6,
            release: meta(666, "Innocent"),
            created_ms: 1,
            key_id: key.key_id(),
            // Without the key a forger cannot seal content; an empty one seals to itself.
            file: FileRecord {
                content: Vec::new(),
                ..file(9)
            },
        };
        let hash = row_hash(&e, &prev.clone().try_into().unwrap());
        c.execute(
            "INSERT INTO entries VALUES (6, '000000000000029a', 'Innocent', 'study', NULL, 1, ?1, 'in/9.png', ?2, 'out/9.png', ?3, 'PNG', 1009, ?4, x'', ?5, ?6, ?7)",
            params![e.key_id, e.file.input_sha256, e.file.output_sha256, e.file.params, prev, hash.to_vec(), vec![0u8; 32]],
        )
        .unwrap();
        match Ledger::open(&p, &key).unwrap().verify().unwrap() {
            Verification::Broken { seq, why } => {
                assert!(seq == 6 && why.contains("authentication"), "{seq} {why}")
            }
            other => panic!("{other:?}"),
        }
        // Nor is it ever read as a release: rows are verified in the snapshot they are read
        // in (a row inserted after a reader's own verification is caught the same way).
        let reader = Ledger::open_read_only(&p, &key).unwrap();
        for read in [
            reader.entries().map(drop),
            reader.audit().map(drop),
            reader.chain_rows().map(drop),
        ] {
            assert!(
                matches!(read, Err(Error::LedgerBroken { seq: 6, .. })),
                "{read:?}"
            );
        }
    }

    #[test]
    fn other_key_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.db");
        filled(&p, &SecretKey::from_bytes([4; 32]));
        assert!(matches!(
            Ledger::open(&p, &SecretKey::from_bytes([5; 32])),
            Err(Error::WrongKey { .. })
        ));
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a database at all, just some words").unwrap();
        assert!(Ledger::open(&text, &SecretKey::from_bytes([4; 32])).is_err());
        let other = dir.path().join("other.db");
        raw(&other).execute_batch("CREATE TABLE t (x)").unwrap();
        let e = Ledger::open(&other, &SecretKey::from_bytes([4; 32]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a tracemark ledger"), "{e}");
    }

    #[test]
    fn failed_persist_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.db");
        let key = SecretKey::from_bytes([6; 32]);
        let mut l = Ledger::open(&p, &key).unwrap();
        let r = l.append(&meta(1, "x"), &file(1), 5, || {
            Err(Error::Payload("disk full".into()))
        });
        assert!(r.is_err());
        assert_eq!(l.entries().unwrap().len(), 0);
        assert_eq!(l.verify().unwrap(), Verification::Intact { rows: 0 });
    }

    /// Regression: several processes creating one new ledger at the same moment got
    /// "database is locked" (the WAL switch and the table creation do not wait on the busy
    /// handler). Threads with their own connections take the same file locks.
    #[test]
    fn writers_racing_to_create_a_new_ledger_all_succeed() {
        for round in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("l.db");
            let key = SecretKey::from_bytes([9; 32]);
            let barrier = std::sync::Barrier::new(6);
            std::thread::scope(|s| {
                for t in 0..6u32 {
                    let (p, key, barrier) = (&p, &key, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let mut l = Ledger::open(p, key)
                            .unwrap_or_else(|e| panic!("round {round}, writer {t}: {e}"));
                        l.check_writable().unwrap();
                        l.append(&meta(u64::from(t), "w"), &file(t), 0, || Ok(()))
                            .unwrap();
                    });
                }
            });
            let l = Ledger::open(&p, &key).unwrap();
            assert_eq!(l.verify().unwrap(), Verification::Intact { rows: 6 });
        }
    }

    #[test]
    fn two_writers_interleave_without_losing_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.db");
        let key = SecretKey::from_bytes([7; 32]);
        Ledger::open(&p, &key).unwrap();
        std::thread::scope(|s| {
            for t in 0..2u32 {
                let (p, key) = (&p, &key);
                s.spawn(move || {
                    let mut l = Ledger::open(p, key).unwrap();
                    for i in 0..25u32 {
                        l.append(&meta(u64::from(t), "w"), &file(t * 100 + i), 0, || Ok(()))
                            .unwrap();
                    }
                });
            }
        });
        let l = Ledger::open(&p, &key).unwrap();
        assert_eq!(l.verify().unwrap(), Verification::Intact { rows: 50 });
    }
}

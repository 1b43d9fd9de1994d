//! The chain: each row's hash covers its sequence number, the previous row's hash and every
//! field (length-prefixed), and is authenticated with an HMAC-like keyed derivation; a MAC'd
//! head record (row count, last hash) covers the end. [`Ledger::verify`] also checks that the
//! database holds exactly the ledger's tables, columns and index: a trigger, view or extra
//! table (which could drop or rewrite rows behind tracemark's back) is tampering.

use rusqlite::OptionalExtension;
use sha2::{Digest, Sha256};

use super::{Db, Entry, FORMAT_TAG, HeadRead, Ledger, Row, Snapshot, Verification, db_err};
use crate::error::{Error, Result};
use crate::key::SecretKey;

/// The database objects of a ledger: (type, name, table).
const OBJECTS: [(&str, &str, &str); 3] = [
    ("index", "entries_release", "entries"),
    ("table", "entries", "entries"),
    ("table", "ledger_meta", "ledger_meta"),
];

/// The columns of each table, in order.
const COLUMNS: [(&str, &[&str]); 2] = [
    (
        "ledger_meta",
        &["format", "key_id", "head_count", "head_hash", "head_mac"],
    ),
    (
        "entries",
        &[
            "seq",
            "release_id",
            "recipient",
            "purpose",
            "operator",
            "created_ms",
            "key_id",
            "input_path",
            "input_sha256",
            "output_path",
            "output_sha256",
            "format",
            "bytes",
            "params",
            "content",
            "prev_hash",
            "hash",
            "mac",
        ],
    ),
];

impl Ledger {
    /// A read transaction, unless one is already open: every read in it sees one state of
    /// the database. Without it, a writer in another process committing a row between the
    /// read of the rows and the read of the head made an intact ledger look truncated
    /// ("the head records 31 rows but 30 are present"; seen with two stamping processes).
    pub(super) fn snapshot(&self) -> Result<Option<Snapshot<'_>>> {
        match &self.db {
            Db::Sqlite(conn) => {
                if !conn.is_autocommit() {
                    return Ok(None);
                }
                conn.unchecked_transaction()
                    .map(|t| Some(Snapshot::Sqlite(t)))
                    .map_err(db_err(&self.path))
            }
            Db::Postgres(pg) => Ok(pg.snapshot(&self.path)?.map(Snapshot::Postgres)),
        }
    }

    /// What is wrong with the database's objects, if anything: anything but the ledger's
    /// two tables (with their columns) and one index.
    pub(super) fn schema_problem(&self) -> Result<Option<String>> {
        let conn = match &self.db {
            Db::Sqlite(conn) => conn,
            Db::Postgres(pg) => return pg.schema_problem(&self.path),
        };
        let err = db_err(&self.path);
        let mut st = conn
            .prepare("SELECT type, name, tbl_name FROM sqlite_master ORDER BY type, name")
            .map_err(&err)?;
        let objects: Vec<(String, String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(&err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&err)?;
        let expected: Vec<(String, String, String)> = OBJECTS
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        if objects != expected {
            let extra: Vec<String> = objects
                .iter()
                .filter(|o| !expected.contains(o))
                .map(|(t, n, _)| format!("{t} '{n}'"))
                .collect();
            let missing: Vec<String> = expected
                .iter()
                .filter(|o| !objects.contains(o))
                .map(|(t, n, _)| format!("{t} '{n}'"))
                .collect();
            return Ok(Some(format!(
                "the database's objects were changed (unexpected: {}; missing: {})",
                if extra.is_empty() {
                    "none".into()
                } else {
                    extra.join(", ")
                },
                if missing.is_empty() {
                    "none".into()
                } else {
                    missing.join(", ")
                }
            )));
        }
        for (table, columns) in COLUMNS {
            let mut st = conn
                .prepare(&format!("PRAGMA table_info({table})"))
                .map_err(&err)?;
            let names: Vec<String> = st
                .query_map([], |r| r.get(1))
                .map_err(&err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(&err)?;
            if names != columns {
                return Ok(Some(format!("the columns of table '{table}' were changed")));
            }
        }
        Ok(None)
    }

    /// The stored hash of row `seq`, if there is such a row.
    pub(super) fn stored_hash(&self, seq: i64) -> Result<Option<Vec<u8>>> {
        let conn = match &self.db {
            Db::Sqlite(conn) => conn,
            Db::Postgres(pg) => return pg.stored_hash(&self.path, seq),
        };
        conn.query_row("SELECT hash FROM entries WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .optional()
        .map_err(db_err(&self.path))
    }

    /// Verifies the ledger and turns a broken chain into an error, for commands that must
    /// not trust an altered ledger. Returns the number of rows.
    ///
    /// # Errors
    /// [`Error::LedgerBroken`] naming the first bad row; database errors.
    pub fn ensure_intact(&self) -> Result<i64> {
        match self.verify()? {
            Verification::Intact { rows } => Ok(rows),
            Verification::Broken { seq, why } => Err(Error::LedgerBroken {
                path: self.path.clone(),
                seq,
                why,
            }),
        }
    }

    /// Checks the whole chain and the head record.
    ///
    /// # Errors
    /// Database errors (a broken chain is an `Ok(Verification::Broken)`).
    pub fn verify(&self) -> Result<Verification> {
        Ok(self.read_verified()?.0)
    }

    /// Every row, read in the same snapshot as the chain and head that verify them: what a
    /// reader may trust. (Rows read after a separate verification could include rows that
    /// another connection wrote since, unchecked.)
    ///
    /// # Errors
    /// [`Error::LedgerBroken`] naming the first bad row; database errors.
    pub(super) fn trusted_rows(&self) -> Result<Vec<Row>> {
        match self.read_verified()? {
            (Verification::Intact { .. }, rows) => Ok(rows),
            (Verification::Broken { seq, why }, _) => Err(Error::LedgerBroken {
                path: self.path.clone(),
                seq,
                why,
            }),
        }
    }

    /// Reads every row in one snapshot and checks the chain and the head: the verdict, and
    /// the rows (to be trusted only when it is `Intact`).
    fn read_verified(&self) -> Result<(Verification, Vec<Row>)> {
        let _snapshot = self.snapshot()?;
        if let Some(why) = self.schema_problem()? {
            return Ok((Verification::Broken { seq: 0, why }, Vec::new()));
        }
        let rows = match self.rows() {
            Ok(rows) => rows,
            // A value of the wrong type in a column: written outside tracemark.
            Err(Error::Ledger {
                source:
                    rusqlite::Error::InvalidColumnType(..)
                    | rusqlite::Error::FromSqlConversionFailure(..)
                    | rusqlite::Error::IntegralValueOutOfRange(..),
                ..
            }) => {
                let why = "a row holds a value of the wrong type (written outside tracemark)";
                return Ok((
                    Verification::Broken {
                        seq: 1,
                        why: why.into(),
                    },
                    Vec::new(),
                ));
            }
            Err(e) => return Err(e),
        };
        let mut prev = [0u8; 32];
        for (expected_seq, row) in (1i64..).zip(&rows) {
            let e = &row.entry;
            let broken = |why: &str| {
                Ok((
                    Verification::Broken {
                        seq: e.seq,
                        why: why.into(),
                    },
                    Vec::new(),
                ))
            };
            if e.seq != expected_seq {
                let why = format!("row {expected_seq} is missing (next row is {})", e.seq);
                return Ok((
                    Verification::Broken {
                        seq: expected_seq,
                        why,
                    },
                    Vec::new(),
                ));
            }
            if row.release_hex != format!("{:016x}", e.release.release_id) {
                return broken("release id is not 16 hex digits");
            }
            if row.prev.as_slice() != prev.as_slice() {
                return broken(
                    "does not link to the previous row (rows removed, inserted or reordered)",
                );
            }
            let hash = row_hash(e, &prev);
            if row.hash.as_slice() != hash.as_slice() {
                return broken("contents do not match their hash (row edited)");
            }
            if row.mac.as_slice() != row_mac(&self.mac_key, &hash).as_slice() {
                return broken("authentication code is wrong (row forged without the key)");
            }
            prev = hash;
        }
        let (count, head, mac) = match self.db.head(&self.path)? {
            HeadRead::Found((_, _, count, head, mac)) => (count, head, mac),
            HeadRead::Missing | HeadRead::Altered(_) => Default::default(),
        };
        let n = rows.len() as i64;
        let head_ok = head.len() == 32
            && mac.as_slice()
                == head_mac(
                    &self.mac_key,
                    count,
                    head.as_slice().try_into().unwrap_or(&[0; 32]),
                )
                .as_slice();
        let why = if !head_ok {
            "head record is missing or not authentic".to_string()
        } else if count != n || head.as_slice() != prev.as_slice() {
            format!("the head records {count} rows but {n} are present (newest rows removed)")
        } else {
            return Ok((Verification::Intact { rows: n }, rows));
        };
        Ok((Verification::Broken { seq: n + 1, why }, Vec::new()))
    }
}

fn put(h: &mut Sha256, field: &[u8]) {
    h.update((field.len() as u64).to_be_bytes());
    h.update(field);
}

fn put_opt(h: &mut Sha256, field: &Option<String>) {
    match field {
        Some(s) => {
            h.update([1u8]);
            put(h, s.as_bytes());
        }
        None => h.update([0u8]),
    }
}

/// SHA-256 over the sequence number, the previous hash and every field, each
/// length-prefixed so that no two rows encode alike.
pub(super) fn row_hash(e: &Entry, prev: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    put(&mut h, FORMAT_TAG.as_bytes());
    h.update(e.seq.to_be_bytes());
    h.update(prev);
    h.update(e.release.release_id.to_be_bytes());
    put(&mut h, e.release.recipient.as_bytes());
    put_opt(&mut h, &e.release.purpose);
    put_opt(&mut h, &e.release.operator);
    h.update(e.created_ms.to_be_bytes());
    put(&mut h, e.key_id.as_bytes());
    let f = &e.file;
    for s in [
        &f.input_path,
        &f.input_sha256,
        &f.output_path,
        &f.output_sha256,
        &f.format,
        &f.params,
    ] {
        put(&mut h, s.as_bytes());
    }
    h.update(f.bytes.to_be_bytes());
    put(&mut h, &f.stored_content());
    h.finalize().into()
}

pub(super) fn row_mac(mac_key: &[u8; 32], hash: &[u8; 32]) -> [u8; 32] {
    crate::prng::derive(&SecretKey::from_bytes(*mac_key), &[b"row", hash])
}

pub(super) fn head_mac(mac_key: &[u8; 32], count: i64, hash: &[u8; 32]) -> [u8; 32] {
    crate::prng::derive(
        &SecretKey::from_bytes(*mac_key),
        &[b"head", &count.to_be_bytes(), hash],
    )
}

/// The hash of row `seq` of a verified ledger.
pub(super) fn row_hash_at(l: &Ledger, seq: i64) -> Result<Option<[u8; 32]>> {
    Ok(l.stored_hash(seq)?.and_then(|h| h.try_into().ok()))
}

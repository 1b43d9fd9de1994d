//! Moving a ledger between backends (SQLite file, PostgreSQL): `ledger export --chain` writes
//! every row (audit rows too) with its sealed content and chain fields as JSON Lines;
//! `ledger import` appends them to another ledger under the same key. The rows keep their
//! sequence numbers, times and key id, so the copy's chain is the original's hash for hash:
//! an anchor taken on one verifies on the other.
//!
//! Nothing in the file is trusted: every row's hash and MAC are checked under the key before
//! anything is written, so an edited, reordered or truncated-in-the-middle export is refused
//! whole. The import appends through [`Ledger::append`] (the same transaction as stamping);
//! an import cut short leaves a verified prefix, and the same import run again continues it.

use serde_json::{Value, json};

use super::chain::{row_hash, row_mac};
use super::{Entry, FileRecord, Ledger, ReleaseMeta, content_err};
use crate::error::Result;
use crate::key::{hex, parse_hex};

/// One row of a ledger with its chain fields, as exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRow {
    /// The row.
    pub entry: Entry,
    /// Its hash (the next row's `prev`).
    pub hash: [u8; 32],
    /// Its MAC.
    pub mac: [u8; 32],
}

impl ChainRow {
    /// The row as one JSON object: the release fields of `ledger export`, and `content`
    /// (sealed, hex), `prev_hash`, `hash`, `mac`.
    pub fn to_json(&self, ledger: &Ledger) -> Value {
        let e = &self.entry;
        json!({
            "seq": e.seq,
            "release_id": format!("{:016x}", e.release.release_id),
            "recipient": e.release.recipient,
            "purpose": e.release.purpose,
            "operator": e.release.operator,
            "created_ms": e.created_ms,
            "key_id": e.key_id,
            "input_path": e.file.input_path,
            "input_sha256": e.file.input_sha256,
            "output_path": e.file.output_path,
            "output_sha256": e.file.output_sha256,
            "format": e.file.format,
            "bytes": e.file.bytes,
            "params": e.file.params,
            "content": hex(&ledger.seal(e.release.release_id, &e.file)),
            "hash": hex(&self.hash),
            "mac": hex(&self.mac),
        })
    }

    /// Reads one exported row (`what` names it in errors, e.g. "line 3").
    ///
    /// # Errors
    /// A missing or malformed field.
    pub fn from_json(v: &Value, ledger: &Ledger, what: &str) -> Result<Self> {
        let bad =
            |field: &str| content_err(&ledger.path, format!("{what}: bad or missing '{field}'"));
        let text = |field: &str| {
            v[field]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(field))
        };
        let opt = |field: &str| match &v[field] {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(bad(field)),
        };
        let int = |field: &str| v[field].as_i64().ok_or_else(|| bad(field));
        let bytes32 = |field: &str| {
            parse_hex(&text(field)?)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| bad(field))
        };
        let id = text("release_id")?;
        let release_id = u64::from_str_radix(&id, 16)
            .ok()
            .filter(|_| id.len() == 16)
            .ok_or_else(|| bad("release_id"))?;
        let mut file = FileRecord {
            input_path: text("input_path")?,
            input_sha256: text("input_sha256")?,
            output_path: text("output_path")?,
            output_sha256: text("output_sha256")?,
            format: text("format")?,
            bytes: v["bytes"].as_u64().ok_or_else(|| bad("bytes"))?,
            params: text("params")?,
            content: Vec::new(),
            restore: Vec::new(),
        };
        let sealed = parse_hex(&text("content")?).ok_or_else(|| bad("content"))?;
        (file.content, file.restore) =
            FileRecord::split_content(ledger.unseal(release_id, &file, sealed));
        Ok(ChainRow {
            entry: Entry {
                seq: int("seq")?,
                release: ReleaseMeta {
                    release_id,
                    recipient: text("recipient")?,
                    purpose: opt("purpose")?,
                    operator: opt("operator")?,
                },
                created_ms: int("created_ms")?,
                key_id: text("key_id")?,
                file,
            },
            hash: bytes32("hash")?,
            mac: bytes32("mac")?,
        })
    }
}

impl Ledger {
    /// Every row (audit rows included) with its chain fields, of a ledger verified in the
    /// same snapshot.
    ///
    /// # Errors
    /// [`crate::Error::LedgerBroken`]; database errors.
    pub fn chain_rows(&self) -> Result<Vec<ChainRow>> {
        self.trusted_rows()?
            .into_iter()
            .map(|r| {
                let fixed = |b: Vec<u8>| {
                    <[u8; 32]>::try_from(b).map_err(|_| content_err(&self.path, "corrupt hash"))
                };
                Ok(ChainRow {
                    entry: r.entry,
                    hash: fixed(r.hash)?,
                    mac: fixed(r.mac)?,
                })
            })
            .collect()
    }

    /// Appends exported `rows` (all of a ledger's, in order) to this ledger, which must be
    /// empty or hold a prefix of them (an earlier import cut short). Every row's hash and MAC
    /// are checked under this ledger's key first; nothing is written unless all hold. Returns
    /// the number of rows appended.
    ///
    /// # Errors
    /// A row that does not chain or authenticate (edited export, another key), a ledger that
    /// holds other rows, database errors.
    pub fn import(&mut self, rows: &[ChainRow]) -> Result<usize> {
        let path = self.path.clone();
        let refuse = |why: String| content_err(&path, why);
        let mut prev = [0u8; 32];
        for (n, r) in (1i64..).zip(rows) {
            let e = &r.entry;
            if e.seq != n {
                return Err(refuse(format!(
                    "row {n} of the export is numbered {}",
                    e.seq
                )));
            }
            if e.key_id != self.key_id {
                return Err(refuse(format!(
                    "row {n} was recorded under key id {}, not this key's ({})",
                    e.key_id, self.key_id
                )));
            }
            let hash = row_hash(e, &prev);
            if hash != r.hash {
                return Err(refuse(format!(
                    "row {n} of the export does not match its hash (edited, or rows missing before it)"
                )));
            }
            if row_mac(&self.mac_key, &hash) != r.mac {
                return Err(refuse(format!(
                    "row {n} of the export is not authentic under this key"
                )));
            }
            prev = hash;
        }
        // What the ledger holds, verified in one read: it must be the start of the export.
        let held = self.chain_rows()?;
        let have = held.len();
        let prefix = rows
            .get(..have)
            .is_some_and(|start| start.iter().zip(&held).all(|(r, h)| r.hash == h.hash));
        if !prefix {
            return Err(refuse(format!(
                "the ledger already holds {have} rows that are not the start of this export: import into an empty ledger"
            )));
        }
        for r in &rows[have..] {
            let e = &r.entry;
            let added = self.append(&e.release, &e.file, e.created_ms, || Ok(()))?;
            if row_hash(&added, &r.prev_of(rows)) != r.hash {
                return Err(refuse(format!(
                    "row {} was appended after another writer's row: import into a ledger no one else writes to",
                    e.seq
                )));
            }
        }
        Ok(rows.len() - have)
    }
}

impl ChainRow {
    /// The hash this row links to in `rows` (zeros for the first).
    fn prev_of(&self, rows: &[ChainRow]) -> [u8; 32] {
        match self.entry.seq {
            1 => [0; 32],
            s => rows[s as usize - 2].hash,
        }
    }
}

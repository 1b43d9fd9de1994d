//! The PostgreSQL ledger (issue 15): the same tables, chain, MACs and checks as the SQLite
//! file, in one schema of a PostgreSQL database that every stamping site appends to.
//!
//! - **Appends** run in one transaction that first locks the head record (`SELECT ... FOR
//!   UPDATE`): appenders on any number of machines queue on that row lock, each sees the head
//!   its predecessor committed, and the chain stays one sequence. The output file is moved into
//!   place inside the transaction, before the commit, as with SQLite. A client killed at any
//!   point loses its connection, and the server rolls its open transaction back.
//! - **Reads** run in one `REPEATABLE READ READ ONLY` transaction (one state of the database),
//!   and a read-only open sets the whole session read-only: `ledger verify` writes nothing.
//! - **The schema** (the database's `current_schema()`) holds the ledger alone. Anything that
//!   could drop, hide or rewrite rows behind tracemark's back is tampering that `verify`
//!   names: another table, view or sequence in the schema, a trigger, rule or row-level
//!   security policy on the ledger's tables, a table inheriting from them, a changed column.
//!
//! Connections are made without TLS (the `postgres` crate's `NoTls`): reach a server on
//! another host through a private network, a VPN or an SSH tunnel (`sslmode=require` is
//! refused). A password may be given in the URL; tracemark never prints it (every message
//! shows the URL with the password replaced by `***`), and `TRACEMARK_LEDGER` keeps it off
//! the command line (and out of the process list).

use std::cell::{Cell, RefCell};
use std::path::Path;

use postgres::types::ToSql;
use postgres::{Client, NoTls};

use super::{Entry, FileRecord, HeadRead, NewRow, ReleaseMeta, Row, content_err};
use crate::error::{Error, Result};

/// Whether a ledger location names a PostgreSQL database.
pub fn is_url(location: &Path) -> bool {
    location
        .to_str()
        .is_some_and(|s| s.starts_with("postgresql://") || s.starts_with("postgres://"))
}

/// The location as it may be shown: the password in the URL (user info or a `password=`
/// parameter) replaced by `***`. Other locations are returned unchanged.
pub fn redact(location: &Path) -> std::path::PathBuf {
    let Some(url) = location.to_str().filter(|_| is_url(location)) else {
        return location.to_path_buf();
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((p, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{p}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}").into()
}

/// The objects of the ledger's schema: (relkind, name), sorted.
const RELATIONS: [(&str, &str); 4] = [
    ("i", "entries_pkey"),
    ("i", "entries_release"),
    ("r", "entries"),
    ("r", "ledger_meta"),
];

/// The columns of each table: (name, type), in order.
const COLUMNS: [(&str, &[(&str, &str)]); 2] = [
    (
        "ledger_meta",
        &[
            ("format", "text"),
            ("key_id", "text"),
            ("head_count", "bigint"),
            ("head_hash", "bytea"),
            ("head_mac", "bytea"),
        ],
    ),
    (
        "entries",
        &[
            ("seq", "bigint"),
            ("release_id", "text"),
            ("recipient", "text"),
            ("purpose", "text"),
            ("operator", "text"),
            ("created_ms", "bigint"),
            ("key_id", "text"),
            ("input_path", "text"),
            ("input_sha256", "text"),
            ("output_path", "text"),
            ("output_sha256", "text"),
            ("format", "text"),
            ("bytes", "bigint"),
            ("params", "text"),
            ("content", "bytea"),
            ("prev_hash", "bytea"),
            ("hash", "bytea"),
            ("mac", "bytea"),
        ],
    ),
];

const CREATE: &str = "CREATE TABLE ledger_meta (format TEXT NOT NULL, key_id TEXT NOT NULL,
         head_count BIGINT NOT NULL, head_hash BYTEA NOT NULL, head_mac BYTEA NOT NULL);
     CREATE TABLE entries (seq BIGINT PRIMARY KEY, release_id TEXT NOT NULL,
         recipient TEXT NOT NULL, purpose TEXT, operator TEXT, created_ms BIGINT NOT NULL,
         key_id TEXT NOT NULL, input_path TEXT NOT NULL, input_sha256 TEXT NOT NULL,
         output_path TEXT NOT NULL, output_sha256 TEXT NOT NULL, format TEXT NOT NULL,
         bytes BIGINT NOT NULL, params TEXT NOT NULL, content BYTEA NOT NULL,
         prev_hash BYTEA NOT NULL, hash BYTEA NOT NULL, mac BYTEA NOT NULL);
     CREATE INDEX entries_release ON entries(release_id);";

/// Whether the schema holds the head table. (Read from `pg_class` in the statement's
/// snapshot: `to_regclass` could miss a table that a concurrent creator had just committed.)
const HAS_META: &str = "SELECT EXISTS (SELECT 1 FROM pg_class c
     JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND c.relname = 'ledger_meta' AND c.relkind = 'r')";

/// Serialises creators of a ledger in one database (an arbitrary constant: "tracemark").
const CREATE_LOCK: i64 = 0x7472_6163_656d_6172;

/// A connection to a PostgreSQL ledger.
pub(super) struct Pg {
    client: RefCell<Client>,
    /// Inside a transaction (a read snapshot or an append).
    in_tx: Cell<bool>,
    read_only: bool,
}

fn err(path: &Path) -> impl Fn(postgres::Error) -> Error + '_ {
    move |source| Error::LedgerServer {
        path: path.into(),
        source: Box::new(source),
    }
}

impl Pg {
    /// Connects; a read-only connection can write nothing for its whole session.
    pub(super) fn connect(url: &Path, shown: &Path, read_only: bool) -> Result<Self> {
        let url = url.to_str().unwrap_or_default();
        let mut client = Client::connect(url, NoTls).map_err(err(shown))?;
        if read_only {
            client
                .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                .map_err(err(shown))?;
        }
        Ok(Pg {
            client: RefCell::new(client),
            in_tx: Cell::new(false),
            read_only,
        })
    }

    /// Whether the ledger's head table is in the schema.
    pub(super) fn has_meta(&self, path: &Path) -> Result<bool> {
        let row = self
            .client
            .borrow_mut()
            .query_one(HAS_META, &[])
            .map_err(err(path))?;
        Ok(row.get(0))
    }

    /// Creates the tables and the head record unless they exist (several creators at once:
    /// one creates, the others wait on the lock and find them made).
    pub(super) fn create(&self, path: &Path, head: (&str, &str, [u8; 32])) -> Result<()> {
        let mut c = self.client.borrow_mut();
        let mut tx = c.transaction().map_err(err(path))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATE_LOCK])
            .map_err(err(path))?;
        let exists: bool = tx.query_one(HAS_META, &[]).map_err(err(path))?.get(0);
        if exists {
            return Ok(());
        }
        let others: i64 = tx
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema()",
                &[],
            )
            .map_err(err(path))?
            .get(0);
        if others > 0 {
            return Err(content_err(
                path,
                "not a tracemark ledger (its schema holds other tables): use an empty database or schema",
            ));
        }
        tx.batch_execute(CREATE).map_err(err(path))?;
        let (format, key_id, mac) = head;
        tx.execute(
            "INSERT INTO ledger_meta VALUES ($1, $2, 0, $3, $4)",
            &[&format, &key_id, &vec![0u8; 32], &mac.to_vec()],
        )
        .map_err(err(path))?;
        tx.commit().map_err(err(path))
    }

    pub(super) fn head(&self, path: &Path) -> Result<HeadRead> {
        let rows = self
            .client
            .borrow_mut()
            .query(
                "SELECT format, key_id, head_count, head_hash, head_mac FROM ledger_meta",
                &[],
            )
            .map_err(err(path))?;
        match rows.as_slice() {
            [] => Ok(HeadRead::Missing),
            [r] => Ok(HeadRead::Found((
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
            ))),
            _ => Ok(HeadRead::Altered(format!(
                "{} head records instead of one",
                rows.len()
            ))),
        }
    }

    /// What is wrong with the schema's objects, if anything.
    pub(super) fn schema_problem(&self, path: &Path) -> Result<Option<String>> {
        let mut c = self.client.borrow_mut();
        let e = err(path);
        let found: Vec<(String, String)> = c
            .query(
                "SELECT c.relkind::text, c.relname::text FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() ORDER BY 1, 2",
                &[],
            )
            .map_err(&e)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let expected: Vec<(String, String)> = RELATIONS
            .iter()
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .collect();
        if found != expected {
            let kind = |k: &str| match k {
                "r" => "table",
                "i" => "index",
                "v" => "view",
                "m" => "materialized view",
                "S" => "sequence",
                "p" => "partitioned table",
                "f" => "foreign table",
                _ => "object",
            };
            let list = |a: &[(String, String)], b: &[(String, String)]| {
                let v: Vec<String> = a
                    .iter()
                    .filter(|o| !b.contains(o))
                    .map(|(k, n)| format!("{} '{n}'", kind(k)))
                    .collect();
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            return Ok(Some(format!(
                "the database's objects were changed (unexpected: {}; missing: {})",
                list(&found, &expected),
                list(&expected, &found)
            )));
        }
        // What acts on the ledger's tables from anywhere: triggers, rules, row security,
        // tables inheriting from them.
        let hooks: Vec<String> = c
            .query(
                "SELECT 'trigger ''' || tgname || '''' FROM pg_trigger
                     WHERE tgrelid IN ('entries'::regclass, 'ledger_meta'::regclass)
                     AND NOT tgisinternal
                 UNION ALL SELECT 'rule ''' || rulename || '''' FROM pg_rewrite
                     WHERE ev_class IN ('entries'::regclass, 'ledger_meta'::regclass)
                 UNION ALL SELECT 'row security policy ''' || polname || '''' FROM pg_policy
                     WHERE polrelid IN ('entries'::regclass, 'ledger_meta'::regclass)
                 UNION ALL SELECT 'row-level security on ' || relname FROM pg_class
                     WHERE oid IN ('entries'::regclass, 'ledger_meta'::regclass)
                     AND relrowsecurity
                 UNION ALL SELECT 'a table inheriting from ' || inhparent::regclass::text
                     FROM pg_inherits
                     WHERE inhparent IN ('entries'::regclass, 'ledger_meta'::regclass)
                 ORDER BY 1",
                &[],
            )
            .map_err(&e)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !hooks.is_empty() {
            return Ok(Some(format!(
                "the database's objects were changed ({})",
                hooks.join(", ")
            )));
        }
        for (table, columns) in COLUMNS {
            let found: Vec<(String, String)> = c
                .query(
                    "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
                     WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                     ORDER BY attnum",
                    &[&table],
                )
                .map_err(&e)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let same = found.len() == columns.len()
                && found
                    .iter()
                    .zip(columns)
                    .all(|(f, c)| f.0 == c.0 && f.1 == c.1);
            if !same {
                return Ok(Some(format!("the columns of table '{table}' were changed")));
            }
        }
        Ok(None)
    }

    pub(super) fn rows(&self, path: &Path) -> Result<Vec<Row>> {
        let rows = self
            .client
            .borrow_mut()
            .query(
                "SELECT seq, release_id, recipient, purpose, operator, created_ms, key_id,
                     input_path, input_sha256, output_path, output_sha256, format, bytes,
                     params, content, prev_hash, hash, mac
                 FROM entries ORDER BY seq",
                &[],
            )
            .map_err(err(path))?;
        Ok(rows
            .iter()
            .map(|r| {
                let id: String = r.get(1);
                Row {
                    entry: Entry {
                        seq: r.get(0),
                        release: ReleaseMeta {
                            release_id: u64::from_str_radix(&id, 16).unwrap_or(u64::MAX),
                            recipient: r.get(2),
                            purpose: r.get(3),
                            operator: r.get(4),
                        },
                        created_ms: r.get(5),
                        key_id: r.get(6),
                        file: FileRecord {
                            input_path: r.get(7),
                            input_sha256: r.get(8),
                            output_path: r.get(9),
                            output_sha256: r.get(10),
                            format: r.get(11),
                            bytes: r.get::<_, i64>(12) as u64,
                            params: r.get(13),
                            content: r.get(14),
                            restore: Vec::new(),
                        },
                    },
                    release_hex: id,
                    prev: r.get(15),
                    hash: r.get(16),
                    mac: r.get(17),
                }
            })
            .collect())
    }

    pub(super) fn stored_hash(&self, path: &Path, seq: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .client
            .borrow_mut()
            .query_opt("SELECT hash FROM entries WHERE seq = $1", &[&seq])
            .map_err(err(path))?
            .map(|r| r.get(0)))
    }

    /// Starts a read snapshot unless a transaction is open; the guard ends it.
    pub(super) fn snapshot(&self, path: &Path) -> Result<Option<Snapshot<'_>>> {
        if self.in_tx.get() {
            return Ok(None);
        }
        self.client
            .borrow_mut()
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .map_err(err(path))?;
        self.in_tx.set(true);
        Ok(Some(Snapshot(self)))
    }

    /// Whether this connection may append: not opened read-only, and the role may insert
    /// rows and update the head.
    pub(super) fn writable(&self) -> bool {
        !self.read_only
            && self
                .client
                .borrow_mut()
                .query_one(
                    "SELECT has_table_privilege('entries', 'INSERT')
                         AND has_table_privilege('ledger_meta', 'UPDATE')
                         AND NOT pg_is_in_recovery()",
                    &[],
                )
                .is_ok_and(|r| r.get(0))
    }

    /// One append: lock the head, insert the row `make` builds from it, move the head,
    /// `persist`, commit.
    pub(super) fn append(
        &self,
        path: &Path,
        make: impl FnOnce(i64, [u8; 32]) -> NewRow,
        persist: impl FnOnce() -> Result<()>,
    ) -> Result<Entry> {
        let e = err(path);
        let mut c = self.client.borrow_mut();
        let mut tx = c.transaction().map_err(&e)?;
        let head = tx
            .query_one(
                "SELECT head_count, head_hash FROM ledger_meta FOR UPDATE",
                &[],
            )
            .map_err(&e)?;
        let prev: Vec<u8> = head.get(1);
        let prev: [u8; 32] = prev
            .try_into()
            .map_err(|_| content_err(path, "corrupt head hash"))?;
        let row = make(head.get(0), prev);
        let (en, r, f) = (&row.entry, &row.entry.release, &row.entry.file);
        let release_hex = format!("{:016x}", r.release_id);
        let bytes = f.bytes as i64;
        let (prev, hash, mac) = (row.prev.to_vec(), row.hash.to_vec(), row.mac.to_vec());
        let values: [&(dyn ToSql + Sync); 18] = [
            &en.seq,
            &release_hex,
            &r.recipient,
            &r.purpose,
            &r.operator,
            &en.created_ms,
            &en.key_id,
            &f.input_path,
            &f.input_sha256,
            &f.output_path,
            &f.output_sha256,
            &f.format,
            &bytes,
            &f.params,
            &row.sealed,
            &prev,
            &hash,
            &mac,
        ];
        let inserted = tx
            .execute(
                "INSERT INTO entries VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                &values,
            )
            .map_err(&e)?;
        row.check_stored(path, inserted)?;
        let updated = tx
            .execute(
                "UPDATE ledger_meta SET head_count = $1, head_hash = $2, head_mac = $3",
                &[&en.seq, &hash, &row.head_mac.to_vec()],
            )
            .map_err(&e)?;
        row.check_head_moved(path, updated)?;
        row.finish(path, persist, || tx.commit())
    }
}

/// A database of its own on a PostgreSQL server, for one test or benchmark run: created
/// through `admin` (the URL of a database whose user may create databases), dropped (with
/// its connections) when this is dropped. Not for production use.
#[doc(hidden)]
pub struct ScratchDatabase {
    admin: String,
    name: String,
    /// The new database's URL (the admin URL with the database name replaced).
    pub url: std::path::PathBuf,
}

impl ScratchDatabase {
    /// Creates database `<prefix>_<process id>_<n>`.
    ///
    /// # Errors
    /// A connection or SQL error (as text: for tests and benchmarks).
    pub fn create(admin: &str, prefix: &str) -> std::result::Result<Self, String> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}_{}_{n}", std::process::id());
        Client::connect(admin, NoTls)
            .and_then(|mut c| c.batch_execute(&format!("CREATE DATABASE {name}")))
            .map_err(|e| format!("{}: {e}", redact(Path::new(admin)).display()))?;
        let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
        let base = &base[..base.rfind('/').ok_or("no database in the URL")?];
        let url = match query {
            "" => format!("{base}/{name}"),
            q => format!("{base}/{name}?{q}"),
        };
        Ok(ScratchDatabase {
            admin: admin.to_string(),
            name,
            url: url.into(),
        })
    }

    /// For tests: a scratch database on the server named by `TRACEMARK_TEST_POSTGRES`, or
    /// `None` (the test then passes, saying it was skipped) when the variable is unset.
    ///
    /// # Panics
    /// When `TRACEMARK_REQUIRE_POSTGRES` is set but no server is named (CI), or the server
    /// refuses.
    pub fn for_test(prefix: &str) -> Option<Self> {
        let Ok(admin) = std::env::var("TRACEMARK_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("TRACEMARK_REQUIRE_POSTGRES").is_none(),
                "TRACEMARK_REQUIRE_POSTGRES is set but TRACEMARK_TEST_POSTGRES is not"
            );
            eprintln!("skipped: no TRACEMARK_TEST_POSTGRES (scripts/postgres.sh starts a server)");
            return None;
        };
        Some(Self::create(&admin, prefix).expect("the test server"))
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new connection to it.
    ///
    /// # Panics
    /// When the server refuses (for tests).
    pub fn client(&self) -> Client {
        Client::connect(self.url.to_str().unwrap_or_default(), NoTls).expect("the test server")
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = Client::connect(&self.admin, NoTls).map(|mut c| c.batch_execute(&drop));
    }
}

/// An open read snapshot; committed (it wrote nothing) when dropped.
pub(super) struct Snapshot<'a>(&'a Pg);

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        let _ = self.0.client.borrow_mut().batch_execute("COMMIT");
        self.0.in_tx.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_and_passwords_never_shown() {
        assert!(is_url(Path::new("postgresql://u@h/db")));
        assert!(is_url(Path::new("postgres://h/db")));
        assert!(!is_url(Path::new("releases.db")));
        assert!(!is_url(Path::new("./postgresql://x")));
        for (url, shown) in [
            (
                "postgresql://u:s3cret@h:5432/db",
                "postgresql://u:***@h:5432/db",
            ),
            (
                "postgres://u@h/db?password=s3cret&application_name=x",
                "postgres://u@h/db?password=***&application_name=x",
            ),
            ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
            ("postgresql://h/db", "postgresql://h/db"),
            ("releases.db", "releases.db"),
        ] {
            let r = redact(Path::new(url));
            assert_eq!(r, Path::new(shown), "{url}");
            assert!(!r.to_string_lossy().contains("s3cret"));
        }
    }
}

//! The PostgreSQL ledger against a real server: the URL of a database the tests may create
//! databases in comes from `TRACEMARK_TEST_POSTGRES` (`.ci/run` starts one with
//! `scripts/postgres.sh`). Without it these tests say so and pass, unless
//! `TRACEMARK_REQUIRE_POSTGRES` is set (as in CI), where they fail.

use std::path::Path;

use super::tests::{file, meta};
use super::*;

/// A fresh database on the test server (`None`: skipped).
fn test_db() -> Option<ScratchDatabase> {
    ScratchDatabase::for_test("tm_lib")
}

impl ScratchDatabase {
    fn sql(&self, sql: &str) {
        self.client().batch_execute(sql).unwrap();
    }
}

fn fill(at: &Path, key: &SecretKey, n: u32) {
    let mut l = Ledger::open(at, key).unwrap();
    for i in 0..n {
        l.append(
            &meta(100 + u64::from(i / 3), if i < 3 { "Dr A" } else { "Dr B" }),
            &file(i),
            1_700_000_000_000 + i64::from(i),
            || Ok(()),
        )
        .unwrap();
    }
}

fn verdict(at: &Path, key: &SecretKey) -> Verification {
    match Ledger::open_read_only(at, key) {
        Ok(l) => l.verify().unwrap(),
        Err(Error::LedgerBroken { seq, why, .. }) => Verification::Broken { seq, why },
        Err(e) => panic!("{e}"),
    }
}

const KEY: [u8; 32] = [7; 32];

#[test]
fn a_postgres_ledger_records_reads_and_verifies_like_the_file() {
    let Some(db) = test_db() else { return };
    let key = SecretKey::from_bytes(KEY);
    fill(&db.url, &key, 5);
    let l = Ledger::open_verified(&db.url, &key).unwrap();
    assert_eq!(l.verify().unwrap(), Verification::Intact { rows: 5 });
    assert_eq!(l.release_ids().unwrap(), vec![100, 101]);
    let rows = l.release(100).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2].file, file(2), "content and restore data round-trip");
    // The same rows in an SQLite file hash alike: the chain does not depend on the backend.
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("l.db");
    fill(&sqlite, &key, 5);
    let f = Ledger::open_verified(&sqlite, &key).unwrap();
    assert_eq!(
        f.anchor(1).unwrap().hash,
        l.anchor(1).unwrap().hash,
        "same rows, same head hash"
    );
    // A read-only open writes nothing, and says so up front.
    let mut ro = Ledger::open_read_only(&db.url, &key).unwrap();
    assert!(ro.check_writable().is_err());
    assert!(ro.append(&meta(9, "x"), &file(9), 0, || Ok(())).is_err());
    assert_eq!(l.verify().unwrap(), Verification::Intact { rows: 5 });
    // Another key is refused, not "broken".
    let other = SecretKey::from_bytes([8; 32]);
    assert!(matches!(
        Ledger::open(&db.url, &other),
        Err(Error::WrongKey { .. })
    ));
}

#[test]
fn tampering_through_sql_is_caught() {
    let Some(db) = test_db() else { return };
    let key = SecretKey::from_bytes(KEY);
    fill(&db.url, &key, 5);
    let anchor = Ledger::open_verified(&db.url, &key)
        .unwrap()
        .anchor(1)
        .unwrap();
    // Each: the SQL an attacker with database access runs, the row named, the reason.
    let cases: [(&str, i64, &str); 10] = [
        (
            "UPDATE entries SET recipient = 'Dr Z' WHERE seq = 2",
            2,
            "row edited",
        ),
        ("DELETE FROM entries WHERE seq = 3", 3, "missing"),
        ("DELETE FROM entries WHERE seq = 5", 5, "newest rows removed"),
        (
            "UPDATE entries SET seq = 9 WHERE seq = 2; UPDATE entries SET seq = 2 WHERE seq = 4; UPDATE entries SET seq = 4 WHERE seq = 9",
            2,
            "does not link",
        ),
        (
            "UPDATE ledger_meta SET head_count = 4",
            6,
            "not authentic",
        ),
        (
            "CREATE FUNCTION drop_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
             CREATE TRIGGER swallow BEFORE INSERT ON entries FOR EACH ROW EXECUTE FUNCTION drop_rows()",
            0,
            "trigger 'swallow'",
        ),
        (
            "CREATE RULE quiet AS ON INSERT TO entries DO INSTEAD NOTHING",
            0,
            "rule 'quiet'",
        ),
        (
            "ALTER TABLE entries ENABLE ROW LEVEL SECURITY;
             CREATE POLICY hide ON entries USING (recipient <> 'Dr B')",
            0,
            "row security policy 'hide'",
        ),
        (
            "CREATE VIEW entries_v AS SELECT * FROM entries",
            0,
            "unexpected: view 'entries_v'",
        ),
        (
            "ALTER TABLE entries ALTER COLUMN bytes TYPE numeric",
            0,
            "columns of table 'entries'",
        ),
    ];
    for (sql, seq, why) in cases {
        let case = test_db().unwrap();
        fill(&case.url, &key, 5);
        case.sql(sql);
        match verdict(&case.url, &key) {
            Verification::Broken { seq: s, why: w } => {
                assert_eq!(s, seq, "{sql}: {w}");
                assert!(w.contains(why), "{sql}: {w}");
            }
            v => panic!("{sql}: not caught ({v:?})"),
        }
        // Nothing is stamped into it either.
        if seq == 0 {
            let appended = Ledger::open(&case.url, &key).and_then(|mut l| {
                l.ensure_intact()?;
                l.append(&meta(7, "x"), &file(7), 0, || Ok(()))
            });
            assert!(appended.is_err(), "{sql}: appended");
        }
    }
    // A rollback to an earlier, self-consistent state is caught by the anchor kept outside.
    db.sql("DELETE FROM entries WHERE seq = 5");
    let mut c = db.client();
    let h: Vec<u8> = c
        .query_one("SELECT hash FROM entries WHERE seq = 4", &[])
        .unwrap()
        .get(0);
    let mac_key = prng::derive(&key, &[b"tracemark/v1/ledger-mac"]);
    let forged_head = head_mac(&mac_key, 4, &h.clone().try_into().unwrap());
    // (The attacker cannot compute that MAC without the key; here the test plays a holder of
    // the key who rolls back, which only an anchor catches.)
    c.execute(
        "UPDATE ledger_meta SET head_count = 4, head_hash = $1, head_mac = $2",
        &[&h, &forged_head.to_vec()],
    )
    .unwrap();
    let l = Ledger::open_read_only(&db.url, &key).unwrap();
    assert_eq!(l.verify().unwrap(), Verification::Intact { rows: 4 });
    assert!(matches!(
        l.verify_against(&anchor).unwrap(),
        Verification::Broken { seq: 5, .. }
    ));
}

#[test]
fn writers_on_many_connections_append_one_chain() {
    let Some(db) = test_db() else { return };
    let key = SecretKey::from_bytes(KEY);
    // Every writer opens (and so races to create) the ledger itself.
    std::thread::scope(|s| {
        for w in 0..4u32 {
            let (url, key) = (&db.url, &key);
            s.spawn(move || {
                let mut l = Ledger::open(url, key).unwrap();
                for i in 0..25u32 {
                    let n = w * 100 + i;
                    l.append(
                        &meta(u64::from(w), &format!("Dr {w}")),
                        &file(n),
                        i64::from(n),
                        || Ok(()),
                    )
                    .unwrap();
                }
            });
        }
    });
    let l = Ledger::open_verified(&db.url, &key).unwrap();
    assert_eq!(l.verify().unwrap(), Verification::Intact { rows: 100 });
    let mut outputs: Vec<String> = l
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.file.output_path)
        .collect();
    outputs.sort();
    outputs.dedup();
    assert_eq!(outputs.len(), 100, "every append is one row");
}

#[test]
fn a_failed_persist_commits_nothing_and_frees_the_lock() {
    let Some(db) = test_db() else { return };
    let key = SecretKey::from_bytes(KEY);
    fill(&db.url, &key, 2);
    let mut l = Ledger::open(&db.url, &key).unwrap();
    let failed = l.append(&meta(5, "x"), &file(5), 0, || {
        Err(Error::Refused {
            path: "out".into(),
            why: "disk full".into(),
        })
    });
    assert!(failed.is_err());
    // Another connection appends at once (the head lock was released).
    let mut other = Ledger::open(&db.url, &key).unwrap();
    other.append(&meta(6, "y"), &file(6), 0, || Ok(())).unwrap();
    assert_eq!(
        Ledger::open_verified(&db.url, &key)
            .unwrap()
            .verify()
            .unwrap(),
        Verification::Intact { rows: 3 }
    );
}

#[test]
fn export_of_one_backend_imports_into_the_other_and_verifies() {
    let Some(db) = test_db() else { return };
    let key = SecretKey::from_bytes(KEY);
    let dir = tempfile::tempdir().unwrap();
    let file_ledger = dir.path().join("site.db");
    fill(&file_ledger, &key, 6);
    let mut src = Ledger::open(&file_ledger, &key).unwrap();
    src.append_audit(
        &Audit {
            action: "examine".into(),
            operator: Some("inv".into()),
            subject: "leak.png".into(),
            sha256: String::new(),
            bytes: 0,
            verdict: "marked".into(),
            named: Vec::new(),
            detail: serde_json::Value::Null,
        },
        5,
    )
    .unwrap();
    let anchor = src.anchor(9).unwrap();
    // SQLite -> PostgreSQL, through the JSON Lines text.
    let lines: Vec<String> = src
        .chain_rows()
        .unwrap()
        .iter()
        .map(|r| r.to_json(&src).to_string())
        .collect();
    assert_eq!(lines.len(), 7, "audit rows travel too");
    let mut pg = Ledger::open(&db.url, &key).unwrap();
    let parsed: Vec<ChainRow> = lines
        .iter()
        .map(|l| ChainRow::from_json(&serde_json::from_str(l).unwrap(), &pg, "line").unwrap())
        .collect();
    // An edited line is refused before anything is written.
    let mut edited = parsed.clone();
    edited[3].entry.release.recipient = "Dr Z".into();
    assert!(pg.import(&edited).is_err());
    assert_eq!(pg.verify().unwrap(), Verification::Intact { rows: 0 });
    // Cut short after 4 rows, then run again: continued, not duplicated.
    assert_eq!(pg.import(&parsed[..4]).unwrap(), 4);
    assert_eq!(pg.import(&parsed).unwrap(), 3);
    assert_eq!(
        pg.verify_against(&anchor).unwrap(),
        Verification::Intact { rows: 7 }
    );
    assert_eq!(pg.audit().unwrap().len(), 1);
    assert_eq!(pg.entries().unwrap(), src.entries().unwrap());
    // ... and back into a new file.
    let back = dir.path().join("back.db");
    let mut b = Ledger::open(&back, &key).unwrap();
    assert_eq!(b.import(&pg.chain_rows().unwrap()).unwrap(), 7);
    assert_eq!(
        b.verify_against(&anchor).unwrap(),
        Verification::Intact { rows: 7 }
    );
    // A ledger holding other rows is not merged into.
    assert_eq!(
        src.import(&pg.chain_rows().unwrap()).unwrap(),
        0,
        "rows it holds"
    );
    let mut other = Ledger::open(&dir.path().join("other.db"), &key).unwrap();
    other
        .append(&meta(1, "q"), &file(40), 0, || Ok(()))
        .unwrap();
    assert!(other.import(&parsed).is_err());
}

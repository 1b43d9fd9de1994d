//! Issue 10, findings 7-10: a ledger is verified before it is trusted, every kind of
//! tampering exits 1, reading never changes the file, and an anchor kept outside the ledger
//! catches what a self-consistent chain cannot (rollback, truncation, substitution).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{Env, ledger_cmd, stamp_for, testdata};

/// A ledger with two releases (Dr A: camera; Dr B: coffee) and the outputs.
fn two_releases(env: &Env, name: &str) -> (PathBuf, PathBuf) {
    let ledger = env.path(name);
    let a = env.path(&format!("{name}-a.png"));
    let b = env.path(&format!("{name}-b.png"));
    assert!(
        stamp_for(env, &ledger, "Dr A", &testdata("camera.png"), &a)
            .status
            .success()
    );
    assert!(
        stamp_for(env, &ledger, "Dr B", &testdata("coffee.png"), &b)
            .status
            .success()
    );
    (ledger, a)
}

fn sql(ledger: &Path, statements: &str) {
    let c = rusqlite::Connection::open(ledger).unwrap();
    c.execute_batch(statements).unwrap();
}

/// `tracemark-detect --key --ledger`, with `extra` options, on `input`.
fn detect(env: &Env, ledger: &Path, extra: &[&std::ffi::OsStr], input: &Path) -> Output {
    Command::new(crate::batch::detect_bin())
        .arg("--key")
        .arg(&env.key)
        .arg("--ledger")
        .arg(ledger)
        .args(extra)
        .arg(input)
        .output()
        .unwrap()
}

fn head(env: &Env, ledger: &Path) -> String {
    let o = ledger_cmd(env, ledger, &["head"]);
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn verify_anchor(env: &Env, ledger: &Path, anchor: &str) -> Output {
    ledger_cmd(env, ledger, &["verify", "--anchor", anchor])
}

/// Finding 7: an SQL edit of the recipient was trusted by detect, list and show.
#[test]
fn readers_refuse_an_edited_ledger_with_exit_1() {
    let env = Env::new();
    let (ledger, a) = two_releases(&env, "l.db");
    sql(
        &ledger,
        "UPDATE entries SET recipient = 'Mallory' WHERE seq = 1",
    );
    let o = detect(&env, &ledger, &[], &a);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("row 1") && !String::from_utf8_lossy(&o.stdout).contains("Mallory"));
    for action in [
        &["list"][..],
        &["export"],
        &["show", "0000000000000000"],
        &["head"],
    ] {
        let o = ledger_cmd(&env, &ledger, action);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{action:?}: {err}");
        assert!(err.contains("row 1") && err.lines().count() == 1, "{err}");
        assert!(!String::from_utf8_lossy(&o.stdout).contains("Mallory"));
    }
}

/// Findings 8 and 9: objects added to the database, a view in place of the entries, the head
/// record deleted, the key id edited, a row of another type: each is exit 1, naming it.
#[test]
fn every_kind_of_tampering_is_exit_1() {
    let env = Env::new();
    let cases: [(&str, &str); 8] = [
        (
            "trigger",
            "CREATE TRIGGER t BEFORE INSERT ON entries BEGIN SELECT RAISE(IGNORE); END;",
        ),
        ("view", "CREATE VIEW v AS SELECT * FROM entries;"),
        ("table", "CREATE TABLE notes (x);"),
        (
            "view in place of entries",
            "ALTER TABLE entries RENAME TO e2; CREATE VIEW entries AS SELECT * FROM e2;",
        ),
        ("head deleted", "DELETE FROM ledger_meta;"),
        (
            "key id edited",
            "UPDATE ledger_meta SET key_id = '0011223344556677';",
        ),
        (
            "row type",
            "UPDATE entries SET bytes = 'many' WHERE seq = 2;",
        ),
        ("index dropped", "DROP INDEX entries_release;"),
    ];
    for (what, statements) in cases {
        let (ledger, _) = two_releases(&env, &format!("{}.db", what.replace(' ', "-")));
        sql(&ledger, statements);
        let o = ledger_cmd(&env, &ledger, &["verify"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.status.code(), Some(1), "{what}: {text}");
        assert!(
            text.contains("BROKEN") || text.contains("broken"),
            "{what}: {text}"
        );
    }
}

/// Finding 8: with a `BEFORE INSERT ... RAISE(IGNORE)` trigger, embed said "stamped" and no
/// row was written. Now it refuses before any work: exit 1, nothing written.
#[test]
fn a_trigger_that_swallows_rows_stops_stamping() {
    let env = Env::new();
    let (ledger, _) = two_releases(&env, "l.db");
    sql(
        &ledger,
        "CREATE TRIGGER t BEFORE INSERT ON entries BEGIN SELECT RAISE(IGNORE); END;",
    );
    let out = env.path("c.png");
    let o = stamp_for(&env, &ledger, "Dr C", &testdata("astronaut.png"), &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("trigger") && !out.exists(), "{err}");
}

/// Finding 8: a rollback (newest rows deleted and an older head record replayed, or the
/// file replaced by an older copy) and a substituted ledger made with the same key are
/// self-consistent chains; the anchor taken before catches each.
#[test]
fn an_anchor_catches_rollback_truncation_and_substitution() {
    let env = Env::new();
    let (ledger, _) = two_releases(&env, "l.db");
    let old_copy = env.path("old.db");
    let c = rusqlite::Connection::open(&ledger).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(c);
    std::fs::copy(&ledger, &old_copy).unwrap();
    let old_head: (i64, Vec<u8>, Vec<u8>) = rusqlite::Connection::open(&ledger)
        .unwrap()
        .query_row(
            "SELECT head_count, head_hash, head_mac FROM ledger_meta",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(
        stamp_for(
            &env,
            &ledger,
            "Dr C",
            &testdata("astronaut.png"),
            &env.path("c.png")
        )
        .status
        .success()
    );
    let anchor = head(&env, &ledger);
    assert!(
        anchor.starts_with("tracemark-anchor-v1 rows=3 "),
        "{anchor}"
    );
    assert!(verify_anchor(&env, &ledger, &anchor).status.success());
    // Rollback by SQL: delete row 3 and replay the head record of two rows.
    let rolled = env.path("rolled.db");
    std::fs::copy(&ledger, &rolled).unwrap();
    let c = rusqlite::Connection::open(&rolled).unwrap();
    c.execute("DELETE FROM entries WHERE seq = 3", []).unwrap();
    c.execute(
        "UPDATE ledger_meta SET head_count = ?1, head_hash = ?2, head_mac = ?3",
        rusqlite::params![old_head.0, old_head.1, old_head.2],
    )
    .unwrap();
    drop(c);
    // Without the anchor nothing can tell (documented); with it, each is exit 1.
    assert!(ledger_cmd(&env, &rolled, &["verify"]).status.success());
    let other = env.path("other.db");
    for (i, photo) in ["camera.png", "coffee.png", "astronaut.png"]
        .iter()
        .enumerate()
    {
        let out = env.path(&format!("z{i}.png"));
        assert!(
            stamp_for(&env, &other, "Dr Z", &testdata(photo), &out)
                .status
                .success()
        );
    }
    for (what, candidate) in [
        ("rolled back", &rolled),
        ("older copy", &old_copy),
        ("substituted", &other),
    ] {
        let o = verify_anchor(&env, candidate, &anchor);
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{what}: {text}");
        assert!(text.contains("BROKEN"), "{what}: {text}");
    }
    // A forged anchor is refused too.
    let forged = anchor.replace("rows=3", "rows=2");
    assert_eq!(verify_anchor(&env, &ledger, &forged).status.code(), Some(1));
}

/// Finding 10: reading needed write access and changed the evidence (-wal/-shm files,
/// journal mode). Every reader now leaves a read-only copy byte for byte as it was, creates
/// nothing beside it, and works on it (what would be recorded in the audit trail is not,
/// with a warning).
#[test]
fn readers_leave_a_read_only_copy_untouched() {
    let env = Env::new();
    let (ledger, a) = two_releases(&env, "l.db");
    let c = rusqlite::Connection::open(&ledger).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(c);
    let dir = env.path("evidence");
    std::fs::create_dir(&dir).unwrap();
    let copy = dir.join("copy.db");
    std::fs::copy(&ledger, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    for action in [&["verify"][..], &["list"], &["export"], &["head"]] {
        let o = ledger_cmd(&env, &copy, action);
        assert!(o.status.success(), "{action:?}: {o:?}");
    }
    let o = detect(&env, &copy, &[], &a);
    assert!(o.status.success(), "{o:?}");
    // The examination is not recorded, and it says so (issue 13's audit trail).
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not recorded in its audit trail"),
        "{o:?}"
    );
    // So does its evidence report: it must not claim a record that was never made.
    let report = env.path("report");
    let o = detect(&env, &copy, &["--report".as_ref(), report.as_os_str()], &a);
    assert!(o.status.success(), "{o:?}");
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(
        html.contains("are not recorded in its audit trail"),
        "{html}"
    );
    assert!(!html.contains("is recorded in its audit trail"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["ledger"]["audit_recorded"], false);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["copy.db"], "nothing created beside the ledger");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        before,
        "byte for byte unchanged"
    );
}

/// Issue 13: every examination with a ledger, and every restore, show and export, is an
/// audit row in the same chain: listed by `ledger audit` with the evidence's SHA-256, and
/// editing or deleting one is caught by `verify` (exit 1, naming the row).
#[test]
fn the_audit_trail_records_every_examination_and_is_verified() {
    let env = Env::new();
    let (ledger, a) = two_releases(&env, "l.db");
    let unmarked = testdata("camera.png");
    let o = Command::new(crate::batch::detect_bin())
        .arg("--key")
        .arg(&env.key)
        .arg("--ledger")
        .arg(&ledger)
        .args(["--operator", "inspector <script>"])
        .arg(&a)
        .arg(&unmarked)
        .arg(env.path("missing.png"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = ledger_cmd(
        &env,
        &ledger,
        &["show", "--operator", "officer", "0000000000000000"],
    );
    assert!(!o.status.success(), "no such release: {o:?}");
    let o = ledger_cmd(&env, &ledger, &["export", "--operator", "officer"]);
    assert!(o.status.success(), "{o:?}");
    // Audit rows are not releases: the export of the releases holds the two releases only.
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
    let o = ledger_cmd(&env, &ledger, &["audit"]);
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "three examinations and one export: {text}");
    let sha = |p: &Path| crate::sha256_file(p);
    assert!(lines[0].contains("examine") && lines[0].contains(&sha(&a)));
    assert!(lines[0].contains("named: Dr A"), "{}", lines[0]);
    assert!(lines[1].contains(&sha(&unmarked)) && lines[1].contains("no_mark"));
    assert!(lines[2].contains("missing.png") && lines[2].contains("error"));
    assert!(lines[0].contains("by inspector <script>"), "{}", lines[0]);
    assert!(lines[3].contains("export") && lines[3].contains("by officer"));
    let o = ledger_cmd(&env, &ledger, &["verify"]);
    assert!(o.status.success(), "{o:?}");
    // Editing an audit row's verdict, or deleting the newest one: caught, row named.
    let edited = env.path("edited.db");
    std::fs::copy(&ledger, &edited).unwrap();
    sql(
        &edited,
        "UPDATE entries SET params = replace(params, 'no_mark', 'named') WHERE seq = 4",
    );
    let o = ledger_cmd(&env, &edited, &["verify"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("row 4"),
        "{o:?}"
    );
    sql(&ledger, "DELETE FROM entries WHERE seq = 6");
    let o = ledger_cmd(&env, &ledger, &["verify"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("row 6"),
        "{o:?}"
    );
}

//! The PostgreSQL ledger through the binaries (issue 15): stamping processes on one shared
//! ledger, SIGKILL, SQL tampering, and moving a ledger between backends. The server comes
//! from `TRACEMARK_TEST_POSTGRES` (`.ci/run` starts one with `scripts/postgres.sh`); without
//! it these tests say so and pass, unless `TRACEMARK_REQUIRE_POSTGRES` is set (as in CI).

use std::path::{Path, PathBuf};
use std::process::Command;

use tracemark::ledger::ScratchDatabase;

use crate::batch::{exported, killed_midway, study, two_processes_stamp};
use crate::{Env, ledger_cmd};

/// A fresh database on the test server (`None`: skipped).
fn test_db() -> Option<ScratchDatabase> {
    ScratchDatabase::for_test("tm_cli")
}

/// The user the server sees when the URL names none.
fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

/// Release rows in a PostgreSQL ledger (0 before it is created).
pub fn count_rows(ledger: &Path) -> usize {
    let Ok(mut c) = postgres::Client::connect(ledger.to_str().unwrap(), postgres::NoTls) else {
        return 0;
    };
    c.query_one("SELECT count(*) FROM entries WHERE format != 'audit'", &[])
        .map_or(0, |r| r.get::<_, i64>(0) as usize)
}

#[test]
fn two_processes_stamp_50_files_each_into_one_postgres_ledger() {
    let Some(db) = test_db() else { return };
    let env = Env::new();
    two_processes_stamp(&env, &db.url, 50);
}

/// The detector resolves a leak through the PostgreSQL ledger and records the examination
/// in its audit trail.
#[test]
fn a_leak_is_traced_through_the_postgres_ledger_and_the_examination_recorded() {
    let Some(db) = test_db() else { return };
    let env = Env::new();
    let root = study(&env, "trace", 2);
    let out = env.path("release");
    let o = crate::batch::batch_cmd(&env, &db.url, "Dr Remote", &[&root], &out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let leak = out.join("series0/img000.png");
    let d = Command::new(crate::batch::detect_bin())
        .arg("--key")
        .arg(&env.key)
        .env("TRACEMARK_LEDGER", &db.url)
        .args(["--operator", "investigator", "--json"])
        .arg(&leak)
        .output()
        .unwrap();
    assert_eq!(d.status.code(), Some(0), "{d:?}");
    let rec: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    assert_eq!(rec["named"][0]["recipient"], "Dr Remote", "{rec}");
    assert!(
        d.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&d.stderr)
    );
    let audit = ledger_cmd(&env, &db.url, &["audit"]);
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success() && text.contains("by investigator") && text.contains("Dr Remote"),
        "{text}"
    );
}

#[test]
fn sigkill_at_any_point_leaves_a_postgres_ledger_that_verifies() {
    let Some(db) = test_db() else { return };
    let env = Env::new();
    killed_midway(&env, &db.url);
}

/// SQL run by someone with write access to the database (not the key): every change is
/// named by `ledger verify` (exit 1), and a ledger so changed is not stamped into.
#[test]
fn tampering_through_sql_is_named_by_verify_and_stops_stamping() {
    let env = Env::new();
    for (sql, says) in [
        (
            "UPDATE entries SET recipient = 'Someone Else' WHERE seq = 1",
            "ledger BROKEN at row 1: contents do not match their hash",
        ),
        (
            "DELETE FROM entries WHERE seq = (SELECT max(seq) FROM entries)",
            "newest rows removed",
        ),
        (
            "CREATE FUNCTION nothing() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
             CREATE TRIGGER drop_new_rows BEFORE INSERT ON entries FOR EACH ROW EXECUTE FUNCTION nothing()",
            "trigger 'drop_new_rows'",
        ),
    ] {
        let Some(db) = test_db() else { return };
        let root = study(&env, "tamper", 2);
        let out = env.path(&format!("out-{}", db.name()));
        let o = crate::batch::batch_cmd(&env, &db.url, "Dr T", &[&root], &out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        db.client().batch_execute(sql).unwrap();
        let v = ledger_cmd(&env, &db.url, &["verify"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        assert_ne!(v.status.code(), Some(0), "{sql}: {text}");
        assert!(text.contains(says), "{sql}: {text}");
        let again = crate::batch::batch_cmd(&env, &db.url, "Dr U", &[&root], &env.path("more"))
            .output()
            .unwrap();
        assert_ne!(again.status.code(), Some(0), "{sql}: stamped into it");
        assert!(!env.path("more").exists(), "{sql}: an output was written");
    }
}

/// `ledger export --chain` of a file imports into PostgreSQL and back: each copy verifies,
/// extends the original's anchor, and names the same recipients. The password in the URL is
/// never printed.
#[test]
fn a_ledger_moves_between_sqlite_and_postgres() {
    let Some(db) = test_db() else { return };
    let env = Env::new();
    let file = env.path("site.db");
    let root = study(&env, "move", 3);
    let o = crate::batch::batch_cmd(&env, &file, "Dr M", &[&root], &env.path("out"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let head = ledger_cmd(&env, &file, &["head"]);
    let anchor = String::from_utf8(head.stdout).unwrap().trim().to_string();
    let export = ledger_cmd(&env, &file, &["export", "--chain"]);
    assert!(export.status.success(), "{export:?}");
    let dump = env.path("site.jsonl");
    std::fs::write(&dump, &export.stdout).unwrap();
    // The URL with a password that must not be shown (trust authentication ignores it).
    let (scheme, rest) = db.url.to_str().unwrap().split_once("://").unwrap();
    let url = PathBuf::from(match rest.split_once('@') {
        Some((user, host)) => format!("{scheme}://{user}:hunter2@{host}"),
        None => format!("{scheme}://{}:hunter2@{rest}", whoami()),
    });
    let imported = ledger_cmd(&env, &url, &["import", dump.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&imported.stdout);
    assert!(imported.status.success(), "{imported:?}");
    assert!(
        said.contains("3 rows verified") && said.contains(":***@"),
        "{said}"
    );
    assert!(!said.contains("hunter2"), "{said}");
    let v = ledger_cmd(&env, &db.url, &["verify", "--anchor", &anchor]);
    assert_eq!(v.status.code(), Some(0), "{v:?}");
    assert_eq!(exported(&env, &db.url).len(), 3);
    // Back into a new file, through standard input.
    let back = env.path("back.db");
    let export = ledger_cmd(&env, &db.url, &["export", "--chain"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracemark-embed"))
        .args(["ledger", "--key"])
        .arg(&env.key)
        .arg("--ledger")
        .arg(&back)
        .args(["import", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&export.stdout)
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let v = ledger_cmd(&env, &back, &["verify", "--anchor", &anchor]);
    assert_eq!(v.status.code(), Some(0), "{v:?}");
    assert_eq!(
        exported(&env, &back).keys().collect::<Vec<_>>(),
        exported(&env, &file).keys().collect::<Vec<_>>()
    );
    // An export edited on the way is refused whole.
    let forged = String::from_utf8(export.stdout)
        .unwrap()
        .replacen("Dr M", "Dr X", 1);
    let forged_path = env.path("forged.jsonl");
    std::fs::write(&forged_path, forged).unwrap();
    let fresh = env.path("fresh.db");
    let o = ledger_cmd(&env, &fresh, &["import", forged_path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not match its hash"),
        "{o:?}"
    );
}

//! Hostile inputs in a batch (issue 11): files that overflowed the stack, panicked a decoder
//! or asked for gigabytes each get one line naming them; the good files of the same batch
//! are written and recorded; the ledger verifies.

use std::path::PathBuf;

use crate::batch::{batch_cmd, exported_paths};
use crate::{Env, ledger_cmd, testdata};

/// The committed corpus of files that crashed or exhausted earlier versions
/// (`scripts/make_hostile.py`).
pub fn hostile_corpus() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(testdata("hostile"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "{v:?}");
    v
}

#[test]
fn hostile_files_fail_alone_and_the_good_ones_are_released() {
    let env = Env::new();
    let study = env.path("study");
    std::fs::create_dir(&study).unwrap();
    let bad = hostile_corpus();
    for f in &bad {
        std::fs::copy(f, study.join(f.file_name().unwrap())).unwrap();
    }
    for good in ["camera.png", "CT_small.dcm"] {
        std::fs::copy(testdata(good), study.join(good)).unwrap();
    }
    let ledger = env.path("releases.db");
    let out_dir = env.path("release");
    let o = batch_cmd(&env, &ledger, "Dr Who", &[&study], &out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    // One line per bad file, naming it; nothing else on stderr (no panic message, no
    // backtrace note).
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), bad.len(), "{stderr}");
    for f in &bad {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            lines.iter().filter(|l| l.contains(name)).count(),
            1,
            "{name}: {stderr}"
        );
    }
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("tracemark-embed: error: ")),
        "{stderr}"
    );
    // The summary is printed, counting both.
    assert!(
        stdout.contains("2 file(s) stamped") && stdout.contains(&format!("{} failed", bad.len())),
        "{stdout}"
    );
    let mut written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["CT_small.dcm", "camera.png"]);
    assert_eq!(exported_paths(&env, &ledger).len(), 2);
    let v = ledger_cmd(&env, &ledger, &["verify"]);
    assert!(v.status.success(), "{v:?}");
}

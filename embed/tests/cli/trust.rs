//! Issue 10, findings 3 and 4: a stamped copy given as input is refused (unless --restamp,
//! which the ledger records), and every output is read back before it is written.

use std::path::Path;

use tracemark::io::image::{WriteOptions, write};
use tracemark::raster::{Raster, Samples};

use crate::{Env, ledger_cmd, stamp_for, testdata};

fn export_rows(env: &Env, ledger: &Path) -> Vec<serde_json::Value> {
    let o = ledger_cmd(env, ledger, &["export"]);
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Finding 3: stamping an already stamped file was allowed, and then both recipients were
/// named. Now it is refused naming the release and its recipient; --restamp records both.
#[test]
fn a_stamped_copy_is_refused_unless_restamp() {
    let env = Env::new();
    let ledger = env.path("l.db");
    let a = env.path("a.png");
    assert!(
        stamp_for(&env, &ledger, "Dr A", &testdata("camera.png"), &a)
            .status
            .success()
    );
    let b = env.path("b.png");
    let o = stamp_for(&env, &ledger, "Dr B", &a, &b);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("already carries this key's mark")
            && err.contains("Dr A")
            && err.lines().count() == 1,
        "{err}"
    );
    assert!(!b.exists());
    assert_eq!(export_rows(&env, &ledger).len(), 1);
    let first_release = export_rows(&env, &ledger)[0]["release_id"].clone();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tracemark-embed"))
        .arg("--key")
        .arg(&env.key)
        .arg("--ledger")
        .arg(&ledger)
        .args(["--recipient", "Dr B", "--restamp"])
        .arg(&a)
        .arg("-o")
        .arg(&b)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let rows = export_rows(&env, &ledger);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["params"]["restamped_over"], first_release);
}

/// The pre-check looks at a central crop: the stamped copy of every testdata image, small
/// and large, photo and DICOM, is still recognised as one.
#[test]
fn every_testdata_copy_is_recognised_as_stamped() {
    let env = Env::new();
    for name in [
        "camera.png",
        "coffee.png",
        "retina.jpg",
        "RG1_UNCR.dcm",
        "MR2_UNCR.dcm",
        "693_UNCR.dcm",
        "US1_UNCR.dcm",
        "CT_small.dcm",
        "MR2_3frames.dcm",
    ] {
        let ext = Path::new(name).extension().unwrap().to_str().unwrap();
        let once = env.path(&format!("once-{name}"));
        let o = env.stamp(&testdata(name), &once, &[]);
        assert!(o.status.success(), "{name}: {o:?}");
        let twice = env.path(&format!("twice.{ext}"));
        let o = env.stamp(&once, &twice, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains("already carries this key's mark"),
            "{name}: {err}"
        );
        assert!(!twice.exists());
    }
}

/// Finding 3, the folder form: releasing study/ again after a release into study/out
/// re-stamped the first release's outputs. They are refused now; the originals are stamped.
#[test]
fn releasing_a_folder_again_skips_the_copies_inside_it() {
    let env = Env::new();
    let ledger = env.path("l.db");
    let study = env.path("study");
    std::fs::create_dir(&study).unwrap();
    for f in ["camera.png", "coffee.png"] {
        std::fs::copy(testdata(f), study.join(f)).unwrap();
    }
    let first = crate::batch::batch_cmd(&env, &ledger, "Dr A", &[&study], &study.join("out"))
        .output()
        .unwrap();
    assert!(first.status.success(), "{first:?}");
    let second = crate::batch::batch_cmd(&env, &ledger, "Dr B", &[&study], &env.path("out2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert_eq!(
        err.matches("already carries this key's mark").count(),
        2,
        "{err}"
    );
    assert!(env.path("out2/camera.png").exists() && env.path("out2/coffee.png").exists());
    assert!(!env.path("out2/out").exists());
    assert_eq!(export_rows(&env, &ledger).len(), 4);
}

fn save(env: &Env, name: &str, v: Vec<u8>, side: usize) -> std::path::PathBuf {
    let p = env.path(name);
    let r = Raster {
        width: side,
        height: side,
        channels: 1,
        samples: Samples::U8(v),
    };
    write(&r, &p, &WriteOptions::default()).unwrap();
    p
}

/// Finding 4: some images do not carry a readable mark even right after stamping, and were
/// released as "stamped". Each output is now read back before it is written; these are
/// refused (one line each, nothing written, no row) and the batch goes on.
#[test]
fn outputs_that_do_not_read_back_are_not_written() {
    let env = Env::new();
    let n = 256;
    let mut x = 7u64;
    let noise: Vec<u8> = (0..n * n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (x >> 40) & 1 == 0 { 0 } else { 255 }
        })
        .collect();
    let checker: Vec<u8> = (0..n * n)
        .map(|i| {
            if ((i % n) / 16 + (i / n) / 16) % 2 == 0 {
                0
            } else {
                255
            }
        })
        .collect();
    let dir = env.path("in");
    std::fs::create_dir(&dir).unwrap();
    let noise = save(&env, "in/binary-noise.png", noise, n);
    let checker = save(&env, "in/checker16.png", checker, n);
    std::fs::copy(testdata("camera.png"), dir.join("camera.png")).unwrap();
    let ledger = env.path("l.db");
    let out = env.path("out");
    let o = crate::batch::batch_cmd(&env, &ledger, "Dr A", &[&dir], &out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    // Binary noise (every sample at 0 or 255, so clipping takes half of every change)
    // never reads back; the checkerboard does under some keys. Whichever is refused is
    // not written and has no row; whichever is written has one.
    let mut refused = 0;
    for p in [&noise, &checker] {
        let name = p.file_name().unwrap().to_string_lossy();
        let said = err
            .lines()
            .any(|l| l.contains(name.as_ref()) && l.contains("does not read back"));
        assert!(said || p != &noise, "{err}");
        assert_eq!(out.join(name.as_ref()).exists(), !said, "{name}: {err}");
        refused += usize::from(said);
    }
    assert!(out.join("camera.png").exists());
    let rows = export_rows(&env, &ledger);
    assert_eq!(rows.len(), 3 - refused);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let summary = format!("{} file(s) stamped, {refused} failed", 3 - refused);
    assert!(stdout.contains(&summary), "{stdout}");
}

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

/// Finding 8: a link inside the input folder to a file outside it is not stamped (it was:
/// `../secret/private.png` went into the release); the run says so and succeeds.
#[test]
fn links_inside_a_folder_are_reported_not_followed() {
    let env = Env::new();
    let (study, secret) = (env.path("study"), env.path("secret"));
    std::fs::create_dir_all(&study).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::copy(testdata("camera.png"), study.join("a.png")).unwrap();
    std::fs::copy(testdata("coffee.png"), secret.join("private.png")).unwrap();
    std::os::unix::fs::symlink(secret.join("private.png"), study.join("b.png")).unwrap();
    let ledger = env.path("releases.db");
    let out = env.path("release");
    let o = batch_cmd(&env, &ledger, "Dr Link", &[&study], &out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("b.png") && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1 symbolic link(s) not followed"),
        "{o:?}"
    );
    assert!(!out.join("b.png").exists());
    assert_eq!(exported_paths(&env, &ledger).len(), 1);
}

/// Finding 10: outputs follow the umask like any file a user's tool writes (they were 0600
/// whatever the umask).
#[test]
fn outputs_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    for (umask, mode) in [("022", 0o644), ("077", 0o600), ("002", 0o664)] {
        let out = env.path(&format!("u{umask}.png"));
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_tracemark-embed"))
            .arg("--key")
            .arg(&env.key)
            .args(["--payload", crate::PAYLOAD])
            .arg(testdata("camera.png"))
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let got = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "umask {umask}");
    }
}

/// Finding 10: a file name with a right-to-left override is escaped in what is printed, and a
/// name that is not UTF-8 is refused with a ledger (it was stored lossily: two files could
/// share one name in the ledger) while the other files go on.
#[test]
fn names_cannot_disguise_or_merge() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let study = env.path("study");
    std::fs::create_dir_all(&study).unwrap();
    std::fs::copy(
        testdata("camera.png"),
        study.join("scan_\u{202E}gnp.exe.png"),
    )
    .unwrap();
    let raw = std::ffi::OsStr::from_bytes(b"scan_\xff.png");
    std::fs::copy(testdata("coffee.png"), study.join(raw)).unwrap();
    let ledger = env.path("releases.db");
    let out = env.path("release");
    let o = batch_cmd(&env, &ledger, "Dr Name", &[&study], &out)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(!stdout.contains('\u{202E}') && !stderr.contains('\u{202E}'));
    assert!(stdout.contains("scan_\\u{202e}gnp.exe.png"), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not valid UTF-8"), "{stderr}");
    assert_eq!(exported_paths(&env, &ledger).len(), 1);
    assert!(!out.join(raw).exists());
}

/// Finding 10: an output folder that cannot be written is refused before any work, in one
/// line naming it (each file used to fail after decoding, marking and encoding). Root ignores
/// modes, so as root the run is made as `nobody`.
#[test]
fn an_unwritable_output_folder_is_refused_up_front() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let study = env.path("study");
    std::fs::create_dir_all(&study).unwrap();
    for f in ["camera.png", "coffee.png", "astronaut.png"] {
        std::fs::copy(testdata(f), study.join(f)).unwrap();
    }
    let out = env.path("locked");
    std::fs::create_dir(&out).unwrap();
    let bin = env.path("tracemark-embed");
    std::fs::copy(env!("CARGO_BIN_EXE_tracemark-embed"), &bin).unwrap();
    const NOBODY: u32 = 65534;
    let as_root = crate::batch::euid(&env) == 0;
    if as_root {
        for p in [env.dir.path(), &env.key, &bin, &out, &study] {
            std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        for f in std::fs::read_dir(&study).unwrap() {
            std::os::unix::fs::chown(f.unwrap().path(), Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
    let ledger = env.path("releases.db");
    let mut c = std::process::Command::new(&bin);
    c.arg("--key")
        .arg(&env.key)
        .arg("--ledger")
        .arg(&ledger)
        .args(["--recipient", "Dr Lock"])
        .arg(&study)
        .arg("-o")
        .arg(&out);
    if as_root {
        use std::os::unix::process::CommandExt;
        c.uid(NOBODY).gid(NOBODY);
    }
    let o = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("locked") && stderr.contains("cannot write in the output folder"),
        "{stderr}"
    );
    assert!(o.stdout.is_empty(), "no file was attempted");
    assert!(
        !ledger.exists(),
        "no ledger was created for a run that could not write"
    );
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Finding 5: a file whose estimated working memory is above the budget is refused in one
/// line naming it and the budget; the other files of the batch are stamped.
#[test]
fn a_file_above_the_memory_budget_is_refused_alone() {
    let env = Env::new();
    let study = env.path("study");
    std::fs::create_dir_all(&study).unwrap();
    std::fs::copy(testdata("camera.png"), study.join("camera.png")).unwrap();
    let big = tracemark::raster::Raster {
        width: 4096,
        height: 4096,
        channels: 1,
        samples: tracemark::raster::Samples::U8(vec![100; 4096 * 4096]),
    };
    tracemark::io::image::write(&big, &study.join("big.png"), &Default::default()).unwrap();
    let ledger = env.path("releases.db");
    let out = env.path("release");
    let o = batch_cmd(&env, &ledger, "Dr Mem", &[&study], &out)
        .args(["--max-memory", "128M"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("big.png: needs about") && stderr.contains("memory budget 128 MiB"),
        "{stderr}"
    );
    assert!(out.join("camera.png").exists() && !out.join("big.png").exists());
    assert_eq!(exported_paths(&env, &ledger).len(), 1);
}

/// Finding 10: an OS error is printed once ("d: a directory, not a file", not the same text
/// twice over).
#[test]
fn an_os_error_is_printed_once() {
    let env = Env::new();
    let dir = env.path("d");
    std::fs::create_dir(&dir).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tracemark-embed"))
        .arg("--key")
        .arg(&dir)
        .args(["--payload", crate::PAYLOAD])
        .arg(testdata("camera.png"))
        .arg("-o")
        .arg(env.path("x.png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("a directory").count(), 1, "{err}");
    assert!(err.contains("d: a directory, not a file"), "{err}");
}

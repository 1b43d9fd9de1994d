//! Bad input: one clear line on stderr, exit 2, input untouched.

use std::path::Path;

use crate::util::{CASES, TestEnv, testdata};

fn check_error(env: &TestEnv, args: &[&Path], needle: &str) {
    let out = env.detect(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("tracemark-detect: error: "), "{err}");
    assert!(err.contains(needle), "{err} lacks {needle}");
}

#[test]
fn bad_files_and_keys() {
    let env = TestEnv::new();
    let kf = env.key_file(CASES[0].0);
    let key = Path::new("--key");
    let empty = env.path("empty.png");
    std::fs::write(&empty, b"").unwrap();
    check_error(&env, &[key, &kf, &empty], "empty");
    let text = env.path("notes.jpg");
    std::fs::write(&text, b"this is not an image").unwrap();
    check_error(
        &env,
        &[key, &kf, &text],
        "unknown or unsupported image format",
    );
    let bytes = std::fs::read(testdata("camera.png")).unwrap();
    let trunc = env.path("trunc.png");
    std::fs::write(&trunc, &bytes[..bytes.len() / 3]).unwrap();
    check_error(&env, &[key, &kf, &trunc], "cannot decode PNG");
    check_error(&env, &[key, &kf, &env.path("missing.png")], "missing.png");
    let bad_key = env.path("badkey");
    std::fs::write(&bad_key, "tracemark-key-v1 1234").unwrap();
    check_error(
        &env,
        &[key, &bad_key, &testdata("camera.png")],
        "not a tracemark key file",
    );
    check_error(
        &env,
        &[key, &env.path("nokey"), &testdata("camera.png")],
        "nokey",
    );
    // The input is never modified.
    assert_eq!(std::fs::read(testdata("camera.png")).unwrap(), bytes);
}

#[test]
fn tiny_image_is_an_error_not_an_abstention() {
    let env = TestEnv::new();
    let kf = env.key_file(CASES[0].0);
    let small = tracemark_leaks::crop(&crate::util::load("camera.png"), 0, 0, 40, 40);
    let p = env.save(&small, "small.png");
    check_error(&env, &[Path::new("--key"), &kf, &p], "too small to examine");
}

/// Runs tracemark-detect and waits at most 60 s (a hang is the failure being tested).
fn detect_within(args: &[&Path]) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracemark-detect"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tracemark-detect {args:?} did not finish: it hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Issue 11, finding 4: a FIFO as input or key waited for ever, /dev/zero was read until
/// memory ran out. Only regular files are read, with bounded reads.
#[test]
fn fifos_and_devices_are_refused_at_once() {
    let env = TestEnv::new();
    let kf = env.key_file(CASES[0].0);
    let key = Path::new("--key");
    let fifo = env.path("leak.png");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let zero = Path::new("/dev/zero");
    let camera = testdata("camera.png");
    for args in [
        vec![key, kf.as_path(), fifo.as_path()],
        vec![key, kf.as_path(), zero],
        vec![key, fifo.as_path(), camera.as_path()],
        vec![key, zero, camera.as_path()],
    ] {
        let out = detect_within(&args);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("not a regular file"), "{err}");
    }
}

/// Issue 11, finding 6: when the reader of stdout went away, detect exited 0 although an
/// input was unreadable. The status now covers every input.
#[test]
fn exit_status_holds_when_stdout_is_closed() {
    use std::process::{Command, Stdio};
    let env = TestEnv::new();
    let kf = env.key_file(CASES[0].0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracemark-detect"))
        .arg("--key")
        .arg(&kf)
        .arg(testdata("camera.png"))
        .arg(env.path("missing.png"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Close the read end before anything is printed.
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(2));
}

#[test]
fn hostile_dicom_files_are_one_line_each() {
    // The committed corpus (scripts/make_hostile.py): 10,000 nested sequences (a stack
    // overflow, exit 134), a 4 GB declared length (4.1 GB resident), RLE cuts that panicked
    // the decoder (exit 101). Each is now one line naming it, exit 2, in one run.
    let env = TestEnv::new();
    let kf = env.key_file(CASES[0].0);
    let mut files: Vec<_> = std::fs::read_dir(testdata("hostile"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    let mut args: Vec<&Path> = vec![Path::new("--key"), &kf];
    args.extend(files.iter().map(|p| p.as_path()));
    args.push(Path::new("--json"));
    let out = env.detect(&args);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), files.len(), "{err}");
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_eq!(err.lines().filter(|l| l.contains(name)).count(), 1, "{err}");
    }
    // JSON: one error record per file, in input order.
    let records: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), files.len() + 1);
    assert!(records[..files.len()].iter().all(|r| r["type"] == "error"));
    // Then the run's summary: nothing examined, every file failed.
    let summary = &records[files.len()];
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["files"], 0);
    assert_eq!(summary["failed"], files.len());
}

/// Issue 11, finding 5: a 16384 x 16384 single-colour PNG (300 KB on disk) is examined in
/// its central window, under a 1.5 GiB budget: exit 1 (nothing to examine), one record.
/// (It took 5.5 GB and 16 s; `tracemark-bench memory` measures the peak.)
#[test]
fn a_huge_flat_image_is_examined_within_its_budget() {
    let env = TestEnv::new();
    let kf = env.key_file(CASES[0].0);
    let side = 16384;
    let flat = tracemark::raster::Raster {
        width: side,
        height: side,
        channels: 1,
        samples: tracemark::raster::Samples::U8(vec![128; side * side]),
    };
    let p = env.path("flat.png");
    tracemark::io::image::write(&flat, &p, &Default::default()).unwrap();
    drop(flat);
    let out = env.detect(&[
        Path::new("--key"),
        &kf,
        Path::new("--max-memory"),
        Path::new("1536M"),
        Path::new("--json"),
        &p,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let rec: tracemark::report::DetectionRecord = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rec.nothing_to_examine.is_some());
    assert_eq!(rec.examined_window, Some([6144, 6144, 4096, 4096]));
}

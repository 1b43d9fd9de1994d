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

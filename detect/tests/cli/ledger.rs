//! tracemark-detect --ledger: resolving a payload to its recipient, the informed check on
//! copies whose payload does not decode, and the collusion flag. 1,000 releases each.

use std::path::{Path, PathBuf};

use tracemark::SecretKey;
use tracemark::ledger::{FileRecord, Ledger, ReleaseMeta};
use tracemark::raster::Raster;
use tracemark::report::Verdict;
use tracemark_bench::{Filter, crop_fraction, jpeg, jpeg_420, scale};

use crate::util::{CASES, TestEnv, load, stamp};

const KEY: [u8; 32] = CASES[0].0;

/// A ledger of `n` releases with pseudo-random ids; returns it and the ids.
fn ledger(env: &TestEnv, n: usize) -> (PathBuf, Vec<u64>) {
    let path = env.path("releases.db");
    let mut l = Ledger::open(&path, &SecretKey::from_bytes(KEY)).unwrap();
    let ids: Vec<u64> = (0..n as u64)
        .map(|i| (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555_0000_AAAA_1111)
        .collect();
    for (i, &id) in ids.iter().enumerate() {
        let meta = ReleaseMeta {
            release_id: id,
            recipient: format!("recipient {i}"),
            purpose: None,
            operator: None,
        };
        let file = FileRecord {
            input_path: "in.png".into(),
            input_sha256: "00".into(),
            output_path: format!("out/{i}.png"),
            output_sha256: "00".into(),
            format: "PNG".into(),
            bytes: 1,
            params: "{}".into(),
        };
        l.append(&meta, &file, 1_795_000_000_000 + i as i64, || Ok(()))
            .unwrap();
    }
    (path, ids)
}

fn detect_with(
    env: &TestEnv,
    ledger: &Path,
    image: &Raster,
    name: &str,
) -> (i32, tracemark::report::DetectionRecord) {
    let p = env.save(image, name);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracemark-detect"))
        .arg("--key")
        .arg(env.key_file(KEY))
        .arg("--ledger")
        .arg(ledger)
        .arg("--json")
        .arg(&p)
        .output()
        .unwrap();
    let rec = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), rec)
}

#[test]
fn a_leaked_copy_names_its_recipient_and_an_unlisted_id_is_flagged() {
    let env = TestEnv::new();
    let (l, ids) = ledger(&env, 1000);
    let original = load("retina.jpg");
    let leaked = jpeg(
        &crop_fraction(&stamp(&original, KEY, ids[417]), 0.4, 0.3, 0.8),
        70,
    );
    let (code, rec) = detect_with(&env, &l, &leaked, "leak.png");
    assert_eq!(code, 0);
    let release = rec.release.clone().expect("resolved");
    assert_eq!(release.recipient, "recipient 417");
    assert_eq!(release.files, vec!["out/417.png".to_string()]);
    // The fingerprint check agrees with the decode and names nobody else.
    assert!(
        rec.accused.iter().all(|a| a.recipient == "recipient 417"),
        "{rec:?}"
    );
    assert!(!rec.possible_collusion);
    // Stamped with an id that was never issued: a mark, no release, nobody accused.
    let stray = jpeg(&stamp(&original, KEY, 0x0bad_cafe_0bad_cafe), 80);
    let (code, rec) = detect_with(&env, &l, &stray, "stray.png");
    assert_eq!(code, 0);
    assert_eq!(rec.payload.as_deref(), Some("0badcafe0badcafe"));
    assert!(
        rec.release.is_none() && rec.possible_collusion && rec.accused.is_empty(),
        "{rec:?}"
    );
    // An unmarked image: nothing.
    let (code, rec) = detect_with(&env, &l, &load("camera.png"), "plain.png");
    assert_eq!(code, 1);
    assert!(rec.verdict == Verdict::NoMark && rec.accused.is_empty() && rec.release.is_none());
}

#[test]
fn informed_check_on_small_copies_never_names_an_innocent() {
    let env = TestEnv::new();
    let (l, ids) = ledger(&env, 1000);
    let (mut named, mut failed_blind) = (0, 0);
    for (i, image) in ["camera.png", "astronaut.png", "coffee.png"]
        .iter()
        .enumerate()
    {
        for j in 0..2 {
            let k = 100 * i + 7 * j + 3;
            let leaked = jpeg_420(
                &scale(&stamp(&load(image), KEY, ids[k]), 0.5, Filter::Triangle),
                50,
            );
            let (_, rec) = detect_with(&env, &l, &leaked, &format!("s{i}{j}.png"));
            if rec.release.is_some() {
                continue;
            }
            failed_blind += 1;
            let want = format!("recipient {k}");
            assert!(
                rec.accused.iter().all(|a| a.recipient == want),
                "{image}: {rec:?}"
            );
            named += usize::from(!rec.accused.is_empty());
        }
    }
    eprintln!("informed check: named {named} of {failed_blind} copies blind decoding missed");
}

#[test]
fn averaged_copies_name_both_colluders() {
    let env = TestEnv::new();
    let (l, ids) = ledger(&env, 1000);
    let original = load("retina.jpg");
    let (a, b) = (
        stamp(&original, KEY, ids[10]),
        stamp(&original, KEY, ids[20]),
    );
    let (tracemark::raster::Samples::U8(x), tracemark::raster::Samples::U8(y)) =
        (&a.samples, &b.samples)
    else {
        panic!("8-bit")
    };
    let avg = Raster {
        samples: tracemark::raster::Samples::U8(
            x.iter()
                .zip(y)
                .map(|(p, q)| (u16::from(*p) + u16::from(*q)).div_ceil(2) as u8)
                .collect(),
        ),
        ..a.clone()
    };
    let (code, rec) = detect_with(&env, &l, &jpeg(&avg, 75), "avg.png");
    assert_eq!(code, 0);
    let mut names: Vec<&str> = rec.accused.iter().map(|x| x.recipient.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["recipient 10", "recipient 20"], "{rec:?}");
    // The blind decode of the mixed codeword may land on one colluder's id; the report
    // must still flag collusion.
    assert!(rec.possible_collusion, "{rec:?}");
}

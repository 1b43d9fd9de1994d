//! Round trips through leaks (issue 2 acceptance): the exact payload after JPEG 50,
//! downscale 0.5, a 25 % crop at an arbitrary offset, rotation by 3 degrees, grey
//! inversion, and downscale 0.5 + JPEG 75, for three keys and payloads; and no claims on
//! unmarked images, their variants, or another key's mark.

use std::path::Path;

use tracemark::raster::Raster;
use tracemark::report::{PayloadStatus, Verdict};
use tracemark_leaks::{Filter, crop_fraction, invert, jpeg, rotate, scale};

use crate::util::{CASES, TestEnv, load, stamp};

type Leak = (&'static str, fn(&Raster) -> Raster);

const LEAKS: [Leak; 7] = [
    ("none", |r| r.clone()),
    ("jpeg50", |r| jpeg(r, 50)),
    ("downscale0.5", |r| scale(r, 0.5, Filter::Triangle)),
    ("crop25", |r| crop_fraction(r, 0.25, 0.37, 0.71)),
    ("rotate3", |r| rotate(r, 3.0)),
    ("invert", invert),
    ("downscale0.5+jpeg75", |r| {
        jpeg(&scale(r, 0.5, Filter::Cubic), 75)
    }),
];

fn round_trip(image: &str, leaks: &[Leak]) {
    let env = TestEnv::new();
    let original = load(image);
    let mut failures = Vec::new();
    for (i, &(key, payload)) in CASES.iter().enumerate() {
        let kf = env.key_file(key);
        let marked = stamp(&original, key, payload);
        for (name, leak) in leaks {
            let p = env.save(&leak(&marked), &format!("{i}-{name}.png"));
            let (code, rec) = env.detect_json(&kf, &p);
            let want = format!("{payload:016x}");
            if code != 0
                || rec.verdict != Verdict::Marked
                || rec.payload.as_deref() != Some(want.as_str())
                || rec.payload_status != PayloadStatus::Confirmed
                || rec.p_value > 1e-6
            {
                failures.push(format!("{image} key {i} {name}: exit {code}, {rec:?}"));
            }
            if *name == "invert" {
                assert!(
                    rec.transform.as_ref().is_some_and(|t| t.inverted),
                    "{rec:?}"
                );
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn retina_survives_every_leak() {
    round_trip("retina.jpg", &LEAKS);
}

#[test]
fn camera_grey_survives_single_leaks() {
    round_trip("camera.png", &LEAKS[..6]);
}

#[test]
fn coffee_colour_survives_single_leaks() {
    round_trip("coffee.png", &LEAKS[..6]);
}

#[test]
fn geometry_is_reported() {
    let env = TestEnv::new();
    let (key, payload) = CASES[1];
    let marked = stamp(&load("retina.jpg"), key, payload);
    let p = env.save(
        &rotate(&scale(&marked, 0.5, Filter::Triangle), 3.0),
        "g.png",
    );
    let (_, rec) = env.detect_json(&env.key_file(key), &p);
    let t = rec.transform.expect("marked");
    assert!((t.scale - 0.5).abs() < 0.005, "{t:?}");
    assert!((t.rotation_deg - 3.0).abs() < 0.1, "{t:?}");
}

#[test]
fn no_claims_on_unmarked_images_and_their_variants() {
    let env = TestEnv::new();
    let kf = env.key_file(CASES[0].0);
    for image in ["camera.png", "astronaut.png", "coffee.png", "retina.jpg"] {
        let r = load(image);
        let variants = [
            ("orig", r.clone()),
            ("jpeg75", jpeg(&r, 75)),
            ("half", scale(&r, 0.5, Filter::Box)),
            ("crop", crop_fraction(&r, 0.3, 0.2, 0.9)),
        ];
        for (name, v) in variants {
            let p = env.save(&v, &format!("{image}-{name}.png"));
            let (code, rec) = env.detect_json(&kf, &p);
            assert_eq!(code, 1, "{image} {name}: {rec:?}");
            assert_eq!(rec.verdict, Verdict::NoMark);
            assert!(rec.payload.is_none() && rec.transform.is_none());
            assert!(rec.p_value > 1e-6);
        }
    }
}

#[test]
fn another_keys_mark_is_not_claimed() {
    let env = TestEnv::new();
    for image in ["camera.png", "retina.jpg"] {
        let marked = stamp(&load(image), CASES[0].0, CASES[0].1);
        let p = env.save(&marked, &format!("{image}-m.png"));
        for &(other, _) in &CASES[1..] {
            let (code, rec) = env.detect_json(&env.key_file(other), &p);
            assert_eq!(code, 1, "{image}: {rec:?}");
            assert_eq!(rec.verdict, Verdict::NoMark);
        }
    }
}

#[test]
fn exit_code_is_one_when_any_input_is_unmarked() {
    let env = TestEnv::new();
    let (key, payload) = CASES[2];
    let kf = env.key_file(key);
    let m = env.save(&stamp(&load("camera.png"), key, payload), "m.png");
    let u = env.save(&load("camera.png"), "u.png");
    let both = env.detect(&[std::path::Path::new("--key"), &kf, &m, &u]);
    assert_eq!(both.status.code(), Some(1));
    let text = String::from_utf8(both.stdout).unwrap();
    // One line per file; indented lines add context to the file above.
    let files: Vec<&str> = text.lines().filter(|l| !l.starts_with("  ")).collect();
    assert_eq!(files.len(), 3, "{text}");
    assert!(
        files[2].starts_with("examined 2 file(s)") && files[2].contains("1 marked"),
        "the summary of a run over several files: {text}"
    );
    assert!(files[0].contains(&format!("payload {payload:016x}")));
    assert!(files[1].contains("no_mark"));
    // Without a ledger nobody is named, and the output says why.
    assert!(text.contains("named: nobody (no ledger"), "{text}");
    let one = env.detect(&[std::path::Path::new("--key"), &kf, &m]);
    assert_eq!(one.status.code(), Some(0));
}

#[test]
fn quarter_turns_are_found_with_their_sense() {
    let env = TestEnv::new();
    let (key, payload) = CASES[0];
    let marked = stamp(&load("camera.png"), key, payload);
    for degrees in [90.0, -90.0, 180.0] {
        let p = env.save(&rotate(&marked, degrees), &format!("q{degrees}.png"));
        let (code, rec) = env.detect_json(&env.key_file(key), &p);
        assert_eq!(code, 0, "{degrees}: {rec:?}");
        assert_eq!(rec.payload, Some(format!("{payload:016x}")));
        let got = rec.transform.unwrap().rotation_deg;
        let diff = (got - degrees).rem_euclid(360.0);
        assert!(!(0.1..=359.9).contains(&diff), "{degrees}: reported {got}");
    }
}

/// Regression (found by the robustness benchmark, issue 5): upscales beyond 1.3x fell
/// outside the lattice search, and a 10 % aspect change broke the square-lattice model.
#[test]
fn upscale_and_aspect_change_are_followed() {
    let env = TestEnv::new();
    let (key, payload) = CASES[2];
    let marked = stamp(&load("coffee.png"), key, payload);
    let kf = env.key_file(key);
    let up = env.save(&scale(&marked, 1.5, Filter::Cubic), "up.png");
    let (code, rec) = env.detect_json(&kf, &up);
    assert_eq!(
        (code, rec.payload.as_deref()),
        (0, Some(format!("{payload:016x}").as_str())),
        "{rec:?}"
    );
    assert!((rec.transform.unwrap().scale - 1.5).abs() < 0.01);
    let wide = tracemark_leaks::resize(&marked, 660, 400, Filter::Cubic);
    let p = env.save(&wide, "wide.png");
    let (code, rec) = env.detect_json(&kf, &p);
    assert_eq!(
        (code, rec.payload.as_deref()),
        (0, Some(format!("{payload:016x}").as_str())),
        "{rec:?}"
    );
    let t = rec.transform.unwrap();
    assert!((t.aspect - 1.1).abs() < 0.01, "{t:?}");
}

/// The informed check (design section 5 step 8) on copies whose blind decode fails:
/// small photos downscaled 0.5 and recompressed at JPEG 50. Among 1,000 issued releases
/// plus the true one, it must never name a wrong release. Measured: the right one in 2 of 9
/// with the first three keys before key files had to hold non-degenerate keys, 0 of 9 with
/// the three keys after; 18 copies (six keys) so that the assertion does not hang on a
/// handful of keys (the rate is printed: 6 of 18 since the codeword preselects releases).
#[test]
fn informed_check_names_the_release_blind_decoding_missed() {
    use tracemark::SecretKey;
    use tracemark::mark::detect::{DetectOptions, Detector};
    use tracemark::mark::informed::{Residual, accuse};
    let mut named_right = 0;
    let mut blind_failed = 0;
    let mut cases = 0;
    for image in ["camera.png", "astronaut.png", "coffee.png"] {
        let original = load(image);
        let more = [0x27u8, 0x99, 0xe4].map(|s| {
            (
                crate::util::spread(s),
                0x5eed_0000_0000_0001u64.wrapping_mul(u64::from(s)),
            )
        });
        for &(key, payload) in CASES.iter().chain(&more) {
            let leaked = tracemark_leaks::jpeg_420(
                &scale(&stamp(&original, key, payload), 0.5, Filter::Triangle),
                50,
            );
            let det = Detector::new(&SecretKey::from_bytes(key));
            let d = det
                .detect(&leaked.luminance(), &DetectOptions::default())
                .unwrap();
            cases += 1;
            if d.payload == Some(payload) {
                continue;
            }
            blind_failed += 1;
            let mut releases: Vec<u64> = (0..1000u64)
                .map(|i| i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ payload.rotate_left(17))
                .collect();
            releases.push(payload);
            let residual = Residual::new(det.patterns(), &d.chips).unwrap();
            let named = accuse(det.patterns(), &residual, &releases, 1e-6, Some(d.variant));
            assert!(
                named.iter().all(|a| a.release == payload),
                "{image}: named an innocent: {named:?}"
            );
            named_right += usize::from(!named.is_empty());
        }
    }
    eprintln!(
        "informed check: {named_right} of {blind_failed} blind failures named correctly ({cases} copies)"
    );
    assert!(
        blind_failed > 0,
        "the scenario should defeat blind decoding on small images"
    );
    assert!(named_right >= 1, "{named_right} of {blind_failed}");
}

/// A folder of found images (issue 13): walked recursively like the stamping side walks a
/// study (hidden entries skipped, links inside not followed but reported), every image
/// examined, then the run's summary with its counts.
#[test]
fn a_folder_of_found_images_is_walked_and_summarised() {
    let env = TestEnv::new();
    let (key, payload) = CASES[0];
    let kf = env.key_file(key);
    let found = env.path("found");
    std::fs::create_dir_all(found.join("forum/thread")).unwrap();
    let marked = stamp(&load("camera.png"), key, payload);
    env.save(&marked, "found/forum/thread/leak.png");
    env.save(&load("coffee.png"), "found/forum/unmarked.png");
    env.save(&marked, "found/.hidden.png");
    std::fs::write(found.join("notes.txt"), b"not an image").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(env.path("elsewhere.png"), found.join("link.png")).unwrap();
    let o = env.detect(&[Path::new("--key"), &kf, Path::new("--json"), &found]);
    assert_eq!(o.status.code(), Some(1), "one image has no mark: {o:?}");
    let records: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "two images and the summary: {records:?}");
    // Name order within forum/: "thread" before "unmarked.png".
    assert!(records[0]["path"].as_str().unwrap().ends_with("leak.png"));
    assert_eq!(records[0]["payload"], format!("{payload:016x}"));
    assert_eq!(records[1]["verdict"], "no_mark");
    let s = &records[2];
    assert_eq!(s["type"], "summary");
    assert_eq!(
        (s["files"].as_u64(), s["marked"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(s["failed"], 0);
    #[cfg(unix)]
    {
        assert_eq!(s["skipped_links"], 1);
        let err = String::from_utf8(o.stderr).unwrap();
        assert!(
            err.contains("link.png") && err.contains("not followed"),
            "{err}"
        );
    }
    // A folder without images is an error naming it.
    let empty = env.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = env.detect(&[Path::new("--key"), &kf, &empty]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("no images to examine in") && err.contains("empty"),
        "{err}"
    );
    // Beside other inputs, an empty folder is a warning and the others are examined.
    let leak = found.join("forum/thread/leak.png");
    let o = env.detect(&[Path::new("--key"), &kf, &empty, &leak]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("warning: no images in") && err.lines().count() == 1,
        "{err}"
    );
    assert!(
        String::from_utf8(o.stdout)
            .unwrap()
            .contains(&format!("payload {payload:016x}"))
    );
}

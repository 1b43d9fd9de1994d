//! tracemark-detect --ledger: resolving a payload to its recipient, the informed check on
//! copies whose payload does not decode, and the collusion flag. 1,000 releases each.

use std::path::{Path, PathBuf};

use tracemark::SecretKey;
use tracemark::ledger::{FileRecord, Ledger, ReleaseMeta};
use tracemark::mark::content;
use tracemark::mark::detect::KEYSTONE_HYPOTHESES;
use tracemark::raster::{Raster, Samples};
use tracemark::report::Verdict;
use tracemark::testsignal;
use tracemark_leaks::{
    Filter, crop, crop_fraction, jpeg, jpeg_420, rotate, scale, screen_photo, to_grey,
};

use crate::util::{CASES, TestEnv, load, stamp};

const KEY: [u8; 32] = CASES[0].0;

/// A ledger of `n` releases with pseudo-random ids and no content descriptors; returns it
/// and the ids.
fn ledger(env: &TestEnv, n: usize) -> (PathBuf, Vec<u64>) {
    ledger_of(env, n, &[])
}

/// A ledger of `n` releases whose one file each has `content` (descriptors).
fn ledger_of(env: &TestEnv, n: usize, content: &[u8]) -> (PathBuf, Vec<u64>) {
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
            content: content.to_vec(),
            restore: Vec::new(),
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
    detect_with_args(env, ledger, image, name, &[])
}

/// [`detect_with`] with more arguments.
fn detect_with_args(
    env: &TestEnv,
    ledger: &Path,
    image: &Raster,
    name: &str,
    args: &[&str],
) -> (i32, tracemark::report::DetectionRecord) {
    let p = env.save(image, name);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracemark-detect"))
        .arg("--key")
        .arg(env.key_file(KEY))
        .arg("--ledger")
        .arg(ledger)
        .arg("--json")
        .args(args)
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
    let original = load("retina.jpg");
    let descriptor = content::encode(&[content::describe(&original.luminance())]);
    let (l, ids) = ledger_of(&env, 1000, &descriptor);
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
    // The one field that names: release 417, by its payload and the retina's content.
    assert_eq!(rec.named.len(), 1, "{rec:?}");
    assert_eq!(rec.named[0].recipient, "recipient 417");
    assert!(
        rec.named[0]
            .basis
            .starts_with("payload + content of out/417.png")
    );
    assert!(rec.named[0].p_value < 1e-6);
    // Stamped with an id that was never issued: a mark, no release, nobody accused.
    let stray = jpeg(&stamp(&original, KEY, 0x0bad_cafe_0bad_cafe), 80);
    let (code, rec) = detect_with(&env, &l, &stray, "stray.png");
    assert_eq!(code, 0);
    assert_eq!(rec.payload.as_deref(), Some("0badcafe0badcafe"));
    assert!(
        rec.release.is_none() && rec.possible_collusion && rec.accused.is_empty(),
        "{rec:?}"
    );
    assert!(rec.named.is_empty() && rec.not_named.is_some(), "{rec:?}");
    // An unmarked image: nothing.
    let (code, rec) = detect_with(&env, &l, &load("camera.png"), "plain.png");
    assert_eq!(code, 1);
    assert!(rec.verdict == Verdict::NoMark && rec.accused.is_empty() && rec.release.is_none());
}

/// A release whose file holds no detail to compare (a flat grey image, as its descriptor):
/// its mark is found and its payload resolved, but nobody is named, and the record says
/// that the content could not be compared rather than that the copy is another image.
#[test]
fn a_release_too_featureless_to_compare_names_nobody_and_says_why() {
    let env = TestEnv::new();
    let flat = tracemark::raster::Plane::from_vec(512, 512, vec![128.0; 512 * 512]);
    let descriptor = content::encode(&[content::describe(&flat)]);
    let (l, ids) = ledger_of(&env, 20, &descriptor);
    let leaked = stamp(&load("camera.png"), KEY, ids[3]);
    let (code, rec) = detect_with(&env, &l, &leaked, "leak.png");
    assert_eq!(code, 0, "{rec:?}");
    assert_eq!(
        rec.release.as_ref().map(|r| r.recipient.as_str()),
        Some("recipient 3")
    );
    assert!(rec.named.is_empty(), "{rec:?}");
    assert!(
        rec.content.iter().all(|c| c.r.is_none() && !c.matched),
        "{rec:?}"
    );
    let why = rec.not_named.as_deref().unwrap_or_default();
    assert!(why.contains("share too little detail"), "{rec:?}");
}

/// A phone photo of a 512-px release (camera.png, recipient 7 of 1,000) shown on a screen,
/// taken with the camera tilted 5 degrees (a keystone, moire, blur, noise, JPEG 85),
/// detected with `args`: the payload is read and the release is named with its content
/// compared in the corrected frame. The same photo of the unmarked original claims nothing,
/// and a forger's best case, the release's exact mark (stamped minus original) pasted onto
/// another 512-px image the recipient never received and then photographed on a screen,
/// names nobody: the payload may be read, but the content check in the corrected frame
/// fails. Returns the named photo's record.
fn screen_photo_names_the_release(args: &[&str]) -> tracemark::report::DetectionRecord {
    let env = TestEnv::new();
    let original = load("camera.png");
    let descriptor = content::encode(&[content::describe(&original.luminance())]);
    let (l, ids) = ledger_of(&env, 1000, &descriptor);
    let photo = |r: &Raster| screen_photo(r, 5.0, 1);
    let stamped = stamp(&original, KEY, ids[7]);
    let (code, named) = detect_with_args(&env, &l, &photo(&stamped), "photo.jpg", args);
    assert_reads_and_names(code, &named, ids[7], 7);
    let (code, rec) = detect_with_args(&env, &l, &photo(&original), "plain.jpg", args);
    assert_claims_nothing(code, &rec);
    let other = to_grey(&load("astronaut.png"));
    let forged = photo(&paste_mark(&stamped, &original, other));
    let (_, rec) = detect_with_args(&env, &l, &forged, "forged.jpg", args);
    assert!(rec.named.is_empty(), "a pasted mark named {rec:?}");
    named
}

/// A detection (exit `code`) that read the payload `id` and named its recipient, number
/// `i` of [`ledger_of`], alone, by the payload and the content.
fn assert_reads_and_names(code: i32, rec: &tracemark::report::DetectionRecord, id: u64, i: usize) {
    assert_eq!(code, 0, "{rec:?}");
    assert_eq!(rec.payload.as_deref(), Some(format!("{id:016x}").as_str()));
    assert_eq!(rec.named.len(), 1, "{rec:?}");
    assert_eq!(rec.named[0].recipient, format!("recipient {i}"));
    assert!(
        rec.named[0].basis.starts_with("payload + content"),
        "{rec:?}"
    );
}

/// A detection (exit `code`) that claims no mark and names nobody.
/// The hard leak of a small image: halved (triangle filter) and saved as JPEG 50 (4:2:0).
fn halved_jpeg50(r: &Raster) -> Raster {
    jpeg_420(&scale(r, 0.5, Filter::Triangle), 50)
}

/// The copy is attributed to `recipient` alone (exit 0).
fn assert_names_only(code: i32, rec: &tracemark::report::DetectionRecord, recipient: &str) {
    assert_eq!(code, 0, "{rec:?}");
    assert_eq!(rec.named.len(), 1, "{rec:?}");
    assert_eq!(rec.named[0].recipient, recipient, "{rec:?}");
}

fn assert_claims_nothing(code: i32, rec: &tracemark::report::DetectionRecord) {
    assert_eq!(code, 1, "{rec:?}");
    assert!(
        rec.verdict == Verdict::NoMark && rec.named.is_empty(),
        "{rec:?}"
    );
}

/// A forger's best case: the exact mark of `stamped` (stamped minus `original`, both 8-bit
/// grey) pasted onto `other`, an image of the same size (8-bit grey) its recipient never
/// received.
fn paste_mark(stamped: &Raster, original: &Raster, other: Raster) -> Raster {
    let (Samples::U8(m), Samples::U8(o), Samples::U8(g)) =
        (&stamped.samples, &original.samples, &other.samples)
    else {
        panic!("8-bit grey images");
    };
    let pasted: Vec<u8> = g
        .iter()
        .zip(m.iter().zip(o))
        .map(|(&g, (&m, &o))| (i16::from(g) + i16::from(m) - i16::from(o)).clamp(0, 255) as u8)
        .collect();
    Raster {
        samples: Samples::U8(pasted),
        ..other
    }
}

/// `--keystones` reads the photo of a screen ([`screen_photo_names_the_release`]) from the
/// copy with the keystone undone; the p-value counts every search.
#[test]
fn keystones_name_the_release_in_a_small_photo_of_a_screen() {
    let rec = screen_photo_names_the_release(&["--keystones"]);
    // The blind search's 5 candidates, once per keystone and once without.
    assert_eq!(rec.candidates, 5 * (1 + KEYSTONE_HYPOTHESES));
    let t = rec.transform.clone().expect("marked");
    assert!(t.undone_keystone.is_some(), "{t:?}");
}

/// Without `--keystones`, the default search finds the screen's frame in the copy alone,
/// rectifies it and reads the photo ([`screen_photo_names_the_release`]) from the rectified
/// copy; the p-value counts both searches, the copy's and the rectified copy's.
#[test]
fn the_default_search_names_the_release_in_a_small_photo_of_a_screen() {
    let rec = screen_photo_names_the_release(&[]);
    // The blind search's 5 candidates, on the copy and on the rectified copy, and the frame
    // search's 81 scales for the one size in the ledger (counted, though the payload was
    // read before it ran).
    assert_eq!(rec.candidates, 2 * 5 + 81);
    let t = rec.transform.clone().expect("marked");
    assert!(t.screen.is_some() && t.undone_keystone.is_none(), "{t:?}");
}

/// A thumbnail (a 160-px crop of camera.png: a tile and a quarter, so no lattice for the
/// blind search to find) photographed on a screen: a 200-px photo, the right edge 4 %
/// shorter at each end, turned by 1 degree, in a black room. With the ledger, the frame
/// search tries the released image's size on the rectified frame, reads the payload and
/// names the release; the photo of the unmarked thumbnail claims nothing, and its mark
/// pasted onto other photos names nobody.
#[test]
fn the_frame_search_names_the_release_in_a_photo_of_a_screen_showing_a_thumbnail() {
    let env = TestEnv::new();
    let (original, l, ids) = released_crop(&env, 160);
    let stamped = stamp(&original, KEY, ids[3]);
    let (code, rec) = detect_with(&env, &l, &tilted_photo(&stamped), "thumb.png");
    assert_reads_and_names(code, &rec, ids[3], 3);
    let t = rec.transform.clone().expect("marked");
    assert!(t.screen.is_some(), "{t:?}");
    // Two blind searches, the frame search's 81 scales and, since the photo is square like
    // the thumbnail, the whole-image search's 25 (counted, not run: the payload was read).
    assert_eq!(rec.candidates, 2 * 5 + 81 + 25);
    let (code, rec) = detect_with(&env, &l, &tilted_photo(&original), "plain.png");
    assert_claims_nothing(code, &rec);
    // A forger's best case: the thumbnail's exact mark pasted onto 160-px crops of other
    // photos, photographed the same way. Whatever the frame search reads (on these, the
    // payload), the content check in the rectified frame names nobody.
    assert_pasted_mark_names_nobody(&env, &l, &stamped, &original, tilted_photo);
}

/// A `side`-px crop of camera.png (8-bit grey) and a ledger of 1,000 releases whose files
/// each have its content descriptor (so the ledger holds its size), with their ids.
fn released_crop(env: &TestEnv, side: usize) -> (Raster, PathBuf, Vec<u64>) {
    let original = crop(&to_grey(&load("camera.png")), 150, 60, side, side);
    let descriptor = content::encode(&[content::describe(&original.luminance())]);
    let (l, ids) = ledger_of(env, 1000, &descriptor);
    (original, l, ids)
}

/// A forger's best case against a ledger `l`: the exact mark of `stamped` pasted onto
/// crops of two other photos of `original`'s size, then leaked by `leak`. Whatever the
/// detector reads, the content check names nobody.
fn assert_pasted_mark_names_nobody(
    env: &TestEnv,
    l: &Path,
    stamped: &Raster,
    original: &Raster,
    leak: fn(&Raster) -> Raster,
) {
    let (w, h) = (original.width, original.height);
    for (image, x, y) in [("coffee.png", 100, 100), ("astronaut.png", 20, 460 - h)] {
        let other = crop(&to_grey(&load(image)), x, y, w, h);
        let forged = leak(&paste_mark(stamped, original, other));
        let (_, rec) = detect_with(env, l, &forged, "forged.png");
        assert!(rec.named.is_empty(), "a pasted mark named {rec:?}");
        // A payload read is checked against the release's content, which fails.
        if rec.payload.is_some() {
            assert!(rec.content.iter().all(|c| !c.matched), "{rec:?}");
            assert!(
                !rec.content.is_empty() && rec.not_named.is_some(),
                "{rec:?}"
            );
        }
    }
}

/// Copies of a whole image rescaled: a thumbnail (a 160-px crop of camera.png) enlarged
/// to 240 px and saved as JPEG 90, and a 256-px crop downscaled to a third (85 px, whose
/// payload the blind search does not read: z 5.9 when written). With the ledger, each is
/// read and named by its content at the scale its size gives, and its p-value counts the
/// whole-image search's 25 scales besides the blind search's candidates (whether or not
/// that search ran); the same copies of the unmarked crops claim nothing, and the mark
/// pasted onto crops of two other photos names nobody.
#[test]
fn the_whole_image_search_names_the_release_in_a_rescaled_thumbnail() {
    type Attack = fn(&Raster) -> Raster;
    let attacks: [(usize, Attack, f64); 2] = [
        (160, |r| jpeg(&scale(r, 1.5, Filter::Triangle), 90), 1.5),
        (256, |r| scale(r, 1.0 / 3.0, Filter::Box), 1.0 / 3.0),
    ];
    for (n, attack, factor) in attacks {
        let env = TestEnv::new();
        let (original, l, ids) = released_crop(&env, n);
        let stamped = stamp(&original, KEY, ids[5]);
        let (code, rec) = detect_with(&env, &l, &attack(&stamped), "a.png");
        assert_reads_and_names(code, &rec, ids[5], 5);
        let t = rec.transform.clone().expect("marked");
        assert!((t.scale / factor - 1.0).abs() < 0.01, "{t:?}");
        assert!(t.screen.is_none(), "{t:?}");
        // The blind search's 5 candidates and the whole-image search's 25.
        assert_eq!(rec.candidates, 5 + 25);
        let (code, rec) = detect_with(&env, &l, &attack(&original), "plain.png");
        assert_claims_nothing(code, &rec);
        assert_pasted_mark_names_nobody(&env, &l, &stamped, &original, attack);
    }
}

/// Copies of a whole image turned on its canvas (black corners): a 256-px crop of
/// camera.png turned 2 degrees, and turned -2.5 degrees and downscaled 0.75 (192 px).
/// With the ledger, each is named by its payload and content, and its p-value counts the turned-canvas search's 25 scales (and, for the downscaled
/// one, the whole-image search's 25) besides the blind search's candidates, whether or not
/// those searches ran; the same copies of the unmarked crop claim nothing, and the mark
/// pasted onto crops of two other photos names nobody.
#[test]
fn the_turned_canvas_search_names_the_release_in_a_straightened_copy() {
    type Attack = fn(&Raster) -> Raster;
    let attacks: [(Attack, usize); 2] = [
        (|r| rotate(r, 2.0), 5 + 25),
        (
            |r| scale(&rotate(r, -2.5), 0.75, Filter::Triangle),
            5 + 25 + 25,
        ),
    ];
    for (attack, candidates) in attacks {
        let env = TestEnv::new();
        let (original, l, ids) = released_crop(&env, 256);
        let stamped = stamp(&original, KEY, ids[7]);
        let (code, rec) = detect_with(&env, &l, &attack(&stamped), "a.png");
        assert_reads_and_names(code, &rec, ids[7], 7);
        // Whichever search read it (the blind search may: camera.png is no texture; the
        // turned-canvas search's own reading is a unit test of the library).
        assert_eq!(rec.candidates, candidates);
        let (code, rec) = detect_with(&env, &l, &attack(&original), "plain.png");
        assert_claims_nothing(code, &rec);
        assert_pasted_mark_names_nobody(&env, &l, &stamped, &original, attack);
    }
}

/// A 200-px photo of `r` on a screen ([`testsignal::screen_photo`]), 8-bit grey.
fn tilted_photo(r: &Raster) -> Raster {
    testsignal::to_grey8(&testsignal::screen_photo(&r.luminance(), 200))
}

/// Small photos (512 px) under the attacks that defeat blind decoding, 12 copies each (3
/// photos x 4 releases) against 1,000 releases: how often blind decoding names the release,
/// how often the informed check names it when blind decoding abstains, and never a wrong one.
#[test]
fn informed_check_names_small_copies_blind_decoding_misses() {
    type Attack = fn(&Raster) -> Raster;
    let attacks: [(&str, Attack); 3] = [
        ("scale 0.33 cubic", |r| scale(r, 0.33, Filter::Cubic)),
        ("scale 0.33 box", |r| scale(r, 0.33, Filter::Box)),
        ("scale 0.5 + JPEG 50", halved_jpeg50),
    ];
    let env = TestEnv::new();
    let (l, ids) = ledger(&env, 1000);
    let mut report = Vec::new();
    for (a, (name, attack)) in attacks.iter().enumerate() {
        let (mut copies, mut blind, mut abstained, mut informed) = (0, 0, 0, 0);
        for (i, image) in ["camera.png", "astronaut.png", "coffee.png"]
            .iter()
            .enumerate()
        {
            let original = load(image);
            for j in 0..4 {
                let k = 311 * a + 100 * i + 17 * j + 3;
                let leaked = attack(&stamp(&original, KEY, ids[k]));
                let (_, rec) = detect_with(&env, &l, &leaked, &format!("a{a}-{i}-{j}.png"));
                let want = format!("recipient {k}");
                copies += 1;
                // Never a wrong release, by either route.
                assert!(
                    rec.release.as_ref().is_none_or(|r| r.recipient == want)
                        && rec.accused.iter().all(|x| x.recipient == want),
                    "{name}, {image}: {rec:?}"
                );
                if rec.release.is_some() {
                    blind += 1;
                } else {
                    abstained += 1;
                    informed += usize::from(!rec.accused.is_empty());
                }
            }
        }
        report.push(format!(
            "{name}: blind {blind}/{copies}; informed check named {informed} of the {abstained} blind decoding missed; right recipient named in {}/{copies}",
            blind + informed
        ));
        if a < 2 {
            // A third of the size: the sync survives; the fingerprint check finishes the job.
            assert!(
                2 * informed >= abstained && 3 * (blind + informed) >= 2 * copies,
                "{}",
                report.join("\n")
            );
        }
    }
    eprintln!("{}", report.join("\n"));
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
    // The blind decode of the mixed codeword may land on one colluder's id (the decoder
    // checks a list of paths against the CRC), never on anybody else's; the report must
    // still flag collusion.
    let colluders = [ids[10], ids[20]].map(|id| format!("{id:016x}"));
    assert!(
        rec.payload.as_ref().is_none_or(|p| colluders.contains(p)),
        "{rec:?}"
    );
    assert!(rec.possible_collusion, "{rec:?}");
}

/// `--original`: the leaks of a fine texture (grass.png, 512 px) that carry most of the
/// blind search's failures, examined against the released image. Every copy names its
/// recipient, never another; the same leaks of the unmarked texture, and of the texture
/// stamped under another key, claim nothing and name nobody; an unrelated image does not
/// register in the original.
#[test]
fn the_original_names_the_recipient_of_leaked_textures() {
    type Attack = fn(&Raster) -> Raster;
    let attacks: [(&str, Attack); 5] = [
        ("a third (box)", |r| scale(r, 1.0 / 3.0, Filter::Box)),
        ("a third (cubic)", |r| scale(r, 1.0 / 3.0, Filter::Cubic)),
        ("halved + JPEG 50", halved_jpeg50),
        ("blur sigma 2", |r| tracemark_leaks::blur(r, 2.0)),
        ("turned 1 degree, 0.75", |r| {
            scale(&rotate(r, 1.0), 0.75, Filter::Triangle)
        }),
    ];
    let env = TestEnv::new();
    let original = to_grey(&load("grass.png"));
    let original_path = env.save(&original, "grass-original.png");
    let descriptor = content::encode(&[content::describe(&original.luminance())]);
    let (l, ids) = ledger_of(&env, 1000, &descriptor);
    let with_original = ["--original", original_path.to_str().unwrap()];
    let mut blind = 0;
    for (a, (name, attack)) in attacks.iter().enumerate() {
        let k = 97 * a + 5;
        let want = format!("recipient {k}");
        let leaked = attack(&stamp(&original, KEY, ids[k]));
        let (code, rec) =
            detect_with_args(&env, &l, &leaked, &format!("leak{a}.png"), &with_original);
        assert_eq!(code, 0, "{name}: {rec:?}");
        assert_eq!(rec.named.len(), 1, "{name}: {rec:?}");
        assert_eq!(rec.named[0].recipient, want, "{name}: {rec:?}");
        assert!(
            rec.accused.iter().all(|x| x.recipient == want),
            "{name}: {rec:?}"
        );
        // Found against the original, whatever the copy alone gave.
        let o = rec
            .original
            .as_ref()
            .expect("examined against the original");
        assert!(o.registered && o.explained > 0.9, "{name}: {o:?}");
        let hex = format!("{:016x}", ids[k]);
        assert!(
            o.payload.as_ref() == Some(&hex)
                || rec
                    .accused
                    .iter()
                    .any(|x| x.against_original && x.release_id == hex),
            "{name}: {rec:?}"
        );
        // For the record: what the copy alone gives with the ledger.
        let (_, alone) = detect_with(&env, &l, &leaked, &format!("leak{a}.png"));
        blind += usize::from(!alone.named.is_empty());
        // The unmarked texture, and the texture under another key, leaked the same way.
        let other_key = stamp(&original, CASES[1].0, ids[k]);
        for (what, copy) in [
            ("unmarked", attack(&original)),
            ("another key", attack(&other_key)),
        ] {
            let (code, rec) =
                detect_with_args(&env, &l, &copy, &format!("null{a}.png"), &with_original);
            assert_claims_nothing(code, &rec);
            assert!(rec.accused.is_empty(), "{name}, {what}: {rec:?}");
            assert!(rec.original.is_some_and(|o| o.registered), "{name}, {what}");
        }
    }
    eprintln!(
        "named by the copy alone (with the ledger): {blind} of {}",
        attacks.len()
    );
    // An image that is not the original does not register, and nothing is looked for.
    let other = crop(&to_grey(&load("gravel.png")), 0, 0, 256, 256);
    let (code, rec) = detect_with_args(&env, &l, &other, "gravel.png", &with_original);
    assert_claims_nothing(code, &rec);
    let o = rec.original.expect("examined against the original");
    assert!(!o.registered && o.explained < 0.2, "{o:?}");
}

/// A forger's best case against `--original`: the exact mark of a stamped texture
/// (grass.png) pasted onto another texture (gravel.png) and halved + JPEG 50. Examined
/// against the image it shows, the pasted release's fingerprint is there, but the release
/// is of another image and the content check names nobody; examined against the stamped
/// image's original, the copy does not register.
#[test]
fn a_pasted_mark_names_nobody_against_the_original() {
    let env = TestEnv::new();
    let grass = to_grey(&load("grass.png"));
    let (w, h) = (grass.width, grass.height);
    let gravel = crop(&to_grey(&load("gravel.png")), 0, 0, w, h);
    let descriptor = content::encode(&[content::describe(&grass.luminance())]);
    let (l, ids) = ledger_of(&env, 1000, &descriptor);
    let stamped = stamp(&grass, KEY, ids[42]);
    let forged = halved_jpeg50(&paste_mark(&stamped, &grass, gravel.clone()));
    for (original, registers) in [(&gravel, true), (&grass, false)] {
        let path = env.save(original, "original.png");
        let args = ["--original", path.to_str().unwrap()];
        let (_, rec) = detect_with_args(&env, &l, &forged, "forged.png", &args);
        assert!(rec.named.is_empty(), "a pasted mark named {rec:?}");
        let o = rec
            .original
            .as_ref()
            .expect("examined against the original");
        assert_eq!(o.registered, registers, "{rec:?}");
        if registers {
            // The pasted mark is really there: found, and refused by the content check.
            assert!(
                rec.accused.iter().any(|a| a.against_original)
                    && rec.content.iter().all(|c| !c.matched)
                    && rec.not_named.is_some(),
                "{rec:?}"
            );
        }
    }
}

/// `--original` given a folder: the released texture among another texture and a photo.
/// A leak the blind search cannot read (halved + JPEG 50) is searched in the one it shows
/// and names its recipient; the unmarked texture leaked the same way claims nothing; the
/// forger's pasted mark (grass's onto gravel) registers in gravel, the image it shows, and
/// names nobody.
#[test]
fn a_folder_of_originals_searches_the_one_the_copy_shows() {
    let env = TestEnv::new();
    let grass = to_grey(&load("grass.png"));
    let (w, h) = (grass.width, grass.height);
    let gravel = crop(&to_grey(&load("gravel.png")), 0, 0, w, h);
    std::fs::create_dir(env.path("originals")).unwrap();
    env.save(&grass, "originals/grass.png");
    env.save(&gravel, "originals/gravel.png");
    env.save(&to_grey(&load("coffee.png")), "originals/coffee.png");
    let folder = env.path("originals");
    let args = ["--original", folder.to_str().unwrap()];
    let descriptor = content::encode(&[content::describe(&grass.luminance())]);
    let (l, ids) = ledger_of(&env, 1000, &descriptor);
    let stamped = stamp(&grass, KEY, ids[7]);
    let leaked = halved_jpeg50(&stamped);
    let (code, rec) = detect_with_args(&env, &l, &leaked, "leak.png", &args);
    assert_names_only(code, &rec, "recipient 7");
    let o = rec.original.expect("examined against the originals");
    assert!(o.path.ends_with("grass.png") && o.registered, "{o:?}");
    assert_eq!(o.compared, 3, "{o:?}");
    // The unmarked texture leaked the same way: registered, nothing claimed, nobody accused.
    let unmarked = halved_jpeg50(&grass);
    let (code, rec) = detect_with_args(&env, &l, &unmarked, "unmarked.png", &args);
    assert_claims_nothing(code, &rec);
    assert!(rec.accused.is_empty(), "{rec:?}");
    assert!(
        rec.original
            .is_some_and(|o| o.registered && o.path.ends_with("grass.png"))
    );

    let forged = halved_jpeg50(&paste_mark(&stamped, &grass, gravel.clone()));
    let (_, rec) = detect_with_args(&env, &l, &forged, "forged.png", &args);
    assert!(rec.named.is_empty(), "a pasted mark named {rec:?}");
    let o = rec.original.expect("examined against the originals");
    assert!(o.path.ends_with("gravel.png") && o.registered, "{o:?}");
}

/// `--original` given a multi-frame DICOM: a leak of one frame (its display plane released
/// as an 8-bit image, then blurred) is searched in that frame, named by its number, and
/// names its recipient; the copy was compared with the frames' mean and each frame.
#[test]
fn a_leaked_frame_is_searched_in_its_frame_of_the_original() {
    let env = TestEnv::new();
    let dicom = crate::util::testdata("MR2_3frames.dcm");
    let doc = tracemark::pipeline::Document::open(&dicom, &Default::default()).unwrap();
    let frames = doc.frame_planes();
    assert_eq!(frames.len(), 3);
    let p = &frames[1];
    let frame = Raster {
        width: p.width,
        height: p.height,
        channels: 1,
        samples: Samples::U8(
            p.data
                .iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
        ),
    };
    let descriptor = content::encode(&[content::describe(&frame.luminance())]);
    let (l, ids) = ledger_of(&env, 1000, &descriptor);
    let leaked = tracemark_leaks::blur(&stamp(&frame, KEY, ids[3]), 2.0);
    let args = ["--original", dicom.to_str().unwrap()];
    let (code, rec) = detect_with_args(&env, &l, &leaked, "frame.png", &args);
    assert_names_only(code, &rec, "recipient 3");
    let o = rec.original.expect("examined against the original");
    assert!(o.path.ends_with("(frame 2 of 3)") && o.registered, "{o:?}");
    assert_eq!(o.compared, 4, "{o:?}");
}

/// A photo of a screen showing a stamped texture, tilted 10 degrees (a keystone the affine
/// registration cannot follow): against the original, the copy is registered as the
/// screen's frame rectified shows it, and names its recipient; the transform names the
/// frame. The unmarked texture photographed the same way registers too and claims nothing.
#[test]
fn a_photo_of_a_screen_is_read_against_the_original() {
    let env = TestEnv::new();
    let grass = to_grey(&load("grass.png"));
    let original = env.save(&grass, "grass.png");
    let args = ["--original", original.to_str().unwrap()];
    let descriptor = content::encode(&[content::describe(&grass.luminance())]);
    let (l, ids) = ledger_of(&env, 1000, &descriptor);
    let photo = |r: &Raster| screen_photo(r, 10.0, 3);
    let (code, rec) = detect_with_args(
        &env,
        &l,
        &photo(&stamp(&grass, KEY, ids[11])),
        "photo.png",
        &args,
    );
    assert_names_only(code, &rec, "recipient 11");
    let o = rec
        .original
        .as_ref()
        .expect("examined against the original");
    assert!(o.registered && o.corrected && o.explained > 0.9, "{o:?}");

    let (code, rec) = detect_with_args(&env, &l, &photo(&grass), "unmarked.png", &args);
    assert_claims_nothing(code, &rec);
    assert!(rec.accused.is_empty(), "{rec:?}");
    assert!(
        rec.original.is_some_and(|o| o.registered),
        "the unmarked photo registers too"
    );
}

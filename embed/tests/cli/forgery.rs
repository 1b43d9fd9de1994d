//! Issue 10, finding 1: the copy attack. One stamped copy (or three) is enough to estimate
//! the mark and paste it onto images the recipient never received; the pasted copies read
//! back the recipient's payload. A recipient is now named only when the copy's content
//! matches one of the release's files, so none of these forgeries names anybody, while a
//! real leak of the same release still does.
//!
//! Finding 2: averaging the files of one release to estimate and subtract their common
//! pattern. Each file of a release now carries its own tile variant, so the average holds
//! no common pattern, and every attacked file still names the recipient.

use std::path::Path;

use rayon::prelude::*;
use tracemark::SecretKey;
use tracemark::io::Limits;
use tracemark::io::image::read;
use tracemark::ledger::Ledger;
use tracemark::mark::detect::DetectOptions;
use tracemark::pipeline::{Document, Examiner};
use tracemark::raster::Raster;
use tracemark::report::{DetectionRecord, Verdict};
use tracemark_leaks::forge::{Estimate, synthetic_innocents};
use tracemark_leaks::{Filter, crop_fraction, jpeg, jpeg_420, scale};

use crate::batch::batch_cmd;
use crate::{Env, testdata};

/// A DICOM file's display plane as the 8-bit image a viewer would export.
fn dicom_export(name: &str) -> Raster {
    let doc = Document::open(&testdata(name), &Limits::default()).unwrap();
    tracemark::testsignal::to_grey8(&doc.detection_plane().unwrap())
}

/// A study folder holding `files` from testdata plus `extra` rasters (saved as PNG), released
/// to Dr A with a ledger: the release folder, and an examiner with that ledger.
fn release(
    env: &Env,
    files: &[&str],
    extra: &[(String, Raster)],
) -> (std::path::PathBuf, Examiner) {
    let ledger = env.path("l.db");
    let study = env.path("study");
    std::fs::create_dir(&study).unwrap();
    for f in files {
        std::fs::copy(testdata(f), study.join(f)).unwrap();
    }
    for (name, r) in extra {
        tracemark::io::image::write(
            r,
            &study.join(name),
            &tracemark::io::image::WriteOptions::default(),
        )
        .unwrap();
    }
    let out = env.path("released");
    let o = batch_cmd(env, &ledger, "Dr A", &[&study], &out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let key = SecretKey::load_file(&env.key).unwrap();
    let l = Ledger::open_verified(&ledger, &key).unwrap();
    let ex = Examiner::new(&key, DetectOptions::default())
        .with_ledger(&l)
        .unwrap();
    (out, ex)
}

fn examine(ex: &Examiner, image: &Raster, name: &str) -> DetectionRecord {
    ex.examine_plane(Path::new(name), &image.luminance())
        .unwrap()
}

#[test]
fn pasted_marks_name_nobody_and_a_real_leak_still_names_its_recipient() {
    let env = Env::new();
    let files = ["camera.png", "coffee.png", "retina.jpg"];
    let (out, ex) = release(&env, &files, &[]);
    let copies: Vec<Raster> = files
        .iter()
        .map(|f| read(&out.join(f), &Limits::default()).unwrap().0)
        .collect();

    // A real leak of the release: named, by its payload and the camera's content.
    let leak = jpeg(&crop_fraction(&copies[0], 0.5, 0.2, 0.7), 75);
    let rec = examine(&ex, &leak, "leak.jpg");
    assert_eq!(rec.named.len(), 1, "{rec:?}");
    assert_eq!(rec.named[0].recipient, "Dr A");
    assert!(rec.named[0].basis.contains("camera.png"), "{rec:?}");

    let estimates = [
        ("raw residual", Estimate::raw(&copies[0])),
        ("one-copy tile", Estimate::tile(&[&copies[0]])),
        (
            "three-copy tile",
            Estimate::tile(&[&copies[0], &copies[1], &copies[2]]),
        ),
    ];
    let mut innocents: Vec<(&str, Raster)> = vec![
        (
            "photo",
            read(&testdata("astronaut.png"), &Limits::default())
                .unwrap()
                .0,
        ),
        ("MR export", dicom_export("MR2_UNCR.dcm")),
        (
            "radiograph export",
            scale(&dicom_export("RG1_UNCR.dcm"), 0.4, Filter::Box),
        ),
    ];
    innocents.extend(synthetic_innocents(512, 7));
    assert!(innocents.len() >= 8);
    let mut jobs = Vec::new();
    for (kind, target) in &innocents {
        for (est_name, est) in &estimates {
            for psnr in [44.0, 48.0] {
                let forged = est.paste(target, psnr, 1.0);
                jobs.push((format!("{kind}, {est_name}, {psnr} dB"), forged.clone()));
                if psnr == 44.0 {
                    jobs.push((
                        format!("{kind}, {est_name}, {psnr} dB, JPEG 80"),
                        jpeg_420(&forged, 80),
                    ));
                }
            }
        }
    }
    let results: Vec<(String, DetectionRecord)> = jobs
        .par_iter()
        .map(|(name, img)| (name.clone(), examine(&ex, img, name)))
        .collect();
    let (mut carried, mut best_r) = (0, f64::NEG_INFINITY);
    for (name, rec) in &results {
        for c in &rec.content {
            best_r = best_r.max(c.r.unwrap_or(f64::NEG_INFINITY));
        }
        assert!(rec.named.is_empty(), "{name}: {rec:?}");
        if rec.verdict == Verdict::Marked {
            assert!(rec.not_named.is_some(), "{name}: {rec:?}");
        }
        carried += usize::from(rec.release.is_some() || !rec.accused.is_empty());
    }
    // How many forgeries carried the release's mark (named before content binding).
    eprintln!(
        "{carried} of {} forgeries carried Dr A's release; none named (largest content r {best_r:.2})",
        results.len()
    );
}

/// Finding 2, at 3 and 10 files: the residual tiles of the release's files averaged and
/// subtracted from each file at PSNR 41.8 dB (the review's attack: `no_mark`, z 4.9).
#[test]
fn averaging_a_releases_files_does_not_remove_the_mark() {
    let env = Env::new();
    // Seven more files besides three photos: 512-px windows of the retina photo.
    let retina = read(&testdata("retina.jpg"), &Limits::default()).unwrap().0;
    let parts: Vec<(String, Raster)> = (0..7)
        .map(|i| {
            let (x, y) = (
                (i * 211) % (retina.width - 512),
                (i * 137) % (retina.height - 512),
            );
            (
                format!("retina-{i}.png"),
                tracemark_leaks::crop(&retina, x, y, 512, 512),
            )
        })
        .collect();
    let (out, ex) = release(&env, &["camera.png", "coffee.png", "astronaut.png"], &parts);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 10);
    let copies: Vec<Raster> = names
        .iter()
        .map(|f| read(&out.join(f), &Limits::default()).unwrap().0)
        .collect();
    for n in [3, 10] {
        let held: Vec<&Raster> = copies[..n].iter().collect();
        let estimate = Estimate::tile(&held);
        let results: Vec<(usize, DetectionRecord)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let attacked = estimate.paste(held[i], 41.8, -1.0);
                (i, examine(&ex, &attacked, &names[i]))
            })
            .collect();
        let min_z = results.iter().map(|r| r.1.z).fold(f64::INFINITY, f64::min);
        eprintln!(
            "{n} files averaged and subtracted: smallest sync z {min_z:.1}, every file named"
        );
        for (i, rec) in results {
            assert!(
                rec.named.len() == 1 && rec.named[0].recipient == "Dr A",
                "{n} files, {}: {rec:?}",
                names[i]
            );
        }
    }
}

/// Issue 11, finding 5: an image larger than the examined window (4096 px) is examined in its
/// central window; the copy attack still names nobody there, and the release's own file,
/// examined the same way, still names its recipient by payload and content.
#[test]
fn windowed_examination_keeps_content_binding() {
    let env = Env::new();
    let side = 4352;
    let big = |name: &str| {
        let (r, _) = read(&testdata(name), &Limits::default()).unwrap();
        let r = crop_fraction(&r, 1.0, 0.5, 0.5);
        scale(
            &r,
            side as f64 / r.width.min(r.height) as f64,
            Filter::Cubic,
        )
    };
    let (out, ex) = release(&env, &[], &[("big.png".into(), big("astronaut.png"))]);
    let released = out.join("big.png");
    let rec = ex.examine(&released).unwrap();
    assert!(rec.examined_window.is_some(), "{rec:?}");
    assert_eq!(rec.named.len(), 1, "{rec:?}");
    assert_eq!(rec.named[0].recipient, "Dr A");
    // The mark estimated from the released copy, pasted onto another large image.
    let copy = read(&released, &Limits::default()).unwrap().0;
    let forged = Estimate::tile(&[&copy]).paste(&big("coffee.png"), 44.0, 1.0);
    let forged_path = env.path("forged.png");
    tracemark::io::image::write(
        &forged,
        &forged_path,
        &tracemark::io::image::WriteOptions::default(),
    )
    .unwrap();
    let rec = ex.examine(&forged_path).unwrap();
    assert!(rec.examined_window.is_some(), "{rec:?}");
    assert!(rec.named.is_empty(), "{rec:?}");
    eprintln!(
        "forgery on a {side}-px image: {:?}, release read {}, not named: {:?}",
        rec.verdict,
        rec.release.is_some(),
        rec.not_named
    );
}

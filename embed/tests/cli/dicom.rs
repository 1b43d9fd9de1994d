//! DICOM: the real files in testdata stamped by the binary; attributes kept, values within
//! Bits Stored, the payload back from the DICOM and from 8-bit exports under other windows;
//! bad DICOM refused naming the attribute.

use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::open_file;
use tracemark::io::Limits;
use tracemark::io::dicom::{CHANGED_IF_PALETTE, CHANGED_TAGS, DicomImage, Window};
use tracemark::io::image::{WriteOptions, write};
use tracemark::mark::detect::DetectOptions;
use tracemark::pipeline::Document;
use tracemark::report::EmbeddingRecord;

use crate::{Env, PAYLOAD, testdata};

fn payload() -> u64 {
    u64::from_str_radix(PAYLOAD, 16).unwrap()
}

fn load(p: &Path) -> DicomImage {
    DicomImage::decode(p, &std::fs::read(p).unwrap(), &Limits::default()).unwrap()
}

/// Stamps `name` from testdata into the env; returns the output and the record.
fn stamp_dicom(env: &Env, name: &str, extra: &[&str]) -> (PathBuf, EmbeddingRecord) {
    let out = env.path(name);
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let o = env.stamp(&testdata(name), &out, &args);
    assert!(o.status.success(), "{name}: {o:?}");
    let rec: EmbeddingRecord = serde_json::from_slice(&o.stdout).unwrap();
    (out, rec)
}

/// May this tag differ between a source and its stamped copy?
fn may_change(tag: Tag) -> bool {
    CHANGED_TAGS.contains(&tag)
        || (tag.element() == 0 && CHANGED_TAGS.iter().any(|t| t.group() == tag.group()))
}

#[test]
fn every_dicom_file_keeps_its_attributes_and_carries_the_payload() {
    let env = Env::new();
    let detector = env.detector();
    for name in [
        "RG1_UNCR.dcm",
        "MR2_UNCR.dcm",
        "693_UNCR.dcm",
        "CT_small.dcm",
        "US1_UNCR.dcm",
        "MR2_3frames.dcm",
        "CT_small_rle.dcm",
        "CT_small_j2k.dcm",
        "CT_small_jpegll.dcm",
        "CT_small_deflate.dcm",
        "US1_jpeg.dcm",
        "US1_planar.dcm",
        "CT_small_implicit.dcm",
        "CT_small_bigendian.dcm",
        "CT_enhanced.dcm",
        "MR_enhanced_perframe.dcm",
        "CT_two_windows.dcm",
        "CT_voi_lut.dcm",
        "US1_palette.dcm",
    ] {
        let (out, rec) = stamp_dicom(&env, name, &[]);
        let info = rec.dicom.as_ref().expect("DICOM record");
        // Reads back with dicom-rs.
        let a = open_file(testdata(name)).unwrap();
        let b = open_file(&out).unwrap();
        let source = load(&testdata(name));
        // Every attribute other than the pixels, the UIDs and the derivation bookkeeping is
        // byte-identical; nothing else is added.
        // The change in modality units is the stored change times the rescale slope.
        let slope = source.rescale.0.abs();
        assert!(
            (info.max_abs_modality - info.max_abs_stored as f64 * slope).abs() < 0.01,
            "{name}: {info:?}"
        );
        let palette = name.contains("palette");
        for e in a.iter() {
            if may_change(e.tag()) || (palette && CHANGED_IF_PALETTE.contains(&e.tag())) {
                continue;
            }
            assert_eq!(b.get(e.tag()), Some(e), "{name}: {:?} changed", e.tag());
        }
        for e in b.iter() {
            assert!(
                a.get(e.tag()).is_some()
                    || may_change(e.tag())
                    || (palette && CHANGED_IF_PALETTE.contains(&e.tag())),
                "{name}: {:?} added",
                e.tag()
            );
        }
        if !source.transcoded && !source.palette_expanded {
            for t in [tags::PHOTOMETRIC_INTERPRETATION, tags::PLANAR_CONFIGURATION] {
                assert_eq!(a.get(t), b.get(t), "{name}: {t:?}");
            }
        }
        // A new instance, consistent between the dataset and the file meta, that names its
        // source and says it is derived.
        let uid = b.element(tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap();
        let uid = uid.trim_end_matches('\0');
        assert_ne!(uid, source.sop_instance_uid(), "{name}");
        assert_eq!(
            b.meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0'),
            uid
        );
        assert_eq!(info.sop_instance_uid, uid);
        assert!(uid.starts_with("2.25.") && uid.len() <= 64);
        let image_type = b.element(tags::IMAGE_TYPE).unwrap().to_multi_str().unwrap();
        assert_eq!(image_type[0], "DERIVED", "{name}");
        // Enhanced objects keep the derivation in the shared functional groups.
        let derivation = b
            .element(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
            .ok()
            .map(|e| {
                let d = e.items().unwrap()[0]
                    .element(tags::DERIVATION_IMAGE_SEQUENCE)
                    .unwrap()
                    .items()
                    .unwrap();
                d[d.len() - 1].clone()
            });
        let holder = derivation.as_ref().unwrap_or(&b);
        let src = holder
            .element(tags::SOURCE_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0]
            .element(tags::REFERENCED_SOP_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string();
        assert_eq!(src, source.sop_instance_uid());
        let description = holder
            .element(tags::DERIVATION_DESCRIPTION)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(description.contains("tracemark"), "{description}");
        // Same geometry; every stored value within Bits Stored and the signedness; the
        // change reported is the change made.
        let marked = load(&out);
        assert_eq!(
            (marked.frames, marked.rows, marked.cols, marked.spp),
            (source.frames, source.rows, source.cols, source.spp)
        );
        let (lo, hi) = source.stored_range();
        assert!(
            marked.stored.iter().all(|&v| (lo..=hi).contains(&v)),
            "{name}"
        );
        let max = marked
            .stored
            .iter()
            .zip(&source.stored)
            .map(|(x, y)| (i64::from(*x) - i64::from(*y)).abs())
            .max()
            .unwrap();
        assert_eq!(max, info.max_abs_stored, "{name}");
        assert!(max > 0);
        assert!(rec.psnr_db >= 41.0, "{name}: PSNR {}", rec.psnr_db);
        // The payload comes back from the DICOM output.
        let d = detector
            .detect(
                &Document::open(&out, &Limits::default())
                    .unwrap()
                    .detection_plane()
                    .unwrap(),
                &DetectOptions::default(),
            )
            .unwrap();
        assert_eq!(d.payload, Some(payload()), "{name}: z {}", d.z);
        eprintln!(
            "{name}: {} frame(s) {}x{}, PSNR {:.2} dB in its window, max change {} stored ({:?} HU), RMS {:.2}, z {:.1}",
            marked.frames,
            marked.cols,
            marked.rows,
            rec.psnr_db,
            info.max_abs_stored,
            info.max_abs_hu,
            info.rms_stored,
            d.z
        );
    }
}

#[test]
fn keep_uids_and_the_stored_change_cap() {
    let env = Env::new();
    let (out, rec) = stamp_dicom(
        &env,
        "MR2_UNCR.dcm",
        &["--keep-uids", "--max-stored-change", "5"],
    );
    let b = open_file(&out).unwrap();
    let source = load(&testdata("MR2_UNCR.dcm"));
    let uid = b.element(tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap();
    assert_eq!(uid.trim_end_matches('\0'), source.sop_instance_uid());
    assert!(b.get(tags::SOURCE_IMAGE_SEQUENCE).is_none());
    let info = rec.dicom.unwrap();
    assert!(info.max_abs_stored <= 5, "{info:?}");
    let d = env
        .detector()
        .detect(
            &Document::open(&out, &Limits::default())
                .unwrap()
                .detection_plane()
                .unwrap(),
            &DetectOptions::default(),
        )
        .unwrap();
    assert_eq!(d.payload, Some(payload()));
}

/// 8-bit exports as a viewer makes them: the file's own window, the width changed by
/// +-30 %, the centre moved by 15 % of the width either way, MONOCHROME1 ignored; each as
/// PNG and as JPEG 75 (a new random key each run).
#[test]
fn exports_under_other_windows_carry_the_payload() {
    let env = Env::new();
    let detector = env.detector();
    for name in [
        "RG1_UNCR.dcm",
        "MR2_UNCR.dcm",
        "693_UNCR.dcm",
        "CT_small.dcm",
        "US1_UNCR.dcm",
    ] {
        let (out, _) = stamp_dicom(&env, name, &[]);
        let img = load(&out);
        for (what, window, honour) in tracemark_leaks::viewer_exports(img.window) {
            let export = img.export_8bit(0, Some(window), honour);
            // CT_small is 128 x 128 px, one tile: after JPEG 75 only about two in three of
            // its exports carry the payload (39 of 60 over 10 keys), so it is not held to
            // that; and even a lossless export in another window can keep the mark but lose
            // the payload for some keys (CI, once: width -30 %, z 12.2, no payload). For it
            // the guarantee is the mark; for the others, the payload.
            let small = name == "CT_small.dcm";
            let qualities: &[Option<u8>] = if small { &[None] } else { &[None, Some(75)] };
            for &jpeg in qualities {
                let leaked =
                    jpeg.map_or_else(|| export.clone(), |q| tracemark_leaks::jpeg(&export, q));
                let d = detector
                    .detect(&leaked.luminance(), &DetectOptions::default())
                    .unwrap();
                if small {
                    assert!(d.marked, "{name}, {what}: z {:.1}", d.z);
                    assert!(d.payload.is_none_or(|p| p == payload()), "{name}, {what}");
                    continue;
                }
                assert_eq!(
                    d.payload,
                    Some(payload()),
                    "{name}, {what}, JPEG {jpeg:?}: z {:.1}",
                    d.z
                );
            }
        }
    }
    // End to end through the detector binary: a JPEG export of the chest radiograph with
    // MONOCHROME1 ignored and a wider window, and the DICOM itself.
    let (out, _) = stamp_dicom(&env, "RG1_UNCR.dcm", &["--force"]);
    let img = load(&out);
    let export = img.export_8bit(
        0,
        Some(Window {
            width: img.window.width * 1.3,
            ..img.window
        }),
        false,
    );
    let jpg = env.path("chest-export.jpg");
    write(
        &export,
        &jpg,
        &WriteOptions {
            jpeg_quality: 75,
            force: true,
        },
    )
    .unwrap();
    let detect =
        Path::new(env!("CARGO_BIN_EXE_tracemark-embed")).with_file_name("tracemark-detect");
    assert!(
        detect.exists(),
        "run the tests with `cargo test --workspace`"
    );
    let o = Command::new(detect)
        .arg("--key")
        .arg(&env.key)
        .arg(&jpg)
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert_eq!(
        text.matches(&format!("payload {PAYLOAD}")).count(),
        2,
        "{text}"
    );
}

#[test]
fn frames_too_small_for_a_mark_are_refused() {
    let env = Env::new();
    let out = env.path("emri.dcm");
    let o = env.stamp(&testdata("emri_small.dcm"), &out, &[]);
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Refused either because the montage does not read back or, for some keys, because the
    // montage's mark puts one 64-px frame more than 0.5 dB below the target in its window
    // (the clinical check runs first).
    assert!(
        err.contains("emri_small.dcm")
            && (err.contains("too small") || err.contains("dB below the 42 dB target")),
        "{err}"
    );
    assert!(!out.exists());
}

/// Writes a broken variant of CT_small made by `edit`.
fn broken(
    env: &Env,
    name: &str,
    edit: impl FnOnce(&mut dicom_object::DefaultDicomObject),
) -> PathBuf {
    let mut obj = open_file(testdata("CT_small.dcm")).unwrap();
    edit(&mut obj);
    let p = env.path(name);
    obj.write_to_file(&p).unwrap();
    p
}

#[test]
fn bad_dicom_is_refused_naming_the_attribute() {
    let env = Env::new();
    let us = |v: u16| PrimitiveValue::from(v);
    let truncated = env.path("truncated.dcm");
    let full = std::fs::read(testdata("MR2_UNCR.dcm")).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            truncated,
            "DICOM element (7FE0,0010): declared length 2097152",
        ),
        (
            broken(&env, "no-pixels.dcm", |o| {
                o.remove_element(tags::PIXEL_DATA);
            }),
            "Pixel Data (7FE0,0010)",
        ),
        (
            broken(&env, "jpeg-ls.dcm", |o| {
                o.update_meta(|m| m.transfer_syntax = "1.2.840.10008.1.2.4.80".into());
            }),
            "Transfer Syntax UID (0002,0010) 1.2.840.10008.1.2.4.80",
        ),
        (
            broken(&env, "palette.dcm", |o| {
                o.put(DataElement::new(
                    tags::PHOTOMETRIC_INTERPRETATION,
                    VR::CS,
                    PrimitiveValue::from("PALETTE COLOR"),
                ));
            }),
            // PALETTE COLOR is expanded to RGB; without its tables it cannot be.
            "Palette Color Lookup Table (0028,1101-1203): a table descriptor is missing",
        ),
        (
            broken(&env, "rows.dcm", |o| {
                o.put(DataElement::new(tags::ROWS, VR::US, us(256)));
            }),
            "Pixel Data (7FE0,0010)",
        ),
        (
            broken(&env, "bits.dcm", |o| {
                o.put(DataElement::new(tags::BITS_STORED, VR::US, us(17)));
            }),
            "Bits Stored (0028,0101)",
        ),
        (
            broken(&env, "highbit.dcm", |o| {
                o.put(DataElement::new(tags::HIGH_BIT, VR::US, us(11)));
            }),
            "High Bit (0028,0102)",
        ),
        (
            broken(&env, "bits32.dcm", |o| {
                o.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, us(32)));
            }),
            "Bits Allocated (0028,0100) 32",
        ),
    ];
    for (input, needle) in cases {
        let out = env.path("out.dcm");
        let before = std::fs::read(&input).unwrap();
        let o = env.stamp(&input, &out, &[]);
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(o.status.code(), Some(2), "{input:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let file = input.file_name().unwrap().to_str().unwrap();
        assert!(
            err.contains(file) && err.contains(needle),
            "{err} lacks {file} / {needle}"
        );
        assert!(!out.exists(), "{input:?}: output written");
        assert_eq!(std::fs::read(&input).unwrap(), before, "input modified");
    }
    // A DICOM input must be written as DICOM, and only DICOM inputs can be.
    let o = env.stamp(&testdata("CT_small.dcm"), &env.path("ct.png"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("written as DICOM"));
    let o = env.stamp(&testdata("camera.png"), &env.path("camera.dcm"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("only DICOM inputs"));
}

/// PSNR between two display renderings of one frame's stored values through a linear window
/// (PS3.3 C.11.2.1.2), computed here from the stored values alone.
fn window_psnr(a: &[i32], b: &[i32], rescale: (f64, f64), center: f64, width: f64) -> f64 {
    let level = |v: i32| {
        let x = f64::from(v) * rescale.0 + rescale.1;
        ((x - (center - 0.5)) / (width - 1.0) + 0.5).clamp(0.0, 1.0) * 255.0
    };
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (level(x) - level(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// A frame's rescale (slope, intercept) and the windows (center, width) declared for it.
type FrameWindows = ((f64, f64), Vec<(f64, f64)>);

/// Issue 12: windows declared only in the functional groups (Enhanced CT/MR, shared and per
/// frame) and several windows at the top level: the stamp holds the PSNR target within
/// 0.5 dB in each window at each frame (the Enhanced CT was stamped in its value range:
/// 17.9 dB and changes of 255 levels in its own 40/100 window), the record lists the PSNR per
/// window, and an export in the file's own window carries the payload.
#[test]
fn windows_in_functional_groups_hold_the_target_per_frame() {
    let env = Env::new();
    let detector = env.detector();
    // (file, per frame: rescale and the windows the file declares for it)
    let ct = ((1.0, -1024.0), vec![(40.0, 100.0)]);
    let mr_slope = 3.774114;
    let cases: Vec<(&str, Vec<FrameWindows>, &str)> = vec![
        (
            "CT_enhanced.dcm",
            vec![ct.clone(), ct],
            "shared functional group",
        ),
        (
            "MR_enhanced_perframe.dcm",
            [(1000.0, 2000.0), (600.0, 800.0), (1500.0, 3000.0)]
                .into_iter()
                .map(|w| ((mr_slope, 0.0), vec![w]))
                .collect(),
            "per-frame functional group",
        ),
        (
            "CT_two_windows.dcm",
            vec![((1.0, -1024.0), vec![(40.0, 100.0), (300.0, 1500.0)])],
            "top level",
        ),
    ];
    for (name, frames, source) in cases {
        let (out, rec) = stamp_dicom(&env, name, &[]);
        let (a, b) = (load(&testdata(name)), load(&out));
        let fl = a.rows * a.cols;
        for (f, (rescale, windows)) in frames.iter().enumerate() {
            for &(c, w) in windows {
                let p = window_psnr(
                    &a.stored[f * fl..(f + 1) * fl],
                    &b.stored[f * fl..(f + 1) * fl],
                    *rescale,
                    c,
                    w,
                );
                assert!(
                    p >= 41.5,
                    "{name} frame {} window {c}/{w}: {p:.2} dB",
                    f + 1
                );
            }
        }
        let d = rec.dicom.unwrap();
        let declared: std::collections::BTreeSet<String> = frames
            .iter()
            .flat_map(|(_, ws)| ws.iter().map(|(c, w)| format!("{c}/{w}")))
            .collect();
        let reported: std::collections::BTreeSet<String> = d
            .windows
            .iter()
            .map(|w| format!("{}/{}", w.window[0], w.window[1]))
            .collect();
        assert_eq!(reported, declared, "{name}");
        assert!(
            d.windows
                .iter()
                .all(|w| w.source == source && w.psnr_db >= 41.5)
        );
        assert!(d.window_from_file, "{name}");
        // Traced from an export in its own window (frame 1).
        let export = b.export_8bit(0, None, true);
        let found = detector
            .detect(&export.luminance(), &DetectOptions::default())
            .unwrap();
        assert_eq!(found.payload, Some(payload()), "{name}: z {:.1}", found.z);
    }
}

/// Issue 12: a Presentation LUT Shape of INVERSE is shown inverted, like MONOCHROME1 (the mark
/// is computed on what the viewer shows), and an export as shown carries the payload.
#[test]
fn an_inverse_presentation_lut_is_shown_inverted() {
    let env = Env::new();
    let input = broken(&env, "inverse.dcm", |o| {
        o.put(DataElement::new(
            tags::PRESENTATION_LUT_SHAPE,
            VR::CS,
            PrimitiveValue::from("INVERSE"),
        ));
    });
    let plain = load(&testdata("CT_small.dcm"));
    let inverse = load(&input);
    assert!(inverse.shows_inverted() && !plain.shows_inverted());
    let (a, b) = (
        plain.display_frame(0, None, true),
        inverse.display_frame(0, None, true),
    );
    assert!(
        a.data
            .iter()
            .zip(&b.data)
            .all(|(x, y)| (x + y - 255.0).abs() < 1e-3)
    );
    let out = env.path("inverse-out.dcm");
    let o = env.stamp(&input, &out, &[]);
    assert!(o.status.success(), "{o:?}");
    let shown = load(&out).export_8bit(0, None, true);
    let d = env
        .detector()
        .detect(&shown.luminance(), &DetectOptions::default())
        .unwrap();
    assert_eq!(d.payload, Some(payload()), "z {:.1}", d.z);
}

/// Issue 12: a VOI LUT Sequence instead of a window (CT_voi_lut.dcm: gamma 0.6 over -200..400
/// HU, 12-bit entries). The mark follows the LUT's local slope: PSNR through the LUT, computed
/// here from the fixture's definition, within 0.5 dB of the target or above (it was 31.5 dB,
/// with changes of 127 levels, marked through the value range); the export through the LUT
/// carries the payload.
#[test]
fn a_voi_lut_is_honoured() {
    let env = Env::new();
    let (out, rec) = stamp_dicom(&env, "CT_voi_lut.dcm", &[]);
    let table: Vec<f64> = (0..600)
        .map(|i| (4095.0 * (f64::from(i) / 599.0).powf(0.6)).round() / 4095.0 * 255.0)
        .collect();
    let shown = |v: i32| table[(f64::from(v) - 1024.0 + 200.0).round().clamp(0.0, 599.0) as usize];
    let (a, b) = (load(&testdata("CT_voi_lut.dcm")), load(&out));
    let mse = a
        .stored
        .iter()
        .zip(&b.stored)
        .map(|(&x, &y)| (shown(y) - shown(x)).powi(2))
        .sum::<f64>()
        / a.stored.len() as f64;
    let psnr = 10.0 * (255.0f64 * 255.0 / mse).log10();
    assert!(psnr >= 41.5, "{psnr:.2} dB through the LUT");
    let d = rec.dicom.unwrap();
    assert_eq!(d.windows.len(), 1);
    assert!(
        (d.windows[0].psnr_db - psnr).abs() < 0.05,
        "{d:?} vs {psnr:.2}"
    );
    let export = b.export_8bit(0, None, true);
    let found = env
        .detector()
        .detect(&export.luminance(), &DetectOptions::default())
        .unwrap();
    assert_eq!(found.payload, Some(payload()), "z {:.1}", found.z);
}

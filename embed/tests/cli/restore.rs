//! `tracemark-embed restore` (issue 12): every image in testdata stamped into one release and
//! restored from the ledger; each guarantee tried against what would fake or break it.

use std::path::Path;
use std::process::{Command, Output};

use tracemark::io::Limits;
use tracemark::io::image::{WriteOptions, write};
use tracemark::pipeline::{Content, Document};

use super::{Env, testdata};

/// Inputs stored uncompressed: restored byte for byte.
const BYTE_EXACT: [&str; 18] = [
    "astronaut.png",
    "coffee_crop.tif",
    "camera.png",
    "coffee.png",
    "693_UNCR.dcm",
    "CT_enhanced.dcm",
    "CT_small.dcm",
    "CT_small_bigendian.dcm",
    "CT_small_implicit.dcm",
    "CT_two_windows.dcm",
    "CT_voi_lut.dcm",
    "MR2_3frames.dcm",
    "MR2_UNCR.dcm",
    "MR_enhanced_perframe.dcm",
    "RG1_UNCR.dcm",
    "US1_UNCR.dcm",
    "US1_palette.dcm",
    "US1_planar.dcm",
];

/// Compressed DICOM inputs (written uncompressed when stamped): restored pixel for pixel.
const PIXEL_EXACT: [&str; 5] = [
    "CT_small_deflate.dcm",
    "CT_small_j2k.dcm",
    "CT_small_jpegll.dcm",
    "CT_small_rle.dcm",
    "US1_jpeg.dcm",
];

fn restore(env: &Env, ledger: &Path, args: &[&Path], out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracemark-embed"))
        .arg("restore")
        .arg("--key")
        .arg(&env.key)
        .arg("--ledger")
        .arg(ledger)
        .args(extra)
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

fn stamp_release(env: &Env, ledger: &Path, inputs: &[&Path], out: &Path) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tracemark-embed"));
    c.arg("--key").arg(&env.key).arg("--ledger").arg(ledger);
    c.args(["--recipient", "Dr Restore", "--json"]);
    c.args(inputs).arg("-o").arg(out);
    c.output().unwrap()
}

fn stored_values(path: &Path) -> Vec<i32> {
    match Document::open(path, &Limits::default())
        .unwrap()
        .into_content()
    {
        Content::Dicom(img) => img.stored.clone(),
        Content::Raster { .. } => panic!("{} is not DICOM", path.display()),
    }
}

#[test]
fn every_testdata_image_is_restored_exactly_from_the_ledger() {
    let env = Env::new();
    let ledger = env.path("ledger.db");
    let names: Vec<&str> = BYTE_EXACT.iter().chain(&PIXEL_EXACT).copied().collect();
    let inputs: Vec<std::path::PathBuf> = names.iter().map(|n| testdata(n)).collect();
    let refs: Vec<&Path> = inputs.iter().map(|p| p.as_path()).collect();
    let out = env.path("out");
    let stamped = stamp_release(&env, &ledger, &refs, &out);
    assert!(stamped.status.success(), "{stamped:?}");
    // Every record says what a restore will give and how much the ledger keeps.
    let records = String::from_utf8_lossy(&stamped.stdout);
    for line in records.lines().filter(|l| l.contains("\"embedding\"")) {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = Path::new(r["input"].as_str().unwrap()).file_name().unwrap();
        let name = name.to_str().unwrap();
        let want = if BYTE_EXACT.contains(&name) {
            "byte-identical"
        } else {
            "pixel-identical"
        };
        assert_eq!(r["restore"], want, "{name}");
        let size = r["restore_bytes"].as_u64().unwrap();
        let pixels = r["width"].as_u64().unwrap() * r["height"].as_u64().unwrap();
        // The budget: 8 KB for 2 Mpx; small images may need their container.
        assert!(
            size <= 8192.max(pixels * 8192 / 2_000_000) + 4096,
            "{name}: {size} bytes of restore data for {pixels} px"
        );
    }
    let back = env.path("back");
    std::fs::create_dir(&back).unwrap();
    let copies: Vec<std::path::PathBuf> = names.iter().map(|n| out.join(n)).collect();
    let copy_refs: Vec<&Path> = copies.iter().map(|p| p.as_path()).collect();
    let r = restore(&env, &ledger, &copy_refs, &back, &[]);
    assert!(r.status.success(), "{r:?}");
    for name in BYTE_EXACT {
        let original = std::fs::read(testdata(name)).unwrap();
        let restored = std::fs::read(back.join(name)).unwrap();
        assert!(original == restored, "{name} is not restored byte for byte");
    }
    for name in PIXEL_EXACT {
        assert_eq!(
            stored_values(&testdata(name)),
            stored_values(&back.join(name)),
            "{name}: pixels"
        );
    }
    let text = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        text.matches("byte-identical").count(),
        BYTE_EXACT.len(),
        "{text}"
    );
    assert_eq!(
        text.matches("pixel-identical").count(),
        PIXEL_EXACT.len(),
        "{text}"
    );
}

#[test]
fn tiff_inputs_are_restored_byte_for_byte_and_others_pixel_for_pixel() {
    let env = Env::new();
    let ledger = env.path("ledger.db");
    // TIFFs (8-bit RGB, 16-bit grey) and a JPEG input written as PNG.
    let (rgb, _) = tracemark::io::image::read(&testdata("coffee.png"), &Limits::default()).unwrap();
    let tif8 = env.path("coffee.tif");
    write(&rgb, &tif8, &WriteOptions::default()).unwrap();
    let grey16 = tracemark::testsignal::photo_like(300, 260, 5);
    let samples = grey16
        .data
        .iter()
        .map(|&v| (v * 257.0).round().clamp(0.0, 65535.0) as u16)
        .collect();
    let tif16 = env.path("grey16.tif");
    let r16 = tracemark::raster::Raster {
        width: 300,
        height: 260,
        channels: 1,
        samples: tracemark::raster::Samples::U16(samples),
    };
    write(&r16, &tif16, &WriteOptions::default()).unwrap();
    let out = env.path("out");
    let s = stamp_release(&env, &ledger, &[&tif8, &tif16], &out);
    assert!(s.status.success(), "{s:?}");
    let jpeg_out = env.path("retina.png");
    let s = stamp_release(&env, &ledger, &[&testdata("retina.jpg")], &jpeg_out);
    assert!(s.status.success(), "{s:?}");
    let back = env.path("back");
    std::fs::create_dir(&back).unwrap();
    for (copy, original) in [
        (out.join("coffee.tif"), &tif8),
        (out.join("grey16.tif"), &tif16),
    ] {
        let r = restore(&env, &ledger, &[&copy], &back, &[]);
        assert!(r.status.success(), "{r:?}");
        let restored = std::fs::read(back.join(copy.file_name().unwrap())).unwrap();
        assert!(
            restored == std::fs::read(original).unwrap(),
            "{}",
            copy.display()
        );
    }
    // A JPEG's own bytes cannot be rebuilt; its decoded pixels are, written as PNG.
    let r = restore(
        &env,
        &ledger,
        &[&jpeg_out],
        &env.path("retina_back.png"),
        &[],
    );
    assert!(r.status.success(), "{r:?}");
    assert!(String::from_utf8_lossy(&r.stdout).contains("pixel-identical"));
    let (a, _) = tracemark::io::image::read(&testdata("retina.jpg"), &Limits::default()).unwrap();
    let (b, _) =
        tracemark::io::image::read(&env.path("retina_back.png"), &Limits::default()).unwrap();
    assert!(a == b, "retina pixels");
}

#[test]
fn lossy_outputs_modified_copies_and_existing_files_are_refused() {
    let env = Env::new();
    let ledger = env.path("ledger.db");
    let jpg = env.path("camera.jpg");
    assert!(
        stamp_release(&env, &ledger, &[&testdata("camera.png")], &jpg)
            .status
            .success()
    );
    let png = env.path("camera.png");
    assert!(
        stamp_release(&env, &ledger, &[&testdata("camera.png")], &png)
            .status
            .success()
    );
    let dcm = env.path("ct.dcm");
    assert!(
        stamp_release(&env, &ledger, &[&testdata("CT_small.dcm")], &dcm)
            .status
            .success()
    );

    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    // A JPEG output: the row says why it cannot be restored.
    let out = env.path("r.png");
    let r = restore(&env, &ledger, &[&jpg], &out, &[]);
    assert_eq!(r.status.code(), Some(2), "{r:?}");
    assert!(err(&r).contains("lossy format"), "{}", err(&r));
    assert!(!out.exists());

    // Modified copies: one sample changed by one in a DICOM; the same PNG pixels re-saved.
    let mut bytes = std::fs::read(&dcm).unwrap();
    let n = bytes.len();
    bytes[n - 1000] ^= 1;
    let changed = env.path("ct_changed.dcm");
    std::fs::write(&changed, &bytes).unwrap();
    // The same pixels with a comment added (a metadata-only edit): a tEXt chunk after IHDR.
    let mut edited = std::fs::read(&png).unwrap();
    let text = b"tEXtComment\0edited";
    let mut chunk = (text.len() as u32 - 4).to_be_bytes().to_vec();
    chunk.extend_from_slice(text);
    let mut crc = crc32fast::Hasher::new();
    crc.update(text);
    chunk.extend_from_slice(&crc.finalize().to_be_bytes());
    edited.splice(33..33, chunk);
    let resaved = env.path("camera_resaved.png");
    std::fs::write(&resaved, &edited).unwrap();
    let (a, _) = tracemark::io::image::read(&resaved, &Limits::default()).unwrap();
    let (b, _) = tracemark::io::image::read(&png, &Limits::default()).unwrap();
    assert!(a == b, "the edit keeps the pixels");
    for copy in [&changed, &resaved] {
        let r = restore(&env, &ledger, &[copy], &out, &[]);
        assert_eq!(r.status.code(), Some(2), "{r:?}");
        assert!(
            err(&r).contains("matches no file this ledger released"),
            "{}",
            err(&r)
        );
        assert!(!out.exists());
    }

    // Never over an existing file without --force, never over the copy itself.
    std::fs::write(&out, b"keep me").unwrap();
    let r = restore(&env, &ledger, &[&png], &out, &[]);
    assert_eq!(r.status.code(), Some(2), "{r:?}");
    assert!(err(&r).contains("already exists"), "{}", err(&r));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let r = restore(&env, &ledger, &[&png], &out, &["--force"]);
    assert!(r.status.success(), "{r:?}");
    assert!(std::fs::read(&out).unwrap() == std::fs::read(testdata("camera.png")).unwrap());
    let before = std::fs::read(&png).unwrap();
    let r = restore(&env, &ledger, &[&png], &png, &["--force"]);
    assert_eq!(r.status.code(), Some(2), "{r:?}");
    assert_eq!(std::fs::read(&png).unwrap(), before);

    // One bad copy does not stop the others.
    let folder = env.path("back");
    std::fs::create_dir(&folder).unwrap();
    let r = restore(&env, &ledger, &[&changed, &dcm], &folder, &[]);
    assert_eq!(r.status.code(), Some(2), "{r:?}");
    assert!(
        std::fs::read(folder.join("ct.dcm")).unwrap()
            == std::fs::read(testdata("CT_small.dcm")).unwrap()
    );
    assert!(!folder.join("ct_changed.dcm").exists());
}

#[test]
fn restore_data_pixels_keeps_the_samples_and_none_keeps_nothing() {
    let env = Env::new();
    let ledger = env.path("ledger.db");
    let stamp = |out: &Path, what: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tracemark-embed"));
        c.arg("--key").arg(&env.key).arg("--ledger").arg(&ledger);
        c.args(["--recipient", "Dr Restore", "--restore-data", what]);
        c.arg(testdata("coffee.png")).arg("-o").arg(out);
        let o = c.output().unwrap();
        assert!(o.status.success(), "{o:?}");
    };
    let (pixels, none) = (env.path("pixels.png"), env.path("none.png"));
    stamp(&pixels, "pixels");
    stamp(&none, "none");
    let out = env.path("back.png");
    let r = restore(&env, &ledger, &[&pixels], &out, &[]);
    assert!(r.status.success(), "{r:?}");
    assert!(String::from_utf8_lossy(&r.stdout).contains("pixel-identical"));
    let (a, _) = tracemark::io::image::read(&testdata("coffee.png"), &Limits::default()).unwrap();
    let (b, _) = tracemark::io::image::read(&out, &Limits::default()).unwrap();
    assert!(a == b, "coffee pixels");
    let r = restore(&env, &ledger, &[&none], &env.path("none_back.png"), &[]);
    assert_eq!(r.status.code(), Some(2), "{r:?}");
    assert!(String::from_utf8_lossy(&r.stderr).contains("--restore-data none"));
}

//! No silent loss (issue 11, finding 7): colour profiles and EXIF (orientation included) are
//! kept on outputs that can carry them; files of several images are refused, not cut to
//! their first.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::ImageDecoder;
use tracemark::io::Limits;
use tracemark::io::image::read;

use crate::{Env, testdata};

/// A stand-in colour profile: decoders and encoders carry the bytes without reading them.
fn profile() -> Vec<u8> {
    (0..3000u32).map(|i| (i * 31 % 251) as u8).collect()
}

/// An EXIF block (little-endian TIFF structure) with Orientation 6 (rotate 90 CW to view).
fn exif_orientation_6() -> Vec<u8> {
    let mut v = b"II*\0".to_vec();
    v.extend_from_slice(&8u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&0x0112u16.to_le_bytes());
    v.extend_from_slice(&3u16.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&6u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// camera.png as a JPEG carrying EXIF orientation 6 and the profile, as a phone writes it.
fn phone_jpeg(env: &Env) -> PathBuf {
    let (r, _) = read(&testdata("camera.png"), &Limits::default()).unwrap();
    let tracemark::raster::Samples::U8(grey) = &r.samples else {
        panic!("8-bit test image")
    };
    let mut bytes = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 92);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(exif_orientation_6());
    enc.add_app_segment(1, app1).unwrap();
    enc.add_icc_profile(&profile()).unwrap();
    enc.encode(
        grey,
        r.width as u16,
        r.height as u16,
        jpeg_encoder::ColorType::Luma,
    )
    .unwrap();
    let p = env.path("phone.jpg");
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The profile, EXIF block and orientation a file carries, read by image's decoders.
fn metadata_of(p: &Path) -> (Option<Vec<u8>>, Option<Vec<u8>>, u8) {
    let mut d = image::ImageReader::open(p)
        .unwrap()
        .with_guessed_format()
        .unwrap()
        .into_decoder()
        .unwrap();
    (
        d.icc_profile().unwrap(),
        d.exif_metadata().unwrap(),
        d.orientation().unwrap().to_exif(),
    )
}

#[test]
fn profiles_and_exif_orientation_are_kept() {
    let env = Env::new();
    let input = phone_jpeg(&env);
    assert_eq!(
        metadata_of(&input).2,
        6,
        "the fixture carries orientation 6"
    );
    for ext in ["jpg", "png", "webp"] {
        let out = env.path(&format!("out.{ext}"));
        let o = env.stamp(&input, &out, &[]);
        assert!(o.status.success(), "{ext}: {o:?}");
        let (icc, exif, orientation) = metadata_of(&out);
        assert_eq!(icc.as_deref(), Some(&profile()[..]), "{ext}: ICC profile");
        assert_eq!(
            exif.as_deref(),
            Some(&exif_orientation_6()[..]),
            "{ext}: EXIF"
        );
        assert_eq!(orientation, 6, "{ext}");
    }
    // TIFF outputs cannot carry EXIF here: refused, not written without it.
    let out = env.path("out.tif");
    let o = env.stamp(&input, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("EXIF") && err.contains("orientation 6"),
        "{err}"
    );
    assert!(!out.exists());
    // A profile alone goes into TIFF too.
    let png_in = env.path("profiled.png");
    {
        use image::ImageEncoder;
        let (r, _) = read(&testdata("coffee.png"), &Limits::default()).unwrap();
        let tracemark::raster::Samples::U8(rgb) = &r.samples else {
            panic!("8-bit")
        };
        let mut bytes = Vec::new();
        let mut enc = image::codecs::png::PngEncoder::new(&mut bytes);
        enc.set_icc_profile(profile()).unwrap();
        enc.write_image(
            rgb,
            r.width as u32,
            r.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
        std::fs::write(&png_in, bytes).unwrap();
    }
    let out = env.path("profiled.tif");
    let o = env.stamp(&png_in, &out, &[]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(metadata_of(&out).0.as_deref(), Some(&profile()[..]));
}

fn grey(env: &Env) -> (Vec<u8>, u32, u32) {
    let _ = env;
    let (r, _) = read(&testdata("camera.png"), &Limits::default()).unwrap();
    let tracemark::raster::Samples::U8(g) = r.samples else {
        panic!("8-bit")
    };
    (g, r.width as u32, r.height as u32)
}

/// A two-frame APNG, a two-page TIFF and a two-frame animated WebP of camera.png.
fn multi_image_files(env: &Env) -> Vec<PathBuf> {
    let (g, w, h) = grey(env);
    // APNG.
    let mut apng = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut apng, w, h);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_animated(2, 0).unwrap();
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(&g).unwrap();
        let inverted: Vec<u8> = g.iter().map(|v| 255 - v).collect();
        wr.write_image_data(&inverted).unwrap();
        wr.finish().unwrap();
    }
    // Multi-page TIFF.
    let mut tif = Cursor::new(Vec::new());
    {
        let mut enc = tiff::encoder::TiffEncoder::new(&mut tif).unwrap();
        enc.write_image::<tiff::encoder::colortype::Gray8>(w, h, &g)
            .unwrap();
        enc.write_image::<tiff::encoder::colortype::Gray8>(w, h, &g)
            .unwrap();
    }
    // Animated WebP: the lossless still's VP8L chunk as two ANMF frames.
    let mut still = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut still)
        .encode(&g, w, h, image::ExtendedColorType::L8)
        .unwrap();
    let vp8l = &still[12..]; // "VP8L" chunk with its header
    let u24 = |v: u32| v.to_le_bytes()[..3].to_vec();
    let chunk = |tag: &[u8], body: &[u8]| {
        let mut c = tag.to_vec();
        c.extend_from_slice(&(body.len() as u32).to_le_bytes());
        c.extend_from_slice(body);
        if body.len() % 2 == 1 {
            c.push(0);
        }
        c
    };
    let mut vp8x = vec![0x02, 0, 0, 0]; // animation
    vp8x.extend(u24(w - 1));
    vp8x.extend(u24(h - 1));
    let mut body = b"WEBP".to_vec();
    body.extend(chunk(b"VP8X", &vp8x));
    body.extend(chunk(b"ANIM", &[0, 0, 0, 0, 0, 0]));
    for _ in 0..2 {
        let mut f = Vec::new();
        f.extend(u24(0));
        f.extend(u24(0));
        f.extend(u24(w - 1));
        f.extend(u24(h - 1));
        f.extend(u24(100));
        f.push(0);
        f.extend_from_slice(vp8l);
        body.extend(chunk(b"ANMF", &f));
    }
    let mut webp = b"RIFF".to_vec();
    webp.extend_from_slice(&(body.len() as u32).to_le_bytes());
    webp.extend(body);
    let mut files = Vec::new();
    for (name, bytes) in [
        ("anim.png", apng),
        ("pages.tif", tif.into_inner()),
        ("anim.webp", webp),
    ] {
        let p = env.path(name);
        std::fs::write(&p, bytes).unwrap();
        files.push(p);
    }
    files
}

#[test]
fn files_of_several_images_are_refused_not_cut() {
    let env = Env::new();
    for input in multi_image_files(&env) {
        // The fixture is readable: the first image decodes.
        read(&input, &Limits::default()).unwrap();
        let out = env.path("out.png");
        let o = env.stamp(&input, &out, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{input:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("would write only the first")
                && (err.contains("APNG")
                    || err.contains("2 pages")
                    || err.contains("animated WebP")),
            "{err}"
        );
        assert!(!out.exists());
    }
}

//! Speed of the watermark maths on one thread (file decode/encode excluded).
//!
//! - `2048x2048 grey`: the issue-2 targets (embed <= 25 ms, detect marked <= 200 ms,
//!   unmarked <= 500 ms).
//! - `per megapixel`: embed (luminance, mask, gain solve, delta applied to the samples) and
//!   blind detection of marked and unmarked copies, for grey 8-bit, RGB 8-bit and grey
//!   16-bit images of 512, 1024 and 2048 px; criterion reports pixels per second.
//!
//! - `DICOM`: stamping RG1_UNCR.dcm (the 15-bit chest radiograph, 1841x1955) and
//!   MR2_UNCR.dcm end to end as tracemark-embed does it (read the file, parse and decode,
//!   display planes, mark, map to stored values, encode, write atomically; the target for
//!   RG1 is 120 ms), with the parts alone, and blind detection from the DICOM.
//!
//! - `restore`: `tracemark-embed restore` of a stamped copy end to end (read the copy, hash
//!   it, parse its side data, decode, regenerate the mark, undo it, rebuild the original's
//!   file, hash it, write atomically) for RG1_UNCR.dcm (target: at most 150 ms on one
//!   thread), MR2_UNCR.dcm and camera.png, beside the parse-and-decode of the same copy as
//!   the reference measured in the same run. Rayon is held to one thread.
//!
//! `cargo bench -p tracemark-bench --bench speed`

use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tracemark::SecretKey;
use tracemark::io::atomic::write_atomic;
use tracemark::io::dicom::DicomImage;
use tracemark::io::image::read;
use tracemark::io::{Limits, read_input};
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::mark::embed::{EmbedOptions, EmbedPlan};
use tracemark::mark::pattern::KeyPatterns;
use tracemark::pipeline::{Document, Release, StampOptions, Stamper};
use tracemark::raster::{Plane, Raster, Samples};
use tracemark_bench::{Filter, resize};

fn retina() -> Raster {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/retina.jpg");
    read(&path, &Limits::default())
        .expect("testdata/retina.jpg")
        .0
}

/// The retina photo resized to `side` px in the given kind.
fn image(src: &Raster, side: usize, kind: &str) -> Raster {
    let rgb = resize(src, side, side, Filter::Cubic);
    let Samples::U8(v) = &rgb.samples else {
        unreachable!("resize gives 8-bit")
    };
    match kind {
        "rgb8" => rgb,
        "grey8" => Raster {
            width: side,
            height: side,
            channels: 1,
            samples: Samples::U8(
                rgb.luminance()
                    .data
                    .iter()
                    .map(|v| v.round() as u8)
                    .collect(),
            ),
        },
        _ => {
            // 16-bit grey with sub-8-bit detail, like a radiograph.
            let l = rgb.luminance();
            let samples = l
                .data
                .iter()
                .zip(v.chunks_exact(3))
                .map(|(y, p)| (y * 257.0 + f32::from(p[0] % 7) * 9.0).min(65535.0) as u16)
                .collect();
            Raster {
                width: side,
                height: side,
                channels: 1,
                samples: Samples::U16(samples),
            }
        }
    }
}

fn stamp(r: &Raster, stamper: &Stamper) -> Raster {
    stamper.stamp_raster(r).unwrap().0
}

fn bench(c: &mut Criterion) {
    let key = SecretKey::from_bytes([0x42; 32]);
    let patterns = KeyPatterns::new(&key);
    let detector = Detector::from_patterns(patterns.clone());
    let payload = 0x0123_4567_89ab_cdef;
    let stamper = Stamper::from_patterns(patterns.clone(), payload, StampOptions::default())
        .expect("default options");
    let plan = EmbedPlan::new(&patterns, payload);
    let opts = DetectOptions::default();
    let src = retina();

    let grey = image(&src, 2048, "grey8");
    let plane = grey.luminance();
    let marked_plane: Plane = stamp(&grey, &stamper).luminance();
    assert_eq!(
        detector.detect(&marked_plane, &opts).unwrap().payload,
        Some(payload),
        "benchmark input must be detectable"
    );
    let mut g = c.benchmark_group("2048x2048 grey, one thread");
    g.sample_size(20);
    g.bench_function("embed: mask, gain solve, delta", |b| {
        b.iter(|| plan.embed(&plane, &EmbedOptions::default()).unwrap())
    });
    g.bench_function("detect: marked image", |b| {
        b.iter(|| detector.detect(&marked_plane, &opts).unwrap())
    });
    g.bench_function("detect: unmarked image", |b| {
        b.iter(|| detector.detect(&plane, &opts).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("per megapixel, one thread");
    g.sample_size(10);
    for kind in ["grey8", "rgb8", "grey16"] {
        for side in [512, 1024, 2048] {
            let img = image(&src, side, kind);
            let marked = stamp(&img, &stamper);
            let (mp, up) = (marked.luminance(), img.luminance());
            g.throughput(Throughput::Elements((side * side) as u64));
            let id = |what: &str| BenchmarkId::new(what, format!("{kind} {side}x{side}"));
            g.bench_with_input(id("embed"), &img, |b, img| b.iter(|| stamp(img, &stamper)));
            g.bench_with_input(id("detect marked"), &mp, |b, p| {
                b.iter(|| detector.detect(p, &opts).unwrap())
            });
            g.bench_with_input(id("detect unmarked"), &up, |b, p| {
                b.iter(|| detector.detect(p, &opts).unwrap())
            });
        }
    }
    g.finish();
}

/// Stamps a DICOM file end to end, as tracemark-embed does without its quality report
/// (read, parse and decode, mark in memory, encode the derived instance, write atomically).
fn stamp_dicom(input: &Path, output: &Path, stamper: &Stamper) -> usize {
    let bytes = read_input(input, &Limits::default()).unwrap();
    let mut img = DicomImage::decode(input, &bytes, &Limits::default()).unwrap();
    stamper.stamp_dicom_image(&mut img).unwrap();
    let out = img
        .encode(
            Some("2.25.1234"),
            "bench",
            ("20261128", "120000", "20261128120000"),
        )
        .unwrap();
    write_atomic(output, true, |w| {
        std::io::Write::write_all(w, &out).map_err(|source| tracemark::Error::io(output, source))
    })
    .unwrap();
    out.len()
}

/// Stamps a file through the library's pipeline exactly as tracemark-embed does, quality
/// report (PSNR, SSIM) included.
fn stamp_pipeline(input: &Path, output: &Path, stamper: &Stamper) -> usize {
    let bytes = read_input(input, &Limits::default()).unwrap();
    let doc = Document::decode(input, &bytes, &Limits::default()).unwrap();
    let stamped = stamper.stamp(doc, output).unwrap();
    Release::unrecorded()
        .write(&stamped, input, &bytes, output, stamper.options())
        .unwrap();
    stamped.encoded.bytes.len()
}

fn bench_dicom(c: &mut Criterion) {
    let key = SecretKey::from_bytes([0x42; 32]);
    let patterns = KeyPatterns::new(&key);
    let detector = Detector::from_patterns(patterns.clone());
    let payload = 0x0123_4567_89ab_cdef;
    let stamper = Stamper::from_patterns(
        patterns.clone(),
        payload,
        StampOptions {
            write: tracemark::io::image::WriteOptions {
                force: true,
                ..Default::default()
            },
            ..StampOptions::default()
        },
    )
    .expect("default options");
    let dir = tempfile::tempdir().unwrap();
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    let mut g = c.benchmark_group("DICOM, one thread");
    g.sample_size(20);
    for name in ["RG1_UNCR.dcm", "MR2_UNCR.dcm"] {
        let input = testdata.join(name);
        let output = dir.path().join(name);
        stamp_dicom(&input, &output, &stamper);
        g.bench_function(format!("{name}: stamp end to end (read .. write)"), |b| {
            b.iter(|| stamp_dicom(&input, &output, &stamper))
        });
        g.bench_function(
            format!("{name}: stamp as tracemark-embed (with PSNR and SSIM)"),
            |b| b.iter(|| stamp_pipeline(&input, &output, &stamper)),
        );
        let bytes = std::fs::read(&input).unwrap();
        g.bench_function(format!("{name}: parse and decode"), |b| {
            b.iter(|| DicomImage::decode(&input, &bytes, &Limits::default()).unwrap())
        });
        let marked = std::fs::read(&output).unwrap();
        let plane = Document::decode(&output, &marked, &Limits::default())
            .unwrap()
            .detection_plane()
            .unwrap();
        assert_eq!(
            detector
                .detect(&plane, &DetectOptions::default())
                .unwrap()
                .payload,
            Some(payload)
        );
        g.bench_function(
            format!("{name}: blind detect (decoded display plane)"),
            |b| b.iter(|| detector.detect(&plane, &DetectOptions::default()).unwrap()),
        );
    }
    g.finish();
}

/// Restores a stamped copy as `tracemark-embed restore` does, from its side data.
fn restore_pipeline(
    patterns: &KeyPatterns,
    payload: u64,
    stamped: &Path,
    side: &[u8],
    output: &Path,
) -> usize {
    let bytes = read_input(stamped, &Limits::default()).unwrap();
    let _lookup = tracemark::ledger::sha256_hex(&bytes);
    let Some(tracemark::restore::Restore::Data(side)) = tracemark::restore::Restore::decode(side)
    else {
        panic!("restorable")
    };
    let r = tracemark::restore::restore(
        patterns,
        payload,
        &side,
        stamped,
        &bytes,
        output,
        &Limits::default(),
    )
    .unwrap();
    let _check = tracemark::ledger::sha256_hex(&r.bytes);
    write_atomic(output, true, |w| {
        std::io::Write::write_all(w, &r.bytes)
            .map_err(|source| tracemark::Error::io(output, source))
    })
    .unwrap();
    r.bytes.len()
}

fn bench_restore(c: &mut Criterion) {
    // One thread, as the target says (image decoders may use rayon).
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    let key = SecretKey::from_bytes([0x42; 32]);
    let patterns = KeyPatterns::new(&key);
    let payload = 0x0123_4567_89ab_cdef;
    let stamper =
        Stamper::from_patterns(patterns.clone(), payload, StampOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    let mut g = c.benchmark_group("restore, one thread");
    g.sample_size(20);
    for name in ["RG1_UNCR.dcm", "MR2_UNCR.dcm", "camera.png"] {
        let input = testdata.join(name);
        let stamped_path = dir.path().join(name);
        let original = std::fs::read(&input).unwrap();
        let doc = Document::decode(&input, &original, &Limits::default()).unwrap();
        let stamped = stamper
            .stamp_file(doc, &original, &stamped_path, 0)
            .unwrap();
        std::fs::write(&stamped_path, &stamped.encoded.bytes).unwrap();
        let output = dir.path().join(format!("restored-{name}"));
        restore_pipeline(&patterns, payload, &stamped_path, &stamped.restore, &output);
        assert!(
            std::fs::read(&output).unwrap() == original,
            "{name}: byte-identical"
        );
        g.bench_function(format!("{name}: restore end to end (read .. write)"), |b| {
            b.iter(|| {
                restore_pipeline(&patterns, payload, &stamped_path, &stamped.restore, &output)
            })
        });
        let copy = stamped.encoded.bytes.clone();
        g.bench_function(
            format!("{name}: parse and decode the copy (reference)"),
            |b| b.iter(|| Document::decode(&stamped_path, &copy, &Limits::default()).unwrap()),
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // Criterion's own charts would need a registered font: the workspace's plotters has
    // `ab_glyph` on (for the robustness report), and features are unified.
    config = Criterion::default().without_plots();
    targets = bench, bench_dicom, bench_restore
}
criterion_main!(benches);

//! Speed of the watermark maths on one thread (file decode/encode excluded):
//! embed and blind detection on a 2048 x 2048 grey image, marked and unmarked.
//!
//! `cargo bench -p tracemark-bench --bench speed`

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use tracemark::SecretKey;
use tracemark::io::Limits;
use tracemark::io::image::read;
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::mark::embed::{EmbedOptions, embed};
use tracemark::mark::pattern::KeyPatterns;
use tracemark::raster::{Plane, Raster, Samples};
use tracemark_bench::{Filter, resize};

fn grey_2048() -> Raster {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/retina.jpg");
    let (r, _) = read(&path, &Limits::default()).expect("testdata/retina.jpg");
    let big = resize(&r, 2048, 2048, Filter::Cubic);
    let l = big.luminance();
    Raster {
        width: 2048,
        height: 2048,
        channels: 1,
        samples: Samples::U8(l.data.iter().map(|v| v.round() as u8).collect()),
    }
}

fn bench(c: &mut Criterion) {
    let key = SecretKey::from_bytes([0x42; 32]);
    let patterns = KeyPatterns::new(&key);
    let detector = Detector::from_patterns(patterns.clone());
    let image = grey_2048();
    let plane = image.luminance();
    let opts = EmbedOptions::default();
    let payload = 0x0123_4567_89ab_cdef;
    let e = embed(&plane, &patterns, payload, &opts).unwrap();
    let mut marked = image.clone();
    marked.apply_delta(&e.delta);
    let marked_plane: Plane = marked.luminance();
    let d = detector
        .detect(&marked_plane, &DetectOptions::default())
        .unwrap();
    assert_eq!(
        d.payload,
        Some(payload),
        "benchmark input must be detectable"
    );

    let mut g = c.benchmark_group("2048x2048 grey, one thread");
    g.sample_size(20);
    g.bench_function("embed: mask, gain solve, delta", |b| {
        b.iter(|| embed(&plane, &patterns, payload, &opts).unwrap())
    });
    g.bench_function("detect: marked image", |b| {
        b.iter(|| {
            detector
                .detect(&marked_plane, &DetectOptions::default())
                .unwrap()
        })
    });
    g.bench_function("detect: unmarked image", |b| {
        b.iter(|| detector.detect(&plane, &DetectOptions::default()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

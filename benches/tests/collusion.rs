//! Collusion (design.md section 5 step 9): averaged copies of one photo, with and without
//! JPEG 75, against a ledger of 1,000 releases. design.md's prototype figures: 512 px photos
//! up to 4 colluders (3 after JPEG 75), 1-4 MP images many more. Every colluder must be named
//! in those cells, and no innocent in any.

use rayon::prelude::*;
use tracemark::SecretKey;
use tracemark::io::Limits;
use tracemark::io::image::read;
use tracemark::mark::detect::Detector;
use tracemark_bench::collusion::{Decoded, collude, innocent_stats, release_ids};

fn photo(name: &str) -> tracemark::raster::Raster {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name);
    read(&p, &Limits::default()).unwrap().0
}

#[test]
fn averaged_copies_name_every_colluder_and_no_innocent() {
    let key = SecretKey::from_bytes([0x3c; 32]);
    let det = Detector::new(&key);
    let ledger = release_ids(1000, 7);
    // (image, colluders, JPEG quality)
    let mut cells = Vec::new();
    for c in 2..=4 {
        for q in [None, Some(75)] {
            cells.push(("retina.jpg", c, q));
            if c <= 3 || q.is_none() {
                cells.push(("camera.png", c, q));
                cells.push(("coffee.png", c, q));
            }
        }
    }
    let outcomes: Vec<_> = cells
        .par_iter()
        .enumerate()
        .map(|(n, &(image, c, q))| {
            let who: Vec<usize> = (0..c).map(|i| (i * 331 + n * 17) % ledger.len()).collect();
            (
                image,
                c,
                q,
                collude(&det, &photo(image), &ledger, &who, q, 1e-6),
            )
        })
        .collect();
    let mut innocents = Vec::new();
    for (image, c, q, o) in &outcomes {
        let cell = format!("{image}, {c} colluders, JPEG {q:?}");
        assert_eq!(o.innocents_named, 0, "{cell}: {o:?}");
        assert_eq!(
            o.colluders_named, *c,
            "{cell}: colluder z {:?}",
            o.colluder_z
        );
        // Blind decoding names at most a colluder, never someone else.
        assert_ne!(o.decoded, Decoded::Innocent, "{cell}");
        innocents.extend(o.innocent_z.iter().copied());
    }
    // The innocent scores follow the unit-variance model the p-values assume.
    let s = innocent_stats(&innocents);
    eprintln!(
        "{} innocent scores: mean {:.4}, sd {:.4}, max {:.2}",
        s.n, s.mean, s.sd, s.max
    );
    // One score per innocent release and tile variant.
    assert!(s.n >= 14_000 * tracemark::mark::pattern::VARIANTS);
    assert!(s.mean.abs() < 0.05 && (s.sd - 1.0).abs() < 0.05, "{s:?}");
    assert!(s.max < 6.0, "{s:?}");
}

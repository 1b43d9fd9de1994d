//! Issue 14's early stop: an unmarked image's lattice candidates stay within the polar
//! search's noise, so blind detection folds only the identity, while the p-value still
//! counts the whole family of candidates. (That marked copies whose geometry needs a lattice
//! candidate still get one is what `hard_geometry.rs` and the other blind tests check.)

use tracemark::SecretKey;
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::mark::pattern::{TILE, VARIANTS};
use tracemark::stats;

/// Quarter turns searched per template.
const ORIENTATIONS: usize = 4;

#[test]
fn unmarked_photos_fold_only_the_identity_and_the_p_value_counts_every_candidate() {
    let det = Detector::new(&SecretKey::from_bytes([12; 32]));
    let photos = [
        "astronaut.png",
        "camera.png",
        "coffee.png",
        "grass.png",
        "gravel.png",
    ];
    let mut identity_only = 0;
    for name in photos {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(name);
        let (raster, _) = tracemark::io::image::read(&path, &Default::default()).unwrap();
        // A central 384-px window (the photos are 512 px or more).
        let (x0, y0) = ((raster.width - 384) / 2, (raster.height - 384) / 2);
        let plane = raster.luminance_window(x0, y0, 384, 384);
        let d = det.detect(&plane, &DetectOptions::default()).unwrap();
        assert!(!d.marked, "{name}: z {}", d.z);
        assert_eq!(d.candidates, 5, "{name}");
        let tests = d.candidates * VARIANTS * ORIENTATIONS * TILE * TILE;
        assert_eq!(
            d.log10_p,
            stats::log10_p_two_sided(d.z, tests as f64),
            "{name}"
        );
        identity_only += usize::from(d.candidates_tested == 1);
    }
    // 79 % of the null study's unmarked images fold the identity only; textures (grass)
    // have more lattice-like structure of their own.
    assert!(
        identity_only >= 3,
        "{identity_only} of {} folded the identity only",
        photos.len()
    );
}

//! The robustness benchmark: stamp each image with several keys and payloads, apply every
//! leak scenario, detect blindly, and record what came back; plus the false-claim study.
//! Deterministic for a given seed (timings aside, which stay out of the report).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use serde::Serialize;
use tracemark::SecretKey;
use tracemark::coding;
use tracemark::mark::content;
use tracemark::mark::detect::{DetectOptions, Detection, Detector};
use tracemark::mark::informed::{self, accuse};
use tracemark::mark::pattern::KeyPatterns;
use tracemark::mark::reference;
use tracemark::mark::screen;
use tracemark::pipeline::{StampOptions, Stamper};
use tracemark::raster::{Plane, Raster};
use tracemark::stats;
use tracemark_leaks::ScreenMap;

use crate::scenario::{Family, Scenario};
use crate::*;

/// Other releases the true one is hidden among in the informed check (a ledger of 1,001).
pub const INFORMED_RELEASES: usize = 1000;

/// Images at or above this many pixels are "large".
pub const LARGE_PIXELS: usize = 1 << 20;

/// What to run.
pub struct Config {
    /// Seed of every random choice (keys, payloads, crop offsets, noise).
    pub seed: u64,
    /// Named images.
    pub images: Vec<(String, Raster)>,
    /// Keys (each with its own payload) per image.
    pub keys: usize,
    /// Scenarios.
    pub scenarios: Vec<Scenario>,
    /// Detections in the false-claim study.
    pub null_trials: usize,
    /// Run the forgery group.
    pub forgeries: bool,
    /// The map from original to copy pixels a scenario applied, when it is known
    /// (scenario name, the trial's seed, original size, copy size): each such trial is also
    /// detected at it, to tell a lost search from a lost signal.
    pub true_geometry: Option<TrueGeometry>,
    /// The scenarios (by name) whose copies are also detected with the keystone search
    /// ([`Detector::detect_keystones`]): the photos of a screen.
    pub keystone_search: Option<fn(&str) -> bool>,
    /// Detect each copy whose payload the blind search did not read again as the
    /// examiner does with a ledger that holds every image of the run: with their sizes as
    /// [`DetectOptions::frame_sizes`] (the frame search of a photo of a screen, the
    /// whole-image search of a rescaled copy, the turned-canvas search of a straightened
    /// one). What that finds counts with the informed
    /// check ([`Trial::informed_named`]).
    pub ledger_sizes: bool,
    /// Examine each copy against its original too, as an examiner who holds the released
    /// image does ([`tracemark::mark::reference::detect_with_original`]), with the informed
    /// check on what is left ([`Trial::reference`]).
    pub reference: bool,
}

/// See [`Config::true_geometry`].
pub type TrueGeometry = fn(&str, u64, (usize, usize), (usize, usize)) -> Option<Geometry>;

/// A leak's own geometry, known to the benchmark that applied it.
#[derive(Clone, Copy, Debug)]
pub enum Geometry {
    /// Row-major, original `(x, y)` to the copy's `(a x + b y, c x + d y)` up to a shift:
    /// folded as the only candidate ([`Detector::detect_at_geometry`]).
    Affine([f64; 4]),
    /// A photo of a screen (projective, which no fold candidate follows): the copy is
    /// resampled back into the original's frame through the leak's own map, then folded at
    /// the identity. The resampling blurs a little, so this is a lower bound of what the
    /// mark holds at that geometry.
    Screen(ScreenMap),
}

impl Geometry {
    /// Detects the copy's `luminance` at this geometry; `original` is the stamped image's
    /// size.
    fn detect(
        &self,
        detector: &Detector,
        luminance: &Plane,
        original: (usize, usize),
    ) -> Option<Detection> {
        let opts = DetectOptions::default();
        match self {
            Geometry::Affine(m) => detector.detect_at_geometry(luminance, *m, &opts),
            Geometry::Screen(map) => detector.detect_at_geometry(
                &map.back_to_original(luminance, original.0, original.1),
                [1.0, 0.0, 0.0, 1.0],
                &opts,
            ),
        }
        .ok()
    }
}

/// One stamped-and-leaked detection.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// Image name.
    pub image: String,
    /// "small" (< 1 Mpx) or "large".
    pub size_class: &'static str,
    /// Original width.
    pub width: usize,
    /// Original height.
    pub height: usize,
    /// Key index.
    pub key: usize,
    /// Payload stamped (hex).
    pub payload: String,
    /// Scenario name.
    pub scenario: &'static str,
    /// Scenario family.
    pub family: Family,
    /// Family parameter.
    pub param: f64,
    /// Leaked copy width.
    pub leaked_width: usize,
    /// Leaked copy height.
    pub leaked_height: usize,
    /// The exact payload came back.
    pub recovered: bool,
    /// A mark was claimed (p <= 1e-6).
    pub marked: bool,
    /// A payload other than the stamped one was reported.
    pub false_claim: bool,
    /// Sync statistic.
    pub z: f64,
    /// log10 p-value.
    pub log10_p: f64,
    /// Coded bits wrong before decoding (of 282), at the detector's best candidate.
    pub bit_errors: usize,
    /// The informed fingerprint check named the true release among it and
    /// [`INFORMED_RELEASES`] other issued ones.
    pub informed_named: bool,
    /// The informed check named a release other than the true one.
    pub informed_false: bool,
    /// Rank correlation of the copy's content with the released image's descriptor, in the
    /// frame the sync registered (absent when no comparison could be made).
    pub content_r: Option<f64>,
    /// The content check matched the released image (tracemark's rule, p <= 1e-6).
    pub content_match: bool,
    /// The recipient would be named by the mark alone (blind payload or informed check):
    /// the rule before content binding.
    pub named_by_mark: bool,
    /// The recipient is named: by the mark, and the content matches the released image.
    pub named: bool,
    /// Detection time (ms); excluded from the report.
    pub detect_ms: f64,
    /// Geometry candidates folded before the search stopped (the identity is the first;
    /// 0 when the copy was too small to examine); excluded from the report.
    pub candidates_tested: usize,
    /// Sync z of a detection at the scenario's true geometry ([`Config::true_geometry`]),
    /// when it is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub true_geometry_z: Option<f64>,
    /// At the scenario's true geometry: the exact payload read, or the true release named by
    /// the informed check (as [`Trial::informed_named`]). What a search that always found
    /// the leak's geometry would give.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub true_geometry_named: Option<bool>,
    /// The examination against the original ([`Config::reference`]): `None` inside when
    /// no map registered the copy.
    pub reference: Option<Option<ReferenceRead>>,
    /// With the keystone search ([`Config::keystone_search`]): the statistic, whether a
    /// mark was claimed (at that search's own, larger family) and whether the exact payload
    /// came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keystone_search: Option<KeystoneRead>,
    /// With [`Config::ledger_sizes`], for a copy whose payload the blind search did not
    /// read: whether the detection with the ledger's sizes read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_read: Option<bool>,
    /// For a photo of a screen whose map is known ([`Geometry::Screen`]): the frame
    /// [`screen::find`] sees in the copy, as the largest distance (px) of its corners from
    /// the corners the original really has in the copy; `None` inside when no frame is
    /// found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen_frame: Option<Option<f64>>,
}

/// The largest distance (px) between the corners [`screen::find`] sees in `copy` and where
/// `map` puts the corners of the original (`width x height`); `None` when it sees no frame.
fn frame_error(copy: &Plane, map: &ScreenMap, (width, height): (usize, usize)) -> Option<f64> {
    let frame = screen::find(copy)?;
    let (w, h) = (width as f64, height as f64);
    let truth = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
    Some(
        frame
            .corners
            .iter()
            .zip(truth)
            .map(|(c, (x, y))| {
                let (px, py) = map.to_photo(x, y);
                (c[0] - px).hypot(c[1] - py)
            })
            .fold(0.0, f64::max),
    )
}

/// A detection with the keystone search ([`Trial::keystone_search`]).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct KeystoneRead {
    /// Sync statistic.
    pub z: f64,
    /// A mark was claimed.
    pub marked: bool,
    /// The exact payload came back.
    pub recovered: bool,
}

/// An examination against the original ([`Trial::reference`]).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ReferenceRead {
    /// Sync statistic of the copy minus the fitted original.
    pub z: f64,
    /// Share of the copy's variance the fitted original explains.
    pub explained: f64,
    /// The payload came back, or the informed check named the true release.
    pub named: bool,
    /// Another payload came back, or the informed check named another release.
    pub wrong: bool,
}

/// One detection of the false-claim study.
#[derive(Clone, Debug, Serialize)]
pub struct NullTrial {
    /// Image name.
    pub image: String,
    /// "unmarked" or "other_key".
    pub kind: &'static str,
    /// Variant applied.
    pub variant: &'static str,
    /// Best sync statistic.
    pub z: f64,
    /// log10 p-value.
    pub log10_p: f64,
    /// A mark was claimed.
    pub claimed: bool,
    /// A payload was reported.
    pub payload_reported: bool,
    /// Geometry candidates in the p-value.
    pub candidates: usize,
    /// Single tests in the p-value ([`Detection::tests`]).
    pub tests: f64,
    /// The copy showed a screen's frame ([`Detection::counted`]).
    pub framed: bool,
    /// The whole-image search counted a size ([`Detection::counted`]).
    pub whole: bool,
    /// The turned-canvas search counted a size ([`Detection::counted`]).
    pub turned: bool,
    /// With `original`: the copy examined against the image it was made from
    /// ([`tracemark::mark::reference`]), when a map was fitted.
    pub reference: Option<NullReference>,
}

/// A null copy examined against its original ([`NullTrial::reference`]).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct NullReference {
    /// The copy registered (and what is left was searched).
    pub registered: bool,
    /// Sync statistic of what is left (0 when not registered).
    pub z: f64,
    /// Its log10 p-value, counting the maps compared.
    pub log10_p: f64,
    /// Single tests of the statistic (the fold's templates and shifts at its one map; the
    /// p-value also counts the maps compared).
    pub tests: f64,
    /// A mark was claimed there at p <= 1e-6.
    pub claimed: bool,
    /// A payload was reported there.
    pub payload_reported: bool,
    /// The informed check on what is left named one of 1,001 releases (none is in the copy).
    pub named: bool,
    /// The largest of those releases' fingerprint scores (unit variance for each).
    pub max_fingerprint_z: f64,
}

/// Everything a run produced.
pub struct Results {
    /// Stamped-and-leaked trials, in a fixed order.
    pub trials: Vec<Trial>,
    /// False-claim study.
    pub null: Vec<NullTrial>,
    /// Mean PSNR per image (dB) at the default settings.
    pub psnr: Vec<(String, f64)>,
    /// The forgery group: marks pasted onto images outside the release.
    pub forgeries: Vec<crate::forgery::ForgeryTrial>,
}

pub(crate) fn key_for(seed: u64, index: u64) -> (SecretKey, u64) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
    let mut b = [0u8; 32];
    for c in b.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    (SecretKey::from_bytes(b), rng.next_u64())
}

/// Stamps `r` with the default options.
pub fn stamp(r: &Raster, key: &SecretKey, payload: u64) -> Raster {
    Stamper::new(key, payload, StampOptions::default())
        .and_then(|s| s.stamp_raster(r))
        .expect("benchmark images are large enough to carry a mark")
        .0
}

fn bit_errors(d: &Detection, payload: u64) -> usize {
    let truth = coding::encode(payload);
    d.soft_bits
        .iter()
        .zip(&truth)
        .filter(|(s, b)| (**s < 0.0) != (**b == 1))
        .count()
}

/// Runs the benchmark.
///
/// # Errors
/// Unreadable test files (the forgery group reads DICOM exports).
pub fn run(cfg: &Config) -> anyhow::Result<Results> {
    let marked: Vec<Vec<(SecretKey, u64, Raster, content::Descriptor)>> = cfg
        .images
        .par_iter()
        .enumerate()
        .map(|(i, (_, r))| {
            (0..cfg.keys)
                .map(|k| {
                    let (key, payload) = key_for(cfg.seed, (i * 1000 + k) as u64);
                    let m = stamp(r, &key, payload);
                    // As the product does: the descriptor of the image before marking.
                    let descriptor = content::describe(&r.luminance());
                    (key, payload, m, descriptor)
                })
                .collect()
        })
        .collect();
    let psnr = cfg
        .images
        .iter()
        .zip(&marked)
        .map(|((name, r), ms)| {
            let mean = ms.iter().map(|(_, _, m, _)| m.psnr_db(r)).sum::<f64>() / ms.len() as f64;
            (name.clone(), mean)
        })
        .collect();
    let with_sizes = with_ledger_sizes(
        cfg.images
            .iter()
            .filter(|_| cfg.ledger_sizes)
            .map(|(_, r)| (r.width, r.height)),
    );
    let jobs: Vec<(usize, usize, usize)> = (0..cfg.images.len())
        .flat_map(|i| {
            (0..cfg.keys).flat_map(move |k| (0..cfg.scenarios.len()).map(move |s| (i, k, s)))
        })
        .collect();
    let trials = jobs
        .par_iter()
        .map(|&(i, k, s)| {
            let (name, original) = &cfg.images[i];
            let (key, payload, m, descriptor) = &marked[i][k];
            let sc = &cfg.scenarios[s];
            let seed = cfg.seed ^ ((i as u64) << 40) ^ ((k as u64) << 20) ^ s as u64;
            let leaked = (sc.apply)(m, seed);
            // Timed with the detection, as before: the conversion is part of examining a copy.
            let start = std::time::Instant::now();
            let luminance = leaked.luminance();
            let detector = Detector::new(key);
            let d = detector.detect(&luminance, &DetectOptions::default()).ok();
            let detect_ms = start.elapsed().as_secs_f64() * 1e3;
            let stamped = (m.width, m.height);
            let geometry = cfg
                .true_geometry
                .and_then(|f| f(sc.name, seed, stamped, (leaked.width, leaked.height)));
            let at_truth = geometry
                .as_ref()
                .and_then(|g| g.detect(&detector, &luminance, stamped));
            let true_geometry_z = at_truth.as_ref().map(|d| round3(d.z));
            let true_geometry_named = at_truth.as_ref().map(|d| {
                d.payload == Some(*payload) || informed(detector.patterns(), d, *payload, seed).0
            });
            let reference = cfg.reference.then(|| {
                reference::detect_with_original(
                    &detector,
                    &luminance,
                    &original.luminance(),
                    d.as_ref(),
                    &DetectOptions::default(),
                )
                .and_then(|r| {
                    let at = r.detection.as_ref()?;
                    let (named, wrong) = informed(detector.patterns(), at, *payload, seed);
                    let read = r.payload(DetectOptions::default().max_p);
                    Some(ReferenceRead {
                        z: round3(at.z),
                        explained: round3(r.explained),
                        named: named || read == Some(*payload),
                        wrong: wrong || read.is_some_and(|p| p != *payload),
                    })
                })
            });
            let screen_frame = match &geometry {
                Some(Geometry::Screen(map)) => {
                    Some(frame_error(&luminance, map, stamped).map(round3))
                }
                _ => None,
            };
            let keystone_search = cfg
                .keystone_search
                .filter(|f| f(sc.name))
                .and_then(|_| {
                    detector
                        .detect_keystones(&luminance, &DetectOptions::default())
                        .ok()
                })
                .map(|k| KeystoneRead {
                    z: round3(k.z),
                    marked: k.marked,
                    recovered: k.payload == Some(*payload),
                });
            let (mut informed_named, mut informed_false) = match &d {
                Some(d) => informed(detector.patterns(), d, *payload, seed),
                None => (false, false),
            };
            // The examiner with a ledger: the payload, or the informed check, of the
            // detection given the ledger's sizes.
            let ledger = (cfg.ledger_sizes
                && d.as_ref().is_some_and(|d| d.payload != Some(*payload)))
            .then(|| detector.detect(&luminance, &with_sizes).ok())
            .flatten();
            let mut by_ledger = false;
            if let Some(l) = &ledger {
                let (named, wrong) = informed(detector.patterns(), l, *payload, seed);
                by_ledger = !informed_named && (named || l.payload == Some(*payload));
                informed_named |= named || l.payload == Some(*payload);
                informed_false |= wrong || l.payload.is_some_and(|p| p != *payload);
            }
            // The content is compared where the naming detection registered the copy, as
            // the examiner does: in the rectified frame when the result was a rectified
            // copy's (the blind search's or the frame search's).
            let compare = |d: &Detection| {
                let corrected = d.transform.corrected(&luminance);
                content::compare(
                    corrected.as_ref().unwrap_or(&luminance),
                    &d.registration,
                    descriptor,
                )
            };
            let naming = if by_ledger {
                ledger.as_ref()
            } else {
                d.as_ref()
            };
            let content = naming.and_then(compare);
            let (z, log10_p, marked_, got, errors) = match &d {
                Some(d) => (d.z, d.log10_p, d.marked, d.payload, bit_errors(d, *payload)),
                // Too small to examine: an abstention.
                None => (0.0, 0.0, false, None, coding::CODED_BITS),
            };
            Trial {
                image: name.clone(),
                size_class: if original.width * original.height >= LARGE_PIXELS {
                    "large"
                } else {
                    "small"
                },
                width: original.width,
                height: original.height,
                key: k,
                payload: format!("{payload:016x}"),
                scenario: sc.name,
                family: sc.family,
                param: sc.param,
                leaked_width: leaked.width,
                leaked_height: leaked.height,
                recovered: got == Some(*payload),
                marked: marked_,
                false_claim: got.is_some_and(|g| g != *payload),
                z: round3(z),
                log10_p: round3(log10_p),
                bit_errors: errors,
                informed_named,
                informed_false,
                content_r: content.as_ref().map(|c| round3(c.r)),
                content_match: content.as_ref().is_some_and(|c| c.matches(1e-6, 1)),
                named_by_mark: got == Some(*payload) || informed_named,
                named: (got == Some(*payload) || informed_named)
                    && content.as_ref().is_some_and(|c| c.matches(1e-6, 1)),
                detect_ms: round3(detect_ms),
                candidates_tested: d.as_ref().map_or(0, |d| d.candidates_tested),
                true_geometry_z,
                true_geometry_named,
                reference,
                keystone_search,
                ledger_read: ledger.map(|l| l.payload == Some(*payload)),
                screen_frame,
            }
        })
        .collect();
    Ok(Results {
        trials,
        null: null_study(
            &cfg.images,
            cfg.null_trials,
            cfg.seed,
            false,
            cfg.ledger_sizes,
            false,
            false,
        ),
        psnr,
        forgeries: if cfg.forgeries {
            crate::forgery::run(&cfg.images, cfg.seed)?
        } else {
            Vec::new()
        },
    })
}

/// The informed check (design section 5 step 8) with the true release among
/// [`INFORMED_RELEASES`] others: (true release named, another one named).
pub(crate) fn informed(
    patterns: &KeyPatterns,
    d: &Detection,
    payload: u64,
    seed: u64,
) -> (bool, bool) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x1ED6_E400);
    let mut releases: Vec<u64> = (0..INFORMED_RELEASES).map(|_| rng.next_u64()).collect();
    releases.push(payload);
    // As `tracemark-detect --ledger` does: the alignment the codewords agree with best.
    let Some((i, residual)) = informed::choose(patterns, d, &releases) else {
        return (false, false);
    };
    let variant = if i == 0 {
        d.variant
    } else {
        d.alternatives[i - 1].variant
    };
    let named = accuse(patterns, &residual, &releases, 1e-6, Some(variant));
    (
        named.iter().any(|a| a.release == payload),
        named.iter().any(|a| a.release != payload),
    )
}

/// The detection options of an examiner whose ledger released images of `sizes` (width,
/// height): the distinct ones, in the order first met, as [`DetectOptions::frame_sizes`].
fn with_ledger_sizes(sizes: impl IntoIterator<Item = (usize, usize)>) -> DetectOptions {
    let mut frame_sizes: Vec<[u32; 2]> = Vec::new();
    for (w, h) in sizes {
        let size = [w as u32, h as u32];
        if !frame_sizes.contains(&size) {
            frame_sizes.push(size);
        }
    }
    DetectOptions {
        frame_sizes,
        ..DetectOptions::default()
    }
}

/// The null study's largest window side: larger images are cut to a random window.
const NULL_WINDOW: usize = 640;

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The false-claim study: blind detections with a fresh key on unmarked images and on
/// copies carrying another key's mark, as they are or after JPEG 75, random crops,
/// downscales, or photographed on a screen (tilt 5-10 degrees, a fifth of the copies: those
/// whose screen frame is found are searched twice, [`Detector::detect`]). Large images are
/// first cut to a random window of at most 640 x 640 px so that 10,000 detections fit in a
/// few minutes.
///
/// With `keystones`, every detection is [`Detector::detect_keystones`] (its p-value counts
/// all its searches). With `ledger_sizes`, every detection is given the sizes of the
/// images and of their 640-px windows ([`DetectOptions::frame_sizes`], as the examiner
/// with a ledger that holds them): a photo of a screen whose frame is found and whose
/// payload is not read is then also searched at the scales that map each size onto it,
/// among them the exact size of the image it shows; a copy with the proportions of a size
/// at another size is also searched at the scale that maps that size onto it.
///
/// With `turned`, every copy is first turned on its canvas by 0.5 to 9.5 degrees either
/// way (black corners, [`tracemark_leaks::rotate`]), so that with `ledger_sizes` the copies
/// whose canvas is found ([`tracemark::mark::canvas::find`]) count the turned-canvas search.
pub fn null_study(
    images: &[(String, Raster)],
    trials: usize,
    seed: u64,
    keystones: bool,
    ledger_sizes: bool,
    turned: bool,
    original: bool,
) -> Vec<NullTrial> {
    let opts = with_ledger_sizes(images.iter().filter(|_| ledger_sizes).flat_map(|(_, r)| {
        [
            (r.width, r.height),
            (r.width.min(NULL_WINDOW), r.height.min(NULL_WINDOW)),
        ]
    }));
    (0..trials)
        .into_par_iter()
        .map(|t| {
            let mut rng =
                ChaCha20Rng::seed_from_u64(seed.wrapping_mul(1_000_003) ^ (t as u64) << 8);
            let (name, img) = &images[t % images.len()];
            let (fx, fy) = (unit(&mut rng), unit(&mut rng));
            let img = if img.width > NULL_WINDOW || img.height > NULL_WINDOW {
                let (w, h) = (img.width.min(NULL_WINDOW), img.height.min(NULL_WINDOW));
                crop(
                    img,
                    ((img.width - w) as f64 * fx) as usize,
                    ((img.height - h) as f64 * fy) as usize,
                    w,
                    h,
                )
            } else {
                img.clone()
            };
            let detect_key = key_for(rng.next_u64(), 0).0;
            let other_key = t % 2 == 1;
            let released = img.clone();
            let base = if other_key {
                let (k, p) = key_for(rng.next_u64(), 1);
                stamp(&img, &k, p)
            } else {
                img
            };
            let (gx, gy) = (unit(&mut rng), unit(&mut rng));
            let base = if turned {
                let degrees = 0.5 + 9.0 * unit(&mut rng);
                let sign = if rng.next_u32() % 2 == 0 { 1.0 } else { -1.0 };
                tracemark_leaks::rotate(&base, sign * degrees)
            } else {
                base
            };
            let (variant, v) = match (t / 2) % 5 {
                0 => ("as_is", base),
                1 => ("jpeg75", jpeg_420(&base, 75)),
                2 => ("crop", crop_fraction(&base, 0.3 + 0.6 * gx, gx, gy)),
                3 => ("downscale", scale(&base, 0.5 + 0.4 * gy, Filter::Triangle)),
                _ => (
                    "screen_photo",
                    tracemark_leaks::screen_photo(&base, 5.0 + 5.0 * gx, rng.next_u64()),
                ),
            };
            let detector = Detector::new(&detect_key);
            let d = if keystones {
                detector.detect_keystones(&v.luminance(), &opts)
            } else {
                detector.detect(&v.luminance(), &opts)
            }
            .expect("null images are large enough to examine");
            let reference = original
                .then(|| {
                    reference::detect_with_original(
                        &detector,
                        &v.luminance(),
                        &released.luminance(),
                        Some(&d),
                        &opts,
                    )
                })
                .flatten()
                .map(|r| null_reference(&detector, &r, rng.next_u64()));
            NullTrial {
                image: name.clone(),
                kind: if other_key { "other_key" } else { "unmarked" },
                variant,
                z: round3(d.z),
                log10_p: round3(d.log10_p),
                claimed: d.marked,
                payload_reported: d.payload.is_some(),
                candidates: d.candidates,
                tests: d.tests,
                framed: d.counted.frame,
                whole: d.counted.whole_sizes > 0,
                turned: d.counted.turned_sizes > 0,
                reference,
            }
        })
        .collect()
}

/// What the examination of a null copy against its original gave: the claim, the payload,
/// and the informed check among [`INFORMED_RELEASES`] + 1 random releases (none of them in
/// the copy).
fn null_reference(detector: &Detector, r: &reference::Referenced, seed: u64) -> NullReference {
    let max_p = DetectOptions::default().max_p;
    let (named, max_fingerprint_z) = match &r.detection {
        Some(d) => {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let releases: Vec<u64> = (0..=INFORMED_RELEASES).map(|_| rng.next_u64()).collect();
            match informed::choose(detector.patterns(), d, &releases) {
                Some((_, residual)) => {
                    let named = !accuse(
                        detector.patterns(),
                        &residual,
                        &releases,
                        max_p,
                        Some(d.variant),
                    )
                    .is_empty();
                    let z = releases
                        .iter()
                        .map(|&id| residual.score_variant(detector.patterns(), id, d.variant))
                        .fold(f64::MIN, f64::max);
                    (named, z)
                }
                None => (false, 0.0),
            }
        }
        None => (false, 0.0),
    };
    NullReference {
        registered: r.detection.is_some(),
        z: round3(r.detection.as_ref().map_or(0.0, |d| d.z)),
        log10_p: round3(r.log10_p()),
        tests: r.detection.as_ref().map_or(0.0, |d| d.tests),
        claimed: r.marked(max_p),
        payload_reported: r.payload(max_p).is_some(),
        named,
        max_fingerprint_z: round3(max_fingerprint_z),
    }
}

fn unit(rng: &mut ChaCha20Rng) -> f64 {
    (rng.next_u32() >> 8) as f64 / (1u32 << 24) as f64
}

/// Model probability that the per-image null statistic exceeds `t`:
/// `1 - (1 - 2Q(t))^n_tests` with every shift an independent N(0, 1).
pub fn null_model_exceed(t: f64, n_tests: f64) -> f64 {
    1.0 - (1.0 - 2.0 * stats::q(t)).powf(n_tests)
}

/// The model probability that a null detection's statistic exceeds `t`, averaged over the
/// trials: each counts its own family ([`NullTrial::tests`]: a copy showing a screen's frame
/// is searched twice, or three times with the frame search; with the images' sizes, the
/// whole-image and turned-canvas searches' tests too).
pub fn null_model_mean(null: &[NullTrial], t: f64) -> f64 {
    null.iter()
        .map(|n| null_model_exceed(t, n.tests))
        .sum::<f64>()
        / null.len().max(1) as f64
}

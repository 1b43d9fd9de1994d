//! Blind detection (design.md section 5): whiten, find the tile lattice in the
//! autocorrelation (scale and rotation), fold every candidate geometry modulo the tile,
//! correlate the fold with the sync pattern by FFT (translation, orientation, inversion),
//! normalise per chip phase, and decode the payload by soft Viterbi behind a CRC.

use std::sync::Mutex;

use rustfft::FftPlanner;
use rustfft::num_complex::Complex32;

use crate::coding;
use crate::error::{Error, Result};
use crate::key::SecretKey;
use crate::mark::canvas::{self, Turned};
use crate::mark::content::Registration;
use crate::mark::dsp::{Fft2, FftScratch, box_mean, shaping_kernel};
use crate::mark::fold::{Keystone, fold, fold_keystone, whiten};
use crate::mark::keystone::{Edge, Trapezoid};
use crate::mark::lattice::{self, Candidate};
use crate::mark::pattern::{CHIP, CHIPS_PER_SIDE, KeyPatterns, N_CHIPS, TILE, VARIANTS};
use crate::mark::screen::{self, Screen};
use crate::raster::Plane;
use crate::simd::avx2_kernel;
use crate::stats;

/// Smallest image side the detector examines.
pub const MIN_DETECT_SIDE: usize = 64;
/// Geometry candidates verified besides the identity.
const GEOMETRY_CANDIDATES: usize = 4;
/// Keystones [`Detector::detect_keystones`] undoes: each far edge shortened by each of
/// these fractions of its length at each end (a camera tilted by up to about 10 degrees).
/// A keystone between two of them is left to the affine fold and the keystone read.
/// Measured with `tracemark-bench hard` (seeds 1-3, 36 photos of screens of the 512-px
/// test photos at tilts 5 and 10): steps of 2 % up to 8 % read 29, these 33.
const KEYSTONE_SHRINKS: [f64; 9] = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09];
/// The keystones [`Detector::detect_keystones`] tries besides none.
pub const KEYSTONE_HYPOTHESES: usize = Edge::ALL.len() * KEYSTONE_SHRINKS.len();
/// Geometry candidates a blind search counts: the identity and the lattice's.
const BLIND_FAMILY: usize = 1 + GEOMETRY_CANDIDATES;
/// Geometry candidates [`Detector::detect_keystones`] counts: a blind search's, once
/// without a keystone and once per keystone.
const KEYSTONE_FAMILY: usize = (1 + KEYSTONE_HYPOTHESES) * BLIND_FAMILY;
/// Geometry candidates counted in [`Detector::detect`]'s p-value for a copy that shows a
/// screen's frame: the blind search on the copy and on the copy rectified.
const SCREEN_FAMILY: usize = 2 * BLIND_FAMILY;
/// Orientations tried per candidate: quarter turns.
const ORIENTATIONS: usize = 4;
const SHIFTS: usize = TILE * TILE;
/// The frame search ([`DetectOptions::frame_sizes`]): the scales it tries about the one
/// that maps an original size onto the rectified frame, in relative steps of
/// [`FRAME_STEP`], up to [`FRAME_STEPS`] steps each way on each axis. A frame's corners are
/// found within 1-3 px (`tracemark-bench hard`), a few tenths of a percent of its side; at
/// a wrong scale the tiles drift apart across the copy, and the sync statistic of a 512-px
/// copy falls to noise 1 % away from the true scale.
const FRAME_STEP: f64 = 0.0025;
const FRAME_STEPS: i32 = 4;
/// The frame search's scale candidates per original size: both axes on the grid.
const FRAME_GRID: usize = (2 * FRAME_STEPS as usize + 1) * (2 * FRAME_STEPS as usize + 1);
/// How far (original px, each axis) from the frame's top-left corner the frame search looks
/// for the tile origin: a frame's corner error divided by the scale.
const FRAME_WINDOW: usize = 4;
/// The shifts the frame search tests per template and scale.
const FRAME_SHIFTS: usize = (2 * FRAME_WINDOW + 1) * (2 * FRAME_WINDOW + 1);
/// Largest relative difference between an original size's aspect and the rectified
/// frame's for that size to be searched: the rectified frame's aspect is the pinhole's
/// mean-edge estimate, off by about 1.5 % at a tilt of 10 degrees.
const FRAME_ASPECT: f64 = 0.06;
/// Most original sizes the frame search tries on one frame: those nearest the frame's
/// aspect (a ledger of many sizes would otherwise make it slow and its family large).
const FRAME_MAX_SIZES: usize = 16;
/// Most pixels the frame search rectifies over its sizes (each size at most the smaller of
/// the original and the frame): it folds each [`FRAME_GRID`] times, about 2 ms per fold
/// of a 512 x 512 copy, so this bounds it near 5 s on a 2-core machine.
const FRAME_MAX_PIXELS: usize = 1 << 23;
/// Scales (rectified frame over original) the frame search tries: below 0.2 a chip is
/// under half a pixel of the copy, and the mark is gone.
const FRAME_SCALES: (f64, f64) = (0.2, 8.0);
/// The whole-image search ([`DetectOptions::frame_sizes`] on a copy with an original's
/// proportions): steps of [`FRAME_STEP`] each way on each axis about the scale that maps
/// the original's size onto the copy's. Rounding each side to whole pixels leaves the
/// scale within one pixel over the side of the true one: 0.5 % or better from 200 px.
const WHOLE_STEPS: i32 = 2;
/// The whole-image search's scale candidates per original size.
const WHOLE_GRID: usize = (2 * WHOLE_STEPS as usize + 1) * (2 * WHOLE_STEPS as usize + 1);

/// The turned-canvas search ([`canvas::find`]): the largest difference between an
/// original size's proportions and the turned image's, besides two pixels a side.
const TURNED_ASPECT: f64 = 0.005;

/// Detection settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectOptions {
    /// Largest false-alarm probability at which a mark is claimed (default 1e-6).
    pub max_p: f64,
    /// Search photos of a screen taken at an angle too ([`Detector::detect_keystones`]):
    /// up to 37 times the work on a copy without a payload, and a claim needs a larger
    /// statistic (default off). Read by [`crate::pipeline::Examiner`].
    pub keystones: bool,
    /// The sizes (width, height) of the stamped originals: the ledger's
    /// ([`crate::pipeline::Examiner::with_ledger`]), none by default. A copy that shows a
    /// screen's frame ([`screen::find`]) and reads no payload by the blind search is then
    /// also searched with the tile origin at the frame's top-left corner and the scale
    /// that maps each size onto the rectified frame (the frame search, [`Detector::detect`]):
    /// a photo of a screen showing a small or finely textured image, whose tile lattice
    /// the blind search cannot find. A copy that reads no payload and whose proportions
    /// are a size's (to a pixel a side) is also searched at the scale that maps that size
    /// onto the copy, with the tile origin at its top-left corner (the whole-image search:
    /// the whole image rescaled, halved or downscaled to a third, where the lattice is lost).
    /// A copy that shows a whole image turned on a canvas filled with one value
    /// ([`canvas::find`]) is searched at that turn, the scale that maps each size of its
    /// proportions onto the turned image, and the tile origin where its top-left corner
    /// lies (the turned-canvas search: an image straightened by a degree or a few).
    pub frame_sizes: Vec<[u32; 2]>,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            max_p: 1e-6,
            keystones: false,
            frame_sizes: Vec::new(),
        }
    }
}

/// The geometry under which the mark was found, relative to the stamped original.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transform {
    /// Scale of the copy relative to the original (0.5 = downscaled by half; the geometric
    /// mean of the two axes' scales).
    pub scale: f64,
    /// Horizontal over vertical scale (1 = proportions kept; 1.1 = stretched 10 % wide).
    pub aspect: f64,
    /// Rotation of the copy in degrees, counter-clockwise on screen (the sense of image
    /// editors' "rotate left"), including quarter turns; in (-180, 180].
    pub rotation_deg: f64,
    /// Position of the tile origin in the copy's unrotated, unscaled frame, modulo 128 px.
    pub shift: [u32; 2],
    /// Whether the grey levels were inverted.
    pub inverted: bool,
    /// Whether the chips (and the payload, when it decoded) were read from a fold corrected
    /// for a keystone (a photo of a screen taken at an angle), because the affine
    /// candidate's payload did not decode. The other fields, the statistic and its p-value
    /// are still the affine candidate's.
    #[serde(default)]
    pub keystone: bool,
    /// The keystone undone before the search ([`Detector::detect_keystones`]), when the
    /// result is that corrected copy's; the other fields are then relative to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone_keystone: Option<Trapezoid>,
    /// The frame of a screen photographed at an angle ([`screen::find`]), when the result
    /// is the copy's with that frame rectified ([`Screen::rectify`]); the other fields are
    /// then relative to the rectified copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<Screen>,
}

impl Transform {
    /// The copy `plane` as the mark registered in it, when that is not the copy itself:
    /// with [`Transform::undone_keystone`] undone or the [`Transform::screen`] frame
    /// rectified. What the content check compares with the released image.
    pub fn corrected(&self, plane: &Plane) -> Option<Plane> {
        match (self.undone_keystone, self.screen) {
            (Some(t), _) => Some(t.undo(plane)),
            (None, Some(frame)) => Some(frame.rectify(plane)),
            (None, None) => None,
        }
    }
}

/// What the detector found in one image.
#[derive(Clone, Debug)]
pub struct Detection {
    /// Best sync statistic (robust z, per chip phase; sign removed).
    pub z: f64,
    /// log10 of the false-alarm probability of "a mark of this key is present".
    pub log10_p: f64,
    /// Whether the mark is claimed (p <= max_p).
    pub marked: bool,
    /// The payload, when the mark is claimed and the decode passes the CRC.
    pub payload: Option<u64>,
    /// The geometry of the best candidate (meaningful when marked).
    pub transform: Transform,
    /// Geometry candidates counted in the p-value (with the frame and whole-image searches',
    /// which are each tested at fewer shifts: [`Detection::tests`]).
    pub candidates: usize,
    /// Single tests counted in the p-value: each candidate's templates times the shifts it
    /// looks at.
    pub tests: f64,
    /// Geometry candidates actually folded (the search stops at the first confirmed one).
    pub candidates_tested: usize,
    /// Soft values of the coded bits read at the best candidate (positive = bit 0), for
    /// diagnostics such as bit-error rates before decoding.
    pub soft_bits: Vec<f32>,
    /// Matched-filter chip values (64 x 64) of the fold at the best candidate (its
    /// spectrum partly flattened, unless the payload decoded only from the fold as
    /// folded), aligned to the key's frame by the sync peak, still scrambled by whatever
    /// tile variant(s) the copy carries: the input of the informed per-release check
    /// ([`crate::mark::informed`]), which tries every variant.
    pub chips: Vec<f32>,
    /// Why there was nothing to examine, when the image carries no signal at all (e.g. a
    /// flat image: no texture survives whitening, so no statistic can be formed). `z` is
    /// then 0 and the p-value 1: no evidence either way.
    pub nothing_to_examine: Option<&'static str>,
    /// Where the copy's pixels lie in the stamped original (modulo the tile), from the best
    /// candidate: what the content check registers the copy with.
    pub registration: Registration,
    /// The tile variant of the best peak.
    pub variant: usize,
    /// What [`Detector::detect`] counted in the family besides the blind search: whether
    /// the copy showed a screen's frame (the rectified copy searched too), and how many
    /// original sizes the frame search and the whole-image search counted.
    pub counted: Counted,
    /// When no search read a payload, the other searches' results (each with its own
    /// geometry, chips and registration), strongest statistic first: the alignments the
    /// informed check may choose from by the payload codeword
    /// ([`crate::mark::informed::choose`]). Empty when a payload was read, and for a
    /// single search's result.
    pub alternatives: Vec<Detection>,
}

/// The searches a detection's p-value counts besides the blind search on the copy
/// ([`Detection::counted`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counted {
    /// The copy showed a screen's frame ([`screen::find`]).
    pub frame: bool,
    /// Original sizes the frame search counted.
    pub frame_sizes: usize,
    /// Original sizes the whole-image search counted.
    pub whole_sizes: usize,
    /// Original sizes the turned-canvas search counted.
    pub turned_sizes: usize,
}

impl Detection {
    /// The false-alarm probability (0 when below f64's range).
    pub fn p_value(&self) -> f64 {
        10f64.powf(self.log10_p)
    }
}

/// Which sync templates a search correlates with.
#[derive(Clone, Copy, Debug)]
enum Templates {
    /// Every variant in every orientation (blind detection).
    All,
    /// Every variant, unrotated (a copy as tracemark wrote it).
    Unrotated,
    /// One variant, unrotated (reading back what was just stamped).
    Only(usize),
}

impl Templates {
    fn list(self) -> Vec<(usize, usize)> {
        match self {
            Templates::All => (0..VARIANTS)
                .flat_map(|v| (0..ORIENTATIONS).map(move |o| (v, o)))
                .collect(),
            Templates::Unrotated => (0..VARIANTS).map(|v| (v, 0)).collect(),
            Templates::Only(v) => vec![(v, 0)],
        }
    }
}

/// What a search's p-value counts: its geometry candidates and its single tests (each
/// candidate's templates times the shifts it looks at).
#[derive(Clone, Copy, Debug)]
struct Family {
    candidates: usize,
    tests: f64,
}

impl Family {
    /// `candidates` geometries, each with every template of `templates` at every shift.
    fn full(candidates: usize, templates: Templates) -> Self {
        Family {
            candidates,
            tests: (candidates * templates.list().len() * SHIFTS) as f64,
        }
    }

    /// The frame search's for `sizes` original sizes: [`FRAME_GRID`] scales each, every
    /// variant unrotated, at [`FRAME_SHIFTS`] shifts.
    fn frame(sizes: usize) -> Self {
        let candidates = sizes * FRAME_GRID;
        Family {
            candidates,
            tests: (candidates * VARIANTS * FRAME_SHIFTS) as f64,
        }
    }

    /// The whole-image search's for `sizes` original sizes: [`WHOLE_GRID`] scales each,
    /// every variant unrotated, at [`FRAME_SHIFTS`] shifts.
    fn whole(sizes: usize) -> Self {
        let candidates = sizes * WHOLE_GRID;
        Family {
            candidates,
            tests: (candidates * VARIANTS * FRAME_SHIFTS) as f64,
        }
    }

    fn plus(self, other: Family) -> Self {
        Family {
            candidates: self.candidates + other.candidates,
            tests: self.tests + other.tests,
        }
    }
}

/// The shifts a search in a window looks at: those within `radius` px (each axis,
/// cyclically) of `centre`.
#[derive(Clone, Copy, Debug)]
struct Window {
    radius: usize,
    centre: (usize, usize),
}

/// Where a frame, whole-image or turned-canvas search puts the original in the copy (or
/// in the rectified frame): each axis's `scale`, then turned by `angle` (radians, y down),
/// with the original's top-left pixel at `corner`.
#[derive(Clone, Copy, Debug)]
struct Placement {
    scale: (f64, f64),
    angle: f64,
    corner: [f64; 2],
}

impl Placement {
    /// Upright at `scale`, the corner at the copy's.
    fn upright(scale: (f64, f64)) -> Self {
        Placement {
            scale,
            angle: 0.0,
            corner: [0.0, 0.0],
        }
    }

    /// The candidate with each axis's scale multiplied by `fx` and `fy`.
    fn scaled(&self, fx: f64, fy: f64) -> Candidate {
        let (sx, sy) = (self.scale.0 * fx, self.scale.1 * fy);
        let (sin, cos) = self.angle.sin_cos();
        Candidate {
            m: [sx * cos, -sy * sin, sx * sin, sy * cos],
            score: f64::INFINITY,
        }
    }

    /// The window about the shift at which the fold shows the tile origin: the corner
    /// brought back to the original's frame (a fold places copy pixel `x` at `M^-1 x`, so
    /// the original's `(0, 0)`, at `corner` in the copy, lands at `M^-1 corner`).
    fn window(&self) -> Window {
        let [a, b, c, d] = self.scaled(1.0, 1.0).inverse();
        let [x, y] = self.corner;
        let bin = |v: f64| (v.round() as i64).rem_euclid(TILE as i64) as usize;
        Window {
            radius: FRAME_WINDOW,
            centre: (bin(a * x + b * y), bin(c * x + d * y)),
        }
    }
}

/// A detector for one key: the key's patterns and FFT plans, reused for every image.
pub struct Detector {
    patterns: KeyPatterns,
    /// Spectra (transposed layout, conjugated) of the sync template of each variant in each
    /// orientation, at `variant * ORIENTATIONS + orientation`.
    sync_spectra: Vec<Vec<Complex32>>,
    fft_tile: Fft2,
    planners: Mutex<lattice::Planners>,
}

/// The chips read at a verified peak (scrambled by the copy's variant) and the soft coded
/// bits read from them with the peak's variant unscrambled.
type Reading = (Vec<f32>, Vec<f32>);

struct Verified {
    z: f64,
    variant: usize,
    orientation: usize,
    shift: (usize, usize),
    sign: f32,
    /// The fold with its spectrum flattened ([`flatten_fold`]), which the peak was found in.
    fold: Vec<f32>,
    /// The fold as folded: a second reading of the payload.
    plain: Vec<f32>,
}

impl Detector {
    /// Derives the key's patterns and plans the tile FFTs.
    pub fn new(key: &SecretKey) -> Self {
        Self::from_patterns(KeyPatterns::new(key))
    }

    /// A detector from already derived patterns.
    pub fn from_patterns(patterns: KeyPatterns) -> Self {
        let mut planner = FftPlanner::new();
        let fft_tile = Fft2::new(&mut planner, TILE, TILE);
        let mut tmp = FftScratch::default();
        let mut sync_spectra = Vec::with_capacity(VARIANTS * ORIENTATIONS);
        for tile in &patterns.sync_tiles {
            let mut tpl = tile.clone();
            for _ in 0..ORIENTATIONS {
                let mut spec: Vec<Complex32> =
                    tpl.iter().map(|&v| Complex32::new(v, 0.0)).collect();
                fft_tile.forward_to_transposed(&mut spec, &mut tmp);
                spec.iter_mut().for_each(|c| *c = c.conj());
                sync_spectra.push(spec);
                tpl = rotate_quarter(&tpl);
            }
        }
        Detector {
            patterns,
            sync_spectra,
            fft_tile,
            planners: Mutex::new(lattice::Planners::new(planner)),
        }
    }

    /// The key's patterns.
    pub fn patterns(&self) -> &KeyPatterns {
        &self.patterns
    }

    /// The sync z a blind detection needs to claim a mark at false-alarm probability
    /// `max_p` (the whole geometry search counted).
    pub fn blind_claim_z(max_p: f64) -> f64 {
        claim_z(BLIND_FAMILY, max_p)
    }

    /// The sync z [`Detector::detect_keystones`] needs to claim a mark at false-alarm
    /// probability `max_p` (every keystone's search counted).
    pub fn keystone_claim_z(max_p: f64) -> f64 {
        claim_z(KEYSTONE_FAMILY, max_p)
    }

    /// The sync z [`Detector::detect`] needs to claim a mark at false-alarm probability
    /// `max_p` in a copy that shows the frame of a screen ([`screen::find`]): two searches
    /// counted. With [`DetectOptions::frame_sizes`] the frame search's tests are counted
    /// too, which raises it by a few thousandths per size ([`Detection::tests`]).
    pub fn screen_claim_z(max_p: f64) -> f64 {
        claim_z(SCREEN_FAMILY, max_p)
    }

    /// Blind detection on a luminance plane (8-bit display units).
    ///
    /// When the copy shows the frame of a screen photographed at an angle ([`screen::find`],
    /// which looks at the copy alone, never at the key) and the search finds no payload in
    /// it, the search runs again on the copy with that frame rectified ([`Screen::rectify`]):
    /// a keystone smears the tile lattice, and the rectified copy leaves an affine map. The
    /// result is the rectified copy's when it reads a payload or, without one, has the larger
    /// statistic; [`Transform::screen`] then gives the frame. With
    /// [`DetectOptions::frame_sizes`], when neither reads a payload, the frame search runs
    /// too (the frame rectified to each size that fits it, the tile origin at its corner);
    /// its result is taken on the same terms. The p-value of a copy with a frame counts
    /// both searches ([`Detector::screen_claim_z`]) and the frame search's tests for the
    /// sizes that fit ([`Detection::tests`]), whichever gave the result and whether or not
    /// the later ones ran: which family applies is decided by the copy and the sizes alone
    /// before any statistic is seen, so it is the family the copy was tested with. A copy
    /// with no frame is tested as before ([`Detector::blind_claim_z`]). Last, when no
    /// search has read a payload, a copy with the proportions of a given size at another
    /// scale gets the whole-image search (the whole image rescaled: the tile origin at the
    /// copy's corner, the scale from the sizes), and a copy that shows a whole image turned
    /// on a canvas ([`canvas::find`]) the turned-canvas search (the turn and the corner
    /// from the canvas, the scale from the sizes); their tests are counted on the same
    /// terms.
    ///
    /// # Errors
    /// [`Error::TooSmall`] when a side is below [`MIN_DETECT_SIDE`].
    pub fn detect(&self, plane: &Plane, opts: &DetectOptions) -> Result<Detection> {
        check_size(plane)?;
        // Decided from the copy and the given sizes alone, before any statistic.
        let frame = screen::find(plane);
        let whole = whole_sizes(plane, &opts.frame_sizes);
        // Only a ledger's sizes can give the turned-canvas search anything to try.
        let turned = (!opts.frame_sizes.is_empty())
            .then(|| canvas::find(plane))
            .flatten();
        let turned_sizes = turned
            .as_ref()
            .map(|t| turned_sizes(plane, t, &opts.frame_sizes))
            .unwrap_or_default();
        let framed = frame
            .as_ref()
            .map(|f| frame_sizes(f, &opts.frame_sizes))
            .unwrap_or_default();
        let searches = if frame.is_some() {
            SCREEN_FAMILY
        } else {
            BLIND_FAMILY
        };
        let family = Family::full(searches, Templates::All)
            .plus(Family::frame(framed.len()))
            .plus(Family::whole(whole.len()))
            .plus(Family::whole(turned_sizes.len()));
        let white = whiten(plane);
        let mut best = self.blind(&white, family, opts)?;
        // Kept for the whole-image and turned-canvas searches, which fold the same plane. A
        // copy with a screen's frame frees it first: the frame path whitens planes of its
        // own, and the examined window's memory estimate has room for one whitened plane
        // beside them, not two.
        let mut white = Some(white);
        // Each later search runs only while none has read a payload; its result is taken
        // when it reads one or, without one, has the larger statistic. The other is kept
        // as an alternative alignment for the informed check.
        let mut others: Vec<Detection> = Vec::new();
        let mut take = |best: &mut Detection, d: Detection| {
            if d.payload.is_some() || (best.payload.is_none() && d.z > best.z) {
                others.push(std::mem::replace(best, d));
            } else {
                others.push(d);
            }
        };
        if let Some(frame) = frame {
            white = None;
            let rectified = frame.rectify(plane);
            if best.payload.is_none() && check_size(&rectified).is_ok() {
                let mut d = self.blind(&whiten(&rectified), family, opts)?;
                d.transform.screen = Some(frame);
                take(&mut best, d);
                if best.payload.is_none()
                    && let Some(d) = self.frame_search(plane, &frame, &framed, family, opts)?
                {
                    take(&mut best, d);
                }
            }
        }
        if best.payload.is_none() && !(whole.is_empty() && turned_sizes.is_empty()) {
            let white = white.unwrap_or_else(|| whiten(plane));
            if let Some(d) = self.whole_search(&white, &whole, family, opts)? {
                take(&mut best, d);
            }
            if best.payload.is_none()
                && let Some(t) = &turned
                && let Some(d) = self.turned_search(&white, t, &turned_sizes, family, opts)?
            {
                take(&mut best, d);
            }
        }
        best.counted = Counted {
            frame: frame.is_some(),
            frame_sizes: framed.len(),
            whole_sizes: whole.len(),
            turned_sizes: turned_sizes.len(),
        };
        if best.payload.is_none() {
            others.sort_by(|a, b| b.z.total_cmp(&a.z));
            best.alternatives = others;
        }
        Ok(best)
    }

    /// [`Detector::detect`] for a photo of a screen: when the blind search finds no
    /// payload, it runs again on the copy with each of [`KEYSTONE_HYPOTHESES`] keystones
    /// undone (the far edge, top, right, bottom or left, shorter by 1 to 9 % at each end,
    /// in steps of 1 %, the sides foreshortened to match: [`Trapezoid::undo`]), stopping at
    /// the first payload; else the strongest statistic is
    /// reported. A keystone smears the tile lattice across the copy (its scale changes from
    /// edge to edge), so the affine search alone loses small photos of screens.
    ///
    /// The p-value counts every search (`1 + KEYSTONE_HYPOTHESES` times the blind
    /// family), so a claim needs a larger statistic than [`Detector::detect`]'s, and the
    /// search costs up to 37 blind detections. When the result is a corrected copy's (its
    /// payload, or without one its larger statistic), [`Transform::undone_keystone`] names
    /// the keystone, and the transform and the registration are those of the copy with it
    /// undone ([`Trapezoid::undo`]).
    ///
    /// # Errors
    /// [`Error::TooSmall`] when a side is below [`MIN_DETECT_SIDE`].
    pub fn detect_keystones(&self, plane: &Plane, opts: &DetectOptions) -> Result<Detection> {
        check_size(plane)?;
        let family = Family::full(KEYSTONE_FAMILY, Templates::All);
        let mut best = self.blind(&whiten(plane), family, opts)?;
        for h in 0..KEYSTONE_HYPOTHESES {
            if best.payload.is_some() {
                break;
            }
            let t = Trapezoid {
                far_edge: Edge::ALL[h % Edge::ALL.len()],
                shrink: KEYSTONE_SHRINKS[h / Edge::ALL.len()],
            };
            let mut d = self.blind(&whiten(&t.undo(plane)), family, opts)?;
            if d.payload.is_some() || d.z > best.z {
                d.transform.undone_keystone = Some(t);
                best = d;
            }
        }
        Ok(best)
    }

    /// The blind search on a whitened copy, its p-value counting `family`.
    fn blind(&self, white: &Plane, family: Family, opts: &DetectOptions) -> Result<Detection> {
        // The identity first; the lattice search (a fixed cost that dominates small images)
        // runs only when the identity does not give a confirmed payload: a copy as released,
        // recompressed or re-saved, needs none.
        let lattice = std::iter::once_with(|| {
            let mut found: Vec<Candidate> = Vec::new();
            // Best first: the rest are weaker still.
            for c in lattice::candidates(white, &self.planners)
                .into_iter()
                .take_while(|c| c.score >= lattice::FOLD_MIN_SCORE)
            {
                let dup = c.same_as(&Candidate::identity()) || found.iter().any(|d| d.same_as(&c));
                if !dup && found.len() < GEOMETRY_CANDIDATES {
                    found.push(c);
                }
            }
            found
        })
        .flatten();
        // Bonferroni over every candidate the search may fold, whether or not it stops early:
        // sequential testing in a fixed order cannot raise the family-wise error.
        // `blind_claim_z` counts the same family.
        self.search(
            white,
            std::iter::once(Candidate::identity()).chain(lattice),
            family,
            Templates::All,
            opts,
            None,
        )
    }

    /// The frame search on a photo of a screen whose `frame` was found: for each original
    /// size, the frame rectified to that size's proportions, at the size itself or at the
    /// frame's own scale when the screen shows it smaller (so a fold costs at most the
    /// original's pixels), then folded at the scales about the one that maps the size onto
    /// it ([`FRAME_GRID`] of them, nearest first), every variant unrotated, with the tile
    /// origin within [`FRAME_WINDOW`] px of the frame's top-left corner. The screen shows the
    /// whole image, so its corner is the original's; the blind search's lattice, which a
    /// fine texture or a small image hides, is then not needed. The p-value counts
    /// `family`, which includes these tests. Stops at the first payload; else the largest
    /// statistic, with [`Transform::screen`] the frame at the size it was rectified to.
    fn frame_search(
        &self,
        plane: &Plane,
        frame: &Screen,
        sizes: &[(usize, usize)],
        family: Family,
        opts: &DetectOptions,
    ) -> Result<Option<Detection>> {
        let (fw, fh) = frame.rectified_size();
        first_read(sizes.iter().filter_map(|&(ow, oh)| {
            let (ow, oh) = (ow as f64, oh as f64);
            let s = ((fw * fh) as f64 / (ow * oh)).sqrt().min(1.0);
            let size = [(ow * s).round() as usize, (oh * s).round() as usize];
            let at = Screen {
                size: Some(size),
                ..*frame
            };
            let rectified = at.rectify(plane);
            check_size(&rectified).ok()?;
            let scale = (size[0] as f64 / ow, size[1] as f64 / oh);
            let found = self.scale_grid(
                &whiten(&rectified),
                Placement::upright(scale),
                FRAME_STEPS,
                family,
                opts,
            );
            Some(found.map(|mut d| {
                d.transform.screen = Some(at);
                d
            }))
        }))
    }

    /// The whole-image search on a copy whose proportions are those of the original
    /// `sizes`: for each, the copy folded at the scales about the one that maps the size
    /// onto it, with the tile origin at the copy's top-left corner ([`Detector::placed`]).
    /// A copy that is the whole image rescaled (halved, downscaled to a third, shown
    /// larger) keeps the original's corner and tells its scale by its size, so the
    /// lattice, which the rescaling weakens or hides, is not needed.
    fn whole_search(
        &self,
        white: &Plane,
        sizes: &[(usize, usize)],
        family: Family,
        opts: &DetectOptions,
    ) -> Result<Option<Detection>> {
        let (w, h) = (white.width as f64, white.height as f64);
        let at = sizes
            .iter()
            .map(|&(ow, oh)| Placement::upright((w / ow as f64, h / oh as f64)));
        self.placed(white, at, family, opts)
    }

    /// The turned-canvas search on a copy that shows a whole image turned on a canvas
    /// ([`canvas::find`]), for each original size whose proportions the turned image has:
    /// the copy folded at the turn and the scales about the one that maps the size onto the
    /// turned image, with the tile origin where the turned image's top-left corner puts it
    /// ([`Detector::placed`]).
    fn turned_search(
        &self,
        white: &Plane,
        turned: &Turned,
        sizes: &[(usize, usize)],
        family: Family,
        opts: &DetectOptions,
    ) -> Result<Option<Detection>> {
        let (ew, eh) = turned.edge_lengths();
        let at = sizes.iter().map(|&(ow, oh)| Placement {
            scale: (ew / (ow - 1) as f64, eh / (oh - 1) as f64),
            angle: turned.angle,
            corner: turned.corners[0],
        });
        self.placed(white, at, family, opts)
    }

    /// The whitened copy folded at each placement in turn ([`WHOLE_GRID`] scales about it,
    /// nearest first, every variant unrotated, the tile origin within [`FRAME_WINDOW`] px
    /// of where it puts it: [`Detector::scale_grid`]). The p-value counts `family`, which
    /// includes these tests. Stops at the first payload; else the largest statistic; `None`
    /// without placements.
    fn placed(
        &self,
        white: &Plane,
        placements: impl Iterator<Item = Placement>,
        family: Family,
        opts: &DetectOptions,
    ) -> Result<Option<Detection>> {
        first_read(placements.map(|at| self.scale_grid(white, at, WHOLE_STEPS, family, opts)))
    }

    /// The frame, whole-image and turned-canvas searches' fold: `white` folded at the
    /// scales about `at`'s in relative steps of [`FRAME_STEP`], up to `steps` each way on
    /// each axis (nearest first, stopping at a payload), every variant unrotated, the tile
    /// origin within [`FRAME_WINDOW`] px of where `at` puts it. The p-value counts `family`.
    fn scale_grid(
        &self,
        white: &Plane,
        at: Placement,
        steps: i32,
        family: Family,
        opts: &DetectOptions,
    ) -> Result<Detection> {
        let mut grid: Vec<(i32, i32)> = (-steps..=steps)
            .flat_map(|i| (-steps..=steps).map(move |j| (i, j)))
            .collect();
        grid.sort_by_key(|&(i, j)| (i.abs().max(j.abs()), i.abs() + j.abs()));
        let candidates = grid.into_iter().map(|(i, j)| {
            at.scaled(
                1.0 + f64::from(i) * FRAME_STEP,
                1.0 + f64::from(j) * FRAME_STEP,
            )
        });
        self.search(
            white,
            candidates,
            family,
            Templates::Unrotated,
            opts,
            Some(at.window()),
        )
    }

    /// Detection at the identity geometry only (the copy is the stamped image itself, not
    /// rescaled, rotated or cropped off the tile grid): no lattice search, so a few
    /// milliseconds per megapixel. The p-value counts this one candidate. For checks made
    /// on files tracemark itself handles: an output read back before it is written, an input
    /// that may already carry this key's mark.
    ///
    /// # Errors
    /// [`Error::TooSmall`] when a side is below [`MIN_DETECT_SIDE`].
    pub fn detect_at_identity(&self, plane: &Plane, opts: &DetectOptions) -> Result<Detection> {
        self.at_identity(plane, Templates::Unrotated, opts)
    }

    /// [`Detector::detect_at_identity`] for one tile variant only: reading back a copy just
    /// stamped in that variant. The p-value counts this one template.
    ///
    /// # Errors
    /// [`Error::TooSmall`] when a side is below [`MIN_DETECT_SIDE`].
    ///
    /// # Panics
    /// When `variant` is not below [`VARIANTS`].
    pub fn detect_variant_at_identity(
        &self,
        plane: &Plane,
        variant: usize,
        opts: &DetectOptions,
    ) -> Result<Detection> {
        assert!(variant < VARIANTS, "variant {variant}");
        self.at_identity(plane, Templates::Only(variant), opts)
    }

    /// Detection at one geometry the caller gives: `m` maps original pixel offsets to the
    /// copy's, row-major (`[a, b, c, d]`: original `(x, y)` goes to `(a x + b y, c x + d y)`
    /// up to a shift, which is searched), with no lattice search. The p-value counts this
    /// one candidate, which is right only when `m` was chosen without looking at the mark:
    /// a leak whose geometry is known (the benchmark, which made it). A geometry picked
    /// as the best of several is a search, and its p-value must count them.
    ///
    /// # Errors
    /// [`Error::TooSmall`] when a side is below [`MIN_DETECT_SIDE`].
    pub fn detect_at_geometry(
        &self,
        plane: &Plane,
        m: [f64; 4],
        opts: &DetectOptions,
    ) -> Result<Detection> {
        check_size(plane)?;
        let c = Candidate {
            m,
            score: f64::INFINITY,
        };
        let family = Family::full(1, Templates::All);
        self.search(&whiten(plane), [c], family, Templates::All, opts, None)
    }

    /// Whitens `plane` and searches the identity geometry with `templates`.
    fn at_identity(
        &self,
        plane: &Plane,
        templates: Templates,
        opts: &DetectOptions,
    ) -> Result<Detection> {
        check_size(plane)?;
        let family = Family::full(1, templates);
        self.search(
            &whiten(plane),
            [Candidate::identity()],
            family,
            templates,
            opts,
            None,
        )
    }

    /// Folds and verifies `candidates` in order, stopping at the first confirmed payload;
    /// the p-value counts `family` (every candidate the search may fold, and any other
    /// search the copy is given). With a `window`, only the shifts within that many px of
    /// the tile origin are looked at.
    fn search(
        &self,
        white: &Plane,
        candidates: impl IntoIterator<Item = Candidate>,
        family: Family,
        templates: Templates,
        opts: &DetectOptions,
        window: Option<Window>,
    ) -> Result<Detection> {
        // Screening keeps the robust statistic for the templates most likely to carry the
        // mark: two of the unrotated variants (identity checks), four of the 64 blind ones.
        // Its statistic looks at every shift, so a search in a window does not screen.
        let screen = match templates {
            _ if window.is_some() => None,
            Templates::Unrotated => Some(SCREENED),
            Templates::All => Some(SCREENED_BLIND),
            Templates::Only(_) => None,
        };
        let list = templates.list();
        let n_tests = family.tests;
        let z_claim = stats::z_threshold_two_sided(opts.max_p, n_tests);

        let mut best: Option<(Candidate, Verified)> = None;
        let mut tested = 0;
        let mut payload = None;
        // The reading of a candidate that was decoded.
        let mut read: Option<Reading> = None;
        for c in candidates {
            tested += 1;
            let fold = fold(white, &c);
            let v = self.verify(fold, &list, screen, window);
            let better = best.as_ref().is_none_or(|(_, b)| v.z > b.z);
            if v.z >= z_claim {
                let (chips, p) = self.read_payload(&v);
                if p.is_some() {
                    payload = p;
                    best = Some((c, v));
                    read = Some(chips);
                    break;
                }
            }
            if better {
                best = Some((c, v));
            }
        }
        let (c, mut v) = best.expect("the identity candidate is always verified");
        // A mark found by a blind search whose payload did not decode: the fold may be
        // smeared by a keystone (a photo of a screen taken at an angle), which no affine
        // candidate follows. Search one around the candidate and read the payload again
        // from its fold. The claim and its p-value stay those of the affine search; only
        // the reading changes (a wrong payload must still pass the CRC).
        let mut keystone = false;
        if payload.is_none()
            && v.z >= z_claim
            && (matches!(templates, Templates::All) || window.is_some())
            && let Some(kv) = self.keystone(white, &c, &v, window)
        {
            let (chips, p) = self.read_payload(&kv);
            payload = p;
            read = Some(chips);
            keystone = true;
        }
        let (chips, soft_bits) = read.unwrap_or_else(|| self.read_chips(&v.fold, &v));
        // No chip phase had any spread in any candidate: the image is flat (or nearly) after
        // whitening. There is no statistic; report no evidence (z 0, p 1), never p = 0.
        let nothing_to_examine = (!v.z.is_finite()).then(|| {
            v.z = 0.0;
            "the image has no texture left after whitening (flat), so it can carry no mark"
        });
        let log10_p = stats::log10_p_two_sided(v.z, n_tests);
        let marked = v.z >= z_claim;
        // The lattice angle is measured with y pointing down (clockwise on screen).
        let rotation = -(c.angle().to_degrees() + 90.0 * v.orientation as f64);
        Ok(Detection {
            z: v.z,
            log10_p,
            marked,
            payload: if marked { payload } else { None },
            transform: Transform {
                scale: c.scale(),
                aspect: c.aspect(),
                rotation_deg: normalise_degrees(rotation),
                shift: [v.shift.0 as u32, v.shift.1 as u32],
                inverted: v.sign < 0.0,
                keystone,
                undone_keystone: None,
                screen: None,
            },
            candidates: family.candidates,
            tests: n_tests,
            candidates_tested: tested,
            soft_bits,
            chips,
            nothing_to_examine,
            registration: registration(&c, &v),
            variant: v.variant,
            counted: Counted::default(),
            alternatives: Vec::new(),
        })
    }

    /// Correlates a fold with the sync templates (variant, orientation); returns the best
    /// peak by per-chip-phase robust z, at any shift or, with a `window`, at the shifts
    /// within that many px of the tile origin (the robust z's median and MAD still over
    /// every shift).
    fn verify(
        &self,
        fold: Vec<f32>,
        templates: &[(usize, usize)],
        screen: Option<usize>,
        window: Option<Window>,
    ) -> Verified {
        let near = |u: usize, centre: usize| {
            window.is_none_or(|w| {
                let d = (u + TILE - centre) % TILE;
                d.min(TILE - d) <= w.radius
            })
        };
        let (cx, cy) = window.map_or((0, 0), |w| w.centre);
        let mut spec: Vec<Complex32> = fold.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        let plain = fold;
        let mut tmp = FftScratch::default();
        self.fft_tile.forward_to_transposed(&mut spec, &mut tmp);
        flatten_fold(&mut spec);
        // The flattened fold in space, which the chips are read from (the inverse is
        // unnormalised).
        let mut flat = spec.clone();
        self.fft_tile.inverse_from_transposed(&mut flat, &mut tmp);
        let fold: Vec<f32> = flat.iter().map(|c| c.re / SHIFTS as f32).collect();
        let mut best = Verified {
            z: f64::NEG_INFINITY,
            variant: 0,
            orientation: 0,
            shift: (0, 0),
            sign: 1.0,
            fold: Vec::new(),
            plain: Vec::new(),
        };
        let mut corr = vec![Complex32::default(); SHIFTS];
        let mut class = vec![0f32; SHIFTS / 4];
        let correlate = |t: (usize, usize), corr: &mut Vec<Complex32>, tmp: &mut FftScratch| {
            multiply(corr, &spec, &self.sync_spectra[t.0 * ORIENTATIONS + t.1]);
            self.fft_tile.inverse_from_transposed(corr, tmp);
        };
        // Screening: rank the templates by a cheap statistic (peak over the mean and sd of
        // its chip phase) and give the robust one to the best few. The result is the
        // largest robust z over a subset, never above the largest over all: the p-value,
        // which counts every template, stays valid (conservative).
        let chosen: Vec<(usize, usize)> =
            if let Some(keep) = screen.filter(|&k| templates.len() > k) {
                let mut ranked = self.screening(&spec, templates, &mut corr, &mut tmp);
                ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
                ranked.iter().take(keep).map(|r| r.1).collect()
            } else {
                templates.to_vec()
            };
        for &(variant, o) in &chosen {
            correlate((variant, o), &mut corr, &mut tmp);
            // Robust z per chip phase of the shift (design.md section 5 step 5).
            for phase in 0..4 {
                let (px, py) = (phase % 2, phase / 2);
                class.clear();
                for y in (py..TILE).step_by(2) {
                    for x in (px..TILE).step_by(2) {
                        class.push(corr[y * TILE + x].re);
                    }
                }
                let (med, mad) = stats::median_and_mad(&mut class);
                if mad <= 0.0 {
                    continue;
                }
                for y in (py..TILE).step_by(2).filter(|&y| near(y, cy)) {
                    for x in (px..TILE).step_by(2).filter(|&x| near(x, cx)) {
                        let v = corr[y * TILE + x].re;
                        let z = f64::from((v - med) / mad);
                        if z.abs() > best.z {
                            best.z = z.abs();
                            best.variant = variant;
                            best.orientation = o;
                            best.shift = (x, y);
                            best.sign = if z < 0.0 { -1.0 } else { 1.0 };
                        }
                    }
                }
            }
        }
        best.fold = fold;
        best.plain = plain;
        best
    }

    /// Searches a keystone on top of the candidate `c` at which `v` found the mark: the
    /// projective coefficients and scale corrections that maximise the sync peak of `v`'s
    /// template (at any shift), by alternating line searches. Returns the peak verified on
    /// the corrected fold (within `window` of the tile origin, when given) when it is
    /// stronger than `v`'s.
    fn keystone(
        &self,
        white: &Plane,
        c: &Candidate,
        v: &Verified,
        window: Option<Window>,
    ) -> Option<Verified> {
        let (w, h) = (white.width, white.height);
        let r = 0.5 * w.max(h) as f64;
        let mut k = Keystone {
            centre: ((w - 1) as f64 / 2.0, (h - 1) as f64 / 2.0),
            inverse: c.inverse(),
            p: (0.0, 0.0),
            s: (0.0, 0.0),
        };
        let template = (v.variant, v.orientation);
        let spectrum = &self.sync_spectra[template.0 * ORIENTATIONS + template.1];
        let mut tmp = FftScratch::default();
        let mut score = |k: &Keystone, half: bool| {
            self.sync_peak(&fold_keystone(white, k, half), spectrum, v.sign, &mut tmp)
        };
        // Scale corrections and keystones that change the scale at the copy's edge by up to
        // KEYSTONE_MAX, in steps that move the edge by 4 px, then 2 px (on half the copy),
        // then 1 px (on the whole copy). (Steps of 8 px first took half the folds
        // and lost one of five keystone reads of the 2-Mpx photo of a screen.)
        let mut best = score(&k, true);
        let wide = (KEYSTONE_MAX * r / 4.0).ceil() as i32;
        for (half, edge_px, range) in [(true, 4.0, wide), (true, 2.0, 2), (false, 1.0, 1)] {
            if !half {
                best = score(&k, false);
            }
            let (s_step, p_step) = (edge_px / r, edge_px / (r * r));
            for scale in [true, false] {
                let k0 = k;
                let at = |i: i32, j: i32| {
                    let (di, dj) = (f64::from(i), f64::from(j));
                    if scale {
                        Keystone {
                            s: (k0.s.0 + di * s_step, k0.s.1 + dj * s_step),
                            ..k0
                        }
                    } else {
                        Keystone {
                            p: (k0.p.0 + di * p_step, k0.p.1 + dj * p_step),
                            ..k0
                        }
                    }
                };
                let ((i, j), s) = lattice::maximise_alternating(best, range, range, |i, j| {
                    score(&at(i, j), half)
                });
                best = s;
                k = at(i, j);
            }
        }
        let kv = self.verify(fold_keystone(white, &k, false), &[template], None, window);
        (kv.z > v.z && kv.sign == v.sign).then_some(kv)
    }

    /// The sync statistic of `fold` with one template's `spectrum`: its largest correlation
    /// of sign `sign` at any shift, over the median and MAD of the whole correlation surface
    /// (the peak may move: the keystone's fixed point need not be where the candidate
    /// registered best).
    fn sync_peak(
        &self,
        fold: &[f32],
        spectrum: &[Complex32],
        sign: f32,
        tmp: &mut FftScratch,
    ) -> f64 {
        let mut corr: Vec<Complex32> = fold.iter().map(|&x| Complex32::new(x, 0.0)).collect();
        self.fft_tile.forward_to_transposed(&mut corr, tmp);
        flatten_fold(&mut corr);
        for (c, s) in corr.iter_mut().zip(spectrum) {
            *c *= s;
        }
        self.fft_tile.inverse_from_transposed(&mut corr, tmp);
        let mut values: Vec<f32> = corr.iter().map(|c| c.re).collect();
        let (med, mad) = stats::median_and_mad(&mut values);
        if mad <= 0.0 {
            return 0.0;
        }
        let peak = corr
            .iter()
            .map(|c| sign * c.re)
            .fold(f32::NEG_INFINITY, f32::max);
        f64::from((peak - sign * med) / mad)
    }

    /// The screening statistic ([`quick_peaks`]) of every template's correlation with the
    /// fold spectrum `spec`, in template order. Two templates share one inverse FFT: the
    /// correlations are real, so the first is the real part of IFFT(F (S1 + i S2)) and the
    /// second its imaginary part.
    fn screening(
        &self,
        spec: &[Complex32],
        templates: &[(usize, usize)],
        corr: &mut [Complex32],
        tmp: &mut FftScratch,
    ) -> Vec<(f64, (usize, usize))> {
        let mut ranked = Vec::with_capacity(templates.len());
        for pair in templates.chunks(2) {
            let spectrum = |t: (usize, usize)| &self.sync_spectra[t.0 * ORIENTATIONS + t.1];
            match *pair {
                [t1, t2] => multiply_pair(corr, spec, spectrum(t1), spectrum(t2)),
                _ => multiply(corr, spec, spectrum(pair[0])),
            }
            self.fft_tile.inverse_from_transposed(corr, tmp);
            let peaks = quick_peaks(corr);
            for (&t, q) in pair.iter().zip(peaks) {
                ranked.push((q, t));
            }
        }
        ranked
    }

    /// Reads the payload at a verified peak: from the flattened fold, and when that does
    /// not decode, from the fold as folded. Two readings, each checked by the CRC-24: a
    /// wrong payload passes with probability at most 2 x 2^-24, and only once the mark is
    /// claimed. Returns the chips that decoded (else the flattened fold's) and the payload.
    fn read_payload(&self, v: &Verified) -> (Reading, Option<u64>) {
        let chips = self.read_chips(&v.fold, v);
        if let Some(p) = coding::decode(&chips.1) {
            return (chips, Some(p));
        }
        let plain = self.read_chips(&v.plain, v);
        match coding::decode(&plain.1) {
            Some(p) => (plain, Some(p)),
            None => (chips, None),
        }
    }

    /// The chips of `fold` at a verified peak as they are (scrambled by the copy's
    /// variant), and the soft coded bits read from them with the peak's variant
    /// unscrambled.
    fn read_chips(&self, fold: &[f32], v: &Verified) -> Reading {
        let raw = self.scrambled_chips(fold, v);
        let unscrambled: Vec<f32> = raw
            .iter()
            .zip(&self.patterns.scramble[v.variant])
            .map(|(c, &k)| c * f32::from(k))
            .collect();
        let soft = self.patterns.soft_bits(&unscrambled);
        (raw, soft)
    }

    /// Matched-filter chip values of the fold aligned to the key's frame at a verified
    /// peak, as they are (scrambled by the copy's variant).
    fn scrambled_chips(&self, fold: &[f32], v: &Verified) -> Vec<f32> {
        let (dx, dy) = v.shift;
        let mut aligned = vec![0f32; SHIFTS];
        for y in 0..TILE {
            for x in 0..TILE {
                aligned[y * TILE + x] = v.sign * fold[((y + dy) % TILE) * TILE + (x + dx) % TILE];
            }
        }
        // `aligned` matches the template rotated `orientation` quarter turns; rotating it the
        // remaining turns brings it back to the key's own frame.
        for _ in 0..(ORIENTATIONS - v.orientation) % ORIENTATIONS {
            aligned = rotate_quarter(&aligned);
        }
        matched_chips(&aligned)
    }
}

/// The map from copy pixels to the original's frame at a verified candidate: the fold maps
/// a copy pixel `x` to `f = M^-1 x` (modulo the tile); the sync peak says that the fold at
/// `f` shows the key's tile at `Q^o (f - d)`, where `Q` is [`rotate_quarter`]'s coordinate
/// map `(x, y) -> (y, T - 1 - x)` and `d` the peak's shift. Tiles start at the original's
/// origin, so that is the original's pixel modulo the tile.
fn registration(c: &Candidate, v: &Verified) -> Registration {
    let mut lin = c.inverse();
    let mut off = [-(v.shift.0 as f64), -(v.shift.1 as f64)];
    let last = (TILE - 1) as f64;
    for _ in 0..v.orientation {
        // Q(p) = (p.y, T - 1 - p.x), applied to the affine map (lin, off).
        let [a, b, c2, d] = lin;
        lin = [c2, d, -a, -b];
        off = [off[1], last - off[0]];
    }
    Registration {
        linear: lin,
        offset: off,
    }
}

/// The largest keystone searched: the scale at the copy's edge changes by up to this
/// fraction (a camera tilted by about 14 degrees).
const KEYSTONE_MAX: f64 = 0.12;

/// Templates given the robust statistic after screening (see [`Detector::verify`]): of
/// the unrotated variants (identity checks) and of every variant and orientation (blind).
const SCREENED: usize = 2;
const SCREENED_BLIND: usize = 4;

avx2_kernel! {
    /// `out = a * b`, element by element.
    fn multiply(out: &mut [Complex32], a: &[Complex32], b: &[Complex32]) -> () = multiply_portable
}

#[inline(always)]
fn multiply_portable(out: &mut [Complex32], a: &[Complex32], b: &[Complex32]) {
    for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
        *o = Complex32::new(a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re);
    }
}

avx2_kernel! {
    /// `out = a * b1 + i a * b2`, element by element: when `a`, `b1` and `b2` are spectra
    /// of real signals, the inverse transform of `out` holds the two real correlations, one
    /// in its real part and one in its imaginary part.
    fn multiply_pair(out: &mut [Complex32], a: &[Complex32], b1: &[Complex32], b2: &[Complex32]) -> () = multiply_pair_portable
}

#[inline(always)]
fn multiply_pair_portable(
    out: &mut [Complex32],
    a: &[Complex32],
    b1: &[Complex32],
    b2: &[Complex32],
) {
    for (((o, a), b1), b2) in out.iter_mut().zip(a).zip(b1).zip(b2) {
        let (p1re, p1im) = (a.re * b1.re - a.im * b1.im, a.re * b1.im + a.im * b1.re);
        let (p2re, p2im) = (a.re * b2.re - a.im * b2.im, a.re * b2.im + a.im * b2.re);
        *o = Complex32::new(p1re - p2im, p1im + p2re);
    }
}

avx2_kernel! {
    /// The cheap screening statistic of the two correlation surfaces in `corr`, its real and
    /// its imaginary part: for each, the largest |value - mean| / sd over its four chip
    /// phases. In f32, in 8 lanes: a ranking statistic, not a test.
    fn quick_peaks(corr: &[Complex32]) -> [f64; 2] = quick_peaks_portable
}

#[inline(always)]
fn quick_peaks_portable(corr: &[Complex32]) -> [f64; 2] {
    // Two pixels of a row, as floats, are [re, im] of x phase 0 then of x phase 1: lane
    // `l` of an 8-float block holds part `l % 2` at x phase `(l / 2) % 2`. One set of
    // lanes per y phase; per lane the sum, the sum of squares, the minimum and the maximum.
    const L: usize = 8;
    let mut sum = [[0f32; L]; 2];
    let mut sq = [[0f32; L]; 2];
    let mut lo = [[f32::MAX; L]; 2];
    let mut hi = [[f32::MIN; L]; 2];
    for (y, row) in corr.chunks_exact(TILE).enumerate() {
        let p = y % 2;
        let (sum, sq, lo, hi) = (&mut sum[p], &mut sq[p], &mut lo[p], &mut hi[p]);
        for block in row.chunks_exact(L / 2) {
            let f: [f32; L] = std::array::from_fn(|l| {
                let c = block[l / 2];
                if l % 2 == 0 { c.re } else { c.im }
            });
            for l in 0..L {
                let v = f[l];
                sum[l] += v;
                sq[l] += v * v;
                lo[l] = if v < lo[l] { v } else { lo[l] };
                hi[l] = if v > hi[l] { v } else { hi[l] };
            }
        }
    }
    let n = (SHIFTS / 4) as f64;
    let mut best = [0f64; 2];
    for p in 0..2 {
        for l in 0..4 {
            // Lanes l and l + 4 hold the same part and phase.
            let s = f64::from(sum[p][l]) + f64::from(sum[p][l + 4]);
            let q = f64::from(sq[p][l]) + f64::from(sq[p][l + 4]);
            let (min, max) = (lo[p][l].min(lo[p][l + 4]), hi[p][l].max(hi[p][l + 4]));
            let mean = s / n;
            let sd = (q / n - mean * mean).max(0.0).sqrt();
            if sd > 0.0 {
                let z = (f64::from(max) - mean).max(mean - f64::from(min)) / sd;
                best[l % 2] = best[l % 2].max(z);
            }
        }
    }
    best
}

/// Half-width, in bins, of the window over which [`flatten_fold`] averages a fold's power
/// spectrum (7 x 7 bins, wrapping around the spectrum's edges).
const FOLD_FLATTEN_HALF: usize = 3;

/// Weights each bin of a fold's spectrum (`TILE x TILE`, either layout: the window is
/// square) by the mean power of the bins around it to the power -1/4, and zeroes DC.
///
/// A partial whitening of what is left of the image in the fold: where the copy's own
/// content (a texture's spectral peaks, what blur or downscaling left at low frequencies)
/// outweighs the mark, its bins count less. The weights depend on the fold alone, never
/// on the key, so an unmarked copy's correlation with a template stays centred and the
/// robust z (median and MAD per chip phase) calibrates it as before. The exponent is
/// measured (docs/scheme.md, detection step 5): full whitening (-1) lost reads after
/// JPEG and halving, where the weak high-frequency bins carry little mark and much noise.
fn flatten_fold(spec: &mut [Complex32]) {
    let (n, b) = (TILE, FOLD_FLATTEN_HALF);
    debug_assert_eq!(spec.len(), n * n);
    // The power with a border of `b` bins on every side, wrapped (the spectrum is periodic),
    // so that the box mean's windows are never cut (as in the lattice's `flatten_half_power`).
    let p = n + 2 * b;
    let mut power = vec![0f32; p * p];
    for (y, row) in power.chunks_exact_mut(p).enumerate() {
        let from = &spec[((y + n - b) % n) * n..][..n];
        for (x, v) in row.iter_mut().enumerate() {
            *v = from[(x + n - b) % n].norm_sqr();
        }
    }
    let mut local = vec![0f32; p * p];
    box_mean(&power, p, p, b, &mut local, &mut Vec::new());
    for (row, mean) in spec.chunks_exact_mut(n).zip(local.chunks_exact(p).skip(b)) {
        for (bin, &m) in row.iter_mut().zip(&mean[b..b + n]) {
            *bin = if m > 0.0 {
                *bin / m.sqrt().sqrt()
            } else {
                Complex32::default()
            };
        }
    }
    spec[0] = Complex32::default();
}

/// The sync z a search over `candidates` geometries (each with every template and shift)
/// needs to claim a mark at false-alarm probability `max_p`: the count [`Detector::search`]
/// uses with every template.
fn claim_z(candidates: usize, max_p: f64) -> f64 {
    stats::z_threshold_two_sided(max_p, Family::full(candidates, Templates::All).tests)
}

/// The distinct original sizes among `sizes` that the frame search tries on `frame`: those
/// whose aspect is within [`FRAME_ASPECT`] of the rectified frame's and whose scale onto it
/// is within [`FRAME_SCALES`], nearest the frame's aspect first (then in the order given),
/// at most [`FRAME_MAX_SIZES`] of them and [`FRAME_MAX_PIXELS`] in all (a size that would
/// exceed it is left out). An original shown turned by a quarter is not among them.
fn frame_sizes(frame: &Screen, sizes: &[[u32; 2]]) -> Vec<(usize, usize)> {
    let (w, h) = frame.rectified_size();
    let mut pixels = 0;
    sizes_onto((w, h), sizes, |sx, sy| {
        (sx / sy).ln().abs() <= FRAME_ASPECT.ln_1p() && within_scales(sx, sy)
    })
    .into_iter()
    .filter(|&(ow, oh)| {
        let more = (ow * oh).min(w * h);
        let fits = pixels + more <= FRAME_MAX_PIXELS;
        pixels += if fits { more } else { 0 };
        fits
    })
    .take(FRAME_MAX_SIZES)
    .collect()
}

/// The distinct original sizes among `sizes` that the whole-image search tries on `plane`:
/// those whose proportions the copy keeps to within a pixel a side (a whole image rescaled,
/// each side rounded to whole pixels either way) at a scale within [`FRAME_SCALES`] and
/// not within the search's own steps of 1 on both axes (a copy at its original size, or
/// cropped by a few pixels, is the blind search's identity candidate), nearest in
/// proportions first (then in the order given), at most [`FRAME_MAX_SIZES`] of them and
/// [`FRAME_MAX_PIXELS`] folded pixels per scale step in all.
fn whole_sizes(plane: &Plane, sizes: &[[u32; 2]]) -> Vec<(usize, usize)> {
    let (w, h) = (plane.width, plane.height);
    let near_one = f64::from(WHOLE_STEPS) * FRAME_STEP;
    let mut out = sizes_onto((w, h), sizes, |sx, sy| {
        let identity = (sx - 1.0).abs() <= near_one && (sy - 1.0).abs() <= near_one;
        (sx / sy).ln().abs() <= 1.0 / w as f64 + 1.0 / h as f64
            && within_scales(sx, sy)
            && !identity
    });
    out.truncate(placed_sizes(plane));
    out
}

/// The most sizes a search that folds the whole `plane` at each ([`Detector::placed`])
/// tries: [`FRAME_MAX_SIZES`], and [`FRAME_MAX_PIXELS`] folded pixels per scale step in all.
fn placed_sizes(plane: &Plane) -> usize {
    (FRAME_MAX_PIXELS / (plane.width * plane.height).max(1)).clamp(1, FRAME_MAX_SIZES)
}

/// The distinct original sizes among `sizes` that the turned-canvas search tries on the
/// image `turned` found in `plane`: those whose proportions the turned image has, to
/// [`TURNED_ASPECT`] and two pixels a side (its edges are found to about a pixel), at a
/// scale within [`FRAME_SCALES`], nearest in proportions first (then in the order given),
/// at most [`FRAME_MAX_SIZES`] of them and [`FRAME_MAX_PIXELS`] folded pixels per scale
/// step in all.
fn turned_sizes(plane: &Plane, turned: &Turned, sizes: &[[u32; 2]]) -> Vec<(usize, usize)> {
    let (ew, eh) = turned.edge_lengths();
    // The edges run between corner pixels' centres: a size's are one pixel short of it.
    let target = (ew.round() as usize + 1, eh.round() as usize + 1);
    let tolerance = TURNED_ASPECT + 2.0 / ew.max(1.0) + 2.0 / eh.max(1.0);
    let mut out = sizes_onto(target, sizes, |sx, sy| {
        (sx / sy).ln().abs() <= tolerance && within_scales(sx, sy)
    });
    out.retain(|&(w, h)| w > 1 && h > 1);
    out.truncate(placed_sizes(plane));
    out
}

/// The distinct original sizes among `sizes` whose scales onto a `(w, h)` target (each
/// axis's, target over original) pass `fits`, nearest the target's proportions first (then
/// in the order given).
fn sizes_onto(
    (w, h): (usize, usize),
    sizes: &[[u32; 2]],
    fits: impl Fn(f64, f64) -> bool,
) -> Vec<(usize, usize)> {
    let mut out: Vec<(f64, (usize, usize))> = Vec::new();
    for &[ow, oh] in sizes {
        let (ow, oh) = (ow as usize, oh as usize);
        if ow == 0 || oh == 0 || out.iter().any(|o| o.1 == (ow, oh)) {
            continue;
        }
        let (sx, sy) = (w as f64 / ow as f64, h as f64 / oh as f64);
        if fits(sx, sy) {
            out.push(((sx / sy).ln().abs(), (ow, oh)));
        }
    }
    // Stable: equal proportions keep the order given.
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out.into_iter().map(|o| o.1).collect()
}

/// Whether the mean scale of `(sx, sy)` is within [`FRAME_SCALES`].
fn within_scales(sx: f64, sy: f64) -> bool {
    (FRAME_SCALES.0..=FRAME_SCALES.1).contains(&(sx * sy).sqrt())
}

/// The first of `runs` to read a payload (the later ones are not run), else the one with
/// the largest statistic; `None` when there is none.
fn first_read(runs: impl Iterator<Item = Result<Detection>>) -> Result<Option<Detection>> {
    let mut best: Option<Detection> = None;
    for d in runs {
        let d = d?;
        let read = d.payload.is_some();
        if read || best.as_ref().is_none_or(|b| d.z > b.z) {
            best = Some(d);
        }
        if read {
            break;
        }
    }
    Ok(best)
}

fn check_size(plane: &Plane) -> Result<()> {
    let (w, h) = (plane.width, plane.height);
    if w < MIN_DETECT_SIDE || h < MIN_DETECT_SIDE {
        return Err(Error::TooSmall {
            path: None,
            width: w,
            height: h,
            min: MIN_DETECT_SIDE,
            what: "examine",
        });
    }
    Ok(())
}

/// Rotates a TILE x TILE array a quarter turn: out(x, y) = in(y, N-1-x).
fn rotate_quarter(t: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; SHIFTS];
    for y in 0..TILE {
        for x in 0..TILE {
            out[y * TILE + x] = t[(TILE - 1 - x) * TILE + y];
        }
    }
    out
}

/// Matched filter: blur with the shaping kernel, then sum each chip's 2 x 2 pixels.
fn matched_chips(aligned: &[f32]) -> Vec<f32> {
    let mut t = aligned.to_vec();
    crate::mark::dsp::cyclic_blur(&mut t, TILE, &shaping_kernel());
    let mut chips = vec![0f32; N_CHIPS];
    for y in 0..TILE {
        for x in 0..TILE {
            chips[(y / CHIP) * CHIPS_PER_SIDE + x / CHIP] += t[y * TILE + x];
        }
    }
    chips
}

/// Maps degrees into (-180, 180]; never returns -0.
fn normalise_degrees(d: f64) -> f64 {
    let mut d = d.rem_euclid(360.0);
    if d > 180.0 {
        d -= 360.0;
    }
    d + 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mark::keystone;
    use crate::testsignal::{self, photo_like};

    fn marked(plane: &Plane, key: &SecretKey, payload: u64) -> Plane {
        testsignal::marked(plane, &KeyPatterns::new(key), payload)
    }

    #[test]
    fn finds_payload_in_unattacked_copy_and_abstains_without_mark() {
        let key = SecretKey::from_bytes([9; 32]);
        let det = Detector::new(&key);
        let plane = photo_like(400, 300, 1);
        let m = marked(&plane, &key, 0x1234_5678_9abc_def0);
        let d = det.detect(&m, &DetectOptions::default()).unwrap();
        assert!(d.marked, "z {}", d.z);
        assert_eq!(d.payload, Some(0x1234_5678_9abc_def0));
        let d0 = det.detect(&plane, &DetectOptions::default()).unwrap();
        assert!(!d0.marked && d0.payload.is_none(), "z {}", d0.z);
        let other = Detector::new(&SecretKey::from_bytes([10; 32]));
        let d1 = other.detect(&m, &DetectOptions::default()).unwrap();
        assert!(!d1.marked, "wrong key z {}", d1.z);
    }

    /// Issue 10, finding 6: a flat image gave z = -inf (null in JSON) and p = 0, which a
    /// consumer testing `p_value <= threshold` reads as "marked".
    #[test]
    fn flat_image_has_finite_statistics_and_no_evidence() {
        let key = SecretKey::from_bytes([9; 32]);
        for level in [0.0, 128.0, 255.0] {
            let flat = Plane::from_vec(256, 256, vec![level; 256 * 256]);
            let d = Detector::new(&key)
                .detect(&flat, &DetectOptions::default())
                .unwrap();
            assert!(d.z.is_finite() && d.log10_p.is_finite(), "{d:?}");
            assert_eq!(d.p_value(), 1.0);
            assert!(!d.marked && d.payload.is_none());
            assert!(d.nothing_to_examine.is_some());
        }
    }

    #[test]
    fn inverted_copy_is_found_with_its_sign() {
        let key = SecretKey::from_bytes([11; 32]);
        let det = Detector::new(&key);
        let m = marked(&photo_like(300, 300, 2), &key, 77);
        let inv = Plane::from_vec(300, 300, m.data.iter().map(|v| 255.0 - v).collect());
        let d = det.detect(&inv, &DetectOptions::default()).unwrap();
        assert_eq!(d.payload, Some(77));
        assert!(d.transform.inverted);
    }

    /// A copy overlaid with a strong periodic texture (a woven or halftone pattern: a few
    /// gratings of 30 levels each, far above the mark's 2 levels). The whitened copy is
    /// then mostly gratings; the fold's spectral flattening weighs their bins down and the
    /// payload is read blindly (z 16.5). With the fold used as it is, z was 3.5: no mark
    /// found.
    #[test]
    fn payload_is_read_under_a_strong_periodic_texture() {
        let key = SecretKey::from_bytes([17; 32]);
        let det = Detector::new(&key);
        let n = 256;
        let m = marked(&photo_like(n, n, 6), &key, 0xfeed);
        let tau = std::f32::consts::TAU;
        let gratings = [(19.0, 7.0), (33.0, -21.0), (9.0, 40.0), (45.0, 12.0)];
        let copy = Plane::from_vec(
            n,
            n,
            m.data
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let (x, y) = ((i % n) as f32, (i / n) as f32);
                    let g: f32 = gratings
                        .iter()
                        .map(|&(kx, ky)| 30.0 * (tau * (kx * x + ky * y) / TILE as f32).cos())
                        .sum();
                    (v + g).round()
                })
                .collect(),
        );
        let d = det.detect(&copy, &DetectOptions::default()).unwrap();
        assert!(d.marked, "z {}", d.z);
        assert_eq!(d.payload, Some(0xfeed), "z {}", d.z);
    }

    /// The flattening's weights follow the local power: a white spectrum keeps its shape
    /// (every bin weighted alike), and a line of power P on it keeps about 7 sqrt(P) of
    /// its power over the white bins' (the window's mean power P / 49 to the -1/2).
    #[test]
    fn flattening_keeps_a_white_spectrum_and_weighs_lines_down() {
        let n = TILE;
        let mut x = 5u64;
        let mut white: Vec<Complex32> = (0..n * n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let phase = (x >> 40) as f32 / (1u64 << 24) as f32 * std::f32::consts::TAU;
                Complex32::from_polar(1.0, phase)
            })
            .collect();
        let lines = [(20, 30), (70, 5), (100, 101)];
        let mut with_lines = white.clone();
        for &(a, b) in &lines {
            with_lines[a * n + b] *= 100.0;
        }
        flatten_fold(&mut white);
        for (k, c) in white.iter().enumerate().skip(1) {
            assert!((c.norm() - 1.0).abs() < 1e-3, "bin {k}: {}", c.norm());
        }
        assert_eq!(white[0], Complex32::default(), "DC is zeroed");
        flatten_fold(&mut with_lines);
        // A white bin far from the lines, and each line against it: 1e4 / sqrt(1e4 / 49 + 48 / 49) = 697.
        let far = with_lines[50 * n + 60].norm_sqr();
        for &(a, b) in &lines {
            let ratio = with_lines[a * n + b].norm_sqr() / far;
            assert!((ratio - 697.0).abs() < 5.0, "line ({a}, {b}): {ratio}");
        }
    }

    /// A keystone (a screen photographed at an angle: the top edge narrower than the
    /// bottom, rows squeezed towards it) smears the affine fold; the payload is read from a
    /// fold corrected for it. (Without the keystone search this copy is marked at z 8.9
    /// and its payload does not decode.)
    #[test]
    fn keystone_copy_is_read() {
        let key = SecretKey::from_bytes([13; 32]);
        let det = Detector::new(&key);
        let n = 1024;
        let m = marked(&photo_like(n, n, 5), &key, 4242);
        // Copy pixel x samples the original at centre + q / (1 + p . q), q = x - centre.
        let c = (n - 1) as f64 / 2.0;
        // The scale changes by 9 % from the centre to the top and bottom edges.
        let p = (0.0, 0.09 / c);
        let mut out = vec![0f32; n * n];
        for y in 0..n {
            for x in 0..n {
                let (qx, qy) = (x as f64 - c, y as f64 - c);
                let d = 1.0 + p.0 * qx + p.1 * qy;
                let (u, v) = (c + qx / d, c + qy / d);
                let (x0, y0) = (u.floor(), v.floor());
                if x0 < 0.0 || y0 < 0.0 || x0 >= (n - 1) as f64 || y0 >= (n - 1) as f64 {
                    continue;
                }
                let (tx, ty) = ((u - x0) as f32, (v - y0) as f32);
                let at = |xx: usize, yy: usize| m.data[yy * n + xx];
                let (i, j) = (x0 as usize, y0 as usize);
                let top = at(i, j) * (1.0 - tx) + at(i + 1, j) * tx;
                let bottom = at(i, j + 1) * (1.0 - tx) + at(i + 1, j + 1) * tx;
                out[y * n + x] = (top * (1.0 - ty) + bottom * ty).round();
            }
        }
        let d = det
            .detect(&Plane::from_vec(n, n, out), &DetectOptions::default())
            .unwrap();
        assert!(d.marked, "z {}", d.z);
        assert_eq!(d.payload, Some(4242), "z {}", d.z);
    }

    /// A 512-px photo of a screen whose far edge is 5 % shorter at each end (between two
    /// of the keystones tried) and turned by half a degree is read by the keystone search,
    /// at its own claim threshold; an unmarked copy claims nothing, and the p-value counts
    /// every keystone's search.
    #[test]
    fn the_keystone_search_reads_a_small_photo_of_a_screen() {
        let key = SecretKey::from_bytes([17; 32]);
        let det = Detector::new(&key);
        let n = 512;
        let f = n as f64;
        let (s, c) = 0.5f64.to_radians().sin_cos();
        // Where the photo shows the original's corners: 4 % margins, the top edge 5 %
        // shorter at each end, then turned about the centre.
        let quad = [(0.04, 0.04), (0.96, 0.04), (0.96, 0.96), (0.04, 0.96)]
            .map(|(x, y): (f64, f64)| {
                if y < 0.5 {
                    (0.5 + (x - 0.5) * 0.9, y)
                } else {
                    (x, y)
                }
            })
            .map(|(x, y)| {
                let (x, y) = (x - 0.5, y - 0.5);
                ((c * x - s * y + 0.5) * f, (s * x + c * y + 0.5) * f)
            });
        let rect = [(0.0, 0.0), (f, 0.0), (f, f), (0.0, f)];
        let to_original = keystone::homography(&quad, &rect);
        // The photo: each pixel shows the original where the map puts it; the room around
        // the screen is black.
        let photo = |plane: &Plane| {
            let mut p = keystone::warp(plane, &to_original, n, n);
            p.data.iter_mut().for_each(|v| *v = v.round());
            p
        };
        let opts = DetectOptions::default();
        let original = photo_like(n, n, 9);
        let d = det
            .detect_keystones(&photo(&marked(&original, &key, 777)), &opts)
            .unwrap();
        assert_eq!(d.payload, Some(777), "z {}", d.z);
        assert!(
            d.marked && d.z >= Detector::keystone_claim_z(opts.max_p),
            "z {}",
            d.z
        );
        assert_eq!(d.candidates, KEYSTONE_FAMILY);
        let u = det.detect_keystones(&photo(&original), &opts).unwrap();
        assert!(!u.marked && u.payload.is_none(), "unmarked: z {}", u.z);
        assert_eq!(u.candidates, KEYSTONE_FAMILY);
    }

    /// A copy halved by 2 x 2 means is read at its true geometry with no lattice search;
    /// a wrong geometry, and an unmarked copy at the true one, claim nothing; the p-value
    /// counts the one candidate.
    #[test]
    fn the_frame_search_reads_a_photo_of_a_small_screen_image_given_its_size() {
        let key = SecretKey::from_bytes([23; 32]);
        let det = Detector::new(&key);
        // A 160-px original (a tile and a quarter: no lattice for the blind search to see),
        // photographed on a screen into a 200-px photo.
        let n = 160;
        let photo = |plane: &Plane| testsignal::screen_photo(plane, 200);
        let original = photo_like(n, n, 4);
        let copy = photo(&marked(&original, &key, 4242));
        let frame = screen::find(&copy).expect("the frame is seen");
        // 640 x 480 is not this frame's aspect, and 2048 x 2048 would be shown below a
        // fifth of its size: the two others are searched (the wrong one first), and counted.
        let opts = DetectOptions {
            frame_sizes: vec![[640, 480], [200, 200], [n as u32, n as u32], [2048, 2048]],
            ..DetectOptions::default()
        };
        let d = det.detect(&copy, &opts).unwrap();
        assert_eq!(d.payload, Some(4242), "z {}", d.z);
        // The screen shows the thumbnail larger than it is: the frame is rectified to the
        // thumbnail's own size, where the scale is 1.
        let at = Screen {
            size: Some([n, n]),
            ..frame
        };
        assert_eq!(d.transform.screen, Some(at));
        assert!((d.transform.scale - 1.0).abs() < 0.01, "{:?}", d.transform);
        // The photo is square like the thumbnail, so the whole-image search is counted too
        // (at 1.25), although the frame search's payload stopped it.
        let family = Family::full(SCREEN_FAMILY, Templates::All)
            .plus(Family::frame(2))
            .plus(Family::whole(1));
        assert_eq!((d.candidates, d.tests), (family.candidates, family.tests));
        let counted = Counted {
            frame: true,
            frame_sizes: 2,
            whole_sizes: 1,
            turned_sizes: 0,
        };
        assert_eq!(d.counted, counted);
        assert!(d.z >= stats::z_threshold_two_sided(opts.max_p, family.tests));
        assert!((d.log10_p - stats::log10_p_two_sided(d.z, family.tests)).abs() < 1e-9);
        // Unmarked, the same search claims nothing.
        let u = det.detect(&photo(&original), &opts).unwrap();
        assert!(!u.marked && u.payload.is_none(), "unmarked: z {}", u.z);
        assert_eq!(u.tests, family.tests);
    }

    /// Copies that are the whole image rescaled, whose payload the blind search does not
    /// read (when written: z 5.5, no mark found; z 10.3, the payload not decoded): a 160-px
    /// thumbnail shown half as large again (bilinear) and a 384-px gravel-like texture
    /// downscaled to a third (3 x 3 means). Given the originals' sizes, the whole-image
    /// search reads each at the scale the sizes give, its tests counted in the p-value; a
    /// size of other proportions, or the copy's own, is not searched; unmarked copies
    /// claim nothing.
    #[test]
    fn the_whole_image_search_reads_a_rescaled_copy_given_the_original_size() {
        let key = SecretKey::from_bytes([29; 32]);
        let det = Detector::new(&key);
        // Bilinear, to 1.5 times the size.
        fn enlarge(p: &Plane) -> Plane {
            let (w, h) = (p.width as f64, p.height as f64);
            let to = |s: f64| [(0.0, 0.0), (w * s, 0.0), (w * s, h * s), (0.0, h * s)];
            let map = keystone::homography(&to(1.5), &to(1.0));
            let mut out = keystone::warp(p, &map, p.width * 3 / 2, p.height * 3 / 2);
            out.data.iter_mut().for_each(|v| *v = v.round());
            out
        }
        // 3 x 3 means.
        fn third(p: &Plane) -> Plane {
            let (w, h) = (p.width / 3, p.height / 3);
            let mut v = Vec::with_capacity(w * h);
            for y in 0..h {
                for x in 0..w {
                    let mut sum = 0.0;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            sum += p.data[(3 * y + dy) * p.width + 3 * x + dx];
                        }
                    }
                    v.push((sum / 9.0).round());
                }
            }
            Plane::from_vec(w, h, v)
        }
        type Rescale = fn(&Plane) -> Plane;
        let cases: [(Plane, Rescale, f64); 2] = [
            (photo_like(160, 160, 160), enlarge, 1.5),
            (gravel(384), third, 1.0 / 3.0),
        ];
        for (original, rescale, scale) in cases {
            let n = original.width;
            let copy = rescale(&marked(&original, &key, 5150));
            assert!(screen::find(&copy).is_none());
            let opts = DetectOptions {
                frame_sizes: vec![[640, 480], [copy.width as u32; 2], [n as u32; 2]],
                ..DetectOptions::default()
            };
            let d = det.detect(&copy, &opts).unwrap();
            assert_eq!(d.payload, Some(5150), "{n} px: z {}", d.z);
            assert!(
                (d.transform.scale / scale - 1.0).abs() < 0.01,
                "{:?}",
                d.transform
            );
            let family = Family::full(BLIND_FAMILY, Templates::All).plus(Family::whole(1));
            assert_eq!((d.candidates, d.tests), (family.candidates, family.tests));
            let counted = Counted {
                frame: false,
                frame_sizes: 0,
                whole_sizes: 1,
                turned_sizes: 0,
            };
            assert_eq!(d.counted, counted);
            assert!((d.log10_p - stats::log10_p_two_sided(d.z, family.tests)).abs() < 1e-9);
            let u = det.detect(&rescale(&original), &opts).unwrap();
            assert!(!u.marked && u.payload.is_none(), "unmarked: z {}", u.z);
            assert_eq!(u.tests, family.tests);
        }
    }

    /// A gravel-like texture: the scene plus strong seeded pixel noise.
    fn gravel(n: usize) -> Plane {
        let mut p = photo_like(n, n, 5);
        let mut noise = crate::prng::stream(&SecretKey::from_bytes([6; 32]), &[b"gravel"]);
        p.data
            .iter_mut()
            .for_each(|v| *v += crate::prng::below(&mut noise, 49) as f32 - 24.0);
        p
    }

    #[test]
    fn the_turned_canvas_search_reads_a_straightened_copy_given_the_original_size() {
        let key = SecretKey::from_bytes([31; 32]);
        let det = Detector::new(&key);
        let original = gravel(384);
        let stamped = marked(&original, &key, 0x7e57);
        // 8-bit samples, as a saved copy has them.
        let turn = |p: &Plane, degrees: f64, grow: f64| {
            let mut t = testsignal::turned(p, degrees, grow, 0.0);
            t.data
                .iter_mut()
                .for_each(|v| *v = v.round().clamp(0.0, 255.0));
            t
        };
        // On the same canvas, and turned the other way on a canvas a tenth larger.
        for (degrees, grow) in [(1.0, 1.0), (-2.0, 1.1)] {
            let copy = turn(&stamped, degrees, grow);
            let t = canvas::find(&copy).unwrap_or_else(|| panic!("{degrees} deg: no canvas"));
            let opts = DetectOptions {
                frame_sizes: vec![[640, 480], [384, 384]],
                ..DetectOptions::default()
            };
            // 640 x 480 has other proportions.
            assert_eq!(turned_sizes(&copy, &t, &opts.frame_sizes), vec![(384, 384)]);
            // The search itself (the blind search may read this copy too).
            let family = Family::whole(1);
            let d = det
                .turned_search(&whiten(&copy), &t, &[(384, 384)], family, &opts)
                .unwrap()
                .expect("a size to search");
            assert_eq!(d.payload, Some(0x7e57), "{degrees} deg: z {}", d.z);
            assert!(
                (d.transform.rotation_deg - degrees).abs() < 0.05,
                "{degrees} deg: {:?}",
                d.transform
            );
            // Within the detection: the enlarged canvas is also the whole image rescaled to
            // the whole-image search.
            let d = det.detect(&copy, &opts).unwrap();
            assert_eq!(d.payload, Some(0x7e57), "{degrees} deg: z {}", d.z);
            let whole = usize::from(grow != 1.0);
            let counted = Counted {
                frame: false,
                frame_sizes: 0,
                whole_sizes: whole,
                turned_sizes: 1,
            };
            assert_eq!(d.counted, counted);
            let family = Family::full(BLIND_FAMILY, Templates::All)
                .plus(Family::whole(whole))
                .plus(Family::whole(1));
            assert_eq!((d.candidates, d.tests), (family.candidates, family.tests));
            assert!((d.log10_p - stats::log10_p_two_sided(d.z, family.tests)).abs() < 1e-9);
            let u = det.detect(&turn(&original, degrees, grow), &opts).unwrap();
            assert!(!u.marked && u.payload.is_none(), "unmarked: z {}", u.z);
            assert_eq!(u.tests, family.tests);
        }
    }

    #[test]
    fn a_given_geometry_is_folded_alone() {
        let key = SecretKey::from_bytes([21; 32]);
        let det = Detector::new(&key);
        let halve = |p: &Plane| {
            let (w, h) = (p.width / 2, p.height / 2);
            let mut v = Vec::with_capacity(w * h);
            for y in 0..h {
                for x in 0..w {
                    let at = |dx: usize, dy: usize| p.data[(2 * y + dy) * p.width + 2 * x + dx];
                    v.push((at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1)) / 4.0);
                }
            }
            Plane::from_vec(w, h, v)
        };
        let original = photo_like(512, 512, 8);
        let copy = halve(&marked(&original, &key, 0xfeed));
        let opts = DetectOptions::default();
        let d = det
            .detect_at_geometry(&copy, [0.5, 0.0, 0.0, 0.5], &opts)
            .unwrap();
        assert_eq!(d.payload, Some(0xfeed), "z {}", d.z);
        assert_eq!(d.candidates, 1);
        assert!((d.transform.scale - 0.5).abs() < 1e-9);
        let wrong = det
            .detect_at_geometry(&copy, [0.8, 0.0, 0.0, 0.8], &opts)
            .unwrap();
        assert!(!wrong.marked && wrong.payload.is_none(), "z {}", wrong.z);
        let unmarked = det
            .detect_at_geometry(&halve(&original), [0.5, 0.0, 0.0, 0.5], &opts)
            .unwrap();
        assert!(!unmarked.marked, "z {}", unmarked.z);
    }

    /// The registration maps a copy back to the original's frame: after quarter turns and
    /// a crop off the tile grid, the content check finds the released image and where the
    /// crop came from.
    #[test]
    fn registration_maps_turned_and_cropped_copies_back() {
        use crate::mark::content::{compare, describe};
        let key = SecretKey::from_bytes([12; 32]);
        let det = Detector::new(&key);
        let (w, h) = (420, 330);
        let m = marked(&photo_like(w, h, 3), &key, 99);
        let d = describe(&m);
        let (x0, y0, cw, ch) = (141, 77, 250, 220);
        let mut crop = Vec::new();
        for y in y0..y0 + ch {
            crop.extend_from_slice(&m.data[y * w + x0..y * w + x0 + cw]);
        }
        let mut copy = Plane::from_vec(cw, ch, crop);
        for turn in 0..4 {
            let det_copy = det.detect(&copy, &DetectOptions::default()).unwrap();
            assert_eq!(det_copy.payload, Some(99), "turn {turn}");
            let c = compare(&copy, &det_copy.registration, &d).unwrap();
            assert!(c.matches(1e-6, 1), "turn {turn}: {c:?}");
            if turn == 0 {
                // The copy's (0, 0) is the original's (141, 77): cell (17, 9) of 8 px.
                assert_eq!(c.origin, [136, 72]);
            }
            // Whatever the turn, the copy's corners land on the crop's corners in the
            // original (in some order: the copy is turned).
            let corners = det_copy
                .registration
                .corners(copy.width, copy.height, c.tile_shift);
            let crop_corners = [
                [x0 as f64, y0 as f64],
                [(x0 + cw) as f64, y0 as f64],
                [(x0 + cw) as f64, (y0 + ch) as f64],
                [x0 as f64, (y0 + ch) as f64],
            ];
            for p in corners {
                let near = crop_corners
                    .iter()
                    .map(|q| (p[0] - q[0]).hypot(p[1] - q[1]))
                    .fold(f64::INFINITY, f64::min);
                assert!(
                    near < 2.0,
                    "turn {turn}: corner {p:?} is {near} px off the crop's"
                );
            }
            // Rotate the copy a quarter turn for the next round: out(x, y) = in(y, W-1-x).
            let (pw, ph) = (copy.width, copy.height);
            let mut r = vec![0f32; pw * ph];
            for y in 0..pw {
                for x in 0..ph {
                    r[y * ph + x] = copy.data[x * pw + (pw - 1 - y)];
                }
            }
            copy = Plane::from_vec(ph, pw, r);
        }
    }

    #[test]
    fn paired_screening_equals_one_template_at_a_time() {
        let det = Detector::new(&SecretKey::from_bytes([5; 32]));
        let fold: Vec<f32> = photo_like(TILE, TILE, 9)
            .data
            .iter()
            .map(|v| v - 128.0)
            .collect();
        let mut spec: Vec<Complex32> = fold.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        let mut tmp = FftScratch::default();
        det.fft_tile.forward_to_transposed(&mut spec, &mut tmp);
        // An odd count: the last template has no partner.
        let templates: Vec<(usize, usize)> = Templates::All.list().into_iter().take(7).collect();
        let mut corr = vec![Complex32::default(); SHIFTS];
        let paired = det.screening(&spec, &templates, &mut corr, &mut tmp);
        for (&(q, t), &want_t) in paired.iter().zip(&templates) {
            assert_eq!(t, want_t);
            let s = &det.sync_spectra[t.0 * ORIENTATIONS + t.1];
            let mut single: Vec<Complex32> = spec.iter().zip(s).map(|(a, b)| a * b).collect();
            det.fft_tile.inverse_from_transposed(&mut single, &mut tmp);
            let alone = quick_peaks(&single)[0];
            assert!(
                (q - alone).abs() < 1e-3 * alone.max(1.0),
                "{t:?}: {q} vs {alone}"
            );
        }
    }

    #[test]
    fn screening_statistic_matches_its_definition() {
        // Two real surfaces with different chip-phase statistics, packed as one complex
        // surface the way the paired screening leaves them.
        let a = photo_like(TILE, TILE, 3);
        let b = photo_like(TILE, TILE, 4);
        let corr: Vec<Complex32> = (0..SHIFTS)
            .map(|i| {
                let phase_gain = [1.0, 3.0, 0.5, 2.0][(i % 2) + 2 * ((i / TILE) % 2)];
                Complex32::new(a.data[i] - 100.0, phase_gain * (b.data[i] - 140.0))
            })
            .collect();
        let plain = |part: &dyn Fn(&Complex32) -> f32| {
            let mut best = 0f64;
            for phase in 0..4 {
                let v: Vec<f64> = (0..SHIFTS)
                    .filter(|i| (i % 2) + 2 * ((i / TILE) % 2) == phase)
                    .map(|i| f64::from(part(&corr[i])))
                    .collect();
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let sd =
                    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
                let far = v.iter().map(|x| (x - mean).abs()).fold(0f64, f64::max);
                best = best.max(far / sd);
            }
            best
        };
        let got = quick_peaks(&corr);
        let want = [plain(&|c| c.re), plain(&|c| c.im)];
        for k in 0..2 {
            assert!(
                (got[k] - want[k]).abs() < 1e-3 * want[k],
                "part {k}: {} vs {}",
                got[k],
                want[k]
            );
        }
        assert!(
            (got[0] - got[1]).abs() > 0.01,
            "the two parts must differ: {got:?}"
        );
    }

    #[test]
    fn quarter_rotation_is_an_involution_after_four() {
        let t: Vec<f32> = (0..SHIFTS).map(|i| i as f32).collect();
        let mut r = t.clone();
        for _ in 0..4 {
            r = rotate_quarter(&r);
        }
        assert_eq!(r, t);
    }

    #[test]
    fn degrees_are_normalised_without_negative_zero() {
        assert_eq!(normalise_degrees(-0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(normalise_degrees(270.0), -90.0);
        assert_eq!(normalise_degrees(-180.0), 180.0);
    }
}

//! The copy against its original: the examiner who holds the released image (a hospital
//! keeps its originals) can take the image itself out of a leaked copy and look for the
//! mark in what is left. Where the blind search must find a weak mark under a strong image
//! (a fine texture, a small slice after a downscale or a blur), the image's interference is
//! gone and only the leak's own noise (rounding, recompression) remains.
//!
//! [`residual`] resamples the original into the copy's frame through a given map, fits the
//! leak's linear filter and tone (a small kernel and an offset, by least squares: blur,
//! resampling filter, contrast, inversion), and returns the copy minus the filtered
//! original. The fit has [`FIT_TERMS`] unknowns against thousands of pixels, so it takes
//! out of the mark only that share of its energy; it looks at the copy and the original,
//! never at a key or a fingerprint, so the informed check's scores on the residual keep
//! their distribution for every release whose fingerprint the copy does not carry.

use crate::mark::content::Registration;
use crate::mark::detect::{DetectOptions, Detection, Detector};
use crate::mark::keystone::Trapezoid;
use crate::mark::pattern::TILE;
use crate::mark::screen::Screen;
use crate::raster::Plane;

/// Taps per side of the filter fitted for the residual (odd).
const TAPS: usize = 5;
/// Unknowns of the residual's least-squares fit: the kernel and an offset.
pub const FIT_TERMS: usize = TAPS * TAPS + 1;
/// The registration's fits take a 3 x 3 kernel (10 unknowns): enough to rank maps, at a
/// sixth of the cost.
const REGISTER_TAPS: usize = 3;
const REGISTER_TERMS: usize = REGISTER_TAPS * REGISTER_TAPS + 1;

/// Where each pixel of the copy lies in the original: the copy's pixel centre `(x, y)` is
/// the original's point `linear (x, y) + offset` (row-major `linear`; pixel centres at
/// integers), as [`Registration`] writes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Map {
    /// Row-major 2 x 2 map from copy to original pixels.
    pub linear: [f64; 4],
    /// Offset, original px.
    pub offset: [f64; 2],
}

impl Map {
    /// The whole original shown as the whole copy (a rescale, possibly anisotropic),
    /// corners on corners.
    pub fn whole(original: (usize, usize), copy: (usize, usize)) -> Self {
        let (sx, sy) = (
            original.0 as f64 / copy.0 as f64,
            original.1 as f64 / copy.1 as f64,
        );
        Map {
            linear: [sx, 0.0, 0.0, sy],
            offset: [0.5 * sx - 0.5, 0.5 * sy - 0.5],
        }
    }

    /// A detection's registration, its tile offset resolved by `tiles` periods.
    fn registered(r: &Registration, tiles: (i64, i64)) -> Self {
        Map {
            linear: r.linear,
            offset: [
                r.offset[0] + (tiles.0 * TILE as i64) as f64,
                r.offset[1] + (tiles.1 * TILE as i64) as f64,
            ],
        }
    }

    fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let [a, b, c, d] = self.linear;
        (
            a * x + b * y + self.offset[0],
            c * x + d * y + self.offset[1],
        )
    }

    /// Original pixels per copy pixel (the geometric mean of the two axes).
    fn zoom(&self) -> f64 {
        let [a, b, c, d] = self.linear;
        (a * d - b * c).abs().sqrt()
    }

    /// The map from the original's coordinates to the copy's linear part, as
    /// [`Detector::detect_at_geometry`] takes it; `None` when singular.
    fn forward(&self) -> Option<[f64; 4]> {
        let [a, b, c, d] = self.linear;
        let det = a * d - b * c;
        (det.abs() > 1e-9 && det.is_finite()).then(|| [d / det, -b / det, -c / det, a / det])
    }
}

/// What [`residual`] measured.
#[derive(Clone, Debug)]
pub struct Residual {
    /// The copy minus the fitted, resampled original (0 where the original does not reach).
    pub plane: Plane,
    /// Share of the copy's variance (over the fitted pixels) the fitted original explains:
    /// near 1 when the copy shows this original through this map.
    pub explained: f64,
}

/// The original resampled at the copy's pixels through a map.
struct Shown {
    values: Vec<f32>,
    inside: Vec<bool>,
    width: usize,
    height: usize,
}

impl Shown {
    /// Resamples `source` (the original, already low-passed to the copy's sampling) at the
    /// copy's `width x height` pixels through `map`.
    fn new(source: &Plane, map: &Map, width: usize, height: usize) -> Self {
        let mut values = vec![0f32; width * height];
        let mut inside = vec![false; width * height];
        for y in 0..height {
            for x in 0..width {
                let (u, v) = map.apply(x as f64, y as f64);
                if let Some(value) = bilinear(source, u, v) {
                    values[y * width + x] = value;
                    inside[y * width + x] = true;
                }
            }
        }
        Shown {
            values,
            inside,
            width,
            height,
        }
    }

    /// Whether the fit's neighbourhood of `(x, y)` lies inside the original (the shown
    /// region is convex, so its corners decide).
    fn usable(&self, x: usize, y: usize, half: usize) -> bool {
        let w = self.width;
        x >= half
            && y >= half
            && x + half < w
            && y + half < self.height
            && [
                (x - half, y - half),
                (x + half, y - half),
                (x - half, y + half),
                (x + half, y + half),
            ]
            .iter()
            .all(|&(i, j)| self.inside[j * w + i])
    }

    /// The columns `x` of row `y` whose fit neighbourhood (`half` px each way) lies inside
    /// the original, as [`Shown::usable`] decides: the shown region is convex and each row
    /// of `inside` one run, so the neighbourhood's four corners are inside exactly when `x`
    /// is in this range. Empty (`lo > hi`) when none is.
    fn usable_span(&self, y: usize, half: usize) -> (usize, usize) {
        let w = self.width;
        let run = |row: usize| {
            let line = &self.inside[row * w..(row + 1) * w];
            match line.iter().position(|&v| v) {
                Some(first) => (first, line.iter().rposition(|&v| v).unwrap_or(first)),
                None => (1, 0),
            }
        };
        let ((lo_a, hi_a), (lo_b, hi_b)) = (run(y - half), run(y + half));
        let lo = lo_a.max(lo_b) + half;
        let hi = hi_a.min(hi_b).min(w - 1);
        if hi < half || lo > hi - half {
            (1, 0)
        } else {
            (lo, hi - half)
        }
    }

    /// Least squares of `copy` on the `T x T` neighbourhood of the shown original and an
    /// offset, over the usable pixels of every `step`-th row and column: the kernel and the
    /// share of the copy's variance it explains there. `None` when fewer than 64 x
    /// `K` pixels are usable. `K` is `T * T + 1`; `add` sums a row's pixels
    /// ([`accumulate`] for `T`, or its AVX2 form).
    fn fit<const T: usize, const K: usize>(
        &self,
        copy: &Plane,
        step: usize,
        add: AddRow<K>,
    ) -> Option<([f64; K], f64)> {
        debug_assert_eq!(K, T * T + 1);
        let half = T / 2;
        let w = self.width;
        let mut sums = Normal::<K>::default();
        for y in (half..self.height.saturating_sub(half)).step_by(step) {
            let (lo, hi) = self.usable_span(y, half);
            // The first column of the `step` grid from `half` at or after `lo`.
            let first = half + (lo.max(half) - half).div_ceil(step) * step;
            debug_assert!(
                (half..w.saturating_sub(half))
                    .step_by(step)
                    .all(|x| self.usable(x, y, half) == (first..=hi).contains(&x))
            );
            if first > hi {
                continue;
            }
            let copy = &copy.data[y * w..(y + 1) * w];
            add(&mut sums, &self.values, w, copy, y, first, hi, step);
        }
        let Normal {
            ata,
            atb,
            n,
            sum_b,
            sum_bb,
        } = sums;
        if n < 64 * K {
            return None;
        }
        let kernel = solve(ata, atb)?;
        // The residual's sum of squares is b'b - k'A'b at the least-squares solution.
        let fitted_ss: f64 = kernel.iter().zip(&atb).map(|(k, v)| k * v).sum();
        let mean = sum_b / n as f64;
        let copy_ss = sum_bb - n as f64 * mean * mean;
        let residual_ss = (sum_bb - fitted_ss).max(0.0);
        let explained = if copy_ss > 0.0 {
            (1.0 - residual_ss / copy_ss).clamp(0.0, 1.0)
        } else {
            0.0
        };
        Some((kernel, explained))
    }

    /// The copy minus the fitted original (0 where the fit's neighbourhood leaves it).
    fn subtract(&self, copy: &Plane, kernel: &[f64; FIT_TERMS]) -> Plane {
        let half = TAPS / 2;
        let w = self.width;
        let mut plane = Plane::zeros(w, self.height);
        let mut row = [0f64; FIT_TERMS];
        for y in 0..self.height {
            for x in 0..w {
                if self.usable(x, y, half) {
                    neighbourhood::<TAPS, FIT_TERMS>(&self.values, w, x, y, &mut row);
                    let fit: f64 = row.iter().zip(kernel).map(|(a, k)| a * k).sum();
                    plane.data[y * w + x] = (f64::from(copy.data[y * w + x]) - fit) as f32;
                }
            }
        }
        plane
    }
}

/// The normal equations of a fit as they are summed: `A'A`, `A'b`, the pixels, and the
/// copy's sum and sum of squares.
struct Normal<const K: usize> {
    ata: [[f64; K]; K],
    atb: [f64; K],
    n: usize,
    sum_b: f64,
    sum_bb: f64,
}

impl<const K: usize> Default for Normal<K> {
    fn default() -> Self {
        Normal {
            ata: [[0.0; K]; K],
            atb: [0.0; K],
            n: 0,
            sum_b: 0.0,
            sum_bb: 0.0,
        }
    }
}

/// Adds the pixels `first, first + step, ..= last` of row `y` (`copy` is that row) to
/// `sums`: each pixel's `T x T` neighbourhood in `shown` (`w` wide) and an offset against
/// its copy value. The whole square of `A'A` is summed (it vectorises); its two halves
/// hold the same products, so it is symmetric to the bit.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn accumulate<const T: usize, const K: usize>(
    sums: &mut Normal<K>,
    shown: &[f32],
    w: usize,
    copy: &[f32],
    y: usize,
    first: usize,
    last: usize,
    step: usize,
) {
    let mut row = [0f64; K];
    for x in (first..=last).step_by(step) {
        neighbourhood::<T, K>(shown, w, x, y, &mut row);
        let b = f64::from(copy[x]);
        for i in 0..K {
            let ri = row[i];
            sums.atb[i] += ri * b;
            for (a, &rj) in sums.ata[i].iter_mut().zip(&row) {
                *a += ri * rj;
            }
        }
        sums.sum_b += b;
        sums.sum_bb += b * b;
        sums.n += 1;
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn accumulate_register_portable(
    sums: &mut Normal<REGISTER_TERMS>,
    shown: &[f32],
    w: usize,
    copy: &[f32],
    y: usize,
    first: usize,
    last: usize,
    step: usize,
) {
    accumulate::<REGISTER_TAPS, REGISTER_TERMS>(sums, shown, w, copy, y, first, last, step);
}

/// A row's summation into a fit's normal equations: [`accumulate`]'s arguments.
type AddRow<const K: usize> = fn(&mut Normal<K>, &[f32], usize, &[f32], usize, usize, usize, usize);

crate::simd::avx2_kernel! {
    /// [`accumulate`] for the registration's 3 x 3 fits.
    #[allow(clippy::too_many_arguments)]
    fn accumulate_register(sums: &mut Normal<REGISTER_TERMS>, shown: &[f32], w: usize, copy: &[f32], y: usize, first: usize, last: usize, step: usize) -> () = accumulate_register_portable
}

/// The zoom (original px per copy px) above which the original is low-passed first.
const PREFILTER_ZOOM: f64 = 1.1;

/// The original low-passed to the sampling of a copy that shows it `zoom` original pixels
/// per copy pixel: the fitted kernel corrects what this approximate prefilter leaves.
fn prefiltered(original: &Plane, zoom: f64) -> std::borrow::Cow<'_, Plane> {
    if zoom > PREFILTER_ZOOM {
        std::borrow::Cow::Owned(gaussian(original, 0.4 * (zoom * zoom - 1.0).sqrt()))
    } else {
        std::borrow::Cow::Borrowed(original)
    }
}

/// The copy minus the original as the copy shows it through `map` (see the module). Returns
/// `None` when fewer than 64 x [`FIT_TERMS`] pixels of the copy lie inside the original.
pub fn residual(copy: &Plane, original: &Plane, map: &Map) -> Option<Residual> {
    let source = prefiltered(original, map.zoom());
    let shown = Shown::new(&source, map, copy.width, copy.height);
    let (kernel, explained) =
        shown.fit::<TAPS, FIT_TERMS>(copy, 1, accumulate::<TAPS, FIT_TERMS>)?;
    Some(Residual {
        plane: shown.subtract(copy, &kernel),
        explained,
    })
}

/// The registration is accepted when the fitted original explains at least this share of
/// the copy's variance: copies of the original through the right map explain 0.94-1.00 in
/// the hard leaks (JPEG 20 of a fine texture, a third's downscale, blur sigma 2, 256-px
/// slices halved + JPEG 50); an unrelated image next to nothing. It decides whether what
/// is left is worth searching, not whom it may name: a fingerprint is only found where the
/// copy carries it, whatever the original taken out (a smooth neighbouring image, say an
/// adjacent slice, can register too, and only makes what is left noisier).
pub const MIN_EXPLAINED: f64 = 0.5;

/// A copy examined against its original ([`detect_with_original`]).
#[derive(Clone, Debug)]
pub struct Referenced {
    /// The detection on the copy minus the fitted original, folded at the registered
    /// geometry (its own statistic counts that one geometry); `None` when the copy did not
    /// register ([`MIN_EXPLAINED`]): nothing was looked for.
    pub detection: Option<Detection>,
    /// Where the copy lies in the original (the best map found).
    pub map: Map,
    /// Share of the copy's variance the fitted original explains there.
    pub explained: f64,
    /// Maps whose fit was compared (in every original given).
    pub maps_fitted: usize,
    /// Which of the originals given the copy registered in (the index; 0 with one).
    pub original: usize,
    /// The copy as a correction the blind search made shows it (a screen's frame
    /// rectified, a keystone undone: [`crate::mark::detect::Transform::corrected`]'s copy,
    /// and the detection's transform names the correction), when it was registered so;
    /// `map` is then from this corrected copy's pixels. `None`: the copy as it is.
    pub corrected: Option<Plane>,
}

impl Referenced {
    /// False-alarm probability of "a mark of this key is present in what is left": the
    /// detection's, for its one geometry, times the maps compared (a union bound over the
    /// maps that could have been taken); 1 when the copy did not register.
    pub fn p_value(&self) -> f64 {
        10f64.powf(self.log10_p())
    }

    /// log10 of [`Referenced::p_value`], without underflow.
    pub fn log10_p(&self) -> f64 {
        self.detection.as_ref().map_or(0.0, |d| {
            (d.log10_p + (self.maps_fitted.max(1) as f64).log10()).min(0.0)
        })
    }

    /// Whether the mark is claimed in what is left at `max_p` ([`Referenced::p_value`]).
    pub fn marked(&self, max_p: f64) -> bool {
        self.detection.as_ref().is_some_and(|d| d.marked) && self.p_value() <= max_p
    }

    /// The payload read from what is left, when the mark is claimed there at `max_p`.
    pub fn payload(&self, max_p: f64) -> Option<u64> {
        self.detection
            .as_ref()
            .and_then(|d| d.payload)
            .filter(|_| self.marked(max_p))
    }
}

/// Examines `copy` against its `original` (both display planes): registers the copy in the
/// original ([`register`]), takes the fitted original out ([`residual`]) and, when the
/// copy registered ([`MIN_EXPLAINED`]), folds what is left at the registered geometry.
/// `blind` is the blind search's result on the copy, whose alignments (and alternatives)
/// give maps to try besides the whole image and a crop. `None` when no map leaves enough of
/// the copy inside the original to fit.
///
/// Which map is taken is decided by the content alone (the share of the copy the original
/// explains), never by a fingerprint, so the informed check's scores on the result keep
/// their distribution for every release whose fingerprint the copy does not carry.
pub fn detect_with_original(
    detector: &Detector,
    copy: &Plane,
    original: &Plane,
    blind: Option<&Detection>,
    opts: &DetectOptions,
) -> Option<Referenced> {
    detect_with_originals(detector, copy, &[original], blind, opts)
}

/// [`detect_with_original`] when the copy may show any of several `originals` (a study's
/// images, a multi-frame image's frames): the copy's starting maps are fitted in each, and
/// only the original whose best one explains the most of the copy is refined, taken out
/// and searched ([`Referenced::original`]). That choice, like the map's, is made by the
/// content alone; [`Referenced::maps_fitted`] counts the maps fitted in every original,
/// so the p-value's union bound covers every map that could have been taken. `None` when no
/// map of any original leaves enough of the copy inside it to fit.
pub fn detect_with_originals(
    detector: &Detector,
    copy: &Plane,
    originals: &[&Plane],
    blind: Option<&Detection>,
    opts: &DetectOptions,
) -> Option<Referenced> {
    let mut maps_fitted = 0;
    let mut views = views(copy, blind);
    let mut best: Option<(f64, Map, usize, usize, Option<Plane>)> = None;
    for (i, original) in originals.iter().enumerate() {
        for (k, (view, corrected)) in views.iter().enumerate() {
            let shown = corrected.as_ref().unwrap_or(copy);
            let start = Start::find(shown, original, &searches(blind, view));
            maps_fitted += start.maps;
            if let Some((s, m)) = start.best
                && best.as_ref().is_none_or(|b| s > b.0)
            {
                best = Some((s, m, i, k, start.source));
            }
        }
    }
    let (_, map, chosen, k, source) = best?;
    let original = originals[chosen];
    let (view, corrected) = views.swap_remove(k);
    let copy = corrected.as_ref().unwrap_or(copy);
    let map = refine(copy, source.as_ref().unwrap_or(original), map);
    let r = residual(copy, original, &map)?;
    let detection = if r.explained >= MIN_EXPLAINED {
        map.forward()
            .and_then(|m| detector.detect_at_geometry(&r.plane, m, opts).ok())
            .map(|mut d| {
                // Found in the corrected copy: say so, as the blind search does.
                d.transform.screen = view.screen;
                d.transform.undone_keystone = view.undone_keystone;
                d
            })
    } else {
        None
    };
    Some(Referenced {
        detection,
        map,
        explained: r.explained,
        maps_fitted,
        original: chosen,
        corrected,
    })
}

/// Pixels the coarse ranking of aligned maps samples: a 2048-px copy of a 2048-px original
/// offers about 300 tile offsets per alignment.
const COARSE_SAMPLES: usize = 16_384;

/// Maps whose coarse correlation ranks best are fitted (besides the whole image).
const FITTED_MAPS: usize = 3;

/// Where `copy` lies in `original`: the whole image rescaled, a crop at the original's
/// scale, or an alignment of `blind` (and its alternatives) with its tile offset resolved;
/// the crops and alignments ranked by a coarse correlation, the best fitted with the whole
/// image, the best fit refined. Returns the map and the number of maps fitted; `None` when
/// none could be fitted.
pub fn register(copy: &Plane, original: &Plane, blind: Option<&Detection>) -> Option<(Map, usize)> {
    let aligned = searches(blind, &View::default());
    let start = Start::find(copy, original, &aligned);
    let map = start.best?.1;
    let source = start.source.as_ref().unwrap_or(original);
    Some((refine(copy, source, map), start.maps))
}

/// How the copy is looked at: as it is, or with a correction the blind search made (a
/// screen's frame rectified, a keystone undone), in whose frame its alignments lie.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct View {
    screen: Option<Screen>,
    undone_keystone: Option<Trapezoid>,
}

impl View {
    fn of(d: &Detection) -> View {
        View {
            screen: d.transform.screen,
            undone_keystone: d.transform.undone_keystone,
        }
    }
}

/// The blind search's result and its alternatives that were made in `view`'s frame.
fn searches<'a>(blind: Option<&'a Detection>, view: &View) -> Vec<&'a Detection> {
    blind
        .into_iter()
        .flat_map(|d| std::iter::once(d).chain(&d.alternatives))
        .filter(|d| View::of(d) == *view)
        .collect()
}

/// The copy as it is, then each correction the blind search made (at most
/// [`MAX_CORRECTED_VIEWS`], in the order it ranked them), with the copy as the correction
/// shows it ([`crate::mark::detect::Transform::corrected`]).
fn views(copy: &Plane, blind: Option<&Detection>) -> Vec<(View, Option<Plane>)> {
    let mut out = vec![(View::default(), None)];
    for d in blind
        .into_iter()
        .flat_map(|d| std::iter::once(d).chain(&d.alternatives))
    {
        let v = View::of(d);
        if out.len() <= MAX_CORRECTED_VIEWS && !out.iter().any(|o| o.0 == v) {
            out.push((v, d.transform.corrected(copy)));
        }
    }
    out
}

/// Corrected copies registered besides the copy itself (a photo of a screen gives its
/// rectified frame, and with a ledger the frame rectified to each size that fits).
const MAX_CORRECTED_VIEWS: usize = 3;

/// The first stage of [`register`]: the best of the maps fitted before refinement.
struct Start {
    /// The share of the copy the best map's fit explains, and the map; `None` when none
    /// could be fitted.
    best: Option<(f64, Map)>,
    /// Maps fitted.
    maps: usize,
    /// The original prefiltered for the best map's zoom ([`prefiltered`]); `None` when it
    /// is the original itself.
    source: Option<Plane>,
}

impl Start {
    /// The first stage for `copy` in `original`, with the alignments of `searches` (each
    /// registered in `copy`'s frame).
    fn find(copy: &Plane, original: &Plane, searches: &[&Detection]) -> Start {
        let (w, h) = (copy.width, copy.height);
        let mut maps = vec![Map::whole((original.width, original.height), (w, h))];
        let mut aligned = Vec::new();
        for d in searches {
            let base = Map::registered(&d.registration, (0, 0));
            let (u, v) = base.apply(w as f64 / 2.0, h as f64 / 2.0);
            let t = TILE as f64;
            let span = |c: f64, extent: usize| {
                ((-c / t).floor() as i64)..=(((extent as f64 - c) / t).ceil() as i64)
            };
            for ky in span(v, original.height) {
                for kx in span(u, original.width) {
                    aligned.push(Map::registered(&d.registration, (kx, ky)));
                }
            }
        }
        // A crop at the original's scale, found by the content alone (a copy whose mark the
        // blind search did not find gives no alignment).
        aligned.extend(crop_offsets(copy, original).into_iter().map(|(x, y)| Map {
            linear: [1.0, 0.0, 0.0, 1.0],
            offset: [x, y],
        }));
        // Coarse ranking: the correlation of the copy with the original on a sparse grid.
        let mut ranked: Vec<(f64, Map)> = aligned
            .into_iter()
            .map(|m| (coarse_correlation(copy, original, &m), m))
            .filter(|(r, _)| r.is_finite())
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        maps.extend(ranked.iter().take(FITTED_MAPS).map(|r| r.1));
        let fine = fit_step(copy);
        // Maps of one alignment share their zoom, and so their prefiltered original.
        let mut filtered: Vec<(u64, Plane)> = Vec::new();
        let mut best: Option<(f64, Map, Option<usize>)> = None;
        for m in &maps {
            let zoom = m.zoom();
            let at = (zoom > PREFILTER_ZOOM).then(|| {
                filtered
                    .iter()
                    .position(|f| f.0 == zoom.to_bits())
                    .unwrap_or_else(|| {
                        let p = prefiltered(original, zoom).into_owned();
                        filtered.push((zoom.to_bits(), p));
                        filtered.len() - 1
                    })
            });
            let source = at.map_or(original, |i| &filtered[i].1);
            let s = register_score(copy, source, m, fine);
            if s.is_finite() && best.is_none_or(|b| s > b.0) {
                best = Some((s, *m, at));
            }
        }
        let source = best.and_then(|b| b.2).map(|i| filtered.swap_remove(i).1);
        Start {
            best: best.map(|b| (b.0, b.1)),
            maps: maps.len(),
            source,
        }
    }
}

/// The row and column step of the registration's fits: every other (or fourth) row and
/// column gives plenty of equations but on small copies, which are fitted whole.
fn fit_step(copy: &Plane) -> usize {
    let pixels = copy.width * copy.height;
    if pixels > 1 << 20 {
        4
    } else if pixels > 1 << 16 {
        2
    } else {
        1
    }
}

/// The share of `copy` that `source` (the original, prefiltered) shown through `m`
/// explains with a 3 x 3 kernel and an offset, fitted on every `step`-th row and column;
/// minus infinity when too little of the copy lies inside.
fn register_score(copy: &Plane, source: &Plane, m: &Map, step: usize) -> f64 {
    Shown::new(source, m, copy.width, copy.height)
        .fit::<REGISTER_TAPS, REGISTER_TERMS>(copy, step, accumulate_register)
        .map_or(f64::NEG_INFINITY, |f| f.1)
}

/// The last stage of [`register`]: `map` refined by coordinate steps. `source` is the
/// original prefiltered for `map`'s zoom ([`Start::source`]).
fn refine(copy: &Plane, source: &Plane, mut map: Map) -> Map {
    let fine = fit_step(copy);
    // The refinement changes the zoom by a fraction of a percent: one prefilter serves it.
    let score = |m: &Map, step: usize| register_score(copy, source, m, step);
    // Refinement by coordinate steps: the offset by 4, 2, 1, 1/2, 1/4, 1/8 px; the linear
    // part by steps that move the copy's far corner by as much (a turn of a degree or a
    // rescale by 1 % moves it by a few px). The coarse rounds fit on a sparser grid.
    let reach = copy.width.max(copy.height) as f64;
    for round in 0..6 {
        let step_px = 4.0 / f64::from(1 << round);
        let step = if round < 3 { 2 * fine } else { fine };
        let mut best_here = score(&map, step);
        for p in 0..6 {
            let delta = if p < 4 { step_px / reach } else { step_px };
            for sign in [1.0, -1.0] {
                let mut m = map;
                match p {
                    0..4 => m.linear[p] += sign * delta,
                    _ => m.offset[p - 4] += sign * delta,
                }
                let s = score(&m, step);
                if s > best_here {
                    best_here = s;
                    map = m;
                }
            }
        }
    }
    map
}

/// Where a copy no larger than the original lies in it if it is a crop at the original's
/// scale: the best offsets of a search of every placement on both planes shrunk by a power
/// of 2 until the original is at most [`CROP_SEARCH_SIDE`] px a side, each refined on planes shrunk by 2
/// within one coarse step. Empty when the copy is larger than the original on a side.
fn crop_offsets(copy: &Plane, original: &Plane) -> Vec<(f64, f64)> {
    if copy.width > original.width || copy.height > original.height {
        return Vec::new();
    }
    let factor = original
        .width
        .max(original.height)
        .div_ceil(CROP_SEARCH_SIDE)
        .next_power_of_two();
    let (small_copy, small_original) = (shrink(copy, factor), shrink(original, factor));
    let range = |c: usize, o: usize| 0..=(o - c) as i64;
    let mut coarse: Vec<(f64, (i64, i64))> = Vec::new();
    for ty in range(small_copy.height, small_original.height) {
        for tx in range(small_copy.width, small_original.width) {
            let r = placed_correlation(&small_copy, &small_original, tx, ty);
            if r.is_finite() {
                coarse.push((r, (tx, ty)));
            }
        }
    }
    coarse.sort_by(|a, b| b.0.total_cmp(&a.0));
    let fine = (factor / 2).max(1);
    let (fine_copy, fine_original) = (shrink(copy, fine), shrink(original, fine));
    let ratio = (factor / fine) as i64;
    coarse
        .iter()
        .take(CROP_OFFSETS)
        .map(|&(_, (cx, cy))| {
            let mut best = (f64::NEG_INFINITY, (cx * ratio, cy * ratio));
            for ty in cy * ratio - ratio..=cy * ratio + ratio {
                for tx in cx * ratio - ratio..=cx * ratio + ratio {
                    let fits = tx >= 0
                        && ty >= 0
                        && tx as usize + fine_copy.width <= fine_original.width
                        && ty as usize + fine_copy.height <= fine_original.height;
                    if fits {
                        let r = placed_correlation(&fine_copy, &fine_original, tx, ty);
                        if r > best.0 {
                            best = (r, (tx, ty));
                        }
                    }
                }
            }
            let (tx, ty) = best.1;
            ((tx * fine as i64) as f64, (ty * fine as i64) as f64)
        })
        .collect()
}

/// The crop search shrinks the planes until the original is at most this many px a side.
const CROP_SEARCH_SIDE: usize = 128;
/// Placements the crop search refines.
const CROP_OFFSETS: usize = 2;

/// `p` shrunk by `factor` (the mean of each `factor x factor` block; a partial last block
/// dropped).
fn shrink(p: &Plane, factor: usize) -> Plane {
    if factor <= 1 {
        return p.clone();
    }
    let (w, h) = (p.width / factor, p.height / factor);
    let mut out = Plane::zeros(w, h);
    let inv = 1.0 / (factor * factor) as f32;
    for y in 0..h {
        for x in 0..w {
            let mut sum = 0f32;
            for j in 0..factor {
                let row = &p.data[(y * factor + j) * p.width + x * factor..][..factor];
                sum += row.iter().sum::<f32>();
            }
            out.data[y * w + x] = sum * inv;
        }
    }
    out
}

/// Pearson correlation of `copy` with the part of `original` it covers placed at
/// `(tx, ty)` (either sign counts: inversion is a tone change the fit undoes).
fn placed_correlation(copy: &Plane, original: &Plane, tx: i64, ty: i64) -> f64 {
    let (tx, ty) = (tx as usize, ty as usize);
    let mut sums = Sums::default();
    for y in 0..copy.height {
        let a = &copy.data[y * copy.width..][..copy.width];
        let b = &original.data[(y + ty) * original.width + tx..][..copy.width];
        for (&a, &b) in a.iter().zip(b) {
            sums.add(f64::from(a), f64::from(b));
        }
    }
    sums.correlation()
}

/// Running sums for a Pearson correlation.
#[derive(Default)]
struct Sums {
    n: f64,
    a: f64,
    b: f64,
    aa: f64,
    bb: f64,
    ab: f64,
}

impl Sums {
    fn add(&mut self, a: f64, b: f64) {
        self.n += 1.0;
        self.a += a;
        self.b += b;
        self.aa += a * a;
        self.bb += b * b;
        self.ab += a * b;
    }

    /// |r| (NaN below 64 pairs or with a constant side).
    fn correlation(&self) -> f64 {
        let n = self.n;
        if n < 64.0 {
            return f64::NAN;
        }
        let cov = self.ab - self.a * self.b / n;
        let (va, vb) = (self.aa - self.a * self.a / n, self.bb - self.b * self.b / n);
        if va <= 0.0 || vb <= 0.0 {
            return f64::NAN;
        }
        cov.abs() / (va * vb).sqrt()
    }
}

/// Pearson correlation of the copy with the original shown through `map`, on a grid of
/// about [`COARSE_SAMPLES`] of the copy's pixels (every 4th at least) inside the original
/// (NaN when fewer than 64 are).
fn coarse_correlation(copy: &Plane, original: &Plane, map: &Map) -> f64 {
    let step = ((copy.width * copy.height) as f64 / COARSE_SAMPLES as f64)
        .sqrt()
        .ceil()
        .max(4.0) as usize;
    let mut sums = Sums::default();
    for y in (0..copy.height).step_by(step) {
        for x in (0..copy.width).step_by(step) {
            let (u, v) = map.apply(x as f64, y as f64);
            if let Some(o) = bilinear(original, u, v) {
                sums.add(f64::from(copy.data[y * copy.width + x]), f64::from(o));
            }
        }
    }
    sums.correlation()
}

/// The `T x T` neighbourhood of `(x, y)` in `shown` (row-major taps) and a constant 1.
fn neighbourhood<const T: usize, const K: usize>(
    shown: &[f32],
    w: usize,
    x: usize,
    y: usize,
    row: &mut [f64; K],
) {
    let half = T / 2;
    for j in 0..T {
        let line = &shown[(y + j - half) * w + x - half..][..T];
        for (i, &v) in line.iter().enumerate() {
            row[j * T + i] = f64::from(v);
        }
    }
    row[K - 1] = 1.0;
}

/// Solves the symmetric system by Gaussian elimination with partial pivoting and a ridge of
/// 1e-9 of the diagonal's mean (a flat original leaves the kernel undetermined, not the
/// fit).
fn solve<const K: usize>(mut a: [[f64; K]; K], mut b: [f64; K]) -> Option<[f64; K]> {
    let ridge = 1e-9 * (0..K).map(|i| a[i][i]).sum::<f64>() / K as f64;
    for (i, r) in a.iter_mut().enumerate() {
        r[i] += ridge;
    }
    for col in 0..K {
        let pivot = (col..K).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (done, rest) = a.split_at_mut(col + 1);
        let pivot_row = &done[col];
        for (i, row) in rest.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            if f != 0.0 {
                for (v, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *v -= f * p;
                }
                b[col + 1 + i] -= f * b[col];
            }
        }
    }
    let mut x = [0f64; K];
    for r in (0..K).rev() {
        let s: f64 = (r + 1..K).map(|c| a[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Bilinear sample of `p` at `(u, v)` (pixel centres at integers), `None` outside.
fn bilinear(p: &Plane, u: f64, v: f64) -> Option<f32> {
    if !(u >= 0.0 && v >= 0.0 && u <= (p.width - 1) as f64 && v <= (p.height - 1) as f64) {
        return None;
    }
    // Both are at least 0 here, where truncation is the floor.
    let (x0, y0) = (u as usize, v as usize);
    let (x1, y1) = ((x0 + 1).min(p.width - 1), (y0 + 1).min(p.height - 1));
    let (fx, fy) = ((u - x0 as f64) as f32, (v - y0 as f64) as f32);
    let at = |x: usize, y: usize| p.data[y * p.width + x];
    let top = at(x0, y0) + fx * (at(x1, y0) - at(x0, y0));
    let bottom = at(x0, y1) + fx * (at(x1, y1) - at(x0, y1));
    Some(top + fy * (bottom - top))
}

/// Separable Gaussian blur of `p` with `sigma` px, edges clamped.
fn gaussian(p: &Plane, sigma: f64) -> Plane {
    let r = (3.0 * sigma).ceil().max(1.0) as usize;
    let k: Vec<f32> = (0..=2 * r)
        .map(|i| {
            let d = i as f64 - r as f64;
            (-d * d / (2.0 * sigma * sigma)).exp() as f32
        })
        .collect();
    let total: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / total).collect();
    convolve(&convolve(p, &k, false), &k, true)
}

/// `p` convolved with the centred kernel `k` along its rows (`columns` false) or down its
/// columns, edges clamped. Each output is `k`'s terms summed in order from -0.0 (as
/// `Iterator::sum` does: the tests' oracle), a whole row of outputs at a time, so the
/// loops vectorise and the bits are the plain sum's.
fn convolve(p: &Plane, k: &[f32], columns: bool) -> Plane {
    let (w, h) = (p.width, p.height);
    let r = k.len() / 2;
    let mut out = Plane::from_vec(w, h, vec![-0.0; w * h]);
    if w == 0 || h == 0 {
        return out;
    }
    if columns {
        for (y, dst) in out.data.chunks_exact_mut(w).enumerate() {
            for (j, &kv) in k.iter().enumerate() {
                let from = (y + j).saturating_sub(r).min(h - 1);
                for (o, &v) in dst.iter_mut().zip(&p.data[from * w..(from + 1) * w]) {
                    *o += kv * v;
                }
            }
        }
        return out;
    }
    // The outputs whose neighbours all lie inside the row, and the edges, clamped.
    let inner = r..w.saturating_sub(r).max(r);
    for (src, dst) in p.data.chunks_exact(w).zip(out.data.chunks_exact_mut(w)) {
        for (j, &kv) in k.iter().enumerate() {
            if !inner.is_empty() {
                for (o, &v) in dst[inner.clone()].iter_mut().zip(&src[j..]) {
                    *o += kv * v;
                }
            }
            for x in (0..inner.start.min(w)).chain(inner.end..w) {
                dst[x] += kv * src[(x + j).saturating_sub(r).min(w - 1)];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;
    use crate::mark::pattern::KeyPatterns;
    use crate::testsignal::{self, photo_like, turned};

    const NOISE: u32 = 25;

    /// A fine stochastic texture: a photo-like plane with pixel noise.
    fn texture(n: usize, seed: u64) -> Plane {
        let mut p = photo_like(n, n, seed);
        let mut noise =
            crate::prng::stream(&SecretKey::from_bytes([6; 32]), &[&seed.to_be_bytes()]);
        p.data.iter_mut().for_each(|v| {
            *v = (*v + crate::prng::below(&mut noise, NOISE) as f32 - (NOISE / 2) as f32)
                .clamp(0.0, 255.0)
        });
        p
    }

    /// Another scene than [`texture`]'s (whose smooth part is the same for every seed),
    /// with the same noise.
    fn other_scene(n: usize, seed: u64) -> Plane {
        let mut p = texture(n, seed);
        let base = photo_like(n, n, seed);
        for (i, v) in p.data.iter_mut().enumerate() {
            let (x, y) = ((i % n) as f32, (i / n) as f32);
            let scene = 128.0 + 60.0 * (x / 23.0 + y / 41.0).cos();
            *v = (*v - base.data[i] + scene).clamp(0.0, 255.0);
        }
        p
    }

    fn marked(plane: &Plane, key: &SecretKey, payload: u64) -> Plane {
        testsignal::marked(plane, &KeyPatterns::new(key), payload)
    }

    fn crop(p: &Plane, x0: usize, y0: usize, w: usize, h: usize) -> Plane {
        let data = (y0..y0 + h)
            .flat_map(|y| p.data[y * p.width + x0..][..w].iter().copied())
            .collect();
        Plane::from_vec(w, h, data)
    }

    fn rms(v: &[f32]) -> f64 {
        (v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    }

    /// A copy shrunk by 3 (box), inverted and brightened: the whole-image map registers it
    /// and the fit takes out all but a rounding's worth; a crop is found by the content
    /// alone at its offset; another texture does not register.
    #[test]
    fn the_fitted_original_takes_the_image_out_of_its_copies() {
        let original = texture(384, 1);
        let copy = {
            let mut c = shrink(&original, 3);
            c.data.iter_mut().for_each(|v| *v = (280.0 - *v).round());
            c
        };
        let (map, _) = register(&copy, &original, None).expect("a map is fitted");
        let r = residual(&copy, &original, &map).expect("the copy overlaps");
        assert!(r.explained > 0.99, "{}", r.explained);
        let interior: Vec<f32> = r.plane.data.iter().copied().filter(|v| *v != 0.0).collect();
        assert!(rms(&interior) < 0.1 * rms(&copy.data), "{}", rms(&interior));

        let cut = crop(&original, 101, 37, 200, 180);
        let (map, _) = register(&cut, &original, None).expect("a map is fitted");
        let r = residual(&cut, &original, &map).expect("the copy overlaps");
        assert!(r.explained > 0.999, "{map:?} {}", r.explained);
        // Within the fitted kernel's reach, which takes up a shift of up to 2 px.
        assert!(
            (map.offset[0] - 101.0).abs() <= 2.0 && (map.offset[1] - 37.0).abs() <= 2.0,
            "{map:?}"
        );

        let other = other_scene(384, 2);
        let (map, _) = register(&other, &original, None).expect("a map is fitted");
        let r = residual(&other, &original, &map).expect("the copy overlaps");
        assert!(r.explained < MIN_EXPLAINED, "{}", r.explained);
    }

    /// A marked texture turned by 1 degree and shrunk by 2: against its original the payload
    /// is read; the unmarked texture, the same way, claims nothing; the whole residual of an
    /// unrelated image registers nowhere and nothing is looked for.
    #[test]
    fn against_the_original_a_mark_under_a_texture_is_read() {
        let key = SecretKey::from_bytes([12; 32]);
        let detector = Detector::new(&key);
        let opts = DetectOptions::default();
        let original = texture(512, 3);
        let leak = |p: &Plane| shrink(&turned(p, 1.0, 1.0, 0.0), 2);
        let copy = leak(&marked(&original, &key, 0xfeed_f00d_1234_5678));
        let blind = detector.detect(&copy, &opts).unwrap();
        let r = detect_with_original(&detector, &copy, &original, Some(&blind), &opts)
            .expect("a map is fitted");
        assert!(r.explained > 0.9, "{}", r.explained);
        let z = r.detection.as_ref().map(|d| d.z);
        assert_eq!(r.payload(opts.max_p), Some(0xfeed_f00d_1234_5678), "{z:?}");
        assert!(r.p_value() >= r.detection.as_ref().unwrap().p_value());

        let unmarked = leak(&original);
        let blind = detector.detect(&unmarked, &opts).unwrap();
        let r = detect_with_original(&detector, &unmarked, &original, Some(&blind), &opts)
            .expect("a map is fitted");
        assert!(r.detection.is_some() && !r.marked(opts.max_p), "{z:?}");
        assert_eq!(r.payload(opts.max_p), None);

        let other = leak(&other_scene(512, 4));
        let r = detect_with_original(&detector, &other, &original, None, &opts)
            .expect("a map is fitted");
        assert!(
            r.detection.is_none() && r.p_value() == 1.0,
            "{}",
            r.explained
        );
    }

    /// Of several originals (another scene, a texture with the same smooth part and other
    /// fine detail, as an adjacent slice has, and the released texture), the copy is searched
    /// in the one it shows, at the same map and fit as when only that one is given; the
    /// p-value counts the maps fitted in all three.
    #[test]
    fn of_several_originals_the_one_the_copy_shows_is_searched() {
        let key = SecretKey::from_bytes([13; 32]);
        let detector = Detector::new(&key);
        let opts = DetectOptions::default();
        let original = texture(512, 3);
        let copy = shrink(
            &turned(
                &marked(&original, &key, 0x0bad_cafe_5eed_0001),
                1.0,
                1.0,
                0.0,
            ),
            2,
        );
        let blind = detector.detect(&copy, &opts).unwrap();
        let (scene, neighbour) = (other_scene(512, 4), texture(512, 7));
        let all = [&scene, &neighbour, &original];
        let r = detect_with_originals(&detector, &copy, &all, Some(&blind), &opts)
            .expect("a map is fitted");
        assert_eq!(r.original, 2, "{}", r.explained);
        assert_eq!(r.payload(opts.max_p), Some(0x0bad_cafe_5eed_0001));
        let alone = detect_with_original(&detector, &copy, &original, Some(&blind), &opts)
            .expect("a map is fitted");
        assert_eq!((r.map, r.explained), (alone.map, alone.explained));
        assert!(r.maps_fitted >= alone.maps_fitted + 2, "{}", r.maps_fitted);
        let more = (r.maps_fitted as f64 / alone.maps_fitted as f64).log10();
        assert!((r.log10_p() - alone.log10_p() - more).abs() < 1e-9);
    }

    /// The convolution's row-at-a-time loops give the plain definition's bits: each output
    /// `k`'s terms summed in order, neighbours clamped at the edges (also on planes
    /// narrower than the kernel).
    #[test]
    fn convolution_equals_its_plain_sum_bit_for_bit() {
        let plain = |p: &Plane, k: &[f32], step: usize, len: usize| {
            let r = (k.len() / 2) as isize;
            let mut out = Plane::zeros(p.width, p.height);
            for (i, o) in out.data.iter_mut().enumerate() {
                let along = (i / step % len) as isize;
                let base = i - (along as usize) * step;
                *o = k
                    .iter()
                    .enumerate()
                    .map(|(j, kv)| {
                        let at = (along + j as isize - r).clamp(0, len as isize - 1) as usize;
                        kv * p.data[base + at * step]
                    })
                    .sum();
            }
            out
        };
        let k: Vec<f32> = [1.0f32, 4.0, 6.5, 4.0, 1.0, 0.25, 0.125]
            .iter()
            .map(|v| v / 16.875)
            .collect();
        for (w, h) in [(37, 23), (5, 9), (1, 4), (3, 1), (64, 64)] {
            let p = photo_like(w, h, (w * h) as u64);
            for (columns, step, len) in [(false, 1, w), (true, w, h)] {
                let (got, want) = (convolve(&p, &k, columns), plain(&p, &k, step, len));
                let bits = |q: &Plane| q.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{w} x {h}, columns {columns}");
            }
        }
    }
}

//! A whole image turned on a canvas: straightened by a degree or a few, with the corners the
//! turn uncovers filled with one constant (black, as editors and
//! `tracemark_leaks::rotate` leave them), on the same canvas or an enlarged one, perhaps
//! rescaled after. The fill meets the image along four straight lines, the turned image's
//! edges. [`find`] fits them from the copy alone (never the key) and gives where the
//! original's corner pixels lie in the copy, outside it where the canvas cut them off.
//! With the original's size they give the whole map from original to copy, which a fine
//! texture's tile lattice, too weak for the blind search, cannot.
//!
//! Like [`crate::mark::screen::find`], this is a gate: it must not fire on ordinary images.
//! It asks for the four canvas corners to share one value, a straight boundary along every
//! side (a wedge of fill that grows linearly along it), all four at the same turn of at
//! least [`MIN_TURN`], meeting in a rectangle that covers most of the copy.

use crate::raster::Plane;

/// Largest difference from the fill value (8-bit display levels) for a pixel to count as
/// fill: the fill is exact after a turn, within a level or two after a rescale.
const FILL_TOLERANCE: f32 = 4.0;
/// How far in from each border the fill is followed (fraction of the side across).
const MAX_DEPTH: f64 = 0.25;
/// Least points on a side's fitted line: an eighth of the side, and at least this many.
const MIN_POINTS: usize = 24;
/// Largest distance (px) of a point from its side's line to count as on it, and the
/// largest root-mean-square distance of the points on it: the boundary's depth is measured
/// to a whole pixel.
const INLIER: f64 = 1.0;
const MAX_RMS: f64 = 0.6;
/// Largest distance (px) of the fitted boundary from a point's band of depths
/// (`depth - 1` to `depth`) for the point to stay on it.
const BAND_SLACK: f64 = 0.5;
/// The largest gap (places along a side) within a wedge of fill: a rescaled copy's blur
/// can lift the last shallow pixels of a wedge above the fill.
const MAX_GAP: f64 = 3.0;
/// Least rise of the depth along a side's line (px): a boundary at a constant depth is a
/// border, not a turn, and two whole steps of depth pin its slope ([`band_fit`]). (A turn of 1 degree rises 2 px over 115 px: the wedge along a side is
/// half of it, so a 256-px side shows it from about 0.9 degree, a 512-px side from 0.45.)
const MIN_RISE: f64 = 2.0;
/// Largest difference (radians) between the turns the four sides give: 0.1 degree, or
/// [`DISAGREEMENT_PX`] over the shortest side's span when that is more.
const MAX_DISAGREEMENT: f64 = 0.1 * std::f64::consts::PI / 180.0;
/// A side's slope is measured to about half a pixel over its span: the wedges of a
/// rescaled 192-px copy turned 2.5 degrees span 93 px and gave 2.52-2.64 degrees.
const DISAGREEMENT_PX: f64 = 0.5;
/// The smallest turn looked for (0.2 degree, two steps of depth along a 1,150-px side;
/// smaller sides need more, for two pixels of rise along a wedge): below it the image is
/// upright, the blind search's identity.
pub const MIN_TURN: f64 = 0.2 * std::f64::consts::PI / 180.0;
/// The largest turn looked for (15 degrees).
pub const MAX_TURN: f64 = 15.0 * std::f64::consts::PI / 180.0;
/// Least share of the copy the turned image covers.
const MIN_AREA: f64 = 0.5;

/// A turned image found in a copy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Turned {
    /// Where the original's corner pixels' centres lie, in the copy's pixel coordinates
    /// (pixel `i`'s centre at `i`): top-left, top-right, bottom-right, bottom-left.
    pub corners: [[f64; 2]; 4],
    /// The turn: the angle of the original's top edge in the copy (radians, y pointing
    /// down, so positive is clockwise on screen).
    pub angle: f64,
}

impl Turned {
    /// The lengths of the turned image's top and left edges (px, between corner pixels'
    /// centres): `(width - 1, height - 1)` times the scale of each axis.
    pub fn edge_lengths(&self) -> (f64, f64) {
        let [tl, tr, _, bl] = self.corners;
        (
            (tr[0] - tl[0]).hypot(tr[1] - tl[1]),
            (bl[0] - tl[0]).hypot(bl[1] - tl[1]),
        )
    }
}

/// One side of the copy: depths are counted in from it.
#[derive(Clone, Copy)]
enum Side {
    Top,
    Right,
    Bottom,
    Left,
}

/// A side's boundary: the depth of fill (px, to the boundary) as `a + b s` at position `s`
/// along the side (x for the top and bottom, y for the left and right), measured over a
/// `span` of positions.
#[derive(Clone, Copy, Debug)]
struct Boundary {
    a: f64,
    b: f64,
    span: f64,
    /// How far the depths lie from the line ([`straight`]).
    misfit: f64,
}

/// Looks for a whole image turned on a canvas filled with one value in `plane` (a display
/// plane). `None` for an image with no such canvas, which is every upright image.
pub fn find(plane: &Plane) -> Option<Turned> {
    let (w, h) = (plane.width, plane.height);
    if w < 2 * MIN_POINTS || h < 2 * MIN_POINTS {
        return None;
    }
    let at = |x: usize, y: usize| plane.data[y * w + x];
    let corners = [at(0, 0), at(w - 1, 0), at(w - 1, h - 1), at(0, h - 1)];
    let lo = corners.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = corners.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if hi - lo > FILL_TOLERANCE {
        return None;
    }
    let fill = (lo + hi) / 2.0;
    // The depth read two ways in one pass over each side (the first pixel that is not fill:
    // the sharp boundary a turn leaves; or the first at half the level of the image just
    // inside: a rescaled copy blurs the boundary over a pixel or two, and its foot moves
    // with the image's level). Of the readings whose four sides agree on the turn, the
    // straighter one; a side that neither reading finds ends the search.
    let mut readings = [[None; 4]; 2];
    for (i, side) in [Side::Top, Side::Right, Side::Bottom, Side::Left]
        .into_iter()
        .enumerate()
    {
        let [sharp, soft] = boundaries(plane, side, fill);
        if sharp.is_none() && soft.is_none() {
            return None;
        }
        readings[0][i] = sharp;
        readings[1][i] = soft;
    }
    let (b, angle) = readings
        .iter()
        .filter_map(sides_agree)
        .min_by(|x, y| misfit(&x.0).total_cmp(&misfit(&y.0)))?;
    if !(MIN_TURN..=MAX_TURN).contains(&angle.abs()) {
        return None;
    }
    // The lines through the boundaries (where the turned image's edge pixel centres lie),
    // as a point and a direction in the copy.
    let (wl, hl) = ((w - 1) as f64, (h - 1) as f64);
    let top = ((0.0, b[0].a), (1.0, b[0].b));
    let right = ((wl - b[1].a, 0.0), (-b[1].b, 1.0));
    let bottom = ((0.0, hl - b[2].a), (1.0, -b[2].b));
    let left = ((b[3].a, 0.0), (b[3].b, 1.0));
    let corners = [
        meet(top, left)?,
        meet(top, right)?,
        meet(bottom, right)?,
        meet(bottom, left)?,
    ];
    let turned = Turned { corners, angle };
    let (ew, eh) = turned.edge_lengths();
    if ew * eh < MIN_AREA * (w * h) as f64 {
        return None;
    }
    Some(turned)
}

/// The four sides' boundaries (top, right, bottom, left) read one way, and the turn they
/// agree on (weighted by span: a side's slope is measured to about a pixel over it);
/// `None` when a side has none or they disagree by more than [`MAX_DISAGREEMENT`] (or
/// [`DISAGREEMENT_PX`] over the shortest span).
fn sides_agree(sides: &[Option<Boundary>; 4]) -> Option<([Boundary; 4], f64)> {
    let [Some(top), Some(right), Some(bottom), Some(left)] = *sides else {
        return None;
    };
    let b = [top, right, bottom, left];
    // Each side's turn: the top edge's slope in the copy is b; the bottom's (depth counted
    // up) -b; the left edge's dx/dy is -tan(angle), the right's (depth counted leftwards)
    // the opposite.
    let turns = [
        b[0].b.atan(),
        b[1].b.atan(),
        (-b[2].b).atan(),
        (-b[3].b).atan(),
    ];
    let lo = turns.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = turns.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let shortest = b.iter().map(|s| s.span).fold(f64::INFINITY, f64::min);
    if hi - lo > MAX_DISAGREEMENT.max(DISAGREEMENT_PX / shortest) {
        return None;
    }
    let weight: f64 = b.iter().map(|s| s.span).sum();
    let angle = turns.iter().zip(&b).map(|(t, s)| t * s.span).sum::<f64>() / weight;
    Some((b, angle))
}

/// The four sides' mean misfit.
fn misfit(b: &[Boundary; 4]) -> f64 {
    b.iter().map(|s| s.misfit).sum::<f64>() / 4.0
}

type Line = ((f64, f64), (f64, f64));

/// Where two lines (a point and a direction each) cross; `None` for parallel ones.
fn meet(((px, py), (dx, dy)): Line, ((qx, qy), (ex, ey)): Line) -> Option<[f64; 2]> {
    let det = dx * ey - dy * ex;
    if det.abs() < 1e-9 {
        return None;
    }
    let t = ((qx - px) * ey - (qy - py) * ex) / det;
    Some([px + t * dx, py + t * dy])
}

/// The boundary of the fill along `side`, read two ways: at every place where the fill
/// reaches in by at least a pixel and less than [`MAX_DEPTH`] of the copy, its depth (the
/// first pixel more than [`FILL_TOLERANCE`] from the fill; and the first at half the level
/// of the two pixels inside that one); for each reading, the longest run of places
/// ([`longest_run`]) fitted to a straight line ([`straight`]). `None` for a reading whose
/// points do not lie on a straight line or whose depth hardly changes.
fn boundaries(plane: &Plane, side: Side, fill: f32) -> [Option<Boundary>; 2] {
    let (w, h) = (plane.width, plane.height);
    let (along, across) = match side {
        Side::Top | Side::Bottom => (w, h),
        Side::Left | Side::Right => (h, w),
    };
    let pixel = |s: usize, d: usize| -> f32 {
        let (x, y) = match side {
            Side::Top => (s, d),
            Side::Bottom => (s, h - 1 - d),
            Side::Left => (d, s),
            Side::Right => (w - 1 - d, s),
        };
        plane.data[y * w + x]
    };
    let cap = (across as f64 * MAX_DEPTH) as usize;
    let mut sharp: Vec<(f64, f64)> = Vec::new();
    let mut soft: Vec<(f64, f64)> = Vec::new();
    for s in 0..along {
        let off = |d: usize| (pixel(s, d) - fill).abs();
        let Some(first) = (0..cap).find(|&d| off(d) > FILL_TOLERANCE) else {
            continue;
        };
        let inside = (first + 1..(first + 3).min(across)).map(off).sum::<f32>() / 2.0;
        let half = (first..cap)
            .find(|&d| off(d) >= 0.5 * inside)
            .unwrap_or(cap);
        for (points, depth) in [(&mut sharp, first), (&mut soft, half)] {
            if depth > 0 && depth < cap {
                points.push((s as f64, depth as f64));
            }
        }
    }
    let least = MIN_POINTS.max(along / 8);
    [sharp, soft].map(|points| {
        let (misfit, on, (a, b)) = straight(longest_run(&points), least)?;
        let span = on.last()?.0 - on.first()?.0;
        (span * b.abs() >= MIN_RISE).then_some(Boundary { a, b, span, misfit })
    })
}

/// The straight boundary through `points` (place along the side, depth): the median of
/// slopes between points half the run apart and the median intercept, then least squares
/// on the points within [`INLIER`] of it (twice), then the line nearest the depth bands of
/// those points ([`band_fit`]). Returns its misfit (the mean squared distance from the
/// bands, a point off the line counting 1), the points on it and the line; `None` when
/// fewer than `least` points lie on a straight line.
#[allow(clippy::type_complexity)]
fn straight(points: &[(f64, f64)], least: usize) -> Option<(f64, Vec<(f64, f64)>, (f64, f64))> {
    if points.len() < least {
        return None;
    }
    let half = points.len() / 2;
    let mut slopes: Vec<f64> = (0..points.len() - half)
        .map(|i| {
            let (p, q) = (points[i], points[i + half]);
            (q.1 - p.1) / (q.0 - p.0)
        })
        .collect();
    let mut line = (0.0, median(&mut slopes));
    let mut offsets: Vec<f64> = points.iter().map(|p| p.1 - line.1 * p.0).collect();
    line.0 = median(&mut offsets);
    let mut on: Vec<(f64, f64)> = Vec::new();
    for _ in 0..2 {
        on = points
            .iter()
            .copied()
            .filter(|p| (p.1 - line.0 - line.1 * p.0).abs() <= INLIER)
            .collect();
        if on.len() < least {
            return None;
        }
        line = least_squares(&on);
    }
    let rms = (on
        .iter()
        .map(|p| (p.1 - line.0 - line.1 * p.0).powi(2))
        .sum::<f64>()
        / on.len() as f64)
        .sqrt();
    if rms > MAX_RMS {
        return None;
    }
    // The depth is the boundary rounded up (the first pixel past it), a staircase whose
    // partial first and last steps pull a least-squares slope towards flat (by 10 % with
    // three steps). The line wanted passes through every step's band,
    // `depth - 1 < boundary <= depth`: fit the line nearest those bands.
    // Then the points whose band the line misses by more than half a pixel are dropped
    // (dark image pixels beyond a wedge's end read as a shallow fill), twice.
    let mut line = band_fit(&on, line);
    for _ in 0..2 {
        on = points
            .iter()
            .copied()
            .filter(|p| band_distance(line, *p) <= BAND_SLACK)
            .collect();
        if on.len() < least {
            return None;
        }
        line = band_fit(&on, line);
    }
    let misfit = (on
        .iter()
        .map(|p| band_distance(line, *p).powi(2))
        .sum::<f64>()
        + (points.len() - on.len()) as f64)
        / points.len() as f64;
    Some((misfit, on, line))
}

/// The line `(a, b)` of `y = a + b x` nearest, in least squares, the bands `(y - 1, y]` of
/// `points`, from `start`: least squares on each point's nearest place in its band to the
/// line, repeated (each step lowers the sum of squared distances; it stops on a line
/// through every band, where the steps of a clean staircase pin it, or after 200 steps).
fn band_fit(points: &[(f64, f64)], start: (f64, f64)) -> (f64, f64) {
    let mut line = start;
    let mut targets: Vec<(f64, f64)> = points.to_vec();
    for _ in 0..200 {
        let mut moved = false;
        for (t, p) in targets.iter_mut().zip(points) {
            let y = (line.0 + line.1 * p.0).clamp(p.1 - 1.0, p.1);
            moved |= (y - (line.0 + line.1 * p.0)).abs() > 1e-9;
            t.1 = y;
        }
        if !moved {
            break;
        }
        line = least_squares(&targets);
    }
    line
}

/// The longest run of `points` (in order of place) with no gap of more than [`MAX_GAP`]
/// places: a wedge of fill is one run from the canvas's corner; dark image pixels past its
/// end read as scattered shallow fill.
fn longest_run(points: &[(f64, f64)]) -> &[(f64, f64)] {
    let mut best = 0..0;
    let mut start = 0;
    for i in 0..points.len() {
        if i > 0 && points[i].0 - points[i - 1].0 > MAX_GAP {
            start = i;
        }
        if i + 1 - start > best.len() {
            best = start..i + 1;
        }
    }
    &points[best]
}

/// How far the line `(a, b)` passes from the band `(depth - 1, depth]` of `p = (place,
/// depth)`.
fn band_distance((a, b): (f64, f64), p: (f64, f64)) -> f64 {
    let y = a + b * p.0;
    (y - y.clamp(p.1 - 1.0, p.1)).abs()
}

/// The median of `v` (reordered); `v` is not empty.
fn median(v: &mut [f64]) -> f64 {
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f64::total_cmp).1
}

/// The least-squares line `(a, b)` of `y = a + b x` through `points` (at least two, with
/// distinct x).
fn least_squares(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), p| (sx + p.0 / n, sy + p.1 / n));
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(sxy, sxx), p| {
        (sxy + (p.0 - mx) * (p.1 - my), sxx + (p.0 - mx).powi(2))
    });
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - b * mx, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsignal::{photo_like, turned as turn};

    /// Where [`turn`] puts the original's pixel `(x, y)`.
    fn turned_to(plane: &Plane, degrees: f64, grow: f64, (x, y): (f64, f64)) -> [f64; 2] {
        let (w, h) = (plane.width as f64, plane.height as f64);
        let (s, c) = degrees.to_radians().sin_cos();
        let (cx, cy) = ((w - 1.0) / 2.0, (h - 1.0) / 2.0);
        let (ox, oy) = (
            ((w * grow).round() - 1.0) / 2.0,
            ((h * grow).round() - 1.0) / 2.0,
        );
        let (dx, dy) = (x - cx, y - cy);
        // The inverse of `turn`'s source map: R(theta) applied to the offset.
        [c * dx + s * dy + ox, -s * dx + c * dy + oy]
    }

    #[test]
    fn finds_the_corners_and_turn_of_an_image_turned_on_its_canvas() {
        let plane = photo_like(384, 256, 3);
        for (degrees, grow, fill) in [
            (1.0, 1.0, 0.0),
            (-1.0, 1.0, 0.0),
            (1.5, 1.0, 255.0),
            (3.0, 1.0, 0.0),
            (-7.0, 1.15, 0.0),
        ] {
            let copy = turn(&plane, degrees, grow, fill);
            let t = find(&copy).unwrap_or_else(|| panic!("{degrees} deg x {grow}: not found"));
            // Counter-clockwise on screen is a negative angle with y down.
            assert!(
                (t.angle.to_degrees() + degrees).abs() < 0.03,
                "{degrees}: angle {}",
                t.angle.to_degrees()
            );
            let (w, h) = (plane.width as f64 - 1.0, plane.height as f64 - 1.0);
            for (c, p) in t
                .corners
                .iter()
                .zip([(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)])
            {
                let truth = turned_to(&plane, degrees, grow, p);
                let err = (c[0] - truth[0]).hypot(c[1] - truth[1]);
                assert!(err < 1.5, "{degrees} deg: corner {c:?} vs {truth:?}");
            }
        }
    }

    #[test]
    fn upright_images_and_dark_backgrounds_are_not_turned_canvases() {
        let plane = photo_like(256, 256, 5);
        assert_eq!(find(&plane), None);
        // Below the smallest turn: upright.
        assert_eq!(find(&turn(&plane, 0.1, 1.0, 0.0)), None);
        // An upright image padded with black on a larger canvas: a border, not a turn.
        assert_eq!(find(&turn(&plane, 0.0, 1.2, 0.0)), None);
        // A bright disc on black (a slice's body): the corners are black and the fill's
        // boundary is curved.
        let (w, h) = (256usize, 256usize);
        let disc = Plane {
            width: w,
            height: h,
            data: (0..w * h)
                .map(|i| {
                    let (x, y) = ((i % w) as f64 - 127.5, (i / w) as f64 - 127.5);
                    if x.hypot(y) < 120.0 {
                        100.0 + (i % 7) as f32
                    } else {
                        0.0
                    }
                })
                .collect(),
        };
        assert_eq!(find(&disc), None);
        // The disc turned: still curved.
        assert_eq!(find(&turn(&disc, 2.0, 1.0, 0.0)), None);
    }
}

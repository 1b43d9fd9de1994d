//! A photo of a screen taken at an angle: the displayed image is a quadrilateral inside the
//! photo, framed by the screen's bezel or the room around it. [`find`] looks for the four
//! straight edges of that frame, from the copy alone (never the key); [`Screen::rectify`]
//! maps the quadrilateral back to a rectangle, which leaves the blind search an affine map
//! to find instead of a projective one.
//!
//! The search is a gate as much as a measurement: it must not fire on ordinary images, whose
//! detection would then pay for a second search and a doubled p-value family. A frame is
//! accepted only when each of its four edges is a step that holds along most of its length,
//! with even ground outside it, and when the four edges form a quadrilateral with a visible
//! perspective (opposite edges of different lengths); a rectangle or a parallelogram is an
//! affine map, which the blind search follows without help.

use crate::mark::keystone::{homography, warp};
use crate::raster::Plane;

/// The copy is box-averaged to about this many pixels on its shorter side before the search.
const WORK_SIDE: usize = 256;
/// How far in from each border an edge of the screen is looked for (fraction of the side).
const DEPTH: f64 = 0.3;
/// Nearest an edge may come to the border (working pixels).
const MIN_INSET: usize = 5;
/// How far outside an edge its ground is read (working pixels).
const GROUND: usize = 3;
/// The step of the coarse grid over each edge's two ends (working pixels).
const COARSE: usize = 3;
/// Least mean absolute step across an edge, in the plane's units (8-bit display levels).
const MIN_STEP: f32 = 8.0;
/// The cap on each sample's step in a line's score (8-bit display levels).
const STEP_CAP: f32 = 2.0 * MIN_STEP;
/// Least share of an edge's samples with a step of at least half [`MIN_STEP`].
const MIN_AGREEMENT: f32 = 0.8;
/// Least ratio of the mean step to the roughness of the ground outside the edge.
const MIN_CONTRAST: f32 = 4.0;
/// A clean edge (a mean step of at least [`CLEAN_STEP`] and [`CLEAN_CONTRAST`] times the
/// ground's roughness) needs only this share of its samples to step: the image may meet its
/// frame in a region as dark as the frame over part of the side (a dark coat against the
/// left edge of camera.png). Measured with a frame survey on the ten hard-leak images
/// (docs/scheme.md, detection step 9): with [`MAX_PERSPECTIVE`], frames found in 103 of 120
/// photos of screens instead of 91, and 4 of 500 ordinary copies firing instead of 5.
const CLEAN_AGREEMENT: f32 = 0.6;
/// The mean step of a clean edge (8-bit display levels).
const CLEAN_STEP: f32 = 3.0 * MIN_STEP;
/// The least ratio of a clean edge's mean step to the roughness of its ground.
const CLEAN_CONTRAST: f32 = 20.0;
/// The roughness a ground is counted with at least (display levels): a digitally flat
/// border has none, and would make any step clean.
const MIN_ROUGHNESS: f32 = 0.5;
/// Least relative difference between the lengths of two opposite edges: below it the frame
/// is an affine map of a rectangle, which needs no rectification.
const MIN_PERSPECTIVE: f64 = 0.03;
/// Largest relative difference between the lengths of two opposite edges (a far edge
/// shorter by a fifth). Beyond it the four lines are more likely a content edge taken for a
/// side whose frame is invisible: on 120 photos of screens at tilts of 5 and 10 degrees,
/// the frames found right (corners within 6 px) reached 0.165, and four of the five frames
/// with a side on an MR slice's outline (corners 39-60 px off) 0.21-0.30.
const MAX_PERSPECTIVE: f64 = 0.2;
/// Least share of the copy the frame must cover.
const MIN_AREA: f64 = 0.3;

/// The quadrilateral a screen shows the image in.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Screen {
    /// Corners in the copy's continuous coordinates (pixel `i`'s centre at `i + 0.5`):
    /// top-left, top-right, bottom-right, bottom-left.
    pub corners: [[f64; 2]; 4],
    /// The size (width, height) the quadrilateral is rectified to, when it is not the
    /// mean lengths of its opposite edges: the frame search's, which rectifies it to an
    /// original's proportions ([`crate::mark::detect::DetectOptions::frame_sizes`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<[usize; 2]>,
}

impl Screen {
    /// The size of the rectangle the quadrilateral is mapped to: [`Screen::size`], else the
    /// mean lengths of its opposite edges, so that the scale stays about the copy's own.
    pub fn rectified_size(&self) -> (usize, usize) {
        if let Some([w, h]) = self.size {
            return (w, h);
        }
        let c = self.corners;
        let len = |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).hypot(a[1] - b[1]);
        let w = (len(c[0], c[1]) + len(c[3], c[2])) / 2.0;
        let h = (len(c[0], c[3]) + len(c[1], c[2])) / 2.0;
        (w.round() as usize, h.round() as usize)
    }

    /// The quadrilateral resampled (bilinearly) into an upright rectangle of
    /// [`Screen::rectified_size`].
    pub fn rectify(&self, plane: &Plane) -> Plane {
        let (w, h) = self.rectified_size();
        let (fw, fh) = (w as f64, h as f64);
        let rect = [(0.0, 0.0), (fw, 0.0), (fw, fh), (0.0, fh)];
        let quad = self.corners.map(|[x, y]| (x, y));
        warp(plane, &homography(&rect, &quad), w, h)
    }
}

/// One side of the copy seen as "along" (position on the border) and "in" (distance from the
/// border), in working pixels.
#[derive(Clone, Copy)]
enum Side {
    Top,
    Right,
    Bottom,
    Left,
}

/// An edge found on one side: its distance from the border (continuous, working pixels) at
/// the first and the last position along it.
#[derive(Clone, Copy, Debug)]
struct Edge {
    start: f64,
    end: f64,
}

/// Looks for the frame of a screen photographed at an angle in `plane` (a display plane).
/// `None` for an image with no such frame, which is every ordinary image.
pub fn find(plane: &Plane) -> Option<Screen> {
    let f = plane.width.min(plane.height).div_ceil(WORK_SIDE).max(1);
    let work = box_down(plane, f);
    let sides = [Side::Top, Side::Right, Side::Bottom, Side::Left];
    let mut edges = [Edge {
        start: 0.0,
        end: 0.0,
    }; 4];
    for (e, &side) in edges.iter_mut().zip(&sides) {
        *e = find_edge(&work, side)?;
    }
    // Each edge as a line in the copy's full-resolution coordinates: two points.
    let (ww, wh) = (work.width as f64, work.height as f64);
    let fs = f as f64;
    let line = |side: Side, e: Edge| -> [(f64, f64); 2] {
        let len = match side {
            Side::Top | Side::Bottom => ww,
            Side::Left | Side::Right => wh,
        };
        let at = |along: f64, inset: f64| -> (f64, f64) {
            let (x, y) = match side {
                Side::Top => (along, inset),
                Side::Bottom => (along, wh - inset),
                Side::Left => (inset, along),
                Side::Right => (ww - inset, along),
            };
            (x * fs, y * fs)
        };
        [at(0.5, e.start), at(len - 0.5, e.end)]
    };
    let lines: Vec<[(f64, f64); 2]> = sides
        .iter()
        .zip(&edges)
        .map(|(&s, &e)| line(s, e))
        .collect();
    // Corners: top-left = left x top, top-right = top x right, and so on.
    let corner = |a: usize, b: usize| intersect(lines[a], lines[b]);
    let corners = [corner(3, 0)?, corner(0, 1)?, corner(1, 2)?, corner(2, 3)?];
    let screen = Screen {
        corners: corners.map(|(x, y)| [x, y]),
        size: None,
    };
    plausible(&screen, plane.width as f64, plane.height as f64).then_some(screen)
}

/// A frame worth rectifying: convex, inside the copy (give or take 2 %), covering enough of
/// it, and with some perspective but not too much ([`MAX_PERSPECTIVE`]).
fn plausible(s: &Screen, w: f64, h: f64) -> bool {
    let c = s.corners;
    let inside = c
        .iter()
        .all(|&[x, y]| x >= -0.02 * w && x <= 1.02 * w && y >= -0.02 * h && y <= 1.02 * h);
    let cross = |o: [f64; 2], a: [f64; 2], b: [f64; 2]| {
        (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    };
    // Clockwise on screen (y down) gives positive cross products at every corner.
    let convex = (0..4).all(|i| cross(c[i], c[(i + 1) % 4], c[(i + 2) % 4]) > 0.0);
    let area = (0..4)
        .map(|i| c[i][0] * c[(i + 1) % 4][1] - c[(i + 1) % 4][0] * c[i][1])
        .sum::<f64>()
        / 2.0;
    let len = |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).hypot(a[1] - b[1]);
    let ratio = |a: f64, b: f64| (a - b).abs() / a.max(b);
    let perspective =
        ratio(len(c[0], c[1]), len(c[3], c[2])).max(ratio(len(c[0], c[3]), len(c[1], c[2])));
    inside
        && convex
        && area >= MIN_AREA * w * h
        && (MIN_PERSPECTIVE..=MAX_PERSPECTIVE).contains(&perspective)
}

/// The intersection of two lines given by two points each; `None` when nearly parallel.
fn intersect(a: [(f64, f64); 2], b: [(f64, f64); 2]) -> Option<(f64, f64)> {
    let (p, r) = (a[0], (a[1].0 - a[0].0, a[1].1 - a[0].1));
    let (q, s) = (b[0], (b[1].0 - b[0].0, b[1].1 - b[0].1));
    let denom = r.0 * s.1 - r.1 * s.0;
    if denom.abs() < 1e-9 * (r.0.hypot(r.1) * s.0.hypot(s.1)) {
        return None;
    }
    let t = ((q.0 - p.0) * s.1 - (q.1 - p.1) * s.0) / denom;
    Some((p.0 + t * r.0, p.1 + t * r.1))
}

/// `plane` averaged over `f x f` blocks (the last partial row and column of blocks dropped).
fn box_down(plane: &Plane, f: usize) -> Plane {
    if f == 1 {
        return plane.clone();
    }
    let (w, h) = (plane.width / f, plane.height / f);
    let mut out = vec![0f32; w * h];
    for y in 0..h * f {
        let row = &plane.data[y * plane.width..y * plane.width + w * f];
        let acc = &mut out[(y / f) * w..(y / f + 1) * w];
        for (a, block) in acc.iter_mut().zip(row.chunks_exact(f)) {
            *a += block.iter().sum::<f32>();
        }
    }
    let n = (f * f) as f32;
    out.iter_mut().for_each(|v| *v /= n);
    Plane::from_vec(w, h, out)
}

/// The strongest straight step on `side` within [`DEPTH`] of the border, if it passes the
/// tests of an edge of a screen.
fn find_edge(work: &Plane, side: Side) -> Option<Edge> {
    let (ww, wh) = (work.width, work.height);
    let (len, depth) = match side {
        Side::Top | Side::Bottom => (ww, wh),
        Side::Left | Side::Right => (wh, ww),
    };
    // The pixel at `along`, `inset` from the border.
    let px = |along: usize, inset: usize| -> f32 {
        let (x, y) = match side {
            Side::Top => (along, inset),
            Side::Bottom => (along, wh - 1 - inset),
            Side::Left => (inset, along),
            Side::Right => (ww - 1 - inset, along),
        };
        work.data[y * ww + x]
    };
    let deepest = ((depth as f64 * DEPTH) as usize).min(depth.saturating_sub(2));
    if deepest <= MIN_INSET + COARSE {
        return None;
    }
    // The middle 60 % of the side: near the corners the neighbouring edges cut in.
    let (a0, a1) = (len / 5, len - len / 5);
    let n = a1 - a0;
    // At each inset: the step into the image (inside minus outside), and how uneven the
    // ground is there (the difference from the next pixel along the side).
    let stride = deepest + 1;
    let mut step = vec![0f32; n * stride];
    let mut uneven = vec![0f32; n * stride];
    for (k, along) in (a0..a1).enumerate() {
        for inset in 1..=deepest {
            step[k * stride + inset] = px(along, inset + 1) - px(along, inset - 1);
        }
        for inset in 0..=deepest {
            uneven[k * stride + inset] = (px(along, inset) - px(along + 1, inset)).abs();
        }
    }
    let last = (len - 1) as f64;
    let inset_at = |start: f64, end: f64, along: usize| start + (end - start) * along as f64 / last;
    // A line's score: the step across it, capped so that a short stretch of strong content
    // edge cannot outweigh a frame that holds along the whole side, less the unevenness of
    // the ground 3 px outside it; per sample, tabulated once.
    let mut gain = vec![0f32; n * stride];
    for k in 0..n {
        for inset in GROUND..=deepest {
            gain[k * stride + inset] =
                step[k * stride + inset].abs().min(STEP_CAP) - uneven[k * stride + inset - GROUND];
        }
    }
    // Every `every`-th sample along the side.
    let score = |start: f64, end: f64, every: usize| -> f32 {
        let slope = (end - start) / last;
        let mut s = 0f32;
        for k in (0..n).step_by(every) {
            let inset = start + slope * (a0 + k) as f64;
            let i = ((inset + 0.5) as usize).clamp(GROUND, deepest);
            s += gain[k * stride + i];
        }
        s * every as f32 / n as f32
    };
    // A coarse grid over both ends on every other sample, then every inset around the best
    // on all of them.
    let ends: Vec<usize> = (MIN_INSET..=deepest - 1).step_by(COARSE).collect();
    // A line must score above 0: its step must outweigh the unevenness of the ground
    // outside it.
    let mut best = (0f32, MIN_INSET, MIN_INSET);
    for &s in &ends {
        for &e in &ends {
            let v = score(s as f64, e as f64, 2);
            if v > best.0 {
                best = (v, s, e);
            }
        }
    }
    if best.0 <= 0.0 {
        return None;
    }
    // The coarse score was taken on half the samples.
    best.0 = score(best.1 as f64, best.2 as f64, 1);
    let (coarse_s, coarse_e) = (best.1, best.2);
    for s in coarse_s.saturating_sub(COARSE - 1)..=(coarse_s + COARSE - 1).min(deepest - 1) {
        for e in coarse_e.saturating_sub(COARSE - 1)..=(coarse_e + COARSE - 1).min(deepest - 1) {
            if s < MIN_INSET || e < MIN_INSET {
                continue;
            }
            let v = score(s as f64, e as f64, 1);
            if v > best.0 {
                best = (v, s, e);
            }
        }
    }
    // Sub-pixel: a parabola through the step alone (no ground term, which would pull the
    // line inwards) at each end moved by one pixel either way.
    let (_, s, e) = best;
    let (s, e) = (s as f64, e as f64);
    let sharp = |start: f64, end: f64| -> f32 {
        let mut v = 0f32;
        for (k, along) in (a0..a1).enumerate() {
            let i = (inset_at(start, end, along).round() as usize).clamp(1, deepest);
            v += step[k * stride + i].abs().min(STEP_CAP);
        }
        v
    };
    let vertex = |lo: f32, mid: f32, hi: f32| -> f64 {
        let curvature = lo + hi - 2.0 * mid;
        if curvature < 0.0 {
            f64::from(((lo - hi) / (2.0 * curvature)).clamp(-0.5, 0.5))
        } else {
            0.0
        }
    };
    let mid = sharp(s, e);
    let ds = vertex(sharp(s - 1.0, e), mid, sharp(s + 1.0, e));
    let de = vertex(sharp(s, e - 1.0), mid, sharp(s, e + 1.0));
    // The tests: a strong step along most of the edge (of either sign: what the screen
    // shows may be brighter or darker than its frame), over even ground.
    let (mut strength, mut agree, mut rough) = (0f32, 0usize, 0f32);
    for (k, along) in (a0..a1).enumerate() {
        let i = (inset_at(s, e, along).round() as usize).clamp(GROUND, deepest);
        let d = step[k * stride + i].abs();
        strength += d;
        agree += usize::from(d >= MIN_STEP / 2.0);
        rough += uneven[k * stride + i - GROUND];
    }
    let (mean, rough) = (strength / n as f32, rough / n as f32);
    // A clean edge may vanish over a stretch: where the image meets its frame in a
    // region as dark (or as bright) as the frame, there is no step to see.
    let need = if mean >= CLEAN_STEP && mean >= CLEAN_CONTRAST * rough.max(MIN_ROUGHNESS) {
        CLEAN_AGREEMENT
    } else {
        MIN_AGREEMENT
    };
    let found = mean >= MIN_STEP && agree as f32 >= need * n as f32 && mean >= MIN_CONTRAST * rough;
    // The step at inset i compares i + 1 with i - 1: the edge lies at pixel i's centre.
    found.then_some(Edge {
        start: s + ds + 0.5,
        end: e + de + 0.5,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mark::keystone::warp_interleaved;

    /// Deterministic content: smooth shapes plus fine texture, 30-230.
    fn content(w: usize, h: usize) -> Plane {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let data = (0..w * h)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                let fine = (state >> 40) as f32 / (1u64 << 24) as f32 * 30.0;
                130.0 + 60.0 * (x * 0.031).sin() * (y * 0.023).cos() + fine - 15.0
            })
            .collect();
        Plane::from_vec(w, h, data)
    }

    /// `content` shown in the quadrilateral `quad` of a `size` photo whose surroundings
    /// are `room` with noise of about 2 levels.
    fn photo(content: &Plane, quad: [(f64, f64); 4], size: (usize, usize), room: f32) -> Plane {
        let (cw, ch) = (content.width as f64, content.height as f64);
        let rect = [(0.0, 0.0), (cw, 0.0), (cw, ch), (0.0, ch)];
        let to_content = homography(&quad, &rect);
        let mut data = warp_interleaved(
            &content.data,
            (content.width, content.height),
            1,
            &to_content,
            size,
            room,
        );
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for v in &mut data {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            *v += ((state >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 7.0;
        }
        Plane::from_vec(size.0, size.1, data)
    }

    /// A screen seen at an angle: the far (top) edge 6 % shorter at each end, and a small
    /// turn.
    const TILTED: [(f64, f64); 4] = [(52.0, 40.0), (462.0, 47.0), (489.0, 470.0), (22.0, 462.0)];

    /// Every corner of `frame` within 2.5 px of `quad`'s.
    fn assert_corners(frame: &Screen, quad: [(f64, f64); 4]) {
        for (c, q) in frame.corners.iter().zip(&quad) {
            let error = (c[0] - q.0).hypot(c[1] - q.1);
            assert!(error < 2.5, "corner {c:?} against {q:?}");
        }
    }

    #[test]
    fn a_screen_seen_at_an_angle_is_found_and_rectified() {
        let quad = TILTED;
        let shown = content(480, 400);
        let copy = photo(&shown, quad, (512, 512), 20.0);
        let frame = find(&copy).expect("the frame is found");
        assert_corners(&frame, quad);
        // Rectified, the copy is the content again, up to a scale per axis.
        let r = frame.rectify(&copy);
        let (sx, sy) = (
            shown.width as f64 / r.width as f64,
            shown.height as f64 / r.height as f64,
        );
        let mut diff = 0f64;
        let mut n = 0;
        for y in (r.height / 8..r.height * 7 / 8).step_by(5) {
            for x in (r.width / 8..r.width * 7 / 8).step_by(5) {
                let (u, v) = ((x as f64 + 0.5) * sx, (y as f64 + 0.5) * sy);
                let want = shown.data[v as usize * shown.width + u as usize];
                diff += f64::from((r.data[y * r.width + x] - want).abs());
                n += 1;
            }
        }
        // The fine texture (+-15) does not survive resampling; the shapes must.
        let mean = diff / f64::from(n);
        assert!(mean < 12.0, "mean difference {mean}");
        // The same frame on a bright room, the content darker than it: found as well.
        let dark = Plane::from_vec(
            shown.width,
            shown.height,
            shown.data.iter().map(|v| v * 0.5).collect(),
        );
        assert!(find(&photo(&dark, quad, (512, 512), 200.0)).is_some());
    }

    #[test]
    fn a_frame_the_image_meets_in_the_dark_over_a_stretch_is_found() {
        let quad = TILTED;
        // A dark object against the left edge of the image (a coat, an MR slice's
        // background), as dark as the room: over a third of that side there is no step.
        let dark_stretch = |mut p: Plane| {
            for y in 180..280 {
                p.data[y * p.width..y * p.width + 60].fill(20.0);
            }
            p
        };
        let shown = dark_stretch(content(480, 400));
        let copy = photo(&shown, quad, (512, 512), 20.0);
        let frame = find(&copy).expect("the frame is found");
        assert_corners(&frame, quad);
        // A faint frame (a step of about 16 levels) must hold along most of its length:
        // found whole, refused with the same dark stretch.
        let plain = content(480, 400);
        let faint = |band: bool| {
            let data = plain
                .data
                .iter()
                .map(|v| 36.0 + (v - 130.0) / 10.0)
                .collect();
            let faint = Plane::from_vec(480, 400, data);
            let shown = if band { dark_stretch(faint) } else { faint };
            photo(&shown, quad, (512, 512), 20.0)
        };
        assert!(find(&faint(false)).is_some(), "a faint frame, whole");
        assert_eq!(
            find(&faint(true)),
            None,
            "a faint frame, vanishing over a third"
        );
    }

    #[test]
    fn ordinary_images_and_affine_frames_show_no_screen() {
        let shown = content(512, 512);
        assert_eq!(find(&shown), None, "an image with no frame");
        // A screenshot or a letterboxed image: the content in an upright frame.
        let upright = [(40.0, 60.0), (472.0, 60.0), (472.0, 450.0), (40.0, 450.0)];
        assert_eq!(find(&photo(&shown, upright, (512, 512), 20.0)), None);
        // Turned by 3 degrees: a rotation is affine, which the blind search follows.
        let (s, c) = 3f64.to_radians().sin_cos();
        let turned = upright.map(|(x, y)| {
            let (x, y) = (x - 256.0, y - 256.0);
            (c * x - s * y + 256.0, s * x + c * y + 256.0)
        });
        assert_eq!(find(&photo(&shown, turned, (512, 512), 20.0)), None);
        // Opposite edges 37 % apart: more perspective than a screen photographed at an
        // angle shows (`TILTED`, whose top edge is 12 % shorter, is found above).
        let steep = [(110.0, 40.0), (404.0, 47.0), (489.0, 470.0), (22.0, 462.0)];
        assert_eq!(find(&photo(&shown, steep, (512, 512), 20.0)), None);
        // A frame that only covers a corner of the copy is not a screen's.
        let small = [(20.0, 20.0), (200.0, 26.0), (196.0, 180.0), (24.0, 176.0)];
        assert_eq!(find(&photo(&shown, small, (512, 512), 20.0)), None);
    }
}

//! Keystones: the perspective of a photo of a screen taken at an angle, where the screen's
//! far edge looks shorter than its near edge. [`Detector::detect_keystones`] undoes a set of
//! them before the blind search, which follows affine maps only ([`Trapezoid`]).
//!
//! [`Detector::detect_keystones`]: crate::mark::detect::Detector::detect_keystones

use crate::raster::Plane;

/// The 8 coefficients of the homography mapping `from[i]` to `to[i]` (`h33 = 1`), by
/// Gaussian elimination with partial pivoting on the 8 x 8 system.
pub fn homography(from: &[(f64, f64); 4], to: &[(f64, f64); 4]) -> [f64; 8] {
    let mut a = [[0f64; 9]; 8];
    for i in 0..4 {
        let ((x, y), (u, v)) = (from[i], to[i]);
        a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
        a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
    }
    for col in 0..8 {
        let piv = (col..8)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .expect("non-empty");
        a.swap(col, piv);
        let pivot_row = a[col];
        for (row, r) in a.iter_mut().enumerate() {
            if row != col {
                let f = r[col] / pivot_row[col];
                for (v, p) in r.iter_mut().zip(&pivot_row).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    std::array::from_fn(|i| a[i][8] / a[i][i])
}

/// The point `(x, y)` mapped by the homography `h` ([`homography`]).
pub fn apply(h: &[f64; 8], x: f64, y: f64) -> (f64, f64) {
    let d = h[6] * x + h[7] * y + 1.0;
    (
        (h[0] * x + h[1] * y + h[2]) / d,
        (h[3] * x + h[4] * y + h[5]) / d,
    )
}

/// The edge of a copy that a keystone shortens (the screen's edge farther from the camera).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edge {
    /// The top edge.
    Top,
    /// The right edge.
    Right,
    /// The bottom edge.
    Bottom,
    /// The left edge.
    Left,
}

impl Edge {
    /// Every edge, clockwise from the top.
    pub const ALL: [Edge; 4] = [Edge::Top, Edge::Right, Edge::Bottom, Edge::Left];
}

/// A keystone: the copy's `far_edge` is shorter than the opposite edge by `shrink` of its
/// length at each end (a camera tilted towards the opposite edge).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trapezoid {
    /// The shortened edge.
    pub far_edge: Edge,
    /// How much shorter at each end, as a fraction of the edge's length.
    pub shrink: f64,
}

impl Trapezoid {
    /// `plane` with this keystone undone: each output pixel is resampled (bilinearly)
    /// where the trapezoid shows it; 0 outside the plane, which whitening treats as flat.
    /// The trapezoid is a camera's view of the tilted rectangle: the far edge shorter by
    /// `shrink` at each end, and the depth between the edges seen at their mean scale
    /// (`1 - shrink` of the near edge's), about the centre. (With the depth kept whole, the
    /// trapezoid was the view of a rectangle 1-10 % longer across the edges than the plane,
    /// which the affine search then had to find as an aspect change: on photos of a screen
    /// drawn as a camera sees them, the keystone search read 26 of 36 512-px photos at seeds
    /// 1-3 that way, and 30 of 36 with it.)
    pub fn undo(&self, plane: &Plane) -> Plane {
        let (w, h) = (plane.width, plane.height);
        let (fw, fh) = (w as f64, h as f64);
        let rect = [(0.0, 0.0), (fw, 0.0), (fw, fh), (0.0, fh)];
        let mut quad = rect;
        let a = self.far_edge as usize;
        let b = (a + 1) % Edge::ALL.len();
        let (pa, pb) = (rect[a], rect[b]);
        quad[a] = (
            pa.0 + (pb.0 - pa.0) * self.shrink,
            pa.1 + (pb.1 - pa.1) * self.shrink,
        );
        quad[b] = (
            pb.0 + (pa.0 - pb.0) * self.shrink,
            pb.1 + (pa.1 - pb.1) * self.shrink,
        );
        let depth = 1.0 - self.shrink;
        for q in &mut quad {
            if a.is_multiple_of(2) {
                q.1 = fh / 2.0 + (q.1 - fh / 2.0) * depth;
            } else {
                q.0 = fw / 2.0 + (q.0 - fw / 2.0) * depth;
            }
        }
        warp(plane, &homography(&rect, &quad), w, h)
    }
}

/// A `width x height` plane whose pixel `(x, y)` is `plane` resampled (bilinearly) at the
/// point the homography `h` maps `(x + 0.5, y + 0.5)` to (continuous coordinates, pixel
/// `i`'s centre at `i + 0.5`); 0 where that point is outside `plane`.
pub fn warp(plane: &Plane, h: &[f64; 8], width: usize, height: usize) -> Plane {
    let size = (plane.width, plane.height);
    let data = warp_interleaved(&plane.data, size, 1, h, (width, height), 0.0);
    Plane::from_vec(width, height, data)
}

/// [`warp`] for an image of `size` (width, height) with `channels` interleaved channels
/// in `data`: every channel of an output pixel is resampled at the same point; `fill`
/// where that point is outside the image.
pub fn warp_interleaved(
    data: &[f32],
    (pw, ph): (usize, usize),
    channels: usize,
    h: &[f64; 8],
    (width, height): (usize, usize),
    fill: f32,
) -> Vec<f32> {
    let c = channels;
    let mut out = vec![fill; width * height * c];
    for (y, row) in out.chunks_exact_mut(width * c).enumerate() {
        for (x, o) in row.chunks_exact_mut(c).enumerate() {
            let (px, py) = apply(h, x as f64 + 0.5, y as f64 + 0.5);
            let (px, py) = (px - 0.5, py - 0.5);
            if px < 0.0 || py < 0.0 || px > (pw - 1) as f64 || py > (ph - 1) as f64 {
                continue;
            }
            let (x0, y0) = (px as usize, py as usize);
            let (x1, y1) = ((x0 + 1).min(pw - 1), (y0 + 1).min(ph - 1));
            let (tx, ty) = ((px - x0 as f64) as f32, (py - y0 as f64) as f32);
            for (k, o) in o.iter_mut().enumerate() {
                let p = |xx: usize, yy: usize| data[(yy * pw + xx) * c + k];
                let top = p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx;
                let bottom = p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx;
                *o = top * (1.0 - ty) + bottom * ty;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_homography_maps_its_four_points_and_undoes_its_inverse() {
        let from = [(0.0, 0.0), (512.0, 0.0), (512.0, 384.0), (0.0, 384.0)];
        let to = [(20.0, 15.0), (490.0, 31.0), (470.0, 350.0), (35.0, 372.0)];
        let (h, back) = (homography(&from, &to), homography(&to, &from));
        for (f, t) in from.iter().zip(&to) {
            let p = apply(&h, f.0, f.1);
            assert!(
                (p.0 - t.0).abs() < 1e-9 && (p.1 - t.1).abs() < 1e-9,
                "{p:?} {t:?}"
            );
        }
        let p = apply(&h, 100.25, 200.5);
        let q = apply(&back, p.0, p.1);
        assert!(
            (q.0 - 100.25).abs() < 1e-9 && (q.1 - 200.5).abs() < 1e-9,
            "{q:?}"
        );
    }

    #[test]
    fn undoing_a_keystone_restores_the_plane_it_was_applied_to() {
        // A smooth plane seen through a keystone (far top edge 5 % shorter at each end, the
        // height seen at 0.95 of the bottom edge's scale), then undone: the centre matches
        // again; undoing the wrong edge does not.
        let (w, h) = (160, 120);
        let f = |x: f64, y: f64| (x * 0.09).sin() * 40.0 + (y * 0.07).cos() * 30.0 + 100.0;
        let original = Plane::from_vec(
            w,
            h,
            (0..w * h)
                .map(|i| f((i % w) as f64 + 0.5, (i / w) as f64 + 0.5) as f32)
                .collect(),
        );
        // The photo: at each photo pixel, the original point the trapezoid shows there.
        let rect = [(0.0, 0.0), (160.0, 0.0), (160.0, 120.0), (0.0, 120.0)];
        let quad = [(8.0, 3.0), (152.0, 3.0), (160.0, 117.0), (0.0, 117.0)];
        let to_original = homography(&quad, &rect);
        let photo = Plane::from_vec(
            w,
            h,
            (0..w * h)
                .map(|i| {
                    let (u, v) = apply(&to_original, (i % w) as f64 + 0.5, (i / w) as f64 + 0.5);
                    f(u, v) as f32
                })
                .collect(),
        );
        let error = |p: &Plane| {
            let mut worst = 0f32;
            for y in 30..90 {
                for x in 40..120 {
                    worst = worst.max((p.data[y * w + x] - original.data[y * w + x]).abs());
                }
            }
            worst
        };
        let undone = |far_edge| {
            Trapezoid {
                far_edge,
                shrink: 0.05,
            }
            .undo(&photo)
        };
        let own_edge = error(&undone(Edge::Top));
        assert!(own_edge < 1.5, "{own_edge}");
        assert!(error(&undone(Edge::Bottom)) > 5.0);
        assert!(error(&photo) > 5.0);
    }
}

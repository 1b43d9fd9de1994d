//! Where in a copy the mark is (issue 13's evidence report): the copy is cut into blocks of
//! about one tile of the original, and in each block the whitened copy is correlated with
//! the key's pattern placed as the detection registered it. A block's z is calibrated on
//! the same image against wrong placements of the pattern, so a block without the mark
//! scores about N(0, 1) whatever the image's texture.
//!
//! This is a picture for a reader, not a test: the claim and its p-value are the detector's
//! (one statistic over the whole copy). The map shows which parts of the copy carry the
//! mark: all of it for a copy as released, the released part of a collage, nothing where
//! another image was pasted in.

use crate::mark::content::Registration;
use crate::mark::detect::Detection;
use crate::mark::fold::whiten;
use crate::mark::pattern::{KeyPatterns, TILE};
use crate::raster::Plane;

/// Blocks across the longer side of the map at most.
const MAX_BLOCKS_ACROSS: usize = 24;
/// Smallest block side, copy px.
const MIN_BLOCK: usize = 32;
/// Wrong placements of the pattern (tile offsets, px) that calibrate the null. Odd and far
/// from each other and from zero, so each meets the copy's mark chips out of phase.
const NULL_OFFSETS: [(usize, usize); 6] =
    [(37, 71), (83, 19), (61, 101), (17, 45), (99, 89), (51, 7)];

/// Local mark strength over a copy.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StrengthMap {
    /// Block side, px of the examined plane.
    pub block: usize,
    /// Blocks across.
    pub cols: usize,
    /// Blocks down.
    pub rows: usize,
    /// Calibrated z of each block, row-major; `None` where the block has no texture left
    /// after whitening (flat), so no statistic.
    pub z: Vec<Option<f32>>,
    /// The calibration: RMS of the uncalibrated block statistic at the wrong placements
    /// (about 1 when neighbouring whitened pixels were independent).
    pub null_rms: f32,
}

impl StrengthMap {
    /// Share of the blocks with a statistic whose z is at least `z`.
    pub fn share_at_least(&self, z: f32) -> f64 {
        let live: Vec<f32> = self.z.iter().flatten().copied().collect();
        if live.is_empty() {
            return 0.0;
        }
        live.iter().filter(|&&v| v >= z).count() as f64 / live.len() as f64
    }
}

/// The map of local mark strength of `plane` (the plane the detection examined) under
/// detection `d`, with the pattern placed at `d`'s best geometry: the full pattern when the
/// payload was read, else the sync pattern. Meaningful only when a mark was found (by the
/// detection itself, or by the informed check at that geometry).
pub fn strength_map(patterns: &KeyPatterns, plane: &Plane, d: &Detection) -> StrengthMap {
    let template = match d.payload {
        Some(p) => patterns.tile(p, d.variant),
        None => patterns.sync_tiles[d.variant].clone(),
    };
    let sign = if d.transform.inverted { -1.0 } else { 1.0 };
    map(
        &whiten(plane),
        &template,
        &d.registration,
        sign,
        d.transform.scale,
    )
}

fn map(white: &Plane, template: &[f32], reg: &Registration, sign: f32, scale: f64) -> StrengthMap {
    let (w, h) = (white.width, white.height);
    let per_tile = (TILE as f64 * scale).round() as usize;
    let block = per_tile
        .max(MIN_BLOCK)
        .max(w.max(h).div_ceil(MAX_BLOCKS_ACROSS));
    let (cols, rows) = (w.div_ceil(block), h.div_ceil(block));
    let k = 1 + NULL_OFFSETS.len();
    // Per block and placement: sum of w t, and sum of (w t)^2.
    let mut s = vec![0f64; cols * rows * k];
    let mut q = vec![0f64; cols * rows * k];
    let mask = TILE - 1;
    let [a11, a12, a21, a22] = reg.linear;
    // Keeps the coordinates positive so that truncation floors.
    let off = (TILE * 1024) as f64;
    let mut offsets = vec![(0usize, 0usize)];
    offsets.extend_from_slice(&NULL_OFFSETS);
    let mut acc_s = vec![0f64; k];
    let mut acc_q = vec![0f64; k];
    for by in 0..rows {
        for bx in 0..cols {
            acc_s.iter_mut().for_each(|v| *v = 0.0);
            acc_q.iter_mut().for_each(|v| *v = 0.0);
            let (x0, x1) = (bx * block, ((bx + 1) * block).min(w));
            for y in by * block..((by + 1) * block).min(h) {
                let yf = y as f64;
                let row = &white.data[y * w..(y + 1) * w];
                let mut u = a11 * x0 as f64 + a12 * yf + reg.offset[0] + off + 0.5;
                let mut v = a21 * x0 as f64 + a22 * yf + reg.offset[1] + off + 0.5;
                for &val in &row[x0..x1] {
                    if val != 0.0 {
                        let (ui, vi) = (u as usize, v as usize);
                        for (j, &(dx, dy)) in offsets.iter().enumerate() {
                            let t = template[((vi + dy) & mask) * TILE + ((ui + dx) & mask)];
                            let p = f64::from(val * t);
                            acc_s[j] += p;
                            acc_q[j] += p * p;
                        }
                    }
                    u += a11;
                    v += a21;
                }
            }
            let b = (by * cols + bx) * k;
            s[b..b + k].copy_from_slice(&acc_s);
            q[b..b + k].copy_from_slice(&acc_q);
        }
    }
    let raw = |i: usize| (q[i] > 0.0).then(|| s[i] / q[i].sqrt());
    let nulls: Vec<f64> = (0..cols * rows)
        .flat_map(|b| (1..k).filter_map(move |j| raw(b * k + j)))
        .collect();
    // Too few blocks to calibrate on: leave the statistic as it is.
    let null_rms = if nulls.len() >= 12 {
        (nulls.iter().map(|v| v * v).sum::<f64>() / nulls.len() as f64).sqrt()
    } else {
        1.0
    };
    let null_rms = if null_rms > 0.0 { null_rms } else { 1.0 };
    StrengthMap {
        block,
        cols,
        rows,
        z: (0..cols * rows)
            .map(|b| raw(b * k).map(|v| (f64::from(sign) * v / null_rms) as f32))
            .collect(),
        null_rms: null_rms as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;
    use crate::mark::detect::{DetectOptions, Detector};
    use crate::testsignal::{marked, photo_like};

    /// A 512 x 512 photo-like image stamped, then its right half replaced by another
    /// (unmarked) image: the map is strong on the left and null on the right.
    #[test]
    fn the_map_shows_where_the_mark_is_and_is_null_elsewhere() {
        let key = SecretKey::from_bytes([7; 32]);
        let original = photo_like(512, 512, 3);
        let det = Detector::new(&key);
        let stamped = marked(&original, det.patterns(), 0x0123_4567_89ab_cdef);
        let other = photo_like(512, 512, 11);
        let mut collage = stamped.clone();
        for y in 0..512 {
            for x in 256..512 {
                collage.data[y * 512 + x] = other.data[y * 512 + x];
            }
        }
        let d = det.detect(&collage, &DetectOptions::default()).unwrap();
        assert!(
            d.marked,
            "half a stamped image still carries the mark (z {})",
            d.z
        );
        let m = strength_map(det.patterns(), &collage, &d);
        let half = |right: bool| -> Vec<f32> {
            (0..m.rows)
                .flat_map(|r| (0..m.cols).map(move |c| (r, c)))
                .filter(|&(_, c)| ((c * m.block + m.block / 2) >= 256) == right)
                .filter_map(|(r, c)| m.z[r * m.cols + c])
                .collect()
        };
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        let (left, right) = (half(false), half(true));
        assert!(
            mean(&left) > 3.0,
            "marked half: mean block z {}",
            mean(&left)
        );
        assert!(
            mean(&right).abs() < 1.5,
            "pasted half: mean block z {}",
            mean(&right)
        );
        assert!(
            left.iter().all(|&z| z > 0.0),
            "every marked block is positive: {left:?}"
        );
        // Off the tile grid and turned a quarter: the registration still places the pattern.
        let (x0, y0, cw, ch) = (37, 53, 400, 300);
        let mut turned = vec![0f32; cw * ch];
        for y in 0..cw {
            for x in 0..ch {
                // out(x, y) = crop(y, W - 1 - x), crop W = cw.
                turned[y * ch + x] = stamped.data[(y0 + x) * 512 + x0 + (cw - 1 - y)];
            }
        }
        let turned = Plane::from_vec(ch, cw, turned);
        let d = det.detect(&turned, &DetectOptions::default()).unwrap();
        let m = strength_map(det.patterns(), &turned, &d);
        assert!(
            m.z.iter().flatten().all(|&z| z > 3.0),
            "every block of a turned crop carries the mark: {:?}",
            m.z
        );
        // On the unmarked original, placed wherever the search ranked best, the map is null.
        let d0 = det.detect(&original, &DetectOptions::default()).unwrap();
        assert!(!d0.marked);
        let m0 = strength_map(det.patterns(), &original, &d0);
        let z0: Vec<f32> = m0.z.iter().flatten().copied().collect();
        // The placement is the one that maximised the whole copy's statistic (d0.z, the
        // best of the search's family), and the blocks share that selection: their mean is
        // about d0.z / sqrt(blocks), not 0, and no more than that.
        let selected = d0.z as f32 / (z0.len() as f32).sqrt();
        assert!(
            (mean(&z0) - selected).abs() < 1.0,
            "unmarked: mean block z {} (the selection explains {selected})",
            mean(&z0)
        );
        assert!(m0.share_at_least(3.0) < 0.1, "unmarked: {z0:?}");
    }
}

//! How the mark is laid over the frames of a multi-frame image (design.md section 4).
//!
//! Frames at least one tile (128 px) a side are each marked with the whole mark; the
//! detector examines the mean of all frames (the mark is the same in every frame, the
//! anatomy is not). Smaller frames are laid out as a montage (in frame order, on the grid
//! with the fewest empty cells, then the squarest) that carries one mark across the frames:
//! the file is then traceable, a single exported frame is not.

use crate::error::{Error, Result};
use crate::mark::embed::MIN_SIDE;
use crate::raster::Plane;

/// How the mark is laid over the frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Every frame carries the whole mark.
    PerFrame,
    /// Frames too small on their own share one mark, as a montage of `cols x rows` frames.
    Montage {
        /// Frames across.
        cols: usize,
        /// Frames down.
        rows: usize,
    },
}

impl Layout {
    /// The layout for `frames` frames of `width x height` px.
    ///
    /// # Errors
    /// [`Error::TooSmall`] when even a montage of all frames is smaller than one tile.
    pub fn choose(frames: usize, width: usize, height: usize) -> Result<Layout> {
        if height >= MIN_SIDE && width >= MIN_SIDE {
            return Ok(Layout::PerFrame);
        }
        // The grid with the fewest empty cells (they carry no mark and waste none of the
        // budget), then the squarest, among those at least one tile on each side.
        let best = (1..=frames)
            .map(|rows| (frames.div_ceil(rows), rows))
            .filter(|&(c, r)| c * width >= MIN_SIDE && r * height >= MIN_SIDE)
            .min_by_key(|&(c, r)| (c * r - frames, (c * width).abs_diff(r * height)));
        if let (Some((cols, rows)), true) = (best, frames > 1) {
            Ok(Layout::Montage { cols, rows })
        } else {
            Err(Error::TooSmall {
                path: None,
                width,
                height,
                min: MIN_SIDE,
                what: if frames > 1 {
                    "carry a mark (nor does a montage of all its frames)"
                } else {
                    "carry a mark"
                },
            })
        }
    }

    /// The planes the mark is embedded in: the frames themselves, or one montage of them.
    ///
    /// # Panics
    /// When `frames` is empty or the frames differ in size.
    pub fn mark_planes(self, frames: Vec<Plane>) -> Vec<Plane> {
        match self {
            Layout::PerFrame => frames,
            Layout::Montage { cols, rows } => vec![montage(&frames, cols, rows)],
        }
    }

    /// The plane the detector examines: the mean of the frames, or the montage.
    ///
    /// # Panics
    /// When `frames` is empty or the frames differ in size.
    pub fn detection_plane(self, frames: Vec<Plane>) -> Plane {
        match self {
            Layout::Montage { cols, rows } => montage(&frames, cols, rows),
            Layout::PerFrame if frames.len() == 1 => frames.into_iter().next().expect("one frame"),
            Layout::PerFrame => mean(&frames),
        }
    }

    /// [`Layout::detection_plane`] of the planes [`Layout::mark_planes`] gave (marked or
    /// not), without copying a single plane.
    ///
    /// # Panics
    /// When `planes` is empty or the planes differ in size.
    pub fn detection_view(planes: &[Plane]) -> std::borrow::Cow<'_, Plane> {
        match planes {
            [one] => std::borrow::Cow::Borrowed(one),
            many => std::borrow::Cow::Owned(mean(many)),
        }
    }

    /// The per-frame deltas of the deltas embedded in [`Layout::mark_planes`]'s planes.
    ///
    /// # Panics
    /// When the deltas do not match the layout.
    pub fn frame_deltas(
        self,
        deltas: Vec<Vec<i16>>,
        frames: usize,
        width: usize,
        height: usize,
    ) -> Vec<Vec<i16>> {
        match self {
            Layout::PerFrame => {
                assert_eq!(deltas.len(), frames, "one delta per frame");
                deltas
            }
            Layout::Montage { cols, .. } => {
                assert_eq!(deltas.len(), 1, "one montage delta");
                unmontage(&deltas[0], frames, width, height, cols)
            }
        }
    }

    /// A short name for reports: "per_frame" or "montage CxR".
    pub fn name(self) -> String {
        match self {
            Layout::PerFrame => "per_frame".into(),
            Layout::Montage { cols, rows } => format!("montage {cols}x{rows}"),
        }
    }
}

/// The mean of equally sized planes.
fn mean(frames: &[Plane]) -> Plane {
    let (w, h) = (frames[0].width, frames[0].height);
    let n = frames.len() as f32;
    let mut mean = vec![0f32; w * h];
    for p in frames {
        mean.iter_mut().zip(&p.data).for_each(|(m, &v)| *m += v / n);
    }
    Plane::from_vec(w, h, mean)
}

/// Frames in a `cols x rows` grid, in order; empty cells hold the mean level.
fn montage(frames: &[Plane], cols: usize, rows: usize) -> Plane {
    let (fw, fh) = (frames[0].width, frames[0].height);
    let total: f64 = frames
        .iter()
        .flat_map(|p| p.data.iter())
        .map(|&v| f64::from(v))
        .sum();
    let mean = (total / (frames.len() * fw * fh) as f64) as f32;
    let w = cols * fw;
    let mut data = vec![mean; w * rows * fh];
    for (k, p) in frames.iter().enumerate() {
        let (gx, gy) = (k % cols, k / cols);
        for y in 0..fh {
            let dst = (gy * fh + y) * w + gx * fw;
            data[dst..dst + fw].copy_from_slice(&p.data[y * fw..(y + 1) * fw]);
        }
    }
    Plane::from_vec(w, rows * fh, data)
}

/// The per-frame parts of a montage delta.
fn unmontage(delta: &[i16], frames: usize, fw: usize, fh: usize, cols: usize) -> Vec<Vec<i16>> {
    let w = cols * fw;
    (0..frames)
        .map(|k| {
            let (gx, gy) = (k % cols, k / cols);
            let mut d = Vec::with_capacity(fw * fh);
            for y in 0..fh {
                let src = (gy * fh + y) * w + gx * fw;
                d.extend_from_slice(&delta[src..src + fw]);
            }
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn montage_round_trips() {
        let frames: Vec<Plane> = (0..5)
            .map(|k| Plane::from_vec(3, 2, (0..6).map(|i| (k * 10 + i) as f32).collect()))
            .collect();
        let m = montage(&frames, 3, 2);
        assert_eq!((m.width, m.height), (9, 4));
        let d: Vec<i16> = m.data.iter().map(|&v| v as i16).collect();
        let back = unmontage(&d, 5, 3, 2, 3);
        for (k, f) in back.iter().enumerate() {
            assert_eq!(
                f,
                &frames[k].data.iter().map(|&v| v as i16).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn small_frames_share_a_montage_and_large_ones_do_not() {
        assert_eq!(Layout::choose(3, 256, 256).unwrap(), Layout::PerFrame);
        // emri_small: 10 frames of 64 x 64 px -> the 5 x 2 grid (no empty cell).
        assert_eq!(
            Layout::choose(10, 64, 64).unwrap(),
            Layout::Montage { cols: 5, rows: 2 }
        );
        assert!(matches!(
            Layout::choose(1, 64, 64),
            Err(Error::TooSmall { .. })
        ));
    }
}

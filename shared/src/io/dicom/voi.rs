//! The display transform: stored values through the modality rescale and the VOI window to
//! 8-bit display levels (MONOCHROME1 inverted; RGB as luminance), and viewers' 8-bit exports.

use super::{DicomImage, Photometric};
use crate::raster::{Plane, Raster, Samples};

/// A linear VOI window in modality units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Window Center.
    pub center: f64,
    /// Window Width (at least 1).
    pub width: f64,
}

impl Window {
    /// The 8-bit display level (0-255) of a modality value through this linear window
    /// (PS3.3 C.11.2.1.2: `((x - (c - 0.5)) / (w - 1) + 0.5)`, clipped).
    #[inline]
    pub fn level(&self, x: f64) -> f64 {
        ((x - (self.center - 0.5)) / (self.width - 1.0).max(1.0) + 0.5).clamp(0.0, 1.0) * 255.0
    }
}

impl DicomImage {
    /// Display levels (0-255) per stored unit inside the window: `255 * slope / (W - 1)`,
    /// negative for MONOCHROME1; for RGB, `255 / (2^bits - 1)`.
    pub fn display_per_stored(&self) -> f64 {
        match self.photometric {
            Photometric::Rgb => 255.0 / f64::from((1u32 << self.bits_stored) - 1),
            p => {
                let g = 255.0 * self.rescale.0 / (self.window.width - 1.0).max(1.0);
                if p == Photometric::Monochrome1 { -g } else { g }
            }
        }
    }

    pub(super) fn frame_len(&self) -> usize {
        self.rows * self.cols * self.spp
    }

    /// One frame in 8-bit display units through `window` (the image's own unless given),
    /// inverted for MONOCHROME1 when `honour_mono1`; RGB as luminance.
    pub fn display_frame(&self, frame: usize, window: Option<Window>, honour_mono1: bool) -> Plane {
        let w = window.unwrap_or(self.window);
        let (slope, intercept) = self.rescale;
        let s = &self.stored[frame * self.frame_len()..(frame + 1) * self.frame_len()];
        let data: Vec<f32> = match self.photometric {
            Photometric::Rgb => {
                let k = self.display_per_stored() as f32;
                s.chunks_exact(3)
                    .map(|p| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) * k)
                    .collect()
            }
            p => {
                let invert = honour_mono1 && p == Photometric::Monochrome1;
                s.iter()
                    .map(|&v| {
                        let d = w.level(f64::from(v) * slope + intercept) as f32;
                        if invert { 255.0 - d } else { d }
                    })
                    .collect()
            }
        };
        Plane::from_vec(self.cols, self.rows, data)
    }

    /// An 8-bit export of one frame, as a viewer would save it: grey through `window` (the
    /// image's own unless given), inverted for MONOCHROME1 when `honour_mono1`; RGB as is.
    pub fn export_8bit(&self, frame: usize, window: Option<Window>, honour_mono1: bool) -> Raster {
        if self.photometric == Photometric::Rgb {
            let k = self.display_per_stored();
            let s = &self.stored[frame * self.frame_len()..(frame + 1) * self.frame_len()];
            return Raster {
                width: self.cols,
                height: self.rows,
                channels: 3,
                samples: Samples::U8(
                    s.iter()
                        .map(|&v| (f64::from(v) * k).round().clamp(0.0, 255.0) as u8)
                        .collect(),
                ),
            };
        }
        let p = self.display_frame(frame, window, honour_mono1);
        Raster {
            width: self.cols,
            height: self.rows,
            channels: 1,
            samples: Samples::U8(
                p.data
                    .iter()
                    .map(|&v| v.round().clamp(0.0, 255.0) as u8)
                    .collect(),
            ),
        }
    }
}

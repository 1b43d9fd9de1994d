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

/// Where a frame's window came from, as a viewer looks for it (PS3.3 C.7.6.16: a
/// functional group per frame overrides the shared one, which overrides the top level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSource {
    /// Per-Frame Functional Groups Sequence > Frame VOI LUT Sequence.
    PerFrame,
    /// Shared Functional Groups Sequence > Frame VOI LUT Sequence.
    Shared,
    /// Window Center/Width at the top level of the data set.
    TopLevel,
    /// None declared: the frames' value range.
    ValueRange,
}

impl WindowSource {
    /// In words, for reports.
    pub fn name(self) -> &'static str {
        match self {
            WindowSource::PerFrame => "per-frame functional group",
            WindowSource::Shared => "shared functional group",
            WindowSource::TopLevel => "top level",
            WindowSource::ValueRange => "value range (none declared)",
        }
    }
}

/// How one frame is displayed: its modality rescale and every window the file declares for
/// it (several at the top level are common: soft tissue, bone, lung).
#[derive(Clone, Debug, PartialEq)]
pub struct FrameDisplay {
    /// Rescale Slope, Rescale Intercept (from the Pixel Value Transformation Sequence of the
    /// frame's functional groups, or the top level).
    pub rescale: (f64, f64),
    /// The windows declared for the frame, in file order (never empty: the value range when
    /// none is declared).
    pub windows: Vec<Window>,
    /// Where the windows came from.
    pub source: WindowSource,
}

impl FrameDisplay {
    /// The window the mark is computed in: the narrowest one. One stored step is the most
    /// display levels there, so the PSNR a mark reaches in it is the lowest of all the
    /// windows (a wider window shows the same change smaller, and a window outside the
    /// narrow one's range shows it clipped or not at all).
    pub fn marking_window(&self) -> Window {
        self.windows
            .iter()
            .copied()
            .min_by(|a, b| a.width.total_cmp(&b.width))
            .expect("at least one window")
    }
}

impl DicomImage {
    /// Display levels (0-255) per stored unit inside `frame`'s marking window:
    /// `255 * slope / (W - 1)`, negative for MONOCHROME1; for RGB, `255 / (2^bits - 1)`.
    pub fn display_per_stored(&self, frame: usize) -> f64 {
        match self.photometric {
            Photometric::Rgb => 255.0 / f64::from((1u32 << self.bits_stored) - 1),
            _ => {
                let d = &self.display[frame];
                let g = 255.0 * d.rescale.0 / (d.marking_window().width - 1.0).max(1.0);
                if self.shows_inverted() { -g } else { g }
            }
        }
    }

    /// Whether viewers show low values bright: MONOCHROME1, or a Presentation LUT Shape of
    /// INVERSE (which MONOCHROME1 files may also declare: one inversion, not two).
    pub fn shows_inverted(&self) -> bool {
        self.photometric == Photometric::Monochrome1 || self.inverse_presentation
    }

    /// How `frame` is displayed.
    pub fn frame_display(&self, frame: usize) -> &FrameDisplay {
        &self.display[frame]
    }

    pub(super) fn frame_len(&self) -> usize {
        self.rows * self.cols * self.spp
    }

    /// One frame in 8-bit display units through `window` (the frame's marking window unless
    /// given), inverted for MONOCHROME1 or Presentation LUT Shape INVERSE when
    /// `honour_mono1`; RGB as luminance.
    pub fn display_frame(&self, frame: usize, window: Option<Window>, honour_mono1: bool) -> Plane {
        let d = &self.display[frame];
        let w = window.unwrap_or_else(|| d.marking_window());
        let (slope, intercept) = d.rescale;
        let s = &self.stored[frame * self.frame_len()..(frame + 1) * self.frame_len()];
        let data: Vec<f32> = match self.photometric {
            Photometric::Rgb => {
                let k = self.display_per_stored(frame) as f32;
                s.chunks_exact(3)
                    .map(|p| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) * k)
                    .collect()
            }
            _ => {
                let invert = honour_mono1 && self.shows_inverted();
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
            let k = self.display_per_stored(frame);
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

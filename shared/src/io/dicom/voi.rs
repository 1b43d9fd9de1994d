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
    /// A VOI LUT Sequence at the top level (reported by the span of values it maps).
    VoiLut,
}

impl WindowSource {
    /// In words, for reports.
    pub fn name(self) -> &'static str {
        match self {
            WindowSource::PerFrame => "per-frame functional group",
            WindowSource::Shared => "shared functional group",
            WindowSource::TopLevel => "top level",
            WindowSource::ValueRange => "value range (none declared)",
            WindowSource::VoiLut => "VOI LUT Sequence (its span shown)",
        }
    }
}

/// A VOI LUT (PS3.3 C.11.2.1.1): modality values from `first` on map to table entries; values
/// below map to the first entry, values above to the last.
#[derive(Clone, Debug, PartialEq)]
pub struct VoiLut {
    /// The modality value of the first entry.
    pub first: f64,
    /// The entries.
    pub data: Vec<u16>,
    /// The largest entry value the LUT's bit depth allows.
    pub max: f64,
}

/// Half-width, in entries, of the difference the local slope of a LUT is taken over.
const SLOPE_REACH: f64 = 4.0;

impl VoiLut {
    /// The 8-bit display level of a modality value.
    #[inline]
    pub fn level(&self, x: f64) -> f64 {
        let i = (x - self.first)
            .round()
            .clamp(0.0, (self.data.len() - 1) as f64) as usize;
        f64::from(self.data[i]) / self.max * 255.0
    }

    /// Display levels per modality unit around `x`: the central difference over
    /// `SLOPE_REACH` entries either side, and never below the LUT's mean slope over its span
    /// (255 levels over its entries). In a flat part of the table a change shows little or
    /// not at all; the floor keeps the change in modality units there no larger than a
    /// linear window over the same span would make it.
    pub fn slope(&self, x: f64) -> f64 {
        let local =
            (self.level(x + SLOPE_REACH) - self.level(x - SLOPE_REACH)).abs() / (2.0 * SLOPE_REACH);
        local.max(255.0 / self.data.len() as f64)
    }

    /// The values the table spans, as a window (for reports).
    pub fn span(&self) -> Window {
        let n = self.data.len() as f64;
        Window {
            center: self.first + n / 2.0,
            width: n,
        }
    }
}

/// How one frame is displayed: its modality rescale and every window the file declares for
/// it (several at the top level are common: soft tissue, bone, lung), or its VOI LUT.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameDisplay {
    /// Rescale Slope, Rescale Intercept (from the Pixel Value Transformation Sequence of the
    /// frame's functional groups, or the top level).
    pub rescale: (f64, f64),
    /// Rescale Type (0028,1054) from the same data set as the rescale (else the top level),
    /// when given: "HU", "US" (unspecified), ...
    pub rescale_type: Option<String>,
    /// The windows declared for the frame, in file order (the value range when neither a
    /// window nor a LUT is declared; empty when only a LUT is).
    pub windows: Vec<Window>,
    /// Where the windows came from.
    pub source: WindowSource,
    /// The top-level VOI LUT Sequence's first LUT, when the file has one: the mark is
    /// computed through it when no window is declared, and it is held to the PSNR target
    /// either way.
    pub lut: Option<std::sync::Arc<VoiLut>>,
}

impl FrameDisplay {
    /// The LUT the mark is computed through: the VOI LUT when no window is declared.
    pub fn marking_lut(&self) -> Option<&VoiLut> {
        self.lut.as_deref().filter(|_| self.windows.is_empty())
    }

    /// The window the mark is computed in: the narrowest one. One stored step is the most
    /// display levels there, so the PSNR a mark reaches in it is the lowest of all the
    /// windows (a wider window shows the same change smaller, and a window outside the
    /// narrow one's range shows it clipped or not at all).
    /// With only a LUT, its span.
    pub fn marking_window(&self) -> Window {
        self.windows
            .iter()
            .copied()
            .min_by(|a, b| a.width.total_cmp(&b.width))
            .or_else(|| self.lut.as_ref().map(|l| l.span()))
            .expect("a window or a LUT")
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

    /// The window of the frames that declare none (their value range, measured on the stored
    /// values as read), if any frame does.
    pub fn value_range(&self) -> Option<Window> {
        self.display
            .iter()
            .find(|d| d.source == WindowSource::ValueRange)
            .and_then(|d| d.windows.first().copied())
    }

    /// Sets the window of the frames that declare none: a restore marks them in the value
    /// range of the original, not of the stamped copy.
    pub fn set_value_range(&mut self, w: Window) {
        for d in self
            .display
            .iter_mut()
            .filter(|d| d.source == WindowSource::ValueRange)
        {
            d.windows = vec![w];
        }
    }

    /// Whether viewers show low values bright: MONOCHROME1, or a Presentation LUT Shape of
    /// INVERSE (which MONOCHROME1 files may also declare: one inversion, not two).
    pub fn shows_inverted(&self) -> bool {
        self.photometric == Photometric::Monochrome1 || self.inverse_presentation
    }

    /// The first frame's Rescale Type (0028,1054), when given.
    pub fn rescale_type(&self) -> Option<String> {
        self.display[0].rescale_type.clone()
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
        let lut = d.marking_lut().filter(|_| window.is_none());
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
                        let x = f64::from(v) * slope + intercept;
                        let d = lut.map_or_else(|| w.level(x), |l| l.level(x)) as f32;
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

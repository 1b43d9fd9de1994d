//! A display-level change mapped back to stored values, and the stored-value encoding.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use super::{DicomImage, Photometric, Window, WindowSource};

impl DicomImage {
    /// The smallest and largest stored value Bits Stored and Pixel Representation allow.
    pub fn stored_range(&self) -> (i32, i32) {
        let b = u32::from(self.bits_stored);
        if self.signed {
            (-(1i32 << (b - 1)), (1i32 << (b - 1)) - 1)
        } else {
            (0, ((1u32 << b) - 1) as i32)
        }
    }

    /// Adds display-level deltas (one per frame, in the display units of
    /// [`DicomImage::display_frame`]) to the stored values, capped at `max_stored_change`
    /// when given. Returns the statistics, gathered in the same pass (only changed samples
    /// cost anything beyond the add).
    ///
    /// # Panics
    /// When there is not one delta per frame of the frame's size.
    pub fn apply(&mut self, per_frame: &[Vec<i16>], max_stored_change: Option<u32>) -> DicomChange {
        self.apply_with(per_frame, max_stored_change, None)
    }

    /// [`DicomImage::apply`], recording in the same pass the corrections
    /// [`DicomImage::unapply`] will need to give the original back: the restore's prediction
    /// is run against the original while it is at hand.
    ///
    /// # Panics
    /// As [`DicomImage::apply`].
    pub fn apply_recording(
        &mut self,
        per_frame: &[Vec<i16>],
        max_stored_change: Option<u32>,
    ) -> (DicomChange, crate::restore::Corrections) {
        let mut rec = crate::restore::Recorder::new();
        let change = self.apply_with(per_frame, max_stored_change, Some(&mut rec));
        (change, rec.corrections)
    }

    fn apply_with(
        &mut self,
        per_frame: &[Vec<i16>],
        max_stored_change: Option<u32>,
        mut rec: Option<&mut crate::restore::Recorder>,
    ) -> DicomChange {
        assert_eq!(per_frame.len(), self.frames, "one delta per frame");
        assert!(self.spp <= 3, "one or three samples per pixel");
        let (lo, hi) = self.stored_range();
        let cap = max_stored_change.map_or(i64::MAX, i64::from);
        let (spp, fl) = (self.spp, self.frame_len());
        let grey = self.photometric != Photometric::Rgb;
        let rgb_k = 255.0 / f64::from((1u32 << self.bits_stored) - 1);
        const LUMA: [f64; 3] = [0.299, 0.587, 0.114];
        let (mut sq, mut max, mut sum2, mut max_display) = (0f64, 0i64, 0f64, 0f64);
        let (mut max_modality, mut sum2_modality) = (0f64, 0f64);
        // Squared display change per frame and declared window (grey only).
        // (the windows, then the VOI LUT when there is one).
        let mut window_sq: Vec<Vec<f64>> = self
            .display
            .iter()
            .map(|d| vec![0.0; d.windows.len() + usize::from(d.lut.is_some())])
            .collect();
        for (f, d) in per_frame.iter().enumerate() {
            let fd = &self.display[f];
            let stepper = self.frame_step(f, cap);
            let lut = fd.marking_lut();
            let (slope, intercept) = fd.rescale;
            let marking = fd.marking_window();
            let modality = |v: i32| f64::from(v) * slope + intercept;
            // Display level of a grey stored value (inversion does not change differences).
            let shown = |v: i32| match lut {
                Some(l) => l.level(modality(v)),
                None => marking.level(modality(v)),
            };
            // The frame's slot of the marking window (or LUT) takes the change just measured;
            // the other windows (and a LUT not marked through) are rendered for the check.
            let marking_slot = match lut {
                Some(_) => fd.windows.len(),
                None => fd
                    .windows
                    .iter()
                    .position(|w| *w == marking)
                    .expect("the marking window is one of the frame's"),
            };
            let others: Vec<(usize, Window)> = fd
                .windows
                .iter()
                .copied()
                .enumerate()
                .filter(|&(i, _)| i != marking_slot)
                .collect();
            let other_lut = fd.lut.as_deref().filter(|_| lut.is_none());
            let (mut frame_sq, mut frame_max, mut frame_sum2) = (0f64, 0i64, 0f64);
            let s = &mut self.stored[f * fl..(f + 1) * fl];
            for (i, (px, &q)) in s.chunks_exact_mut(spp).zip(d.iter()).enumerate() {
                if q == 0 {
                    continue;
                }
                let step = stepper.step(q, px[0], i);
                // Through a LUT the restore takes the step at the stamped value, which may
                // differ from this one (even where this one is zero): every sample is
                // recorded. Through a window it takes this very step, so only a sample at a
                // bound of the range can need a correction.
                let lut_record = rec.is_some() && lut.is_some();
                if step == 0 && !lut_record {
                    continue;
                }
                let mut olds = [0i32; 3];
                if lut_record {
                    olds[..spp].copy_from_slice(px);
                }
                if step != 0 {
                    let mut lum = 0f64;
                    for (c, v) in px.iter_mut().enumerate() {
                        let old = *v;
                        let new =
                            (i64::from(old) + step).clamp(i64::from(lo), i64::from(hi)) as i32;
                        let change = i64::from(new - old);
                        frame_max = frame_max.max(change.abs());
                        frame_sum2 += (change * change) as f64;
                        if grey {
                            let dd = shown(new) - shown(old);
                            frame_sq += dd * dd;
                            max_display = max_display.max(dd.abs());
                            for &(slot, w) in &others {
                                let dw = w.level(modality(new)) - w.level(modality(old));
                                window_sq[f][slot] += dw * dw;
                            }
                            if let Some(l) = other_lut {
                                let dl = l.level(modality(new)) - l.level(modality(old));
                                window_sq[f][fd.windows.len()] += dl * dl;
                            }
                        } else {
                            lum += LUMA[c] * change as f64 * rgb_k;
                        }
                        if !lut_record
                            && (new == lo || new == hi)
                            && let Some(rec) = rec.as_deref_mut()
                        {
                            rec.record(f * fl + i * spp + c, old, new, step, lo, hi);
                        }
                        *v = new;
                    }
                    sq += lum * lum;
                    max_display = max_display.max(lum.abs());
                }
                if lut_record && let Some(rec) = rec.as_deref_mut() {
                    let guess = stepper.step(q, px[0], i);
                    for (c, &new) in px.iter().enumerate() {
                        rec.record(f * fl + i * spp + c, olds[c], new, guess, lo, hi);
                    }
                }
            }
            sq += frame_sq;
            if grey {
                window_sq[f][marking_slot] = frame_sq;
            }
            max = max.max(frame_max);
            sum2 += frame_sum2;
            // Changes in modality units: stored changes times the frame's slope.
            max_modality = max_modality.max(frame_max as f64 * slope.abs());
            sum2_modality += frame_sum2 * slope * slope;
        }
        let frame_px = (self.rows * self.cols) as f64;
        let psnr = |mse: f64| {
            if mse == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (255.0f64 * 255.0 / mse).log10()
            }
        };
        // Every declared window, at its worst frame.
        let mut windows: Vec<WindowPsnr> = Vec::new();
        if grey {
            for (f, fd) in self.display.iter().enumerate() {
                let shown: Vec<(Window, WindowSource)> = fd
                    .windows
                    .iter()
                    .map(|&w| (w, fd.source))
                    .chain(fd.lut.as_ref().map(|l| (l.span(), WindowSource::VoiLut)))
                    .collect();
                for (&(w, source), &acc) in shown.iter().zip(&window_sq[f]) {
                    let p = psnr(acc / frame_px);
                    match windows
                        .iter_mut()
                        .find(|x| x.window == w && x.source == source)
                    {
                        Some(x) if p < x.psnr_db => {
                            x.psnr_db = p;
                            x.worst_frame = f;
                        }
                        Some(_) => {}
                        None => windows.push(WindowPsnr {
                            window: w,
                            source,
                            psnr_db: p,
                            worst_frame: f,
                        }),
                    }
                }
            }
        }
        let n = self.stored.len() as f64;
        let rms = (sum2 / n).sqrt();
        DicomChange {
            psnr_display_db: psnr(sq / (self.frames as f64 * frame_px)),
            max_abs_stored: max,
            max_abs_display: max_display,
            rms_stored: rms,
            max_abs_modality: max_modality,
            rms_modality: (sum2_modality / n).sqrt(),
            windows,
        }
    }
}

/// How one frame's stored values change for a display change `q` (see
/// [`DicomImage::apply`]); shared by the stamp and the restore so that both compute the
/// same step, bit for bit.
pub(crate) struct FrameStep {
    k_window: f64,
    lut: Option<std::sync::Arc<super::VoiLut>>,
    sign: f64,
    rescale: (f64, f64),
    cap: i64,
    /// Dither index of the frame's first pixel.
    base: u64,
}

impl FrameStep {
    /// The stored change at pixel `i` of the frame whose (first) sample is `v`.
    #[inline]
    pub(crate) fn step(&self, q: i16, v: i32, i: usize) -> i64 {
        let (slope, intercept) = self.rescale;
        // Through a VOI LUT the stored change per display level follows the LUT's local
        // slope at this value; through a window it is one constant.
        let k = match &self.lut {
            Some(l) => self.sign / (l.slope(f64::from(v) * slope + intercept) * slope),
            None => self.k_window,
        };
        // A fixed dither in [0, 1): unbiased rounding, the same output every run.
        let t = f64::from(q) * k + dither(self.base + i as u64);
        floor(t).clamp(-self.cap, self.cap)
    }
}

impl DicomImage {
    pub(crate) fn frame_step(&self, f: usize, cap: i64) -> FrameStep {
        let fd = &self.display[f];
        FrameStep {
            k_window: 1.0 / self.display_per_stored(f),
            lut: fd.lut.clone().filter(|_| fd.marking_lut().is_some()),
            sign: if self.shows_inverted() { -1.0 } else { 1.0 },
            rescale: fd.rescale,
            cap,
            base: (f * self.frame_len() / self.spp) as u64,
        }
    }

    /// The original stored values of a stamped image, given the per-frame display deltas
    /// [`DicomImage::apply`] added and the cap it used: `x = y - step` with the same step,
    /// and through `coder` wherever that does not hold (clipped samples; through a VOI LUT,
    /// where the step taken from the stamped value differs from the one the original gave).
    /// At restore the coder replays the corrections [`DicomImage::apply_recording`] kept.
    ///
    /// # Panics
    /// When there is not one delta per frame of the frame's size.
    pub fn unapply(
        &self,
        per_frame: &[Vec<i16>],
        max_stored_change: Option<u32>,
        coder: &mut impl crate::restore::Coder,
    ) -> Vec<i32> {
        let mut out = self.stored.clone();
        self.walk_changed(per_frame, max_stored_change, |at, y, step, lo, hi| {
            out[at] = coder.sample(at, y, step, lo, hi);
        });
        out
    }

    /// Calls `f(index, stamped value, step, lo, hi)` for every sample the stamp may have
    /// changed (those of pixels with a non-zero display delta), in sample order.
    fn walk_changed(
        &self,
        per_frame: &[Vec<i16>],
        max_stored_change: Option<u32>,
        mut f: impl FnMut(usize, i32, i64, i32, i32),
    ) {
        assert_eq!(per_frame.len(), self.frames, "one delta per frame");
        let (lo, hi) = self.stored_range();
        let cap = max_stored_change.map_or(i64::MAX, i64::from);
        let (spp, fl) = (self.spp, self.frame_len());
        for (fi, d) in per_frame.iter().enumerate() {
            let stepper = self.frame_step(fi, cap);
            let s = &self.stored[fi * fl..(fi + 1) * fl];
            for (i, (px, &q)) in s.chunks_exact(spp).zip(d.iter()).enumerate() {
                if q == 0 {
                    continue;
                }
                let step = stepper.step(q, px[0], i);
                for (c, &y) in px.iter().enumerate() {
                    f(fi * fl + i * spp + c, y, step, lo, hi);
                }
            }
        }
    }

    /// Stored values (in this image's sample order) as the Pixel Data bytes of the file they
    /// were read from: planar when it was, `Bits Allocated` wide, two's complement when
    /// signed, little or big endian.
    pub fn file_order_bytes(&self, values: &[i32], big_endian: bool) -> Vec<u8> {
        let ordered = if self.planar {
            Cow::Owned(replan(values, self.frames, self.rows * self.cols, true))
        } else {
            Cow::Borrowed(values)
        };
        let mut out = Vec::with_capacity(ordered.len() * usize::from(self.bits_allocated / 8));
        for &v in ordered.iter() {
            if self.bits_allocated == 16 {
                let w = v as u16;
                out.extend_from_slice(&if big_endian {
                    w.to_be_bytes()
                } else {
                    w.to_le_bytes()
                });
            } else {
                out.push(v as u8);
            }
        }
        out
    }

    /// SHA-256 of stored values with the image's shape, each value in `Bits Allocated` bits
    /// (two's complement, little endian; every value in the stored range fits): what an
    /// exact restore reproduces.
    pub fn pixel_hash(&self, values: &[i32]) -> [u8; 32] {
        let mut h = Sha256::new();
        for n in [self.frames, self.rows, self.cols, self.spp] {
            h.update((n as u64).to_le_bytes());
        }
        h.update([self.bits_allocated as u8]);
        let mut buf = Vec::with_capacity(2 << 16);
        for chunk in values.chunks(1 << 16) {
            buf.clear();
            if self.bits_allocated == 16 {
                buf.extend(chunk.iter().flat_map(|&v| (v as u16).to_le_bytes()));
            } else {
                buf.extend(chunk.iter().map(|&v| v as u8));
            }
            h.update(&buf);
        }
        h.finalize().into()
    }

    /// The transfer syntax's byte order is big endian (Explicit VR Big Endian, retired).
    pub fn is_big_endian(&self) -> bool {
        self.transfer_syntax == "1.2.840.10008.1.2.2"
    }
}

/// The PSNR of a stamp in one window the file declares, at the frame where it is lowest.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowPsnr {
    /// The window.
    pub window: Window,
    /// Where it was declared.
    pub source: WindowSource,
    /// PSNR in 8-bit display units of this window, at its worst frame.
    pub psnr_db: f64,
    /// That frame (0-based).
    pub worst_frame: usize,
}

/// What stamping changed in a DICOM file.
#[derive(Clone, Debug, PartialEq)]
pub struct DicomChange {
    /// PSNR in the image's own display window (8-bit display units).
    pub psnr_display_db: f64,
    /// Largest |change| of a stored value.
    pub max_abs_stored: i64,
    /// Largest |change| in display levels (8-bit units of the image's own window).
    pub max_abs_display: f64,
    /// RMS change of the stored values (over all samples).
    pub rms_stored: f64,
    /// Largest change in modality units (stored change times Rescale Slope; Hounsfield units
    /// for CT), any modality.
    pub max_abs_modality: f64,
    /// RMS change in modality units.
    pub rms_modality: f64,
    /// Grey images: the PSNR in every window the file declares (the value range when it
    /// declares none), each at its worst frame.
    pub windows: Vec<WindowPsnr>,
}

/// The stored value a raw sample word holds: masked to Bits Stored, sign-extended for
/// Pixel Representation 1.
#[inline]
pub(super) fn stored_value(word: u16, bits_stored: u16, signed: bool) -> i32 {
    let bits = u32::from(bits_stored);
    let v = u32::from(word) & if bits >= 16 { 0xFFFF } else { (1 << bits) - 1 };
    if signed && (v >> (bits - 1)) & 1 == 1 {
        v as i32 - (1i32 << bits)
    } else {
        v as i32
    }
}

/// `floor` without a libm call (baseline x86-64 has no rounding instruction).
#[inline]
fn floor(t: f64) -> i64 {
    let i = t as i64;
    if (i as f64) > t { i - 1 } else { i }
}

/// A fixed dither in [0, 1) per sample index (a 64-bit mix; no state, no allocation).
fn dither(i: u64) -> f64 {
    let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Converts three-sample frames between planar (RRR..GGG..BBB) and interleaved (RGBRGB..)
/// order; `n` pixels per frame.
pub(super) fn replan<T: Copy + Default>(
    v: &[T],
    frames: usize,
    n: usize,
    to_planar: bool,
) -> Vec<T> {
    let mut out = vec![T::default(); v.len()];
    for f in 0..frames {
        let range = f * 3 * n..(f + 1) * 3 * n;
        let (src, dst) = (&v[range.clone()], &mut out[range]);
        for i in 0..n {
            for c in 0..3 {
                let (planar, interleaved) = (c * n + i, i * 3 + c);
                if to_planar {
                    dst[planar] = src[interleaved];
                } else {
                    dst[interleaved] = src[planar];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dither_is_uniform_and_planes_round_trip() {
        let m: f64 = (0..100_000).map(dither).sum::<f64>() / 100_000.0;
        assert!((m - 0.5).abs() < 0.005, "{m}");
        let p: Vec<i32> = (0..12).collect();
        let i = replan(&p, 2, 2, false);
        assert_eq!(i, vec![0, 2, 4, 1, 3, 5, 6, 8, 10, 7, 9, 11]);
        assert_eq!(replan(&i, 2, 2, true), p);
    }

    #[test]
    fn stored_values_are_masked_and_sign_extended() {
        assert_eq!(stored_value(0x0FFF, 12, true), -1);
        assert_eq!(stored_value(0xF7FF, 12, true), 2047);
        assert_eq!(stored_value(0xFFFF, 12, false), 4095);
        assert_eq!(stored_value(0x8000, 16, true), -32768);
    }
}

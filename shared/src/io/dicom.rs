//! DICOM in, DICOM out (design.md section 4), through dicom-rs.
//!
//! The mark lives in display units: each frame's stored values go through the modality
//! rescale and the image's own VOI window (Window Center/Width; the value range when absent)
//! to 8-bit display levels, MONOCHROME1 inverted. A display change `q` maps back to stored
//! values as `q * (W - 1) / (255 * slope)` (negated for MONOCHROME1), rounded with a fixed
//! dither (so that narrow windows, where one stored step is several display levels, keep the
//! mark's mean), clipped to the range the Bits Stored and Pixel Representation allow, and
//! optionally capped. RGB images carry the mark in luminance, as photos do.
//!
//! Frames at least one tile (128 px) a side are each marked; the detector examines the mean
//! of all frames' display planes (the mark is the same in every frame, the anatomy is not).
//! Smaller frames are laid out as a montage (in frame order, on the grid with the fewest
//! empty cells, then the squarest) that carries one mark across the frames: the DICOM file is then traceable, a single exported frame is
//! not.
//!
//! The output keeps every attribute but: Pixel Data; SOP Instance UID (new, `2.25.` from a
//! keyed hash of the source UID and the payload; with the file meta's Media Storage SOP
//! Instance UID) unless UIDs are kept; the derived-image bookkeeping (Image Type value 1
//! DERIVED, Derivation Description, Source Image Sequence, Contributing Equipment Sequence,
//! Instance Creation Date/Time); digital signatures, which no longer hold, are removed.
//! Compressed inputs are decoded and written as Explicit VR Little Endian (Photometric
//! Interpretation RGB for decoded YBR JPEG, Planar Configuration 0).

use std::borrow::Cow;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use dicom_core::header::HasLength;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_parser::dataset::write::{DataSetWriterOptions, ExplicitLengthSqItemStrategy};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::error::{Error, Result};
use crate::io::Limits;
use crate::mark::embed::MIN_SIDE;
use crate::raster::{Plane, Raster, Samples};

/// Explicit VR Little Endian, what compressed inputs are written as.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Attributes a stamped file may differ in from its source; everything else is kept
/// byte for byte, except the retired group length elements (gggg,0000) of these tags'
/// groups, which are removed because they would no longer hold.
pub const CHANGED_TAGS: [Tag; 12] = [
    tags::PIXEL_DATA,
    tags::SOP_INSTANCE_UID,
    tags::IMAGE_TYPE,
    tags::DERIVATION_DESCRIPTION,
    tags::SOURCE_IMAGE_SEQUENCE,
    tags::CONTRIBUTING_EQUIPMENT_SEQUENCE,
    tags::INSTANCE_CREATION_DATE,
    tags::INSTANCE_CREATION_TIME,
    tags::DIGITAL_SIGNATURES_SEQUENCE,
    tags::MAC_PARAMETERS_SEQUENCE,
    // Only for compressed inputs, decoded to native RGB / interleaved samples.
    tags::PHOTOMETRIC_INTERPRETATION,
    tags::PLANAR_CONFIGURATION,
];

/// Photometric interpretations tracemark marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Photometric {
    /// Grey, minimum displayed white.
    Monochrome1,
    /// Grey, minimum displayed black.
    Monochrome2,
    /// Colour, three samples (decoded YBR JPEG included).
    Rgb,
}

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

/// A decoded DICOM image with its dataset.
pub struct DicomImage {
    obj: DefaultDicomObject,
    path: PathBuf,
    /// Frames.
    pub frames: usize,
    /// Rows (height).
    pub rows: usize,
    /// Columns (width).
    pub cols: usize,
    /// Samples per pixel (1 or 3).
    pub spp: usize,
    /// Bits Allocated (8 or 16).
    pub bits_allocated: u16,
    /// Bits Stored.
    pub bits_stored: u16,
    /// Pixel Representation 1 (two's complement).
    pub signed: bool,
    /// Photometric interpretation (after decoding).
    pub photometric: Photometric,
    /// Rescale Slope, Rescale Intercept.
    pub rescale: (f64, f64),
    /// The image's own VOI window (from the file, else the value range).
    pub window: Window,
    /// Whether the window came from the file.
    pub window_from_file: bool,
    /// Modality (0008,0060), empty when absent.
    pub modality: String,
    /// The input's transfer syntax UID.
    pub transfer_syntax: String,
    /// Whether the pixel data had to be decoded from a compressed or deflated syntax (the
    /// output is then Explicit VR Little Endian).
    pub transcoded: bool,
    /// Stored values, frame after frame, samples interleaved.
    pub stored: Vec<i32>,
    /// Original raw sample words, interleaved like `stored` (kept where a value does not
    /// change).
    raw: Vec<u16>,
    planar: bool,
}

fn dicom_err(path: &Path, attribute: &str, why: impl Into<String>) -> Error {
    Error::Dicom {
        path: path.into(),
        attribute: attribute.into(),
        why: why.into(),
    }
}

/// Whether `bytes` look like a DICOM file (Part 10: 128-byte preamble, then "DICM").
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

impl DicomImage {
    /// Parses and decodes a DICOM file's bytes (`path` names it in errors).
    ///
    /// # Errors
    /// [`Error::Dicom`] naming the attribute at fault (truncated file, missing Pixel Data,
    /// inconsistent Rows/Columns/Bits), [`Error::Unsupported`] for transfer syntaxes and
    /// photometric interpretations tracemark does not handle, [`Error::Limits`].
    pub fn decode(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Self> {
        if !is_dicom(bytes) {
            return Err(dicom_err(
                path,
                "preamble",
                "not a DICOM Part 10 file (no 'DICM' at byte 128)",
            ));
        }
        let obj = OpenFileOptions::new()
            .from_reader(Cursor::new(&bytes[128..]))
            .map_err(|e| {
                dicom_err(
                    path,
                    "file",
                    format!("cannot parse: {}", first_line(&e.to_string())),
                )
            })?;
        let ts = obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        let int = |tag: Tag, name: &str, default: Option<i64>| -> Result<i64> {
            match obj.get(tag) {
                Some(e) => e
                    .to_int::<i64>()
                    .map_err(|_| dicom_err(path, name, "not a number")),
                None => default.ok_or_else(|| dicom_err(path, name, "missing")),
            }
        };
        let rows = int(tags::ROWS, "Rows (0028,0010)", None)?;
        let cols = int(tags::COLUMNS, "Columns (0028,0011)", None)?;
        let spp = int(
            tags::SAMPLES_PER_PIXEL,
            "Samples per Pixel (0028,0002)",
            Some(1),
        )?;
        let bits_allocated = int(tags::BITS_ALLOCATED, "Bits Allocated (0028,0100)", None)?;
        let bits_stored = int(tags::BITS_STORED, "Bits Stored (0028,0101)", None)?;
        let high_bit = int(
            tags::HIGH_BIT,
            "High Bit (0028,0102)",
            Some(bits_stored - 1),
        )?;
        let repr = int(
            tags::PIXEL_REPRESENTATION,
            "Pixel Representation (0028,0103)",
            Some(0),
        )?;
        let frames = int(
            tags::NUMBER_OF_FRAMES,
            "Number of Frames (0028,0008)",
            Some(1),
        )?;
        if obj.get(tags::PIXEL_DATA).is_none() {
            return Err(dicom_err(
                path,
                "Pixel Data (7FE0,0010)",
                "missing: not an image",
            ));
        }
        if rows < 1 || cols < 1 || rows > 65535 || cols > 65535 {
            return Err(dicom_err(
                path,
                "Rows/Columns",
                format!("{rows} x {cols} is not an image size"),
            ));
        }
        limits
            .check(cols as u32, rows as u32)
            .map_err(|(why, limit)| Error::Limits {
                path: path.into(),
                why,
                limit,
            })?;
        if !(1..=100_000).contains(&frames) {
            return Err(dicom_err(
                path,
                "Number of Frames (0028,0008)",
                format!("{frames}"),
            ));
        }
        if bits_allocated != 8 && bits_allocated != 16 {
            return Err(Error::Unsupported {
                path: path.into(),
                what: format!(
                    "Bits Allocated (0028,0100) {bits_allocated} (8 and 16 are supported)"
                ),
            });
        }
        if bits_stored < 1 || bits_stored > bits_allocated {
            return Err(dicom_err(
                path,
                "Bits Stored (0028,0101)",
                format!("{bits_stored} does not fit Bits Allocated {bits_allocated}"),
            ));
        }
        if high_bit != bits_stored - 1 {
            return Err(dicom_err(
                path,
                "High Bit (0028,0102)",
                format!("{high_bit} is not Bits Stored - 1 ({})", bits_stored - 1),
            ));
        }
        if repr != 0 && repr != 1 {
            return Err(dicom_err(
                path,
                "Pixel Representation (0028,0103)",
                format!("{repr}"),
            ));
        }
        let pi_text = obj
            .get(tags::PHOTOMETRIC_INTERPRETATION)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_string())
            .ok_or_else(|| dicom_err(path, "Photometric Interpretation (0028,0004)", "missing"))?;
        let native = matches!(
            ts.as_str(),
            "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2.2"
        );
        let photometric = match (pi_text.as_str(), spp) {
            ("MONOCHROME1", 1) => Photometric::Monochrome1,
            ("MONOCHROME2", 1) => Photometric::Monochrome2,
            ("RGB", 3) => Photometric::Rgb,
            ("YBR_FULL" | "YBR_FULL_422", 3) if !native && ts != "1.2.840.10008.1.2.1.99" => {
                Photometric::Rgb
            }
            (other, n) if matches!(other, "MONOCHROME1" | "MONOCHROME2" | "RGB") => {
                return Err(dicom_err(
                    path,
                    "Samples per Pixel (0028,0002)",
                    format!("{n} does not match Photometric Interpretation {other}"),
                ));
            }
            (other, _) => {
                return Err(Error::Unsupported {
                    path: path.into(),
                    what: format!(
                        "Photometric Interpretation (0028,0004) {other} (MONOCHROME1, MONOCHROME2 and RGB are supported)"
                    ),
                });
            }
        };
        let (rows, cols, spp, frames) =
            (rows as usize, cols as usize, spp as usize, frames as usize);
        let samples = frames * rows * cols * spp;
        let bytes_per = usize::from(bits_allocated as u16 / 8);
        if (samples * bytes_per) as u64 > limits.max_alloc {
            return Err(Error::Limits {
                path: path.into(),
                why: format!("{frames} frames of {cols}x{rows} px"),
                limit: format!("{} bytes", limits.max_alloc),
            });
        }
        if native {
            let have = obj
                .get(tags::PIXEL_DATA)
                .and_then(|e| e.header().length().get())
                .unwrap_or(0) as usize;
            let want = samples * bytes_per;
            if have < want {
                return Err(dicom_err(
                    path,
                    "Pixel Data (7FE0,0010)",
                    format!(
                        "{have} bytes, but Rows x Columns x Samples x Frames x Bits Allocated ({rows} x {cols} x {spp} x {frames} x {bits_allocated}) needs {want}"
                    ),
                ));
            }
        }
        let decoded = obj.decode_pixel_data().map_err(|e| {
            let msg = first_line(&e.to_string());
            if native {
                dicom_err(path, "Pixel Data (7FE0,0010)", msg)
            } else {
                Error::Unsupported {
                    path: path.into(),
                    what: format!("Transfer Syntax UID (0002,0010) {ts}: cannot decode ({msg})"),
                }
            }
        })?;
        let raw: Vec<u16> = if bits_allocated == 16 {
            decoded.data_ow()
        } else {
            decoded.data().iter().map(|&b| u16::from(b)).collect()
        };
        if raw.len() < samples {
            return Err(dicom_err(
                path,
                "Pixel Data (7FE0,0010)",
                format!("decoded {} samples, expected {samples}", raw.len()),
            ));
        }
        let mut raw = raw;
        raw.truncate(samples);
        let planar = spp == 3
            && native
            && obj
                .get(tags::PLANAR_CONFIGURATION)
                .and_then(|e| e.to_int::<i64>().ok())
                == Some(1);
        // Samples are kept interleaved in memory, raw words and stored values alike.
        if planar {
            raw = replan(&raw, frames, rows * cols, false);
        }
        let signed = repr == 1;
        let bits_stored = bits_stored as u16;
        let stored: Vec<i32> = raw
            .iter()
            .map(|&w| stored_value(w, bits_stored, signed))
            .collect();
        let float = |tag: Tag, default: f64| -> f64 {
            obj.get(tag)
                .and_then(|e| e.to_multi_float64().ok())
                .and_then(|v| v.first().copied())
                .filter(|v| v.is_finite())
                .unwrap_or(default)
        };
        let mut slope = float(tags::RESCALE_SLOPE, 1.0);
        if slope == 0.0 {
            slope = 1.0;
        }
        let intercept = float(tags::RESCALE_INTERCEPT, 0.0);
        let centre = float(tags::WINDOW_CENTER, f64::NAN);
        let width = float(tags::WINDOW_WIDTH, f64::NAN);
        let (window, window_from_file) = if centre.is_finite() && width.is_finite() && width >= 1.0
        {
            (
                Window {
                    center: centre,
                    width,
                },
                true,
            )
        } else {
            let (lo, hi) = stored
                .iter()
                .fold((i32::MAX, i32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let (a, b) = (
                f64::from(lo) * slope + intercept,
                f64::from(hi) * slope + intercept,
            );
            let (lo, hi) = (a.min(b), a.max(b));
            (
                Window {
                    center: (lo + hi) / 2.0 + 0.5,
                    width: (hi - lo + 1.0).max(1.0),
                },
                false,
            )
        };
        let modality = obj
            .get(tags::MODALITY)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Ok(DicomImage {
            path: path.into(),
            frames,
            rows,
            cols,
            spp,
            bits_allocated: bits_allocated as u16,
            bits_stored,
            signed,
            photometric,
            rescale: (slope, intercept),
            window,
            window_from_file,
            modality,
            transcoded: !native,
            transfer_syntax: ts,
            stored,
            raw,
            planar,
            obj,
        })
    }

    /// The smallest and largest stored value Bits Stored and Pixel Representation allow.
    pub fn stored_range(&self) -> (i32, i32) {
        let b = u32::from(self.bits_stored);
        if self.signed {
            (-(1i32 << (b - 1)), (1i32 << (b - 1)) - 1)
        } else {
            (0, ((1u32 << b) - 1) as i32)
        }
    }

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

    fn frame_len(&self) -> usize {
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

    /// How the mark is laid over the frames, or why it cannot be.
    ///
    /// # Errors
    /// [`Error::TooSmall`] when even a montage of all frames is smaller than one tile.
    pub fn layout(&self) -> Result<Layout> {
        if self.rows >= MIN_SIDE && self.cols >= MIN_SIDE {
            return Ok(Layout::PerFrame);
        }
        // The grid with the fewest empty cells (they carry no mark and waste none of the
        // budget), then the squarest, among those at least one tile on each side.
        let best = (1..=self.frames)
            .map(|rows| (self.frames.div_ceil(rows), rows))
            .filter(|&(c, r)| c * self.cols >= MIN_SIDE && r * self.rows >= MIN_SIDE)
            .min_by_key(|&(c, r)| (c * r - self.frames, (c * self.cols).abs_diff(r * self.rows)));
        if let (Some((cols, rows)), true) = (best, self.frames > 1) {
            Ok(Layout::Montage { cols, rows })
        } else {
            Err(Error::TooSmall {
                width: self.cols,
                height: self.rows,
                min: MIN_SIDE,
                what: if self.frames > 1 {
                    "carry a mark (nor does a montage of all its frames)"
                } else {
                    "carry a mark"
                },
            })
        }
    }

    /// The planes the mark is embedded in: one per frame, or one montage.
    ///
    /// # Errors
    /// As [`DicomImage::layout`].
    pub fn mark_planes(&self) -> Result<(Layout, Vec<Plane>)> {
        let layout = self.layout()?;
        let frames: Vec<Plane> = (0..self.frames)
            .map(|f| self.display_frame(f, None, true))
            .collect();
        Ok(match layout {
            Layout::PerFrame => (layout, frames),
            Layout::Montage { cols, rows } => (layout, vec![montage(&frames, cols, rows)]),
        })
    }

    /// The plane the detector examines: the mean of the frames' display planes, or the
    /// montage.
    ///
    /// # Errors
    /// As [`DicomImage::layout`], for images too small to have been marked.
    pub fn detection_plane(&self) -> Result<Plane> {
        let (layout, planes) = self.mark_planes()?;
        Ok(match layout {
            Layout::Montage { .. } => planes.into_iter().next().expect("one montage"),
            Layout::PerFrame => {
                let n = planes.len() as f32;
                let mut mean = vec![0f32; self.rows * self.cols];
                for p in &planes {
                    mean.iter_mut().zip(&p.data).for_each(|(m, &v)| *m += v / n);
                }
                Plane::from_vec(self.cols, self.rows, mean)
            }
        })
    }

    /// Adds display-level deltas (one per plane of [`DicomImage::mark_planes`]) to the
    /// stored values, capped at `max_stored_change` when given. Returns the statistics,
    /// gathered in the same pass (only changed samples cost anything beyond the add).
    ///
    /// # Panics
    /// When the deltas do not match the layout.
    pub fn apply(
        &mut self,
        layout: Layout,
        deltas: &[Vec<i16>],
        max_stored_change: Option<u32>,
    ) -> DicomChange {
        let per_frame: Vec<Cow<'_, [i16]>> = match layout {
            Layout::PerFrame => {
                assert_eq!(deltas.len(), self.frames, "one delta per frame");
                deltas.iter().map(|d| Cow::Borrowed(d.as_slice())).collect()
            }
            Layout::Montage { cols, .. } => {
                assert_eq!(deltas.len(), 1, "one montage delta");
                unmontage(&deltas[0], self.frames, self.cols, self.rows, cols)
                    .into_iter()
                    .map(Cow::Owned)
                    .collect()
            }
        };
        let k = 1.0 / self.display_per_stored();
        let (lo, hi) = self.stored_range();
        let cap = max_stored_change.map_or(i64::MAX, i64::from);
        let (spp, fl) = (self.spp, self.frame_len());
        let grey = self.photometric != Photometric::Rgb;
        // Display level of a grey stored value (inversion does not change differences).
        let (slope, intercept) = self.rescale;
        let window = self.window;
        let display = |v: i32| window.level(f64::from(v) * slope + intercept);
        let rgb_k = 255.0 / f64::from((1u32 << self.bits_stored) - 1);
        const LUMA: [f64; 3] = [0.299, 0.587, 0.114];
        let (mut sq, mut max, mut sum2, mut max_display) = (0f64, 0i64, 0f64, 0f64);
        for (f, d) in per_frame.iter().enumerate() {
            let s = &mut self.stored[f * fl..(f + 1) * fl];
            for (i, (px, &q)) in s.chunks_exact_mut(spp).zip(d.iter()).enumerate() {
                if q == 0 {
                    continue;
                }
                // A fixed dither in [0, 1): unbiased rounding, the same output every run.
                let t = f64::from(q) * k + dither((f * fl / spp + i) as u64);
                let step = floor(t).clamp(-cap, cap);
                if step == 0 {
                    continue;
                }
                let mut lum = 0f64;
                for (c, v) in px.iter_mut().enumerate() {
                    let old = *v;
                    let new = (i64::from(old) + step).clamp(i64::from(lo), i64::from(hi)) as i32;
                    let change = i64::from(new - old);
                    max = max.max(change.abs());
                    sum2 += (change * change) as f64;
                    if grey {
                        let dd = display(new) - display(old);
                        sq += dd * dd;
                        max_display = max_display.max(dd.abs());
                    } else {
                        lum += LUMA[c] * change as f64 * rgb_k;
                    }
                    *v = new;
                }
                sq += lum * lum;
                max_display = max_display.max(lum.abs());
            }
        }
        let n = (self.frames * self.rows * self.cols) as f64;
        let mse = sq / n;
        let rms = (sum2 / self.stored.len() as f64).sqrt();
        let hu = self.modality == "CT";
        DicomChange {
            psnr_display_db: if mse == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (255.0f64 * 255.0 / mse).log10()
            },
            max_abs_stored: max,
            max_abs_display: max_display,
            rms_stored: rms,
            max_abs_hu: hu.then(|| max as f64 * self.rescale.0.abs()),
            rms_hu: hu.then(|| rms * self.rescale.0.abs()),
        }
    }

    /// The SOP Instance UID.
    pub fn sop_instance_uid(&self) -> String {
        self.obj
            .get(tags::SOP_INSTANCE_UID)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_default()
    }

    /// Encodes the stamped file. `new_uid` replaces the SOP Instance UID (and records the
    /// source in the Source Image Sequence) unless `None` (UIDs kept); `description` goes in
    /// front of any Derivation Description; `now` is (DA, TM, DT) for the bookkeeping.
    ///
    /// # Errors
    /// When dicom-rs cannot encode the dataset.
    pub fn encode(
        self,
        new_uid: Option<&str>,
        description: &str,
        now: (&str, &str, &str),
    ) -> Result<Vec<u8>> {
        let source = self.sop_instance_uid();
        // Pixel data: unchanged values keep their original words.
        let mut words: Vec<u16> = self
            .stored
            .iter()
            .enumerate()
            .map(|(i, &new)| {
                let raw = self.raw[i];
                if new == stored_value(raw, self.bits_stored, self.signed) {
                    raw
                } else if self.signed && self.bits_allocated == 16 {
                    new as i16 as u16
                } else if self.signed {
                    (new as i8 as u8).into()
                } else {
                    new as u16
                }
            })
            .collect();
        if self.planar {
            words = replan(&words, self.frames, self.rows * self.cols, true);
        }
        let mut obj = self.obj;
        let pixel_vr = obj
            .get(tags::PIXEL_DATA)
            .map(|e| e.vr())
            .filter(|vr| !self.transcoded && matches!(vr, VR::OW | VR::OB))
            .unwrap_or(if self.bits_allocated == 16 {
                VR::OW
            } else {
                VR::OB
            });
        let value = if self.bits_allocated == 16 {
            PrimitiveValue::U16(words.into())
        } else {
            PrimitiveValue::U8(words.iter().map(|&w| w as u8).collect())
        };
        obj.put(DataElement::new(tags::PIXEL_DATA, pixel_vr, value));
        if self.transcoded {
            obj.update_meta(|m| m.transfer_syntax = EXPLICIT_VR_LE.to_string());
            if self.photometric == Photometric::Rgb {
                obj.put(DataElement::new(
                    tags::PHOTOMETRIC_INTERPRETATION,
                    VR::CS,
                    PrimitiveValue::from("RGB"),
                ));
                obj.put(DataElement::new(
                    tags::PLANAR_CONFIGURATION,
                    VR::US,
                    PrimitiveValue::from(0u16),
                ));
            }
        }
        // Image Type: value 1 DERIVED, the rest kept.
        let mut image_type: Vec<String> = obj
            .get(tags::IMAGE_TYPE)
            .and_then(|e| e.to_multi_str().ok().map(Cow::into_owned))
            .unwrap_or_default();
        if image_type.len() < 2 {
            image_type = vec!["DERIVED".into(), "SECONDARY".into()];
        } else {
            image_type[0] = "DERIVED".into();
        }
        obj.put(DataElement::new(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(image_type.into()),
        ));
        let mut text = description.to_string();
        if let Some(old) = obj
            .get(tags::DERIVATION_DESCRIPTION)
            .and_then(|e| e.to_str().ok())
        {
            let old = old.trim();
            if !old.is_empty() {
                text = format!("{text} [{old}]");
            }
        }
        text.truncate(1024);
        obj.put(DataElement::new(
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            PrimitiveValue::from(text),
        ));
        // Contributing Equipment: this tool, appended.
        let mut equipment: Vec<InMemDicomObject> = obj
            .get(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE)
            .and_then(|e| e.items().map(<[InMemDicomObject]>::to_vec))
            .unwrap_or_default();
        equipment.push(InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![code("109103", "Modifying Equipment")]),
            ),
            DataElement::new(
                tags::MANUFACTURER,
                VR::LO,
                PrimitiveValue::from("tracemark"),
            ),
            DataElement::new(
                tags::MANUFACTURER_MODEL_NAME,
                VR::LO,
                PrimitiveValue::from("tracemark-embed"),
            ),
            DataElement::new(
                tags::SOFTWARE_VERSIONS,
                VR::LO,
                PrimitiveValue::from(env!("CARGO_PKG_VERSION")),
            ),
            DataElement::new(
                tags::CONTRIBUTION_DATE_TIME,
                VR::DT,
                PrimitiveValue::from(now.2),
            ),
            DataElement::new(
                tags::CONTRIBUTION_DESCRIPTION,
                VR::ST,
                PrimitiveValue::from("Forensic watermark embedding"),
            ),
        ]));
        obj.put(DataElement::new(
            tags::CONTRIBUTING_EQUIPMENT_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(equipment),
        ));
        // Signatures over the old pixels no longer hold.
        obj.remove_element(tags::DIGITAL_SIGNATURES_SEQUENCE);
        obj.remove_element(tags::MAC_PARAMETERS_SEQUENCE);
        if let Some(uid) = new_uid {
            let class = obj
                .get(tags::SOP_CLASS_UID)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                .unwrap_or_else(|| {
                    obj.meta()
                        .media_storage_sop_class_uid()
                        .trim_end_matches('\0')
                        .to_string()
                });
            let item = InMemDicomObject::from_element_iter([
                DataElement::new(
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    PrimitiveValue::from(class),
                ),
                DataElement::new(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    PrimitiveValue::from(source),
                ),
                DataElement::new(
                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                    VR::SQ,
                    DataSetSequence::from(vec![code(
                        "121322",
                        "Source image for image processing operation",
                    )]),
                ),
            ]);
            obj.put(DataElement::new(
                tags::SOURCE_IMAGE_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item]),
            ));
            obj.put(DataElement::new(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(uid),
            ));
            obj.put(DataElement::new(
                tags::INSTANCE_CREATION_DATE,
                VR::DA,
                PrimitiveValue::from(now.0),
            ));
            obj.put(DataElement::new(
                tags::INSTANCE_CREATION_TIME,
                VR::TM,
                PrimitiveValue::from(now.1),
            ));
            obj.update_meta(|m| m.media_storage_sop_instance_uid = uid.to_string());
        }
        // Group lengths (gggg,0000; retired outside groups 0000 and 0002) of the groups
        // changed above would no longer hold: remove them rather than leave them wrong.
        for group in CHANGED_TAGS.iter().map(|t| t.group()) {
            obj.remove_element(Tag(group, 0x0000));
        }
        // Preamble, magic, meta, then the data set with every sequence and item length as it
        // was read (dicom-rs would otherwise rewrite them all as undefined): an attribute this
        // tool does not touch keeps its encoding byte for byte. Sequences built here carry
        // undefined lengths, so no stale length is written.
        let encode_err = |e: &dyn std::fmt::Display| {
            dicom_err(
                &self.path,
                "file",
                format!("cannot encode: {}", first_line(&e.to_string())),
            )
        };
        let uid = obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        let ts = TransferSyntaxRegistry
            .get(&uid)
            .ok_or_else(|| encode_err(&format!("transfer syntax {uid}")))?;
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        obj.meta().write(&mut out).map_err(|e| encode_err(&e))?;
        let options = DataSetWriterOptions::default()
            .explicit_length_sq_item_strategy(ExplicitLengthSqItemStrategy::NoChange);
        obj.write_dataset_with_ts_options(&mut out, ts, options)
            .map_err(|e| encode_err(&e))?;
        Ok(out)
    }
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
    /// For CT: the largest change in Hounsfield units.
    pub max_abs_hu: Option<f64>,
    /// For CT: the RMS change in Hounsfield units.
    pub rms_hu: Option<f64>,
}

fn code(value: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
        DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from("DCM"),
        ),
        DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
    ])
}

/// A new SOP Instance UID: `2.25.` and a version-8 UUID made from `seed` (PS3.5 B.2).
pub fn uid_from(seed: [u8; 32]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&seed[..16]);
    b[6] = (b[6] & 0x0F) | 0x80;
    b[8] = (b[8] & 0x3F) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// The stored value a raw sample word holds: masked to Bits Stored, sign-extended for
/// Pixel Representation 1.
#[inline]
fn stored_value(word: u16, bits_stored: u16, signed: bool) -> i32 {
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
fn replan<T: Copy + Default>(v: &[T], frames: usize, n: usize, to_planar: bool) -> Vec<T> {
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
    fn uids_are_valid_2_25_uids() {
        let u = uid_from([0xAB; 32]);
        assert!(u.starts_with("2.25.") && u.len() <= 64);
        assert!(u[5..].chars().all(|c| c.is_ascii_digit()) && !u[5..].starts_with('0'));
        assert_ne!(u, uid_from([0xAC; 32]));
    }

    #[test]
    fn dither_is_uniform_and_montage_round_trips() {
        let m: f64 = (0..100_000).map(dither).sum::<f64>() / 100_000.0;
        assert!((m - 0.5).abs() < 0.005, "{m}");
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
        let p: Vec<i32> = (0..12).collect();
        let i = replan(&p, 2, 2, false);
        assert_eq!(i, vec![0, 2, 4, 1, 3, 5, 6, 8, 10, 7, 9, 11]);
        assert_eq!(replan(&i, 2, 2, true), p);
    }
}

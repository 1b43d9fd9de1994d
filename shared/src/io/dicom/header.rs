//! Parsing and checking a DICOM file: every attribute the pixel data depends on is checked
//! against the Pixel Data element before anything is decoded, and errors name the attribute.

use std::io::Cursor;
use std::path::Path;

use dicom_core::Tag;
use dicom_core::header::HasLength;
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_pixeldata::PixelDecoder;

use super::scan;
use super::stored::{replan, stored_value};
use super::{DicomImage, Photometric, Window, dicom_err, first_line, is_dicom};
use crate::error::{Error, Result};
use crate::io::Limits;

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
        // Nesting and declared lengths are checked before dicom-rs recurses or allocates.
        scan::prescan(path, bytes, limits.max_alloc)?;
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
}

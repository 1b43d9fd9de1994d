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
use super::{
    DicomImage, FrameDisplay, Photometric, VoiLut, Window, WindowSource, dicom_err, first_line,
    is_dicom,
};
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
        let scanned = scan::prescan(path, bytes, limits.max_alloc)?;
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
            // Indices into a colour table: expanded to RGB below and written as a derived RGB
            // instance (a mark cannot be added to indices as to brightness).
            ("PALETTE COLOR", 1) => Photometric::Rgb,
            ("PALETTE COLOR", n) => {
                return Err(dicom_err(
                    path,
                    "Samples per Pixel (0028,0002)",
                    format!("{n} does not match Photometric Interpretation PALETTE COLOR"),
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
        let palette = (pi_text == "PALETTE COLOR")
            .then(|| Palette::read(path, &obj))
            .transpose()?;
        // A palette image becomes the RGB image it displays as: three samples of the table's
        // depth per pixel, unsigned.
        let (spp, bits_allocated, bits_stored, signed, raw, stored) = match &palette {
            Some(p) => {
                let rgb: Vec<u16> = stored.iter().flat_map(|&i| p.rgb(i)).collect();
                let values = rgb.iter().map(|&v| i32::from(v)).collect();
                (3, i64::from(p.bits), p.bits, false, rgb, values)
            }
            None => (spp, bits_allocated, bits_stored, signed, raw, stored),
        };
        let display = frame_displays(&obj, frames, &stored);
        let first = &display[0];
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
            rescale: first.rescale,
            window: first.marking_window(),
            window_from_file: first.source != WindowSource::ValueRange,
            display,
            inverse_presentation: obj
                .get(tags::PRESENTATION_LUT_SHAPE)
                .and_then(|e| e.to_str().ok())
                .is_some_and(|v| v.trim() == "INVERSE"),
            modality,
            transcoded: !native,
            palette_expanded: palette.is_some(),
            transfer_syntax: ts,
            stored,
            raw,
            planar,
            pixel_value: scanned.pixel_value,
            obj,
        })
    }
}

type Object = dicom_object::InMemDicomObject;

/// The first item of a sequence attribute.
fn first_item(obj: &Object, tag: Tag) -> Option<&Object> {
    obj.get(tag)?.items()?.first()
}

fn floats(obj: &Object, tag: Tag) -> Vec<f64> {
    obj.get(tag)
        .and_then(|e| e.to_multi_float64().ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|v| v.is_finite())
        .collect()
}

/// The windows a data set (or functional group item) declares: Window Center and Width
/// paired value by value; widths below 1 are not windows.
fn windows_in(obj: &Object) -> Vec<Window> {
    floats(obj, tags::WINDOW_CENTER)
        .into_iter()
        .zip(floats(obj, tags::WINDOW_WIDTH))
        .filter(|&(_, w)| w >= 1.0)
        .map(|(center, width)| Window { center, width })
        .collect()
}

/// Rescale Slope and Intercept of a data set or functional group item, if it has them (a
/// slope of 0 is read as 1).
fn rescale_in(obj: &Object) -> Option<(f64, f64)> {
    let slope = floats(obj, tags::RESCALE_SLOPE).first().copied();
    let intercept = floats(obj, tags::RESCALE_INTERCEPT).first().copied();
    if slope.is_none() && intercept.is_none() {
        return None;
    }
    let slope = slope.filter(|&s| s != 0.0).unwrap_or(1.0);
    Some((slope, intercept.unwrap_or(0.0)))
}

/// A PALETTE COLOR image's three tables (PS3.3 C.7.6.3.1.5): indices from `first` on map
/// to red, green and blue entries; indices outside map to the first or last entry.
struct Palette {
    first: i64,
    tables: [Vec<u16>; 3],
    bits: u16,
}

impl Palette {
    fn read(path: &Path, obj: &Object) -> Result<Self> {
        let attr = "Palette Color Lookup Table (0028,1101-1203)";
        if obj
            .get(tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA)
            .is_some()
        {
            return Err(Error::Unsupported {
                path: path.into(),
                what: "Segmented Palette Color Lookup Table Data (0028,1221): only plain tables are expanded".into(),
            });
        }
        let mut tables: [Vec<u16>; 3] = Default::default();
        let mut header = None;
        let pairs = [
            (
                tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            ),
            (
                tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            ),
            (
                tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            ),
        ];
        for (table, (descriptor, data)) in tables.iter_mut().zip(pairs) {
            let d: Vec<i64> = obj
                .get(descriptor)
                .and_then(|e| e.to_multi_int().ok())
                .filter(|d| d.len() == 3)
                .ok_or_else(|| dicom_err(path, attr, "a table descriptor is missing"))?;
            let n = if d[0] == 0 { 65536 } else { d[0] as usize };
            let bits = d[2];
            if bits != 8 && bits != 16 {
                return Err(dicom_err(path, attr, format!("{bits} bits per entry")));
            }
            let words: Vec<i64> = obj
                .get(data)
                .and_then(|e| e.to_multi_int().ok())
                .ok_or_else(|| dicom_err(path, attr, "table data is missing"))?;
            if words.len() < n {
                return Err(dicom_err(
                    path,
                    attr,
                    format!("{} entries where the descriptor says {n}", words.len()),
                ));
            }
            // 8-bit entries are written in the low byte by most encoders and in the high
            // byte by some: a value above 255 says which.
            let high = bits == 8 && words[..n].iter().any(|&w| w > 255);
            *table = words[..n]
                .iter()
                .map(|&w| {
                    let w = w.clamp(0, 65535) as u16;
                    if high { w >> 8 } else { w }
                })
                .collect();
            match header {
                None => header = Some((d[1], bits)),
                Some(h) if h != (d[1], bits) => {
                    return Err(dicom_err(
                        path,
                        attr,
                        "the three tables disagree on the first index or the bits per entry",
                    ));
                }
                Some(_) => {}
            }
        }
        let (first, bits) = header.expect("three descriptors read");
        // 16-bit entries that are 8-bit colours scaled by 257 (the usual encoding) are written
        // back as 8-bit RGB, exactly: what ultrasound's IOD requires of RGB.
        let eight = bits == 8 || tables.iter().flatten().all(|&v| v % 257 == 0);
        if bits == 16 && eight {
            for t in &mut tables {
                t.iter_mut().for_each(|v| *v /= 257);
            }
        }
        Ok(Palette {
            first,
            tables,
            bits: if eight { 8 } else { 16 },
        })
    }

    fn rgb(&self, index: i32) -> [u16; 3] {
        self.tables.each_ref().map(|t| {
            let i = (i64::from(index) - self.first).clamp(0, t.len() as i64 - 1);
            t[i as usize]
        })
    }
}

/// A VOI LUT Sequence item's table: LUT Descriptor (entries, 0 meaning 65536; first mapped
/// value; bits per entry) and LUT Data. `None` when it does not hold together (then it is
/// ignored, as a viewer would fall back to a window).
fn voi_lut(item: &Object) -> Option<VoiLut> {
    let d: Vec<i64> = item.get(tags::LUT_DESCRIPTOR)?.to_multi_int().ok()?;
    let (&n, &first, &bits) = (d.first()?, d.get(1)?, d.get(2)?);
    let n = if n == 0 { 65536 } else { n as usize };
    if !(8..=16).contains(&bits) {
        return None;
    }
    let data: Vec<u16> = item
        .get(tags::LUT_DATA)?
        .to_multi_int::<i64>()
        .ok()?
        .into_iter()
        .map(|v| v.clamp(0, 65535) as u16)
        .collect();
    if data.len() < n || n < 2 {
        return None;
    }
    Some(VoiLut {
        first: first as f64,
        data: data[..n].to_vec(),
        max: ((1u32 << bits) - 1) as f64,
    })
}

/// The windows of a functional group item's Frame VOI LUT Sequence.
fn voi(group: Option<&Object>) -> Option<Vec<Window>> {
    group
        .and_then(|g| first_item(g, tags::FRAME_VOILUT_SEQUENCE))
        .map(windows_in)
}

/// A functional group item's Pixel Value Transformation Sequence item, when it holds a
/// rescale.
fn pvt(group: Option<&Object>) -> Option<&Object> {
    group
        .and_then(|g| first_item(g, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE))
        .filter(|t| rescale_in(t).is_some())
}

/// Rescale Type (0028,1054) of a data set, when given.
fn rescale_type(obj: &Object) -> Option<String> {
    obj.get(tags::RESCALE_TYPE)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Each frame's rescale and windows, looked up as viewers do: the frame's item of the
/// Per-Frame Functional Groups Sequence, then the Shared Functional Groups Sequence (Frame VOI
/// LUT Sequence for windows, Pixel Value Transformation Sequence for the rescale), then the
/// top level; without any window, the value range of all frames in modality units.
fn frame_displays(obj: &Object, frames: usize, stored: &[i32]) -> Vec<FrameDisplay> {
    let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame: Vec<&Object> = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .map(|items| items.iter().collect())
        .unwrap_or_default();
    let top_windows = windows_in(obj);
    let lut = first_item(obj, tags::VOILUT_SEQUENCE)
        .and_then(voi_lut)
        .map(std::sync::Arc::new);
    let mut out: Vec<FrameDisplay> = (0..frames)
        .map(|f| {
            let own = per_frame.get(f).copied();
            // The rescale and its type come from one data set: the frame's functional group,
            // the shared one, or the top level.
            let transform = pvt(own).or_else(|| pvt(shared)).unwrap_or(obj);
            let rescale = rescale_in(transform).unwrap_or((1.0, 0.0));
            let (windows, source) = match (voi(own), voi(shared)) {
                (Some(w), _) if !w.is_empty() => (w, WindowSource::PerFrame),
                (_, Some(w)) if !w.is_empty() => (w, WindowSource::Shared),
                _ if !top_windows.is_empty() => (top_windows.clone(), WindowSource::TopLevel),
                _ => (Vec::new(), WindowSource::ValueRange),
            };
            let source = if windows.is_empty() && lut.is_some() {
                WindowSource::VoiLut
            } else {
                source
            };
            FrameDisplay {
                rescale,
                rescale_type: rescale_type(transform).or_else(|| rescale_type(obj)),
                windows,
                source,
                lut: lut.clone(),
            }
        })
        .collect();
    if out.iter().any(|d| d.windows.is_empty() && d.lut.is_none()) {
        // The value range over every frame, each through its own rescale.
        let fl = stored.len() / frames.max(1);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (f, d) in out.iter().enumerate() {
            let (slope, intercept) = d.rescale;
            let (a, b) = stored[f * fl..(f + 1) * fl]
                .iter()
                .fold((i32::MAX, i32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            for v in [a, b] {
                let m = f64::from(v) * slope + intercept;
                lo = lo.min(m);
                hi = hi.max(m);
            }
        }
        let range = Window {
            center: (lo + hi) / 2.0 + 0.5,
            width: (hi - lo + 1.0).max(1.0),
        };
        for d in out
            .iter_mut()
            .filter(|d| d.windows.is_empty() && d.lut.is_none())
        {
            d.windows.push(range);
        }
    }
    out
}

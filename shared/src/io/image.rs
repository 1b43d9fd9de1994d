//! PNG, JPEG, TIFF and WebP through the `image` crate, to and from [`Raster`].

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageBuffer, ImageReader};

use crate::error::{Error, Result};
use crate::io::atomic::{Staged, stage};
use crate::io::{Format, Limits, read_input};
use crate::raster::{Raster, Samples};

/// Output settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// JPEG quality, 1..=100.
    pub jpeg_quality: u8,
    /// Replace an existing output.
    pub force: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            jpeg_quality: 95,
            force: false,
        }
    }
}

/// Reads an image file, sniffing the format from its content.
///
/// # Errors
/// Unreadable, empty, unknown-format, over-limit, truncated or corrupt files, and sample
/// types other than 8/16-bit integers.
pub fn read(path: &Path, limits: &Limits) -> Result<(Raster, Format)> {
    decode(path, &read_input(path, limits)?, limits)
}

/// Decodes image bytes (`path` only names the source in errors).
///
/// # Errors
/// As [`read`].
pub fn decode(path: &Path, bytes: &[u8], limits: &Limits) -> Result<(Raster, Format)> {
    decode_full(path, bytes, limits).map(|d| (d.raster, d.format))
}

/// What a raster file carries besides its samples, kept on a stamped copy (issue 11,
/// finding 7: JPEG outputs lost the EXIF orientation and the ICC profile).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The ICC colour profile.
    pub icc: Option<Vec<u8>>,
    /// The EXIF block (TIFF-structured, without JPEG's "Exif\0\0" prefix).
    pub exif: Option<Vec<u8>>,
    /// The EXIF orientation (1 to 8; 1 is upright), from the EXIF block or a TIFF's own tag.
    pub orientation: u8,
    /// When the file holds more than one image (an animated PNG or WebP, a multi-page TIFF):
    /// what it holds, in words. Only the first image is decoded.
    pub more_images: Option<String>,
}

impl Metadata {
    /// Nothing besides the samples.
    pub fn none() -> Self {
        Metadata {
            orientation: 1,
            ..Metadata::default()
        }
    }
}

/// A decoded raster file.
pub struct Decoded {
    /// The samples (of the first image).
    pub raster: Raster,
    /// The format read.
    pub format: Format,
    /// Colour profile, EXIF, orientation, further images.
    pub metadata: Metadata,
}

/// Decodes image bytes with their metadata (`path` only names the source in errors).
///
/// # Errors
/// As [`read`].
pub fn decode_full(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Decoded> {
    if bytes.is_empty() {
        return Err(Error::UnknownFormat {
            path: path.into(),
            why: "the file is empty".into(),
        });
    }
    let format = Format::sniff(bytes).ok_or_else(|| Error::UnknownFormat {
        path: path.into(),
        why: "not PNG, JPEG, TIFF or WebP".into(),
    })?;
    if format == Format::Dicom {
        return Err(Error::UnknownFormat {
            path: path.into(),
            why: "DICOM, where a PNG, JPEG, TIFF or WebP image was expected".into(),
        });
    }
    let decode_err = |e: image::ImageError| match e {
        image::ImageError::Limits(l) => Error::Limits {
            path: path.into(),
            why: l.to_string(),
            limit: format!("{} bytes of decoder memory", limits.max_alloc),
        },
        other => Error::Decode {
            path: path.into(),
            format,
            source: Box::new(other),
        },
    };
    let reader = |limited: bool| -> Result<ImageReader<Cursor<&[u8]>>> {
        let mut r = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|source| Error::Io {
                path: path.into(),
                source,
            })?;
        if limited {
            let mut l = image::Limits::default();
            l.max_image_width = Some(limits.max_side);
            l.max_image_height = Some(limits.max_side);
            l.max_alloc = Some(limits.max_alloc);
            r.limits(l);
        } else {
            // Reading the header allocates nothing sized by it.
            r.no_limits();
        }
        Ok(r)
    };
    // Declared dimensions first: nothing is allocated from a header we have not checked.
    let (w, h) = reader(false)?.into_dimensions().map_err(decode_err)?;
    limits.check(w, h).map_err(|(why, limit)| Error::Limits {
        path: path.into(),
        why,
        limit,
    })?;
    if format == Format::Jpeg {
        // zune-jpeg pads a truncated entropy stream with grey instead of failing.
        jpeg_complete(bytes).map_err(|why| Error::Decode {
            path: path.into(),
            format,
            source: why.into(),
        })?;
    }
    let mut metadata = Metadata::none();
    metadata.more_images = more_images(format, bytes);
    let mut decoder = reader(true)?.into_decoder().map_err(decode_err)?;
    {
        use image::ImageDecoder;
        // A profile or EXIF block that cannot be read is not worth refusing the image for.
        metadata.icc = decoder
            .icc_profile()
            .ok()
            .flatten()
            .filter(|v| !v.is_empty());
        metadata.exif = decoder
            .exif_metadata()
            .ok()
            .flatten()
            .filter(|v| !v.is_empty());
        metadata.orientation = decoder.orientation().map_or(1, |o| o.to_exif());
    }
    let img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let (channels, samples) = match img {
        DynamicImage::ImageLuma8(b) => (1, Samples::U8(b.into_raw())),
        DynamicImage::ImageLumaA8(b) => (2, Samples::U8(b.into_raw())),
        DynamicImage::ImageRgb8(b) => (3, Samples::U8(b.into_raw())),
        DynamicImage::ImageRgba8(b) => (4, Samples::U8(b.into_raw())),
        DynamicImage::ImageLuma16(b) => (1, Samples::U16(b.into_raw())),
        DynamicImage::ImageLumaA16(b) => (2, Samples::U16(b.into_raw())),
        DynamicImage::ImageRgb16(b) => (3, Samples::U16(b.into_raw())),
        DynamicImage::ImageRgba16(b) => (4, Samples::U16(b.into_raw())),
        other => {
            return Err(Error::Unsupported {
                path: path.into(),
                what: format!("{:?} samples (only 8/16-bit integers)", other.color()),
            });
        }
    };
    Ok(Decoded {
        raster: Raster {
            width,
            height,
            channels,
            samples,
        },
        format,
        metadata,
    })
}

/// Whether the file holds more images than the one decoded, in words.
fn more_images(format: Format, bytes: &[u8]) -> Option<String> {
    match format {
        Format::Png => image::codecs::png::PngDecoder::new(Cursor::new(bytes))
            .ok()?
            .is_apng()
            .ok()?
            .then(|| "an animated PNG (APNG)".to_string()),
        Format::WebP => image::codecs::webp::WebPDecoder::new(Cursor::new(bytes))
            .ok()?
            .has_animation()
            .then(|| "an animated WebP".to_string()),
        Format::Tiff => {
            let pages = tiff_pages(bytes);
            (pages > 1).then(|| format!("a TIFF of {pages} pages"))
        }
        _ => None,
    }
}

/// The number of images (IFDs) in a classic TIFF, following the chain of IFD offsets (at
/// most 10,000, and never the same offset twice).
fn tiff_pages(b: &[u8]) -> usize {
    let little = b.starts_with(b"II");
    let u16_at = |i: usize| -> Option<u16> {
        let x: [u8; 2] = b.get(i..i + 2)?.try_into().ok()?;
        Some(if little {
            u16::from_le_bytes(x)
        } else {
            u16::from_be_bytes(x)
        })
    };
    let u32_at = |i: usize| -> Option<u32> {
        let x: [u8; 4] = b.get(i..i + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        })
    };
    let mut seen = std::collections::HashSet::new();
    let mut next = u32_at(4).unwrap_or(0) as usize;
    let mut pages = 0;
    while next != 0 && pages < 10_000 && seen.insert(next) {
        let Some(n) = u16_at(next) else { break };
        pages += 1;
        next = u32_at(next + 2 + 12 * usize::from(n)).unwrap_or(0) as usize;
    }
    pages
}

/// A minimal EXIF block holding only an orientation (for a TIFF input's orientation tag
/// written to a format that carries it in EXIF).
fn exif_with_orientation(orientation: u8) -> Vec<u8> {
    let mut v = b"II*\0".to_vec();
    v.extend_from_slice(&8u32.to_le_bytes()); // IFD0 at byte 8
    v.extend_from_slice(&1u16.to_le_bytes()); // one entry
    v.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    v.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    v.extend_from_slice(&1u32.to_le_bytes()); // one value
    v.extend_from_slice(&u32::from(orientation).to_le_bytes()); // in the value field
    v.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    v
}

/// The EXIF block to write: the input's, or a minimal one for an orientation read from
/// elsewhere (a TIFF tag), or none.
fn exif_to_write(meta: &Metadata) -> Option<Vec<u8>> {
    meta.exif.clone().or_else(|| {
        (meta.orientation != 1 && meta.orientation <= 8)
            .then(|| exif_with_orientation(meta.orientation))
    })
}

/// Checks that a JPEG's marker structure runs to its end-of-image marker: segments are
/// walked by their lengths, entropy-coded data is scanned for the next marker (0xFF
/// followed by neither 0x00 stuffing nor a restart marker).
fn jpeg_complete(b: &[u8]) -> std::result::Result<(), &'static str> {
    const TRUNCATED: &str = "the file is truncated (no end-of-image marker)";
    let mut i = 2; // after SOI
    loop {
        // Skip fill bytes before a marker.
        while i < b.len() && b[i] == 0xFF && i + 1 < b.len() && b[i + 1] == 0xFF {
            i += 1;
        }
        if i + 1 >= b.len() {
            return Err(TRUNCATED);
        }
        if b[i] != 0xFF {
            return Err("corrupt marker structure");
        }
        let marker = b[i + 1];
        i += 2;
        match marker {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        if i + 2 > b.len() {
            return Err(TRUNCATED);
        }
        let len = usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
        if len < 2 || i + len > b.len() {
            return Err(TRUNCATED);
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data until a marker that is not stuffing or a restart.
            loop {
                if i + 1 >= b.len() {
                    return Err(TRUNCATED);
                }
                if b[i] == 0xFF
                    && b[i + 1] != 0x00
                    && !(0xD0..=0xD7).contains(&b[i + 1])
                    && b[i + 1] != 0xFF
                {
                    break;
                }
                i += 1;
            }
        }
    }
}

/// Converts a raster to an `image` buffer.
pub fn to_dynamic(r: &Raster) -> DynamicImage {
    let (w, h) = (r.width as u32, r.height as u32);
    let bad = "raster size matches its samples";
    match (&r.samples, r.channels) {
        (Samples::U8(v), 1) => {
            DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, v.clone()).expect(bad))
        }
        (Samples::U8(v), 2) => {
            DynamicImage::ImageLumaA8(ImageBuffer::from_raw(w, h, v.clone()).expect(bad))
        }
        (Samples::U8(v), 3) => {
            DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, v.clone()).expect(bad))
        }
        (Samples::U8(v), _) => {
            DynamicImage::ImageRgba8(ImageBuffer::from_raw(w, h, v.clone()).expect(bad))
        }
        (Samples::U16(v), 1) => {
            DynamicImage::ImageLuma16(ImageBuffer::from_raw(w, h, v.clone()).expect(bad))
        }
        (Samples::U16(v), 2) => {
            DynamicImage::ImageLumaA16(ImageBuffer::from_raw(w, h, v.clone()).expect(bad))
        }
        (Samples::U16(v), 3) => {
            DynamicImage::ImageRgb16(ImageBuffer::from_raw(w, h, v.clone()).expect(bad))
        }
        (Samples::U16(v), _) => {
            DynamicImage::ImageRgba16(ImageBuffer::from_raw(w, h, v.clone()).expect(bad))
        }
    }
}

/// Encodes a raster in `format` into `out` (`path` names the output in errors). JPEG and
/// WebP are 8-bit: 16-bit samples are reduced; JPEG drops alpha.
///
/// # Errors
/// [`Error::Encode`] when the encoder fails; [`Error::UnknownFormat`] for DICOM, which is
/// written from a DICOM input (`io::dicom`), never from a raster.
pub fn encode<W: std::io::Write + std::io::Seek>(
    r: &Raster,
    format: Format,
    opts: &WriteOptions,
    path: &Path,
    out: &mut W,
) -> Result<()> {
    encode_with(r, &Metadata::none(), format, opts, path, out)
}

/// As [`encode`], keeping `meta`'s ICC profile and EXIF block (with its orientation) in the
/// output. TIFF outputs keep the profile; EXIF or an orientation cannot be written to TIFF
/// here, and such an input is refused rather than written without them.
///
/// # Errors
/// As [`encode`]; [`Error::Unsupported`] for metadata the output format cannot carry.
pub fn encode_with<W: std::io::Write + std::io::Seek>(
    r: &Raster,
    meta: &Metadata,
    format: Format,
    opts: &WriteOptions,
    path: &Path,
    out: &mut W,
) -> Result<()> {
    use image::ImageEncoder;
    let img = to_dynamic(r);
    let enc_err = |e: image::ImageError| Error::Encode {
        path: path.into(),
        format,
        source: Box::new(e),
    };
    let exif = exif_to_write(meta);
    // Both image encoders used below accept a profile and EXIF; the error is for others.
    let with_meta = |enc: &mut dyn ImageEncoder| -> Result<()> {
        let unsupported = |what: &str| Error::Unsupported {
            path: path.into(),
            what: format!("writing the input's {what} to {}", format.name()),
        };
        if let Some(icc) = &meta.icc {
            enc.set_icc_profile(icc.clone())
                .map_err(|_| unsupported("ICC profile"))?;
        }
        if let Some(exif) = &exif {
            enc.set_exif_metadata(exif.clone())
                .map_err(|_| unsupported("EXIF metadata"))?;
        }
        Ok(())
    };
    match format {
        Format::Png => {
            let mut enc = image::codecs::png::PngEncoder::new(out);
            with_meta(&mut enc)?;
            img.write_with_encoder(enc).map_err(enc_err)
        }
        Format::Tiff => {
            if exif.is_some() {
                return Err(Error::Unsupported {
                    path: path.into(),
                    what: format!(
                        "the input's EXIF metadata{} cannot be written to TIFF by tracemark; write .png, .jpg or .webp to keep it",
                        if meta.orientation == 1 {
                            String::new()
                        } else {
                            format!(" (orientation {})", meta.orientation)
                        }
                    ),
                });
            }
            let mut enc = image::codecs::tiff::TiffEncoder::new(out);
            if let Some(icc) = &meta.icc {
                enc.set_icc_profile(icc.clone())
                    .map_err(|e| Error::Encode {
                        path: path.into(),
                        format,
                        source: Box::new(e),
                    })?;
            }
            img.write_with_encoder(enc).map_err(enc_err)
        }
        Format::Jpeg => {
            // jpeg-encoder: about 3x faster than image's encoder at the same quality;
            // full-resolution chroma (4:4:4), as a delivered copy should be.
            let (data, colour) = if r.colour_channels() == 1 {
                (img.to_luma8().into_raw(), jpeg_encoder::ColorType::Luma)
            } else {
                (img.to_rgb8().into_raw(), jpeg_encoder::ColorType::Rgb)
            };
            let (Ok(w), Ok(h)) = (u16::try_from(r.width), u16::try_from(r.height)) else {
                return Err(Error::Encode {
                    path: path.into(),
                    format,
                    source: format!(
                        "{}x{} is beyond JPEG's 65535-pixel limit",
                        r.width, r.height
                    )
                    .into(),
                });
            };
            let q = opts.jpeg_quality.clamp(1, 100);
            let jpeg_err = |e: jpeg_encoder::EncodingError| Error::Encode {
                path: path.into(),
                format,
                source: Box::new(e),
            };
            let mut enc = jpeg_encoder::Encoder::new(out, q);
            enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_4_4);
            if let Some(exif) = &exif {
                // APP1 "Exif\0\0" first, as cameras write it.
                let mut app1 = b"Exif\0\0".to_vec();
                app1.extend_from_slice(exif);
                enc.add_app_segment(1, app1).map_err(jpeg_err)?;
            }
            if let Some(icc) = &meta.icc {
                enc.add_icc_profile(icc).map_err(jpeg_err)?;
            }
            enc.encode(&data, w, h, colour).map_err(jpeg_err)
        }
        Format::Dicom => Err(Error::UnknownFormat {
            path: path.into(),
            why: "only DICOM inputs can be written as DICOM".into(),
        }),
        Format::WebP => {
            let img = match (r.colour_channels(), r.channels) {
                (1, 1) => DynamicImage::ImageLuma8(img.to_luma8()),
                (1, _) => DynamicImage::ImageLumaA8(img.to_luma_alpha8()),
                (_, 3) => DynamicImage::ImageRgb8(img.to_rgb8()),
                _ => DynamicImage::ImageRgba8(img.to_rgba8()),
            };
            let mut enc = image::codecs::webp::WebPEncoder::new_lossless(out);
            with_meta(&mut enc)?;
            img.write_with_encoder(enc).map_err(enc_err)
        }
    }
}

/// An encoded image ready to be written.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The output format.
    pub format: Format,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

impl Encoded {
    /// Whether the format may have changed the samples (JPEG).
    pub fn is_lossy(&self) -> bool {
        self.format == Format::Jpeg
    }
}

/// Encodes a raster in memory; the format comes from the output path's extension.
///
/// # Errors
/// Unknown extension or encoder failure.
pub fn encode_for(r: &Raster, path: &Path, opts: &WriteOptions) -> Result<Encoded> {
    encode_for_with(r, &Metadata::none(), path, opts)
}

/// As [`encode_for`], keeping `meta` (see [`encode_with`]).
///
/// # Errors
/// As [`encode_with`].
pub fn encode_for_with(
    r: &Raster,
    meta: &Metadata,
    path: &Path,
    opts: &WriteOptions,
) -> Result<Encoded> {
    let format = Format::from_extension(path).ok_or_else(|| Error::UnknownFormat {
        path: path.into(),
        why: "unknown output format; use a .png, .jpg, .tif or .webp name".into(),
    })?;
    let mut buf = Cursor::new(Vec::new());
    encode_with(r, meta, format, opts, path, &mut buf)?;
    Ok(Encoded {
        format,
        bytes: buf.into_inner(),
    })
}

/// Writes encoded bytes atomically.
///
/// # Errors
/// Existing output without `force`, or a file-system failure.
pub fn write_encoded(e: &Encoded, path: &Path, force: bool) -> Result<()> {
    stage_encoded(e, path, force)?.persist()
}

/// Writes encoded bytes to a synced temporary file beside `path`; `persist` the result to
/// put it in place.
///
/// # Errors
/// Existing output without `force`, or a file-system failure.
pub fn stage_encoded(e: &Encoded, path: &Path, force: bool) -> Result<Staged> {
    stage(path, force, |w| {
        std::io::Write::write_all(w, &e.bytes).map_err(|source| Error::io(path, source))
    })
}

/// Writes a raster atomically; the format comes from the extension.
///
/// # Errors
/// Unknown extension, existing output without `force`, encoder or file-system failure.
pub fn write(r: &Raster, path: &Path, opts: &WriteOptions) -> Result<Format> {
    let e = encode_for(r, path, opts)?;
    write_encoded(&e, path, opts.force)?;
    Ok(e.format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raster(channels: usize, sixteen: bool) -> Raster {
        let n = 20 * 10 * channels;
        Raster {
            width: 20,
            height: 10,
            channels,
            samples: if sixteen {
                Samples::U16((0..n).map(|i| (i * 331 % 65536) as u16).collect())
            } else {
                Samples::U8((0..n).map(|i| (i * 7 % 256) as u8).collect())
            },
        }
    }

    #[test]
    fn lossless_formats_round_trip_bit_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for (ext, sixteen) in [
            ("png", false),
            ("png", true),
            ("tif", true),
            ("webp", false),
        ] {
            for ch in [1, 3, 4] {
                let r = raster(ch, sixteen);
                let p = dir.path().join(format!("x{ch}{sixteen}.{ext}"));
                write(&r, &p, &WriteOptions::default()).unwrap();
                let (back, _) = read(&p, &Limits::default()).unwrap();
                if ext == "webp" && ch == 1 {
                    // WebP has no grey mode: grey comes back as R = G = B.
                    let (Samples::U8(a), Samples::U8(b)) = (&r.samples, &back.samples) else {
                        panic!("8-bit WebP")
                    };
                    assert!(a.iter().zip(b.chunks_exact(3)).all(|(g, p)| p == [*g; 3]));
                } else {
                    assert_eq!(back, r, "{ext} {ch} {sixteen}");
                }
            }
        }
    }

    #[test]
    fn rejects_empty_unknown_truncated_and_huge() {
        let dir = tempfile::tempdir().unwrap();
        let l = Limits::default();
        let p = dir.path().join("e.png");
        std::fs::write(&p, b"").unwrap();
        assert!(matches!(read(&p, &l), Err(Error::UnknownFormat { .. })));
        std::fs::write(&p, b"hello world, not an image").unwrap();
        assert!(matches!(read(&p, &l), Err(Error::UnknownFormat { .. })));
        let good = dir.path().join("g.png");
        write(&raster(3, false), &good, &WriteOptions::default()).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(read(&p, &l), Err(Error::Decode { .. })));
        // A PNG header declaring 100000 x 100000 px.
        let mut bomb = bytes[..33].to_vec();
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        std::fs::write(&p, &bomb).unwrap();
        assert!(matches!(
            read(&p, &l),
            Err(Error::Limits { .. }) | Err(Error::Decode { .. })
        ));
    }
}

//! A file opened for stamping or examination: a raster (PNG, JPEG, TIFF, WebP) or a DICOM
//! object, decided once, by content. The only place that dispatches on the input format.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::io::dicom::DicomImage;
use crate::io::image::Metadata;
use crate::io::{Format, Limits, image, read_input};
use crate::mark::layout::Layout;
use crate::raster::{Plane, Raster};

/// What a [`Document`] holds.
pub enum Content {
    /// A raster image and the format it was read from.
    Raster {
        /// The decoded samples.
        raster: Raster,
        /// The input's format.
        format: Format,
        /// Colour profile, EXIF and orientation (kept on the stamped copy); further images.
        metadata: Metadata,
    },
    /// A DICOM object with its decoded stored values.
    Dicom(Box<DicomImage>),
}

/// A decoded input file.
pub struct Document {
    path: PathBuf,
    content: Content,
}

impl Document {
    /// Reads and decodes `path` (the format from the content, never the name).
    ///
    /// # Errors
    /// Unreadable files, files above `limits`, unknown formats and anything the format's
    /// decoder refuses; every message names `path`.
    pub fn open(path: &Path, limits: &Limits) -> Result<Self> {
        Self::decode(path, &read_input(path, limits)?, limits)
    }

    /// Decodes a file's bytes (`path` names it in errors).
    ///
    /// # Errors
    /// As [`Document::open`].
    pub fn decode(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Self> {
        let content = if Format::sniff(bytes) == Some(Format::Dicom) {
            Content::Dicom(Box::new(DicomImage::decode(path, bytes, limits)?))
        } else {
            let d = image::decode_full(path, bytes, limits)?;
            Content::Raster {
                raster: d.raster,
                format: d.format,
                metadata: d.metadata,
            }
        };
        Ok(Document {
            path: path.into(),
            content,
        })
    }

    /// A raster held in memory (tests, benchmarks, the Python API), named `path`.
    pub fn from_raster(path: &Path, raster: Raster, format: Format) -> Self {
        Document {
            path: path.into(),
            content: Content::Raster {
                raster,
                format,
                metadata: Metadata::none(),
            },
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The input format.
    pub fn format(&self) -> Format {
        match &self.content {
            Content::Raster { format, .. } => *format,
            Content::Dicom(_) => Format::Dicom,
        }
    }

    /// The decoded content.
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// The decoded content, by value.
    pub fn into_content(self) -> Content {
        self.content
    }

    /// Frame width and height in pixels.
    pub fn size(&self) -> (usize, usize) {
        match &self.content {
            Content::Raster { raster, .. } => (raster.width, raster.height),
            Content::Dicom(d) => (d.cols, d.rows),
        }
    }

    /// How a mark is laid over the document's frames (a raster has one frame).
    ///
    /// # Errors
    /// [`crate::Error::TooSmall`] (naming the file) when even a montage of all frames is
    /// smaller than one tile.
    pub fn layout(&self) -> Result<Layout> {
        match &self.content {
            Content::Raster { .. } => Ok(Layout::PerFrame),
            Content::Dicom(d) => {
                Layout::choose(d.frames, d.cols, d.rows).map_err(|e| e.in_file(&self.path))
            }
        }
    }

    /// The display planes of every frame (8-bit display units: a raster's luminance, a
    /// DICOM frame through its own window).
    pub fn frame_planes(&self) -> Vec<Plane> {
        match &self.content {
            Content::Raster { raster, .. } => vec![raster.luminance()],
            Content::Dicom(d) => (0..d.frames)
                .map(|f| d.display_frame(f, None, true))
                .collect(),
        }
    }

    /// The plane the detector examines: the luminance; for DICOM the mean of the frames'
    /// display planes, or their montage when the frames are too small to carry a mark each.
    ///
    /// # Errors
    /// As [`Document::layout`], for images too small to have been marked.
    pub fn detection_plane(&self) -> Result<Plane> {
        Ok(self.layout()?.detection_plane(self.frame_planes()))
    }
}

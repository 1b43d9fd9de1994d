//! A file opened for stamping or examination: a raster (PNG, JPEG, TIFF, WebP) or a DICOM
//! object, decided once, by content. The only place that dispatches on the input format.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::io::dicom::DicomImage;
use crate::io::image::Metadata;
use crate::io::{Format, Limits, image, read_input};
use crate::mark::layout::Layout;
use crate::raster::{Plane, Raster};

/// The largest window side a detection examines (see [`Document::detection_window`]).
pub const MAX_EXAMINED_SIDE: usize = 4096;

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
        Ok(self.detection_window()?.0)
    }

    /// [`Document::detection_plane`] within [`MAX_EXAMINED_SIDE`]: frames larger than that
    /// are examined in their central window (thousands of tiles, far more than a claim
    /// needs), so that the memory an examination takes is bounded whatever the image's size
    /// (a 16384 x 16384 image took 5.5 GB in float planes). Returns the plane and the window
    /// (x, y, width, height) in frame coordinates.
    ///
    /// # Errors
    /// As [`Document::layout`].
    pub fn detection_window(&self) -> Result<(Plane, [usize; 4])> {
        let layout = self.layout()?;
        let (w, h) = self.size();
        let (ww, wh) = (w.min(MAX_EXAMINED_SIDE), h.min(MAX_EXAMINED_SIDE));
        if (ww, wh) == (w, h) || layout != Layout::PerFrame {
            return Ok((layout.detection_plane(self.frame_planes()), [0, 0, w, h]));
        }
        let (x0, y0) = ((w - ww) / 2, (h - wh) / 2);
        let plane = match &self.content {
            Content::Raster { raster, .. } => raster.luminance_window(x0, y0, ww, wh),
            Content::Dicom(d) => {
                // Frame by frame, each cropped before the next is rendered.
                let mut mean = vec![0f32; ww * wh];
                let n = d.frames as f32;
                for f in 0..d.frames {
                    let full = d.display_frame(f, None, true);
                    for y in 0..wh {
                        let src = &full.data[(y0 + y) * w + x0..(y0 + y) * w + x0 + ww];
                        for (m, &v) in mean[y * ww..(y + 1) * ww].iter_mut().zip(src) {
                            *m += v / n;
                        }
                    }
                }
                Plane::from_vec(ww, wh, mean)
            }
        };
        Ok((plane, [x0, y0, ww, wh]))
    }
}

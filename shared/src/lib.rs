//! tracemark: forensic watermarking of images.
//!
//! A keyed, tiled spread-spectrum mark carries a 64-bit release id in display luminance;
//! the detector recovers it blindly from a leaked copy (recompressed, rescaled, cropped,
//! rotated, inverted) and says how sure it is.
//!
//! ```
//! use tracemark::mark::detect::DetectOptions;
//! use tracemark::pipeline::{Examiner, StampOptions, Stamper};
//! use tracemark::{SecretKey, testsignal};
//! let key = SecretKey::from_bytes([1; 32]);
//! // A smooth synthetic scene with a little texture.
//! let image = testsignal::to_grey8(&testsignal::photo_like(256, 256, 7));
//! let stamper = Stamper::new(&key, 0xfeed, StampOptions::default()).unwrap();
//! let (marked, _) = stamper.stamp_raster(&image).unwrap();
//! let examiner = Examiner::new(&key, DetectOptions::default());
//! let finding = examiner
//!     .examine_plane("copy.png".as_ref(), &marked.luminance())
//!     .unwrap();
//! assert_eq!(finding.payload.as_deref(), Some("000000000000feed"));
//! ```
//!
//! Files go through [`pipeline::Document`] (opened by content: PNG, JPEG, TIFF, WebP or
//! DICOM); [`pipeline::Release`] writes stamped files and records them in a [`ledger`].
#![warn(missing_docs)]

pub mod coding;
pub mod error;
pub mod evidence;
pub mod exit;
pub mod io;
pub mod key;
pub mod ledger;
pub mod mark;
pub mod pipeline;
pub mod prng;
pub mod raster;
pub mod report;
pub mod restore;
mod simd;
pub mod stats;
pub mod testsignal;

pub use error::{Error, Result, chain_text};
pub use key::SecretKey;

//! tracemark: forensic watermarking of images.
//!
//! A keyed, tiled spread-spectrum mark carries a 64-bit release id in display luminance;
//! the detector recovers it blindly from a leaked copy (recompressed, rescaled, cropped,
//! rotated, inverted) and says how sure it is.
//!
//! ```
//! use tracemark::{SecretKey, mark::{pattern::KeyPatterns, embed::{embed, EmbedOptions},
//!     detect::{Detector, DetectOptions}}, raster::Plane};
//! let key = SecretKey::from_bytes([1; 32]);
//! // A smooth synthetic scene with a little texture.
//! let plane = Plane::from_vec(256, 256, (0..256 * 256)
//!     .map(|i| { let (x, y) = ((i % 256) as f32, (i / 256) as f32);
//!                128.0 + 60.0 * (x / 23.0).sin() * (y / 31.0).cos() + ((i * 7919) % 7) as f32 })
//!     .collect());
//! let e = embed(&plane, &KeyPatterns::new(&key), 0xfeed, &EmbedOptions::default()).unwrap();
//! let marked = Plane::from_vec(256, 256, plane.data.iter().zip(&e.delta)
//!     .map(|(x, d)| (x + *d as f32).clamp(0.0, 255.0)).collect());
//! let d = Detector::new(&key).detect(&marked, &DetectOptions::default()).unwrap();
//! assert_eq!(d.payload, Some(0xfeed));
//! ```
#![warn(missing_docs)]

pub mod coding;
pub mod error;
pub mod io;
pub mod key;
pub mod ledger;
pub mod mark;
pub mod prng;
pub mod raster;
pub mod report;
pub mod stats;

pub use error::{Error, Result};
pub use key::SecretKey;

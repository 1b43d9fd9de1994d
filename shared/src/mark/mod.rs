//! The watermark maths: pure functions of slices and planes; no file I/O, no printing.

pub mod detect;
pub mod dsp;
pub mod embed;
pub mod informed;
pub mod pattern;

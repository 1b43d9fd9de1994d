//! The watermark maths: pure functions of slices and planes; no file I/O, no printing.

pub mod canvas;
pub mod content;
pub mod detect;
pub mod dsp;
pub mod embed;
mod fold;
pub mod informed;
pub mod keystone;
mod lattice;
pub mod layout;
pub mod pattern;
pub mod reference;
pub mod screen;
pub mod strength;

pub use fold::whiten;

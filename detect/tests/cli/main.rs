//! Integration tests of tracemark-detect: real binary, real testdata images, leaks made in
//! Rust. Marks are stamped through the library (the embed binary has its own tests).

mod attacks;
mod bad_input;
mod ledger;
mod util;

//! I/O adapters

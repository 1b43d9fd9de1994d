//! The pipeline from file to verdict, used by both tools, the benchmarks, the tests and
//! (later) the Python API, so that each job exists once:
//!
//! - [`Document`]: a file opened by content (raster or DICOM), its display planes.
//! - [`Stamper`]: built once per key, payload and options; stamps documents into output
//!   bytes and a record.
//! - [`Release`]: writes stamped files atomically and records them in the ledger.
//! - [`Examiner`]: built once per key (and the ledger's releases); examines files into a
//!   [`crate::report::DetectionRecord`], naming releases by the attribution policy.
//!
//! See `docs/architecture.md` for the data flow and the module of each stage.

mod document;
mod examine;
mod release;
mod stamp;

pub mod budget;

pub use budget::{MemoryBudget, Work, footprint, reuse_freed_memory};
pub use document::{Content, Document, MAX_EXAMINED_SIDE};
pub use examine::{Examiner, View};
pub use release::{Release, create_parent};
pub use stamp::{
    CLINICAL_MARGIN_DB, DicomMarked, RestoreData, SELF_CHECK_MARGIN, StampOptions, Stamped, Stamper,
};

//! Examination: an [`Examiner`] is built once per key (optionally with the ledger's
//! releases) and examines any number of files, each into a [`DetectionRecord`]. The
//! attribution policy (which releases are named, when collusion is suspected) lives here.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use crate::SecretKey;
use crate::error::Result;
use crate::io::Limits;
use crate::ledger::Ledger;
use crate::mark::detect::{DetectOptions, Detector};
use crate::mark::informed::{Residual, accuse};
use crate::pipeline::document::Document;
use crate::raster::Plane;
use crate::report::{
    AccusedRecord, DetectionRecord, PayloadStatus, ReleaseRecord, Verdict, iso_utc, payload_hex,
};

/// What the examiner needs from the ledger, read once.
struct Releases {
    ids: Vec<u64>,
    by_id: HashMap<u64, ReleaseRecord>,
}

impl Releases {
    fn load(ledger: &Ledger) -> Result<Self> {
        let mut by_id: HashMap<u64, ReleaseRecord> = HashMap::new();
        let mut ids = Vec::new();
        for e in ledger.entries()? {
            let id = e.release.release_id;
            let rec = by_id.entry(id).or_insert_with(|| {
                ids.push(id);
                ReleaseRecord {
                    release_id: payload_hex(id),
                    recipient: e.release.recipient.clone(),
                    created_utc: iso_utc(e.created_ms),
                    files: Vec::new(),
                }
            });
            rec.files.push(e.file.output_path.clone());
        }
        Ok(Releases { ids, by_id })
    }
}

/// Examines copies for one key.
pub struct Examiner {
    detector: Detector,
    key_id: String,
    options: DetectOptions,
    limits: Limits,
    releases: Option<Releases>,
}

impl Examiner {
    /// Prepares examination under `key` (patterns and FFT plans derived once).
    pub fn new(key: &SecretKey, options: DetectOptions) -> Self {
        Examiner {
            detector: Detector::new(key),
            key_id: key.key_id(),
            options,
            limits: Limits::default(),
            releases: None,
        }
    }

    /// Resolves payloads through `ledger` and runs the informed check against its releases.
    ///
    /// # Errors
    /// Ledger read errors.
    pub fn with_ledger(mut self, ledger: &Ledger) -> Result<Self> {
        self.releases = Some(Releases::load(ledger)?);
        Ok(self)
    }

    /// Reads, decodes and examines one file.
    ///
    /// # Errors
    /// Unreadable or undecodable files, images too small to examine; messages name the file.
    pub fn examine(&self, path: &Path) -> Result<DetectionRecord> {
        let doc = Document::open(path, &self.limits)?;
        let plane = doc.detection_plane()?;
        self.examine_plane(path, &plane)
            .map_err(|e| e.in_file(path))
    }

    /// Examines a display plane (8-bit display units) named `path` in the record.
    ///
    /// # Errors
    /// A plane too small to examine.
    pub fn examine_plane(&self, path: &Path, plane: &Plane) -> Result<DetectionRecord> {
        let start = Instant::now();
        let opts = &self.options;
        let d = self.detector.detect(plane, opts)?;
        // The ledger: a confirmed, issued id names its release. The informed check then
        // scores every release's fingerprint, whether or not the payload decoded: averaged
        // copies can decode to one colluder's id, and only the fingerprints name the others.
        // It never uses the payload codeword, whose overlaps between ids would name
        // innocents.
        let (mut release, mut accused, mut possible_collusion) = (None, Vec::new(), false);
        if let Some(rs) = &self.releases {
            release = d.payload.and_then(|p| rs.by_id.get(&p).cloned());
            let patterns = self.detector.patterns();
            if let Some(residual) = Residual::new(patterns, &d.chips) {
                accused = accuse(patterns, &residual, &rs.ids, opts.max_p)
                    .into_iter()
                    .map(|a| AccusedRecord {
                        release_id: payload_hex(a.release),
                        recipient: rs.by_id[&a.release].recipient.clone(),
                        z: (a.z * 100.0).round() / 100.0,
                        p_value: 10f64.powf(a.log10_p),
                    })
                    .collect();
            }
            let decoded = d.payload.map(payload_hex);
            possible_collusion = (d.payload.is_some() && release.is_none())
                || accused
                    .iter()
                    .any(|a| Some(&a.release_id) != decoded.as_ref());
        }
        let time_ms = start.elapsed().as_secs_f64() * 1e3;
        // A fingerprint named at p <= max_p also proves that a mark of this key is present.
        let verdict = if d.marked || !accused.is_empty() {
            Verdict::Marked
        } else {
            Verdict::NoMark
        };
        Ok(DetectionRecord {
            kind: "detection".into(),
            path: path.display().to_string(),
            verdict,
            payload: d.payload.map(payload_hex),
            payload_status: match (verdict == Verdict::Marked, d.payload) {
                (true, Some(_)) => PayloadStatus::Confirmed,
                (true, None) => PayloadStatus::Unreadable,
                _ => PayloadStatus::None,
            },
            p_value: d.p_value(),
            log10_p: (d.log10_p * 100.0).round() / 100.0,
            z: (d.z * 100.0).round() / 100.0,
            threshold_p: opts.max_p,
            transform: (verdict == Verdict::Marked).then_some(d.transform),
            candidates: d.candidates,
            time_ms: (time_ms * 10.0).round() / 10.0,
            key_id: self.key_id.clone(),
            release,
            accused,
            possible_collusion,
            nothing_to_examine: d.nothing_to_examine.map(String::from),
        })
    }
}

//! Examination: an [`Examiner`] is built once per key (optionally with the ledger's
//! releases) and examines any number of files, each into a [`DetectionRecord`]. The
//! attribution policy (which releases are named, when collusion is suspected) lives here.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use crate::SecretKey;
use crate::error::Result;
use crate::io::Format;
use crate::io::{Limits, read_input};
use crate::ledger::Ledger;
use crate::mark::content::{self, Descriptor, Registration};
use crate::mark::detect::{DetectOptions, Detection, Detector};
use crate::mark::informed::{self, accuse};
use crate::mark::reference;
use crate::mark::strength::{StrengthMap, strength_map};
use crate::pipeline::budget::{MemoryBudget, Work, footprint};
use crate::pipeline::document::Document;
use crate::raster::{Plane, Raster};
use crate::report::{
    AccusedRecord, ContentRecord, DetectionRecord, Footprint, NamedRecord, OriginalRecord,
    PayloadStatus, ReleaseRecord, Verdict, iso_utc, payload_hex,
};

/// What the examiner needs from the ledger, read once.
struct Releases {
    ids: Vec<u64>,
    by_id: HashMap<u64, ReleaseRecord>,
    /// Each release's files (output path) with their content descriptors.
    content: HashMap<u64, Vec<(String, Vec<Descriptor>)>>,
}

impl Releases {
    fn load(ledger: &Ledger) -> Result<Self> {
        let mut by_id: HashMap<u64, ReleaseRecord> = HashMap::new();
        let mut content: HashMap<u64, Vec<(String, Vec<Descriptor>)>> = HashMap::new();
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
            content.entry(id).or_default().push((
                e.file.output_path.clone(),
                content::decode(&e.file.content).unwrap_or_default(),
            ));
        }
        Ok(Releases {
            ids,
            by_id,
            content,
        })
    }

    /// The distinct sizes (width, height) of the released images (of each frame of a
    /// multi-frame file), in the order first met.
    fn sizes(&self) -> Vec<[u32; 2]> {
        let mut seen = std::collections::HashSet::new();
        self.ids
            .iter()
            .flat_map(|id| &self.content[id])
            .flat_map(|(_, descriptors)| descriptors)
            .map(|d| [d.width, d.height])
            .filter(|&s| seen.insert(s))
            .collect()
    }

    /// Whether `plane` (registered by `reg`) shows one of release `id`'s files: the best
    /// match over its files' descriptors, judged with every descriptor counted.
    fn content_check(
        &self,
        id: u64,
        plane: &Plane,
        reg: &Registration,
        max_p: f64,
    ) -> ContentRecord {
        let files = self.content.get(&id).map(Vec::as_slice).unwrap_or_default();
        let (names, descriptors): (Vec<&String>, Vec<&Descriptor>) = files
            .iter()
            .flat_map(|(f, ds)| ds.iter().map(move |d| (f, d)))
            .unzip();
        let tests = descriptors.len();
        let best = content::best_match(plane, reg, &descriptors);
        match best {
            Some((i, m)) => {
                let matched = m.matches(max_p, tests);
                ContentRecord {
                    release_id: payload_hex(id),
                    file: Some(names[i].clone()),
                    r: Some((m.r * 1000.0).round() / 1000.0),
                    p_value: Some(10f64.powf(m.log10_p_among(tests))),
                    matched,
                    footprint: matched.then(|| Footprint {
                        original: [descriptors[i].width, descriptors[i].height],
                        corners: reg
                            .corners(plane.width, plane.height, m.tile_shift)
                            .map(|p| p.map(|v| (v * 10.0).round() / 10.0)),
                    }),
                }
            }
            None => ContentRecord {
                release_id: payload_hex(id),
                file: None,
                r: None,
                p_value: None,
                matched: false,
                footprint: None,
            },
        }
    }
}

/// Examines copies for one key.
pub struct Examiner {
    detector: Detector,
    key_id: String,
    options: DetectOptions,
    limits: Limits,
    releases: Option<Releases>,
    budget: MemoryBudget,
    /// The released images every input is also examined against (each name and display
    /// plane): [`Examiner::with_original`].
    originals: Vec<(String, Plane)>,
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
            budget: MemoryBudget::from_machine(),
            originals: Vec::new(),
        }
    }

    /// Examines every input against `original` too, the released image as the publisher
    /// keeps it ([`crate::mark::reference`]): the copy is registered in it by its content,
    /// the fitted original taken out, and the mark looked for in what is left, where the
    /// image no longer hides it (fine textures, small images downscaled or blurred). A
    /// payload read there, and the ledger's fingerprints scored there, name a release
    /// under the same content check as the copy's own (a mark pasted onto another image is
    /// still refused).
    ///
    /// Called again, it adds originals: each copy is then registered in every one, and the
    /// one its content matches best is searched ([`reference::detect_with_originals`]). A
    /// multi-frame DICOM original gives the mean of its frames (what a whole leaked file is
    /// examined as) and each frame as it is displayed (what a leaked frame shows), when its
    /// frames are at most [`crate::pipeline::MAX_EXAMINED_SIDE`] a side.
    ///
    /// # Errors
    /// An unreadable or undecodable original (the message names it).
    pub fn with_original(mut self, path: &Path) -> Result<Self> {
        let planes = crate::exit::isolate(path, "reading the original", || {
            let bytes = read_input(path, &self.limits)?;
            let doc = Document::decode(path, &bytes, &self.limits)?;
            let whole = doc.detection_plane().map_err(|e| e.in_file(path))?;
            let (w, h) = doc.size();
            let frames = if w.max(h) <= crate::pipeline::MAX_EXAMINED_SIDE {
                doc.frame_planes()
            } else {
                Vec::new()
            };
            Ok((whole, frames))
        })?;
        let name = path.display().to_string();
        let (whole, frames) = planes;
        self.originals.push((name.clone(), whole));
        let n = frames.len();
        if n > 1 {
            for (i, frame) in frames.into_iter().enumerate() {
                self.originals
                    .push((format!("{name} (frame {} of {n})", i + 1), frame));
            }
        }
        Ok(self)
    }

    /// Examines inputs in parallel within `budget` (default: half the machine's memory):
    /// an input starts when its estimated working memory fits.
    #[must_use]
    pub fn with_memory_budget(mut self, budget: MemoryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Resolves payloads through `ledger` and runs the informed check against its releases.
    /// The sizes of its released images are given to the detector
    /// ([`DetectOptions::frame_sizes`]): a photo of a screen showing one of them is also
    /// searched at the scale that maps it onto the screen's frame, and a copy with one's
    /// proportions at another size at the scale that maps it onto the copy.
    ///
    /// # Errors
    /// Ledger read errors.
    pub fn with_ledger(mut self, ledger: &Ledger) -> Result<Self> {
        let releases = Releases::load(ledger)?;
        // The detector keeps the first of any size given twice.
        self.options.frame_sizes.extend(releases.sizes());
        self.releases = Some(releases);
        Ok(self)
    }

    /// Reads, decodes and examines one file.
    ///
    /// # Errors
    /// Unreadable or undecodable files, images too small to examine; messages name the file.
    /// A panic while decoding or examining (a decoder's bug met by a hostile file) is this
    /// file's [`crate::Error::Internal`], not the caller's.
    pub fn examine(&self, path: &Path) -> Result<DetectionRecord> {
        self.examine_with_view(path, None).map(|(rec, _)| rec)
    }

    /// [`Examiner::examine`], also giving, for an evidence report, what the detector looked
    /// at: the examined plane shrunk to at most `view_side` px a side (8-bit grey) and, when
    /// a mark was found, the map of its local strength.
    ///
    /// # Errors
    /// As [`Examiner::examine`].
    pub fn examine_with_view(
        &self,
        path: &Path,
        view_side: Option<usize>,
    ) -> Result<(DetectionRecord, Option<View>)> {
        crate::exit::isolate(path, "examining", || {
            // The decoded file is dropped before the detection runs: only the examined
            // plane (at most MAX_EXAMINED_SIDE a side) stays in memory.
            let bytes = read_input(path, &self.limits)?;
            let (sha256, file_bytes) = (crate::ledger::sha256_hex(&bytes), bytes.len() as u64);
            let need = footprint(path, &bytes, &self.limits, Work::Examine)?;
            // Held until the record is made: the estimate covers the detection too.
            let _admitted = self.budget.admit(path, need)?;
            let (plane, window, size) = {
                let doc = Document::decode(path, &bytes, &self.limits)?;
                drop(bytes);
                let (plane, window) = doc.detection_window()?;
                (plane, window, doc.size())
            };
            let (mut rec, d, corrected) = self
                .examine_detected(path, &plane)
                .map_err(|e| e.in_file(path))?;
            if (window[2], window[3]) != size {
                rec.examined_window = Some(window);
            }
            rec.sha256 = Some(sha256);
            rec.bytes = Some(file_bytes);
            let view = view_side.map(|side| {
                let (image, factor) = shrink(&plane, side);
                View {
                    image,
                    factor,
                    strength: (rec.verdict == Verdict::Marked).then(|| {
                        let registered = corrected.as_ref().unwrap_or(&plane);
                        strength_map(self.detector.patterns(), registered, &d)
                    }),
                }
            });
            Ok((rec, view))
        })
    }

    /// Examines an image held in memory (an array from another program) as a decoded file
    /// is examined: its display luminance, within [`crate::pipeline::MAX_EXAMINED_SIDE`]
    /// (the window is then reported). `name` names it in the record and in messages.
    ///
    /// # Errors
    /// An image too small to examine.
    pub fn examine_raster(&self, name: &Path, raster: Raster) -> Result<DetectionRecord> {
        crate::exit::isolate(name, "examining", || {
            let doc = Document::from_raster(name, raster, Format::Png);
            let (plane, window) = doc.detection_window()?;
            let (mut rec, ..) = self
                .examine_detected(name, &plane)
                .map_err(|e| e.in_file(name))?;
            if (window[2], window[3]) != doc.size() {
                rec.examined_window = Some(window);
            }
            Ok(rec)
        })
    }

    /// Examines a display plane (8-bit display units) named `path` in the record.
    ///
    /// # Errors
    /// A plane too small to examine.
    pub fn examine_plane(&self, path: &Path, plane: &Plane) -> Result<DetectionRecord> {
        self.examine_detected(path, plane).map(|(rec, ..)| rec)
    }

    /// [`Examiner::examine_plane`], also giving the detector's own result and, when that
    /// result is a corrected copy's ([`crate::mark::detect::Transform::undone_keystone`],
    /// [`crate::mark::detect::Transform::screen`]), the copy with its keystone undone or its
    /// screen's frame rectified: the frame the mark registered in.
    fn examine_detected(
        &self,
        path: &Path,
        plane: &Plane,
    ) -> Result<(DetectionRecord, Detection, Option<Plane>)> {
        let start = Instant::now();
        let opts = &self.options;
        let mut d = if opts.keystones {
            self.detector.detect_keystones(plane, opts)?
        } else {
            self.detector.detect(plane, opts)?
        };
        // Without a claimed mark, several searches may each have aligned the copy; the
        // informed check takes the alignment the ledger's payload codewords agree with best
        // (`informed::choose`, which never looks at a fingerprint), and the record then
        // describes that alignment: its statistic, geometry and registration.
        let mut residual = None;
        if let Some(rs) = &self.releases
            && let Some((i, r)) = informed::choose(self.detector.patterns(), &d, &rs.ids)
        {
            if i > 0 {
                let counted = d.counted;
                d = d.alternatives.swap_remove(i - 1);
                d.counted = counted;
            }
            residual = Some(r);
        }
        // Against the original: the copy less its fitted original, folded where the
        // content registered it; the ledger's fingerprints are scored there too.
        let against = (!self.originals.is_empty())
            .then(|| {
                let planes: Vec<&Plane> = self.originals.iter().map(|o| &o.1).collect();
                reference::detect_with_originals(&self.detector, plane, &planes, Some(&d), opts)
            })
            .flatten()
            .map(|r| (&self.originals[r.original].0, r));
        let against_residual = match (&self.releases, &against) {
            (Some(rs), Some((_, r))) => r.detection.as_ref().and_then(|at| {
                informed::choose(self.detector.patterns(), at, &rs.ids).map(|(_, res)| (at, res))
            }),
            _ => None,
        };
        let original_payload = against.as_ref().and_then(|(_, r)| r.payload(opts.max_p));
        // The copy as the original's examination registered it: rectified or with a
        // keystone undone when that examination looked at it so.
        let against_plane = against
            .as_ref()
            .and_then(|(_, r)| r.corrected.as_ref())
            .unwrap_or(plane);
        // The content check compares in the frame the mark registered: the copy with the
        // keystone undone or the screen's frame rectified, when the result is that
        // corrected copy's.
        let corrected = d.transform.corrected(plane);
        let registered = corrected.as_ref().unwrap_or(plane);
        // The ledger: a confirmed, issued id names its release. The informed check then
        // scores every release's fingerprint, whether or not the payload decoded: averaged
        // copies can decode to one colluder's id, and only the fingerprints name the others.
        // It never accuses from the payload codeword, whose overlaps between ids would name
        // innocents; the codeword only chooses which releases are tested more cheaply
        // (`informed::accuse`).
        let (mut release, mut accused, mut possible_collusion) = (None, Vec::new(), false);
        let mut accusations = Vec::new();
        let mut original_accusations = Vec::new();
        // The payload that names a release: the copy's own, else the one read against the
        // original.
        let payload = d.payload.or(original_payload);
        if let Some(rs) = &self.releases {
            release = payload.and_then(|p| rs.by_id.get(&p).cloned());
            let patterns = self.detector.patterns();
            if let Some(residual) = &residual {
                accusations = accuse(patterns, residual, &rs.ids, opts.max_p, Some(d.variant));
            }
            if let Some((at, residual)) = &against_residual {
                original_accusations =
                    accuse(patterns, residual, &rs.ids, opts.max_p, Some(at.variant));
            }
            let record = |a: &informed::Accusation, against_original: bool| AccusedRecord {
                release_id: payload_hex(a.release),
                recipient: rs.by_id[&a.release].recipient.clone(),
                z: (a.z * 100.0).round() / 100.0,
                p_value: 10f64.powf(a.log10_p),
                against_original,
            };
            accused = accusations
                .iter()
                .map(|a| record(a, false))
                .chain(original_accusations.iter().map(|a| record(a, true)))
                .collect();
            let decoded = payload.map(payload_hex);
            possible_collusion = (payload.is_some() && release.is_none())
                || accused
                    .iter()
                    .any(|a| Some(&a.release_id) != decoded.as_ref());
        }
        // Content binding: a release is named only when the copy shows one of its files.
        let mut named = Vec::new();
        let mut content = Vec::new();
        let mut not_named = None;
        // Against the original, a mark is claimed by what it names, never by its sync
        // statistic alone: a payload that passes the CRC (read only once the statistic
        // passes) or a fingerprint the informed check names (whose scores are exact). What is
        // left once an image is taken out can carry structure the statistic's model does not
        // know (README, the null study against the original).
        let original_marked = original_payload.is_some();
        let mark_present = d.marked || original_marked || !accused.is_empty();
        match &self.releases {
            _ if !mark_present => {}
            None => {
                not_named = Some(
                    "no ledger: the payload says whose mark this is; naming a recipient needs the ledger's check that the image is one of the release's files".into(),
                );
            }
            Some(rs) => {
                // The decoded payload's release (when issued), then the informed check's;
                // then the same against the original, whose content is compared where the
                // copy registered in the original.
                let mut candidates: Vec<(u64, &'static str, f64, &Registration, &Plane)> =
                    Vec::new();
                let mut add = |id, basis, p_mark, reg, on| {
                    if !candidates.iter().any(|c| c.0 == id) {
                        candidates.push((id, basis, p_mark, reg, on));
                    }
                };
                if let Some(p) = d.payload.filter(|p| rs.by_id.contains_key(p)) {
                    add(p, "payload", d.p_value(), &d.registration, registered);
                }
                for a in &accusations {
                    let p = 10f64.powf(a.log10_p);
                    add(a.release, "fingerprint", p, &d.registration, registered);
                }
                if let Some((_, r)) = &against
                    && let Some(at) = &r.detection
                {
                    if let Some(p) = original_payload.filter(|p| rs.by_id.contains_key(p)) {
                        add(
                            p,
                            "payload against the original",
                            r.p_value(),
                            &at.registration,
                            against_plane,
                        );
                    }
                    for a in &original_accusations {
                        let p = 10f64.powf(a.log10_p);
                        let basis = "fingerprint against the original";
                        add(a.release, basis, p, &at.registration, against_plane);
                    }
                }
                for (id, basis, p_mark, reg, on) in candidates {
                    let c = rs.content_check(id, on, reg, opts.max_p);
                    if c.matched {
                        named.push(NamedRecord {
                            release_id: payload_hex(id),
                            recipient: rs.by_id[&id].recipient.clone(),
                            p_value: (p_mark + c.p_value.unwrap_or(1.0)).min(1.0),
                            basis: format!(
                                "{basis} + content of {}",
                                c.file.as_deref().unwrap_or_default()
                            ),
                        });
                    }
                    content.push(c);
                }
                if named.is_empty() {
                    not_named = Some(if content.is_empty() {
                        "the mark's payload was never issued in this ledger".into()
                    } else if content.iter().all(|c| c.file.is_none()) {
                        // No comparison could be made: too few cells overlap, or one side
                        // is flat but for a few details (`content::compare`).
                        "the mark of a release is present, but the copy and the release's files share too little detail (a featureless or very small part) to tell whether it is one of them".into()
                    } else {
                        "the mark of a release is present on an image that is not one of its files (a possible forgery: a mark copied onto another image; or an edit too heavy to compare)".into()
                    });
                }
            }
        }
        let time_ms = start.elapsed().as_secs_f64() * 1e3;
        // A fingerprint named at p <= max_p also proves that a mark of this key is present.
        let verdict = if mark_present {
            Verdict::Marked
        } else {
            Verdict::NoMark
        };
        // A mark claimed only against the original: the record's statistic and geometry
        // are that examination's.
        let from_original = match &against {
            Some((_, r)) if !d.marked && original_marked => r.detection.as_ref().map(|at| (r, at)),
            _ => None,
        };
        let (z, log10_p, transform, candidates) = match from_original {
            Some((r, at)) => (at.z, r.log10_p(), Some(at.transform.clone()), r.maps_fitted),
            None => (
                d.z,
                d.log10_p,
                (verdict == Verdict::Marked).then(|| d.transform.clone()),
                d.candidates,
            ),
        };
        let rec = DetectionRecord {
            kind: "detection".into(),
            path: path.display().to_string(),
            verdict,
            payload: payload.map(payload_hex),
            payload_status: match (verdict == Verdict::Marked, payload) {
                (true, Some(_)) => PayloadStatus::Confirmed,
                (true, None) => PayloadStatus::Unreadable,
                _ => PayloadStatus::None,
            },
            p_value: 10f64.powf(log10_p),
            log10_p: (log10_p * 100.0).round() / 100.0,
            z: (z * 100.0).round() / 100.0,
            threshold_p: opts.max_p,
            transform,
            candidates,
            time_ms: (time_ms * 10.0).round() / 10.0,
            key_id: self.key_id.clone(),
            release,
            accused,
            possible_collusion,
            nothing_to_examine: d.nothing_to_examine.map(String::from),
            examined_window: None,
            sha256: None,
            bytes: None,
            named,
            content,
            not_named,
            original: against.as_ref().map(|(name, r)| OriginalRecord {
                path: name.to_string(),
                compared: self.originals.len(),
                registered: r.detection.is_some(),
                explained: (r.explained * 1000.0).round() / 1000.0,
                z: r.detection
                    .as_ref()
                    .map_or(0.0, |at| (at.z * 100.0).round() / 100.0),
                p_value: r.p_value(),
                payload: r.payload(opts.max_p).map(payload_hex),
                corrected: r.corrected.is_some(),
                linear: r.map.linear,
                offset: r.map.offset,
            }),
        };
        // The evidence view's strength map follows the detection the record describes: the
        // one against the original (on the copy, or the copy as it corrected it) when that
        // is where the mark is.
        let (d, corrected) = match from_original {
            Some((r, at)) => (at.clone(), r.corrected.clone()),
            None => (d, corrected),
        };
        Ok((rec, d, corrected))
    }
}

/// What the detector looked at, for a reader.
#[derive(Clone, Debug)]
pub struct View {
    /// The examined plane shrunk (8-bit grey).
    pub image: crate::raster::Raster,
    /// Examined-plane px per view px (the view is the plane box-filtered by this factor).
    pub factor: usize,
    /// Local mark strength over the examined plane, when a mark was found.
    pub strength: Option<StrengthMap>,
}

/// `plane` shrunk by an integer box filter to at most `side` px a side, as 8-bit grey, and
/// that factor (plane px per view px).
fn shrink(plane: &Plane, side: usize) -> (crate::raster::Raster, usize) {
    let f = plane.width.max(plane.height).div_ceil(side.max(1)).max(1);
    let (w, h) = (plane.width.div_ceil(f), plane.height.div_ceil(f));
    let mut sum = vec![0f32; w * h];
    let mut n = vec![0u32; w * h];
    for (y, row) in plane.data.chunks_exact(plane.width).enumerate() {
        let out = (y / f) * w;
        for (x, &v) in row.iter().enumerate() {
            sum[out + x / f] += v;
            n[out + x / f] += 1;
        }
    }
    let image = crate::raster::Raster {
        width: w,
        height: h,
        channels: 1,
        samples: crate::raster::Samples::U8(
            sum.iter()
                .zip(&n)
                .map(|(&s, &k)| (s / k.max(1) as f32).round().clamp(0.0, 255.0) as u8)
                .collect(),
        ),
    };
    (image, f)
}

//! Result records: the single source for human and `--json` output.
//!
//! # JSON Lines schema (`tracemark-detect --json`)
//! One object per input per line, tagged by `"type"`:
//!
//! `{"type":"detection", "path": string, "verdict": "marked" | "no_mark",
//!   "payload": string (16 hex digits) | null, "payload_status": "confirmed" | "unreadable" | "none",
//!   "p_value": number, "log10_p": number, "z": number, "threshold_p": number,
//!   "transform": {"scale": number, "aspect": number, "rotation_deg": number, "shift": [int, int],
//!                 "inverted": bool, "keystone": bool,
//!                 "undone_keystone": {"far_edge": "top" | "right" | "bottom" | "left",
//!                                     "shrink": number} (only with --keystones, when used),
//!                 "screen": {"corners": [[x, y] x 4]} (a screen's frame rectified before
//!                           the search, when used; top-left, top-right, bottom-right,
//!                           bottom-left, in the copy's pixels)} | null,
//!   "candidates": int, "time_ms": number, "key_id": string}`
//!
//! - `verdict` is `marked` when a mark of this key is present at false-alarm probability
//!   `p_value <= threshold_p`; `payload` is given only when the decoded id passes its CRC
//!   (`payload_status: "confirmed"`); a present mark whose payload does not decode has
//!   `payload_status: "unreadable"` and `payload: null`.
//! - `p_value` is the probability that an image without this key's mark gives a statistic
//!   at least this high anywhere in the search (Bonferroni over every geometry candidate,
//!   orientation and shift examined). It may underflow to 0; `log10_p` does not.
//! - `transform` describes the copy relative to the stamped original and is `null` for
//!   `no_mark`.
//!
//! With `--ledger`, three more fields, each left out when it has nothing to say:
//! `"release": {"release_id", "recipient", "created_utc", "files": [string]}` for an issued
//! payload; `"accused": [{"release_id", "recipient", "z", "p_value"}]` named by the
//! fingerprint check; `"possible_collusion": true`.
//!
//! `"nothing_to_examine": string` is present when the image carries no signal at all (a flat
//! image): `z` is then 0 and `p_value` 1. `p_value`, `log10_p` and `z` are always finite.
//! `"examined_window": [x, y, width, height]` is present for an image larger than 4096 px
//! a side, examined in its central window (the transform is relative to the window).
//! `"sha256": string, "bytes": int` identify the examined file (the evidence).
//!
//! `{"type":"error", "path": string, "error": string}` for an input that could not be read.
//!
//! # JSON (`tracemark-embed --json`)
//! `{"type":"embedding", "input": string, "output": string, "payload": string,
//!   "psnr_db": number, "ssim": number, "max_abs_delta": number, "gain": number,
//!   "mask_gamma": number, "format": string, "width": int, "height": int,
//!   "time_ms": number, "key_id": string, "dicom": {...} (DICOM only),
//!   "self_check_z": number, "restamped_over": string (with --restamp, when the input
//!   already carried this key's mark), "restore": "byte-identical" | "pixel-identical" |
//!   "none" (what `tracemark-embed restore` rebuilds; absent with --restore-data none),
//!   "restore_bytes": int (the side data kept in the ledger row)}`
//!
//! `self_check_z` is the sync z of the output read back before it was written; an output
//! whose payload does not decode with a sync z of at least what a blind detection needs to
//! claim a mark at p = 1e-6 (7.1) is refused (nothing written).
//!
//! For DICOM, `psnr_db` is measured in the image's own display window and `dicom` holds
//! `frames`, `layout`, `photometric`, `window` ([center, width]), `window_from_file`,
//! `max_abs_stored`, `rms_stored`, `max_abs_hu`/`rms_hu` (CT), `max_abs_modality`/
//! `rms_modality` (the change in modality units, any modality) with `modality_unit` (Rescale
//! Type, when given), `sop_instance_uid`,
//! `decoded_from` (compressed inputs) and, for grey images, `windows`: `[{"window": [center,
//! width], "source": string, "psnr_db": number, "frame": int}]`, the PSNR in every window
//! the file declares (or its VOI LUT's span) at the frame where it is lowest. One record per
//! file, in the order the files finish; a file that fails gives
//! `{"type":"error", "path": string, "error": string}`; a file an interrupted run of the same
//! release already wrote (verified against its ledger row) gives `{"type":"resumed",
//! "input": string, "output": string, "release_id": string}`. A run over folders or several
//! inputs ends with
//! `{"type":"summary", "release_id": string, "recipient": string | null, "files": int,
//!   "resumed": int, "failed": int, "skipped_links": int, "input_bytes": int,
//!   "output_bytes": int, "seconds": number,
//!   "images_per_second": number, "mb_per_second": number, "ledger_head": string (with a
//!   ledger: its authenticated head line after the run)}`
//! (MB = 10^6 bytes of input read per second of wall time).

use serde::{Deserialize, Serialize};

use crate::mark::detect::Transform;
use crate::mark::keystone::Edge;

/// Verdict of a detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A mark of this key is present at the required confidence.
    Marked,
    /// No mark at the required confidence (abstention).
    NoMark,
}

/// Whether the payload was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadStatus {
    /// Decoded and confirmed by its CRC.
    Confirmed,
    /// A mark is present but its payload did not decode.
    Unreadable,
    /// No mark.
    None,
}

/// One detection record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionRecord {
    /// Always "detection".
    #[serde(rename = "type")]
    pub kind: String,
    /// The input.
    pub path: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The payload in hex, when confirmed.
    pub payload: Option<String>,
    /// Whether the payload was read.
    pub payload_status: PayloadStatus,
    /// False-alarm probability of "a mark of this key is present".
    pub p_value: f64,
    /// log10 of `p_value`, without underflow.
    pub log10_p: f64,
    /// The sync statistic.
    pub z: f64,
    /// The p-value threshold in force.
    pub threshold_p: f64,
    /// Geometry of the copy, when marked.
    pub transform: Option<Transform>,
    /// Geometry candidates counted in the p-value.
    pub candidates: usize,
    /// Detection time in milliseconds (decode of the file excluded).
    pub time_ms: f64,
    /// Public id of the key used.
    pub key_id: String,
    /// With a ledger: the release the confirmed payload belongs to (`null` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseRecord>,
    /// With a ledger: releases named by the informed fingerprint check, strongest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accused: Vec<AccusedRecord>,
    /// With a ledger: the evidence points beyond one release: a payload that was never
    /// issued, or fingerprints of releases other than the decoded one (averaged or mixed
    /// copies).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub possible_collusion: bool,
    /// Why nothing could be examined (a flat image): `z` is then 0 and `p_value` 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nothing_to_examine: Option<String>,
    /// For an image larger than the examined window (see
    /// [`crate::pipeline::MAX_EXAMINED_SIDE`]): the window examined, `[x, y, width,
    /// height]` in the image; the transform found is relative to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub examined_window: Option<[usize; 4]>,
    /// SHA-256 of the examined file, hex (the evidence's identity in a report or an audit
    /// row); absent for a plane examined from memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Size of the examined file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Whom the copy is attributed to: a release whose mark is present (payload or
    /// fingerprint) and one of whose files the copy's content matches. Empty when nobody
    /// is named (always, without a ledger). Everything else in the record is context.
    pub named: Vec<NamedRecord>,
    /// With a ledger: the content check of each release whose mark is present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ContentRecord>,
    /// Why nobody is named although a mark is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_named: Option<String>,
    /// The examination against the released image (`tracemark-detect --original`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalRecord>,
}

/// The copy examined against its original ([`crate::mark::reference`]): registered in it by
/// the content, the fitted original taken out, the mark looked for in what is left.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalRecord {
    /// The original the copy registered in best: the one given, or of several (each frame
    /// of a multi-frame DICOM counts as one, named with its number) the one whose content
    /// the copy matched best.
    pub path: String,
    /// How many originals the copy was compared with (the frames of a multi-frame DICOM
    /// each, besides their mean).
    pub compared: usize,
    /// The copy registered in the original (the fitted original explains at least half of
    /// the copy's variance); when not, nothing else below was looked for.
    pub registered: bool,
    /// Share of the copy's variance the fitted original explains (best map).
    pub explained: f64,
    /// Sync statistic of what is left.
    pub z: f64,
    /// False-alarm probability of "a mark of this key is present in what is left" (its one
    /// geometry, times the maps compared).
    pub p_value: f64,
    /// The payload read from what is left, when the mark is claimed there.
    pub payload: Option<String>,
    /// The copy was registered as a correction the blind search found shows it (a screen's
    /// frame rectified, a keystone undone: the record's `transform` names it when the mark
    /// was found there); `linear` and `offset` are then from that corrected copy's pixels.
    pub corrected: bool,
    /// Where the copy lies in the original: the copy's pixel centre `(x, y)` is the
    /// original's `linear (x, y) + offset` (row-major).
    pub linear: [f64; 4],
    /// See `linear`.
    pub offset: [f64; 2],
}

/// A release the copy is attributed to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedRecord {
    /// Release id, 16 hex digits.
    pub release_id: String,
    /// Who received it.
    pub recipient: String,
    /// Bound on the probability that this attribution is due to chance: the mark's
    /// false-alarm probability plus the content's chance-match probability.
    pub p_value: f64,
    /// What it rests on, e.g. "payload + content of out/ct/slice.dcm".
    pub basis: String,
}

/// The content check of one release: does the copy show one of its files?
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentRecord {
    /// Release id, 16 hex digits.
    pub release_id: String,
    /// The best-matching file of the release (its output path), when any could be compared.
    pub file: Option<String>,
    /// Rank correlation of the copy's cell details with that file's.
    pub r: Option<f64>,
    /// Chance-match probability (every tile offset and every file of the release counted).
    pub p_value: Option<f64>,
    /// Whether the content matches (p at most the threshold and r at least 0.5).
    pub matched: bool,
    /// Which part of the matched file the copy shows, when the content matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footprint: Option<Footprint>,
}

/// Where a copy lies in the released file it shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Footprint {
    /// The released file's examined size, px (width, height).
    pub original: [u32; 2],
    /// The copy's corners in the released file (px; the copy's top left, top right, bottom
    /// right, bottom left; outside the file where the copy shows more than it, e.g. padding).
    pub corners: [[f64; 2]; 4],
}

/// A release from the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRecord {
    /// Release id, 16 hex digits.
    pub release_id: String,
    /// Who received it.
    pub recipient: String,
    /// UTC time of its first file.
    pub created_utc: String,
    /// Output files recorded for it.
    pub files: Vec<String>,
}

/// A release named by the informed check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccusedRecord {
    /// Release id, 16 hex digits.
    pub release_id: String,
    /// Who received it.
    pub recipient: String,
    /// Fingerprint score (unit variance for innocents).
    pub z: f64,
    /// N * Q(z) over the N releases in the ledger.
    pub p_value: f64,
    /// Scored on what is left of the copy once its original is taken out (`--original`),
    /// not on the copy itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub against_original: bool,
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// UTC time in ISO 8601 from milliseconds since the Unix epoch (civil-from-days,
/// H. Hinnant's algorithm).
pub fn iso_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// One embedding record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRecord {
    /// Always "embedding".
    #[serde(rename = "type")]
    pub kind: String,
    /// The input file.
    pub input: String,
    /// The output file.
    pub output: String,
    /// The payload in hex.
    pub payload: String,
    /// PSNR of the output against the input, dB (colour channels, native peak).
    pub psnr_db: f64,
    /// SSIM of the luminance.
    pub ssim: f64,
    /// Largest luminance change, 8-bit display levels.
    pub max_abs_delta: f64,
    /// The solved gain.
    pub gain: f64,
    /// The mask exponent used.
    pub mask_gamma: f32,
    /// Output format.
    pub format: String,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Embedding time in milliseconds (file decode and encode included).
    pub time_ms: f64,
    /// Public id of the key used.
    pub key_id: String,
    /// For DICOM: what changed in stored values and the file's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dicom: Option<DicomRecord>,
    /// The sync z of the output read back before it was written (identity geometry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_check_z: Option<f64>,
    /// With --restamp on an input that already carried this key's mark: the release id it
    /// carried ("unreadable" when its payload did not decode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restamped_over: Option<String>,
    /// The tile variant this file carries (files of one release get different ones).
    #[serde(default)]
    pub tile_variant: usize,
    /// What `tracemark-embed restore` can rebuild from this output and its ledger row:
    /// "byte-identical", "pixel-identical", or "none" (a lossy output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// Size of the restore side data kept in the ledger row, bytes (compressed).
    #[serde(default)]
    pub restore_bytes: usize,
}

/// The DICOM part of an embedding record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomRecord {
    /// Frames marked.
    pub frames: usize,
    /// "per_frame", or "montage CxR" for frames too small on their own.
    pub layout: String,
    /// Photometric interpretation.
    pub photometric: String,
    /// The display window used, modality units: [center, width].
    pub window: [f64; 2],
    /// Whether the window came from the file (else from the value range).
    pub window_from_file: bool,
    /// Largest |change| of a stored value.
    pub max_abs_stored: i64,
    /// RMS change of the stored values.
    pub rms_stored: f64,
    /// For CT: largest change in HU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_hu: Option<f64>,
    /// For CT: RMS change in HU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rms_hu: Option<f64>,
    /// Largest change in modality units (stored change times Rescale Slope), any modality.
    #[serde(default)]
    pub max_abs_modality: f64,
    /// RMS change in modality units.
    #[serde(default)]
    pub rms_modality: f64,
    /// Rescale Type (0028,1054) when the file gives one ("HU", "US" for unspecified, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality_unit: Option<String>,
    /// The output's SOP Instance UID.
    pub sop_instance_uid: String,
    /// The input's transfer syntax when it had to be decoded (the output is Explicit VR
    /// Little Endian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoded_from: Option<String>,
    /// Grey images: the PSNR in every window the file declares (the value range when none),
    /// at the frame where it is lowest; the clinical check holds each to the target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowRecord>,
}

/// The PSNR a stamp reaches in one of the file's windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRecord {
    /// [center, width] in modality units.
    pub window: [f64; 2],
    /// Where the file declares it ("top level", "shared functional group", ...).
    pub source: String,
    /// PSNR in this window's 8-bit display units, at the frame where it is lowest.
    pub psnr_db: f64,
    /// That frame, from 1.
    pub frame: usize,
}

/// An error record for one input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRecord {
    /// Always "error".
    #[serde(rename = "type")]
    pub kind: String,
    /// The input.
    pub path: String,
    /// The one-line message.
    pub error: String,
}

/// The end-of-batch summary of `tracemark-embed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryRecord {
    /// Always "summary".
    #[serde(rename = "type")]
    pub kind: String,
    /// The payload every file carries, 16 hex digits.
    pub release_id: String,
    /// Who received the release (with a ledger).
    pub recipient: Option<String>,
    /// Files written.
    pub files: usize,
    /// Files an earlier run of this release wrote, verified against the ledger and skipped.
    #[serde(default)]
    pub resumed: usize,
    /// Files that failed (nothing written, no ledger row).
    pub failed: usize,
    /// Symbolic links inside the input folders, not followed.
    #[serde(default)]
    pub skipped_links: usize,
    /// Bytes read from the inputs that were stamped.
    pub input_bytes: u64,
    /// Bytes written.
    pub output_bytes: u64,
    /// Wall time of the batch.
    pub seconds: f64,
    /// Files written per second of wall time.
    pub images_per_second: f64,
    /// Input megabytes (10^6 bytes) stamped per second of wall time.
    pub mb_per_second: f64,
    /// With a ledger: its authenticated head after the run (`tracemark-anchor-v1 ...`), to
    /// keep outside the ledger for `ledger verify --anchor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_head: Option<String>,
}

/// A file of a resumed release that an earlier run wrote: verified against its ledger row
/// (input and output SHA-256) and not stamped again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumedRecord {
    /// Always "resumed".
    #[serde(rename = "type")]
    pub kind: String,
    /// The input.
    pub input: String,
    /// Its output, already written.
    pub output: String,
    /// The release it belongs to.
    pub release_id: String,
}

impl ResumedRecord {
    /// The human line.
    pub fn to_text(&self) -> String {
        format!(
            "already released {} -> {} (release {}; input and output match the ledger)",
            sanitize(&self.input),
            sanitize(&self.output),
            self.release_id
        )
    }
}

/// The end-of-run summary of `tracemark-detect` over several files (a folder, a crawl).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExaminationSummaryRecord {
    /// Always "summary".
    #[serde(rename = "type")]
    pub kind: String,
    /// Files examined (read and decided, marked or not).
    pub files: usize,
    /// Of those, files carrying a mark of this key.
    pub marked: usize,
    /// Of those, files that name a recipient (with a ledger).
    pub named: usize,
    /// Files that could not be examined (unreadable, too small, not an image).
    pub failed: usize,
    /// Files not started after Ctrl-C.
    pub skipped: usize,
    /// Symbolic links inside the input folders, not followed.
    pub skipped_links: usize,
    /// Wall time of the run, s.
    pub seconds: f64,
    /// Files examined per second of wall time.
    pub images_per_second: f64,
}

impl ExaminationSummaryRecord {
    /// The human line.
    pub fn to_text(&self) -> String {
        let mut line = format!(
            "examined {} file(s) in {:.2} s ({:.2} images/s): {} marked, {} naming a recipient, {} without a mark, {} failed",
            self.files,
            self.seconds,
            self.images_per_second,
            self.marked,
            self.named,
            self.files - self.marked,
            self.failed
        );
        if self.skipped > 0 {
            line += &format!(", {} not started (interrupted)", self.skipped);
        }
        if self.skipped_links > 0 {
            line += &format!(", {} symbolic link(s) not followed", self.skipped_links);
        }
        line
    }
}

/// Formats a payload as 16 hex digits.
pub fn payload_hex(p: u64) -> String {
    format!("{p:016x}")
}

/// Parses a payload of exactly 16 hex digits.
///
/// # Errors
/// [`crate::Error::Payload`] on anything else.
pub fn parse_payload(s: &str) -> crate::Result<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(crate::Error::Payload(s.chars().take(40).collect()));
    }
    u64::from_str_radix(s, 16).map_err(|_| crate::Error::Payload(s.into()))
}

/// Escapes control characters, and the invisible characters that reorder text (bidirectional
/// overrides and isolates such as U+202E, marks such as U+200F), so that untrusted text
/// (file names, recipients) can neither drive a terminal nor display as something else
/// (`gnp.exe` shown for `exe.png`).
pub fn sanitize(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() || reorders_text(c) {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Unicode's bidirectional formatting characters (UAX #9): embeddings, overrides, isolates
/// and the implicit marks.
fn reorders_text(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

impl EmbeddingRecord {
    /// The human line(s) for this record (file names escaped).
    pub fn to_text(&self) -> String {
        let r = self;
        let mut line = format!(
            "stamped {} -> {} ({}, {}x{}): payload {}, PSNR {:.2} dB, SSIM {:.4}, max change {:.0} levels, key id {}, {:.0} ms",
            sanitize(&r.input),
            sanitize(&r.output),
            r.format,
            r.width,
            r.height,
            r.payload,
            r.psnr_db,
            r.ssim,
            r.max_abs_delta,
            r.key_id,
            r.time_ms
        );
        if let Some(d) = &r.dicom {
            line += &format!(
                "\n  DICOM: {} frame(s), {}, {} window {:.0}/{:.0}{}; stored values changed by at most {} (RMS {:.2}){}; SOP Instance UID {}",
                d.frames,
                d.layout.replace('_', " "),
                d.photometric,
                d.window[0],
                d.window[1],
                if d.window_from_file {
                    ""
                } else {
                    " (from the value range)"
                },
                d.max_abs_stored,
                d.rms_stored,
                d.max_abs_hu
                    .zip(d.rms_hu)
                    .map(|(m, r)| format!(", {m:.0} HU (RMS {r:.2} HU)"))
                    .unwrap_or_else(|| {
                        // Other modalities: in modality units when the rescale scales.
                        if (d.max_abs_modality - d.max_abs_stored as f64).abs() > 1e-9 {
                            // Rescale Type "US" means unspecified.
                            let unit = d
                                .modality_unit
                                .as_deref()
                                .filter(|u| *u != "US")
                                .map_or(String::new(), |u| format!(" {}", sanitize(u)));
                            format!(
                                ", {:.2}{unit} in modality units (RMS {:.2}{unit})",
                                d.max_abs_modality, d.rms_modality
                            )
                        } else {
                            String::new()
                        }
                    }),
                d.sop_instance_uid
            );
            if d.windows.len() > 1 || d.windows.iter().any(|w| w.source != "top level") {
                line += &format!(
                    "\n  PSNR per window: {}",
                    d.windows
                        .iter()
                        .map(|w| format!(
                            "{:.0}/{:.0} ({}) {:.2} dB at frame {}",
                            w.window[0], w.window[1], w.source, w.psnr_db, w.frame
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
            if let Some(ts) = &d.decoded_from {
                line += &format!(
                    "; decoded from transfer syntax {ts}, written as Explicit VR Little Endian"
                );
            }
        }
        line
    }
}

impl SummaryRecord {
    /// The human summary line.
    pub fn to_text(&self) -> String {
        format!(
            "release {}{}: {} file(s) stamped, {}{} failed{}; {:.1} MB in, {:.1} MB out, {:.2} s ({:.1} images/s, {:.1} MB/s)",
            self.release_id,
            self.recipient
                .as_deref()
                .map(|r| format!(" for {}", sanitize(r)))
                .unwrap_or_default(),
            self.files,
            if self.resumed > 0 {
                format!("{} already released (verified), ", self.resumed)
            } else {
                String::new()
            },
            self.failed,
            if self.skipped_links > 0 {
                format!(", {} symbolic link(s) not followed", self.skipped_links)
            } else {
                String::new()
            },
            self.input_bytes as f64 / 1e6,
            self.output_bytes as f64 / 1e6,
            self.seconds,
            self.images_per_second,
            self.mb_per_second
        ) + &self
            .ledger_head
            .as_deref()
            .map(|h| format!("\nledger head (keep it outside the ledger): {h}"))
            .unwrap_or_default()
    }
}

impl DetectionRecord {
    /// The human line(s) for this record (file names and recipients escaped).
    pub fn to_text(&self) -> String {
        let r = self;
        let path = sanitize(&r.path);
        let mut line = match (&r.verdict, &r.transform) {
            (Verdict::Marked, Some(t)) => format!(
                "{path}: marked, payload {}, p = {} (z {:.1}); scale {:.3}, rotation {:.2} deg, shift ({}, {}), inverted {}{}; {:.0} ms",
                r.payload
                    .as_deref()
                    .unwrap_or("unreadable (mark present, payload did not decode)"),
                p_text(r.log10_p),
                r.z,
                t.scale,
                t.rotation_deg,
                t.shift[0],
                t.shift[1],
                if t.inverted { "yes" } else { "no" },
                keystone_note(t),
                r.time_ms
            ),
            _ => match &r.nothing_to_examine {
                Some(why) => format!(
                    "{path}: no_mark (nothing to examine: {why}); {:.0} ms",
                    r.time_ms
                ),
                None => format!(
                    "{path}: no_mark (best z {:.1}, p = {} above the {:e} threshold); {:.0} ms",
                    r.z,
                    p_text(r.log10_p),
                    r.threshold_p,
                    r.time_ms
                ),
            },
        };
        if let Some([x, y, w, h]) = r.examined_window {
            line += &format!("\n  examined the central {w}x{h} px window at ({x}, {y})");
        }
        if let Some(rel) = &r.release {
            line += &format!(
                "\n  release {} to {} at {} ({} file(s))",
                rel.release_id,
                sanitize(&rel.recipient),
                rel.created_utc,
                rel.files.len()
            );
        }
        if r.possible_collusion {
            line += if r.payload.is_some() && r.release.is_none() {
                "\n  possible collusion: a mark is present but its payload was never issued"
            } else {
                "\n  possible collusion: the fingerprint check finds releases besides the payload's (or no payload was read): averaged or mixed copies are possible"
            };
        }
        if let Some(o) = &r.original {
            line += &if o.registered {
                format!(
                    "\n  against the original {}: registered (explains {:.0} % of the copy); what is left: {}, p = {:.1e} (z {:.1})",
                    sanitize(&o.path),
                    100.0 * o.explained,
                    match &o.payload {
                        Some(p) => format!("payload {p}"),
                        None => "no payload read".into(),
                    },
                    o.p_value,
                    o.z
                )
            } else {
                format!(
                    "\n  against the original {}: the copy does not register in it (explains {:.0} % at best): not that image, or changed beyond an affine map and a filter",
                    sanitize(&o.path),
                    100.0 * o.explained
                )
            };
        }
        for a in &r.accused {
            line += &format!(
                "\n  informed check{} finds release {} to {} (fingerprint z {:.1}, p = {:.1e})",
                if a.against_original {
                    " against the original"
                } else {
                    ""
                },
                a.release_id,
                sanitize(&a.recipient),
                a.z,
                a.p_value
            );
        }
        for c in &r.content {
            line += &match (&c.file, c.r, c.p_value) {
                (Some(f), Some(corr), Some(p)) => format!(
                    "\n  content of release {}: {} {} (r {:.2}, p = {:.1e})",
                    c.release_id,
                    if c.matched {
                        "matches"
                    } else {
                        "does not match"
                    },
                    sanitize(f),
                    corr,
                    p
                ),
                _ => format!(
                    "\n  content of release {}: could not be compared (too little overlap)",
                    c.release_id
                ),
            };
        }
        if r.named.is_empty() {
            if let Some(why) = &r.not_named {
                line += &format!("\n  named: nobody ({why})");
            }
        } else {
            for n in &r.named {
                line += &format!(
                    "\n  named: {} (release {}, p = {:.1e}; {})",
                    sanitize(&n.recipient),
                    n.release_id,
                    n.p_value,
                    sanitize(&n.basis)
                );
            }
        }
        line
    }
}

/// A p-value for people: plain above 1e-4, mantissa and exponent below (from log10 p, so
/// values beyond f64's range still print).
pub fn p_text(log10_p: f64) -> String {
    if log10_p > -4.0 {
        format!("{:.3}", 10f64.powf(log10_p))
    } else {
        let e = log10_p.floor();
        format!("{:.1}e{}", 10f64.powf(log10_p - e), e)
    }
}

/// How a keystone entered a detection, for a reader: a screen's frame rectified before the
/// search, the keystone undone before it (`tracemark-detect --keystones`) and the
/// correction the payload was read after; empty for none.
pub(crate) fn keystone_note(t: &Transform) -> String {
    let mut note = String::new();
    if let Some(frame) = t.screen {
        let c = frame.corners;
        note += &format!(
            ", seen as a photo of a screen at an angle (the frame with corners ({:.0}, {:.0}), ({:.0}, {:.0}), ({:.0}, {:.0}), ({:.0}, {:.0}) rectified before the search)",
            c[0][0], c[0][1], c[1][0], c[1][1], c[2][0], c[2][1], c[3][0], c[3][1]
        );
    }
    if let Some(k) = t.undone_keystone {
        let edge = match k.far_edge {
            Edge::Top => "top",
            Edge::Right => "right",
            Edge::Bottom => "bottom",
            Edge::Left => "left",
        };
        note += &format!(
            ", seen as a photo of a screen at an angle (the {edge} edge {:.0} % shorter at each end, undone before the search)",
            k.shrink * 100.0
        );
    }
    if t.keystone {
        note += ", read after a keystone correction";
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_parsing() {
        assert_eq!(parse_payload("00000000000000ff").unwrap(), 255);
        for bad in [
            "",
            "ff",
            "00000000000000fg",
            "000000000000000000",
            "+000000000000000",
        ] {
            assert!(parse_payload(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn iso_times() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso_utc(1_795_894_827_709), "2026-11-28T19:40:27.709Z");
    }

    #[test]
    fn sanitize_escapes_controls() {
        assert_eq!(sanitize("a\x1b[31mb\n"), "a\\u{1b}[31mb\\n");
        // A right-to-left override would show "invoice_\u{202E}gnp.exe" as "invoice_exe.png".
        assert_eq!(
            sanitize("invoice_\u{202E}gnp.exe"),
            "invoice_\\u{202e}gnp.exe"
        );
        for c in ['\u{061C}', '\u{200F}', '\u{202A}', '\u{2066}', '\u{2069}'] {
            assert!(sanitize(&format!("a{c}b")).starts_with("a\\u{"), "{c:?}");
        }
        // Other non-ASCII text is kept.
        assert_eq!(sanitize("Dr Müller, 放射線科"), "Dr Müller, 放射線科");
    }
}

//! Result records: the single source for human and `--json` output.
//!
//! # JSON Lines schema (`tracemark-detect --json`)
//! One object per input per line, tagged by `"type"`:
//!
//! `{"type":"detection", "path": string, "verdict": "marked" | "no_mark",
//!   "payload": string (16 hex digits) | null, "payload_status": "confirmed" | "unreadable" | "none",
//!   "p_value": number, "log10_p": number, "z": number, "threshold_p": number,
//!   "transform": {"scale": number, "aspect": number, "rotation_deg": number, "shift": [int, int],
//!                 "inverted": bool} | null,
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
//! `{"type":"error", "path": string, "error": string}` for an input that could not be read.
//!
//! # JSON (`tracemark-embed --json`)
//! `{"type":"embedding", "input": string, "output": string, "payload": string,
//!   "psnr_db": number, "ssim": number, "max_abs_delta": number, "gain": number,
//!   "mask_gamma": number, "format": string, "width": int, "height": int,
//!   "time_ms": number, "key_id": string}`

use serde::{Deserialize, Serialize};

use crate::mark::detect::Transform;

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

/// Escapes control characters so that untrusted text (file names) cannot drive a terminal.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
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
    fn sanitize_escapes_controls() {
        assert_eq!(sanitize("a\x1b[31mb\n"), "a\\u{1b}[31mb\\n");
    }
}

//! The evidence report (issue 13): what an examination found, for the people who act on it
//! (a privacy officer, an investigator, a court), as one self-contained HTML page (images
//! inline, no script, no network; readable printed or as PDF) and the same facts as JSON.
//!
//! Everything that comes from a file or the ledger (names, paths, recipients) is escaped: a
//! recipient called `<script>` is text, and a direction override is shown as `[U+202E]`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ledger::Entry;
use crate::report::{DetectionRecord, Verdict, iso_utc, payload_hex};

/// One examined file.
#[derive(Clone, Debug)]
pub struct Examination {
    /// The file as named.
    pub path: String,
    /// When it was examined (UTC, ms since the epoch).
    pub examined_ms: i64,
    /// The detection record, or why the file could not be examined.
    pub outcome: std::result::Result<DetectionRecord, String>,
    /// What the detector looked at, shrunk (PNG bytes), when available.
    pub view_png: Option<Vec<u8>>,
}

/// The ledger's part of the evidence.
#[derive(Clone, Debug)]
pub struct LedgerEvidence {
    /// The ledger file as named.
    pub path: String,
    /// Rows verified (releases and audit rows) before anything was read from it.
    pub rows_verified: i64,
    /// Its authenticated head line after the examinations were recorded.
    pub head: String,
    /// The rows of every release the report mentions.
    pub releases: Vec<Entry>,
}

/// Who, what and when, for the whole report.
#[derive(Clone, Debug)]
pub struct Context {
    /// `--operator`, when given.
    pub operator: Option<String>,
    /// When the report was written (UTC, ms).
    pub generated_ms: i64,
    /// Key id of the key used.
    pub key_id: String,
    /// With a ledger.
    pub ledger: Option<LedgerEvidence>,
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "&#x{:X};", u32::from(c));
            }
            // Direction overrides would reorder what the reader sees: shown, not obeyed.
            '\u{061C}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}' => {
                let _ = write!(out, "[U+{:04X}]", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// "1 in 10^N" for a probability (N from log10 p).
fn odds(log10_p: f64) -> String {
    if log10_p >= -1.0 {
        return format!("{:.2}", 10f64.powf(log10_p));
    }
    format!("about 1 in 10^{}", (-log10_p).floor() as i64)
}

/// Strength for ordering: named first (smallest p), then marked, then unmarked by their best
/// statistic, then files that could not be read.
fn rank(e: &Examination) -> (u8, f64) {
    match &e.outcome {
        Ok(r) if !r.named.is_empty() => (0, r.log10_p),
        Ok(r) if r.verdict == Verdict::Marked => (1, r.log10_p),
        Ok(r) => (2, -r.z),
        Err(_) => (3, 0.0),
    }
}

fn verdict_words(r: &DetectionRecord) -> String {
    if let Some(n) = r.named.first() {
        let others = r.named.len() - 1;
        return format!(
            "Named: {} (release {}){}",
            n.recipient,
            n.release_id,
            if others > 0 {
                format!(" and {others} more release(s)")
            } else {
                String::new()
            }
        );
    }
    match r.verdict {
        Verdict::Marked => format!(
            "Marked (payload {}), nobody named",
            r.payload.as_deref().unwrap_or("unreadable")
        ),
        Verdict::NoMark => "No mark found".into(),
    }
}

#[derive(Serialize)]
struct JsonFile<'a> {
    path: &'a str,
    examined_utc: String,
    examined_ms: i64,
    detection: Option<&'a DetectionRecord>,
    error: Option<&'a str>,
}

/// Writes `dir/index.html` and `dir/report.json` (the folder is created if needed; each file
/// atomically). Files are listed strongest evidence first.
///
/// # Errors
/// File-system errors.
pub fn write(dir: &Path, ctx: &Context, items: &[Examination]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut order: Vec<&Examination> = items.iter().collect();
    order.sort_by(|a, b| {
        let (ra, rb) = (rank(a), rank(b));
        ra.0.cmp(&rb.0).then(ra.1.total_cmp(&rb.1))
    });
    let html = html(ctx, &order);
    let json = serde_json::json!({
        "type": "report",
        "tool": concat!("tracemark ", env!("CARGO_PKG_VERSION")),
        "generated_utc": iso_utc(ctx.generated_ms),
        "generated_ms": ctx.generated_ms,
        "operator": ctx.operator,
        "key_id": ctx.key_id,
        "ledger": ctx.ledger.as_ref().map(|l| serde_json::json!({
            "path": l.path,
            "rows_verified": l.rows_verified,
            "head": l.head,
            "releases": l.releases.iter().map(|e| serde_json::json!({
                "seq": e.seq,
                "release_id": payload_hex(e.release.release_id),
                "recipient": e.release.recipient,
                "created_utc": iso_utc(e.created_ms),
                "input_path": e.file.input_path,
                "input_sha256": e.file.input_sha256,
                "output_path": e.file.output_path,
                "output_sha256": e.file.output_sha256,
            })).collect::<Vec<_>>(),
        })),
        "files": order.iter().map(|e| JsonFile {
            path: &e.path,
            examined_utc: iso_utc(e.examined_ms),
            examined_ms: e.examined_ms,
            detection: e.outcome.as_ref().ok(),
            error: e.outcome.as_ref().err().map(String::as_str),
        }).collect::<Vec<_>>(),
    });
    let put = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        crate::io::atomic::write_atomic(&path, true, |w| {
            std::io::Write::write_all(w, bytes).map_err(|e| Error::io(&path, e))
        })
    };
    put("index.html", html.as_bytes())?;
    put(
        "report.json",
        serde_json::to_string_pretty(&json)
            .expect("a report serialises")
            .as_bytes(),
    )
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(char::from(T[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#111}\
table{border-collapse:collapse;width:100%}td,th{border:1px solid #bbb;padding:.3em;text-align:left;vertical-align:top}\
.named{color:#8a0000;font-weight:bold}.mono{font-family:monospace;word-break:break-all}\
section{page-break-inside:avoid;border-top:2px solid #444;margin-top:2em}img{border:1px solid #999;max-width:100%}";

fn html(ctx: &Context, order: &[&Examination]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>tracemark evidence report</title><style>{STYLE}</style></head><body>\n<h1>tracemark evidence report</h1>\n<p>Generated {} by {} (tracemark {}, key id <span class=\"mono\">{}</span>). {} file(s) examined.</p>\n",
        escape(&iso_utc(ctx.generated_ms)),
        escape(ctx.operator.as_deref().unwrap_or("an unnamed operator")),
        env!("CARGO_PKG_VERSION"),
        escape(&ctx.key_id),
        order.len()
    );
    match &ctx.ledger {
        Some(l) => {
            let _ = writeln!(
                h,
                "<p>Ledger <span class=\"mono\">{}</span>: its hash chain verified, {} rows, before anything was read from it; every examination below is recorded in its audit trail. Head after recording: <span class=\"mono\">{}</span></p>",
                escape(&l.path),
                l.rows_verified,
                escape(&l.head)
            );
        }
        None => {
            h.push_str("<p>No ledger was given: marks are reported, nobody can be named.</p>\n")
        }
    }
    h.push_str("<h2>Summary (strongest evidence first)</h2>\n<table><tr><th>file</th><th>verdict</th><th>p-value</th><th>SHA-256</th></tr>\n");
    for (i, e) in order.iter().enumerate() {
        let (verdict, p, sha) = match &e.outcome {
            Ok(r) => {
                let p = r.named.first().map_or(r.p_value, |n| n.p_value);
                let log10 = if r.named.is_empty() {
                    r.log10_p
                } else {
                    p.max(f64::MIN_POSITIVE).log10().min(r.log10_p)
                };
                (
                    verdict_words(r),
                    format!("{p:.1e} ({})", odds(log10)),
                    r.sha256.clone().unwrap_or_default(),
                )
            }
            Err(why) => (
                format!("Could not be read: {why}"),
                "-".into(),
                String::new(),
            ),
        };
        let named = matches!(&e.outcome, Ok(r) if !r.named.is_empty());
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#f{i}\">{}</a></td><td{}>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
            escape(&e.path),
            if named { " class=\"named\"" } else { "" },
            escape(&verdict),
            escape(&p),
            escape(&sha)
        );
    }
    h.push_str("</table>\n");
    for (i, e) in order.iter().enumerate() {
        section(&mut h, ctx, i, e);
    }
    h.push_str("</body></html>\n");
    h
}

fn section(h: &mut String, ctx: &Context, i: usize, e: &Examination) {
    let _ = write!(
        h,
        "<section id=\"f{i}\"><h2>{}</h2>\n<p>Examined {}.</p>\n",
        escape(&e.path),
        escape(&iso_utc(e.examined_ms))
    );
    let r = match &e.outcome {
        Ok(r) => r,
        Err(why) => {
            let _ = writeln!(h, "<p>Could not be examined: {}</p></section>", escape(why));
            return;
        }
    };
    let _ = write!(
        h,
        "<table><tr><th>SHA-256</th><td class=\"mono\">{}</td></tr><tr><th>size</th><td>{} bytes</td></tr>",
        escape(r.sha256.as_deref().unwrap_or("-")),
        r.bytes.unwrap_or(0)
    );
    let _ = write!(
        h,
        "<tr><th>verdict</th><td class=\"{}\">{}</td></tr><tr><th>mark</th><td>{}: p = {:.1e} ({}), sync z {:.1}, threshold p = {:.0e}</td></tr>",
        if r.named.is_empty() { "" } else { "named" },
        escape(&verdict_words(r)),
        if r.verdict == Verdict::Marked {
            "present"
        } else {
            "not found at the required confidence"
        },
        r.p_value,
        escape(&odds(r.log10_p)),
        r.z,
        r.threshold_p
    );
    for n in &r.named {
        let _ = write!(
            h,
            "<tr><th>named</th><td class=\"named\">{} (release <span class=\"mono\">{}</span>): p = {:.1e}; {}</td></tr>",
            escape(&n.recipient),
            escape(&n.release_id),
            n.p_value,
            escape(&n.basis)
        );
    }
    if let Some(t) = &r.transform {
        let _ = write!(
            h,
            "<tr><th>the copy</th><td>scale {:.3}, aspect {:.3}, rotation {:.2} degrees, shift ({}, {}) px, {}</td></tr>",
            t.scale,
            t.aspect,
            t.rotation_deg,
            t.shift[0],
            t.shift[1],
            if t.inverted {
                "inverted"
            } else {
                "not inverted"
            }
        );
    }
    if let Some(w) = r.examined_window {
        let _ = write!(
            h,
            "<tr><th>examined</th><td>its central {}x{} px from ({}, {})</td></tr>",
            w[2], w[3], w[0], w[1]
        );
    }
    for c in &r.content {
        let _ = write!(
            h,
            "<tr><th>content</th><td>release <span class=\"mono\">{}</span>: {}{}</td></tr>",
            escape(&c.release_id),
            if c.matched {
                "matches "
            } else {
                "does not match "
            },
            escape(&match (&c.file, c.r, c.p_value) {
                (Some(f), Some(rr), Some(p)) =>
                    format!("{f} (rank correlation {rr:.2}, chance p = {p:.1e})"),
                (Some(f), _, _) => f.clone(),
                _ => "any released file".into(),
            })
        );
    }
    for a in &r.accused {
        let _ = write!(
            h,
            "<tr><th>informed check</th><td>release <span class=\"mono\">{}</span> to {}: fingerprint z {:.1}, p = {:.1e}</td></tr>",
            escape(&a.release_id),
            escape(&a.recipient),
            a.z,
            a.p_value
        );
    }
    if r.possible_collusion {
        h.push_str("<tr><th>collusion</th><td class=\"named\">fingerprints of more than one release, or a payload never issued: possible collusion</td></tr>");
    }
    if let Some(why) = &r.not_named {
        let _ = write!(h, "<tr><th>not named</th><td>{}</td></tr>", escape(why));
    }
    h.push_str("</table>\n");
    if let Some(png) = &e.view_png {
        let _ = writeln!(
            h,
            "<p><img alt=\"what the detector examined: {}\" src=\"data:image/png;base64,{}\"/></p>",
            escape(&e.path),
            base64(png)
        );
    }
    if let Some(l) = &ctx.ledger {
        let ids: Vec<&str> = r
            .named
            .iter()
            .map(|n| n.release_id.as_str())
            .chain(r.accused.iter().map(|a| a.release_id.as_str()))
            .collect();
        let rows: Vec<&Entry> = l
            .releases
            .iter()
            .filter(|e| ids.contains(&payload_hex(e.release.release_id).as_str()))
            .collect();
        if !rows.is_empty() {
            h.push_str("<h3>Release rows (ledger)</h3><table><tr><th>row</th><th>release</th><th>recipient</th><th>released</th><th>file released (SHA-256)</th></tr>");
            for e in rows {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{} <span class=\"mono\">{}</span></td></tr>",
                    e.seq,
                    payload_hex(e.release.release_id),
                    escape(&e.release.recipient),
                    escape(&iso_utc(e.created_ms)),
                    escape(&e.file.output_path),
                    escape(&e.file.output_sha256)
                );
            }
            h.push_str("</table>\n");
        }
    }
    h.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_files_is_escaped_and_base64_is_standard() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("a\u{202E}b\u{1}"), "a[U+202E]b&#x1;");
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        assert_eq!(odds(-143.1), "about 1 in 10^143");
    }
}

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
use crate::mark::strength::StrengthMap;
use crate::pipeline::View;
use crate::raster::{Raster, Samples};
use crate::report::{DetectionRecord, Footprint, Verdict, iso_utc, payload_hex};

/// One examined file.
#[derive(Clone, Debug)]
pub struct Examination {
    /// The file as named.
    pub path: String,
    /// When it was examined (UTC, ms since the epoch).
    pub examined_ms: i64,
    /// The detection record, or why the file could not be examined.
    pub outcome: std::result::Result<DetectionRecord, String>,
    /// What the detector looked at, when available.
    pub view: Option<View>,
}

/// The ledger's part of the evidence.
#[derive(Clone, Debug)]
pub struct LedgerEvidence {
    /// The ledger file as named.
    pub path: String,
    /// Rows (releases and audit rows) verified when the report was written.
    pub rows_verified: i64,
    /// Whether this run's examinations were appended to its audit trail (not when the
    /// ledger file cannot be written, e.g. a read-only copy).
    pub audit_recorded: bool,
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

/// A probability in scientific notation; one below f64's range reads "below 1e-307", never 0.
fn pv(p: f64) -> String {
    if p < f64::MIN_POSITIVE {
        "below 1e-307".into()
    } else {
        format!("{p:.1e}")
    }
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
    /// The map of local mark strength (z per block of the examined plane, one decimal).
    strength: Option<serde_json::Value>,
}

fn strength_json(m: &StrengthMap) -> serde_json::Value {
    serde_json::json!({
        "block_px": m.block,
        "cols": m.cols,
        "rows": m.rows,
        "null_rms": (m.null_rms * 1000.0).round() / 1000.0,
        "z": m.z.iter().map(|z| z.map(|v| (v * 10.0).round() / 10.0)).collect::<Vec<_>>(),
    })
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
            "audit_recorded": l.audit_recorded,
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
            strength: e.view.as_ref().and_then(|v| v.strength.as_ref()).map(strength_json),
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
section{page-break-inside:avoid;border-top:2px solid #444;margin-top:2em}img{border:1px solid #999;max-width:100%}\
.pics{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;max-width:330px}figcaption{font-size:85%;color:#333}\
.ov{position:relative;display:inline-block;line-height:0;overflow:hidden}.heat{position:absolute;left:0;top:0;border:0;image-rendering:pixelated}";

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
                "<p>Ledger <span class=\"mono\">{}</span>: its hash chain verified before anything was read from it; {}. Verified again for this report: {} rows, head <span class=\"mono\">{}</span></p>",
                escape(&l.path),
                if l.audit_recorded {
                    "every examination below is recorded in its audit trail"
                } else {
                    "<strong>the examinations below are not recorded in its audit trail</strong> (the ledger file could not be written, e.g. a read-only copy)"
                },
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
                    format!("{} ({})", pv(p), odds(log10)),
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
        "<tr><th>verdict</th><td class=\"{}\">{}</td></tr><tr><th>mark</th><td>{}: p = {} ({}), sync z {:.1}, threshold p = {:.0e}</td></tr>",
        if r.named.is_empty() { "" } else { "named" },
        escape(&verdict_words(r)),
        if r.verdict == Verdict::Marked {
            "present"
        } else {
            "not found at the required confidence"
        },
        pv(r.p_value),
        escape(&odds(r.log10_p)),
        r.z,
        r.threshold_p
    );
    for n in &r.named {
        let _ = write!(
            h,
            "<tr><th>named</th><td class=\"named\">{} (release <span class=\"mono\">{}</span>): p = {}; {}</td></tr>",
            escape(&n.recipient),
            escape(&n.release_id),
            pv(n.p_value),
            escape(&n.basis)
        );
    }
    if let Some(t) = &r.transform {
        let _ = write!(
            h,
            "<tr><th>the copy</th><td>scale {:.3}, aspect {:.3}, rotation {:.2} degrees, shift ({}, {}) px, {}{}</td></tr>",
            t.scale,
            t.aspect,
            t.rotation_deg,
            t.shift[0],
            t.shift[1],
            if t.inverted {
                "inverted"
            } else {
                "not inverted"
            },
            crate::report::keystone_note(t)
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
                    format!("{f} (rank correlation {rr:.2}, chance p = {})", pv(p)),
                (Some(f), _, _) => f.clone(),
                _ => "any released file".into(),
            })
        );
    }
    if let Some(o) = &r.original {
        let _ = write!(
            h,
            "<tr><th>against the original</th><td>{}: {}</td></tr>",
            escape(&o.path),
            if o.registered {
                format!(
                    "registered (the fitted original explains {:.0} % of the copy); what is left: {}, p = {} (sync z {:.1})",
                    100.0 * o.explained,
                    o.payload
                        .as_ref()
                        .map_or("no payload read".into(), |p| format!(
                            "payload <span class=\"mono\">{}</span>",
                            escape(p)
                        )),
                    pv(o.p_value),
                    o.z
                )
            } else {
                format!(
                    "the copy does not register in it (the fitted original explains {:.0} % at best)",
                    100.0 * o.explained
                )
            }
        );
    }
    for a in &r.accused {
        let _ = write!(
            h,
            "<tr><th>informed check{}</th><td>release <span class=\"mono\">{}</span> to {}: fingerprint z {:.1}, p = {}</td></tr>",
            if a.against_original {
                " (against the original)"
            } else {
                ""
            },
            escape(&a.release_id),
            escape(&a.recipient),
            a.z,
            pv(a.p_value)
        );
    }
    if r.possible_collusion {
        h.push_str("<tr><th>collusion</th><td class=\"named\">fingerprints of more than one release, or a payload never issued: possible collusion</td></tr>");
    }
    if let Some(why) = &r.not_named {
        let _ = write!(h, "<tr><th>not named</th><td>{}</td></tr>", escape(why));
    }
    h.push_str("</table>\n");
    if let Some(v) = &e.view {
        pictures(h, e, r, v);
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

/// The pictures of one examined file: what the detector looked at; where in it the mark
/// is; and which part of the released file the copy shows.
fn pictures(h: &mut String, e: &Examination, r: &DetectionRecord, v: &View) {
    h.push_str("<div class=\"pics\">");
    match &v.strength {
        // The copy with the map laid over it: a block-per-pixel image stretched over the
        // blocks it covers (no smoothing), so the page carries the copy once.
        Some(m) => {
            let full = full_scale(m);
            let covered =
                |n: usize, px: usize| 100.0 * (n * m.block) as f64 / (px * v.factor).max(1) as f64;
            let _ = write!(
                h,
                "<figure><div class=\"ov\"><img alt=\"{}\" src=\"data:image/png;base64,{}\"/><img class=\"heat\" alt=\"\" style=\"width:{:.3}%;height:{:.3}%\" src=\"data:image/png;base64,{}\"/></div><figcaption>{}</figcaption></figure>",
                escape(&format!(
                    "the copy as examined, with the local mark strength over it: {}",
                    e.path
                )),
                base64(&png(&v.image)),
                covered(m.cols, v.image.width),
                covered(m.rows, v.image.height),
                base64(&png(&heat(m, full))),
                escape(&format!(
                    "The copy as examined; red where the mark is locally strong, by the z of each {} px block (calibrated on this image: about N(0, 1) where there is no mark), from clear at z 0 to the strongest red at z {:.0}. {:.0} % of the blocks have z of 3 or more. The claim rests on the whole copy, not on one block.",
                    m.block,
                    full,
                    100.0 * m.share_at_least(3.0)
                ))
            );
        }
        None => figure(
            h,
            &png(&v.image),
            &format!("what the detector examined: {}", e.path),
            "The copy as examined",
        ),
    }
    if let Some((c, f)) = r
        .content
        .iter()
        .find_map(|c| c.footprint.as_ref().map(|f| (c, f)))
    {
        let _ = write!(
            h,
            "<figure>{}<figcaption>Which part of the released file {} ({} x {} px) the copy shows: the outlined area, about {:.0} % of the file; the dot marks the copy's top-left corner.</figcaption></figure>",
            footprint_svg(f),
            escape(c.file.as_deref().unwrap_or_default()),
            f.original[0],
            f.original[1],
            100.0 * covered(f)
        );
    }
    h.push_str("</div>\n");
}

fn figure(h: &mut String, png: &[u8], alt: &str, caption: &str) {
    let _ = write!(
        h,
        "<figure><img alt=\"{}\" src=\"data:image/png;base64,{}\"/><figcaption>{}</figcaption></figure>",
        escape(alt),
        base64(png),
        escape(caption)
    );
}

fn png(r: &Raster) -> Vec<u8> {
    crate::io::image::encode_for(r, Path::new("view.png"), &Default::default())
        .map(|e| e.bytes)
        .unwrap_or_default()
}

/// The z shown as full red: the map's 90th percentile, at least 6, so that a copy marked
/// everywhere still shows where it is strongest.
fn full_scale(m: &StrengthMap) -> f32 {
    let mut z: Vec<f32> = m.z.iter().flatten().copied().collect();
    if z.is_empty() {
        return 6.0;
    }
    z.sort_by(f32::total_cmp);
    z[(z.len() - 1) * 9 / 10].max(6.0)
}

/// The map as an image of one pixel per block: red, transparent at z <= 0 and most opaque
/// at z >= `full`; transparent where the block has no statistic (flat).
fn heat(m: &StrengthMap, full: f32) -> Raster {
    let mut rgba = Vec::with_capacity(m.z.len() * 4);
    for z in &m.z {
        let a = z.map_or(0.0, |z| (z / full).clamp(0.0, 1.0) * 0.45);
        rgba.extend_from_slice(&[230, 20, 20, (a * 255.0).round() as u8]);
    }
    Raster {
        width: m.cols,
        height: m.rows,
        channels: 4,
        samples: Samples::U8(rgba),
    }
}

/// The released file's frame with the copy's outline, as inline SVG (HTML5: no namespace
/// needed, nothing fetched).
fn footprint_svg(f: &Footprint) -> String {
    let (w, h) = (f64::from(f.original[0]), f64::from(f.original[1]));
    // Room around the frame for a copy that shows more than the file (padding, a collage).
    let xs = f.corners.iter().map(|c| c[0]).chain([0.0, w]);
    let ys = f.corners.iter().map(|c| c[1]).chain([0.0, h]);
    let (x0, x1) = (
        xs.clone().fold(f64::INFINITY, f64::min),
        xs.fold(f64::NEG_INFINITY, f64::max),
    );
    let (y0, y1) = (
        ys.clone().fold(f64::INFINITY, f64::min),
        ys.fold(f64::NEG_INFINITY, f64::max),
    );
    let (vw, vh) = ((x1 - x0).max(1.0), (y1 - y0).max(1.0));
    let side = 320.0;
    let k = side / vw.max(vh);
    let points: Vec<String> = f
        .corners
        .iter()
        .map(|c| format!("{:.1},{:.1}", c[0], c[1]))
        .collect();
    format!(
        "<svg role=\"img\" aria-label=\"the copy's outline on the released file\" width=\"{:.0}\" height=\"{:.0}\" viewBox=\"{:.1} {:.1} {:.1} {:.1}\"><rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#eee\" stroke=\"#333\" vector-effect=\"non-scaling-stroke\"/><polygon points=\"{}\" fill=\"#e01414\" fill-opacity=\"0.25\" stroke=\"#a00\" stroke-width=\"2\" vector-effect=\"non-scaling-stroke\"/><circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{:.1}\" fill=\"#a00\"/></svg>",
        vw * k,
        vh * k,
        x0,
        y0,
        vw,
        vh,
        points.join(" "),
        f.corners[0][0],
        f.corners[0][1],
        4.0 / k
    )
}

/// Share of the released file's area the copy covers: the copy's outline clipped to the
/// file's frame (Sutherland-Hodgman), by area.
fn covered(f: &Footprint) -> f64 {
    let (w, h) = (f64::from(f.original[0]), f64::from(f.original[1]));
    let mut poly: Vec<[f64; 2]> = f.corners.to_vec();
    // Each frame edge as (axis, bound, keep the side below it).
    for (axis, bound, below) in [(0, 0.0, false), (0, w, true), (1, 0.0, false), (1, h, true)] {
        let inside = |p: &[f64; 2]| {
            if below {
                p[axis] <= bound
            } else {
                p[axis] >= bound
            }
        };
        let mut out = Vec::with_capacity(poly.len() + 2);
        for i in 0..poly.len() {
            let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
            let cross = || {
                let t = (bound - a[axis]) / (b[axis] - a[axis]);
                [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]
            };
            match (inside(&a), inside(&b)) {
                (true, true) => out.push(b),
                (true, false) => out.push(cross()),
                (false, true) => {
                    out.push(cross());
                    out.push(b);
                }
                (false, false) => {}
            }
        }
        poly = out;
        if poly.is_empty() {
            return 0.0;
        }
    }
    let area: f64 = (0..poly.len())
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f64>()
        .abs()
        / 2.0;
    (area / (w * h).max(1.0)).min(1.0)
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
        assert_eq!(pv(0.0), "below 1e-307");
        assert_eq!(pv(1.23e-70), "1.2e-70");
    }

    #[test]
    fn the_covered_share_clips_the_outline_to_the_file() {
        let fp = |corners| Footprint {
            original: [100, 200],
            corners,
        };
        // The left half, as a turned outline (corner order rotated).
        let half = fp([[50.0, 0.0], [50.0, 200.0], [0.0, 200.0], [0.0, 0.0]]);
        assert!((covered(&half) - 0.5).abs() < 1e-9);
        // A copy padded beyond the file covers all of it, no more.
        let padded = fp([
            [-10.0, -10.0],
            [110.0, -10.0],
            [110.0, 210.0],
            [-10.0, 210.0],
        ]);
        assert!((covered(&padded) - 1.0).abs() < 1e-9);
        // A diamond inside: half the square it spans.
        let diamond = fp([[50.0, 50.0], [100.0, 100.0], [50.0, 150.0], [0.0, 100.0]]);
        assert!((covered(&diamond) - 5000.0 / 20000.0).abs() < 1e-9);
        // Entirely outside.
        let away = fp([[200.0, 0.0], [300.0, 0.0], [300.0, 50.0], [200.0, 50.0]]);
        assert_eq!(covered(&away), 0.0);
        let svg = footprint_svg(&half);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>") && !svg.contains("http"));
    }
}

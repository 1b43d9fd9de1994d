//! `tracemark-embed ledger ...`: read and check the release ledger (an SQLite file or a
//! PostgreSQL database). Every action but `import` opens it read-only (a file stays byte for
//! byte as it was) and verifies the chain before reading anything from it; `show` and
//! `export` then append their audit row. `import` appends the rows of another ledger's
//! `export --chain`, each checked under the key first.

use std::io::Write;

use anyhow::{Context, bail};
use tracemark::SecretKey;
use tracemark::exit::ExitStatus;
use tracemark::ledger::{Anchor, Audit, ChainRow, Ledger, Verification, shown_location};
use tracemark::report::{iso_utc, now_ms, parse_payload, payload_hex, sanitize};

use crate::cli;

pub fn run(args: cli::LedgerArgs) -> anyhow::Result<ExitStatus> {
    let key = args.key.context("missing --key KEYFILE")?;
    let path = args
        .ledger
        .context("missing --ledger PATH (or TRACEMARK_LEDGER)")?;
    let key = SecretKey::load_file(&key)?;
    if let cli::LedgerAction::Verify { anchor } = &args.action {
        let ledger = Ledger::open_read_only(&path, &key)?;
        let verdict = match anchor {
            Some(line) => ledger.verify_against(&line.parse::<Anchor>()?)?,
            None => ledger.verify()?,
        };
        return Ok(match verdict {
            Verification::Intact { rows } => {
                println!(
                    "ledger intact: {rows} rows verified{}",
                    if anchor.is_some() {
                        ", and it extends the anchor"
                    } else {
                        ""
                    }
                );
                ExitStatus::Success
            }
            Verification::Broken { seq, why } => {
                println!("ledger BROKEN at row {seq}: {why}");
                ExitStatus::Negative
            }
        });
    }
    if let cli::LedgerAction::Import { file } = &args.action {
        return import(&path, &key, file);
    }
    let ledger = Ledger::open_verified(&path, &key)?;
    // What is read out of the ledger about releases is itself recorded.
    let audit = |action: &str, subject: String| {
        record(
            &path,
            &key,
            &[Audit {
                action: action.into(),
                operator: args.operator.clone(),
                subject,
                sha256: String::new(),
                bytes: 0,
                verdict: "read".into(),
                named: Vec::new(),
                detail: serde_json::Value::Null,
            }],
        );
    };
    match args.action {
        cli::LedgerAction::List => {
            let entries = ledger.entries()?;
            for id in ledger.release_ids()? {
                let rows: Vec<_> = entries
                    .iter()
                    .filter(|e| e.release.release_id == id)
                    .collect();
                let first = rows[0];
                println!(
                    "{}  {}  {}  {} file(s){}",
                    payload_hex(id),
                    iso_utc(first.created_ms),
                    sanitize(&first.release.recipient),
                    rows.len(),
                    first
                        .release
                        .purpose
                        .as_deref()
                        .map(|p| format!("  ({})", sanitize(p)))
                        .unwrap_or_default()
                );
            }
        }
        cli::LedgerAction::Show { id } => {
            let id = parse_payload(&id)?;
            let rows = ledger.release(id)?;
            if rows.is_empty() {
                bail!(
                    "release {} is not in {}",
                    payload_hex(id),
                    shown_location(&path).display()
                );
            }
            let r = &rows[0].release;
            println!(
                "release {}: recipient {}, purpose {}, operator {}",
                payload_hex(id),
                sanitize(&r.recipient),
                sanitize(r.purpose.as_deref().unwrap_or("-")),
                sanitize(r.operator.as_deref().unwrap_or("-"))
            );
            for e in rows {
                println!(
                    "  row {} {} {} -> {} ({}, {} bytes, sha256 {})",
                    e.seq,
                    iso_utc(e.created_ms),
                    sanitize(&e.file.input_path),
                    sanitize(&e.file.output_path),
                    e.file.format,
                    e.file.bytes,
                    e.file.output_sha256
                );
            }
            audit("show", payload_hex(id));
        }
        cli::LedgerAction::Export { chain: true } => {
            let mut out = std::io::stdout().lock();
            for row in ledger.chain_rows()? {
                writeln!(out, "{}", row.to_json(&ledger))?;
            }
            drop(out);
            audit("export", shown_location(&path).display().to_string());
        }
        cli::LedgerAction::Export { chain: false } => {
            for e in ledger.entries()? {
                let row = serde_json::json!({
                    "seq": e.seq,
                    "release_id": payload_hex(e.release.release_id),
                    "recipient": e.release.recipient,
                    "purpose": e.release.purpose,
                    "operator": e.release.operator,
                    "created_utc": iso_utc(e.created_ms),
                    "created_ms": e.created_ms,
                    "key_id": e.key_id,
                    "input_path": e.file.input_path,
                    "input_sha256": e.file.input_sha256,
                    "output_path": e.file.output_path,
                    "output_sha256": e.file.output_sha256,
                    "format": e.file.format,
                    "bytes": e.file.bytes,
                    "params": serde_json::from_str::<serde_json::Value>(&e.file.params)
                        .unwrap_or(serde_json::Value::Null),
                });
                println!("{row}");
            }
            audit("export", shown_location(&path).display().to_string());
        }
        cli::LedgerAction::Head => println!("{}", ledger.anchor(now_ms())?),
        cli::LedgerAction::Audit => {
            for e in ledger.audit()? {
                let params: serde_json::Value =
                    serde_json::from_str(&e.file.params).unwrap_or_default();
                let named: Vec<String> = params["named"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|n| {
                                format!(
                                    "{} ({})",
                                    n["recipient"].as_str().unwrap_or(""),
                                    n["release_id"].as_str().unwrap_or("")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "row {}  {}  {}  by {}  {}{}  {}{}",
                    e.seq,
                    iso_utc(e.created_ms),
                    e.release.purpose.as_deref().unwrap_or("-"),
                    sanitize(e.release.operator.as_deref().unwrap_or("-")),
                    sanitize(&e.file.input_path),
                    if e.file.input_sha256.is_empty() {
                        String::new()
                    } else {
                        format!(" (sha256 {})", e.file.input_sha256)
                    },
                    params["verdict"].as_str().unwrap_or("-"),
                    if named.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", sanitize(&named.join(", ")))
                    }
                );
            }
        }
        cli::LedgerAction::Verify { .. } | cli::LedgerAction::Import { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(ExitStatus::Success)
}

/// `ledger import FILE`: the rows of `export --chain` appended to the ledger at `path`
/// (created if absent).
fn import(
    path: &std::path::Path,
    key: &SecretKey,
    file: &std::path::Path,
) -> anyhow::Result<ExitStatus> {
    let text = if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin().lock()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).map_err(|e| tracemark::Error::io(file, e))?
    };
    let mut ledger = Ledger::open(path, key)?;
    ledger.check_writable()?;
    let rows = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            let what = format!("{}: line {}", file.display(), n + 1);
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{what}: not JSON"))?;
            Ok(ChainRow::from_json(&v, &ledger, &what)?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let added = ledger.import(&rows)?;
    let rows = ledger.ensure_intact()?;
    println!(
        "imported {added} row(s) into {}; ledger intact: {rows} rows verified",
        shown_location(path).display()
    );
    println!("{}", ledger.anchor(now_ms())?);
    Ok(ExitStatus::Success)
}

/// Appends `audits` to the ledger at `path`; one warning line when it cannot be written (a
/// read-only copy is still read, but the accesses are not recorded).
pub fn record(path: &std::path::Path, key: &SecretKey, audits: &[Audit]) {
    if let Err(e) = Ledger::record_audits(path, key, audits) {
        eprintln!(
            "tracemark-embed: warning: {}: this {} is not recorded in its audit trail ({})",
            sanitize(&shown_location(path).display().to_string()),
            audits[0].action,
            sanitize(&tracemark::chain_text(&e))
        );
    }
}

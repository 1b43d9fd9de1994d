//! `tracemark-embed ledger ...`: read and check the release ledger.

use anyhow::{Context, bail};
use tracemark::SecretKey;
use tracemark::exit::ExitStatus;
use tracemark::ledger::{Ledger, Verification};
use tracemark::report::{iso_utc, parse_payload, payload_hex, sanitize};

use crate::cli;

pub fn run(args: cli::LedgerArgs) -> anyhow::Result<ExitStatus> {
    let key = args.key.context("missing --key KEYFILE")?;
    let path = args
        .ledger
        .context("missing --ledger PATH (or TRACEMARK_LEDGER)")?;
    let key = SecretKey::load_file(&key)?;
    let ledger = Ledger::open_existing(&path, &key)?;
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
                bail!("release {} is not in {}", payload_hex(id), path.display());
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
        }
        cli::LedgerAction::Export => {
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
        }
        cli::LedgerAction::Verify => match ledger.verify()? {
            Verification::Intact { rows } => println!("ledger intact: {rows} rows verified"),
            Verification::Broken { seq, why } => {
                println!("ledger BROKEN at row {seq}: {why}");
                return Ok(ExitStatus::Negative);
            }
        },
    }
    Ok(ExitStatus::Success)
}

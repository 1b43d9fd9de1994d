//! Ledger append rate (issue 15's bottleneck question): `writers` threads, each on its own
//! connection, append `rows` rows in all to one fresh ledger, an SQLite file and (given a
//! server) a PostgreSQL database, alternately; rows per second, median of the runs. Each
//! append is the real one: one transaction that locks the head, inserts the chained, MAC'd
//! row and moves the head (the file's move into place is left out: no files are written).

use std::path::Path;
use std::time::Instant;

use tracemark::SecretKey;
use tracemark::ledger::{FileRecord, Ledger, ReleaseMeta, ScratchDatabase, sha256_hex};

use crate::report;

/// A row like a stamped 512-px PNG's (content descriptors of about 1 kB).
fn row(n: usize) -> FileRecord {
    FileRecord {
        input_path: format!("/data/study/series{}/img{n:06}.png", n % 8),
        input_sha256: sha256_hex(&n.to_be_bytes()),
        output_path: format!("/data/release/series{}/img{n:06}.png", n % 8),
        output_sha256: sha256_hex(&(n + 1).to_be_bytes()),
        format: "PNG".into(),
        bytes: 400_000,
        params: r#"{"psnr_db":42.0,"mask_gamma":0.5}"#.into(),
        content: vec![7; 1024],
        restore: Vec::new(),
    }
}

/// Appends `rows` rows from `writers` threads to `ledger`; rows per second.
fn append_rate(ledger: &Path, key: &SecretKey, rows: usize, writers: usize) -> anyhow::Result<f64> {
    Ledger::open(ledger, key)?;
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                s.spawn(move || -> anyhow::Result<()> {
                    let mut l = Ledger::open(ledger, key)?;
                    let meta = ReleaseMeta {
                        release_id: w as u64 + 1,
                        recipient: format!("station {w}"),
                        purpose: None,
                        operator: None,
                    };
                    for n in (w..rows).step_by(writers) {
                        l.append(&meta, &row(n), n as i64, || Ok(()))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer thread")?;
        }
        Ok(())
    })?;
    let rate = rows as f64 / start.elapsed().as_secs_f64();
    let n = Ledger::open_verified(ledger, key)?.ensure_intact()?;
    anyhow::ensure!(n as usize == rows, "{n} rows, not {rows}");
    Ok(rate)
}

/// Prints the append rates.
///
/// # Errors
/// Ledger or server errors.
pub fn run(
    rows: usize,
    writers: &[usize],
    runs: usize,
    postgres: Option<&str>,
) -> anyhow::Result<()> {
    let key = SecretKey::generate()?;
    let dir = tempfile::tempdir()?;
    println!("| writers | SQLite file (rows/s) | PostgreSQL (rows/s) |");
    println!("|---|---|---|");
    for &w in writers {
        let (mut file, mut pg) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let path = dir.path().join(format!("l{w}-{run}.db"));
            file.push(append_rate(&path, &key, rows, w)?);
            if let Some(admin) = postgres {
                let db = ScratchDatabase::create(admin, "tracemark_bench")
                    .map_err(anyhow::Error::msg)?;
                pg.push(append_rate(&db.url, &key, rows, w)?);
            }
        }
        let pg = if pg.is_empty() {
            "-".to_string()
        } else {
            format!("{:.0}", report::median(pg))
        };
        println!("| {w} | {:.0} | {pg} |", report::median(file));
    }
    println!(
        "({rows} rows per ledger, median of {runs} runs, {} cores)",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    Ok(())
}

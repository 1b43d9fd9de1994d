//! Mutation fuzzing of the real binaries (issue 11), on stable Rust: seeds of every format
//! in testdata are truncated, bit-flipped, given inserted bytes, inflated length fields,
//! spliced, and (DICOM) deeply nested sequences; the mutants are stamped by
//! `tracemark-embed` (a batch with a ledger) and examined by `tracemark-detect`, each run
//! under an address-space limit and a time limit. Checked for every batch:
//!
//! - exit status 0, 1 or 2 only (no abort, no signal, no uncaught panic);
//! - one record per input (a result or a one-line error), nothing else;
//! - a panic inside tracemark's own code is a failure; a panic inside a dependency,
//!   contained as the file's error, is reported (and its mutant saved);
//! - embed: an output exists exactly for the inputs that were stamped, the ledger holds
//!   exactly those rows, and `ledger verify` passes;
//! - the address-space limit and the time limit hold.
//!
//! A batch that fails is replayed one mutant at a time to name the culprit, which is saved
//! for the committed corpus (`testdata/hostile/`), replayed first by every run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::testdata;

/// A fuzzing run's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// tracemark-embed and tracemark-detect live here.
    pub bin_dir: PathBuf,
    /// Stop after this many mutants...
    pub mutants: usize,
    /// ...or after this long, whichever comes first.
    pub budget: Duration,
    /// Mutants per process run.
    pub batch: usize,
    /// RNG seed (printed, so that a run can be repeated).
    pub seed: u64,
    /// Seeds at full size (every testdata file) instead of small crops and the small DICOM
    /// files.
    pub full_seeds: bool,
    /// Where failing and panicking mutants are written.
    pub save: PathBuf,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Mutants run (corpus files included).
    pub mutants: usize,
    /// Process runs.
    pub runs: usize,
    /// Inputs each binary refused with an error (exit 2), stamped, or examined.
    pub refused: usize,
    /// Inputs stamped.
    pub stamped: usize,
    /// Panics inside dependencies, contained as the file's error: (mutant, message).
    pub contained: Vec<(PathBuf, String)>,
    /// Failures: (mutant, what broke).
    pub failures: Vec<(PathBuf, String)>,
    /// Wall time.
    pub seconds: f64,
}

impl Report {
    /// The report as markdown.
    pub fn to_markdown(&self, cfg: &Config) -> String {
        let mut s = format!(
            "# Fuzzing\n\nSeed {}; {} mutants in {} process runs, {:.0} s ({:.1} mutants/s); {} stamped, {} refused with an error.\n\n",
            cfg.seed,
            self.mutants,
            self.runs,
            self.seconds,
            self.mutants as f64 / self.seconds.max(1e-9),
            self.stamped,
            self.refused
        );
        s += &format!("Failures: {}\n", self.failures.len());
        for (p, why) in &self.failures {
            s += &format!("- {}: {why}\n", p.display());
        }
        s += &format!(
            "\nPanics in dependencies, contained as the file's error: {}\n",
            self.contained.len()
        );
        let kinds: BTreeSet<&str> = self
            .contained
            .iter()
            .map(|(_, m)| m.rsplit(" at ").next().unwrap_or(m))
            .collect();
        for k in kinds {
            s += &format!("- at {k}\n");
        }
        s
    }
}

/// Address space each process may map (the memory budget given to the tools is below it).
const ADDRESS_SPACE: u64 = 6 << 30;
/// The tools' own memory budget in the runs.
const MAX_MEMORY: &str = "1536M";

struct Seed {
    name: String,
    bytes: Vec<u8>,
    ext: &'static str,
}

fn seeds(full: bool) -> anyhow::Result<Vec<Seed>> {
    use tracemark::io::Limits;
    use tracemark::io::image::{WriteOptions, encode_for, read};
    let mut seeds = Vec::new();
    let dir = testdata();
    let mut names: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let ext = match path.extension().and_then(|e| e.to_str()) {
            Some("dcm") => "dcm",
            Some("png") => "png",
            Some("jpg") => "jpg",
            _ => continue,
        };
        if ext == "dcm" {
            let bytes = std::fs::read(&path)?;
            if full || bytes.len() <= 1 << 20 {
                seeds.push(Seed { name, bytes, ext });
            }
            continue;
        }
        // Photos: a small crop in every raster format (fast runs), or the whole image.
        let (r, _) = read(&path, &Limits::default())?;
        let r = if full {
            r
        } else {
            tracemark_leaks::crop(&r, 0, 0, r.width.min(200), r.height.min(176))
        };
        for out in ["png", "jpg", "tif", "webp"] {
            let e = encode_for(&r, Path::new(&format!("x.{out}")), &WriteOptions::default())?;
            let ext = match out {
                "png" => "png",
                "jpg" => "jpg",
                "tif" => "tif",
                _ => "webp",
            };
            seeds.push(Seed {
                name: format!("{name}.{out}"),
                bytes: e.bytes,
                ext,
            });
        }
    }
    Ok(seeds)
}

/// Offsets of length fields a decoder trusts, by format (PNG chunk lengths, JPEG segment
/// lengths, TIFF entry counts and value counts, RIFF chunk sizes, DICOM element lengths).
fn length_fields(b: &[u8], ext: &str) -> Vec<(usize, usize, bool)> {
    // (offset, width in bytes, big-endian)
    let mut v = Vec::new();
    match ext {
        "png" => {
            let mut i = 8;
            while i + 8 <= b.len() {
                v.push((i, 4, true));
                let len = u32::from_be_bytes(b[i..i + 4].try_into().unwrap()) as usize;
                i += 12 + len;
            }
        }
        "jpg" => {
            let mut i = 2;
            while i + 4 <= b.len() && b[i] == 0xFF {
                v.push((i + 2, 2, true));
                let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
                if b[i + 1] == 0xDA {
                    break;
                }
                i += 2 + len;
            }
        }
        "tif" => {
            let be = b.starts_with(b"MM");
            let rd32 = |i: usize| -> Option<usize> {
                let x: [u8; 4] = b.get(i..i + 4)?.try_into().ok()?;
                Some(if be {
                    u32::from_be_bytes(x)
                } else {
                    u32::from_le_bytes(x)
                } as usize)
            };
            if let Some(ifd) = rd32(4) {
                v.push((4, 4, be));
                v.push((ifd, 2, be));
                let n = b.get(ifd..ifd + 2).map_or(0, |x| {
                    usize::from(if be {
                        u16::from_be_bytes([x[0], x[1]])
                    } else {
                        u16::from_le_bytes([x[0], x[1]])
                    })
                });
                for k in 0..n.min(64) {
                    let e = ifd + 2 + 12 * k;
                    v.push((e + 4, 4, be)); // count
                    v.push((e + 8, 4, be)); // value or offset
                }
            }
        }
        "webp" => {
            v.push((4, 4, false));
            let mut i = 12;
            while i + 8 <= b.len() {
                v.push((i + 4, 4, false));
                let len = u32::from_le_bytes(b[i + 4..i + 8].try_into().unwrap()) as usize;
                i += 8 + len + (len & 1);
            }
        }
        _ => {
            // DICOM, read as Explicit VR Little Endian from the meta on (good enough to
            // find most length fields; mutations need not be exact).
            let mut i = 132;
            while i + 8 <= b.len() {
                let vr = &b[i + 4..i + 6];
                let long = matches!(
                    vr,
                    b"OB" | b"OW" | b"SQ" | b"UN" | b"UT" | b"OF" | b"UC" | b"UR"
                );
                let (at, width, len) = if b[i] == 0xFE && b[i + 1] == 0xFF {
                    (
                        i + 4,
                        4,
                        u32::from_le_bytes(b[i + 4..i + 8].try_into().unwrap()),
                    )
                } else if long && i + 12 <= b.len() {
                    (
                        i + 8,
                        4,
                        u32::from_le_bytes(b[i + 8..i + 12].try_into().unwrap()),
                    )
                } else {
                    (
                        i + 6,
                        2,
                        u32::from(u16::from_le_bytes([b[i + 6], b[i + 7]])),
                    )
                };
                v.push((at, width, false));
                let header = at + width - i;
                i += header
                    + if len == u32::MAX || vr == b"SQ" {
                        0
                    } else {
                        len as usize
                    };
            }
        }
    }
    v.retain(|&(o, w, _)| o + w <= b.len());
    v
}

fn mutate(seed: &Seed, others: &[Seed], rng: &mut ChaCha8Rng) -> (Vec<u8>, String) {
    let mut b = seed.bytes.clone();
    let n = b.len().max(1);
    let kind = rng.random_range(0..8u32);
    let what = match kind {
        0 => {
            let at = rng.random_range(0..n);
            b.truncate(at);
            format!("truncated at {at}")
        }
        1 | 2 => {
            let flips = rng.random_range(1..=8);
            for _ in 0..flips {
                let at = rng.random_range(0..n);
                if let Some(x) = b.get_mut(at) {
                    *x ^= 1 << rng.random_range(0..8);
                }
            }
            format!("{flips} bits flipped")
        }
        3 => {
            let at = rng.random_range(0..n);
            let len = rng.random_range(1..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            b.splice(at..at, bytes);
            format!("{len} bytes inserted at {at}")
        }
        4 | 5 => {
            let fields = length_fields(&b, seed.ext);
            if fields.is_empty() {
                b.truncate(n / 2);
                "halved".into()
            } else {
                let (at, width, be) = fields[rng.random_range(0..fields.len())];
                let value: u64 = match rng.random_range(0..4) {
                    0 => u64::MAX,
                    1 => u64::MAX - 15,
                    2 => rng.random::<u64>(),
                    _ => 0,
                };
                let bytes = if be {
                    value.to_be_bytes()[8 - width..].to_vec()
                } else {
                    value.to_le_bytes()[..width].to_vec()
                };
                b[at..at + width].copy_from_slice(&bytes);
                format!("length field at {at} set to {value:#x}")
            }
        }
        6 if seed.ext == "dcm" => {
            // Nested undefined-length sequences before the Pixel Data.
            let depth = [40usize, 400, 12_000][rng.random_range(0..3)];
            let at = b
                .windows(4)
                .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00])
                .unwrap_or(n.min(b.len()));
            let mut nest = Vec::with_capacity(depth * 20);
            for _ in 0..depth {
                nest.extend_from_slice(&[0x09, 0x00, 0x10, 0x10, b'S', b'Q', 0, 0]);
                nest.extend_from_slice(&u32::MAX.to_le_bytes());
                nest.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
                nest.extend_from_slice(&u32::MAX.to_le_bytes());
            }
            b.splice(at..at, nest);
            format!("{depth} nested sequences at {at}")
        }
        _ => {
            // Splice: this file's head, another seed's tail.
            let other = &others[rng.random_range(0..others.len())].bytes;
            let cut = rng.random_range(0..n);
            let from = rng.random_range(0..other.len().max(1));
            b.truncate(cut);
            b.extend_from_slice(other.get(from..).unwrap_or_default());
            format!("spliced at {cut} with a tail")
        }
    };
    (b, what)
}

/// A process run's outcome.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    timed_out: bool,
}

fn run_limited(mut cmd: Command, timeout: Duration) -> anyhow::Result<Outcome> {
    use std::io::Read;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: ADDRESS_SPACE as libc::rlim_t,
                rlim_max: ADDRESS_SPACE as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the binary")?;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let ereader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Outcome {
        code: status.code().or(status.signal().map(|s| 128 + s)),
        stdout: reader.join().unwrap_or_default(),
        stderr: ereader.join().unwrap_or_default(),
        timed_out,
    })
}

/// A panic contained as a file's error, and whether it happened in tracemark's own code.
fn contained_panic(line: &str) -> Option<(String, bool)> {
    let i = line.find("internal error while")?;
    let msg = line[i..].to_string();
    let ours = !msg.contains(".crates.io")
        && msg
            .rsplit(" at ")
            .next()
            .is_some_and(|at| !at.contains('-') || at.starts_with("shared/"));
    Some((msg, ours))
}

/// The panics a run contained as files' errors: (file, message, whether in tracemark's own
/// code); a line that names no input is filed under `batch`.
fn panics(stderr: &str, files: &[PathBuf], batch: &Path) -> Vec<(PathBuf, String, bool)> {
    stderr
        .lines()
        .filter_map(|line| {
            let (msg, ours) = contained_panic(line)?;
            let file = files
                .iter()
                .find(|f| line.contains(&*f.to_string_lossy()))
                .cloned()
                .unwrap_or_else(|| batch.to_path_buf());
            Some((file, msg, ours))
        })
        .collect()
}

/// Checks one batch of mutant files; returns the failures (file or batch, why), the
/// contained panics, and the counts of stamped and refused inputs.
struct Checked {
    failures: Vec<(PathBuf, String)>,
    contained: Vec<(PathBuf, String)>,
    stamped: usize,
    refused: usize,
}

fn check_batch(
    cfg: &Config,
    key: &Path,
    work: &Path,
    files: &[PathBuf],
) -> anyhow::Result<Checked> {
    let mut c = Checked {
        failures: Vec::new(),
        contained: Vec::new(),
        stamped: 0,
        refused: 0,
    };
    let timeout = Duration::from_secs(30 + 10 * files.len() as u64);
    let mut fail = |who: &Path, why: String| c.failures.push((who.to_path_buf(), why));
    // Examine.
    let mut cmd = Command::new(cfg.bin_dir.join("tracemark-detect"));
    cmd.arg("--key")
        .arg(key)
        .args(["--json", "--max-memory", MAX_MEMORY])
        .args(files);
    let o = run_limited(cmd, timeout)?;
    // Failures of the whole run are filed under the work folder.
    let batch = work;
    if o.timed_out {
        fail(batch, format!("detect: no answer within {timeout:?}"));
    } else if !matches!(o.code, Some(0..=2)) {
        fail(
            batch,
            format!("detect: exit {:?}: {}", o.code, tail(&o.stderr)),
        );
    }
    if o.stderr.contains("panicked at") {
        fail(
            batch,
            format!("detect: uncaught panic: {}", tail(&o.stderr)),
        );
    }
    // One record per input (a detection or an error); the run's summary is not one.
    let lines: Vec<Value> = o
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["type"] != "summary")
        .collect();
    if !o.timed_out && lines.len() != files.len() {
        fail(
            batch,
            format!("detect: {} records for {} inputs", lines.len(), files.len()),
        );
    }
    for (file, msg, ours) in panics(&o.stderr, files, batch) {
        if ours {
            fail(&file, format!("detect: panic in tracemark: {msg}"));
        } else {
            c.contained.push((file, msg));
        }
    }
    // Stamp, as a batch with a ledger.
    let out = work.join("out");
    let ledger = work.join("ledger.db");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(&ledger);
    let mut cmd = Command::new(cfg.bin_dir.join("tracemark-embed"));
    cmd.arg("--key")
        .arg(key)
        .arg("--ledger")
        .arg(&ledger)
        .args(["--recipient", "fuzz", "--json", "--max-memory", MAX_MEMORY])
        .args(files)
        .arg("-o")
        .arg(&out);
    let o = run_limited(cmd, timeout)?;
    if o.timed_out {
        fail(batch, format!("embed: no answer within {timeout:?}"));
        return Ok(c);
    }
    if !matches!(o.code, Some(0 | 2)) {
        fail(
            batch,
            format!("embed: exit {:?}: {}", o.code, tail(&o.stderr)),
        );
    }
    if o.stderr.contains("panicked at") {
        fail(batch, format!("embed: uncaught panic: {}", tail(&o.stderr)));
    }
    let records: Vec<Value> = o
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut stamped = BTreeSet::new();
    let mut answered = 0;
    for r in &records {
        match r["type"].as_str() {
            Some("embedding") => {
                answered += 1;
                stamped.insert(PathBuf::from(r["output"].as_str().unwrap_or_default()));
            }
            Some("error") => answered += 1,
            _ => {}
        }
    }
    if answered != files.len() {
        fail(
            batch,
            format!("embed: {answered} records for {} inputs", files.len()),
        );
    }
    for f in files {
        let output = out.join(f.file_name().unwrap_or_default());
        if output.exists() != stamped.contains(&output) {
            fail(
                f,
                format!(
                    "embed: output {} but the run said {}",
                    if output.exists() {
                        "written"
                    } else {
                        "missing"
                    },
                    if stamped.contains(&output) {
                        "stamped"
                    } else {
                        "error"
                    }
                ),
            );
        }
    }
    for (file, msg, ours) in panics(&o.stderr, files, batch) {
        if ours {
            fail(&file, format!("embed: panic in tracemark: {msg}"));
        } else {
            c.contained.push((file, msg));
        }
    }
    if ledger.exists() {
        let mut cmd = Command::new(cfg.bin_dir.join("tracemark-embed"));
        cmd.arg("ledger")
            .arg("--key")
            .arg(key)
            .arg("--ledger")
            .arg(&ledger)
            .args(["export"]);
        let o = run_limited(cmd, timeout)?;
        let rows = o.stdout.lines().count();
        if o.code != Some(0) || rows != stamped.len() {
            fail(
                batch,
                format!(
                    "ledger: exit {:?}, {rows} rows for {} outputs",
                    o.code,
                    stamped.len()
                ),
            );
        }
    } else if !stamped.is_empty() {
        fail(batch, "ledger: missing after stamping".into());
    }
    c.stamped = stamped.len();
    c.refused = files.len() - stamped.len();
    Ok(c)
}

fn tail(s: &str) -> String {
    s.lines()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .join(" | ")
        .chars()
        .take(300)
        .collect()
}

/// Runs the corpus, then mutants until `cfg.mutants` or `cfg.budget`.
///
/// # Errors
/// When the binaries are missing or a process cannot be started.
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    for b in ["tracemark-embed", "tracemark-detect"] {
        if !cfg.bin_dir.join(b).exists() {
            bail!(
                "{} not found in {}: build the tools first",
                b,
                cfg.bin_dir.display()
            );
        }
    }
    let start = Instant::now();
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("fuzz.key");
    let k = Command::new(cfg.bin_dir.join("tracemark-embed"))
        .arg("keygen")
        .arg(&key)
        .output()?;
    if !k.status.success() {
        bail!("keygen failed: {}", String::from_utf8_lossy(&k.stderr));
    }
    let seeds = seeds(cfg.full_seeds)?;
    let corpus: Vec<PathBuf> = std::fs::read_dir(testdata().join("hostile"))
        .map(|rd| {
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e != "md"))
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut report = Report::default();
    let mut round = 0usize;
    while report.mutants < cfg.mutants && start.elapsed() < cfg.budget {
        let work = dir.path().join(format!("r{round}"));
        let inputs = work.join("in");
        std::fs::create_dir_all(&inputs)?;
        let mut files = Vec::new();
        let mut what = Vec::new();
        if round == 0 {
            for f in &corpus {
                let p = inputs.join(f.file_name().unwrap_or_default());
                std::fs::copy(f, &p)?;
                files.push(p);
                what.push("corpus".to_string());
            }
        }
        while files.len() < cfg.batch.max(1) {
            let seed = &seeds[rng.random_range(0..seeds.len())];
            let (bytes, how) = mutate(seed, &seeds, &mut rng);
            let p = inputs.join(format!("m{round:04}_{:03}.{}", files.len(), seed.ext));
            std::fs::write(&p, bytes)?;
            files.push(p);
            what.push(format!("{}: {how}", seed.name));
        }
        let checked = check_batch(cfg, &key, &work, &files)?;
        report.runs += 2;
        report.mutants += files.len();
        report.stamped += checked.stamped;
        report.refused += checked.refused;
        let mut failures = checked.failures;
        // A failure of the whole run: replay each mutant alone to name the culprits.
        if failures.iter().any(|(p, _)| p == &work) {
            failures.retain(|(p, _)| p != &work);
            for f in &files {
                let solo = work.join(format!(
                    "solo-{}",
                    f.file_name().unwrap_or_default().to_string_lossy()
                ));
                std::fs::create_dir_all(&solo)?;
                let c = check_batch(cfg, &key, &solo, std::slice::from_ref(f))?;
                report.runs += 2;
                failures.extend(c.failures.into_iter().map(|(_, why)| (f.clone(), why)));
            }
        }
        for (p, why) in failures {
            let how = files
                .iter()
                .position(|f| f == &p)
                .map(|i| what[i].clone())
                .unwrap_or_default();
            let saved = save(cfg, &p)?;
            report.failures.push((saved, format!("{why} [{how}]")));
        }
        for (p, msg) in checked.contained {
            let saved = save(cfg, &p)?;
            report.contained.push((saved, msg));
        }
        std::fs::remove_dir_all(&work).ok();
        round += 1;
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

fn save(cfg: &Config, p: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&cfg.save)?;
    let to = cfg.save.join(p.file_name().unwrap_or_default());
    if p.exists() {
        std::fs::copy(p, &to)?;
    }
    Ok(to)
}

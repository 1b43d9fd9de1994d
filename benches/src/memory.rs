//! Peak resident memory of the built tools on large inputs, against the estimates the memory
//! budget admits inputs by (issue 11, finding 5). Each case runs in its own process; the
//! peak is the child's `ru_maxrss`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use tracemark::io::Limits;
use tracemark::io::image::{WriteOptions, read, write};
use tracemark::pipeline::{Work, footprint};
use tracemark::raster::{Raster, Samples};

use crate::testdata;

/// Writes the large inputs into `dir` (run in a child process, so that the measuring
/// process stays small: Linux carries a parent's resident size at fork into the child's
/// peak).
///
/// # Errors
/// File-system errors.
pub fn write_inputs(dir: &Path) -> anyhow::Result<()> {
    let side = 16384;
    write(
        &Raster {
            width: side,
            height: side,
            channels: 1,
            samples: Samples::U8(vec![128; side * side]),
        },
        &dir.join("flat16k.png"),
        &WriteOptions::default(),
    )?;
    let (astro, _) = read(&testdata().join("astronaut.png"), &Limits::default())?;
    write(
        &tracemark_leaks::scale(&astro, 8.0, tracemark_leaks::Filter::Cubic),
        &dir.join("photo4k.png"),
        &WriteOptions::default(),
    )?;
    Ok(())
}

/// Runs the cases and prints a table; fails when the 16384 x 16384 examination is above
/// 1.5 GiB or any peak is above its estimate.
///
/// # Errors
/// Missing binaries, a failed run, a target missed.
pub fn run() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("binary folder")?.to_path_buf();
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("k.key");
    let k = Command::new(bin.join("tracemark-embed"))
        .arg("keygen")
        .arg(&key)
        .output()?;
    if !k.status.success() {
        bail!("{}: run `cargo build --release` first", bin.display());
    }
    let made = Command::new(&exe)
        .args(["memory", "--inputs-only"])
        .arg(dir.path())
        .status()?;
    if !made.success() {
        bail!("could not write the inputs");
    }
    let flat = dir.path().join("flat16k.png");
    let photo = dir.path().join("photo4k.png");
    let rg1 = testdata().join("RG1_UNCR.dcm");
    let cases = [
        ("examine 16384x16384 flat PNG", &flat, Work::Examine),
        ("stamp 16384x16384 flat PNG", &flat, Work::Stamp),
        ("examine 4096x4096 RGB photo", &photo, Work::Examine),
        ("stamp 4096x4096 RGB photo", &photo, Work::Stamp),
        ("examine RG1_UNCR.dcm", &rg1, Work::Examine),
        ("stamp RG1_UNCR.dcm", &rg1, Work::Stamp),
    ];
    // Measured first, before this process reads anything large.
    let mut peaks = Vec::new();
    for (_, input, work) in &cases {
        peaks.push(peak_rss(&bin, &key, input, *work, dir.path())?);
    }
    println!("| case | peak RSS | estimate | within |\n|---|---|---|---|");
    let mut missed = Vec::new();
    for ((name, input, work), peak) in cases.iter().zip(peaks) {
        let bytes = std::fs::read(input)?;
        let estimate = footprint(input, &bytes, &Limits::default(), *work)?;
        let ok = peak <= estimate;
        println!(
            "| {name} | {} | {} | {} |",
            mib(peak),
            mib(estimate),
            if ok { "yes" } else { "NO" }
        );
        if !ok {
            missed.push(format!("{name}: peak above its estimate"));
        }
        if *work == Work::Examine && *input == &flat && peak > 1536 << 20 {
            missed.push(format!("{name}: {} is above 1.5 GiB", mib(peak)));
        }
    }
    if !missed.is_empty() {
        bail!("{}", missed.join("; "));
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / f64::from(1u32 << 20))
}

/// Runs one tool on one input in a child process and returns its peak resident memory.
fn peak_rss(bin: &Path, key: &Path, input: &Path, work: Work, dir: &Path) -> anyhow::Result<u64> {
    let mut cmd = match work {
        Work::Examine => {
            let mut c = Command::new(bin.join("tracemark-detect"));
            c.arg("--key").arg(key).arg(input);
            c
        }
        Work::Stamp => {
            let ext = input.extension().and_then(|e| e.to_str()).unwrap_or("png");
            let out = dir.join(format!("out.{ext}"));
            let mut c = Command::new(bin.join("tracemark-embed"));
            c.arg("--key")
                .arg(key)
                .args(["--payload", "0123456789abcdef", "--force"])
                .arg(input)
                .arg("-o")
                .arg(out);
            c
        }
    };
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // wait4 gives this child's own peak (RUSAGE_CHILDREN would give the largest so far).
    let mut status = 0;
    // SAFETY: the rusage struct is ours to fill; the pid is our unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    if pid < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    if !matches!(code, Some(0 | 1)) {
        bail!("{}: exit status {status:#x}", input.display());
    }
    Ok(usage.ru_maxrss as u64 * 1024)
}

//! Batches: folders for one recipient under one release, the ledger holding exactly the
//! written files, a run killed midway, two processes on one ledger, a read-only ledger.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tracemark::io::Limits;
use tracemark::io::image::{WriteOptions, read, write};
use tracemark::report::{DetectionRecord, SummaryRecord};

use crate::{Env, ledger_cmd, sha256_file, testdata};

/// Ledger rows as exported (`ledger export`), keyed by output path.
pub fn exported(env: &Env, ledger: &Path) -> BTreeMap<String, serde_json::Value> {
    let o = ledger_cmd(env, ledger, &["export"]);
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["output_path"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// The output paths the ledger holds.
pub fn exported_paths(env: &Env, ledger: &Path) -> Vec<String> {
    exported(env, ledger).into_keys().collect()
}

pub fn batch_cmd(env: &Env, ledger: &Path, who: &str, inputs: &[&Path], out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tracemark-embed"));
    c.arg("--key")
        .arg(&env.key)
        .arg("--ledger")
        .arg(ledger)
        .args(["--recipient", who]);
    c.args(inputs).arg("-o").arg(out);
    c
}

/// A study folder of `n` images (copies of the 512-px test photos, under two sub-folders).
pub fn study(env: &Env, name: &str, n: usize) -> PathBuf {
    let root = env.path(name);
    let sources = ["camera.png", "coffee.png", "astronaut.png"];
    for i in 0..n {
        let dir = root.join(format!("series{}", i % 2));
        std::fs::create_dir_all(&dir).unwrap();
        let src = sources[i % sources.len()];
        let ext = Path::new(src).extension().unwrap().to_str().unwrap();
        std::fs::copy(testdata(src), dir.join(format!("img{i:03}.{ext}"))).unwrap();
    }
    root
}

/// The detector binary beside this package's (built by `cargo test --workspace`).
pub fn detect_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_tracemark-embed")).with_file_name("tracemark-detect");
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}

#[test]
fn a_study_folder_becomes_one_release_and_its_leak_names_the_recipient() {
    let env = Env::new();
    let ledger = env.path("releases.db");
    let root = env.path("study");
    std::fs::create_dir_all(root.join("ct/series2")).unwrap();
    std::fs::copy(testdata("camera.png"), root.join("camera.png")).unwrap();
    std::fs::copy(testdata("coffee.png"), root.join("ct/coffee.png")).unwrap();
    std::fs::copy(testdata("retina.jpg"), root.join("ct/series2/retina.jpg")).unwrap();
    std::fs::copy(testdata("CT_small.dcm"), root.join("ct/slice.dcm")).unwrap();
    // DICOM folders often hold files without an extension: recognised by content.
    std::fs::copy(testdata("693_UNCR.dcm"), root.join("ct/series2/IM0001")).unwrap();
    std::fs::write(root.join("ct/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(root.join("ct/readme.txt"), b"not an image").unwrap();
    let out = env.path("release");
    let o = batch_cmd(&env, &ledger, "Dr Who", &[&root], &out)
        .arg("--json")
        .output()
        .unwrap();
    // The broken file fails, the others go on; the exit code says something failed.
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("broken.png"), "{stderr}");
    let stdout = String::from_utf8(o.stdout).unwrap();
    let summary: SummaryRecord = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!((summary.files, summary.failed), (5, 1));
    assert_eq!(summary.recipient.as_deref(), Some("Dr Who"));
    // The layout is kept and nothing else is written.
    let mut written: Vec<String> = Vec::new();
    for e in [
        "camera.png",
        "ct/coffee.png",
        "ct/series2/retina.jpg",
        "ct/slice.dcm",
        "ct/series2/IM0001",
    ] {
        assert!(out.join(e).is_file(), "{e}");
        written.push(out.join(e).display().to_string());
    }
    assert!(!out.join("ct/broken.png").exists() && !out.join("ct/readme.txt").exists());
    // The ledger holds exactly those files, with their hashes, under one release id.
    let rows = exported(&env, &ledger);
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        {
            let mut w = written.clone();
            w.sort();
            w
        },
        "ledger rows"
    );
    for (output, row) in &rows {
        assert_eq!(row["release_id"], summary.release_id.as_str());
        assert_eq!(row["recipient"], "Dr Who");
        assert_eq!(
            row["output_sha256"],
            sha256_file(Path::new(output)).as_str()
        );
        assert_eq!(
            row["input_sha256"],
            sha256_file(Path::new(row["input_path"].as_str().unwrap())).as_str()
        );
        assert_eq!(
            row["bytes"].as_u64().unwrap(),
            std::fs::metadata(output).unwrap().len()
        );
    }
    let im = out.join("ct/series2/IM0001").display().to_string();
    assert_eq!(rows[&im]["format"], "DICOM");
    assert!(
        rows[&im]["params"]["sop_instance_uid"]
            .as_str()
            .unwrap()
            .starts_with("2.25.")
    );
    assert!(ledger_cmd(&env, &ledger, &["verify"]).status.success());
    // A leak: the retina copy cropped to its centre and recompressed at JPEG 70.
    let (stamped, _) = read(&out.join("ct/series2/retina.jpg"), &Limits::default()).unwrap();
    let leak = tracemark_leaks::jpeg(&tracemark_leaks::crop_fraction(&stamped, 0.5, 0.3, 0.4), 70);
    let leak_path = env.path("forum-post.jpg");
    write(&leak, &leak_path, &WriteOptions::default()).unwrap();
    let d = Command::new(detect_bin())
        .arg("--key")
        .arg(&env.key)
        .arg("--ledger")
        .arg(&ledger)
        .arg("--json")
        .arg(&leak_path)
        .output()
        .unwrap();
    assert_eq!(d.status.code(), Some(0), "{d:?}");
    let rec: DetectionRecord =
        serde_json::from_str(String::from_utf8(d.stdout).unwrap().trim()).unwrap();
    assert_eq!(rec.payload.as_deref(), Some(summary.release_id.as_str()));
    let release = rec.release.expect("resolved through the ledger");
    assert_eq!(release.recipient, "Dr Who");
    assert_eq!(release.files.len(), 5);
    assert!(!rec.possible_collusion);
    // Named: the payload, and the content of the released retina copy (content binding).
    assert_eq!(rec.named.len(), 1, "{:?}", rec.content);
    assert_eq!(rec.named[0].recipient, "Dr Who");
    assert!(
        rec.named[0].basis.starts_with("payload + content of")
            && rec.named[0].basis.ends_with("retina.jpg"),
        "{:?}",
        rec.named
    );
    // Plain (non-terminal) progress lines: one per file, numbered.
    let o = batch_cmd(
        &env,
        &ledger,
        "Dr Who",
        &[&root.join("ct/coffee.png")],
        &env.path("again/"),
    )
    .output()
    .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("[1/1] stamped "), "{text}");
    assert!(text.contains("1 file(s) stamped, 0 failed"), "{text}");
}

/// Kills stamping runs with SIGKILL after a varying number of committed rows. Every time, the
/// ledger verifies, every recorded output exists with its recorded hash, and every file under
/// a final name is a complete image.
#[test]
fn a_run_killed_midway_leaves_a_consistent_ledger() {
    let env = Env::new();
    let ledger = env.path("releases.db");
    killed_midway(&env, &ledger);
}

/// The body of [`a_run_killed_midway_leaves_a_consistent_ledger`], for any ledger backend.
pub fn killed_midway(env: &Env, ledger: &Path) {
    let (env, ledger) = (env, ledger.to_path_buf());
    let root = study(env, "study", 48);
    let mut killed_after = Vec::new();
    for (run, stop_at) in [1usize, 5, 11].into_iter().enumerate() {
        let out = env.path(&format!("out{run}"));
        let mut child = batch_cmd(env, &ledger, &format!("Dr {run}"), &[&root], &out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rows = count_rows(&ledger);
            if rows >= stop_at + killed_after.iter().sum::<usize>() {
                break;
            }
            assert!(Instant::now() < deadline, "no progress");
            assert!(
                child.try_wait().unwrap().is_none(),
                "finished before the kill"
            );
            std::thread::sleep(Duration::from_micros(300));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed");
        let before: usize = killed_after.iter().sum();
        killed_after.push(count_rows(&ledger) - before);
        assert!(killed_after[run] < 48, "the run was cut short");
        let v = ledger_cmd(env, &ledger, &["verify"]);
        assert_eq!(v.status.code(), Some(0), "{v:?}");
        let rows = exported(env, &ledger);
        for (output, row) in &rows {
            assert_eq!(
                row["output_sha256"],
                sha256_file(Path::new(output)).as_str(),
                "{output}"
            );
        }
        // Every final name holds a whole image; at most the one file renamed while its row
        // was being committed is not in the ledger.
        let mut unrecorded = 0;
        for f in files_under(&out) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(".tracemark-") {
                continue; // a temporary file, never under a final name
            }
            read(&f, &Limits::default())
                .unwrap_or_else(|e| panic!("{} is not a whole image: {e}", f.display()));
            if !rows.contains_key(&f.display().to_string()) {
                unrecorded += 1;
            }
        }
        assert!(unrecorded <= 1, "{unrecorded} outputs without a row");
    }
    eprintln!("rows committed before each kill: {killed_after:?}");
}

/// Runs `cmd` (a batch into `ledger`), sends it SIGINT once two rows are committed, and
/// returns its output.
fn interrupt_after_two_rows(mut cmd: Command, ledger: &Path) -> Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_rows(ledger) < 2 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_micros(300));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    child.wait_with_output().unwrap()
}

/// Ctrl-C (SIGINT) stops a batch between files: exit 130, the files in progress finish
/// (written and recorded), the rest are not started, the summary is printed, and every output
/// under a final name has its ledger row.
#[test]
fn ctrl_c_stops_a_batch_between_files_with_exit_130() {
    let env = Env::new();
    let ledger = env.path("releases.db");
    let root = study(&env, "study", 48);
    let out = env.path("out");
    let o = interrupt_after_two_rows(batch_cmd(&env, &ledger, "Dr Int", &[&root], &out), &ledger);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("file(s) stamped"),
        "summary printed: {stdout}"
    );
    let v = ledger_cmd(&env, &ledger, &["verify"]);
    assert_eq!(v.status.code(), Some(0), "{v:?}");
    let rows = exported(&env, &ledger);
    let written: Vec<PathBuf> = files_under(&out)
        .into_iter()
        .filter(|f| !f.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        written.len() < 48,
        "the run stopped early: {}",
        written.len()
    );
    assert_eq!(written.len(), rows.len());
    for f in &written {
        assert!(
            rows.contains_key(&f.display().to_string()),
            "{}",
            f.display()
        );
    }
}

/// Finding 9: the same command run again after an interrupted batch continues its release:
/// same id, the files already written and recorded are verified and skipped, the rest are
/// stamped (it drew a second id for the rest and counted the finished files as failed). An
/// output changed since it was recorded is refused, not replaced.
#[test]
fn the_same_command_resumes_an_interrupted_release() {
    let env = Env::new();
    let ledger = env.path("releases.db");
    let root = study(&env, "study", 48);
    let out = env.path("out");
    let cmd = || {
        let mut c = batch_cmd(&env, &ledger, "Dr Res", &[&root], &out);
        c.arg("--json");
        c
    };
    let o = interrupt_after_two_rows(cmd(), &ledger);
    assert_eq!(o.status.code(), Some(130), "{o:?}");
    let first = exported(&env, &ledger);
    assert!((2..48).contains(&first.len()), "{}", first.len());
    let summary = |o: &Output| -> SummaryRecord {
        let line = String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap()
            .to_string();
        serde_json::from_str(&line).unwrap()
    };
    let o = cmd().output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let s = summary(&o);
    assert_eq!(
        (s.resumed, s.files, s.failed),
        (first.len(), 48 - first.len(), 0)
    );
    let rows = exported(&env, &ledger);
    assert_eq!(rows.len(), 48);
    let ids: std::collections::BTreeSet<&str> = rows
        .values()
        .map(|r| r["release_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(ids.first().unwrap(), &s.release_id.as_str());
    // The files of the first run were not rewritten.
    for (output, row) in &first {
        assert_eq!(
            row["output_sha256"],
            sha256_file(Path::new(output)).as_str()
        );
    }
    // Everything is done: a third run stamps nothing and succeeds.
    let o = cmd().output().unwrap();
    let s = summary(&o);
    assert_eq!((o.status.code(), s.resumed, s.files), (Some(0), 48, 0));
    // An output edited after release is refused by name, and not replaced.
    let victim = first.keys().next().unwrap().clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes.push(0);
    std::fs::write(&victim, &bytes).unwrap();
    let o = cmd().output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&victim) && stderr.contains("changed since"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), bytes);
    assert_eq!(count_rows(&ledger), 48);
    let v = ledger_cmd(&env, &ledger, &["verify"]);
    assert_eq!(v.status.code(), Some(0), "{v:?}");
}

/// Release rows in the ledger (its audit rows left out).
fn count_rows(ledger: &Path) -> usize {
    if tracemark::ledger::is_server_url(ledger) {
        return crate::postgres::count_rows(ledger);
    }
    if !ledger.exists() {
        return 0;
    }
    let Ok(c) =
        rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    // Release rows: `ledger export` adds an audit row (issue 13).
    c.query_row(
        "SELECT count(*) FROM entries WHERE format != 'audit'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map_or(0, |n| n as usize)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                v.extend(files_under(&p));
            } else {
                v.push(p);
            }
        }
    }
    v
}

#[test]
fn two_processes_stamp_into_one_ledger_at_once() {
    let env = Env::new();
    two_processes_stamp(&env, &env.path("releases.db"), 16);
}

/// Two batches of `n` files each, for two recipients, into `ledger` at once: `2 n` rows, the
/// chain verifies, every output's hash is its row's.
pub fn two_processes_stamp(env: &Env, ledger: &Path, n: usize) {
    let root = study(env, "study", n);
    let children: Vec<_> = ["Dr A", "Dr B"]
        .iter()
        .enumerate()
        .map(|(i, who)| {
            batch_cmd(env, ledger, who, &[&root], &env.path(&format!("out{i}")))
                .arg("--json")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut ids = Vec::new();
    for o in &outputs {
        assert!(o.status.success(), "{o:?}");
        let text = String::from_utf8(o.stdout.clone()).unwrap();
        let s: SummaryRecord = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!((s.files, s.failed), (n, 0));
        ids.push(s.release_id);
    }
    assert_ne!(ids[0], ids[1]);
    let v = ledger_cmd(env, ledger, &["verify"]);
    assert!(
        String::from_utf8_lossy(&v.stdout).contains(&format!("{} rows verified", 2 * n)),
        "{v:?}"
    );
    let rows = exported(env, ledger);
    assert_eq!(rows.len(), 2 * n);
    for (i, id) in ids.iter().enumerate() {
        let mine: Vec<_> = rows
            .values()
            .filter(|r| r["release_id"] == id.as_str())
            .collect();
        assert_eq!(mine.len(), n);
        for r in mine {
            let out = r["output_path"].as_str().unwrap();
            assert!(out.contains(&format!("out{i}")));
            assert_eq!(r["output_sha256"], sha256_file(Path::new(out)).as_str());
        }
    }
}

/// Our effective user id: the owner of a file we just created.
pub fn euid(env: &Env) -> u32 {
    let probe = env.path("uid-probe");
    std::fs::write(&probe, b"").unwrap();
    let uid = std::fs::metadata(&probe).unwrap().uid();
    std::fs::remove_file(probe).unwrap();
    uid
}

/// A ledger the user may not write. Root ignores file modes, so as root the stamping runs as
/// `nobody` (uid 65534) on files that user owns, with its own copy of the binary.
#[test]
fn a_read_only_ledger_is_refused_before_any_work() {
    let env = Env::new();
    let ledger = env.path("releases.db");
    let first = env.path("first.png");
    assert!(
        crate::stamp_for(&env, &ledger, "Dr A", &testdata("camera.png"), &first)
            .status
            .success()
    );
    let as_root = euid(&env) == 0;
    const NOBODY: u32 = 65534;
    let bin = env.path("tracemark-embed");
    std::fs::copy(env!("CARGO_BIN_EXE_tracemark-embed"), &bin).unwrap();
    let outdir = env.path("out");
    std::fs::create_dir(&outdir).unwrap();
    let input = env.path("in.png");
    std::fs::copy(testdata("coffee.png"), &input).unwrap();
    if as_root {
        for p in [env.dir.path(), &env.key, &ledger, &bin, &outdir, &input] {
            std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
    std::fs::set_permissions(&ledger, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = exported(&env, &ledger);
    let mut c = Command::new(&bin);
    c.arg("--key")
        .arg(&env.key)
        .arg("--ledger")
        .arg(&ledger)
        .args(["--recipient", "Dr B"])
        .arg(&input)
        .arg("-o")
        .arg(outdir.join("b.png"));
    if as_root {
        use std::os::unix::process::CommandExt;
        c.uid(NOBODY).gid(NOBODY);
    }
    let o = c.output().unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("read-only") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&outdir).unwrap().count(),
        0,
        "nothing written"
    );
    std::fs::set_permissions(&ledger, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(exported(&env, &ledger), before);
}

//! Integration tests of tracemark-embed: the real binary on testdata images; detection of
//! its outputs goes through the library (the detect binary has its own tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tracemark::SecretKey;
use tracemark::io::Limits;
use tracemark::io::image::{WriteOptions, read, write};
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::raster::{Raster, Samples};
use tracemark::report::EmbeddingRecord;

mod batch;
mod dicom;
mod forgery;
mod hostile;
mod metadata;
mod postgres;
mod report;
mod restore;
mod tamper;
mod trust;

const PAYLOAD: &str = "a1b2c3d4e5f60718";

struct Env {
    dir: tempfile::TempDir,
    key: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("org.key");
        let out = embed(&["keygen".as_ref(), key.as_os_str()]);
        assert!(out.status.success(), "{out:?}");
        Env { dir, key }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn stamp(&self, input: &Path, output: &Path, extra: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tracemark-embed"));
        c.arg("--key").arg(&self.key).args(["--payload", PAYLOAD]);
        c.args(extra).arg(input).arg("-o").arg(output);
        c.output().unwrap()
    }
    fn detector(&self) -> Detector {
        Detector::new(&SecretKey::load_file(&self.key).unwrap())
    }
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn embed(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracemark-embed"))
        .args(args)
        .output()
        .unwrap()
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

fn payload_of(env: &Env, p: &Path) -> Option<u64> {
    let (r, _) = read(p, &Limits::default()).unwrap();
    env.detector()
        .detect(&r.luminance(), &DetectOptions::default())
        .unwrap()
        .payload
}

#[test]
fn keygen_is_owner_only_and_never_overwrites() {
    let env = Env::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&env.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let before = std::fs::read(&env.key).unwrap();
    let again = embed(&["keygen".as_ref(), env.key.as_os_str()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&env.key).unwrap(), before);
    // The key bytes never appear in what the tool prints.
    let hex_key = String::from_utf8(before).unwrap();
    let hex_key = hex_key.split_whitespace().nth(1).unwrap();
    let out = env.stamp(&testdata("camera.png"), &env.path("c.png"), &["--json"]);
    let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
    assert!(!text.contains(hex_key) && !text.contains(&hex_key[..16]));
}

#[test]
fn photos_meet_quality_target_and_carry_the_payload() {
    let env = Env::new();
    for name in ["camera.png", "astronaut.png", "coffee.png", "retina.jpg"] {
        let out_path = env.path(&format!("{name}.png"));
        let out = env.stamp(&testdata(name), &out_path, &["--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rec: EmbeddingRecord = serde_json::from_slice(&out.stdout).unwrap();
        assert!(rec.psnr_db >= 42.0, "{name}: {rec:?}");
        assert!(rec.ssim > 0.95, "{name}: {rec:?}");
        assert_eq!(rec.payload, PAYLOAD);
        // The PSNR printed is the PSNR of the file written.
        let (a, _) = read(&testdata(name), &Limits::default()).unwrap();
        let (b, _) = read(&out_path, &Limits::default()).unwrap();
        assert!((b.psnr_db(&a) - rec.psnr_db).abs() < 0.01);
        assert_eq!(
            payload_of(&env, &out_path),
            Some(u64::from_str_radix(PAYLOAD, 16).unwrap())
        );
    }
}

#[test]
fn every_output_format_round_trips() {
    let env = Env::new();
    let want = Some(u64::from_str_radix(PAYLOAD, 16).unwrap());
    for out in ["a.jpg", "a.tif", "a.webp", "a.png"] {
        let p = env.path(out);
        let o = env.stamp(&testdata("coffee.png"), &p, &[]);
        assert!(
            o.status.success(),
            "{out}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let line = String::from_utf8(o.stdout).unwrap();
        assert!(line.contains("PSNR") && line.contains(PAYLOAD), "{line}");
        assert_eq!(payload_of(&env, &p), want, "{out}");
    }
}

#[test]
fn sixteen_bit_and_alpha_are_kept() {
    let env = Env::new();
    let (src, _) = read(&testdata("coffee.png"), &Limits::default()).unwrap();
    let Samples::U8(v) = &src.samples else {
        panic!()
    };
    // RGBA16 with a varying alpha channel.
    let mut s16 = Vec::new();
    for (i, px) in v.chunks_exact(3).enumerate() {
        s16.extend(px.iter().map(|&c| (u16::from(c) * 257).saturating_sub(3)));
        s16.push((i % 65536) as u16);
    }
    let r = Raster {
        width: src.width,
        height: src.height,
        channels: 4,
        samples: Samples::U16(s16),
    };
    let input = env.path("in16.png");
    write(&r, &input, &WriteOptions::default()).unwrap();
    let output = env.path("out16.png");
    let o = env.stamp(&input, &output, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (m, _) = read(&output, &Limits::default()).unwrap();
    let (Samples::U16(a), Samples::U16(b)) = (&r.samples, &m.samples) else {
        panic!("not 16-bit")
    };
    assert!(
        a.chunks_exact(4)
            .zip(b.chunks_exact(4))
            .all(|(p, q)| p[3] == q[3]),
        "alpha changed"
    );
    assert!(m.psnr_db(&r) >= 42.0);
    assert_eq!(
        payload_of(&env, &output),
        Some(u64::from_str_radix(PAYLOAD, 16).unwrap())
    );
}

/// Bad input: one line on stderr naming the problem, exit 2, no output, input unchanged.
fn refused(env: &Env, input: &Path, output: &Path, extra: &[&str], needle: &str) {
    let before_in = std::fs::read(input).ok();
    let before_files = env.files();
    let o = env.stamp(input, output, extra);
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(2), "{input:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tracemark-embed: error: ") && err.contains(needle),
        "{err} lacks {needle}"
    );
    assert_eq!(std::fs::read(input).ok(), before_in, "input modified");
    assert_eq!(env.files(), before_files, "files appeared or vanished");
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn bad_inputs_are_refused_cleanly() {
    let env = Env::new();
    let out = env.path("out.png");
    let empty = env.path("empty.png");
    std::fs::write(&empty, b"").unwrap();
    refused(&env, &empty, &out, &[], "empty");
    let junk = env.path("junk.tif");
    std::fs::write(&junk, [0u8, 1, 2, 3, 4, 5, 6, 7].repeat(50)).unwrap();
    refused(
        &env,
        &junk,
        &out,
        &[],
        "unknown or unsupported image format",
    );
    let bytes = std::fs::read(testdata("camera.png")).unwrap();
    let trunc = env.path("trunc.png");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    refused(&env, &trunc, &out, &[], "cannot decode PNG");
    let mut corrupt = bytes.clone();
    for b in &mut corrupt[200..400] {
        *b ^= 0x5a;
    }
    let corrupt_p = env.path("corrupt.png");
    std::fs::write(&corrupt_p, &corrupt).unwrap();
    refused(&env, &corrupt_p, &out, &[], "cannot decode PNG");
    let jpeg = std::fs::read(testdata("retina.jpg")).unwrap();
    let tj = env.path("trunc.jpg");
    std::fs::write(&tj, &jpeg[..jpeg.len() / 4]).unwrap();
    refused(&env, &tj, &out, &[], "cannot decode JPEG");
    // A well-formed PNG header declaring 100000 x 100000 px (decompression bomb).
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    bomb.extend_from_slice(&13u32.to_be_bytes());
    bomb.extend_from_slice(&ihdr);
    bomb.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // A small zlib stream of zeros stands for the highly compressible pixel data.
    let mut idat = b"IDAT".to_vec();
    idat.extend_from_slice(&[
        0x78, 0x9c, 0x63, 0x60, 0x18, 0x05, 0x00, 0x00, 0x01, 0x00, 0x01,
    ]);
    bomb.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    bomb.extend_from_slice(&idat);
    bomb.extend_from_slice(&crc32(&idat).to_be_bytes());
    bomb.extend_from_slice(&0u32.to_be_bytes());
    bomb.extend_from_slice(b"IEND");
    bomb.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    let bomb_p = env.path("bomb.png");
    std::fs::write(&bomb_p, &bomb).unwrap();
    refused(&env, &bomb_p, &out, &[], "too large");
    // Too small to carry a mark.
    let small = tracemark_leaks::crop(
        &read(&testdata("camera.png"), &Limits::default()).unwrap().0,
        0,
        0,
        100,
        300,
    );
    let small_p = env.path("small.png");
    write(&small, &small_p, &WriteOptions::default()).unwrap();
    refused(&env, &small_p, &out, &[], "too small to carry a mark");
    // Output problems, checked before any work.
    refused(
        &env,
        &testdata("camera.png"),
        &env.path("out.bmp"),
        &[],
        "unknown output format",
    );
    refused(&env, &small_p, &small_p, &[], "is the input");
    refused(
        &env,
        &testdata("camera.png"),
        &env.path("nodir/out.png"),
        &[],
        "nodir",
    );
}

#[test]
fn bad_arguments_and_keys_are_refused() {
    let env = Env::new();
    let camera = testdata("camera.png");
    let out = env.path("o.png");
    for bad in ["123", "0123456789abcdeg", "0123456789abcdef0"] {
        let o = Command::new(env!("CARGO_BIN_EXE_tracemark-embed"))
            .arg("--key")
            .arg(&env.key)
            .args(["--payload", bad])
            .arg(&camera)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("16 hex digits"));
    }
    for (body, needle) in [
        ("", "header"),
        ("tracemark-key-v1 abcd", "64 hex"),
        ("secret", "header"),
    ] {
        let k = env.path("bad.key");
        std::fs::write(&k, body).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_tracemark-embed"))
            .arg("--key")
            .arg(&k)
            .args(["--payload", PAYLOAD])
            .arg(&camera)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(err.contains(needle) && err.lines().count() == 1, "{err}");
        assert!(!out.exists());
    }
    let o = Command::new(env!("CARGO_BIN_EXE_tracemark-embed"))
        .arg("--key")
        .arg(env.path("absent.key"))
        .args(["--payload", PAYLOAD])
        .arg(&camera)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.exists());
}

#[test]
fn existing_output_needs_force() {
    let env = Env::new();
    let out = env.path("o.png");
    std::fs::write(&out, b"precious").unwrap();
    refused(&env, &testdata("camera.png"), &out, &[], "already exists");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let o = env.stamp(&testdata("camera.png"), &out, &["--force"]);
    assert!(o.status.success());
    assert_ne!(std::fs::read(&out).unwrap(), b"precious");
}

fn ledger_cmd(env: &Env, ledger: &Path, action: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracemark-embed"))
        .arg("ledger")
        .arg("--key")
        .arg(&env.key)
        .arg("--ledger")
        .arg(ledger)
        .args(action)
        .output()
        .unwrap()
}

fn stamp_for(env: &Env, ledger: &Path, who: &str, input: &Path, output: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracemark-embed"))
        .arg("--key")
        .arg(&env.key)
        .arg("--ledger")
        .arg(ledger)
        .args(["--recipient", who])
        .arg(input)
        .arg("-o")
        .arg(output)
        .output()
        .unwrap()
}

fn sha256_file(p: &Path) -> String {
    tracemark::ledger::sha256_hex(&std::fs::read(p).unwrap())
}

#[test]
fn ledger_records_each_written_release_with_its_hashes() {
    let env = Env::new();
    let ledger = env.path("releases.db");
    let (a, b) = (env.path("a.png"), env.path("b.jpg"));
    assert!(
        stamp_for(&env, &ledger, "Dr A", &testdata("camera.png"), &a)
            .status
            .success()
    );
    assert!(
        stamp_for(&env, &ledger, "Dr B", &testdata("coffee.png"), &b)
            .status
            .success()
    );
    // Refused outputs leave no row: an existing file without --force, an unknown format.
    std::fs::write(env.path("taken.png"), b"x").unwrap();
    assert_eq!(
        stamp_for(
            &env,
            &ledger,
            "Dr C",
            &testdata("camera.png"),
            &env.path("taken.png")
        )
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        stamp_for(
            &env,
            &ledger,
            "Dr C",
            &testdata("camera.png"),
            &env.path("c.bmp")
        )
        .status
        .code(),
        Some(2)
    );
    let export = ledger_cmd(&env, &ledger, &["export"]);
    assert!(export.status.success());
    let rows: Vec<serde_json::Value> = String::from_utf8(export.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for (row, out, input, who) in [
        (&rows[0], &a, "camera.png", "Dr A"),
        (&rows[1], &b, "coffee.png", "Dr B"),
    ] {
        assert_eq!(row["recipient"], who);
        assert_eq!(row["output_sha256"], sha256_file(out));
        assert_eq!(row["input_sha256"], sha256_file(&testdata(input)));
        assert_eq!(row["bytes"], std::fs::metadata(out).unwrap().len());
        // The id recorded is the one the image carries.
        let id = u64::from_str_radix(row["release_id"].as_str().unwrap(), 16).unwrap();
        assert_eq!(payload_of(&env, out), Some(id));
    }
    let verify = ledger_cmd(&env, &ledger, &["verify"]);
    assert_eq!(verify.status.code(), Some(0));
    // The two releases and the audit row of the export above.
    assert!(String::from_utf8_lossy(&verify.stdout).contains("3 rows verified"));
    let list = String::from_utf8(ledger_cmd(&env, &ledger, &["list"]).stdout).unwrap();
    assert_eq!(list.lines().count(), 2);
    assert!(list.contains("Dr A") && list.contains("Dr B"));
    // The key bytes are nowhere in the ledger file.
    let key_hex = std::fs::read_to_string(&env.key).unwrap();
    let key_hex = key_hex.split_whitespace().nth(1).unwrap();
    let key_bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let db = std::fs::read(&ledger).unwrap();
    assert!(!db.windows(32).any(|w| w == key_bytes.as_slice()));
    assert!(!String::from_utf8_lossy(&db).contains(key_hex));
}

#[test]
fn ledger_verify_names_an_edited_row() {
    let env = Env::new();
    let ledger = env.path("releases.db");
    for (i, who) in ["Dr A", "Dr B", "Dr C"].iter().enumerate() {
        let out = env.path(&format!("o{i}.png"));
        assert!(
            stamp_for(&env, &ledger, who, &testdata("camera.png"), &out)
                .status
                .success()
        );
    }
    rusqlite::Connection::open(&ledger)
        .unwrap()
        .execute("UPDATE entries SET recipient = 'Dr Z' WHERE seq = 2", [])
        .unwrap();
    let v = ledger_cmd(&env, &ledger, &["verify"]);
    assert_eq!(v.status.code(), Some(1));
    let text = String::from_utf8(v.stdout).unwrap();
    assert!(text.contains("row 2") && text.contains("edited"), "{text}");
}

#[test]
fn bad_ledgers_are_refused_before_any_work() {
    let env = Env::new();
    let out = env.path("o.png");
    let text = env.path("notes.db");
    std::fs::write(&text, "these are my notes, not a database").unwrap();
    let o = stamp_for(&env, &text, "Dr A", &testdata("camera.png"), &out);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("not a tracemark ledger") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!out.exists());
    // A ledger made with another key.
    let other = Env::new();
    let theirs = env.path("theirs.db");
    assert!(
        stamp_for(
            &other,
            &theirs,
            "Dr B",
            &testdata("camera.png"),
            &env.path("t.png")
        )
        .status
        .success()
    );
    let o = stamp_for(&env, &theirs, "Dr A", &testdata("camera.png"), &out);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("made with key id"));
    assert!(!out.exists());
    let v = ledger_cmd(&other, &theirs, &["verify"]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "the other key's ledger is untouched"
    );
    // Unknown release.
    let s = ledger_cmd(&other, &theirs, &["show", "00000000000000aa"]);
    assert_eq!(s.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&s.stderr).contains("not in"));
}

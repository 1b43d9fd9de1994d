//! Test environment: a temp dir with key files and stamped copies of testdata images.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tracemark::SecretKey;
use tracemark::io::Limits;
use tracemark::io::image::{WriteOptions, read, write};
use tracemark::pipeline::{StampOptions, Stamper};
use tracemark::raster::Raster;
use tracemark::report::DetectionRecord;

pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

/// Three fixed keys and payloads: results are reproducible run to run.
pub const CASES: [([u8; 32], u64); 3] = [
    (spread(0x11), 0x0123_4567_89ab_cdef),
    (spread(0x5a), 0xfedc_ba98_7654_3210),
    (spread(0xc3), 0x9e37_79b9_7f4a_7c15),
];

/// Fixed key bytes with 32 distinct values (key files refuse degenerate keys such as one
/// repeated byte).
pub const fn spread(seed: u8) -> [u8; 32] {
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = seed ^ (i as u8).wrapping_mul(73);
        i += 1;
    }
    k
}

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

pub fn load(name: &str) -> Raster {
    read(&testdata(name), &Limits::default()).unwrap().0
}

impl TestEnv {
    pub fn new() -> Self {
        TestEnv {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a key file for fixed key bytes and returns its path.
    pub fn key_file(&self, bytes: [u8; 32]) -> PathBuf {
        let p = self.path(&format!("key-{:02x}{:02x}", bytes[0], bytes[1]));
        if !p.exists() {
            SecretKey::from_bytes(bytes).create_file(&p).unwrap();
        }
        p
    }

    /// Saves a raster as PNG under `name`.
    pub fn save(&self, r: &Raster, name: &str) -> PathBuf {
        let p = self.path(name);
        write(
            r,
            &p,
            &WriteOptions {
                force: true,
                ..WriteOptions::default()
            },
        )
        .unwrap();
        p
    }

    pub fn detect(&self, args: &[&Path]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tracemark-detect"))
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs detect --json on one file and parses the record.
    pub fn detect_json(&self, key: &Path, input: &Path) -> (i32, DetectionRecord) {
        let out = Command::new(env!("CARGO_BIN_EXE_tracemark-detect"))
            .arg("--key")
            .arg(key)
            .arg("--json")
            .arg(input)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let rec: DetectionRecord = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "bad JSON {text:?}: {e}; stderr {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap(), rec)
    }
}

/// Stamps a raster with the default options.
pub fn stamp(r: &Raster, key: [u8; 32], payload: u64) -> Raster {
    Stamper::new(
        &SecretKey::from_bytes(key),
        payload,
        StampOptions::default(),
    )
    .and_then(|s| s.stamp_raster(r))
    .unwrap()
    .0
}

//! A memory budget for parallel work (issue 11, finding 5): each input's working memory is
//! estimated from its header before it is decoded ([`footprint`]), and an input starts only
//! when its estimate fits in what the inputs already running leave of the budget. An input
//! whose estimate is above the whole budget is refused with a clear error instead of being
//! started.
//!
//! The estimates are per-pixel costs measured on this code (peak resident memory of
//! `tracemark-embed` and `tracemark-detect` on 4096 x 4096 grey, RGB and 16-bit images, and on
//! the DICOM test files), rounded up; `tracemark-bench memory` measures them again.

use std::path::Path;
use std::sync::{Condvar, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::io::dicom::scan;
use crate::io::{Format, Limits};
use crate::pipeline::MAX_EXAMINED_SIDE;

/// What an input is read for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Stamped: every plane at full resolution.
    Stamp,
    /// Examined: decoded, then at most a [`MAX_EXAMINED_SIDE`] window in float.
    Examine,
}

/// Memory the process needs whatever it reads (binary, thread stacks, the key's patterns).
const BASE: u64 = 48 << 20;
/// Bytes per pixel of the examined window during a detection (whitening, lattice search,
/// folds): measured 20.5 (343 MB peak for a 4096 x 4096 window).
const DETECT_PER_PIXEL: u64 = 22;
/// Bytes per pixel of stamping beyond the decoded samples (luminance, mask, delta, checks):
/// measured 10-10.5 with the samples counted three times (decoded, marked, encoded), and
/// 11.6 once freed buffers are kept for reuse ([`reuse_freed_memory`]: 414 MiB for a
/// 4096 x 4096 RGB photo, against 395 MiB before).
const STAMP_PER_PIXEL: u64 = 14;
/// Bytes per stored sample of a DICOM image when stamped (stored values, raw words, the
/// dataset's copy, display planes, deltas): measured 26 for RG1_UNCR.dcm.
const DICOM_STAMP_PER_SAMPLE: u64 = 30;
/// Bytes per stored sample when a DICOM image is decoded for examination (stored values, raw
/// words, the dataset's copy).
const DICOM_DECODE_PER_SAMPLE: u64 = 10;

/// Keeps freed working buffers in the process for the next image instead of handing them
/// back to the kernel (glibc only; elsewhere nothing changes). Every detection and stamp
/// allocates planes of several megabytes; by default glibc serves those with fresh `mmap`
/// pages or trims them off the heap when freed, so each image paid the kernel for zeroed
/// pages again: at 2048 x 2048, marked detection took 75-76 ms instead of 91-93 and
/// unmarked 184-189 instead of 200-208 (`tracemark-bench versus`, two runs each way on one
/// machine). Buffers under
/// 32 MiB come from the heap, and up to 256 MiB of free heap is kept. The cost is resident
/// memory: the peaks `tracemark-bench memory` measures rose by 0.3 to 9 % (stamping a 4096 x
/// 4096 photo: 395 to 414 MiB), and the stamping estimate rose with them. The binaries call
/// it first.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// The working memory an input will need, estimated from its header (`bytes`: the whole
/// file, which counts too). Never allocates anything sized by the header.
///
/// # Errors
/// A DICOM file that fails the structural pre-scan (the error decoding would give). A raster
/// header that cannot be read is left to the decoder (its estimate is the file alone).
pub fn footprint(path: &Path, bytes: &[u8], limits: &Limits, work: Work) -> Result<u64> {
    let file = bytes.len() as u64;
    let window = |w: u64, h: u64| {
        let side = MAX_EXAMINED_SIDE as u64;
        w.min(side) * h.min(side) * DETECT_PER_PIXEL
    };
    // Declared sizes beyond the limits get the decoder's own message, not a memory estimate.
    let check = |w: u64, h: u64| {
        limits
            .check(
                u32::try_from(w).unwrap_or(u32::MAX),
                u32::try_from(h).unwrap_or(u32::MAX),
            )
            .map_err(|(why, limit)| Error::Limits {
                path: path.into(),
                why,
                limit,
            })
    };
    if Format::sniff(bytes) == Some(Format::Dicom) {
        let h = scan::prescan(path, bytes, limits.max_alloc)?;
        if h.rows > 0 && h.cols > 0 {
            check(h.cols, h.rows)?;
        }
        let frame = h.rows * h.cols;
        let samples = frame * h.frames * h.samples_per_pixel;
        return Ok(BASE
            + file
            + match work {
                Work::Stamp => samples * DICOM_STAMP_PER_SAMPLE,
                Work::Examine => samples * DICOM_DECODE_PER_SAMPLE + window(h.cols, h.rows),
            });
    }
    let Some((w, h, bpp)) = raster_header(bytes) else {
        // Not an image header tracemark reads: the decoder refuses it with its own
        // message, having allocated nothing sized by it.
        return Ok(BASE + file);
    };
    check(w, h)?;
    let pixels = w * h;
    Ok(BASE
        + file
        + match work {
            Work::Stamp => pixels * (STAMP_PER_PIXEL + 3 * bpp),
            Work::Examine => pixels * bpp + window(w, h),
        })
}

/// Width, height and decoded bytes per pixel from a raster file's header.
fn raster_header(bytes: &[u8]) -> Option<(u64, u64, u64)> {
    use image::ImageDecoder;
    Format::sniff(bytes)?;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    reader.no_limits();
    let d = reader.into_decoder().ok()?;
    let (w, h) = d.dimensions();
    Some((
        u64::from(w),
        u64::from(h),
        u64::from(d.color_type().bytes_per_pixel()),
    ))
}

/// A budget of bytes shared by the inputs processed at once.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// An input's share of a [`MemoryBudget`], given back when dropped.
#[derive(Debug)]
#[must_use = "the share is given back when this is dropped"]
pub struct Admission<'a> {
    budget: &'a MemoryBudget,
    bytes: u64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            limit,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// The default budget: half of the machine's memory (`MemTotal` in /proc/meminfo), or
    /// 4 GiB where that cannot be read.
    pub fn from_machine() -> Self {
        Self::new(machine_memory().map_or(4 << 30, |m| m / 2))
    }

    /// The budget in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Waits until `need` bytes fit beside the inputs already admitted, and takes them.
    ///
    /// # Errors
    /// [`Error::Limits`] naming `path` when `need` is above the whole budget.
    pub fn admit(&self, path: &Path, need: u64) -> Result<Admission<'_>> {
        if need > self.limit {
            return Err(Error::Limits {
                path: path.into(),
                why: format!("needs about {} of memory", human_bytes(need)),
                limit: format!("memory budget {}", human_bytes(self.limit)),
            });
        }
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used + need > self.limit {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *used += need;
        Ok(Admission {
            budget: self,
            bytes: need,
        })
    }

    /// Bytes currently admitted.
    pub fn in_use(&self) -> u64 {
        *self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let mut used = self
            .budget
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *used -= self.bytes;
        self.budget.freed.notify_all();
    }
}

fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// "1.5 GiB", "300 MiB": bytes in the binary units `--max-memory` takes, for messages.
pub fn human_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.0} MiB", b as f64 / f64::from(1u32 << 20))
    }
}

/// Parses a memory size: a number of bytes with an optional unit K, M, G or T (powers of
/// 1024; "KB", "MiB" and the like are accepted too), e.g. "1500M", "2G", "2.5GiB".
///
/// # Errors
/// [`Error::OutOfRange`] for anything else, or a size below 64 MiB (less than the process
/// itself needs).
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || Error::OutOfRange {
        what: "memory size",
        value: text.chars().take(40).collect(),
        expected: "a size such as 1500M or 2G, at least 64M",
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < (64u64 << 20) as f64 || bytes > 1e18 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn an_input_waits_for_room_and_one_above_the_budget_is_refused() {
        let budget = MemoryBudget::new(100);
        let first = budget.admit(Path::new("a"), 60).unwrap();
        let released = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let second = budget.admit(Path::new("b"), 60).unwrap();
                // Admitted only after the first share was given back.
                assert!(released.load(Ordering::SeqCst));
                drop(second);
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert_eq!(budget.in_use(), 60, "the second input is still waiting");
            released.store(true, Ordering::SeqCst);
            drop(first);
            waiter.join().unwrap();
        });
        assert_eq!(budget.in_use(), 0);
        // Two small ones fit side by side.
        let (a, b) = (
            budget.admit(Path::new("a"), 50).unwrap(),
            budget.admit(Path::new("b"), 50).unwrap(),
        );
        drop((a, b));
        let Err(err) = budget.admit(Path::new("huge.png"), 101) else {
            panic!("above the budget")
        };
        assert!(
            err.to_string().starts_with("huge.png: needs about"),
            "{err}"
        );
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1500M").unwrap(), 1500 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("2.5GiB").unwrap(), 5 << 29);
        assert_eq!(parse_size("1073741824").unwrap(), 1 << 30);
        for bad in ["", "G", "12X", "-1G", "1M", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn footprints_grow_with_the_pixels_and_stop_at_the_window_when_examined() {
        let dir = tempfile::tempdir().unwrap();
        let l = Limits::default();
        let mut sizes = Vec::new();
        for side in [512usize, 8192] {
            let r = crate::raster::Raster {
                width: side,
                height: 64,
                channels: 1,
                samples: crate::raster::Samples::U8(vec![0; side * 64]),
            };
            let p = dir.path().join(format!("{side}.png"));
            crate::io::image::write(&r, &p, &Default::default()).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            sizes.push((
                footprint(&p, &bytes, &l, Work::Stamp).unwrap(),
                footprint(&p, &bytes, &l, Work::Examine).unwrap(),
            ));
        }
        // Stamping is proportional to the pixels; examining 8192 px wide is bounded by the
        // 4096-px window (plus the decoded samples).
        assert!(sizes[1].0 - BASE > 15 * (sizes[0].0 - BASE));
        let window = (MAX_EXAMINED_SIDE * 64) as u64 * DETECT_PER_PIXEL;
        assert!(sizes[1].1 <= BASE + window + 8192 * 64 + 4096);
        let ct = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/RG1_UNCR.dcm"
        ))
        .unwrap();
        let rg1 = footprint(Path::new("RG1_UNCR.dcm"), &ct, &l, Work::Stamp).unwrap();
        // 1841 x 1955 samples at 30 bytes, the file and the base.
        assert_eq!(rg1, BASE + ct.len() as u64 + 1841 * 1955 * 30);
    }
}

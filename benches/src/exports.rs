//! DICOM leaks through viewer exports: each DICOM test file stamped with several keys,
//! exported to 8 bits as viewers do, then saved as PNG, JPEG 90/75/50, or halved and
//! saved as JPEG 75.

use std::time::Instant;

use tracemark::SecretKey;
use tracemark::io::Limits;
use tracemark::mark::content;
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::mark::pattern::KeyPatterns;
use tracemark::pipeline::{StampOptions, Stamper};
use tracemark::raster::Raster;

use crate::*;

/// Blind recovery from viewers' 8-bit exports of stamped DICOM files: the markdown table.
///
/// # Errors
/// Unreadable test files.
pub fn table(keys: u8) -> anyhow::Result<String> {
    use rayon::prelude::*;
    use std::fmt::Write;
    use tracemark::io::dicom::DicomImage;
    let files = [
        "RG1_UNCR.dcm",
        "MR2_UNCR.dcm",
        "693_UNCR.dcm",
        "US1_UNCR.dcm",
        "CT_small.dcm",
        "MR2_3frames.dcm",
    ];
    type Leak = (&'static str, fn(&Raster) -> Raster);
    let leaks: [Leak; 5] = [
        ("PNG", |r| r.clone()),
        ("JPEG 90", |r| jpeg(r, 90)),
        ("JPEG 75", |r| jpeg(r, 75)),
        ("JPEG 50", |r| jpeg(r, 50)),
        ("0.5x + JPEG 75", |r| jpeg(&scale(r, 0.5, Filter::Box), 75)),
    ];
    let start = Instant::now();
    let mut md = format!(
        "## DICOM: 8-bit exports of stamped files ({keys} keys per file, blind exact 64-bit recovery; in brackets: also named, the content matching the released file)\n\n| file | export window | {} |\n|---|---|{}\n",
        leaks.iter().map(|l| l.0).collect::<Vec<_>>().join(" | "),
        "---|".repeat(leaks.len())
    );
    for name in files {
        let path = testdata().join(name);
        let bytes = std::fs::read(&path)?;
        // (recovered, named)[window][leak]
        let per_key: Vec<Vec<Vec<(bool, bool)>>> = (0..keys)
            .into_par_iter()
            .map(|k| {
                let key = SecretKey::from_bytes([0xA0 ^ k; 32]);
                let patterns = KeyPatterns::new(&key);
                let det = Detector::from_patterns(patterns.clone());
                let payload = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(k) + 3);
                let stamper = Stamper::from_patterns(patterns, payload, StampOptions::default())
                    .expect("default options");
                let mut img =
                    DicomImage::decode(&path, &bytes, &Limits::default()).expect("test file");
                let marked = stamper.stamp_dicom_image(&mut img).expect("large enough");
                let descriptors = marked.descriptors();
                let descriptors: Vec<&content::Descriptor> = descriptors.iter().collect();
                viewer_exports(img.window)
                    .iter()
                    .map(|&(_, win, honour)| {
                        let export = img.export_8bit(0, Some(win), honour);
                        leaks
                            .iter()
                            .map(|(_, leak)| {
                                let copy = leak(&export).luminance();
                                let Ok(d) = det.detect(&copy, &DetectOptions::default()) else {
                                    return (false, false);
                                };
                                let recovered = d.payload == Some(payload);
                                let content =
                                    content::best_match(&copy, &d.registration, &descriptors);
                                let matched = content
                                    .is_some_and(|(_, m)| m.matches(1e-6, descriptors.len()));
                                (recovered, recovered && matched)
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let img = DicomImage::decode(&path, &bytes, &Limits::default())?;
        let windows = viewer_exports(img.window);
        for (wi, (wname, _, _)) in windows.iter().enumerate() {
            let grey = img.photometric != tracemark::io::dicom::Photometric::Rgb;
            if !grey && wi > 0 {
                continue; // RGB has no window
            }
            let mut row = format!(
                "| {name} ({}x{}, {} frame(s)) | {} |",
                img.cols,
                img.rows,
                img.frames,
                if grey { wname } else { "as is (RGB)" }
            );
            for li in 0..leaks.len() {
                let hits = per_key.iter().filter(|k| k[wi][li].0).count();
                let named = per_key.iter().filter(|k| k[wi][li].1).count();
                write!(row, " {hits}/{keys} ({named}) |")?;
            }
            writeln!(md, "{row}")?;
        }
    }
    writeln!(
        md,
        "\nFrame 1 of each file exported. {:.0} s on {} threads.",
        start.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    )?;
    Ok(md)
}

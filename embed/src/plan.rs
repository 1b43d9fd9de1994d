//! Which files to stamp and where each output goes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// One input and its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The image to stamp.
    pub input: PathBuf,
    /// Where the stamped copy goes.
    pub output: PathBuf,
}

/// The work of one run.
#[derive(Debug)]
pub struct Plan {
    /// Files to stamp, in a stable order (inputs as given, folders walked in name order).
    pub jobs: Vec<Job>,
    /// Whether this is a batch into an output folder (several inputs, or a folder), as
    /// opposed to one file written to a named output file.
    pub batch: bool,
    /// Symbolic links met inside walked folders: not followed, reported (issue 11,
    /// finding 8).
    pub skipped_links: Vec<PathBuf>,
}

/// Plans a run. One input file with an output file name (one with an extension, not an
/// existing folder, not ending in '/') is a single stamp. Anything else is a batch: `output`
/// is a folder (created if needed); a folder input is walked recursively and its relative
/// layout kept under `output`; a file input goes to `output/<file name>`. Hidden entries
/// (names starting with '.') and files that are neither named as an image nor DICOM by
/// content (when they have no extension) are not stamped.
///
/// Symbolic links: a path named on the command line is followed (file or folder); inside a
/// walked folder no symbolic link is followed, to a file or to a folder, so nothing outside
/// the input tree is stamped unless named (a link to `../secret/x.png` would be). Such links
/// are listed in [`Plan::skipped_links`].
///
/// # Errors
/// No input, an input that does not exist, an output folder that is a file, two inputs
/// that would land on one output, or a batch with nothing to stamp.
pub fn plan(inputs: &[PathBuf], output: &Path) -> anyhow::Result<Plan> {
    if inputs.is_empty() {
        bail!("missing INPUT: give image files or folders");
    }
    let names_folder = output.is_dir()
        || output
            .as_os_str()
            .to_string_lossy()
            .ends_with(std::path::MAIN_SEPARATOR)
        || output.extension().is_none();
    let single = inputs.len() == 1 && !inputs[0].is_dir() && !names_folder;
    if single {
        return Ok(Plan {
            jobs: vec![Job {
                input: inputs[0].clone(),
                output: output.into(),
            }],
            batch: false,
            skipped_links: Vec::new(),
        });
    }
    if output.exists() && !output.is_dir() {
        bail!(
            "{} is a file: with several inputs or a folder, -o names the output folder",
            output.display()
        );
    }
    let out_canon = output.canonicalize().ok();
    let mut jobs = Vec::new();
    let mut skipped_links = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input)
            .with_context(|| format!("{}: cannot read", input.display()))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            tracemark::io::walk::images(
                input,
                out_canon.as_deref(),
                &mut files,
                &mut skipped_links,
            )?;
            for f in files {
                let rel = f.strip_prefix(input).expect("walked under the input");
                jobs.push(Job {
                    output: output.join(rel),
                    input: f,
                });
            }
        } else {
            let name = input
                .file_name()
                .with_context(|| format!("{}: not a file name", input.display()))?;
            jobs.push(Job {
                input: input.clone(),
                output: output.join(name),
            });
        }
    }
    if jobs.is_empty() {
        bail!(
            "no images to stamp in {} (looked for .png, .jpg, .jpeg, .tif, .tiff, .webp, .dcm and DICOM files without extension)",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut seen: HashMap<&Path, &Path> = HashMap::new();
    for job in &jobs {
        if let Some(other) = seen.insert(&job.output, &job.input) {
            bail!(
                "{} and {} would both be written to {}; stamp them in separate runs",
                other.display(),
                job.input.display(),
                job.output.display()
            );
        }
    }
    Ok(Plan {
        jobs,
        batch: true,
        skipped_links,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_keep_their_layout_and_single_files_stay_single() {
        let dir = tempfile::tempdir().unwrap();
        let study = dir.path().join("study");
        std::fs::create_dir_all(study.join("series1/sub")).unwrap();
        for f in [
            "a.png",
            "series1/b.jpg",
            "series1/sub/c.tif",
            "notes.txt",
            ".hidden.png",
        ] {
            std::fs::write(study.join(f), b"x").unwrap();
        }
        let out = dir.path().join("out");
        let p = plan(std::slice::from_ref(&study), &out).unwrap();
        assert!(p.batch);
        let rel: Vec<_> = p
            .jobs
            .iter()
            .map(|j| j.output.strip_prefix(&out).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            rel,
            [
                PathBuf::from("a.png"),
                PathBuf::from("series1/b.jpg"),
                PathBuf::from("series1/sub/c.tif")
            ]
        );
        let single = plan(&[study.join("a.png")], &dir.path().join("x.png")).unwrap();
        assert!(!single.batch);
        // Two files of the same name from different folders collide in a flat output.
        let twice = plan(
            &[study.join("a.png"), study.join("a.png")],
            &dir.path().join("o"),
        );
        assert!(twice.unwrap_err().to_string().contains("both"));
        // The output folder inside the input folder is not walked.
        std::fs::create_dir_all(study.join("out2")).unwrap();
        std::fs::write(study.join("out2/old.png"), b"x").unwrap();
        let p = plan(std::slice::from_ref(&study), &study.join("out2")).unwrap();
        assert_eq!(p.jobs.len(), 3);
        assert!(plan(&[dir.path().join("none")], &out).is_err());
    }

    #[test]
    fn links_inside_a_folder_are_not_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let (study, secret) = (dir.path().join("study"), dir.path().join("secret"));
        std::fs::create_dir_all(study.join("series")).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(study.join("series/a.png"), b"x").unwrap();
        std::fs::write(secret.join("private.png"), b"x").unwrap();
        symlink(secret.join("private.png"), study.join("leak.png")).unwrap();
        symlink(&secret, study.join("secret-dir")).unwrap();
        symlink(study.join("series/a.png"), study.join("inside.png")).unwrap();
        let p = plan(std::slice::from_ref(&study), &dir.path().join("out")).unwrap();
        let inputs: Vec<_> = p.jobs.iter().map(|j| j.input.clone()).collect();
        assert_eq!(inputs, [study.join("series/a.png")]);
        assert_eq!(
            p.skipped_links,
            [
                study.join("inside.png"),
                study.join("leak.png"),
                study.join("secret-dir")
            ]
        );
        // Named on the command line, a link is followed.
        let named = plan(&[study.join("leak.png")], &dir.path().join("o")).unwrap();
        assert_eq!(named.jobs.len(), 1);
    }
}

//! Command line of tracemark-detect.

use std::path::PathBuf;

use clap::Parser;

/// Find a tracemark watermark in leaked copies, blindly, and say how sure that is.
///
/// Exit codes: 0 = a mark was found in every input; 1 = at least one input had no mark at
/// the required confidence; 2 = error (an input could not be examined).
#[derive(Debug, Parser)]
#[command(name = "tracemark-detect", version)]
pub struct Cli {
    /// Secret key file.
    #[arg(long, value_name = "KEYFILE")]
    pub key: PathBuf,
    /// Print one JSON object per input per line (schema: README, shared::report).
    #[arg(long)]
    pub json: bool,
    /// Release ledger: resolve a confirmed payload to its recipient, and when the payload
    /// does not decode (or is not an issued id) score every release's fingerprint.
    #[arg(long, env = "TRACEMARK_LEDGER", value_name = "PATH")]
    pub ledger: Option<PathBuf>,
    /// Who examines (recorded with each examination in the ledger's audit trail, and in
    /// the report).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// Write an evidence report into this folder: index.html (one self-contained page,
    /// strongest evidence first) and report.json.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Largest false-alarm probability at which a mark is claimed.
    #[arg(long, default_value_t = 1e-6, value_name = "P")]
    pub max_p: f64,
    /// Also search each input as a photo of a screen taken at an angle (a keystone: the far
    /// edge shorter by 1-9 % at each end), when the blind search reads no payload. Up to 37
    /// times slower on such inputs, and the p-value counts every search, so a mark needs a
    /// stronger statistic to be claimed.
    #[arg(long)]
    pub keystones: bool,
    /// The released image as you keep it (the original before stamping): examine each
    /// input against it too. The copy is registered in it by its content, the original
    /// taken out, and the mark looked for in what is left, which reads fine textures and
    /// small images downscaled, blurred or recompressed that the blind search cannot. With
    /// --ledger, what it finds names a release under the same content check. Repeat it, or
    /// name a folder (walked recursively), when the copy may show any of several: the one
    /// its content matches best is used (each frame of a multi-frame DICOM counts as one).
    #[arg(long, value_name = "FILE|DIR")]
    pub original: Vec<PathBuf>,
    /// Memory the inputs examined at once may take together (e.g. 1500M, 4G); an input
    /// starts when its estimated working memory fits. Default: half the machine's memory.
    #[arg(long, value_name = "SIZE", value_parser = tracemark::pipeline::budget::parse_size)]
    pub max_memory: Option<u64>,
    /// Images to examine (PNG, JPEG, TIFF, WebP, DICOM), or folders: walked recursively
    /// (hidden entries skipped, symbolic links inside them not followed).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}

//! Command line of tracemark-embed.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Stamp images with an invisible, per-recipient forensic watermark.
///
/// Exit codes: 0 = every output written (`ledger verify`: the chain holds); 1 = `ledger verify`
/// found a broken chain; 2 = error (nothing written for a failed input, no ledger row for
/// it; the other files of a batch go on).
#[derive(Debug, Parser)]
#[command(
    name = "tracemark-embed",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Key management.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// What to stamp.
    #[command(flatten)]
    pub embed: EmbedArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new 32-byte secret key file (mode 0600); never overwrites.
    Keygen {
        /// Where to write the key.
        keyfile: PathBuf,
    },
    /// Read and check the release ledger (options before or after the action).
    Ledger(LedgerArgs),
    /// Rebuild the originals of unmodified stamped copies from the ledger: byte-identical
    /// files for uncompressed DICOM, PNG and TIFF inputs, pixel-identical for compressed
    /// DICOM and other inputs; JPEG outputs cannot be restored.
    Restore(RestoreArgs),
}

/// `tracemark-embed restore --key K --ledger L STAMPED... -o OUT`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Secret key file (the key that stamped the copies).
    #[arg(long, value_name = "KEYFILE")]
    pub key: PathBuf,
    /// The ledger the copies were released under.
    #[arg(long, env = "TRACEMARK_LEDGER", value_name = "PATH")]
    pub ledger: PathBuf,
    /// Output file for one copy, or an existing folder (each restored original is named as
    /// its stamped copy).
    #[arg(short, long, value_name = "OUTPUT")]
    pub output: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    /// One JSON object per copy instead of the human line.
    #[arg(long)]
    pub json: bool,
    /// Who restores (recorded in the ledger's audit trail).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// Stamped copies, exactly as released.
    #[arg(value_name = "STAMPED", required = true)]
    pub inputs: Vec<PathBuf>,
}

/// `tracemark-embed ledger [--key K --ledger L] ACTION [--key K --ledger L]`.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// Secret key file (the ledger is authenticated with a key derived from it).
    #[arg(long, global = true, value_name = "KEYFILE")]
    pub key: Option<PathBuf>,
    /// The ledger: an SQLite file, or a PostgreSQL URL (`postgresql://user@host/db`).
    #[arg(long, global = true, env = "TRACEMARK_LEDGER", value_name = "PATH")]
    pub ledger: Option<PathBuf>,
    /// Who reads it (recorded with `show` and `export` in the ledger's audit trail).
    #[arg(long, global = true, value_name = "NAME")]
    pub operator: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: LedgerAction,
}

/// Ledger actions.
#[derive(Debug, Subcommand)]
pub enum LedgerAction {
    /// One line per release: id, recipient, time, files.
    List,
    /// Every file of one release.
    Show {
        /// Release id (16 hex digits).
        id: String,
    },
    /// Every release row as JSON Lines.
    Export {
        /// Every row, audit rows too, with its sealed content and chain fields (hash, MAC):
        /// the input of `ledger import` into another ledger (SQLite file or PostgreSQL).
        #[arg(long)]
        chain: bool,
    },
    /// Append the rows of `export --chain` to this ledger (empty, or holding the start of
    /// them): every row's hash and MAC are checked under the key before anything is written,
    /// and the copy's chain is the original's, hash for hash.
    Import {
        /// The exported rows (JSON Lines; `-` reads standard input).
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
    },
    /// Check the whole chain: exit 0 when it holds, 1 naming the first bad row.
    Verify {
        /// A head line printed earlier (by `head` or a release summary): the ledger must
        /// still extend it (catches a rollback, truncation or substitution).
        #[arg(long, value_name = "LINE")]
        anchor: Option<String>,
    },
    /// Print the authenticated head (rows, last hash, time, MAC) as one line to keep
    /// outside the ledger, for `verify --anchor`.
    Head,
    /// The audit trail: one line per examination, restore, show or export recorded.
    Audit,
}

/// Stamping options.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Secret key file (from `tracemark-embed keygen`).
    #[arg(long, value_name = "KEYFILE")]
    pub key: Option<PathBuf>,
    /// The 64-bit payload (release id) as exactly 16 hex digits. With --ledger it may be
    /// left out: a random release id is drawn.
    #[arg(long, value_name = "HEX")]
    pub payload: Option<String>,
    /// Record the release in this ledger: an SQLite file, or a PostgreSQL URL
    /// (`postgresql://user@host/db`) that several stations share; created if absent. The
    /// row is committed only if the output file was written.
    #[arg(long, env = "TRACEMARK_LEDGER", value_name = "PATH")]
    pub ledger: Option<PathBuf>,
    /// Who receives this copy (required with --ledger).
    #[arg(long, value_name = "NAME")]
    pub recipient: Option<String>,
    /// Why it is released (stored in the ledger).
    #[arg(long, value_name = "TEXT")]
    pub purpose: Option<String>,
    /// Who released it (stored in the ledger).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// Output file (its extension picks the format: .png, .jpg, .tif, .webp; DICOM inputs
    /// are written as DICOM, .dcm), or the output folder of a batch (each file keeps its
    /// own format).
    #[arg(short, long, value_name = "OUTPUT")]
    pub output: Option<PathBuf>,
    /// Target PSNR of the luminance in dB: 42 is robust, 45 is harder to see.
    #[arg(long, default_value_t = 42.0, value_name = "DB")]
    pub psnr: f64,
    /// Perceptual mask exponent: 0 = flat (most robust), 0.7 = hides best in texture.
    #[arg(long, default_value_t = tracemark::mark::embed::DEFAULT_MASK_GAMMA, value_name = "GAMMA")]
    pub mask_gamma: f32,
    /// JPEG quality for .jpg outputs (1-100).
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,
    /// Memory the files stamped at once may take together (e.g. 1500M, 4G); a file starts
    /// when its estimated working memory fits. Default: half the machine's memory.
    #[arg(long, value_name = "SIZE", value_parser = tracemark::pipeline::budget::parse_size)]
    pub max_memory: Option<u64>,
    /// DICOM: keep the SOP Instance UID (by default a stamped file is a new instance with a
    /// new UID, and the source is referenced in its Source Image Sequence).
    #[arg(long)]
    pub keep_uids: bool,
    /// DICOM: cap on the change of any stored value, in stored units.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_stored_change: Option<u32>,
    /// What each ledger row keeps for `tracemark-embed restore`: `bytes` rebuilds the input
    /// file byte for byte where its format allows (uncompressed DICOM and TIFF, PNG) and its
    /// samples otherwise; `pixels` only the samples (faster for PNG inputs); `none` nothing.
    #[arg(long, value_enum, default_value = "bytes", value_name = "WHAT")]
    pub restore_data: RestoreDataArg,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    /// Stamp an input that already carries this key's mark (refused by default: it is a
    /// stamped copy, not an original). The ledger records the release it carried.
    #[arg(long)]
    pub restamp: bool,
    /// Print a JSON object instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Images (PNG, JPEG, TIFF, WebP, DICOM) or folders to stamp. One file with an output file name
    /// is a single stamp; several inputs or a folder form one release written under the
    /// output folder, keeping each folder's relative layout.
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
}

/// `--restore-data`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RestoreDataArg {
    /// The input file, byte for byte where its format allows.
    Bytes,
    /// The input's samples.
    Pixels,
    /// Nothing.
    None,
}

impl From<RestoreDataArg> for tracemark::pipeline::RestoreData {
    fn from(a: RestoreDataArg) -> Self {
        match a {
            RestoreDataArg::Bytes => Self::Bytes,
            RestoreDataArg::Pixels => Self::Pixels,
            RestoreDataArg::None => Self::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ledger_options_before_or_after_the_action() {
        for args in [
            &["t", "ledger", "--key", "k", "--ledger", "l", "verify"][..],
            &["t", "ledger", "verify", "--key", "k", "--ledger", "l"][..],
            &["t", "ledger", "--key", "k", "verify", "--ledger", "l"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let Some(Command::Ledger(l)) = cli.command else {
                panic!("ledger command")
            };
            assert_eq!(l.key.as_deref(), Some(std::path::Path::new("k")));
            assert_eq!(l.ledger.as_deref(), Some(std::path::Path::new("l")));
            assert!(matches!(l.action, LedgerAction::Verify { anchor: None }));
        }
    }
}

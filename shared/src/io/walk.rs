//! Finding the images in folders: what both binaries take when given a folder (a study to
//! stamp, a crawl of found copies to examine).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::Format;

/// Image files under `dir`, recursively, in name order, appended to `out`: files named as an
/// image (.png, .jpg, .jpeg, .tif, .tiff, .webp, .dcm) and files without an extension that
/// are DICOM by content (PACS exports: IM0001...). Hidden entries (names starting with '.')
/// and the folder `skip` (an output folder inside the input) are passed over. Symbolic links
/// are not followed, to a file or to a folder, so nothing outside the tree is read unless
/// named; they are listed in `links`.
///
/// # Errors
/// A folder that cannot be listed, an entry whose type cannot be read.
pub fn images(
    dir: &Path,
    skip: Option<&Path>,
    out: &mut Vec<PathBuf>,
    links: &mut Vec<PathBuf>,
) -> Result<()> {
    if skip.is_some_and(|s| dir.canonicalize().is_ok_and(|d| d == s)) {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .and_then(|it| it.collect::<std::io::Result<Vec<_>>>())
        .map_err(|e| Error::io(dir, e))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = e.path();
        let kind = e.file_type().map_err(|err| Error::io(&path, err))?;
        if kind.is_symlink() {
            links.push(path);
        } else if kind.is_dir() {
            images(&path, skip, out, links)?;
        } else if kind.is_file()
            && (Format::from_extension(&path).is_some()
                || (path.extension().is_none() && looks_like_dicom(&path)))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// DICOM folders often hold files without an extension (IM0001...): sniff their magic.
fn looks_like_dicom(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| crate::io::dicom::is_dicom(&head))
}

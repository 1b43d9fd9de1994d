//! The reversible layer (issue 12): the original rebuilt, bit for bit, from an unmodified
//! stamped copy, the key and the side data its ledger row holds.
//!
//! The mark is `q = round(g * M * tile)` in fixed point ([`crate::mark::embed`]), so with the
//! key, the payload, the tile variant, the gain and the 16 x 16 block map of the mask, `q` is
//! recomputed exactly without the original. Every stored sample was changed by a step
//! derived from `q` alone (a DICOM window's constant, or a VOI LUT's local slope), so the
//! original is `y - step` except where the stamp clipped at the sample range: those, and any
//! sample whose step the restorer cannot know exactly, are corrected from two small streams
//! recorded at stamping by running this very restore against the original
//! ([`Recorder`], [`Player`]). The file around the samples is rebuilt from a recipe:
//!
//! - uncompressed DICOM and uncompressed TIFF: the original's bytes with the sample regions
//!   cut out; the regions are the restored samples in file order (plus any byte the
//!   re-encoding would get wrong, recorded);
//! - PNG: the chunks around the image data, the IDAT chunk sizes, each row's filter type,
//!   and what preflate (preflate-rs) needs to recreate the original's deflate stream bit for
//!   bit from the refiltered rows;
//! - compressed DICOM (written uncompressed when stamped): the original's attributes, so
//!   that the restored file carries them with the decoded pixel values, pixel-exact only;
//! - anything else lossless (a JPEG input stamped to PNG, an interlaced PNG): the pixels
//!   only, written in the format the restore's output name asks for.
//!
//! A lossy output (JPEG) does not hold the exact stamped samples: it is not restorable, and
//! its row says so. Restore checks the original's pixel hash recorded at stamping, and the
//! caller checks the rebuilt file's SHA-256 against the ledger's input hash.

mod coder;
mod png;
mod tiff;
mod zlib;

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

pub use coder::{Coder, Corrections, Player, Recorder};
use coder::{Reader, put_blob, put_varint, unzigzag, zigzag};

use crate::error::{Error, Result};
use crate::io::image::{WriteOptions, encode_for_with};
use crate::io::{Format, Limits};
use crate::mark::embed::{EmbedPlan, Embedding};
use crate::mark::layout::Layout;
use crate::mark::pattern::KeyPatterns;
use crate::pipeline::{Content, Document};
use crate::raster::{Raster, Samples};

const MAGIC: &[u8] = b"TMRESTORE1";
/// Most bytes the side data of one file may inflate to (a hostile ledger row cannot make a
/// restore allocate more).
const MAX_INFLATED: u64 = 1 << 30;

/// The mark in one marked plane, as the restore regenerates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaneMark {
    /// Plane width in pixels.
    pub width: usize,
    /// Plane height in pixels.
    pub height: usize,
    /// [`Embedding::gain_fixed`].
    pub gain_fixed: i64,
    /// [`Embedding::block_levels`].
    pub levels: Vec<u8>,
}

impl PlaneMark {
    /// The mark of an embedding into a `width x height` plane.
    pub fn of(e: &Embedding, width: usize, height: usize) -> Self {
        PlaneMark {
            width,
            height,
            gain_fixed: e.gain_fixed(),
            levels: e.block_levels.clone(),
        }
    }
}

/// Bytes cut out of a file (the sample regions), rebuilt from the restored samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regions {
    /// The original file without its regions.
    pub rest: Vec<u8>,
    /// (offset, length) of each region in the original, in file order.
    pub regions: Vec<(u64, u64)>,
    /// Samples are written big endian.
    pub big_endian: bool,
    /// Bytes of the regions the samples in file order do not give (bits above Bits Stored,
    /// padding), as exceptions.
    pub fixes: Corrections,
}

/// The regions of a PALETTE COLOR image and the index of each colour it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Palette {
    /// The Pixel Data, as indices.
    pub regions: Regions,
    /// Bytes per index (1 or 2).
    pub bytes_per_index: u8,
    /// Each colour used, with the index most pixels of that colour carry (palettes with a
    /// colour twice are corrected through the regions' fixes).
    pub colours: Vec<([i32; 3], u16)>,
}

impl Palette {
    /// The index bytes of restored RGB samples (interleaved), in file byte order.
    pub fn index_bytes(&self, rgb: &[i32]) -> Vec<u8> {
        let map: std::collections::HashMap<[i32; 3], u16> = self.colours.iter().copied().collect();
        let mut out = Vec::with_capacity(rgb.len() / 3 * usize::from(self.bytes_per_index));
        for p in rgb.chunks_exact(3) {
            let i = map.get(&[p[0], p[1], p[2]]).copied().unwrap_or(0);
            if self.bytes_per_index == 2 {
                out.extend_from_slice(&if self.regions.big_endian {
                    i.to_be_bytes()
                } else {
                    i.to_le_bytes()
                });
            } else {
                out.push(i as u8);
            }
        }
        out
    }

    /// At stamping: the colours of `rgb` (expanded samples) and the indices the file holds
    /// at `region` of `original`.
    pub fn cut(original: &[u8], region: (u64, u64), rgb: &[i32], big_endian: bool) -> Option<Self> {
        let pixels = rgb.len() / 3;
        let (o, l) = (
            usize::try_from(region.0).ok()?,
            usize::try_from(region.1).ok()?,
        );
        let held = original.get(o..o.checked_add(l)?)?;
        let bytes_per_index = match l.checked_sub(pixels * 2) {
            Some(0) => 2u8,
            _ if l == pixels || l == pixels + 1 => 1,
            _ => return None,
        };
        let index = |p: usize| -> u16 {
            if bytes_per_index == 2 {
                let b = [held[2 * p], held[2 * p + 1]];
                if big_endian {
                    u16::from_be_bytes(b)
                } else {
                    u16::from_le_bytes(b)
                }
            } else {
                u16::from(held[p])
            }
        };
        let mut counts: std::collections::HashMap<([i32; 3], u16), u64> = Default::default();
        for (p, c) in rgb.chunks_exact(3).enumerate() {
            *counts.entry(([c[0], c[1], c[2]], index(p))).or_default() += 1;
        }
        let mut best: std::collections::HashMap<[i32; 3], (u64, u16)> = Default::default();
        for ((colour, i), n) in counts {
            let e = best.entry(colour).or_insert((0, i));
            if (n, std::cmp::Reverse(i)) > (e.0, std::cmp::Reverse(e.1)) {
                *e = (n, i);
            }
        }
        let mut colours: Vec<([i32; 3], u16)> =
            best.into_iter().map(|(c, (_, i))| (c, i)).collect();
        colours.sort_unstable();
        let mut palette = Palette {
            regions: Regions {
                rest: Vec::new(),
                regions: Vec::new(),
                big_endian,
                fixes: Corrections::default(),
            },
            bytes_per_index,
            colours,
        };
        palette.regions = cut_regions(
            original,
            vec![region],
            &palette.index_bytes(rgb),
            big_endian,
        )?;
        Some(palette)
    }
}

/// How the file around the restored samples is rebuilt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Container {
    /// Byte-exact: the original with its sample regions cut out.
    Regions(Regions),
    /// Byte-exact: a PNG's chunks and the recipe of its deflate stream.
    Png(png::Recipe),
    /// Byte-exact: a PALETTE COLOR DICOM (stamped as the RGB image it displays as) whose
    /// indices are found again from the restored colours.
    Palette(Palette),
    /// Pixel-exact: a compressed DICOM's attributes (a Part 10 file without Pixel Data,
    /// Explicit VR Little Endian), given the restored samples uncompressed.
    DicomHeader(Vec<u8>),
    /// Pixel-exact: the samples only.
    Pixels,
}

/// What a restore rebuilds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exactness {
    /// The original file, byte for byte.
    Bytes,
    /// The original's decoded samples (and, for DICOM, its attributes), in a new file.
    Pixels,
}

impl Exactness {
    /// "byte-identical" or "pixel-identical".
    pub fn name(self) -> &'static str {
        match self {
            Exactness::Bytes => "byte-identical",
            Exactness::Pixels => "pixel-identical",
        }
    }
}

/// Everything a restore needs beyond the key, the payload and the stamped copy.
#[derive(Clone, Debug, PartialEq)]
pub struct SideData {
    /// Tile variant of the stamp.
    pub variant: u8,
    /// The mark of each marked plane (one per frame, or one montage).
    pub planes: Vec<PlaneMark>,
    /// DICOM: the cap on a stored change the stamp used.
    pub max_stored_change: Option<u32>,
    /// DICOM frames without a declared window are marked in the value range of the
    /// original's stored values: that window (center, width), which the stamped copy's
    /// values no longer give.
    pub value_range: Option<(f64, f64)>,
    /// SHA-256 of the original's samples (see [`raster_hash`], `DicomImage::pixel_hash`).
    pub pixel_sha256: [u8; 32],
    /// Clip and exception corrections.
    pub corrections: Corrections,
    /// How the file is rebuilt.
    pub container: Container,
}

impl SideData {
    /// What the restore of this file gives.
    pub fn exactness(&self) -> Exactness {
        match self.container {
            Container::Regions(_) | Container::Png(_) | Container::Palette(_) => Exactness::Bytes,
            Container::DicomHeader(_) | Container::Pixels => Exactness::Pixels,
        }
    }
}

/// A ledger row's restore field: the side data, or why the file cannot be restored.
#[derive(Clone, Debug, PartialEq)]
pub enum Restore {
    /// Restorable.
    Data(Box<SideData>),
    /// Not restorable, and why (a lossy output).
    Refused(String),
}

impl Restore {
    /// The compressed encoding kept in the ledger.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        match self {
            Restore::Refused(why) => {
                out.push(0);
                put_blob(&mut out, why.as_bytes());
            }
            Restore::Data(d) => {
                out.push(1);
                out.push(d.variant);
                put_varint(&mut out, d.planes.len() as u64);
                for p in &d.planes {
                    put_varint(&mut out, p.width as u64);
                    put_varint(&mut out, p.height as u64);
                    put_varint(&mut out, zigzag(p.gain_fixed));
                    // Levels as differences along the row: smooth maps compress better.
                    let mut prev = 0u8;
                    out.extend(p.levels.iter().map(|&l| {
                        let d = l.wrapping_sub(prev);
                        prev = l;
                        d
                    }));
                }
                put_varint(
                    &mut out,
                    d.max_stored_change.map_or(0, |c| u64::from(c) + 1),
                );
                match d.value_range {
                    Some((c, w)) => {
                        out.push(1);
                        out.extend_from_slice(&c.to_le_bytes());
                        out.extend_from_slice(&w.to_le_bytes());
                    }
                    None => out.push(0),
                }
                out.extend_from_slice(&d.pixel_sha256);
                put_corrections(&mut out, &d.corrections);
                match &d.container {
                    Container::Regions(r) => {
                        out.push(1);
                        put_regions(&mut out, r);
                    }
                    Container::Palette(p) => {
                        out.push(4);
                        put_regions(&mut out, &p.regions);
                        out.push(p.bytes_per_index);
                        put_varint(&mut out, p.colours.len() as u64);
                        for (c, i) in &p.colours {
                            for v in c {
                                put_varint(&mut out, zigzag(i64::from(*v)));
                            }
                            put_varint(&mut out, u64::from(*i));
                        }
                    }
                    Container::Png(p) => {
                        out.push(2);
                        p.encode(&mut out);
                    }
                    Container::DicomHeader(h) => {
                        out.push(3);
                        put_blob(&mut out, h);
                    }
                    Container::Pixels => out.push(0),
                }
            }
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&out).expect("writing to memory");
        z.finish().expect("writing to memory")
    }

    /// Parses [`Restore::encode`]'s output; `None` when it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(bytes)
            .take(MAX_INFLATED)
            .read_to_end(&mut raw)
            .ok()?;
        let body = raw.strip_prefix(MAGIC)?;
        let mut r = Reader::new(body);
        let kind = r.bytes(1)?[0];
        if kind == 0 {
            let why = String::from_utf8(r.blob()?.to_vec()).ok()?;
            return r.done().then_some(Restore::Refused(why));
        }
        let variant = r.bytes(1)?[0];
        let n = r.varint()?;
        let mut planes = Vec::new();
        for _ in 0..n {
            let width = usize::try_from(r.varint()?).ok()?;
            let height = usize::try_from(r.varint()?).ok()?;
            let gain_fixed = unzigzag(r.varint()?);
            let count = width
                .div_ceil(crate::mark::embed::BLOCK)
                .checked_mul(height.div_ceil(crate::mark::embed::BLOCK))?;
            let mut prev = 0u8;
            let levels = r
                .bytes(count)?
                .iter()
                .map(|&d| {
                    prev = prev.wrapping_add(d);
                    prev
                })
                .collect();
            planes.push(PlaneMark {
                width,
                height,
                gain_fixed,
                levels,
            });
        }
        let cap = r.varint()?;
        let max_stored_change = (cap > 0).then(|| u32::try_from(cap - 1).ok()).flatten();
        let value_range = match r.bytes(1)?[0] {
            0 => None,
            _ => {
                let c = f64::from_le_bytes(r.bytes(8)?.try_into().ok()?);
                let w = f64::from_le_bytes(r.bytes(8)?.try_into().ok()?);
                Some((c, w))
            }
        };
        let pixel_sha256 = r.bytes(32)?.try_into().ok()?;
        let corrections = read_corrections(&mut r)?;
        let container = match r.bytes(1)?[0] {
            0 => Container::Pixels,
            1 => Container::Regions(read_regions(&mut r)?),
            4 => {
                let regions = read_regions(&mut r)?;
                let bytes_per_index = r.bytes(1)?[0];
                let n = r.varint()?;
                let mut colours = Vec::new();
                for _ in 0..n {
                    let mut c = [0i32; 3];
                    for v in &mut c {
                        *v = i32::try_from(unzigzag(r.varint()?)).ok()?;
                    }
                    colours.push((c, u16::try_from(r.varint()?).ok()?));
                }
                Container::Palette(Palette {
                    regions,
                    bytes_per_index,
                    colours,
                })
            }
            2 => Container::Png(png::Recipe::decode(&mut r)?),
            3 => Container::DicomHeader(r.blob()?.to_vec()),
            _ => return None,
        };
        r.done().then(|| {
            Restore::Data(Box::new(SideData {
                variant,
                planes,
                max_stored_change,
                value_range,
                pixel_sha256,
                corrections,
                container,
            }))
        })
    }
}

fn put_regions(out: &mut Vec<u8>, r: &Regions) {
    put_blob(out, &r.rest);
    put_varint(out, r.regions.len() as u64);
    for &(o, l) in &r.regions {
        put_varint(out, o);
        put_varint(out, l);
    }
    out.push(u8::from(r.big_endian));
    put_corrections(out, &r.fixes);
}

fn read_regions(r: &mut Reader<'_>) -> Option<Regions> {
    let rest = r.blob()?.to_vec();
    let n = r.varint()?;
    let mut regions = Vec::new();
    for _ in 0..n {
        regions.push((r.varint()?, r.varint()?));
    }
    let big_endian = r.bytes(1)?[0] == 1;
    Some(Regions {
        rest,
        regions,
        big_endian,
        fixes: read_corrections(r)?,
    })
}

fn put_corrections(out: &mut Vec<u8>, c: &Corrections) {
    put_varint(out, c.candidates);
    put_blob(out, &c.clip);
    put_varint(out, c.exceptions);
    put_blob(out, &c.except);
}

fn read_corrections(r: &mut Reader<'_>) -> Option<Corrections> {
    Some(Corrections {
        candidates: r.varint()?,
        clip: r.blob()?.to_vec(),
        exceptions: r.varint()?,
        except: r.blob()?.to_vec(),
    })
}

/// The original samples of a stamped raster, given the luminance delta the stamp added to
/// every colour channel ([`Raster::apply_delta`]), through `coder`.
///
/// # Panics
/// When `delta` is not one value per pixel.
pub fn unapply_raster(stamped: &Raster, delta: &[i16], coder: &mut impl Coder) -> Raster {
    let mut out = stamped.clone();
    match &mut out.samples {
        Samples::U8(x) => walk_raster(stamped, delta, |at, y, step, lo, hi| {
            x[at] = coder.sample(at, y, step, lo, hi) as u8;
        }),
        Samples::U16(x) => walk_raster(stamped, delta, |at, y, step, lo, hi| {
            x[at] = coder.sample(at, y, step, lo, hi) as u16;
        }),
    }
    out
}

/// Calls `f(index, stamped sample, step, lo, hi)` for every colour sample of a pixel whose
/// delta is not zero, in sample order.
fn walk_raster(stamped: &Raster, delta: &[i16], mut f: impl FnMut(usize, i32, i64, i32, i32)) {
    assert_eq!(delta.len(), stamped.width * stamped.height, "delta size");
    let (c, cc) = (stamped.channels, stamped.colour_channels());
    macro_rules! walk {
        ($y:expr, $scale:expr, $hi:expr) => {
            for (p, &d) in delta.iter().enumerate() {
                if d == 0 {
                    continue;
                }
                for k in 0..cc {
                    let at = p * c + k;
                    f(at, i32::from($y[at]), i64::from(d) * $scale, 0, $hi);
                }
            }
        };
    }
    match &stamped.samples {
        Samples::U8(y) => walk!(y, 1, 255),
        Samples::U16(y) => walk!(y, 257, 65535),
    }
}

/// SHA-256 of a raster's samples with its shape: what an exact restore reproduces.
pub fn raster_hash(r: &Raster) -> [u8; 32] {
    let mut h = Sha256::new();
    let bits: u64 = if r.is_16bit() { 16 } else { 8 };
    for n in [r.width as u64, r.height as u64, r.channels as u64, bits] {
        h.update(n.to_le_bytes());
    }
    match &r.samples {
        Samples::U8(v) => h.update(v),
        Samples::U16(v) => {
            for chunk in v.chunks(1 << 16) {
                let b: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
                h.update(&b);
            }
        }
    }
    h.finalize().into()
}

/// A raster's samples as bytes in row order (interleaved), big or little endian.
fn raster_bytes(r: &Raster, big_endian: bool) -> Vec<u8> {
    match &r.samples {
        Samples::U8(v) => v.clone(),
        Samples::U16(v) => v
            .iter()
            .flat_map(|s| {
                if big_endian {
                    s.to_be_bytes()
                } else {
                    s.to_le_bytes()
                }
            })
            .collect(),
    }
}

/// Why a lossy output cannot be restored (kept in its ledger row).
pub fn lossy_refusal(format: Format) -> Restore {
    Restore::Refused(format!(
        "it was written as {}, a lossy format: the stamped copy does not hold the exact stamped samples, so the original cannot be rebuilt from it",
        format.name().to_uppercase()
    ))
}

/// The side data of a stamped raster: `original` and `stamped` samples, the embedding, the
/// tile variant, and the input file (bytes and format) when the container can be rebuilt.
pub fn for_raster(
    original: &Raster,
    stamped: &Raster,
    e: &Embedding,
    variant: usize,
    source: Option<(&[u8], Format)>,
) -> Restore {
    let mut rec = Recorder::new();
    walk_raster(stamped, &e.delta, |at, y, step, lo, hi| {
        rec.record(at, sample_at(original, at), y, step, lo, hi);
    });
    let container = match source {
        Some((bytes, Format::Png)) => {
            png::recipe(bytes, original).map_or(Container::Pixels, Container::Png)
        }
        Some((bytes, Format::Tiff)) => {
            tiff::regions(bytes, original).map_or(Container::Pixels, Container::Regions)
        }
        _ => Container::Pixels,
    };
    Restore::Data(Box::new(SideData {
        variant: variant as u8,
        planes: vec![PlaneMark::of(e, original.width, original.height)],
        max_stored_change: None,
        value_range: None,
        pixel_sha256: raster_hash(original),
        corrections: rec.corrections,
        container,
    }))
}

fn sample_at(r: &Raster, i: usize) -> i32 {
    match &r.samples {
        Samples::U8(v) => i32::from(v[i]),
        Samples::U16(v) => i32::from(v[i]),
    }
}

/// Records `predicted` region bytes against the `original` file's `regions`; `None` when the
/// regions do not fit the file or the prediction is far off (more than 1 % of the bytes),
/// where cutting them saves little.
pub fn cut_regions(
    original: &[u8],
    regions: Vec<(u64, u64)>,
    predicted: &[u8],
    big_endian: bool,
) -> Option<Regions> {
    let mut rest = Vec::with_capacity(original.len().saturating_sub(predicted.len()));
    let mut at = 0usize;
    let mut parts = Vec::with_capacity(regions.len());
    for &(o, l) in &regions {
        let (o, l) = (usize::try_from(o).ok()?, usize::try_from(l).ok()?);
        if o < at || o.checked_add(l)? > original.len() {
            return None;
        }
        rest.extend_from_slice(&original[at..o]);
        parts.push(&original[o..o + l]);
        at = o + l;
    }
    rest.extend_from_slice(&original[at..]);
    // One region (DICOM's Pixel Data) is read in place; strips are gathered.
    let held: std::borrow::Cow<'_, [u8]> = match parts.as_slice() {
        [one] => std::borrow::Cow::Borrowed(one),
        many => std::borrow::Cow::Owned(many.concat()),
    };
    if held.len() < predicted.len() || held.len() - predicted.len() > 1 {
        return None;
    }
    // Mostly equal: compare in blocks, byte by byte only where a block differs.
    let mut rec = Recorder::new();
    const BLOCK: usize = 4096;
    for (k, h) in held.chunks(BLOCK).enumerate() {
        let at = k * BLOCK;
        let p = &predicted[at.min(predicted.len())..(at + h.len()).min(predicted.len())];
        if p == h {
            continue;
        }
        for (j, &b) in h.iter().enumerate() {
            let guess = i32::from(p.get(j).copied().unwrap_or(0));
            rec.record(at + j, i32::from(b), guess, 0, -1, 256);
        }
    }
    (rec.corrections.exceptions <= held.len() as u64 / 100).then_some(Regions {
        rest,
        regions,
        big_endian,
        fixes: rec.corrections,
    })
}

impl Regions {
    /// The original file, from the restored samples in file order.
    fn rebuild(&self, predicted: &[u8]) -> Option<Vec<u8>> {
        let total: u64 = self.regions.iter().map(|r| r.1).sum();
        let total = usize::try_from(total).ok()?;
        let mut held = Vec::with_capacity(total);
        let mut play = Player::new(&self.fixes);
        for i in 0..total {
            let p = i32::from(predicted.get(i).copied().unwrap_or(0));
            held.push(play.sample(i, p, 0, -1, 256) as u8);
        }
        if !play.finished(&self.fixes) {
            return None;
        }
        let mut out = Vec::with_capacity(self.rest.len() + total);
        let (mut from_rest, mut from_held) = (0usize, 0usize);
        for &(o, l) in &self.regions {
            let (o, l) = (usize::try_from(o).ok()?, usize::try_from(l).ok()?);
            let take = o.checked_sub(out.len())?;
            out.extend_from_slice(self.rest.get(from_rest..from_rest + take)?);
            from_rest += take;
            out.extend_from_slice(held.get(from_held..from_held + l)?);
            from_held += l;
        }
        out.extend_from_slice(self.rest.get(from_rest..)?);
        Some(out)
    }
}

/// A restored file.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// What they reproduce.
    pub exactness: Exactness,
    /// Its format.
    pub format: Format,
}

fn refuse(path: &Path, why: impl Into<String>) -> Error {
    Error::NotRestored {
        path: path.into(),
        why: why.into(),
    }
}

/// Rebuilds the original of a stamped copy (`stamped`, read from `path`) stamped with
/// `payload` under the key behind `patterns`, from its side data. A
/// [`Container::Pixels`] restore is written in the format `output`'s name asks for.
///
/// # Errors
/// [`Error::NotRestored`] when the side data does not fit the copy or the restored samples
/// do not match the original's hash (a modified copy, another key); decoding errors.
pub fn restore(
    patterns: &KeyPatterns,
    payload: u64,
    side: &SideData,
    path: &Path,
    stamped: &[u8],
    output: &Path,
    limits: &Limits,
) -> Result<Restored> {
    let plan = EmbedPlan::with_variant(
        patterns,
        payload,
        usize::from(side.variant) % crate::mark::pattern::VARIANTS,
    );
    let deltas: Vec<Vec<i16>> = side
        .planes
        .iter()
        .map(|p| plan.regenerate(p.width, p.height, &p.levels, p.gain_fixed))
        .collect();
    let mismatch = || refuse(path, "the ledger's restore data does not fit this file");
    let wrong = || {
        refuse(
            path,
            "the restored samples do not match the original's hash: the copy was modified, or the key is not the one that stamped it",
        )
    };
    let mut play = Player::new(&side.corrections);
    let doc = Document::decode(path, stamped, limits)?;
    match doc.into_content() {
        Content::Raster {
            raster, metadata, ..
        } => {
            let [p] = side.planes.as_slice() else {
                return Err(mismatch());
            };
            if (p.width, p.height) != (raster.width, raster.height) {
                return Err(mismatch());
            }
            let x = unapply_raster(&raster, &deltas[0], &mut play);
            if !play.finished(&side.corrections) || raster_hash(&x) != side.pixel_sha256 {
                return Err(wrong());
            }
            match &side.container {
                Container::Png(recipe) => Ok(Restored {
                    bytes: recipe.rebuild(&x).ok_or_else(mismatch)?,
                    exactness: Exactness::Bytes,
                    format: Format::Png,
                }),
                Container::Regions(r) => Ok(Restored {
                    bytes: r
                        .rebuild(&raster_bytes(&x, r.big_endian))
                        .ok_or_else(mismatch)?,
                    exactness: Exactness::Bytes,
                    format: Format::Tiff,
                }),
                Container::Pixels => {
                    let encoded = encode_for_with(&x, &metadata, output, &WriteOptions::default())?;
                    if encoded.is_lossy() {
                        return Err(refuse(
                            output,
                            "a restored original is written losslessly: name the output .png or .tif",
                        ));
                    }
                    Ok(Restored {
                        format: encoded.format,
                        bytes: encoded.bytes,
                        exactness: Exactness::Pixels,
                    })
                }
                Container::DicomHeader(_) | Container::Palette(_) => Err(mismatch()),
            }
        }
        Content::Dicom(mut img) => {
            if let Some((center, width)) = side.value_range {
                img.set_value_range(crate::io::dicom::Window { center, width });
            }
            let layout = Layout::choose(img.frames, img.cols, img.rows)?;
            let expected = match layout {
                Layout::PerFrame => img.frames,
                Layout::Montage { .. } => 1,
            };
            if side.planes.len() != expected {
                return Err(mismatch());
            }
            let per_frame = layout.frame_deltas(deltas, img.frames, img.cols, img.rows);
            if per_frame.iter().any(|d| d.len() != img.rows * img.cols) {
                return Err(mismatch());
            }
            let x = img.unapply(&per_frame, side.max_stored_change, &mut play);
            if !play.finished(&side.corrections) || img.pixel_hash(&x) != side.pixel_sha256 {
                return Err(wrong());
            }
            let bytes = match &side.container {
                Container::Regions(r) => r
                    .rebuild(&img.file_order_bytes(&x, r.big_endian))
                    .ok_or_else(mismatch)?,
                Container::DicomHeader(h) => img.rebuild_native(h, &x)?,
                Container::Palette(p) if img.spp == 3 => {
                    p.regions.rebuild(&p.index_bytes(&x)).ok_or_else(mismatch)?
                }
                _ => return Err(mismatch()),
            };
            Ok(Restored {
                bytes,
                exactness: side.exactness(),
                format: Format::Dicom,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;
    use crate::io::image::encode_for;
    use crate::pipeline::{StampOptions, Stamper};

    /// A textured image with large black and white areas (the stamp clips there).
    fn saturated(w: usize, h: usize, channels: usize, sixteen: bool) -> Raster {
        let p = crate::testsignal::photo_like(w, h, 11);
        let mut v = Vec::with_capacity(w * h * channels);
        for (i, &l) in p.data.iter().enumerate() {
            let x = i % w;
            let l = if x < w / 5 {
                0.0
            } else if x > w * 4 / 5 {
                255.0
            } else {
                l
            };
            for c in 0..channels {
                v.push(if channels == 2 && c == 1 { 200.0 } else { l });
            }
        }
        let samples = if sixteen {
            Samples::U16(v.iter().map(|&s| (s * 257.0) as u16).collect())
        } else {
            Samples::U8(v.iter().map(|&s| s as u8).collect())
        };
        Raster {
            width: w,
            height: h,
            channels,
            samples,
        }
    }

    /// `raster` as a PNG written as libpng writes one (`.png`: zlib, Paeth rows), as image-rs
    /// writes one at its best setting (`.best.png`: miniz), or in the format `name` says
    /// through tracemark's own encoder.
    fn source(raster: &Raster, name: &str) -> Vec<u8> {
        use image::ImageEncoder;
        use image::codecs::png::{CompressionType, FilterType, PngEncoder};
        if name.ends_with(".best.png") {
            let img = crate::io::image::to_dynamic(raster);
            let mut out = Vec::new();
            PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Adaptive)
                .write_image(
                    img.as_bytes(),
                    img.width(),
                    img.height(),
                    img.color().into(),
                )
                .unwrap();
            return out;
        }
        if name.ends_with(".png") {
            return png::libpng_like(raster, 4);
        }
        encode_for(raster, Path::new(name), &WriteOptions::default())
            .unwrap()
            .bytes
    }

    fn restored(key: &SecretKey, side: &SideData, p: &Path, stamped: &[u8]) -> Restored {
        let limits = Limits::default();
        restore(&KeyPatterns::new(key), 0xfeed, side, p, stamped, p, &limits).unwrap()
    }

    fn stamp(raster: &Raster, name: &str, key: &SecretKey) -> (Vec<u8>, Vec<u8>, SideData) {
        stamp_source(&source(raster, name), name, key)
    }

    fn stamp_source(source: &[u8], name: &str, key: &SecretKey) -> (Vec<u8>, Vec<u8>, SideData) {
        let path = Path::new(name);
        let source = source.to_vec();
        let doc = Document::decode(path, &source, &Limits::default()).unwrap();
        let stamper = Stamper::new(key, 0xfeed, StampOptions::default()).unwrap();
        let s = stamper.stamp_file(doc, &source, path, 3).unwrap();
        let Some(Restore::Data(side)) = Restore::decode(&s.restore) else {
            panic!("{name} is restorable")
        };
        (source, s.encoded.bytes, *side)
    }

    #[test]
    fn clipped_samples_of_every_raster_kind_are_restored_byte_for_byte() {
        let key = SecretKey::from_bytes([9; 32]);
        for (channels, sixteen, name) in [
            (1, false, "g8.png"),
            (3, false, "rgb8.png"),
            (2, false, "ga8.png"),
            (1, true, "g16.png"),
            (3, true, "rgb16.tif"),
            (1, false, "g8.tif"),
        ] {
            let original = saturated(260, 200, channels, sixteen);
            let (source, stamped, side) = stamp(&original, name, &key);
            assert_eq!(side.exactness(), Exactness::Bytes, "{name}");
            if let Container::Png(recipe) = &side.container {
                assert!(
                    recipe.by_zlib(),
                    "{name}: zlib's own stream is recreated by zlib"
                );
            }
            assert!(
                side.corrections.candidates > 1000,
                "{name}: clipped samples"
            );
            let r = restored(&key, &side, Path::new(name), &stamped);
            assert!(r.bytes == source, "{name}: byte-identical");
        }
    }

    #[test]
    fn a_png_written_by_another_deflate_is_restored_byte_or_pixel_for_pixel() {
        // image-rs at its best setting (miniz): preflate's corrections when small, else the
        // samples; either way what the side data promises is what the restore gives.
        let key = SecretKey::from_bytes([9; 32]);
        for channels in [1, 2, 3] {
            let original = saturated(256, 200, channels, false);
            let (source, stamped, side) = stamp(&original, "x.best.png", &key);
            let p = Path::new("x.png");
            let r = restored(&key, &side, p, &stamped);
            match side.exactness() {
                Exactness::Bytes => assert!(r.bytes == source, "{channels} channels"),
                Exactness::Pixels => {
                    let (back, _) =
                        crate::io::image::decode(p, &r.bytes, &Limits::default()).unwrap();
                    assert!(back == original, "{channels} channels");
                }
            }
        }
    }

    #[test]
    fn a_png_whose_deflate_stream_cannot_be_recreated_is_restored_pixel_for_pixel() {
        // tracemark's own PNG writer (the png crate's fast setting, fdeflate) writes a stream
        // preflate-rs does not parse: the samples are still restored exactly.
        let key = SecretKey::from_bytes([9; 32]);
        let original = saturated(256, 200, 3, false);
        let p = Path::new("fast.png");
        let source = encode_for(&original, p, &WriteOptions::default())
            .unwrap()
            .bytes;
        let (_, stamped, side) = stamp_source(&source, "fast.png", &key);
        assert_eq!(side.exactness(), Exactness::Pixels);
        let r = restored(&key, &side, p, &stamped);
        let (back, _) = crate::io::image::decode(p, &r.bytes, &Limits::default()).unwrap();
        assert!(back == original);
    }

    #[test]
    fn a_changed_sample_another_key_or_payload_is_refused() {
        let key = SecretKey::from_bytes([9; 32]);
        let original = saturated(256, 256, 1, false);
        let (_, stamped, side) = stamp(&original, "a.png", &key);
        let limits = Limits::default();
        let p = Path::new("a.png");
        let refused = |patterns: &KeyPatterns, payload: u64, bytes: &[u8]| {
            let e = restore(patterns, payload, &side, p, bytes, p, &limits).unwrap_err();
            assert!(
                e.to_string().contains("do not match the original's hash"),
                "{e}"
            );
        };
        refused(
            &KeyPatterns::new(&SecretKey::from_bytes([8; 32])),
            0xfeed,
            &stamped,
        );
        refused(&KeyPatterns::new(&key), 0xfeee, &stamped);
        // One sample of the stamped copy changed by one: the restore would be silently wrong
        // in that sample; the pixel hash refuses it.
        let (mut r, _) = crate::io::image::decode(p, &stamped, &limits).unwrap();
        if let Samples::U8(v) = &mut r.samples {
            v[40_000] ^= 1;
        }
        let changed = encode_for(&r, p, &WriteOptions::default()).unwrap().bytes;
        refused(&KeyPatterns::new(&key), 0xfeed, &changed);
    }

    #[test]
    fn side_data_round_trips_and_lossy_outputs_say_why() {
        let key = SecretKey::from_bytes([9; 32]);
        let (_, _, side) = stamp(&saturated(300, 200, 3, false), "x.png", &key);
        let r = Restore::Data(Box::new(side));
        assert_eq!(Restore::decode(&r.encode()), Some(r));
        let jpeg = lossy_refusal(Format::Jpeg);
        assert_eq!(Restore::decode(&jpeg.encode()), Some(jpeg));
        assert_eq!(Restore::decode(b"not side data"), None);
    }
}

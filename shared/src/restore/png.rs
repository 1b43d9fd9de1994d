//! A PNG rebuilt byte for byte from its samples: the chunks around the image data, the IDAT
//! chunk sizes, each row's filter type and how to recreate the original's zlib stream from
//! the refiltered rows: zlib's parameters when zlib wrote it (libpng, Pillow; see
//! [`super::zlib`]), else the corrections preflate-rs needs (miniz, libdeflate, zlib-ng),
//! when they are small.

use std::io::Read;

use preflate_rs::{PreflateConfig, preflate_whole_deflate_stream, recreate_whole_deflate_stream};

use super::coder::{Reader, put_blob, put_varint};
use super::zlib;
use crate::raster::Raster;

const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// What rebuilds one PNG around its samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipe {
    before: Vec<u8>,
    after: Vec<u8>,
    idat_lens: Vec<u32>,
    zlib_header: [u8; 2],
    filters: Vec<u8>,
    deflate: Deflate,
}

/// How the deflate stream is recreated.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Deflate {
    /// By zlib with these parameters (header and Adler-32 included).
    Zlib(zlib::Params),
    /// By preflate-rs with these corrections.
    Preflate(Vec<u8>),
}

struct Chunk {
    start: usize,
    end: usize,
    kind: [u8; 4],
    data: std::ops::Range<usize>,
}

fn chunks(bytes: &[u8]) -> Option<Vec<Chunk>> {
    let mut at = SIGNATURE.len();
    bytes.starts_with(SIGNATURE).then_some(())?;
    let mut out = Vec::new();
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let kind: [u8; 4] = bytes.get(at + 4..at + 8)?.try_into().ok()?;
        let data = at + 8..at.checked_add(8 + len)?;
        let end = data.end.checked_add(4)?;
        (end <= bytes.len()).then_some(())?;
        out.push(Chunk {
            start: at,
            end,
            kind,
            data,
        });
        at = end;
        if &kind == b"IEND" {
            break;
        }
    }
    Some(out)
}

/// The recipe of `bytes`, a PNG whose decoded samples are `original`; `None` for what it
/// does not rebuild (interlaced, palette or below 8 bits, expanded transparency, a stream it
/// cannot recreate exactly): such a PNG is restored pixel-exact.
pub fn recipe(bytes: &[u8], original: &Raster) -> Option<Recipe> {
    let chunks = chunks(bytes)?;
    let ihdr = chunks.first().filter(|c| &c.kind == b"IHDR")?;
    let h = &bytes[ihdr.data.clone()];
    let width = u32::from_be_bytes(h.get(0..4)?.try_into().ok()?) as usize;
    let height = u32::from_be_bytes(h.get(4..8)?.try_into().ok()?) as usize;
    let (depth, colour, interlace) = (*h.get(8)?, *h.get(9)?, *h.get(12)?);
    let channels = match colour {
        0 => 1,
        2 => 3,
        4 => 2,
        6 => 4,
        _ => return None,
    };
    if interlace != 0
        || !(depth == 8 || depth == 16)
        || (width, height, channels) != (original.width, original.height, original.channels)
        || (depth == 16) != original.is_16bit()
    {
        return None;
    }
    let idat: Vec<&Chunk> = chunks.iter().filter(|c| &c.kind == b"IDAT").collect();
    let (first, last) = (idat.first()?, idat.last()?);
    // IDAT chunks must be consecutive (the PNG specification says so).
    let first_i = chunks.iter().position(|c| c.start == first.start)?;
    if chunks[first_i..first_i + idat.len()]
        .iter()
        .any(|c| &c.kind != b"IDAT")
    {
        return None;
    }
    let zlib: Vec<u8> = idat
        .iter()
        .flat_map(|c| bytes[c.data.clone()].iter().copied())
        .collect();
    if zlib.len() < 6 || zlib[1] & 0x20 != 0 {
        return None;
    }
    let stride = row_bytes(original) + 1;
    let expected = stride.checked_mul(height)?;
    let mut plain = Vec::with_capacity(expected);
    flate2::read::ZlibDecoder::new(&zlib[..])
        .take(expected as u64 + 1)
        .read_to_end(&mut plain)
        .ok()?;
    if plain.len() != expected {
        return None;
    }
    let filters: Vec<u8> = (0..height).map(|r| plain[r * stride]).collect();
    if filters.iter().any(|&f| f > 4) || filtered(original, &filters) != plain {
        return None;
    }
    let deflate = match zlib::find(&plain, &zlib) {
        Some(p) => Deflate::Zlib(p),
        None => {
            // preflate-rs recognises miniz, libdeflate and zlib-ng streams too; it refuses
            // some others (fdeflate's, which the png crate writes at its fast setting). Its
            // corrections are kept only when small: a stream it models badly would cost
            // more than it saves.
            let body = &zlib[2..zlib.len() - 4];
            let (result, redone) =
                preflate_whole_deflate_stream(body, &PreflateConfig::default()).ok()?;
            if result.compressed_size != body.len()
                || redone.text() != plain.as_slice()
                || adler32(&plain).to_be_bytes() != zlib[zlib.len() - 4..]
                || result.corrections.len() > (plain.len() / 128).max(2048)
            {
                return None;
            }
            Deflate::Preflate(result.corrections)
        }
    };
    Some(Recipe {
        before: bytes[..first.start].to_vec(),
        after: bytes[last.end..].to_vec(),
        idat_lens: idat.iter().map(|c| c.data.len() as u32).collect(),
        zlib_header: [zlib[0], zlib[1]],
        filters,
        deflate,
    })
}

impl Recipe {
    /// Whether zlib itself recreates the stream (else preflate-rs).
    pub fn by_zlib(&self) -> bool {
        matches!(self.deflate, Deflate::Zlib(_))
    }

    /// The PNG, from its restored samples; `None` when they do not fit the recipe.
    pub fn rebuild(&self, x: &Raster) -> Option<Vec<u8>> {
        if self.filters.len() != x.height {
            return None;
        }
        let plain = filtered(x, &self.filters);
        let zlib = match &self.deflate {
            Deflate::Zlib(p) => zlib::compress(&plain, *p)?,
            Deflate::Preflate(corrections) => {
                let deflate = recreate_whole_deflate_stream(&plain, corrections).ok()?;
                let mut zlib = Vec::with_capacity(deflate.len() + 6);
                zlib.extend_from_slice(&self.zlib_header);
                zlib.extend_from_slice(&deflate);
                zlib.extend_from_slice(&adler32(&plain).to_be_bytes());
                zlib
            }
        };
        let total: usize = self.idat_lens.iter().map(|&l| l as usize).sum();
        if total != zlib.len() {
            return None;
        }
        let mut out = Vec::with_capacity(self.before.len() + zlib.len() + self.after.len());
        out.extend_from_slice(&self.before);
        let mut at = 0;
        for &len in &self.idat_lens {
            let data = &zlib[at..at + len as usize];
            at += len as usize;
            out.extend_from_slice(&len.to_be_bytes());
            let mut crc = crc32fast::Hasher::new();
            crc.update(b"IDAT");
            crc.update(data);
            out.extend_from_slice(b"IDAT");
            out.extend_from_slice(data);
            out.extend_from_slice(&crc.finalize().to_be_bytes());
        }
        out.extend_from_slice(&self.after);
        Some(out)
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        put_blob(out, &self.before);
        put_blob(out, &self.after);
        put_varint(out, self.idat_lens.len() as u64);
        for &l in &self.idat_lens {
            put_varint(out, u64::from(l));
        }
        out.extend_from_slice(&self.zlib_header);
        put_blob(out, &self.filters);
        match &self.deflate {
            Deflate::Zlib(p) => {
                out.push(1);
                out.extend_from_slice(&[p.level, p.mem_level, p.strategy, p.window_bits]);
            }
            Deflate::Preflate(c) => {
                out.push(2);
                put_blob(out, c);
            }
        }
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Option<Self> {
        let before = r.blob()?.to_vec();
        let after = r.blob()?.to_vec();
        let n = r.varint()?;
        let mut idat_lens = Vec::new();
        for _ in 0..n {
            idat_lens.push(u32::try_from(r.varint()?).ok()?);
        }
        let zlib_header = r.bytes(2)?.try_into().ok()?;
        let filters = r.blob()?.to_vec();
        let deflate = match r.bytes(1)?[0] {
            1 => {
                let p = r.bytes(4)?;
                Deflate::Zlib(zlib::Params {
                    level: p[0],
                    mem_level: p[1],
                    strategy: p[2],
                    window_bits: p[3],
                })
            }
            2 => Deflate::Preflate(r.blob()?.to_vec()),
            _ => return None,
        };
        Some(Recipe {
            before,
            after,
            idat_lens,
            zlib_header,
            filters,
            deflate,
        })
    }
}

fn row_bytes(r: &Raster) -> usize {
    r.width * r.channels * if r.is_16bit() { 2 } else { 1 }
}

/// The rows of `r` as PNG stores them (16-bit big endian), each filtered by its type and
/// preceded by it.
fn filtered(r: &Raster, filters: &[u8]) -> Vec<u8> {
    let stride = row_bytes(r);
    let bpp = r.channels * if r.is_16bit() { 2 } else { 1 };
    let raw = super::raster_bytes(r, true);
    let zero = vec![0u8; stride];
    let mut out = Vec::with_capacity((stride + 1) * r.height);
    for (y, &f) in filters.iter().enumerate() {
        let cur = &raw[y * stride..(y + 1) * stride];
        let up = if y == 0 {
            &zero[..]
        } else {
            &raw[(y - 1) * stride..y * stride]
        };
        out.push(f);
        for i in 0..stride {
            let a = if i >= bpp { cur[i - bpp] } else { 0 };
            let b = up[i];
            let c = if i >= bpp { up[i - bpp] } else { 0 };
            let p = match f {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                _ => paeth(a, b, c),
            };
            out.push(cur[i].wrapping_sub(p));
        }
    }
    out
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &d in chunk {
            a += u32::from(d);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// A PNG as libpng writes one by default: every row filtered with `filter`, zlib level 6,
/// memory level 8, Z_FILTERED, IDAT chunks of 8192 bytes (tests only).
#[cfg(test)]
pub(super) fn libpng_like(r: &Raster, filter: u8) -> Vec<u8> {
    let colour = match r.channels {
        1 => 0u8,
        2 => 4,
        3 => 2,
        _ => 6,
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(r.width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(r.height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[if r.is_16bit() { 16 } else { 8 }, colour, 0, 0, 0]);
    let plain = filtered(r, &vec![filter; r.height]);
    let params = zlib::Params {
        level: 6,
        mem_level: 8,
        strategy: 1,
        window_bits: 15,
    };
    let stream = zlib::compress(&plain, params).unwrap();
    let mut out = SIGNATURE.to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    };
    chunk(b"IHDR", &ihdr);
    for part in stream.chunks(8192) {
        chunk(b"IDAT", part);
    }
    chunk(b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_and_paeth_match_their_definitions() {
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(paeth(10, 20, 15), 15);
        assert_eq!(paeth(10, 20, 10), 20);
    }
}

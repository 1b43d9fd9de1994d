//! zlib streams recreated bit for bit by zlib itself. Most PNG writers (libpng, Pillow,
//! scikit-image through them) compress with zlib, so the stream they wrote is what zlib gives
//! for the same rows with the same level, memory level and strategy: those parameters, found
//! at stamping by compressing the rows again and comparing as the output comes (a wrong guess
//! is dropped at its first differing byte), are all the side data needs. The zlib used is
//! the one libz-sys builds from its vendored source, so the result does not depend on the
//! machine's library.

use libz_sys as z;

/// zlib's compression parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// 0-9.
    pub level: u8,
    /// 1-9.
    pub mem_level: u8,
    /// Z_DEFAULT_STRATEGY 0, Z_FILTERED 1, Z_HUFFMAN_ONLY 2, Z_RLE 3.
    pub strategy: u8,
    /// 8-15, from the stream's header.
    pub window_bits: u8,
}

unsafe extern "C" fn zalloc(_: z::voidpf, items: z::uInt, size: z::uInt) -> z::voidpf {
    // SAFETY: calloc with sizes zlib asks for; a null return is zlib's out-of-memory case.
    unsafe { libc::calloc(items as usize, size as usize) }
}

unsafe extern "C" fn zfree(_: z::voidpf, p: z::voidpf) {
    // SAFETY: `p` came from `zalloc` above.
    unsafe { libc::free(p) }
}

/// One deflate stream in progress (the z_stream lives on the heap: zlib keeps a pointer
/// to it).
struct Deflater {
    strm: Box<z::z_stream>,
}

impl Deflater {
    fn new(p: Params) -> Option<Self> {
        let null: z::voidpf = std::ptr::null_mut();
        let mut strm = Box::new(z::z_stream {
            next_in: null.cast(),
            avail_in: 0,
            total_in: 0,
            next_out: null.cast(),
            avail_out: 0,
            total_out: 0,
            msg: null.cast(),
            state: null.cast(),
            zalloc,
            zfree,
            opaque: null,
            data_type: 0,
            adler: 0,
            reserved: 0,
        });
        // SAFETY: the stream is initialised as zlib requires; version and size are zlib's
        // own, so a header/library mismatch is refused by zlib.
        let r = unsafe {
            z::deflateInit2_(
                &mut *strm,
                i32::from(p.level),
                z::Z_DEFLATED,
                i32::from(p.window_bits),
                i32::from(p.mem_level),
                i32::from(p.strategy),
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        (r == z::Z_OK).then_some(Deflater { strm })
    }

    /// Compresses `input` (the last piece with `finish`), handing each piece of output to
    /// `sink`; stops early when `sink` returns false. Returns whether it went to the end.
    fn feed(
        &mut self,
        input: &[u8],
        finish: bool,
        out: &mut [u8],
        sink: &mut impl FnMut(&[u8]) -> bool,
    ) -> bool {
        self.strm.next_in = input.as_ptr().cast_mut();
        self.strm.avail_in = input.len() as u32;
        let flush = if finish { z::Z_FINISH } else { z::Z_NO_FLUSH };
        loop {
            self.strm.next_out = out.as_mut_ptr();
            self.strm.avail_out = out.len() as u32;
            // SAFETY: next_in/avail_in and next_out/avail_out describe live buffers that
            // outlive the call; zlib reads and writes only within them.
            let r = unsafe { z::deflate(&mut *self.strm, flush) };
            let n = out.len() - self.strm.avail_out as usize;
            if r == z::Z_STREAM_ERROR || !sink(&out[..n]) {
                return false;
            }
            if r == z::Z_STREAM_END || (self.strm.avail_out != 0 && self.strm.avail_in == 0) {
                return true;
            }
        }
    }
}

impl Drop for Deflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by deflateInit2 and is ended once.
        unsafe {
            z::deflateEnd(&mut *self.strm);
        }
    }
}

/// Runs zlib over `plain` with `p`, giving the output piece by piece to `sink` (which may
/// stop it). Returns whether the stream ran to its end.
fn run(plain: &[u8], p: Params, mut sink: impl FnMut(&[u8]) -> bool) -> bool {
    let Some(mut d) = Deflater::new(p) else {
        return false;
    };
    let mut out = vec![0u8; 1 << 16];
    let pieces: Vec<&[u8]> = if plain.is_empty() {
        vec![&[][..]]
    } else {
        plain.chunks(1 << 16).collect()
    };
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        if !d.feed(piece, i == last, &mut out, &mut sink) {
            return false;
        }
    }
    true
}

/// zlib's output for `plain` with `p` (header, deflate stream, Adler-32).
pub fn compress(plain: &[u8], p: Params) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    run(plain, p, |piece| {
        out.extend_from_slice(piece);
        true
    })
    .then_some(out)
}

/// The parameters with which zlib gives exactly `stream` for `plain`, if any: the levels
/// its header allows (FLEVEL), the four strategies and memory levels 8 and 9 (libpng's and
/// Pillow's), most common first.
pub fn find(plain: &[u8], stream: &[u8]) -> Option<Params> {
    let (&cmf, &flg) = (stream.first()?, stream.get(1)?);
    if cmf & 0x0F != 8 || flg & 0x20 != 0 {
        return None;
    }
    let window_bits = (cmf >> 4) + 8;
    let levels: &[u8] = match flg >> 6 {
        0 => &[1, 0],
        1 => &[5, 4, 3, 2],
        2 => &[6],
        _ => &[9, 7, 8],
    };
    for &level in levels {
        for strategy in [1u8, 0, 2, 3] {
            for mem_level in [8u8, 9] {
                let p = Params {
                    level,
                    mem_level,
                    strategy,
                    window_bits,
                };
                let mut at = 0usize;
                let whole = run(plain, p, |piece| {
                    let same = stream.get(at..at + piece.len()) == Some(piece);
                    at += piece.len();
                    same
                });
                if whole && at == stream.len() {
                    return Some(p);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parameters_of_a_zlib_stream_are_found_and_reproduce_it() {
        let plain: Vec<u8> = (0..200_000u32)
            .map(|i| ((i * 7919) % 251) as u8 ^ (i / 1000) as u8)
            .collect();
        for want in [
            Params {
                level: 6,
                mem_level: 8,
                strategy: 1,
                window_bits: 15,
            },
            Params {
                level: 9,
                mem_level: 9,
                strategy: 0,
                window_bits: 15,
            },
            Params {
                level: 3,
                mem_level: 8,
                strategy: 0,
                window_bits: 15,
            },
        ] {
            let stream = compress(&plain, want).unwrap();
            let found = find(&plain, &stream).unwrap();
            assert_eq!(compress(&plain, found).unwrap(), stream, "{want:?}");
        }
        // A stream zlib did not write (one byte changed) is not found.
        let mut stream = compress(
            &plain,
            Params {
                level: 6,
                mem_level: 8,
                strategy: 0,
                window_bits: 15,
            },
        )
        .unwrap();
        let n = stream.len();
        stream[n / 2] ^= 0x10;
        assert_eq!(find(&plain, &stream), None);
    }
}

#!/usr/bin/env python3
"""Writes testdata/hostile/: DICOM files that crashed or exhausted tracemark (issue 11).

Each is derived from a testdata file by a documented edit; the tests and the fuzz benchmark
read them. Run from the repository root: python3 scripts/make_hostile.py
"""
import struct
from pathlib import Path

T = Path("testdata")
OUT = T / "hostile"
OUT.mkdir(exist_ok=True)
ct = (T / "CT_small.dcm").read_bytes()
rle = (T / "CT_small_rle.dcm").read_bytes()
pixel = ct.find(b"\xe0\x7f\x10\x00")  # Pixel Data (7FE0,0010), Explicit VR LE

# Finding 1: 10,000 nested undefined-length sequences before the Pixel Data, never closed
# (dicom-rs reads the end of the file as the end of every open item).
level = struct.pack("<HH", 0x0009, 0x1010) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF)
level += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
(OUT / "nested_sequences.dcm").write_bytes(ct[:pixel] + level * 10000)

# Finding 3: an OB element declaring 0xFFFFFFF0 bytes in a 39 KB file.
big = struct.pack("<HH", 0x0009, 0x1020) + b"OB\0\0" + struct.pack("<I", 0xFFFFFFF0)
(OUT / "huge_length.dcm").write_bytes(ct[:pixel] + big + ct[pixel:])

# Finding 2: the cut (head -c 20000) ...
(OUT / "rle_truncated.dcm").write_bytes(rle[:20000])
# ... and a cut inside the RLE segments with the fragment's length made to fit, so that
# only the RLE decoder sees it (it panicked: index out of bounds).
p = rle.find(b"\xe0\x7f\x10\x00") + 12
_, offset_table = struct.unpack_from("<II", rle, p)
frag = p + 8 + offset_table
cut = bytearray(rle[: frag + 8 + 9000])
struct.pack_into("<I", cut, frag + 4, 9000)
cut += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
(OUT / "rle_short_segment.dcm").write_bytes(bytes(cut))
# ... and a segment offset pointing before the header's end (panicked too).
bad = bytearray(rle)
struct.pack_into("<I", bad, frag + 8 + 8, 64)
(OUT / "rle_bad_offset.dcm").write_bytes(bytes(bad))
for f in sorted(OUT.glob("*.dcm")):
    print(f, f.stat().st_size)

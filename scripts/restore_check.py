#!/usr/bin/env python3
"""Independent check of `tracemark-embed restore` on DICOM with pydicom.

    python3 scripts/restore_check.py ORIGINAL.dcm RESTORED.dcm [ORIGINAL RESTORED ...]

For each pair: an uncompressed original must come back byte for byte; a compressed one
(written uncompressed when stamped) must come back with every pixel value pydicom decodes
from the original, in Explicit VR Little Endian, and with every data element of the original
but the transfer syntax's own and the pixel description of decoded colour (JPEG's YBR
becomes RGB). JPEG Baseline is lossy: decoders differ (chroma upsampling), so for it the
restored pixels are compared with pydicom's decoding within a tolerance and reported.
Exit status 1 on any failure.
"""
import sys

import numpy as np
import pydicom
from pydicom.tag import Tag

NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}
PIXEL_DESCRIPTION = {Tag(0x0028, 0x0004), Tag(0x0028, 0x0006), Tag(0x7FE0, 0x0010)}


def check(orig_path, back_path):
    orig_bytes = open(orig_path, "rb").read()
    back_bytes = open(back_path, "rb").read()
    a = pydicom.dcmread(orig_path)
    ts = str(a.file_meta.TransferSyntaxUID)
    if ts in NATIVE:
        if orig_bytes != back_bytes:
            return "an uncompressed original did not come back byte for byte"
        return None
    b = pydicom.dcmread(back_path)
    if str(b.file_meta.TransferSyntaxUID) != "1.2.840.10008.1.2.1":
        return f"restored in {b.file_meta.TransferSyntaxUID}, not Explicit VR Little Endian"
    for e in a:
        if e.tag in PIXEL_DESCRIPTION:
            continue
        if e.tag not in b or b[e.tag].value != e.value:
            return f"element {e.tag} differs or is missing"
    for e in b:
        if e.tag not in a and e.tag not in PIXEL_DESCRIPTION:
            return f"element {e.tag} was added"
    pa, pb = a.pixel_array, b.pixel_array
    if pa.shape != pb.shape:
        return f"pixel shape {pb.shape}, original {pa.shape}"
    if ts in LOSSY:
        d = np.abs(pa.astype(int) - pb.astype(int))
        print(f"  {orig_path}: lossy JPEG, restored against pydicom's decoding: "
              f"mean |difference| {d.mean():.3f}, max {d.max()} (decoders differ)")
        return None if d.mean() < 2.0 else "lossy JPEG restored far from pydicom's decoding"
    if not np.array_equal(pa, pb):
        return "pixel values differ from pydicom's decoding of the original"
    return None


def main(args):
    if len(args) % 2 or not args:
        sys.exit(__doc__)
    failed = 0
    for orig, back in zip(args[::2], args[1::2]):
        why = check(orig, back)
        print(f"{'ok  ' if why is None else 'FAIL'} {orig} -> {back}{'' if why is None else ': ' + why}")
        failed += why is not None
    print(f"restore check: {len(args) // 2 - failed} of {len(args) // 2} restored as promised")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1:])

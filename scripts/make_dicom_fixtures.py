#!/usr/bin/env python3
"""Makes the derived DICOM test files in testdata/ from the NEMA/pydicom originals there.

Run once (the outputs are committed); needs pydicom 3, numpy, pylibjpeg, pylibjpeg-openjpeg,
pylibjpeg-rle and Pillow:

    pip install pydicom==3.0.2 numpy pylibjpeg pylibjpeg-openjpeg pylibjpeg-rle pillow
    python3 scripts/make_dicom_fixtures.py

- CT_small_rle.dcm, CT_small_j2k.dcm, CT_small_deflate.dcm: CT_small.dcm as RLE Lossless,
  JPEG 2000 Lossless and Deflated Explicit VR Little Endian (same pixels).
- US1_jpeg.dcm: US1_UNCR.dcm's first 480 rows as JPEG Baseline, YBR_FULL_422, quality 90.
- MR2_3frames.dcm: three 256x256 crops of MR2_UNCR.dcm as one 3-frame image.
- US1_planar.dcm: US1_UNCR.dcm with Planar Configuration 1 (RRR..GGG..BBB).
"""
import io
import pathlib

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

T = pathlib.Path(__file__).resolve().parent.parent / "testdata"


def fresh_uid(ds):
    uid = generate_uid(prefix="2.25.")
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid


def main():
    ct = pydicom.dcmread(T / "CT_small.dcm")
    for name, ts in [("CT_small_rle.dcm", RLELossless), ("CT_small_j2k.dcm", JPEG2000Lossless)]:
        ds = pydicom.dcmread(T / "CT_small.dcm")
        ds.compress(ts)
        fresh_uid(ds)
        ds.save_as(T / name, enforce_file_format=True)
    ds = pydicom.dcmread(T / "CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    fresh_uid(ds)
    ds.save_as(T / "CT_small_deflate.dcm", enforce_file_format=True)

    us = pydicom.dcmread(T / "US1_UNCR.dcm")
    rgb = us.pixel_array
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=90, subsampling=2)
    us.PixelData = encapsulate([buf.getvalue()])
    us.PhotometricInterpretation = "YBR_FULL_422"
    us.LossyImageCompression = "01"
    us.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    us["PixelData"].VR = "OB"
    fresh_uid(us)
    us.save_as(T / "US1_jpeg.dcm", enforce_file_format=True)

    mr = pydicom.dcmread(T / "MR2_UNCR.dcm")
    a = mr.pixel_array
    frames = np.stack([a[256:512, 256:512], a[384:640, 512:768], a[512:768, 128:384]])
    mr.NumberOfFrames = 3
    mr.Rows, mr.Columns = 256, 256
    mr.PixelData = frames.astype(a.dtype).tobytes()
    mr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    fresh_uid(mr)
    mr.save_as(T / "MR2_3frames.dcm", enforce_file_format=True)
    us = pydicom.dcmread(T / "US1_UNCR.dcm")
    us.PlanarConfiguration = 1
    us.PixelData = np.ascontiguousarray(us.pixel_array.transpose(2, 0, 1)).tobytes()
    fresh_uid(us)
    us.save_as(T / "US1_planar.dcm", enforce_file_format=True)
    for f in sorted(T.glob("*_*.dcm")):
        d = pydicom.dcmread(f)
        print(f.name, d.file_meta.TransferSyntaxUID.name, d.Rows, d.Columns, getattr(d, "NumberOfFrames", 1), f.stat().st_size)


if __name__ == "__main__":
    main()

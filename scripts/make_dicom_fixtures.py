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
- CT_enhanced.dcm: 693_UNCR.dcm as a two-frame Enhanced CT Image (the second frame the first
  mirrored), with no top-level window or rescale: window 40/100 in the Shared Functional
  Groups' Frame VOI LUT Sequence, rescale -1024/1 in its Pixel Value Transformation Sequence
  (what current CT scanners write; issue 12).
- MR_enhanced_perframe.dcm: MR2_3frames.dcm as an Enhanced MR Image whose three frames have
  their own windows only in the Per-Frame Functional Groups (1000/2000, 600/800, 1500/3000).
- CT_two_windows.dcm: 693_UNCR.dcm listing two windows at the top level (40/100 and
  300/1500): the mark must hold its PSNR target in both.
- CT_voi_lut.dcm: 693_UNCR.dcm with its window replaced by a VOI LUT Sequence: a gamma 0.6
  curve over -200..400 HU, 12-bit entries (non-linear: the mark's amplitude must follow the
  LUT's local slope).
- US1_palette.dcm: US1_UNCR.dcm quantised to 256 colours (Pillow, median cut) as a PALETTE
  COLOR image: 8-bit indices, 16-bit table entries (8-bit colours times 257).
- CT_small_implicit.dcm, CT_small_bigendian.dcm: CT_small.dcm in Implicit VR Little Endian
  and in (retired) Explicit VR Big Endian.
- CT_small_jpegll.dcm: CT_small.dcm as JPEG Lossless, Process 14 SV1 (1.2.840.10008.1.2.4.70),
  which pydicom cannot write: made by DCMTK's dcmcjpeg (Debian package dcmtk 3.6.7) with a
  new SOP Instance UID, `dcmcjpeg +e1 +ua CT_small.dcm CT_small_jpegll.dcm` (jpeg_lossless()).
"""
import io
import pathlib

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
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
    enhanced_ct()
    enhanced_mr()
    ct = pydicom.dcmread(T / "693_UNCR.dcm")
    ct.WindowCenter = [40, 300]
    ct.WindowWidth = [100, 1500]
    ct.WindowCenterWidthExplanation = ["SOFT TISSUE", "BONE"]
    fresh_uid(ct)
    ct.save_as(T / "CT_two_windows.dcm", enforce_file_format=True)
    other_encodings()
    voi_lut()
    palette()
    for f in sorted(T.glob("*_*.dcm")):
        d = pydicom.dcmread(f)
        print(f.name, d.file_meta.TransferSyntaxUID.name, d.Rows, d.Columns, getattr(d, "NumberOfFrames", 1), f.stat().st_size)


def item(**kw):
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def enhanced_ct():
    ct = pydicom.dcmread(T / "693_UNCR.dcm")
    a = ct.pixel_array
    frames = np.stack([a, a[:, ::-1]])
    ct.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    ct.file_meta.MediaStorageSOPClassUID = ct.SOPClassUID
    ct.NumberOfFrames = 2
    ct.PixelData = frames.astype(a.dtype).tobytes()
    for k in ["WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept", "RescaleType"]:
        if k in ct:
            delattr(ct, k)
    shared = item(
        FrameVOILUTSequence=Sequence([item(WindowCenter=40, WindowWidth=100)]),
        PixelValueTransformationSequence=Sequence(
            [item(RescaleIntercept=-1024, RescaleSlope=1, RescaleType="HU")]
        ),
    )
    ct.SharedFunctionalGroupsSequence = Sequence([shared])
    ct.PerFrameFunctionalGroupsSequence = Sequence(
        [
            item(FrameContentSequence=Sequence([item(InStackPositionNumber=k + 1)]))
            for k in range(2)
        ]
    )
    ct.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    fresh_uid(ct)
    ct.save_as(T / "CT_enhanced.dcm", enforce_file_format=True)


def enhanced_mr():
    mr = pydicom.dcmread(T / "MR2_3frames.dcm")
    mr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    mr.file_meta.MediaStorageSOPClassUID = mr.SOPClassUID
    slope = float(mr.RescaleSlope)
    for k in ["WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"]:
        if k in mr:
            delattr(mr, k)
    mr.SharedFunctionalGroupsSequence = Sequence(
        [
            item(
                PixelValueTransformationSequence=Sequence(
                    [item(RescaleIntercept=0, RescaleSlope=slope, RescaleType="US")]
                )
            )
        ]
    )
    windows = [(1000, 2000), (600, 800), (1500, 3000)]
    mr.PerFrameFunctionalGroupsSequence = Sequence(
        [
            item(
                FrameContentSequence=Sequence([item(InStackPositionNumber=k + 1)]),
                FrameVOILUTSequence=Sequence([item(WindowCenter=c, WindowWidth=w)]),
            )
            for k, (c, w) in enumerate(windows)
        ]
    )
    fresh_uid(mr)
    mr.save_as(T / "MR_enhanced_perframe.dcm", enforce_file_format=True)


def other_encodings():
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

    ds = pydicom.dcmread(T / "CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    fresh_uid(ds)
    ds.save_as(T / "CT_small_implicit.dcm", enforce_file_format=True)
    ds = pydicom.dcmread(T / "CT_small.dcm")
    a = ds.pixel_array
    ds.PixelData = a.astype(a.dtype.newbyteorder(">")).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    fresh_uid(ds)
    dcmwrite(T / "CT_small_bigendian.dcm", ds, little_endian=False, implicit_vr=False,
             force_encoding=True)


def voi_lut():
    from pydicom.dataelem import DataElement

    ct = pydicom.dcmread(T / "693_UNCR.dcm")
    for k in ["WindowCenter", "WindowWidth"]:
        delattr(ct, k)
    n, first, bits = 600, -200, 12
    data = np.round(4095 * (np.arange(n) / (n - 1)) ** 0.6).astype(np.uint16)
    lut = Dataset()
    lut.add(DataElement(0x00283002, "SS", [n, first, bits]))
    lut.add(DataElement(0x00283006, "US", data.tolist()))
    lut.LUTExplanation = "GAMMA 0.6 -200..400 HU"
    ct.VOILUTSequence = Sequence([lut])
    fresh_uid(ct)
    ct.save_as(T / "CT_voi_lut.dcm", enforce_file_format=True)


def palette():
    from pydicom.dataelem import DataElement

    us = pydicom.dcmread(T / "US1_UNCR.dcm")
    q = Image.fromarray(us.pixel_array, "RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    table = np.array(q.getpalette()[:768], dtype=np.uint16).reshape(-1, 3)
    us.PhotometricInterpretation = "PALETTE COLOR"
    us.SamplesPerPixel = 1
    del us.PlanarConfiguration
    us.BitsAllocated, us.BitsStored, us.HighBit, us.PixelRepresentation = 8, 8, 7, 0
    for c, (d, t) in enumerate([(0x00281101, 0x00281201), (0x00281102, 0x00281202),
                                (0x00281103, 0x00281203)]):
        us.add(DataElement(d, "US", [len(table), 0, 16]))
        us.add(DataElement(t, "OW", (table[:, c] * 257).astype("<u2").tobytes()))
    us.PixelData = np.asarray(q).astype(np.uint8).tobytes()
    fresh_uid(us)
    us.save_as(T / "US1_palette.dcm", enforce_file_format=True)


def jpeg_lossless():
    import subprocess

    subprocess.run(["dcmcjpeg", "+e1", "+ua", str(T / "CT_small.dcm"),
                    str(T / "CT_small_jpegll.dcm")], check=True)
    a = pydicom.dcmread(T / "CT_small.dcm").pixel_array
    b = pydicom.dcmread(T / "CT_small_jpegll.dcm").pixel_array
    assert np.array_equal(a, b), "JPEG lossless keeps every pixel"


if __name__ == "__main__":
    main()

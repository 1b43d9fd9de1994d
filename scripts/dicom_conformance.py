#!/usr/bin/env python3
"""Independent check of tracemark's DICOM outputs with pydicom (and dciodvfy when installed).

    python3 scripts/dicom_conformance.py INPUT.dcm OUTPUT.dcm [INPUT OUTPUT ...]

For each pair: pydicom reads the output; every data element of the input other than the
ones tracemark changes by design is present in the output with the same VR and value, and
the output has no other new element; the SOP Instance UID agrees with the file meta and
differs from the input's; Image Type value 1 is DERIVED; the Source Image Sequence names
the input; the pixel array has the input's shape and dtype, its values fit Bits Stored and
Pixel Representation, and some of them changed. With dciodvfy (Debian's dicom3tools), the
output has no error or warning the input did not have (no new error, for compressed inputs,
which dciodvfy may not read in full). Exit status 1 on any failure.
"""
import shutil
import subprocess
import sys

import numpy as np
import pydicom

CHANGED = {
    (0x7FE0, 0x0010), (0x0008, 0x0018), (0x0008, 0x0008), (0x0008, 0x2111),
    (0x0008, 0x2112), (0x0018, 0xA001), (0x0008, 0x0012), (0x0008, 0x0013),
    (0xFFFA, 0xFFFA), (0x4FFE, 0x0001),
    # Enhanced multi-frame objects: functional groups (derivation, Frame Type), the source's
    # evidence and the private coding scheme of the derivation code.
    (0x5200, 0x9229), (0x5200, 0x9230), (0x0008, 0x9154), (0x0008, 0x0110),
}
# dciodvfy findings that contradict the standard, each with the text it contradicts.
KNOWN_DCIODVFY = {
    # PS3.3 C.8.13.4 (MR Pulse Sequence Module): MR Acquisition Type is "Required if Image
    # Type (0008,0008) Value 1 is ORIGINAL or MIXED. May be present otherwise."; dciodvfy
    # reports it as forbidden in a DERIVED Enhanced MR image.
    "Error - Attribute present when condition unsatisfied (which may not be present otherwise) "
    "Type 1C Conditional Element=<MRAcquisitionType> Module=<MRPulseSequence>",
    # PS3.3 8.2.2: coding scheme designators beginning with "99" are private; DICOM has no
    # code for a watermark, and the Derivation Code Sequence is Type 1 in the Derivation
    # Image Macro, so enhanced outputs carry (WM1, 99TRACEMARK), identified in the Coding
    # Scheme Identification Sequence. dciodvfy's list of defined terms cannot hold private
    # schemes, so it warns about any.
    "Warning - Unrecognized defined term <99TRACEMARK> for value 1 of attribute "
    "<Coding Scheme Designator>",
}
CHANGED_IF_DECODED = {(0x0028, 0x0004), (0x0028, 0x0006)}
# A PALETTE COLOR input is written as the RGB image it displays as, without its tables.
CHANGED_IF_PALETTE = {
    (0x0028, e) for e in (0x0002, 0x0100, 0x0101, 0x0102, 0x0103, 0x1101, 0x1102, 0x1103,
                          0x1201, 0x1202, 0x1203, 0x1199, 0x1111, 0x1112, 0x1113, 0x1211,
                          0x1212, 0x1213, 0x1214, 0x0004, 0x0006)
}
CHANGED_GROUPS = {g for g, _ in CHANGED | CHANGED_IF_DECODED | CHANGED_IF_PALETTE}
NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def allowed(tag, decoded, palette=False):
    key = (tag.group, tag.element)
    if key in CHANGED or (decoded and key in CHANGED_IF_DECODED):
        return True
    if palette and key in CHANGED_IF_PALETTE:
        return True
    return tag.element == 0 and tag.group in CHANGED_GROUPS


def dciodvfy(path):
    out = subprocess.run(["dciodvfy", path], capture_output=True, text=True)
    return {l.strip() for l in (out.stdout + out.stderr).splitlines() if l.startswith(("Error", "Warning"))}


def check(inp, outp):
    problems = []
    a = pydicom.dcmread(inp)
    b = pydicom.dcmread(outp)
    decoded = str(a.file_meta.TransferSyntaxUID) not in NATIVE
    palette = a.PhotometricInterpretation == "PALETTE COLOR"
    for elem in a:
        if allowed(elem.tag, decoded, palette):
            continue
        if elem.tag not in b:
            problems.append(f"{elem.tag} {elem.keyword} missing")
        elif b[elem.tag].VR != elem.VR or b[elem.tag].value != elem.value:
            problems.append(f"{elem.tag} {elem.keyword} changed")
    for elem in b:
        if elem.tag not in a and not allowed(elem.tag, decoded, palette):
            problems.append(f"{elem.tag} {elem.keyword} added")
    ts = str(b.file_meta.TransferSyntaxUID)
    if ts != (("1.2.840.10008.1.2.1") if decoded else str(a.file_meta.TransferSyntaxUID)):
        problems.append(f"transfer syntax {ts}")
    if b.SOPInstanceUID != b.file_meta.MediaStorageSOPInstanceUID:
        problems.append("SOP Instance UID differs from the file meta")
    if b.SOPInstanceUID == a.SOPInstanceUID:
        problems.append("SOP Instance UID not renewed")
    if b.ImageType[0] != "DERIVED":
        problems.append(f"Image Type {b.ImageType}")
    if "SharedFunctionalGroupsSequence" in b:
        # Enhanced multi-frame: the derivation is in the shared functional groups (PS3.3
        # C.7.6.16.2.6), and every Frame Type agrees with Image Type.
        derivation = b.SharedFunctionalGroupsSequence[0].DerivationImageSequence[-1]
        src = derivation.SourceImageSequence[0]
        description = derivation.DerivationDescription
        for group in list(b.SharedFunctionalGroupsSequence) + list(
            b.get("PerFrameFunctionalGroupsSequence", [])
        ):
            for elem in group:
                if elem.VR == "SQ" and len(elem.value) and "FrameType" in elem.value[0]:
                    if elem.value[0].FrameType[0] != "DERIVED":
                        problems.append(f"{elem.keyword}: Frame Type {elem.value[0].FrameType}")
    else:
        src = b.SourceImageSequence[0]
        description = b.DerivationDescription
    if src.ReferencedSOPInstanceUID != a.SOPInstanceUID:
        problems.append("Source Image Sequence does not name the input")
    if "tracemark" not in description:
        problems.append("no Derivation Description")
    pa, pb = a.pixel_array, b.pixel_array
    if palette:
        # Compared as the colours the input displays: its tables applied, 8-bit colours.
        from pydicom.pixels import apply_color_lut

        pa = apply_color_lut(pa, a)
        if int(b.BitsAllocated) == 8 and pa.dtype != np.uint8:
            pa = (pa // 257).astype(np.uint8)
        if b.PhotometricInterpretation != "RGB" or int(b.SamplesPerPixel) != 3:
            problems.append("a palette input is not written as RGB")
        elif pa.shape == pb.shape:
            luma = np.array([0.299, 0.587, 0.114])
            scale = 255.0 / ((1 << int(b.BitsStored)) - 1)
            d = ((pb.astype(float) - pa.astype(float)) * scale * luma).sum(-1)
            psnr = 10 * np.log10(255.0**2 / max((d**2).mean(), 1e-12))
            if psnr < 41.5:
                problems.append(f"PSNR {psnr:.2f} dB against the palette's colours")
    if pa.shape != pb.shape or pa.dtype != pb.dtype:
        problems.append(f"pixels {pa.shape} {pa.dtype} -> {pb.shape} {pb.dtype}")
    else:
        bits = int(b.BitsStored)
        lo, hi = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if b.PixelRepresentation == 1
                  else (0, (1 << bits) - 1))
        if pb.min() < lo or pb.max() > hi:
            problems.append(f"values {pb.min()}..{pb.max()} outside {lo}..{hi}")
        changed = np.count_nonzero(pa.astype(np.int64) != pb.astype(np.int64))
        if changed == 0:
            problems.append("no pixel changed")
    extra = set()
    if shutil.which("dciodvfy"):
        extra = dciodvfy(outp) - dciodvfy(inp) - KNOWN_DCIODVFY
        if decoded:
            # dciodvfy may not read a compressed or deflated input in full: hold the output
            # to no new errors only.
            extra = {m for m in extra if m.startswith("Error")}
        problems += [f"dciodvfy: {m}" for m in sorted(extra)]
    verdict = "ok" if not problems else "FAIL"
    print(f"{verdict}: {inp} -> {outp}: {len(b)} elements, pixels {pb.shape} {pb.dtype}"
          + ("" if shutil.which("dciodvfy") else " (dciodvfy not installed)"))
    for p in problems:
        print(f"  {p}")
    return not problems


def main(args):
    if len(args) < 2 or len(args) % 2:
        print(__doc__)
        return 2
    ok = all([check(args[i], args[i + 1]) for i in range(0, len(args), 2)])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

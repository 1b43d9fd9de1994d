#!/usr/bin/env python3
"""Times invisible-watermark's dwtDct (the fastest open-source anchor) on given images, one
thread: embed of a 64-bit watermark, and decode of the marked copy. Used by
`tracemark-bench versus`, which runs it between its own rounds so that both are measured in
one run on the same images.

    pip install --no-deps invisible-watermark opencv-python-headless PyWavelets numpy
    python3 scripts/dwtdct_time.py ROUNDS IMAGE...

Prints one JSON object per image: {"path", "embed_ms": [...], "decode_ms": [...]}.
imwatermark imports torch and onnxruntime at package level for its RivaGAN method only;
dwtDct uses neither, so empty stand-ins are registered when they are not installed.
"""
import importlib.util
import json
import os
import sys
import time
import types

os.environ.setdefault("OMP_NUM_THREADS", "1")
for name in ("torch", "onnxruntime", "onnx"):
    if importlib.util.find_spec(name) is None:
        sys.modules[name] = types.ModuleType(name)

import cv2  # noqa: E402

from imwatermark import WatermarkDecoder, WatermarkEncoder  # noqa: E402

cv2.setNumThreads(1)


def main():
    rounds = int(sys.argv[1])
    for path in sys.argv[2:]:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            sys.exit(f"dwtdct_time: {path}: cannot read")
        enc = WatermarkEncoder()
        enc.set_watermark("bytes", b"tracemrk")
        dec = WatermarkDecoder("bytes", 64)
        embed, decode = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            marked = enc.encode(img, "dwtDct")
            embed.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            dec.decode(marked, "dwtDct")
            decode.append((time.perf_counter() - t) * 1e3)
        print(json.dumps({"path": path, "embed_ms": embed, "decode_ms": decode}), flush=True)


if __name__ == "__main__":
    main()

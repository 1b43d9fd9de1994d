"""Python-API overhead per image against the Rust library, in one run.

For each test photo (as a numpy array), the median time of ``tracemark.stamp`` and of
``Examiner.examine`` called from Python, against the median time of the same library calls
timed inside Rust (``_native._library_times``: no array or record conversion, no argument
parsing, no GIL hand-over). Prints a Markdown table; the overhead is the ratio minus one.

    python3 python/bench/overhead.py [--repeats 15]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import tracemark
from tracemark import _native

TESTDATA = Path(__file__).resolve().parents[2] / "testdata"


def median_ms(f, repeats):
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        key = tracemark.Key.generate(Path(d) / "bench.key")
        ex = tracemark.Examiner(key)
        print("| image | stamp: Python / Rust (ms) | overhead | examine: Python / Rust (ms) | overhead |")
        print("|---|---|---|---|---|")
        for name, crop in [("camera.png", None), ("astronaut.png", None), ("coffee.png", None),
                           ("retina.jpg", None), ("astronaut.png", 128)]:
            img = np.asarray(Image.open(TESTDATA / name))
            if crop:
                img = np.ascontiguousarray(img[:crop, :crop])
            # Alternate the two sides three times; keep the medians of each.
            py_s, py_e, rs_s, rs_e = [], [], [], []
            for _ in range(3):
                py_s.append(median_ms(
                    lambda: tracemark.stamp(img, key, payload="0123456789abcdef"), args.repeats))
                py_e.append(median_ms(lambda: ex.examine(img), args.repeats))
                s, e = _native._library_times(img, key, ex, args.repeats)
                rs_s.append(s)
                rs_e.append(e)
            ps, pe = statistics.median(py_s), statistics.median(py_e)
            rs, re_ = statistics.median(rs_s), statistics.median(rs_e)
            label = f"{name} {img.shape[1]}x{img.shape[0]}" + ("" if img.ndim == 2 else f"x{img.shape[2]}")
            print(f"| {label} | {ps:.2f} / {rs:.2f} | {100 * (ps / rs - 1):+.1f} % "
                  f"| {pe:.2f} / {re_:.2f} | {100 * (pe / re_ - 1):+.1f} % |")


if __name__ == "__main__":
    main()

"""Dask scan throughput on this machine: N PNG files (half stamped), examined by
``tracemark.scan`` without a cluster (all cores of this process), and on a LocalCluster of
1 and 2 worker processes (one thread each). Prints files/s per setting (median of runs).

    python3 python/bench/scan.py [--files 200] [--runs 3]
"""

import argparse
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import tracemark

TESTDATA = Path(__file__).resolve().parents[2] / "testdata"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--side", type=int, default=384)
    args = ap.parse_args()
    from dask.distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        key_path = d / "bench.key"
        key = tracemark.Key.generate(key_path)
        photos = [np.asarray(Image.open(TESTDATA / n)) for n in ("camera.png", "astronaut.png", "coffee.png")]
        rng = np.random.default_rng(1)
        paths, payloads = [], []
        for i in range(args.files):
            img = photos[i % 3]
            y = rng.integers(0, img.shape[0] - args.side + 1)
            x = rng.integers(0, img.shape[1] - args.side + 1)
            img = np.ascontiguousarray(img[y : y + args.side, x : x + args.side])
            p = None
            if i % 2 == 0:
                p = secrets.token_hex(8)
                img = tracemark.stamp(img, key, payload=p)
            path = d / f"f{i:05}.png"
            Image.fromarray(img).save(path)
            paths.append(str(path))
            payloads.append(p)

        def check(results):
            found = sum(r.get("payload") == p for r, p in zip(results, payloads) if p)
            false = sum(r.get("verdict") == "marked" for r, p in zip(results, payloads) if not p)
            return found, false

        def timed(f):
            rates, last = [], None
            for _ in range(args.runs):
                t = time.perf_counter()
                last = f()
                rates.append(len(paths) / (time.perf_counter() - t))
            return statistics.median(rates), check(last)

        rows = [("no cluster (one process, all cores)", *timed(lambda: tracemark.scan(paths, key_path)))]
        for workers in (1, 2):
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address=None,
                              env={"RAYON_NUM_THREADS": "1"}) as cluster, Client(cluster) as client:
                tracemark.scan(paths[:8], key_path, client=client)  # workers load the key
                rows.append((f"Dask LocalCluster, {workers} worker process(es) x 1 thread",
                             *timed(lambda: tracemark.scan(paths, key_path, client=client))))
        print(f"{args.files} PNG files of {args.side} px ({args.files // 2} stamped), {os.cpu_count()} cores, median of {args.runs} runs")
        print("| setting | files/s | stamped found | false claims |")
        print("|---|---|---|---|")
        for name, rate, (found, false) in rows:
            print(f"| {name} | {rate:.1f} | {found}/{(args.files + 1) // 2} | {false} |")


if __name__ == "__main__":
    main()

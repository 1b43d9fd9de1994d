"""Stamp 20 arrays, write them and 20 unstamped ones as PNG, and scan the 40 files on a Dask
LocalCluster with 2 worker processes: every stamped file must be found with its payload and
no unstamped one claimed. Exits 1 otherwise.

    pip install ./python "dask[distributed]" pillow
    python3 python/examples/dask_scan.py
"""

import secrets
import sys
import tempfile
from pathlib import Path

import numpy as np
from dask.distributed import Client, LocalCluster
from PIL import Image

import tracemark

TESTDATA = Path(__file__).resolve().parents[2] / "testdata"


def main():
    photos = [np.asarray(Image.open(TESTDATA / n)) for n in ("camera.png", "astronaut.png", "coffee.png")]
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        key_path = d / "org.key"
        key = tracemark.Key.generate(key_path)
        paths, payloads = [], []
        for i in range(40):
            img = photos[i % 3]
            y = rng.integers(0, img.shape[0] - 320 + 1)
            x = rng.integers(0, img.shape[1] - 320 + 1)
            img = np.ascontiguousarray(img[y : y + 320, x : x + 320])
            payload = secrets.token_hex(8) if i < 20 else None
            if payload:
                img = tracemark.stamp(img, key, payload=payload)
            path = d / f"{'stamped' if payload else 'plain'}-{i:02}.png"
            Image.fromarray(img).save(path)
            paths.append(path)
            payloads.append(payload)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            results = tracemark.scan(paths, key_path, client=client)
        found = sum(r.get("payload") == p for r, p in zip(results, payloads) if p)
        claims = sum(r.get("verdict") == "marked" for r, p in zip(results, payloads) if not p)
        print(f"stamped files found with their payload: {found}/20; claims on unstamped files: {claims}/20")
        return 0 if (found, claims) == (20, 0) else 1


if __name__ == "__main__":
    sys.exit(main())

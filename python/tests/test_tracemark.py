"""The Python package against the real library: arrays stamped and read back, files scanned
locally and on a Dask LocalCluster with two worker processes, errors as the CLI words them,
the key kept out of pickles, the GIL released while the library works.

Run by .ci/run after ``pip install ./python``: ``python3 -m pytest python/tests``. The tests
that compare with the command-line tools use TRACEMARK_EMBED / TRACEMARK_DETECT (the binaries
``cargo test`` built); without them those tests skip, unless TRACEMARK_REQUIRE_BINARIES is set.
"""

import os
import pickle
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tracemark

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "testdata"
PHOTOS = ["camera.png", "coffee.png", "astronaut.png"]


def binary(name):
    path = os.environ.get("TRACEMARK_" + name.upper())
    if path:
        return str(Path(path).resolve())
    if os.environ.get("TRACEMARK_REQUIRE_BINARIES"):
        pytest.fail(f"TRACEMARK_{name.upper()} is not set")
    pytest.skip(f"TRACEMARK_{name.upper()} not set (path of the tracemark-{name} binary)")


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("key") / "org.key"
    tracemark.Key.generate(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(tracemark.TracemarkError):
        tracemark.Key.generate(path)  # never overwritten
    return path


@pytest.fixture(scope="module")
def key(key_file):
    return tracemark.Key.load(key_file)


def photo(name):
    return np.asarray(Image.open(TESTDATA / name))


def crops(n, side, seed):
    """``n`` distinct side x side crops of the test photos (RGB or grey, uint8)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = photo(PHOTOS[i % len(PHOTOS)])
        y = rng.integers(0, img.shape[0] - side + 1)
        x = rng.integers(0, img.shape[1] - side + 1)
        out.append(np.ascontiguousarray(img[y : y + side, x : x + side]))
    return out


def psnr(a, b, peak):
    err = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(peak**2 / err)


def payload():
    return secrets.token_hex(8)


@pytest.mark.parametrize("kind", ["rgb8", "grey8", "grey16", "rgba8"])
def test_stamp_keeps_shape_and_dtype_and_the_payload_reads_back(key, kind):
    img = photo("coffee.png")[:320, :320]
    if kind == "grey8":
        img = photo("camera.png")[:320, :320]
    elif kind == "grey16":
        img = photo("camera.png")[:320, :320].astype(np.uint16) * 257
    elif kind == "rgba8":
        img = np.dstack([img, np.full(img.shape[:2], 200, np.uint8)])
    p = payload()
    out, record = tracemark.stamp(img, key, payload=p, return_record=True)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert not np.array_equal(out, img)
    peak = 65535 if img.dtype == np.uint16 else 255
    assert psnr(out[..., :3] if kind == "rgba8" else out, img[..., :3] if kind == "rgba8" else img, peak) > 40
    if kind == "rgba8":
        assert np.array_equal(out[..., 3], img[..., 3]), "alpha is never changed"
    assert record["payload"] == p and record["format"] == "memory"
    assert record["self_check_z"] > 7
    found = tracemark.detect(out, key)
    assert found["verdict"] == "marked" and found["payload"] == p
    assert found["p_value"] < 1e-6
    # The original is not marked: no payload, no claim.
    clean = tracemark.detect(img, key)
    assert clean["verdict"] != "marked" and clean["payload"] is None


def test_a_wide_array_is_examined_in_the_window_a_file_would_be(key):
    wide = np.ascontiguousarray(np.tile(photo("camera.png")[:300], (1, 9))[:, :4500])
    p = payload()
    found = tracemark.detect(tracemark.stamp(wide, key, payload=p), key)
    assert found["payload"] == p
    assert found["examined_window"] == [202, 0, 4096, 300]


def test_psnr_target_is_met(key):
    img = photo("astronaut.png")[:384, :384]
    for target in (38.0, 45.0):
        out = tracemark.stamp(img, key, payload=payload(), psnr=target)
        luma = lambda a: a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        assert abs(psnr(luma(out), luma(img), 255) - target) < 1.0


def test_bad_input_raises_the_clis_one_line_message(key, tmp_path):
    with pytest.raises(tracemark.TracemarkError, match="uint8 or uint16"):
        tracemark.stamp(np.zeros((64, 64), np.float32), key)
    with pytest.raises(tracemark.TracemarkError, match="expected H x W"):
        tracemark.stamp(np.zeros((64, 64, 5), np.uint8), key)
    with pytest.raises(tracemark.TracemarkError, match="payload"):
        tracemark.stamp(photo("camera.png"), key, payload="xyz")
    with pytest.raises(tracemark.TracemarkError, match="too small"):
        tracemark.stamp(np.zeros((16, 16), np.uint8), key)
    with pytest.raises(tracemark.TracemarkError, match="no-such.key"):
        tracemark.Key.load(tmp_path / "no-such.key")
    # A stamped copy is not stamped again (as with the CLI).
    once = tracemark.stamp(photo("camera.png"), key, payload=payload())
    with pytest.raises(tracemark.TracemarkError, match="already"):
        tracemark.stamp(once, key, payload=payload())
    # Files: the message is the CLI's line, word for word.
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    missing = tmp_path / "missing.png"
    detect_bin = binary("detect")
    for path in (bad, missing):
        with pytest.raises(tracemark.TracemarkError) as err:
            tracemark.detect(str(path), key)
        cli = subprocess.run(
            [detect_bin, "--key", str(key.path), str(path)], capture_output=True, text=True
        )
        assert cli.returncode == 2
        line = cli.stderr.strip().splitlines()[0]
        assert line == "tracemark-detect: error: " + str(err.value), (line, str(err.value))


def test_the_key_is_never_pickled_or_printed(key, key_file):
    raw = key_file.read_bytes()
    assert raw.hex() not in repr(key) and key.key_id in repr(key)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(key)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(tracemark.Examiner(key))


def test_the_gil_is_released_while_files_are_examined(key, tmp_path):
    paths = []
    for i, img in enumerate(crops(6, 384, seed=3)):
        p = tmp_path / f"f{i}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
    ex = tracemark.Examiner(key)
    ticks = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks[0] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # a thread holding the GIL hands it over within 0.1 ms
    t = threading.Thread(target=count)
    try:
        t.start()
        # The counter's rate while the main thread sleeps (the GIL released).
        b, t0 = ticks[0], time.perf_counter()
        time.sleep(0.2)
        rate = (ticks[0] - b) / (time.perf_counter() - t0)
        b, t0 = ticks[0], time.perf_counter()
        ex.examine_many(paths * 4)
        during, took = ticks[0] - b, time.perf_counter() - t0
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    # Held through the call, the GIL would let the counter run only at its two ends (about
    # 0.2 ms at this switch interval); released, it runs beside the library's threads.
    assert during > rate * took / 10, (during, rate, took)


def test_scan_on_a_dask_cluster_with_two_worker_processes(key, key_file, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    stamped, plain, expected = [], [], []
    for i, img in enumerate(crops(20, 320, seed=11)):
        p = payload()
        out = tracemark.stamp(img, key, payload=p)
        path = tmp_path / f"stamped-{i:02}.png"
        Image.fromarray(out).save(path)
        stamped.append(str(path))
        expected.append(p)
    for i, img in enumerate(crops(20, 320, seed=12)):
        path = tmp_path / f"plain-{i:02}.png"
        Image.fromarray(img).save(path)
        plain.append(str(path))
    # Interleaved, so that input order is checked, and one file that is not an image.
    paths = [p for pair in zip(stamped, plain) for p in pair]
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    paths.append(str(junk))
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        results = tracemark.scan(paths, key_file, client=client, chunk_size=4)
        # The default chunking (about four chunks per worker thread) gives the same.
        default = tracemark.scan(paths, key_file, client=client)
        # Both workers did some of it.
        seen = client.run(lambda: __import__("tracemark")._examiners.__len__())
    assert len(seen) == 2 and all(n >= 1 for n in seen.values()), seen
    assert [r["path"] for r in results] == paths
    assert [(r.get("verdict"), r.get("payload")) for r in default] == [
        (r.get("verdict"), r.get("payload")) for r in results
    ]
    for r, p in zip(results[0:40:2], expected):
        assert r["verdict"] == "marked" and r["payload"] == p, r
    for r in results[1:40:2]:
        assert r["verdict"] != "marked" and r["payload"] is None, r
    assert results[40]["type"] == "error" and "junk.png" in results[40]["error"]
    # The same files examined here, without a cluster: the same findings.
    local = tracemark.scan(paths, key_file)
    assert [(r.get("verdict"), r.get("payload")) for r in local] == [
        (r.get("verdict"), r.get("payload")) for r in results
    ]


def test_a_ledger_names_the_recipient(key, key_file, tmp_path):
    embed_bin = binary("embed")
    src = tmp_path / "in.png"
    Image.fromarray(crops(1, 384, seed=5)[0]).save(src)
    ledger = tmp_path / "releases.db"
    out = tmp_path / "out.png"
    subprocess.run(
        [embed_bin, "--key", str(key_file), "--ledger", str(ledger), "--recipient", "Dr Python",
         str(src), "-o", str(out)],
        check=True, capture_output=True,
    )
    found = tracemark.detect(str(out), key, ledger=ledger)
    assert [n["recipient"] for n in found["named"]] == ["Dr Python"]
    assert tracemark.scan([out], key_file, ledger=ledger)[0]["named"][0]["recipient"] == "Dr Python"
    # A release recorded after the first lookup is seen by the next one in this process.
    later = tmp_path / "later.png"
    subprocess.run(
        [embed_bin, "--key", str(key_file), "--ledger", str(ledger), "--recipient", "Dr Later",
         str(src), "-o", str(later)],
        check=True, capture_output=True,
    )
    assert [n["recipient"] for n in tracemark.detect(str(later), key, ledger=ledger)["named"]] == [
        "Dr Later"
    ]
    # Nothing is written to the ledger by the Python API.
    before = ledger.read_bytes()
    tracemark.detect(str(out), key, ledger=ledger)
    assert ledger.read_bytes() == before


def test_against_the_original_a_small_texture_halved_and_recompressed_is_read(key, tmp_path):
    # grass.png (a fine texture, 512 px) halved and saved as JPEG 50: the blind search
    # reads no payload; against the released image (given alone, or among other images)
    # the payload is read, and the record names the original the copy showed.
    grass = np.asarray(Image.open(TESTDATA / "grass.png").convert("L"))
    released = tmp_path / "grass.png"
    Image.fromarray(grass).save(released)
    stamped = tracemark.stamp(grass, key, payload="5eed1e55c0ffee42")
    leak = tmp_path / "leak.jpg"
    Image.fromarray(stamped).resize((256, 256), Image.BILINEAR).save(leak, quality=50)
    other = tmp_path / "coffee.png"
    Image.open(TESTDATA / "coffee.png").convert("L").save(other)
    for originals in (released, [other, released]):
        found = tracemark.detect(str(leak), key, original=originals)
        assert found["payload"] == "5eed1e55c0ffee42", found
        assert found["original"]["path"] == str(released), found["original"]
        assert found["original"]["registered"]
    ex = tracemark.Examiner(key, originals=[released])
    unmarked = tmp_path / "unmarked.jpg"
    Image.fromarray(grass).resize((256, 256), Image.BILINEAR).save(unmarked, quality=50)
    assert ex.examine(str(unmarked))["verdict"] != "marked"

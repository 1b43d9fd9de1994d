#!/usr/bin/env bash
# The main job on the bundled test data: make a key, stamp a release of a test image,
# simulate a leak (crop + downscale + small rotation + JPEG), and trace the leak blindly.
# The unmarked original is traced too, to show the detector abstaining.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --locked --quiet -p tracemark-embed -p tracemark-detect -p tracemark-bench
bin=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin/tracemark-embed" keygen "$work/org.key"
"$bin/tracemark-embed" --key "$work/org.key" --payload 5eed1e55c0ffee42 \
    testdata/retina.jpg -o "$work/release-for-dr-smith.png"
"$bin/tracemark-bench" leak --crop 0.5 --scale 0.6 --rotate 2 --jpeg 70 \
    "$work/release-for-dr-smith.png" "$work/found-on-a-forum.jpg"
echo "--- tracing the leak (exit 0 = mark found) and the unmarked original (exit 1 = abstains):"
"$bin/tracemark-detect" --key "$work/org.key" "$work/found-on-a-forum.jpg"
set +e
"$bin/tracemark-detect" --key "$work/org.key" testdata/retina.jpg
rc=$?
set -e
if [ "$rc" -ne 1 ]; then
    echo "demo: expected the unmarked original to give no_mark (exit 1), got exit $rc" >&2
    exit 1
fi
echo "--- demo finished: the leak was traced to payload 5eed1e55c0ffee42"

#!/usr/bin/env bash
# The main job on the bundled test data: make a key, release a small study (a photo and the
# 15-bit chest radiograph, DICOM) to one recipient, recorded in a ledger; simulate two leaks
# (the photo cropped, downscaled, rotated and recompressed; the radiograph exported to 8-bit
# JPEG with a wider window and MONOCHROME1 ignored); trace both to the recipient. The
# unmarked original is traced too, to show the detector abstaining; and the radiograph is
# restored from its stamped copy and the ledger, byte for byte.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --locked --quiet -p tracemark-embed -p tracemark-detect -p tracemark-bench
bin=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The report is kept (outside the repository) for reading after the demo.
report=${TRACEMARK_DEMO_REPORT:-$(mktemp -d)/tracemark-report}

mkdir -p "$work/study/photos" "$work/study/xray"
cp testdata/retina.jpg "$work/study/photos/"
cp testdata/RG1_UNCR.dcm "$work/study/xray/"
"$bin/tracemark-embed" keygen "$work/org.key"
"$bin/tracemark-embed" --key "$work/org.key" --ledger "$work/releases.db" \
    --recipient "Dr Smith" --purpose "second opinion" "$work/study" -o "$work/release"
"$bin/tracemark-embed" ledger --key "$work/org.key" --ledger "$work/releases.db" verify
"$bin/tracemark-bench" leak --crop 0.5 --scale 0.6 --rotate 2 --jpeg 70 \
    "$work/release/photos/retina.jpg" "$work/found-on-a-forum.jpg"
"$bin/tracemark-bench" leak --window-scale 1.3 --ignore-mono1 --jpeg 75 \
    "$work/release/xray/RG1_UNCR.dcm" "$work/screenshot-in-a-chat.jpg"
echo "--- tracing the leaks (exit 0 = mark found) and the unmarked original (exit 1 = abstains):"
"$bin/tracemark-detect" --key "$work/org.key" --ledger "$work/releases.db" \
    "$work/found-on-a-forum.jpg" "$work/screenshot-in-a-chat.jpg"
set +e
"$bin/tracemark-detect" --key "$work/org.key" testdata/retina.jpg
rc=$?
set -e
if [ "$rc" -ne 1 ]; then
    echo "demo: expected the unmarked original to give no_mark (exit 1), got exit $rc" >&2
    exit 1
fi
echo "--- the evidence report of the two leaks and the unmarked original:"
set +e
"$bin/tracemark-detect" --key "$work/org.key" --ledger "$work/releases.db" \
    --operator "privacy office" --report "$report" \
    "$work/found-on-a-forum.jpg" "$work/screenshot-in-a-chat.jpg" testdata/retina.jpg >/dev/null
set -e
echo "report: $report/index.html (and report.json); the examinations are in the ledger's audit trail:"
"$bin/tracemark-embed" ledger --key "$work/org.key" --ledger "$work/releases.db" audit
echo "--- restoring the released radiograph from the ledger (byte-identical to the original):"
"$bin/tracemark-embed" restore --key "$work/org.key" --ledger "$work/releases.db" \
    "$work/release/xray/RG1_UNCR.dcm" -o "$work/RG1_restored.dcm"
cmp testdata/RG1_UNCR.dcm "$work/RG1_restored.dcm"
echo "--- demo finished: both leaks were traced to Dr Smith's release; the original came back bit for bit"

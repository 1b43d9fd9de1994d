#!/usr/bin/env bash
# Stamps every DICOM file in testdata/ with tracemark-embed and checks the outputs with a
# reader that is not ours (scripts/dicom_conformance.py: pydicom, and dciodvfy when
# installed). emri_small.dcm (10 frames of 64x64 px) must be refused. Then the same files,
# stamped into a ledger, are restored and checked against their originals with pydicom
# (scripts/restore_check.py).
# TRACEMARK_EMBED names the binary to check (CI passes the one `cargo test` built);
# without it, the release build is made and used.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${TRACEMARK_EMBED:-}" ]; then
    bin=$TRACEMARK_EMBED
else
    cargo build --release --locked --quiet -p tracemark-embed
    bin=target/release/tracemark-embed
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" keygen "$work/k.key" >/dev/null
pairs=()
for f in testdata/*.dcm; do
    name=$(basename "$f")
    if [ "$name" = emri_small.dcm ]; then
        if "$bin" --key "$work/k.key" --payload 0123456789abcdef "$f" -o "$work/$name" 2>"$work/err"; then
            echo "dicom_conformance: $name was stamped, but its frames are too small to carry a mark" >&2
            exit 1
        fi
        echo "refused as expected: $(cat "$work/err")"
        continue
    fi
    "$bin" --key "$work/k.key" --payload 0123456789abcdef "$f" -o "$work/$name" >/dev/null
    pairs+=("$f" "$work/$name")
done
python3 scripts/dicom_conformance.py "${pairs[@]}"

# Restore: stamped into a ledger, restored, compared with the originals by pydicom.
mkdir -p "$work/released" "$work/restored"
restore_pairs=()
inputs=()
for f in testdata/*.dcm; do
    [ "$(basename "$f")" = emri_small.dcm ] && continue
    inputs+=("$f")
done
"$bin" --key "$work/k.key" --ledger "$work/ledger.db" --recipient "conformance" \
    "${inputs[@]}" -o "$work/released" >/dev/null
"$bin" restore --key "$work/k.key" --ledger "$work/ledger.db" -o "$work/restored" \
    "$work"/released/*.dcm >/dev/null
for f in "${inputs[@]}"; do
    restore_pairs+=("$f" "$work/restored/$(basename "$f")")
done
python3 scripts/restore_check.py "${restore_pairs[@]}"

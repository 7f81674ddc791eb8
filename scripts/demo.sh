#!/usr/bin/env bash
# Set up .venv and run the main job end to end on the bundled corpus:
# attack a handful of corpus images with a published suite, write the attacked images and
# a replayable manifest, and print a PSNR/SSIM table.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
corpus="${TRACEMARK_CORPUS:-../shared/data/corpus}"
suite="${TRACEMARK_SUITE:-wbench-distortions}"
out="${TRACEMARK_OUT:-demo-out}"
[ -d "$corpus" ] || { echo "corpus not found at $corpus (set TRACEMARK_CORPUS)" >&2; exit 2; }
mapfile -t images < <( (ls "$corpus"/photo/*.jpg | sort | head -n 4; ls "$corpus"/art/*.jpg | sort | head -n 4) )
rm -rf "$out"
.venv/bin/tracemark attack --suite "$suite" --out "$out" --metrics "${images[@]}"
echo "attacked images and manifest in $out/" >&2

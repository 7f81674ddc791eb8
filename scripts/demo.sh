#!/usr/bin/env bash
# Set up .venv and run the main job end to end on the bundled corpus:
# 1. attack a handful of corpus images with a published suite, write the attacked images and
#    a replayable manifest, and print a PSNR/SSIM table;
# 2. durable content credentials: make a development CA, sign four corpus images (C2PA
#    manifest + watermark + fingerprint, in an embedded SQLite store), strip the manifests
#    (JPEG 80, resize 0.5, screenshot) and verify that every copy leads back to its manifest.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_env.sh" c2pa
corpus="${TRACEMARK_CORPUS:-../shared/data/corpus}"
suite="${TRACEMARK_SUITE:-wbench-distortions}"
out="${TRACEMARK_OUT:-demo-out}"
[ -d "$corpus" ] || { echo "corpus not found at $corpus (set TRACEMARK_CORPUS)" >&2; exit 2; }
mapfile -t images < <( (ls "$corpus"/photo/*.jpg | sort | head -n 4; ls "$corpus"/art/*.jpg | sort | head -n 4) )
rm -rf "$out"
tm=.venv/bin/tracemark
$tm attack --suite "$suite" --out "$out/attacked" --metrics "${images[@]}"
echo "attacked images and manifest in $out/attacked/" >&2

mkdir -p "$out/originals"
cp "${images[@]:0:2}" "${images[@]:4:2}" "$out/originals/"
$tm certs init "$out/certs"
$tm sign "$out/originals" "$out/signed" --cert "$out/certs/signer.pem" \
    --key "$out/certs/signer.key" --store "$out/store" --ai-generated --author "tracemark demo" \
    > "$out/signed.jsonl"
$tm verify "$out/signed" --trust "$out/certs/ca.pem" --store "$out/store" > "$out/verify-signed.jsonl"
$tm attack --suite credential-strip --out "$out/stripped" --format jpg "$out"/signed/*
$tm verify "$out/stripped" --trust "$out/certs/ca.pem" --store "$out/store" > "$out/verify-stripped.jsonl"
.venv/bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("\ncontent credentials (state, route, confidence) of the signed and the stripped copies:")
for name in ("verify-signed.jsonl", "verify-stripped.jsonl"):
    for line in (out / name).read_text().splitlines():
        r = json.loads(line)
        conf = "-" if r.get("confidence") is None else f"{r['confidence']:.4f}"
        print(f"  {Path(r['source']).relative_to(out)!s:55} {r.get('state', 'error'):10} "
              f"{r.get('route') or '-':12} {conf:>8}  manifest {r.get('manifest_id')}")
PY
echo "signed images in $out/signed/, stripped copies in $out/stripped/, store in $out/store/" >&2

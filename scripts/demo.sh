#!/usr/bin/env bash
# Set up .venv and run tracemark's main job end to end on the bundled corpus:
# 1. mark and register: make a development CA, sign six corpus images (a watermark carrying
#    the manifest id, a C2PA manifest, the fingerprint registered in an embedded SQLite +
#    FAISS store);
# 2. attack the copies the way the web does (credential-strip: JPEG 80, resize 0.5, a
#    screenshot; the re-encode strips every manifest), plus four corpus images never signed;
# 3. find them: search the store's fingerprint collection with every copy;
# 4. recover their credentials: verify every copy (embedded manifest, else watermark, else
#    fingerprint);
# 5. one summary table.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_env.sh" c2pa
corpus="${TRACEMARK_CORPUS:-../shared/data/corpus}"
out="${TRACEMARK_OUT:-demo-out}"
[ -d "$corpus" ] || { echo "corpus not found at $corpus (set TRACEMARK_CORPUS)" >&2; exit 2; }
mapfile -t photos < <(ls "$corpus"/photo/*.jpg | sort)
mapfile -t art < <(ls "$corpus"/art/*.jpg | sort)
rm -rf "$out"
mkdir -p "$out/works" "$out/unrelated"
cp "${photos[@]:0:3}" "${art[@]:0:3}" "$out/works/"
cp "${photos[@]:10:2}" "${art[@]:10:2}" "$out/unrelated/"
export TRACEMARK_STORE="$out/store" TRACEMARK_PROGRESS_SECONDS=30
tm=.venv/bin/tracemark

echo "== 1. mark and register: sign $out/works into $out/signed (store $out/store)" >&2
$tm certs init "$out/certs" > /dev/null
$tm sign "$out/works" --out "$out/signed" --cert "$out/certs/signer.pem" \
    --key "$out/certs/signer.key" --author "tracemark demo" > "$out/signed.jsonl"

echo "== 2. attack the copies (credential-strip) into $out/copies" >&2
$tm attack --suite credential-strip --format jpg --out "$out/copies" "$out/signed" \
    > "$out/copies.jsonl"
cp "$out"/unrelated/* "$out/copies/"
mv "$out/copies/manifest.jsonl" "$out/attacks.jsonl"  # keep the folder to images only

echo "== 3. find them: search the store's fingerprint collection" >&2
# exit code 11: copies found in some queries, not all (the unrelated images): expected here
$tm search "$out/copies" --store "$out/store/index" > "$out/search.jsonl" || [ $? -eq 11 ]

echo "== 4. recover their credentials: verify every copy" >&2
$tm verify "$out/copies" --trust "$out/certs/ca.pem" > "$out/verify.jsonl" || [ $? -eq 11 ]

.venv/bin/python - "$out" <<'PY'
import json, sys
from collections import defaultdict
from pathlib import Path

out = Path(sys.argv[1])
def rows(name):  # the item lines (files skipped in a folder have "skipped": true)
    lines = [json.loads(line) for line in (out / name).read_text().splitlines()]
    return [r for r in lines if not r.get("skipped")]

signed = {Path(r["output"]).stem: r for r in rows("signed.jsonl") if r["error"] is None}
stats = defaultdict(lambda: {"n": 0, "found": 0, "recovered": 0, "wrong": 0, "routes": set()})
search = {Path(r["query"]): r for r in rows("search.jsonl")}
for r in rows("verify.jsonl"):
    src = Path(r["source"])
    parent = src.parent.name
    work = parent if parent in signed else None
    kind = src.stem if work else "unrelated (never signed)"
    s = stats[kind]
    s["n"] += 1
    hits = [m for m in search.get(src, {}).get("matches", []) if m["decision"]]
    if work:
        s["found"] += any(Path(m["source"]).stem == work for m in hits)
        ok = r.get("manifest_id") == signed[work]["manifest_id"]
        s["recovered"] += ok and r["state"] in ("recovered", "trusted", "valid")
        s["wrong"] += r.get("manifest_id") is not None and not ok
    else:
        s["found"] += bool(hits)
        s["wrong"] += r.get("manifest_id") is not None
    if r.get("route"):
        s["routes"].add(r["route"])
print(f"\nsigned {len(signed)} works; copies attacked, searched and verified "
      f"(details in {out}/*.jsonl):\n")
print(f"| {'copy':26} | {'n':>2} | {'found by search':>15} | {'credentials recovered':>21} "
      f"| {'wrong manifest':>14} | routes")
print(f"|{'-'*28}|{'-'*4}|{'-'*17}|{'-'*23}|{'-'*16}|--------")
for kind in sorted(stats, key=lambda k: (k.startswith("unrelated"), k)):
    s = stats[kind]
    print(f"| {kind:26} | {s['n']:>2} | {s['found']:>15} | {s['recovered']:>21} | "
          f"{s['wrong']:>14} | {', '.join(sorted(s['routes'])) or '-'}")
print("\n(for unrelated images, 'found by search' counts false matches: 0 is right)")
PY
echo "signed images in $out/signed/, attacked copies in $out/copies/, store in $out/store/" >&2

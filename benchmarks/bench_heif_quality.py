"""Does tracemark's watermark survive the HEIC and AVIF encodes ``sign`` writes? For six
corpus images (three photos, three artworks, long side 1024 px), marked with ``lattice``
and encoded by :func:`tracemark.imageio.encode_image` as HEIC (pillow-heif, x265) and AVIF
(Pillow's libavif) at qualities 50..95: how many read back with their full payload, and
the range of the detection p-values. Chooses nothing: it checks
:data:`tracemark.imageio.HEIF_AVIF_QUALITY`.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_heif_quality.py

Prints progress and one table row per format and quality.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import corpus_images, small_image  # noqa: E402

from tracemark.imageio import HEIF_AVIF_QUALITY, encode_image, load_image  # noqa: E402
from tracemark.watermark import get_method  # noqa: E402

KEY = "a long enough passphrase"
PAYLOAD = 0xC0FFEE1234
QUALITIES = (50, 75, 85, 90, 95)


def main() -> None:
    wm = get_method("lattice")
    paths = corpus_images("photo", 3) + corpus_images("art", 3)
    marked = []
    for i, p in enumerate(paths, 1):
        print(f"marking {i}/{len(paths)}: {p.name}", file=sys.stderr, flush=True)
        marked.append(wm.embed(small_image(p, 1024), payload=PAYLOAD, key=KEY))
    print(f"| format | quality | read back | p-values | (HEIF_AVIF_QUALITY = "
          f"{HEIF_AVIF_QUALITY}) |")
    print("|---|---:|---:|---|---|")
    for fmt in ("HEIC", "AVIF"):
        for q in QUALITIES:
            ok, ps = 0, []
            for m in marked:
                d = wm.detect(load_image(encode_image(m, fmt, quality=q)), key=KEY)
                ok += bool(d.present and d.payload_int == PAYLOAD)
                if d.p_value is not None:
                    ps.append(d.p_value)
            span = f"{min(ps):.0e} .. {max(ps):.0e}" if ps else "-"
            print(f"| {fmt} | {q} | {ok}/{len(marked)} | {span} | |", flush=True)


if __name__ == "__main__":
    main()

"""Train the visual-words model shipped as ``src/tracemark/fingerprint/data/words_v1.npz``.

Run from the repository root (a few minutes on one core)::

    .venv/bin/python scripts/train_words.py ../shared/data/corpus \
        src/tracemark/fingerprint/data/words_v1.npz

Training uses only the corpus files for which
:func:`tracemark.fingerprint.global_desc.in_training_half` is true (the half the VLAD model
was trained on; benchmarks report the other half). To give the 65,536 words enough
descriptors, each image is described at three sizes (long side 1024, 640 and 400 px, up to
3000 SIFT features each) and once rotated by 30 degrees. Deterministic for a given OpenCV and
FAISS build (``--seed``). No weights are downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from tracemark.fingerprint.global_desc import in_training_half
from tracemark.fingerprint.local import extract
from tracemark.fingerprint.words import fit_model
from tracemark.imageio import load_image


def _rotated(rgb: np.ndarray, angle: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def main(argv: list[str] | None = None) -> int:
    """Extract descriptors from the training half, fit the model, write it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--max-descriptors", type=int, default=1_200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.corpus.rglob("*")
                   if p.suffix.lower() in {".jpg", ".jpeg", ".png"} and in_training_half(p))
    if not paths:
        parser.error(f"no training images under {args.corpus}")
    chunks = []
    for i, path in enumerate(paths):
        rgb = load_image(path)
        for side in (1024, 640, 400):
            chunks.append(extract(rgb, kind="sift", max_features=3000, max_side=side).descriptors)
        chunks.append(extract(_rotated(rgb, 30.0), kind="sift", max_features=3000, max_side=640).descriptors)
        if i % 20 == 0:
            print(f"[{i + 1}/{len(paths)}] {sum(len(c) for c in chunks)} descriptors", file=sys.stderr)
    d = np.vstack(chunks)
    rng = np.random.default_rng(args.seed)
    if len(d) > args.max_descriptors:
        d = d[rng.choice(len(d), args.max_descriptors, replace=False)]
    print(f"fitting on {len(d)} descriptors from {len(paths)} images", file=sys.stderr)
    info = {"training": "corpus files whose name's SHA-1 starts with an even byte",
            "images": len(paths),
            "command": " ".join(["scripts/train_words.py", *(argv if argv is not None else sys.argv[1:])])}
    model = fit_model(d, seed=args.seed, info=info)
    model.save(args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

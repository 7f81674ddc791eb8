"""Train the VLAD model shipped as ``src/tracemark/fingerprint/data/vlad_v1.npz``.

Run from the repository root (about a minute on one core)::

    .venv/bin/python scripts/train_codebook.py ../shared/data/corpus \
        src/tracemark/fingerprint/data/vlad_v1.npz

Training uses only the corpus files for which
:func:`tracemark.fingerprint.global_desc.in_training_half` is true (the SHA-1 of the file
name starts with an even byte): about half of the corpus. Benchmarks built from the same
corpus should report the other half separately (leakage caveat). Deterministic for a
given OpenCV build (``--seed``). No weights are downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tracemark.fingerprint.global_desc import DIM, N_FEATURES, fit_model, in_training_half
from tracemark.fingerprint.local import extract


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, extract features from the training half, fit and write the model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="folder searched recursively for *.jpg / *.png")
    parser.add_argument("output", type=Path, help="the .npz to write")
    parser.add_argument("-k", type=int, default=32, help="visual words (default 32)")
    parser.add_argument("-d", type=int, default=64, help="RootSIFT PCA dims (default 64)")
    parser.add_argument("--dim", type=int, default=DIM, help=f"output dims (default {DIM})")
    parser.add_argument("--max-descriptors", type=int, default=200_000, help="k-means sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    paths = sorted(
        p
        for p in args.corpus.rglob("*")
        if p.suffix.lower() in {".jpg", ".png"} and in_training_half(p)
    )
    if not paths:
        parser.error(f"no training images under {args.corpus}")
    features = [extract(p, kind="sift", max_features=N_FEATURES) for p in paths]
    descriptors = np.vstack([f.descriptors for f in features])
    rng = np.random.default_rng(args.seed)
    if len(descriptors) > args.max_descriptors:
        descriptors = descriptors[rng.choice(len(descriptors), args.max_descriptors, replace=False)]
    info = {
        "training": "corpus files whose name's SHA-1 starts with an even byte",
        "images": len(paths),
        "descriptors": int(len(descriptors)),
        "command": " ".join(
            ["scripts/train_codebook.py", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    model = fit_model(
        descriptors, features, k=args.k, d=args.d, dim=args.dim, seed=args.seed, info=info
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(model.to_bytes())
    sys.stderr.write(json.dumps({"output": str(args.output), **json.loads(model.info)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

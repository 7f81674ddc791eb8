"""Regenerate the committed format-version-1 index fixture ``tests/data/index_v1/``.

    .venv/bin/python tests/data/make_index_v1.py [--force]

The fixture guards the on-disk format: ``tests/test_index.py`` opens it and checks its
content. Regenerate it only on purpose (a format change bumps ``FORMAT_VERSION`` and adds
a new fixture beside this one).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from tracemark.index import Index, NewReference, VectorSpec

HERE = Path(__file__).resolve().parent
TARGET = HERE / "index_v1"


def fixture_references() -> list[NewReference]:
    """The three references of the fixture (the test recomputes them to compare)."""
    pdq = np.arange(4 * 32, dtype=np.uint8).reshape(4, 32)
    desc = np.array([[1, 0, 0, 0], [0, 0.6, 0.8, 0], [0, 0, 0, 1]], dtype=np.float32)
    return [
        NewReference(
            content_hash="sha256:" + "a" * 64,
            vectors={"pdq": pdq[0], "desc": desc[0]},
            source="photos/one.jpg",
            owner="Ada",
            license="CC-BY-4.0",
            notes="first",
        ),
        NewReference(
            content_hash="sha256:" + "b" * 64,
            vectors={"pdq": pdq[1:3], "desc": desc[1]},
            source="photos/two.jpg",
            owner="Grace",
            blobs={"local": b"\x00\x01keypoints\xff"},
        ),
        NewReference(
            content_hash="sha256:" + "c" * 64,
            vectors={"pdq": pdq[3]},
            source=None,
            notes="no float descriptor",
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--force", action="store_true", help="replace an existing fixture")
    args = ap.parse_args()
    if TARGET.exists() and args.force:
        shutil.rmtree(TARGET)
    specs = {"pdq": VectorSpec("binary", 256), "desc": VectorSpec("float", 4)}
    with Index.create(TARGET, vector_specs=specs) as index:
        index.add_many(fixture_references())
    (TARGET / "write.lock").unlink()  # not part of the format


if __name__ == "__main__":
    main()

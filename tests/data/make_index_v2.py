"""Regenerate the committed format-version-2 index fixture ``tests/data/index_v2/``.

    .venv/bin/python tests/data/make_index_v2.py [--force]

Version 2 adds the ``documents`` and ``changes`` tables and the ``uid`` and
``vector_store`` meta keys (docs/index-format.md). The fixture holds the version-1
fixture's references, a fourth one that was removed (so the change log has a removal), an
``ivf`` set (flat: too few rows to train) and one document. ``tests/test_index.py`` opens a
copy and checks every stored value; regenerate it only on purpose.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from tracemark.index import Index, VectorSpec

HERE = Path(__file__).resolve().parent
TARGET = HERE / "index_v2"
sys.path.insert(0, str(HERE))
from make_index_v1 import fixture_references  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--force", action="store_true", help="replace an existing fixture")
    args = ap.parse_args()
    if TARGET.exists() and args.force:
        shutil.rmtree(TARGET)
    specs = {"pdq": VectorSpec("binary", 256), "desc": VectorSpec("float", 4),
             "ivf": VectorSpec("float", 8, index="ivf", ivf_nprobe=8)}
    with Index.create(TARGET, vector_specs=specs) as index:
        index.add_many(fixture_references())
        gone = index.add(content_hash="sha256:" + "d" * 64,
                         vectors={"ivf": np.eye(8, dtype=np.float32)[:2]})
        index.put_document("copydetect.calibration", b"PK\x03\x04 not a real archive")
        index.commit()
        index.remove(gone.id)
    (TARGET / "write.lock").unlink()  # not part of the format


if __name__ == "__main__":
    main()

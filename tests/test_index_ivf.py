"""FAISS inverted-file sets (``VectorSpec(index="ivf" | "auto")``): flat while small, an
inverted file (IVF-PQ for float rows, IVF over exact Hamming distances for binary rows)
once there are rows enough to train; removals, reopening and growth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tracemark.errors import ConfigError
from tracemark.index import Index, NewReference, VectorSpec, _faiss
from tracemark.index.model import IVF_MIN_ROWS


def _rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    f = rng.normal(size=(n, 32)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return f, rng.integers(0, 256, (n, 32), dtype=np.uint8)


def _add(index: Index, f: np.ndarray, b: np.ndarray, start: int) -> None:
    index.add_many([NewReference(content_hash=f"h{start + i}", vectors={"f": f[i], "b": b[i]})
                    for i in range(len(f))])


def test_ivf_sets_are_flat_until_trained_then_find_near_copies(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    specs = {"f": VectorSpec("float", 32, index="ivf"),
             "b": VectorSpec("binary", 256, index="auto", auto_rows=IVF_MIN_ROWS + 2000)}
    f, b = _rows(rng, IVF_MIN_ROWS + 500)
    with Index.create(tmp_path / "ix", vector_specs=specs) as index:
        _add(index, f[:100], b[:100], 0)
        index.commit()
        store = index._vstore
        assert not _faiss.is_ivf(store._sets["f"].index)  # too few rows to train: exact
        _add(index, f[100:], b[100:], 100)
        index.commit()
        assert _faiss.is_ivf(store._sets["f"].index)
        assert not _faiss.is_ivf(store._sets["b"].index)  # auto: below its auto_rows
        q = f[:100] + 0.03 * rng.normal(size=(100, 32)).astype(np.float32)
        hits = index.search("f", q, k=5)
        assert np.mean([h[0].ref_id == i + 1 for i, h in enumerate(hits)]) >= 0.95
        assert index.remove(3)
        index.commit()
        assert all(h.ref_id != 3 for h in index.search("f", f[2], k=10)[0])
        f2, b2 = _rows(rng, 2000)
        _add(index, f2, b2, 50_000)
        index.commit()
        assert _faiss.is_ivf(store._sets["b"].index)  # grew past auto_rows
        hb = index.search("b", b2[:20], k=1)
        assert all(h[0].score == 0 for h in hb)  # binary IVF keeps exact distances
    with Index.open(tmp_path / "ix") as index:  # the files hold the inverted files
        assert index.repaired == () and len(index) == IVF_MIN_ROWS + 500 - 1 + 2000
        assert _faiss.is_ivf(index._vstore._sets["f"].index)
        index.add_many([NewReference(content_hash="x", vectors={"f": f[5]})])
        index.rollback()  # the rows of a rolled-back add leave the inverted file
        assert sorted(index.store_labels("f").tolist()) == sorted(
            _faiss.expected_labels(*index._stored(index._sets["f"])).tolist())


def test_ivf_spec_checks() -> None:
    with pytest.raises(ConfigError, match="multiple of 8"):
        VectorSpec("float", 12, index="ivf")
    with pytest.raises(ConfigError, match="auto_rows"):
        VectorSpec("float", 16, index="auto", auto_rows=5)
    with pytest.raises(ConfigError, match="ivf_nprobe"):
        VectorSpec("binary", 64, index="ivf", ivf_nprobe=0)
    assert VectorSpec("float", 16, index="ivf").ivf_from() == IVF_MIN_ROWS
    assert VectorSpec("float", 16).ivf_from() is None

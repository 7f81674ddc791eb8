"""The fingerprint base (registry, batching, distances) and the ImageHash family."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from tests.conftest import corpus_images
from tracemark.errors import (
    ConfigError,
    CorruptImageError,
    ImageSourceError,
    ImageTooSmallError,
    TracemarkError,
    UnknownMethodError,
)
from tracemark.fingerprint import (
    Fingerprint,
    Fingerprinter,
    ahash,
    dhash,
    get_fingerprinter,
    hamming_distance,
    list_fingerprinters,
    phash,
    register_fingerprinter,
    whash,
)
from tracemark.imageio import encode_image, load_image

HASHES = {"ahash": ahash, "dhash": dhash, "phash": phash, "whash": whash}
BINARY = ["ahash", "dhash", "phash", "whash", "pdq"]


def _imagehash():
    return pytest.importorskip(
        "imagehash", reason="the oracle 'ImageHash' is a test dependency from the dev extra"
    )


def _oracle(name: str):
    ih = _imagehash()
    return {"ahash": ih.average_hash, "dhash": ih.dhash, "phash": ih.phash, "whash": ih.whash}[name]


def _edge_images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:257, 0:513]
    half_flat = rng.integers(0, 256, (300, 220, 3), dtype=np.uint8)
    half_flat[:150] = 200
    return [
        np.zeros((1, 1, 3), np.uint8),
        np.full((3, 700, 3), 9, np.uint8),
        np.full((50, 70, 3), 128, np.uint8),  # flat: every coefficient ties
        np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8),
        half_flat,  # ties among the flat blocks
        rng.integers(0, 256, (513, 1024, 3), dtype=np.uint8),
    ]


@pytest.fixture(scope="module")
def corpus(corpus_dir) -> list[np.ndarray]:
    files = corpus_images()
    return [load_image(f) for f in files[:: max(1, len(files) // 90)]]


# --- agreement with ImageHash ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HASHES))
def test_bit_exact_with_imagehash_on_corpus(name, corpus):
    oracle = _oracle(name)
    assert len(corpus) >= 80
    for img in corpus:
        want = oracle(Image.fromarray(img))
        got = HASHES[name](img)
        assert got.tobytes().hex() == str(want)


@pytest.mark.parametrize("name", sorted(HASHES))
def test_bit_exact_with_imagehash_on_edge_images(name):
    oracle = _oracle(name)
    for img in _edge_images():
        assert HASHES[name](img).tobytes().hex() == str(oracle(Image.fromarray(img))), img.shape


def test_grey_file_hashes_as_imagehash_does(tmp_path):
    oracle = _oracle("phash")
    grey = np.random.default_rng(3).integers(0, 256, (90, 120), dtype=np.uint8)
    path = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(path)
    fp = get_fingerprinter("phash").compute(path)
    assert fp.vector.tobytes().hex() == str(oracle(Image.open(path)))


# --- conformance of every built-in binary fingerprinter -------------------------------------


@pytest.mark.parametrize("name", BINARY)
def test_conformance(name, photo):
    fp = get_fingerprinter(name)
    assert name in list_fingerprinters()
    assert fp.name == name and fp.kind == "binary" and fp.metric == "hamming"
    a = fp.compute(photo)
    assert isinstance(a, Fingerprint) and a.name == name
    assert a.vector.dtype == np.uint8 and a.vector.shape == ((fp.dim + 7) // 8,)
    assert a == fp.compute(photo.copy())  # deterministic
    assert fp.distance(a, a) == 0.0
    b = fp.compute(encode_image(np.ascontiguousarray(photo[:, ::-1]), "PNG"))
    assert fp.distance(a, b) == fp.distance(b, a)
    assert 0 < fp.distance(a, b) <= fp.dim


@pytest.mark.parametrize("name", BINARY)
def test_compute_many_keeps_going_with_typed_errors(name, photo, tmp_path):
    fp = get_fingerprinter(name)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(encode_image(photo, "JPEG")[:300])
    out = fp.compute_many([photo, broken, tmp_path / "missing.png", b"", photo[:2, :2], photo])
    assert isinstance(out[0], Fingerprint) and out[0] == out[5]
    assert isinstance(out[1], CorruptImageError)
    assert isinstance(out[2], ImageSourceError)
    assert isinstance(out[3], TracemarkError)
    if name == "pdq":
        assert isinstance(out[4], ImageTooSmallError)
    else:
        assert isinstance(out[4], Fingerprint)
    assert fp.compute_many([]) == []


@pytest.mark.parametrize("name", BINARY)
def test_distance_rejects_foreign_fingerprints(name, synthetic):
    fp = get_fingerprinter(name)
    a = fp.compute(synthetic)
    other = get_fingerprinter("dhash" if name != "dhash" else "ahash").compute(synthetic)
    bad_shape = Fingerprint(name, np.zeros(3, np.uint8))
    bad_dtype = Fingerprint(name, a.vector.astype(np.int64))
    for b in (other, bad_shape, bad_dtype):
        with pytest.raises(TracemarkError):
            fp.distance(a, b)
    with pytest.raises(TracemarkError):
        fp.distance(a, a.vector)  # type: ignore[arg-type]


@settings(max_examples=15, deadline=None)
@given(
    hnp.arrays(np.uint8, st.tuples(st.integers(8, 48), st.integers(8, 48), st.just(3))),
    hnp.arrays(np.uint8, st.tuples(st.integers(8, 48), st.integers(8, 48), st.just(3))),
)
def test_distance_symmetric_and_in_range(x, y):
    for name in BINARY:
        fp = get_fingerprinter(name)
        a, b = fp.compute(x), fp.compute(y)
        d = fp.distance(a, b)
        assert d == fp.distance(b, a) and 0 <= d <= fp.dim and d == int(d)
        assert fp.distance(a, a) == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.data())
def test_hamming_distance_is_bit_count(n, data):
    a, b, c = (data.draw(hnp.arrays(np.uint8, n)) for _ in range(3))
    d = hamming_distance(a, b)
    assert d == int((np.unpackbits(a) != np.unpackbits(b)).sum()) == hamming_distance(b, a)
    assert hamming_distance(a, c) <= d + hamming_distance(b, c)


def test_hamming_distance_rejects_mismatched_vectors():
    with pytest.raises(TracemarkError):
        hamming_distance(np.zeros(8, np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(TracemarkError):
        hamming_distance(np.zeros(8, np.uint8), np.zeros(8, np.int32))


# --- float fingerprints (the base's cosine distance) --------------------------------------


class _MeanColour(Fingerprinter):
    """A toy float fingerprinter (not registered): the normalised mean colour."""

    name = "_mean_colour"
    kind = "float"
    dim = 3
    metric = "ip"

    def _compute(self, rgb):
        v = rgb.reshape(-1, 3).mean(axis=0).astype(np.float32) + np.float32(1)
        return Fingerprint(self.name, v / np.linalg.norm(v))


def test_float_distance_is_one_minus_cosine():
    fp = _MeanColour()
    red = fp.compute(np.full((8, 8, 3), (254, 0, 0), np.uint8))
    blue = fp.compute(np.full((8, 8, 3), (0, 0, 254), np.uint8))
    cos = float(np.dot(red.vector, blue.vector))
    assert fp.distance(red, blue) == pytest.approx(1 - cos, abs=1e-6)
    assert fp.distance(red, blue) == fp.distance(blue, red)
    assert fp.distance(red, red) == pytest.approx(0, abs=1e-6)
    zero = Fingerprint(fp.name, np.zeros(3, np.float32))
    with pytest.raises(TracemarkError):
        fp.distance(red, zero)


# --- registry and the Fingerprint type ------------------------------------------------------


def test_registry_errors():
    with pytest.raises(UnknownMethodError, match="known:"):
        get_fingerprinter("nope")
    with pytest.raises(ConfigError):
        get_fingerprinter("pdq", window=3)
    with pytest.raises(ConfigError):
        register_fingerprinter("pdq")(_MeanColour)
    assert set(BINARY) <= set(list_fingerprinters())


def test_fingerprint_equality():
    v = np.arange(4, dtype=np.uint8)
    assert Fingerprint("x", v, 1.0) == Fingerprint("x", v.copy(), 1.0)
    assert Fingerprint("x", v) != Fingerprint("y", v)
    assert Fingerprint("x", v, 1.0) != Fingerprint("x", v, 2.0)
    assert Fingerprint("x", v) != Fingerprint("x", v.astype(np.int16))
    with pytest.raises(TypeError):
        hash(Fingerprint("x", v))

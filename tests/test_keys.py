"""Watermark keys: normalisation, HKDF derivation (RFC 5869 vectors), keyed sequences."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracemark.errors import ConfigError, WatermarkKeyError
from tracemark.watermark.keys import (
    KEY_SALT,
    MIN_DISTINCT_KEY_BYTES,
    WatermarkKey,
    _hkdf_expand,
    _hkdf_extract,
    as_key,
    derive,
    keyed_rng,
    permutation,
    pn_sequence,
)

GOLDEN_KEY = b"tracemark-golden-key-0001"
# Frozen outputs: a change here changes every watermark ever embedded (layout version 1).
GOLDEN_DERIVE_SYNC_16 = "a6b900006ba0eb0c5f95881a8be8d903"
GOLDEN_PN_WHITEN_64 = "4e36798d92e5da80"  # np.packbits(pn_sequence(...) > 0)
GOLDEN_PN_WHITEN_10 = [-1, 1, -1, -1, 1, 1, 1, -1, -1, -1]
GOLDEN_PERMUTATION_BITS_12 = [5, 0, 10, 7, 3, 8, 9, 2, 4, 6, 11, 1]
GOLDEN_RAW_SYNC = [14261933730876168416, 13597378375277701016]
GOLDEN_PASSPHRASE = "correct horse battery staple"
GOLDEN_PASSPHRASE_MATERIAL = "733c054ea543a31344c3debadc060874bc3410fa5c6ee29a7a9f97ecbb9c1911"
GOLDEN_PASSPHRASE_FINGERPRINT = "17219574"
GOLDEN_KEY_FINGERPRINT = "ab307f03"

keys = st.binary(min_size=16, max_size=48).filter(lambda b: len(set(b)) >= MIN_DISTINCT_KEY_BYTES)


# --- HKDF against RFC 5869 -------------------------------------------------------------


def test_hkdf_matches_rfc5869_test_case_1() -> None:
    prk = _hkdf_extract(bytes(range(13)), b"\x0b" * 22)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = _hkdf_expand(prk, bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_matches_rfc5869_test_case_3_long_output_empty_salt_info() -> None:
    prk = _hkdf_extract(b"", b"\x0b" * 22)
    assert prk.hex() == "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"
    okm = _hkdf_expand(prk, b"", 42)
    assert okm.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def test_derive_is_hkdf_with_documented_salt_and_info() -> None:
    prk = _hkdf_extract(KEY_SALT, GOLDEN_KEY)
    assert derive(GOLDEN_KEY, "bits", 70) == _hkdf_expand(prk, b"tracemark/bits", 70)


# --- keys ---------------------------------------------------------------------------------


@given(keys)
def test_bytes_keys_round_trip_and_fingerprint(material: bytes) -> None:
    key = as_key(material)
    assert key.material == material
    assert as_key(bytearray(material)) == key
    assert as_key(key) is key
    expected = hashlib.sha256(b"tracemark-key-fingerprint-v1\x00" + material).hexdigest()[:8]
    assert key.fingerprint == expected


def test_repr_never_shows_the_secret() -> None:
    key = as_key(GOLDEN_KEY)
    text = repr(key) + str(key)
    assert GOLDEN_KEY.decode() not in text
    assert GOLDEN_KEY.hex() not in text
    assert GOLDEN_KEY_FINGERPRINT in text
    passphrase_key = as_key(GOLDEN_PASSPHRASE)
    assert passphrase_key.material.hex() not in repr(passphrase_key)


def test_passphrase_is_stretched_with_documented_scrypt() -> None:
    key = as_key(GOLDEN_PASSPHRASE)
    assert key.material.hex() == GOLDEN_PASSPHRASE_MATERIAL
    assert key.fingerprint == GOLDEN_PASSPHRASE_FINGERPRINT
    expected = hashlib.scrypt(
        GOLDEN_PASSPHRASE.encode(), salt=b"tracemark-watermark-v1", n=2**14, r=8, p=1, dklen=32
    )
    assert key.material == expected
    assert as_key(GOLDEN_PASSPHRASE) == key  # cached, same result
    assert as_key(GOLDEN_PASSPHRASE + " ") != key


@pytest.mark.parametrize(
    "bad",
    [b"", b"fifteen bytes!!", bytearray(15), 123, None, [1, 2, 3], np.zeros(32, np.uint8), 1.5],
)
def test_bad_keys_raise_typed_errors(bad: object) -> None:
    with pytest.raises(WatermarkKeyError) as info:
        as_key(bad)  # type: ignore[arg-type]
    if not isinstance(bad, bytes | bytearray):
        assert type(bad).__name__ in str(info.value)
    else:
        assert "16 bytes" in str(info.value)


def test_empty_passphrase_and_bad_material_raise() -> None:
    with pytest.raises(WatermarkKeyError, match="empty"):
        as_key("")
    with pytest.raises(WatermarkKeyError):
        WatermarkKey(b"short")
    with pytest.raises(WatermarkKeyError):
        WatermarkKey(bytearray(32))  # type: ignore[arg-type]


# --- derivation ---------------------------------------------------------------------------


def test_golden_values() -> None:
    assert derive(GOLDEN_KEY, "sync", 16).hex() == GOLDEN_DERIVE_SYNC_16
    pn = pn_sequence(GOLDEN_KEY, "whiten", 64)
    assert np.packbits(pn > 0).tobytes().hex() == GOLDEN_PN_WHITEN_64
    assert pn_sequence(GOLDEN_KEY, "whiten", 10).tolist() == GOLDEN_PN_WHITEN_10
    assert permutation(GOLDEN_KEY, "bits", 12).tolist() == GOLDEN_PERMUTATION_BITS_12
    raw = keyed_rng(GOLDEN_KEY, "sync").bit_generator.random_raw(2)
    assert [int(v) for v in raw] == GOLDEN_RAW_SYNC


@given(keys, st.integers(1, 200))
@settings(max_examples=30)
def test_derive_labels_are_independent_and_prefix_stable(material: bytes, n: int) -> None:
    out = derive(material, "sync", n)
    assert len(out) == n
    assert derive(material, "sync", 200)[:n] == out
    assert derive(material, "bits", 32) != derive(material, "sync", 32)
    assert derive(material + b"\x00", "sync", 32) != derive(material, "sync", 32)


@given(keys, st.integers(0, 300))
@settings(max_examples=30)
def test_pn_sequence_and_permutation_shapes(material: bytes, n: int) -> None:
    pn = pn_sequence(material, "whiten", n)
    assert pn.dtype == np.int8 and pn.shape == (n,)
    assert set(np.unique(pn).tolist()) <= {-1, 1}
    assert np.array_equal(pn_sequence(material, "whiten", n + 70)[:n], pn)
    perm = permutation(material, "bits", n)
    assert np.array_equal(np.sort(perm), np.arange(n))
    assert np.array_equal(permutation(material, "bits", n), perm)


def test_pn_sequence_is_balanced_and_key_dependent() -> None:
    a = pn_sequence(GOLDEN_KEY, "whiten", 20000).astype(np.float64)
    b = pn_sequence(GOLDEN_KEY + b"!", "whiten", 20000).astype(np.float64)
    c = pn_sequence(GOLDEN_KEY, "sync", 20000).astype(np.float64)
    # mean and cross-correlations of independent +-1 sequences: std 1/sqrt(20000) ~ 0.007
    assert abs(a.mean()) < 0.03
    assert abs(a @ b) / a.size < 0.03
    assert abs(a @ c) / a.size < 0.03
    assert abs(a[:-1] @ a[1:]) / a.size < 0.03


def test_permutation_is_uniform_enough() -> None:
    # position of element 0 over many labels: roughly uniform over 8 slots
    positions = [int(np.argmax(permutation(GOLDEN_KEY, f"p{i}", 8) == 0)) for i in range(800)]
    counts = np.bincount(positions, minlength=8)
    assert counts.min() > 60 and counts.max() < 140


def test_keyed_rng_is_deterministic() -> None:
    a = keyed_rng(GOLDEN_KEY, "sync").standard_normal(5)
    b = keyed_rng(as_key(GOLDEN_KEY), "sync").standard_normal(5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, keyed_rng(GOLDEN_KEY, "bits").standard_normal(5))


@pytest.mark.parametrize("label", ["", 5, None, b"sync"])
def test_bad_labels_raise(label: object) -> None:
    with pytest.raises(ConfigError):
        derive(GOLDEN_KEY, label)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        pn_sequence(GOLDEN_KEY, label, 4)  # type: ignore[arg-type]


@pytest.mark.parametrize("n_bytes", [0, -1, 255 * 32 + 1, 2.0, "32", True])
def test_bad_derive_lengths_raise(n_bytes: object) -> None:
    with pytest.raises(ConfigError):
        derive(GOLDEN_KEY, "sync", n_bytes)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [-1, 2.5, "8", None])
def test_bad_sequence_lengths_raise(n: object) -> None:
    with pytest.raises(ConfigError):
        pn_sequence(GOLDEN_KEY, "whiten", n)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        permutation(GOLDEN_KEY, "bits", n)  # type: ignore[arg-type]


def test_bad_key_in_derived_functions_raises() -> None:
    for fn in (
        lambda k: derive(k, "x"),
        lambda k: pn_sequence(k, "x", 3),
        lambda k: keyed_rng(k, "x"),
    ):
        with pytest.raises(WatermarkKeyError):
            fn(b"short")

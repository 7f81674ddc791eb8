"""Watermark keys: normalisation, fingerprints, and keyed sub-keys, sequences and permutations.

A watermark key is at least 16 bytes of secret material. Users may instead give a
passphrase (a ``str`` of at least :data:`MIN_PASSPHRASE_CHARS` = 12 characters), which is
stretched with scrypt (salt ``b"tracemark-watermark-v1"``, ``n = 2**14``, ``r = 8``,
``p = 1``, 32 bytes). A shorter passphrase is refused with
:class:`~tracemark.errors.WatermarkKeyError`: scrypt slows a guess down but a 5-character
passphrase is still found in hours, and whoever finds the key can read, forge and remove
marks. ``as_key(passphrase, allow_short=True)`` accepts one on purpose (tests, demos). The
derivation costs about 50 ms, so it is cached per passphrase for the life of the process.

Everything keyed descends from the key material through :func:`derive`, which is HKDF
(RFC 5869) with SHA-256: the extract step uses the salt ``b"tracemark-watermark-v1"``, the
expand step the info ``b"tracemark/" + label``. Distinct labels (``"sync"``, ``"bits"``,
``"whiten"``, ...) give independent sub-keys, so no two uses of a key share randomness.

:func:`pn_sequence` and :func:`permutation` are built from the raw 64-bit output of
``PCG64``, whose stream numpy guarantees across versions and platforms; they are part of
the persisted watermark layout and are covered by golden-value tests. :func:`keyed_rng`
returns a full ``numpy.random.Generator`` on the same seed, for draws (floats, normals)
whose exact values are not part of a persisted layout: numpy reserves the right to change
the algorithms behind ``Generator`` methods between versions.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tracemark.errors import ConfigError, WatermarkKeyError

__all__ = [
    "read_key",
    "KeyLike",
    "MIN_KEY_BYTES",
    "MIN_PASSPHRASE_CHARS",
    "MIN_DISTINCT_KEY_BYTES",
    "MIN_DISTINCT_PASSPHRASE_CHARS",
    "KEY_SALT",
    "WatermarkKey",
    "as_key",
    "derive",
    "keyed_rng",
    "pn_sequence",
    "permutation",
]

MIN_KEY_BYTES = 16
"""Smallest accepted length of raw key material, in bytes."""

MIN_PASSPHRASE_CHARS = 12
"""Shortest accepted passphrase, in characters (Unicode code points). Twelve characters is
the floor of common password guidance for passphrases an attacker may guess offline (e.g.
OWASP's Password Storage and Authentication cheat sheets recommend at least 12 for
passwords without a second factor); below it :func:`as_key` refuses unless
``allow_short=True``."""

MIN_DISTINCT_KEY_BYTES = 8
"""Fewest distinct byte values accepted in raw key material: a random 16-byte key has 8 or
fewer with probability below 1e-5, while placeholders (all zeros, one repeated byte, a short
pattern) have one to a few. Below it :func:`as_key` refuses unless ``allow_short=True``."""

MIN_DISTINCT_PASSPHRASE_CHARS = 6
"""Fewest distinct characters accepted in a passphrase (twelve spaces, ``"aaaaaaaaaaaa"``
or ``"abababababab"`` are refused unless ``allow_short=True``)."""

KEY_SALT = b"tracemark-watermark-v1"
"""Salt of the passphrase stretching (scrypt) and of the HKDF extract step."""

_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_BYTES = 32
_FINGERPRINT_PREFIX = b"tracemark-key-fingerprint-v1\x00"
_HKDF_INFO_PREFIX = b"tracemark/"
_MAX_DERIVE_BYTES = 255 * hashlib.sha256().digest_size


@dataclass(frozen=True)
class WatermarkKey:
    """Secret key material of a watermark (at least 16 bytes); build it with :func:`as_key`.

    The representation shows only :attr:`fingerprint`, never the material.
    """

    material: bytes = field(repr=False)
    """The secret bytes."""

    def __post_init__(self) -> None:
        if not isinstance(self.material, bytes):
            raise WatermarkKeyError(
                f"key material must be bytes; got {type(self.material).__name__}"
            )
        if len(self.material) < MIN_KEY_BYTES:
            raise WatermarkKeyError(
                f"a watermark key needs at least {MIN_KEY_BYTES} bytes; got {len(self.material)}"
            )

    @property
    def fingerprint(self) -> str:
        """A short public id of the key (8 hex digits of a domain-separated SHA-256)."""
        return hashlib.sha256(_FINGERPRINT_PREFIX + self.material).hexdigest()[:8]

    def __repr__(self) -> str:
        return f"WatermarkKey(fingerprint={self.fingerprint!r})"


KeyLike = bytes | bytearray | str | WatermarkKey
"""What functions taking a key accept: raw bytes (>= 16), a passphrase, or a key."""


@functools.lru_cache(maxsize=64)
def _stretch(passphrase: str) -> bytes:
    return hashlib.scrypt(
        passphrase.encode("utf-8"),
        salt=KEY_SALT,
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        dklen=_SCRYPT_BYTES,
    )


def as_key(key: KeyLike, *, allow_short: bool = False) -> WatermarkKey:
    """Normalise ``key`` to a :class:`WatermarkKey`.

    ``bytes``/``bytearray`` are used as they are (at least 16 bytes, with at least
    :data:`MIN_DISTINCT_KEY_BYTES` distinct values); a ``str`` is a passphrase of at least
    :data:`MIN_PASSPHRASE_CHARS` characters, :data:`MIN_DISTINCT_PASSPHRASE_CHARS` of them
    different (any non-empty one with ``allow_short``), stretched with scrypt (see the
    module docstring). Anything else, or a key or passphrase too short or too uniform,
    raises :class:`WatermarkKeyError` (the message never repeats it).
    """
    if isinstance(key, WatermarkKey):
        return key
    if isinstance(key, bytes | bytearray):
        out = WatermarkKey(bytes(key))
        distinct = len(set(out.material))
        if distinct < MIN_DISTINCT_KEY_BYTES and not allow_short:
            raise WatermarkKeyError(
                f"the watermark key has only {distinct} distinct byte values: it looks like a "
                f"placeholder, not random bytes (a random key of >= {MIN_KEY_BYTES} bytes has "
                f"many more; as_key(..., allow_short=True) accepts it on purpose)"
            )
        return out
    if isinstance(key, str):
        if not key:
            raise WatermarkKeyError("a watermark passphrase must not be empty")
        if len(key) < MIN_PASSPHRASE_CHARS and not allow_short:
            raise WatermarkKeyError(
                f"a watermark passphrase needs at least {MIN_PASSPHRASE_CHARS} characters; got "
                f"{len(key)} (use a longer passphrase or a key file of >= {MIN_KEY_BYTES} random "
                "bytes; as_key(..., allow_short=True) accepts a short one on purpose)"
            )
        if len(set(key)) < MIN_DISTINCT_PASSPHRASE_CHARS and not allow_short:
            raise WatermarkKeyError(
                f"a watermark passphrase needs at least {MIN_DISTINCT_PASSPHRASE_CHARS} "
                f"different characters; this one has {len(set(key))} (a repeated character "
                "or pattern is guessed at once)"
            )
        return WatermarkKey(_stretch(key))
    raise WatermarkKeyError(
        "a watermark key must be bytes (at least 16), a passphrase str or a WatermarkKey; "
        f"got {type(key).__name__}"
    )


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _check_label(label: str) -> bytes:
    if not isinstance(label, str) or not label:
        raise ConfigError(f"a derivation label must be a non-empty str; got {label!r}")
    return label.encode("utf-8")


def _check_count(n: int, what: str, *, low: int = 0, high: int | None = None) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise ConfigError(f"{what} must be an int; got {type(n).__name__}")
    n = int(n)
    if n < low or (high is not None and n > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{what} must be {bound}; got {n}")
    return n


def derive(key: KeyLike, label: str, n_bytes: int = 32) -> bytes:
    """``n_bytes`` of sub-key for ``label``: HKDF-SHA256 of the key material.

    Extract with salt :data:`KEY_SALT`, expand with info ``b"tracemark/" + label``. Different
    labels give independent outputs; a shorter output is a prefix of a longer one.
    """
    material = as_key(key).material
    info = _HKDF_INFO_PREFIX + _check_label(label)
    n_bytes = _check_count(n_bytes, "n_bytes", low=1, high=_MAX_DERIVE_BYTES)
    return _hkdf_expand(_hkdf_extract(KEY_SALT, material), info, n_bytes)


def _bit_generator(key: KeyLike, label: str) -> np.random.PCG64:
    seed = int.from_bytes(derive(key, label), "big")
    return np.random.PCG64(np.random.SeedSequence(seed))


def keyed_rng(key: KeyLike, label: str) -> np.random.Generator:
    """A ``PCG64`` generator seeded with ``SeedSequence(int(derive(key, label)))``."""
    return np.random.Generator(_bit_generator(key, label))


def _raw_words(key: KeyLike, label: str, n: int) -> npt.NDArray[np.uint64]:
    return np.asarray(_bit_generator(key, label).random_raw(n), dtype=np.uint64)


def pn_sequence(key: KeyLike, label: str, n: int) -> npt.NDArray[np.int8]:
    """``n`` keyed pseudo-random values in {-1, +1} (``int8``).

    Bit ``i`` is bit ``i % 64`` (least significant first) of raw ``PCG64`` word ``i // 64``;
    bit 1 maps to +1. A shorter sequence is a prefix of a longer one for the same label.
    """
    n = _check_count(n, "n")
    words = _raw_words(key, label, -(-n // 64))
    bits = np.unpackbits(words.astype("<u8").view(np.uint8), bitorder="little")[:n]
    return (bits.astype(np.int8) * 2 - 1).astype(np.int8)


def permutation(key: KeyLike, label: str, n: int) -> npt.NDArray[np.intp]:
    """A keyed pseudo-random permutation of ``range(n)``.

    The indices sorted (stably) by ``n`` raw ``PCG64`` words: uniform up to ties, whose
    probability is below ``n**2 / 2**65``.
    """
    n = _check_count(n, "n")
    return np.argsort(_raw_words(key, label, n), kind="stable").astype(np.intp)


def read_key(
    *,
    key_file: str | os.PathLike[str] | None = None,
    key_env: str | None = None,
    passphrase_env: str | None = None,
    environ: Mapping[str, str] | None = None,
    allow_short_passphrase: bool = False,
) -> WatermarkKey | None:
    """The key from at most one source, or None when none is given.

    ``key_file``: the file's bytes are the key material, as they are (at least 16 bytes;
    a trailing newline is part of the key). ``key_env``: the named environment variable
    holds the key in hex (whitespace and a ``0x`` prefix allowed). ``passphrase_env``: the
    named variable holds a passphrase of at least :data:`MIN_PASSPHRASE_CHARS` characters
    (unless ``allow_short_passphrase``), stretched with scrypt
    (:func:`tracemark.watermark.keys.as_key`). ``environ`` defaults to ``os.environ``.
    Raises :class:`~tracemark.errors.WatermarkKeyError` or
    :class:`~tracemark.errors.ConfigError`; messages never contain key material.
    """
    given = [
        n
        for n, v in (
            ("--key-file", key_file),
            ("--key-env", key_env),
            ("--passphrase-env", passphrase_env),
        )
        if v is not None
    ]
    if len(given) > 1:
        raise ConfigError(f"give one key source, not {' and '.join(given)}")
    env = os.environ if environ is None else environ
    if key_file is not None:
        try:
            material = Path(key_file).read_bytes()
        except OSError as exc:
            raise WatermarkKeyError(
                f"cannot read the key file: {exc.strerror or exc}", source=os.fspath(key_file)
            ) from exc
        return as_key(material)
    if key_env is not None:
        text = _env_value(env, key_env)
        digits = "".join(text.split())
        if digits[:2].lower() == "0x":
            digits = digits[2:]
        try:
            material = bytes.fromhex(digits)
        except ValueError:
            raise WatermarkKeyError(
                f"environment variable {key_env} must hold the key in hex (an even number of "
                "0-9, a-f digits)"
            ) from None
        return as_key(material)
    if passphrase_env is not None:
        passphrase = _env_value(env, passphrase_env)
        if passphrase and len(passphrase) < MIN_PASSPHRASE_CHARS and not allow_short_passphrase:
            raise WatermarkKeyError(
                f"the passphrase in {passphrase_env} has {len(passphrase)} characters; a "
                f"watermark passphrase needs at least {MIN_PASSPHRASE_CHARS} (or give "
                f"--key-file / --key-env with >= {MIN_KEY_BYTES} random bytes)"
            )
        return as_key(passphrase, allow_short=allow_short_passphrase)
    return None


def _env_value(env: Mapping[str, str], name: str) -> str:
    if name not in env:
        raise WatermarkKeyError(f"environment variable {name} is not set")
    return env[name]

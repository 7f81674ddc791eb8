"""The fingerprint interface: one small base class, a result type, and a registry.

A fingerprinter implements ``_compute`` on an RGB ``uint8`` array; the base does the
plumbing: input conversion (anything :func:`tracemark.imageio.load_image` accepts), the
minimum-size check, batching with per-item errors, and distances.

Vector conventions (every :class:`Fingerprint`):

- ``kind == "binary"``: ``vector`` holds the ``dim`` bits packed with ``np.packbits``
  (most significant bit first, ``uint8``, ``ceil(dim / 8)`` bytes). Its hex form
  (:meth:`Fingerprint.to_hex`, ``str(fp)``) is ``vector.tobytes().hex()``: lower-case,
  ``ceil(dim / 4)`` digits, the first bit of the vector first. That is the usual form of
  each hash: for PDQ, the ThreatExchange reference's 64-digit string (``Hash256::format``,
  words 15 down to 0); for the ImageHash family, ``str(imagehash.phash(...))`` and its
  siblings. :meth:`Fingerprint.from_hex` reads it back. ``distance`` is the Hamming
  distance, an ``int`` (number of differing bits, ``0 .. dim``).
- ``kind == "float"``: ``vector`` is ``float32`` of length ``dim`` with unit L2 norm;
  ``distance`` is ``1 - cosine``, a ``float`` (``0 .. 2``). Its hex form is the vector's
  bytes, float32 little-endian (``8 * dim`` digits); it has no standard form elsewhere.

Inputs: every function that takes an image accepts what
:func:`tracemark.imageio.load_image` accepts (:data:`~tracemark.imageio.ImageSource`: a
path as ``str`` or ``os.PathLike``, ``bytes``/``bytearray``/``memoryview``, a binary file
object, a PIL image, a numpy array) and raises
:class:`~tracemark.errors.ImageSourceError` (or another
:class:`~tracemark.errors.ImageError`) for anything else.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

import numpy as np
import numpy.typing as npt

from tracemark.errors import (
    ConfigError,
    FingerprintError,
    ImageTooSmallError,
    TracemarkError,
    UnknownMethodError,
)
from tracemark.imageio import ImageSource

__all__ = [
    "Fingerprint",
    "Fingerprinter",
    "get_fingerprinter",
    "hamming_distance",
    "list_fingerprinters",
    "register_fingerprinter",
]

Kind = Literal["binary", "float"]
Metric = Literal["hamming", "ip"]

_POPCOUNT: Final = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


_FingerprintError = FingerprintError  # kept for internal callers


@dataclass(frozen=True, eq=False, slots=True)
class Fingerprint:
    """A computed fingerprint: which fingerprinter made it, its vector, its quality.

    ``quality`` is the fingerprinter's own confidence measure when it has one (PDQ: 0..100,
    below about 50 the hash is unreliable), else ``None``. Two fingerprints are equal when
    name, dtype, shape, values and quality are equal. ``str(fp)`` is :meth:`to_hex`.
    """

    name: str
    vector: npt.NDArray[Any]
    quality: float | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fingerprint):
            return NotImplemented
        return (
            self.name == other.name
            and self.quality == other.quality
            and self.vector.dtype == other.vector.dtype
            and self.vector.shape == other.vector.shape
            and bool(np.array_equal(self.vector, other.vector))
        )

    __hash__ = None  # type: ignore[assignment]  # mutable array inside

    def to_hex(self) -> str:
        """The vector as lower-case hex (module docstring: for binary fingerprints the
        standard form of the hash, e.g. PDQ's 64 digits; float32 little-endian bytes for
        float ones). :meth:`from_hex` reads it back."""
        v = np.asarray(self.vector)
        if v.dtype == np.float32:
            return v.astype("<f4").tobytes().hex()
        return v.tobytes().hex()

    def __str__(self) -> str:
        return self.to_hex()

    @classmethod
    def from_hex(cls, name: str, text: str, *, quality: float | None = None) -> Fingerprint:
        """The fingerprint of the registered fingerprinter ``name`` written as ``text`` by
        :meth:`to_hex` (upper or lower case; for PDQ, the reference's 64-digit string).

        Raises :class:`~tracemark.errors.UnknownMethodError` for an unknown ``name`` and
        :class:`~tracemark.errors.FingerprintError` for text that is not hex of the right
        length (``ceil(dim / 4)`` digits, even, for binary; ``8 * dim`` for float), or
        whose padding bits (when ``dim`` is not a multiple of 8) are set.
        """
        if not isinstance(text, str):
            raise FingerprintError(f"from_hex takes a hex str; got {type(text).__name__}")
        try:
            factory = _FINGERPRINTERS[name]
        except (KeyError, TypeError):
            raise UnknownMethodError(
                f"unknown fingerprinter {name!r}; known: {', '.join(sorted(_FINGERPRINTERS))}"
            ) from None
        kind, dim = getattr(factory, "kind"), int(getattr(factory, "dim"))  # noqa: B009
        n_bytes = (dim + 7) // 8 if kind == "binary" else 4 * dim
        if len(text) != 2 * n_bytes:
            raise FingerprintError(
                f"a {name!r} fingerprint is {2 * n_bytes} hex digits; got {len(text)}"
            )
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise FingerprintError(f"not hexadecimal: {text[:80]!r}") from None
        if kind == "binary":
            vector = np.frombuffer(raw, np.uint8).copy()
            spare = 8 * n_bytes - dim
            if spare and vector[-1] & ((1 << spare) - 1):
                raise FingerprintError(f"the {spare} padding bits of a {name!r} hash must be 0")
        else:
            vector = np.frombuffer(raw, "<f4").astype(np.float32)
            if not np.all(np.isfinite(vector)):
                raise FingerprintError(f"a {name!r} fingerprint holds NaN or infinity")
        return cls(name, vector, quality)


def hamming_distance(
    a: npt.NDArray[np.uint8] | Fingerprint, b: npt.NDArray[np.uint8] | Fingerprint
) -> int:
    """Number of differing bits (an ``int``) between two packed ``uint8`` bit vectors of the
    same shape, or two binary :class:`Fingerprint` objects (their ``vector``). Raises
    :class:`~tracemark.errors.FingerprintError` for other dtypes, shapes that differ, or
    fingerprints of two different fingerprinters."""
    if isinstance(a, Fingerprint) and isinstance(b, Fingerprint) and a.name != b.name:
        raise _FingerprintError(f"cannot compare a {a.name!r} fingerprint with {b.name!r}")
    a = np.asarray(a.vector if isinstance(a, Fingerprint) else a)
    b = np.asarray(b.vector if isinstance(b, Fingerprint) else b)
    if a.dtype != np.uint8 or b.dtype != np.uint8 or a.shape != b.shape:
        raise _FingerprintError(
            f"packed bit vectors must be uint8 of one shape; got {a.dtype}{a.shape} "
            f"and {b.dtype}{b.shape}"
        )
    return int(_POPCOUNT[np.bitwise_xor(a, b)].sum(dtype=np.int64))


class Fingerprinter(ABC):
    """Base of every fingerprinter (perceptual hashes, global and local descriptors)."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    dim: ClassVar[int]
    """Bits (binary) or floats (float) in the vector."""
    metric: ClassVar[Metric]
    """How an index compares vectors: ``"hamming"`` (binary) or ``"ip"`` (inner product)."""
    min_size: ClassVar[int] = 1
    """Smallest side (px) ``compute`` accepts; smaller images raise ImageTooSmallError."""

    # --- public API -----------------------------------------------------------------------

    def compute(self, image: ImageSource) -> Fingerprint:
        """Fingerprint ``image``: anything :func:`~tracemark.imageio.load_image` accepts (a
        path, bytes, a binary file object, a PIL image or an array), with the same result
        for the same pixels whichever form they come in. Raises the loader's
        :class:`~tracemark.errors.ImageError` subclasses for anything else or a bad file,
        :class:`~tracemark.errors.ImageTooSmallError` below ``min_size``."""
        from tracemark.imageio import load_image

        rgb = load_image(image)
        h, w = rgb.shape[:2]
        if min(h, w) < self.min_size:
            raise ImageTooSmallError(
                f"{self.name} needs both sides >= {self.min_size} px; got {w}x{h}"
            )
        return self._compute(rgb)

    def compute_many(self, images: Iterable[ImageSource]) -> list[Fingerprint | TracemarkError]:
        """Fingerprint each image; an item that fails gets its typed error in its slot.

        ``images`` is an iterable of images (a list, a generator, an ``(N, H, W, 3)``
        array); one image (a path, bytes, a PIL image) raises
        :class:`~tracemark.errors.FingerprintError` rather than being taken apart. Only
        :class:`~tracemark.errors.TracemarkError` is caught (bad inputs); anything else is a
        bug and propagates.
        """
        import os

        from PIL import Image

        if isinstance(images, str | bytes | bytearray | memoryview | os.PathLike | Image.Image) \
                or not isinstance(images, Iterable):
            raise _FingerprintError(
                f"compute_many takes an iterable of images; got {type(images).__name__} "
                "(for one image, call compute)"
            )
        out: list[Fingerprint | TracemarkError] = []
        for image in images:
            try:
                out.append(self.compute(image))
            except TracemarkError as exc:
                out.append(exc)
        return out

    def distance(self, a: Fingerprint, b: Fingerprint) -> int | float:
        """Hamming distance, an ``int`` in ``0 .. dim`` (binary), or ``1 - cosine``, a
        ``float`` in ``0 .. 2`` (float), between two of our fingerprints; anything else
        raises :class:`~tracemark.errors.FingerprintError`."""
        va, vb = self._vector(a), self._vector(b)
        if self.kind == "binary":
            return hamming_distance(va, vb)
        na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
        if na == 0.0 or nb == 0.0:
            raise _FingerprintError(f"{self.name}: a float fingerprint has zero norm")
        cos = float(np.dot(va.astype(np.float64), vb.astype(np.float64))) / (na * nb)
        return 1.0 - min(1.0, max(-1.0, cos))

    # --- hook -----------------------------------------------------------------------------

    @abstractmethod
    def _compute(self, rgb: npt.NDArray[np.uint8]) -> Fingerprint:
        """Fingerprint an RGB uint8 array ``(H, W, 3)`` of at least ``min_size`` per side."""

    # --- plumbing -------------------------------------------------------------------------

    @property
    def vector_shape(self) -> tuple[int]:
        """Shape of ``Fingerprint.vector``: packed bytes (binary) or floats."""
        return ((self.dim + 7) // 8,) if self.kind == "binary" else (self.dim,)

    def _vector(self, fp: Fingerprint) -> npt.NDArray[Any]:
        if not isinstance(fp, Fingerprint):
            raise _FingerprintError(
                f"{self.name}.distance takes Fingerprint objects; got {type(fp).__name__}"
            )
        if fp.name != self.name:
            raise _FingerprintError(f"cannot compare a {fp.name!r} fingerprint with {self.name!r}")
        want = np.uint8 if self.kind == "binary" else np.float32
        v = np.asarray(fp.vector)
        if v.dtype != want or v.shape != self.vector_shape:
            raise _FingerprintError(
                f"{self.name} fingerprints are {np.dtype(want)}{self.vector_shape}; "
                f"got {v.dtype}{v.shape}"
            )
        return v

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r}, dim={self.dim})"


_FINGERPRINTERS: dict[str, Callable[..., Fingerprinter]] = {}


def register_fingerprinter(
    name: str,
) -> Callable[[type[Fingerprinter]], type[Fingerprinter]]:
    """Class decorator registering a fingerprinter class under ``name`` (sets ``cls.name``)."""

    def deco(cls: type[Fingerprinter]) -> type[Fingerprinter]:
        if name in _FINGERPRINTERS:
            raise ConfigError(f"fingerprinter {name!r} is already registered")
        cls.name = name
        _FINGERPRINTERS[name] = cls
        return cls

    return deco


def get_fingerprinter(name: str, **config: Any) -> Fingerprinter:
    """An instance of the fingerprinter registered as ``name``, built with ``config``."""
    try:
        factory = _FINGERPRINTERS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name
        raise UnknownMethodError(
            f"unknown fingerprinter {name!r}; known: {', '.join(sorted(_FINGERPRINTERS))}"
        ) from None
    try:
        inspect.signature(factory).bind(**config)
    except TypeError as exc:
        raise ConfigError(f"fingerprinter {name!r}: {exc}") from None
    return factory(**config)


def list_fingerprinters() -> list[str]:
    """Names of the registered fingerprinters, sorted."""
    return sorted(_FINGERPRINTERS)

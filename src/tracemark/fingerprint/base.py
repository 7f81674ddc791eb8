"""The fingerprint interface: one small base class, a result type, and a registry.

A fingerprinter implements ``_compute`` on an RGB ``uint8`` array; the base does the
plumbing: input conversion (anything :func:`tracemark.imageio.load_image` accepts), the
minimum-size check, batching with per-item errors, and distances.

Vector conventions (every :class:`Fingerprint`):

- ``kind == "binary"``: ``vector`` holds the ``dim`` bits packed with ``np.packbits``
  (most significant bit first, ``uint8``, ``ceil(dim / 8)`` bytes); ``vector.tobytes().hex()``
  is the usual hex form (for PDQ, ThreatExchange's; for the ImageHash family, ImageHash's).
  ``distance`` is the Hamming distance (number of differing bits, ``0 .. dim``).
- ``kind == "float"``: ``vector`` is ``float32`` of length ``dim`` with unit L2 norm;
  ``distance`` is ``1 - cosine`` (``0 .. 2``).
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
    name, dtype, shape, values and quality are equal.
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


def hamming_distance(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> int:
    """Number of differing bits between two packed ``uint8`` bit vectors of the same shape."""
    a = np.asarray(a)
    b = np.asarray(b)
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

    def compute(self, image: Any) -> Fingerprint:
        """Fingerprint ``image`` (a path, bytes, file object, PIL image or array)."""
        from tracemark.imageio import load_image

        rgb = load_image(image)
        h, w = rgb.shape[:2]
        if min(h, w) < self.min_size:
            raise ImageTooSmallError(
                f"{self.name} needs both sides >= {self.min_size} px; got {w}x{h}"
            )
        return self._compute(rgb)

    def compute_many(self, images: Iterable[Any]) -> list[Fingerprint | TracemarkError]:
        """Fingerprint each image; an item that fails gets its typed error in its slot.

        Only :class:`~tracemark.errors.TracemarkError` is caught (bad inputs); anything
        else is a bug and propagates.
        """
        out: list[Fingerprint | TracemarkError] = []
        for image in images:
            try:
                out.append(self.compute(image))
            except TracemarkError as exc:
                out.append(exc)
        return out

    def distance(self, a: Fingerprint, b: Fingerprint) -> float:
        """Hamming distance (binary) or ``1 - cosine`` (float) between two of our fingerprints."""
        va, vb = self._vector(a), self._vector(b)
        if self.kind == "binary":
            return float(hamming_distance(va, vb))
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
    except KeyError:
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

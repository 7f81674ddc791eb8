"""The watermark interface: one small base class, a result type, and a registry.

A method implements ``_embed`` and ``_detect`` on RGB uint8 arrays; the base does the
plumbing: input conversion (anything :func:`tracemark.imageio.load_image` accepts),
size checks, payload conversion to bits, key checks, and turning "no watermark" into a
normal result rather than an exception.

Input policy (documented behaviour): every input is converted to RGB uint8 by the one
loader; grayscale inputs are replicated to three channels and alpha is composited over
white, so ``embed`` returns an RGB image (the commands, ``sign`` and the service keep an
alpha channel beside it: :func:`tracemark.imageio.colour_under_alpha`). Images below ``min_size`` on their short side
raise :class:`~tracemark.errors.ImageTooSmallError` in ``embed``; ``detect`` returns
``present=False`` for them (a crop too small to carry the mark is "not found").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from tracemark.errors import (
    AlreadyMarkedError,
    ConfigError,
    ImageTooSmallError,
    PayloadError,
    UnknownMethodError,
    WatermarkKeyError,
)
from tracemark.imageio import DEFAULT_MAX_PIXELS
from tracemark.watermark.payload import payload_to_bits

__all__ = [
    "format_payload",
    "parse_payload",
    "Detection",
    "WatermarkMethod",
    "register_method",
    "get_method",
    "list_methods",
    "payload_to_bits",
    "bits_to_bytes",
    "DEFAULT_ALPHA",
    "carried_mark",
    "embed_once",
]

Bits = npt.NDArray[np.uint8]

DEFAULT_ALPHA = 1e-4
"""Default false-positive rate for ``present``: a clean image is called marked with
probability at most this (for methods with a calibrated p-value)."""


@dataclass(frozen=True)
class Detection:
    """What a detector found.

    ``present`` is a tri-state: ``True`` (the mark is there, at the method's ``alpha``),
    ``False`` (it is not, or the image is too small to carry it) or ``None`` (the method
    cannot tell: it decodes bits from any image, marked or not, and has nothing to check
    them against; the peers of :mod:`tracemark.watermark.peers`, whose ``tells_presence``
    is False). Test ``present is True`` for "found"; ``None`` is falsy, so ``if
    det.present`` never counts an unknown as found.

    ``p_value`` is the probability that an unmarked image (or one marked with another
    key) scores at least ``score``; ``None`` for methods without a calibrated detector
    (the peers). ``payload`` is the decoded payload as bytes (big-endian, the method's
    capacity rounded up to whole bytes) when it could be read and verified, else None;
    for a method that cannot tell presence it is the decoded bits as bytes, unverified
    (``details["verified"]`` is False).
    """

    present: bool | None
    payload: bytes | None
    score: float
    p_value: float | None
    bits: Bits | None = None
    """Raw decoded payload bits (also for peers, which have no verification)."""
    bit_errors: int | None = None
    """Coded-bit errors corrected by the error-correcting code, when known."""
    method: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def payload_int(self) -> int | None:
        return None if self.payload is None else int.from_bytes(self.payload, "big")

    def to_dict(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "payload": None if self.payload is None else self.payload.hex(),
            "score": self.score,
            "p_value": self.p_value,
            "bit_errors": self.bit_errors,
            "method": self.method,
            "details": self.details,
        }


def bits_to_bytes(bits: Bits) -> bytes:
    n = bits.size
    pad = (-n) % 8
    return np.packbits(np.concatenate([np.zeros(pad, np.uint8), bits.astype(np.uint8)])).tobytes()


class WatermarkMethod(ABC):
    """Base of every watermarking method (ours and the peers' adapters)."""

    name: ClassVar[str]
    payload_bits: ClassVar[int]
    """Capacity in bits."""
    keyed: ClassVar[bool] = True
    """Whether the method takes a secret key (the peers do not)."""
    calibrated: ClassVar[bool] = False
    """Whether ``detect`` returns a calibrated p-value."""
    tells_presence: ClassVar[bool] = True
    """Whether ``detect`` can tell a marked image from an unmarked one. When False (the
    peers), ``Detection.present`` is None for every image it could read."""
    min_size: ClassVar[int] = 64
    """Smallest short side ``embed`` accepts."""
    extra: ClassVar[str | None] = None
    """The pip extra a method needs, if any."""

    # --- public API -----------------------------------------------------------------------

    def embed(self, image: Any, payload: Any, key: Any = None) -> npt.NDArray[np.uint8]:
        """Return a marked copy of ``image`` (RGB uint8) carrying ``payload``."""
        img = self._load(image)
        if min(img.shape[:2]) < self.min_size:
            raise ImageTooSmallError(
                f"{self.name} needs a short side of at least {self.min_size} px; got {img.shape[1]}x{img.shape[0]}"
            )
        bits = payload_to_bits(payload, self.payload_bits)
        return self._embed(img, bits, self._check_key(key))

    def detect(self, image: Any, key: Any = None, *, alpha: float = DEFAULT_ALPHA) -> Detection:
        """Look for the mark; an unmarked image gives ``present=False``, not an exception
        (``present=None`` from a method whose ``tells_presence`` is False: it cannot tell).
        """
        if not 0 < alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1); got {alpha}")
        img = self._load(image)
        k = self._check_key(key)
        if min(img.shape[:2]) < 16:
            return Detection(
                False,
                None,
                0.0,
                1.0 if self.calibrated else None,
                method=self.name,
                details={"reason": "image too small"},
            )
        return self._detect(img, k, alpha)

    # --- hooks --------------------------------------------------------------------------

    @abstractmethod
    def _embed(
        self, image: npt.NDArray[np.uint8], bits: Bits, key: Any
    ) -> npt.NDArray[np.uint8]: ...

    @abstractmethod
    def _detect(self, image: npt.NDArray[np.uint8], key: Any, alpha: float) -> Detection: ...

    # --- plumbing -----------------------------------------------------------------------

    @staticmethod
    def _load(image: Any) -> npt.NDArray[np.uint8]:
        """``image`` as RGB uint8. A path or bytes is decoded under the loader's default
        pixel limit; an array is already in memory, so no decompression-bomb limit applies
        to it (the caller loaded it under its own). An RGB uint8 array is used as it is, not
        copied (:func:`~tracemark.imageio.rgb_view`): methods never write into their input."""
        from tracemark.imageio import rgb_view

        return rgb_view(image, max_pixels=DEFAULT_MAX_PIXELS)

    def _check_key(self, key: Any) -> Any:
        if not self.keyed:
            if key is not None:  # as the CLI: a key given to a keyless method protects nothing
                raise WatermarkKeyError(
                    f"{self.name} is keyless: anyone can read its mark; do not give a key "
                    "(a keyed method, e.g. 'lattice', uses one)")
            return None
        if key is None:
            raise WatermarkKeyError(f"{self.name} needs a key (bytes of >= 16, or a passphrase)")
        from tracemark.watermark.keys import as_key

        return as_key(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, payload_bits={self.payload_bits})"


def carried_mark(method: WatermarkMethod, image: Any, key: Any = None, *,
                 alpha: float = DEFAULT_ALPHA) -> Detection | None:
    """The mark of ``method`` under ``key`` that ``image`` already carries, found by blind
    detection at false-positive rate ``alpha``; None when none is found. A method that
    cannot tell presence (``tells_presence`` False: the peers decode bits from any image)
    always gives None: its "mark" cannot be told from an unmarked image's noise. The
    detection may have ``payload`` None: a mark is there but no longer reads (e.g. two
    marks stacked). Used by :func:`embed_once` and by signing
    (:func:`tracemark.credentials.sign_image`, which keeps a carried mark)."""
    det = method.detect(image, key, alpha=alpha)
    return det if det.present is True else None


def embed_once(method: WatermarkMethod, image: Any, payload: Any, key: Any = None, *,
               allow_remark: bool = False,
               alpha: float = DEFAULT_ALPHA) -> tuple[npt.NDArray[np.uint8], str]:
    """Embed ``payload`` unless ``image`` already carries a mark of ``method`` and ``key``
    (:func:`carried_mark`): the workflow the commands and the service use, where
    :meth:`WatermarkMethod.embed` stays the primitive that always embeds.

    Returns ``(rgb, outcome)``, ``rgb`` an RGB uint8 (H, W, 3) array:

    * ``"embedded"``: no mark was found; ``rgb`` carries ``payload``;
    * ``"kept"``: the image already carries this same payload; ``rgb`` is the input as it
      is (no second mark: a mark embedded twice drifts and, stacked a few times, stops
      reading -- measured: bit errors 22-26 after the 2nd embed, no payload after the 4th);
    * ``"remarked"``: it carried another payload (or an unreadable mark) and
      ``allow_remark`` asked for a second mark on top anyway.

    Raises :class:`~tracemark.errors.AlreadyMarkedError` when the image carries a mark with
    another payload (or one that no longer reads) and ``allow_remark`` is False; the
    errors of :meth:`WatermarkMethod.embed` and ``detect`` otherwise.
    """
    img = method._load(image)
    found = carried_mark(method, img, key, alpha=alpha)
    if found is None:
        return method.embed(img, payload, key), "embedded"
    wanted = payload_to_bits(payload, method.payload_bits)
    same = (found.payload is not None
            and np.array_equal(payload_to_bits(found.payload, method.payload_bits), wanted))
    if same:
        return img, "kept"
    if not allow_remark:
        carried = ("an unreadable payload" if found.payload is None
                   else f"payload 0x{found.payload.hex()}")
        raise AlreadyMarkedError(
            f"the image already carries a {method.name} mark of this key with {carried}; a "
            "second mark would garble both (allow stacking marks explicitly to embed anyway)")
    return method.embed(img, payload, key), "remarked"


_METHODS: dict[str, Callable[..., WatermarkMethod]] = {}


def register_method(name: str) -> Callable[[type[WatermarkMethod]], type[WatermarkMethod]]:
    """Class decorator registering a method factory under ``name``."""

    def deco(cls: type[WatermarkMethod]) -> type[WatermarkMethod]:
        if name in _METHODS:
            raise ConfigError(f"watermark method {name!r} is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def get_method(name: str, **config: Any) -> WatermarkMethod:
    """An instance of the method registered as ``name`` (a missing extra raises
    :class:`~tracemark.errors.MissingExtraError` naming it)."""
    try:
        factory = _METHODS[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown watermark method {name!r}; known: {', '.join(sorted(_METHODS))}"
        ) from None
    return factory(**config)


def list_methods() -> list[str]:
    return sorted(_METHODS)


def parse_payload(spec: str, n_bits: int) -> bytes:
    """The payload written as ``0x<hex>``, a decimal integer or ``text:<utf-8>``, as bytes.

    The result has the method's capacity rounded up to whole bytes, big-endian and
    left-padded with zeros. :func:`format_payload` writes bytes back as ``0x<hex>``, which
    this function reads: payloads round-trip between output and input. A payload that is malformed
    or does not fit ``n_bits`` raises :class:`~tracemark.errors.PayloadError`.
    """
    value: int | bytes
    if spec.startswith("text:"):
        value = spec[len("text:") :].encode("utf-8")
        if not value:
            raise PayloadError("text payload is empty")
        if len(value) * 8 > n_bits:
            raise PayloadError(
                f"text payload is {len(value)} bytes in UTF-8; the method carries at most "
                f"{n_bits // 8} bytes ({n_bits} bits)"
            )
    elif spec[:2].lower() == "0x":
        digits = spec[2:]
        if not digits or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise PayloadError(f"{spec!r} is not hexadecimal (0x followed by 0-9, a-f)")
        value = int(digits, 16)
    elif spec.isascii() and spec.isdigit():
        value = int(spec)
    else:
        raise PayloadError(
            f"cannot read payload {spec!r}: give 0x<hex>, a decimal integer or text:<utf-8 text>"
        )
    return bits_to_bytes(payload_to_bits(value, n_bits))


def format_payload(payload: bytes) -> str:
    """``0x`` and the payload's bytes in hex (``"0x0000000000c0ffee"``): the form every
    tracemark output uses, read back by :func:`parse_payload`."""
    return "0x" + bytes(payload).hex()

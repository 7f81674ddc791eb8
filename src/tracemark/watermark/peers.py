"""Adapters for the peer watermarks of invisible-watermark: ``dwtDct``, ``dwtDctSvd``, ``rivaGan``.

The library (PyPI ``invisible-watermark``, import name ``imwatermark``) is the reference
implementation of the marks Stable Diffusion shipped with; benchmarks such as W-Bench
use it as a baseline. It sits behind the ``peers`` extra and is imported lazily, on the
first ``embed`` or ``detect``: importing this module (which registers the three names)
needs nothing beyond the core. ``import imwatermark`` itself imports torch, for every
method; ``rivaGan`` also needs onnxruntime and runs the two ONNX models shipped in the
library's wheel (``imwatermark/rivagan_{encoder,decoder}.onnx``), loaded once per process
by the library into sessions it builds itself (default threading: one thread per
physical core). Outputs were bit-identical between one and two intra-op threads, and
between repeated runs.

What a user must know about the peers:

- They take no key: anyone with the library can read and rewrite their payload. A key
  given to them is ignored, though a malformed key is still an error.
- They cannot tell presence, and tracemark says so (``tells_presence = False``): the
  library decodes bits from any image, marked or not, and exposes no confidence, so
  ``detect`` returns ``present=None`` ("unknown") whenever it could decode bits, with
  ``score=0.0``, ``p_value=None`` and ``details={"verified": False, "presence":
  "unknown"}``. ``payload`` and ``bits`` hold the decoded bits, unverified. An image
  under the library's area rule gives nothing to read: ``present`` is None there too,
  with no bits and the reason in ``details``.
  The CLI's ``watermark detect`` reports such images as "presence unknown", with
  ``"present": null`` in their JSON line and its own exit code (13), never the "found"
  code. Compare peers by bit accuracy against the payload that was embedded, the W-Bench
  protocol (what ``tracemark bench watermark`` does for every uncalibrated method); an
  unmarked image decodes to bits that agree with a given payload about half the time.

  Why not wrap their payload with a keyed check (a MAC or CRC in the payload, giving a
  decision with the check's false-match probability as its p-value)? It would make
  them different methods from the ones the benchmarks in the literature measure (their
  whole 32 or 64 bits are the payload there), take 16 or more of rivaGan's 32 bits, and
  turn every single bit error into "absent", so that their robustness figures would no
  longer compare with W-Bench's. A peer stays what the library is; a decision needs
  ``lattice``.
- The library works on BGR arrays (OpenCV's order); the adapters convert from and to
  the RGB arrays of tracemark.
- The library refuses images of fewer than 256 x 256 pixels by area. ``embed`` asks for a
  short side of at least 256 (``min_size``); ``detect`` follows the library's area rule,
  so that an elongated crop of a marked image can still be read, and returns
  ``present=None`` (unknown, nothing read) below it.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from tracemark._optional import require
from tracemark.errors import WatermarkError
from tracemark.watermark.base import (
    Bits,
    Detection,
    WatermarkMethod,
    bits_to_bytes,
    register_method,
)

__all__ = ["DwtDctWatermark", "DwtDctSvdWatermark", "RivaGanWatermark", "LIBRARY_MIN_AREA"]

LIBRARY_MIN_AREA = 256 * 256
"""Fewest pixels (rows x columns) invisible-watermark encodes or decodes."""

_MODEL_LOCK = threading.Lock()


class _InvisibleWatermark(WatermarkMethod):
    """Shared plumbing of the invisible-watermark adapters (not registered)."""

    keyed = False
    calibrated = False
    tells_presence = False
    extra = "peers"
    min_size = 256
    library_method: ClassVar[str]
    """The ``method`` argument of the library's ``encode``/``decode``."""

    def _library(self) -> ModuleType:
        return require("imwatermark", "peers", purpose=f"the {self.name!r} watermark")

    def _embed(self, image: npt.NDArray[np.uint8], bits: Bits, key: Any) -> npt.NDArray[np.uint8]:
        iw = self._library()
        bgr = np.ascontiguousarray(image[..., ::-1])
        try:
            encoder = iw.WatermarkEncoder()
            encoder.set_watermark("bits", [int(b) for b in bits])
            out = np.asarray(encoder.encode(bgr, self.library_method))
        except Exception as exc:
            raise WatermarkError(
                f"{self.name}: invisible-watermark failed to embed: {type(exc).__name__}: {exc}"
            ) from exc
        if out.shape != bgr.shape:
            raise WatermarkError(
                f"{self.name}: invisible-watermark returned shape {out.shape} for {bgr.shape}"
            )
        return np.ascontiguousarray(out.astype(np.uint8, copy=False)[..., ::-1])

    def _detect(self, image: npt.NDArray[np.uint8], key: Any, alpha: float) -> Detection:
        h, w = image.shape[:2]
        if h * w < LIBRARY_MIN_AREA:
            return Detection(  # nothing read, and these methods never tell absence either
                None,
                None,
                0.0,
                None,
                method=self.name,
                details={
                    "verified": False,
                    "presence": "unknown",
                    "reason": f"image too small (invisible-watermark needs {LIBRARY_MIN_AREA} pixels)",
                },
            )
        iw = self._library()
        bgr = np.ascontiguousarray(image[..., ::-1])
        try:
            decoder = iw.WatermarkDecoder("bits", self.payload_bits)
            raw = decoder.decode(bgr, self.library_method)
        except Exception as exc:
            raise WatermarkError(
                f"{self.name}: invisible-watermark failed to decode: {type(exc).__name__}: {exc}"
            ) from exc
        bits = np.asarray(raw).astype(np.uint8).reshape(-1)
        if bits.size != self.payload_bits:
            raise WatermarkError(
                f"{self.name}: invisible-watermark decoded {bits.size} bits; expected {self.payload_bits}"
            )
        return Detection(
            None,  # decoded, but the library cannot tell a marked image from an unmarked one
            bits_to_bytes(bits),
            0.0,
            None,
            bits=bits,
            method=self.name,
            details={"verified": False, "presence": "unknown"},
        )


@register_method("dwtDct")
class DwtDctWatermark(_InvisibleWatermark):
    """invisible-watermark's ``dwtDct``: 64 bits, keyless, unverified (see the module doc).

    Each bit is written, repeated over the image, as a quantisation of the largest AC
    coefficient of 4 x 4 blocks of the Haar LL band of the U (chroma) channel. ``present``
    is None (unknown) whenever bits could be decoded and ``score`` is always 0.0: judge
    it by bit accuracy against the known payload. The mark does not survive clipping: on images
    with many saturated pixels (white backgrounds, clip art) even the unattacked round
    trip can fall to chance.
    """

    payload_bits = 64
    library_method = "dwtDct"


@register_method("dwtDctSvd")
class DwtDctSvdWatermark(_InvisibleWatermark):
    """invisible-watermark's ``dwtDctSvd``: 64 bits, keyless, unverified (see the module doc).

    Like ``dwtDct`` but each bit quantises the largest singular value of the DCT of a
    4 x 4 block. ``present`` is None (unknown) whenever bits could be decoded and
    ``score`` is always 0.0: judge it by bit accuracy against the known payload. Saturated images
    defeat it as they do ``dwtDct``.
    """

    payload_bits = 64
    library_method = "dwtDctSvd"


@register_method("rivaGan")
class RivaGanWatermark(_InvisibleWatermark):
    """invisible-watermark's ``rivaGan`` (RivaGAN, ONNX on CPU): exactly 32 bits, keyless.

    A learned encoder/decoder; the library accepts no other payload length. ``present``
    is None (unknown) whenever bits could be decoded and ``score`` is always 0.0: judge
    it by bit accuracy against the known payload. About 1 s to embed and 1 s to detect a 512 x 512
    image on two CPU cores. The models load once per process on first use.
    """

    payload_bits = 32
    library_method = "rivaGan"

    def _library(self) -> ModuleType:
        iw = super()._library()
        require("onnxruntime", "peers", purpose="the 'rivaGan' watermark")
        with _MODEL_LOCK:
            try:
                iw.WatermarkEncoder.loadModel()  # idempotent: the library caches the sessions
            except Exception as exc:
                raise WatermarkError(
                    f"{self.name}: could not load the RivaGAN models: {type(exc).__name__}: {exc}"
                ) from exc
        return iw

"""The classic 64-bit perceptual hashes: ahash, dhash, phash, whash.

Each reproduces the ``ImageHash`` package (4.3) with its default ``hash_size=8``, using
the same preprocessing (Pillow's ``convert("L")`` and a Lanczos resize), so the bits
agree with ImageHash's; ``Fingerprint.to_hex()`` (``vector.tobytes().hex()``, 16 digits,
row-major bits, the first bit the most significant) is ImageHash's ``str`` form, read back
by ``Fingerprint.from_hex`` (as ``imagehash.hex_to_hash`` reads it).

The functions :func:`ahash`, :func:`dhash`, :func:`phash` and :func:`whash` take anything
:func:`tracemark.imageio.load_image` accepts (a path, bytes, a binary file object, a PIL
image, an array) and return the 64 bits packed: ``uint8`` of shape ``(8,)``. The same
pixels give the same hash in every form; anything else raises the loader's typed
:class:`~tracemark.errors.ImageError`.

- ``ahash``: 8x8 grey, bit = pixel > mean.
- ``dhash``: 9x8 grey (width 9), bit = pixel > its left neighbour (row-major).
- ``phash``: 32x32 grey, 2-D DCT-II, bit = low-frequency 8x8 coefficient (DC included) >
  their median.
- ``whash``: grey resized to the largest power of two not above the short side (at
  least 8), the coarsest Haar LL coefficient (the mean) removed, the Haar LL band at 8x8,
  bit = coefficient > their median. The Haar transforms reproduce PyWavelets' rounding
  step by step (no PyWavelets needed), so flat artwork whose blocks tie breaks the ties
  as ImageHash does.

None is robust to crops, rotations or flips; they are here as baselines and for
compatibility with existing hash databases.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import scipy.fft
from PIL import Image

from tracemark.fingerprint.base import Fingerprint, Fingerprinter, register_fingerprinter
from tracemark.imageio import ImageSource, load_image

__all__ = [
    "AHashFingerprinter",
    "DHashFingerprinter",
    "PHashFingerprinter",
    "WHashFingerprinter",
    "ahash",
    "dhash",
    "phash",
    "whash",
]

_HASH_SIZE: Final = 8
_LANCZOS: Final = Image.Resampling.LANCZOS


def _grey(rgb: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """ImageHash's preprocessing: Pillow ``convert("L")`` then a Lanczos resize."""
    im = Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("L")
    return np.asarray(im.resize((width, height), _LANCZOS))


def _pack(bits: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    return np.packbits(bits.ravel())


def _rgb(image: ImageSource) -> npt.NDArray[np.uint8]:
    """``image`` as RGB uint8 through the one loader, under its default pixel limit (as
    ``Fingerprinter.compute``)."""
    return load_image(image)


def ahash(image: ImageSource) -> npt.NDArray[np.uint8]:
    """Average hash of ``image`` (anything ``load_image`` accepts): 64 bits packed, ``uint8``
    ``(8,)``, as ImageHash's ``average_hash``."""
    return _ahash(_rgb(image))


def dhash(image: ImageSource) -> npt.NDArray[np.uint8]:
    """Difference hash (horizontal gradients) of ``image``: 64 bits packed, ``uint8``
    ``(8,)``, as ImageHash's ``dhash``."""
    return _dhash(_rgb(image))


def phash(image: ImageSource) -> npt.NDArray[np.uint8]:
    """DCT perceptual hash of ``image``: 64 bits packed, ``uint8`` ``(8,)``, as ImageHash's
    ``phash``."""
    return _phash(_rgb(image))


def whash(image: ImageSource) -> npt.NDArray[np.uint8]:
    """Haar wavelet hash of ``image``: 64 bits packed, ``uint8`` ``(8,)``, as ImageHash's
    ``whash``, ties included (module docstring)."""
    return _whash(_rgb(image))


def _ahash(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Average hash: 64 bits, packed (8 bytes)."""
    px = _grey(rgb, _HASH_SIZE, _HASH_SIZE)
    return _pack(px > px.mean())


def _dhash(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Difference hash (horizontal gradients): 64 bits, packed (8 bytes)."""
    px = _grey(rgb, _HASH_SIZE + 1, _HASH_SIZE)
    return _pack(px[:, 1:] > px[:, :-1])


def _phash(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """DCT perceptual hash: 64 bits, packed (8 bytes)."""
    n = _HASH_SIZE * 4
    px = _grey(rgb, n, n).astype(np.float64)
    dct = scipy.fft.dct(scipy.fft.dct(px, axis=0), axis=1)  # ImageHash's order and norm
    low = dct[:_HASH_SIZE, :_HASH_SIZE]
    return _pack(low > np.median(low))


_HAAR: Final = 0.7071067811865476  # PyWavelets' Haar filter taps, as doubles


def _dwt(x: npt.NDArray[np.float64], axis: int) -> tuple[npt.NDArray[np.float64], ...]:
    """One Haar analysis step along ``axis``, rounded as PyWavelets' convolution rounds."""
    x0 = x[0::2] if axis == 0 else x[:, 0::2]
    x1 = x[1::2] if axis == 0 else x[:, 1::2]
    return x1 * _HAAR + x0 * _HAAR, x1 * -_HAAR + x0 * _HAAR


def _idwt(
    a: npt.NDArray[np.float64], d: npt.NDArray[np.float64], axis: int
) -> npt.NDArray[np.float64]:
    """One Haar synthesis step along ``axis`` (PyWavelets: approximation first, then details)."""
    ac, dc = a * _HAAR, d * _HAAR
    shape = list(a.shape)
    shape[axis] *= 2
    out = np.empty(shape, dtype=np.float64)
    even, odd = (out[0::2], out[1::2]) if axis == 0 else (out[:, 0::2], out[:, 1::2])
    np.add(ac, dc, out=even)
    np.subtract(ac, dc, out=odd)
    return out


def _dwt2(x: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
    """PyWavelets' ``dwt2`` (Haar): axis 0 then axis 1; returns ``aa, ad, da, dd``."""
    a, d = _dwt(x, 0)
    return (*_dwt(a, 1), *_dwt(d, 1))


def _idwt2(
    aa: npt.NDArray[np.float64],
    ad: npt.NDArray[np.float64],
    da: npt.NDArray[np.float64],
    dd: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """PyWavelets' ``idwt2`` (Haar): axis 1 then axis 0."""
    return _idwt(_idwt(aa, ad, 1), _idwt(da, dd, 1), 0)


def _whash(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Haar wavelet hash: 64 bits, packed (8 bytes).

    Reproduces ImageHash's float arithmetic (PyWavelets' rounding, step by step), so that
    blocks which tie, as in flat artwork, break the tie the same way.
    """
    h, w = rgb.shape[:2]
    scale = max(1 << (min(h, w).bit_length() - 1), _HASH_SIZE)
    px = _grey(rgb, scale, scale) / 255.0
    levels = scale.bit_length() - 1
    details = []
    for _ in range(levels):  # full decomposition; the last LL (the mean) is dropped
        px, *d = _dwt2(px)
        details.append(d)
    px = np.zeros_like(px)
    for ad, da, dd in reversed(details):
        px = _idwt2(px, ad, da, dd)
    for _ in range(levels - (_HASH_SIZE.bit_length() - 1)):
        px = _dwt2(px)[0]
    return _pack(px > np.median(px))


class _ImageHash64(Fingerprinter):
    kind = "binary"
    dim = 64
    metric = "hamming"

    @staticmethod
    def _hash(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        raise NotImplementedError

    def _compute(self, rgb: npt.NDArray[np.uint8]) -> Fingerprint:
        return Fingerprint(self.name, self._hash(rgb))


@register_fingerprinter("ahash")
class AHashFingerprinter(_ImageHash64):
    """Average hash (64 bits, Hamming), as ImageHash's ``average_hash``."""

    _hash = staticmethod(_ahash)


@register_fingerprinter("dhash")
class DHashFingerprinter(_ImageHash64):
    """Difference hash (64 bits, Hamming), as ImageHash's ``dhash``."""

    _hash = staticmethod(_dhash)


@register_fingerprinter("phash")
class PHashFingerprinter(_ImageHash64):
    """DCT perceptual hash (64 bits, Hamming), as ImageHash's ``phash``."""

    _hash = staticmethod(_phash)


@register_fingerprinter("whash")
class WHashFingerprinter(_ImageHash64):
    """Haar wavelet hash (64 bits, Hamming), as ImageHash's ``whash``."""

    _hash = staticmethod(_whash)

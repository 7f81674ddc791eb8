"""Payload bits: conversion of user payloads to bits, and the keyed CRC-16 of ``lattice``.

All bit strings are most significant bit first. The CRC is CRC-16/CCITT (polynomial
0x1021, MSB first, no reflection, no final XOR) as :func:`binascii.crc_hqx` computes it;
``lattice`` derives its initial register from the key, so a decode with another key fails
the check except with probability ``2**-16``.
"""

from __future__ import annotations

import binascii
from typing import Any

import numpy as np
import numpy.typing as npt

from tracemark.errors import ConfigError, PayloadError

__all__ = [
    "crc16_of_bits",
    "payload_to_bits",
    "int_to_bits",
    "bits_to_int",
]

Bits = npt.NDArray[np.uint8]


def crc16_of_bits(bits: Any, init: int = 0xFFFF) -> int:
    """CRC-16/CCITT of a whole number of bytes given as bits (MSB first), from register ``init``.

    ``crc16_of_bits(unpackbits(b"123456789")) == 0x29B1`` (CRC-16/CCITT-FALSE).
    """
    array = np.asarray(bits, dtype=np.uint8).ravel()
    if array.size % 8:
        raise ConfigError(f"the CRC runs over whole bytes; got {array.size} bits")
    if not 0 <= init <= 0xFFFF:
        raise ConfigError(f"the CRC-16 initial register must be in [0, 0xFFFF]; got {init!r}")
    return binascii.crc_hqx(np.packbits(array).tobytes(), init)


def int_to_bits(value: int, width: int) -> Bits:
    """``value`` (``0 <= value < 2**width``) as ``width`` bits, MSB first."""
    nbytes = -(-width // 8)
    packed = np.frombuffer(int(value).to_bytes(nbytes, "big"), dtype=np.uint8)
    return np.unpackbits(packed)[8 * nbytes - width :]


def bits_to_int(bits: Bits) -> int:
    """Bits (MSB first) as an unsigned integer."""
    array = np.asarray(bits, dtype=np.uint8)
    pad = np.zeros((-array.size) % 8, dtype=np.uint8)
    return int.from_bytes(np.packbits(np.concatenate((pad, array))).tobytes(), "big")


def _as_bit_vector(value: Any, max_length: int, what: str) -> Bits:
    """A 1-D uint8 0/1 array of at most ``max_length`` bits, or :class:`PayloadError`."""
    if isinstance(value, str | bytes | bytearray):
        raise PayloadError(f"{what} must be an array of 0/1 bits; got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what} must be an array of 0/1 bits: {exc}") from exc
    if array.ndim != 1:
        raise PayloadError(f"{what} must be a 1-D array of bits; got shape {array.shape}")
    if array.size and array.dtype.kind not in "biu":
        raise PayloadError(f"{what} must hold integer or bool bits; got dtype {array.dtype}")
    if array.size > max_length:
        raise PayloadError(f"{what} must have at most {max_length} bits; got {array.size}")
    if array.size and array.dtype.kind != "b" and not np.all((array == 0) | (array == 1)):
        raise PayloadError(f"{what} must hold only 0 and 1")
    return array.astype(np.uint8)


def payload_to_bits(payload: Any, cap: int) -> Bits:
    """A payload (``int``, big-endian ``bytes``, or a sequence of 0/1 bits) as exactly ``cap``
    bits, MSB first; shorter payloads get zero bits on the left. Anything that does not fit,
    or is of another type, raises :class:`PayloadError` naming the capacity."""
    capacity = f"the payload capacity is {cap} bits"
    if isinstance(payload, bool | np.bool_):
        raise PayloadError(f"a payload must be bytes, an int or bits, not bool; {capacity}")
    if isinstance(payload, int | np.integer):
        value = int(payload)
        if not 0 <= value < 1 << cap:
            raise PayloadError(f"payload {value} is out of range [0, 2**{cap}); {capacity}")
        return int_to_bits(value, cap)
    if isinstance(payload, bytes | bytearray):
        value = int.from_bytes(payload, "big")
        nbytes = -(-cap // 8)
        if len(payload) > nbytes or value >= 1 << cap:
            raise PayloadError(
                f"payload of {len(payload)} bytes does not fit; {capacity} "
                f"({nbytes} bytes, big-endian, zero bits on the left)"
            )
        return int_to_bits(value, cap)
    if isinstance(payload, list | tuple | np.ndarray):
        bits = _as_bit_vector(payload, cap, f"payload bits ({capacity})")
        return np.concatenate((np.zeros(cap - bits.size, dtype=np.uint8), bits))
    raise PayloadError(
        f"a payload must be bytes, an int or a sequence of 0/1 bits; "
        f"got {type(payload).__name__}; {capacity}"
    )

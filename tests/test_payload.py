"""Payload bits and the keyed CRC-16 of ``lattice``.

The CRC and the bit conversions are checked against the bit-serial code they replaced
(kept here as the oracle), a published check value, and frozen info bits of ``lattice``:
a change would break every watermark already embedded.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracemark.errors import ConfigError, PayloadError
from tracemark.watermark.keys import as_key
from tracemark.watermark.ours import LatticeWatermark
from tracemark.watermark.payload import bits_to_int, crc16_of_bits, int_to_bits, payload_to_bits


def reference_crc16(bits: np.ndarray, init: int) -> int:
    """Bit-serial CRC-16 (polynomial 0x1021, MSB first, no reflection, no final XOR)."""
    register = init
    for bit in bits.tolist():
        feedback = bool(register & 0x8000) ^ bool(bit)
        register = (register << 1) & 0xFFFF
        if feedback:
            register ^= 0x1021
    return register


def reference_int_to_bits(value: int, width: int) -> np.ndarray:
    return np.array([(value >> (width - 1 - i)) & 1 for i in range(width)], dtype=np.uint8)


def reference_bits_to_int(bits: np.ndarray) -> int:
    value = 0
    for bit in bits.tolist():
        value = (value << 1) | bit
    return value


def test_crc_check_value() -> None:
    bits = np.unpackbits(np.frombuffer(b"123456789", np.uint8))
    assert crc16_of_bits(bits) == 0x29B1  # CRC-16/CCITT-FALSE


@given(st.binary(max_size=16), st.integers(0, 0xFFFF))
@settings(max_examples=300)
def test_crc16_matches_the_bit_serial_reference(data: bytes, init: int) -> None:
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    assert crc16_of_bits(bits, init) == reference_crc16(bits, init)


@given(st.integers(1, 80), st.data())
@settings(max_examples=300)
def test_bit_conversions_match_the_reference(width: int, data) -> None:
    value = data.draw(st.integers(0, 2**width - 1))
    bits = int_to_bits(value, width)
    assert bits.dtype == np.uint8
    assert np.array_equal(bits, reference_int_to_bits(value, width))
    assert bits_to_int(bits) == reference_bits_to_int(bits) == value


@pytest.mark.parametrize(("bits", "init"), [(np.zeros(12, np.uint8), 0), (np.zeros(8), -1),
                                            (np.zeros(8), 0x10000)])  # fmt: skip
def test_crc_rejects_partial_bytes_and_bad_registers(bits: np.ndarray, init: int) -> None:
    with pytest.raises(ConfigError):
        crc16_of_bits(bits, init)


# Info bits (payload + keyed CRC, np.packbits hex) of lattice, frozen: embedded marks use them.
GOLDEN_INFO = [
    (b"tracemark-golden-key-0001", 0x0123456789ABCDEF, "0123456789abcdef6406"),
    (b"tracemark-golden-key-0001", 0, "0000000000000000cd53"),
    ("open sesame", 0xC0FFEE, "0000000000c0ffeeb988"),
]


@pytest.mark.parametrize(("key", "payload", "expected"), GOLDEN_INFO)
def test_lattice_info_bits_are_frozen(key: bytes | str, payload: int, expected: str) -> None:
    info = LatticeWatermark()._info_bits(payload_to_bits(payload, 64), as_key(key, allow_short=True))
    assert np.packbits(info).tobytes().hex() == expected


@pytest.mark.parametrize(
    "payload",
    [-1, 2**64, True, np.bool_(False), 1.5, "abc", None, {"a": 1}, b"\x01" * 9,
     [0, 1] * 33, [0, 2, 1], [[0, 1]], np.array([0.0, 1.0]), np.zeros((2, 2), np.uint8),
     [0.0, 1.0]],
)  # fmt: skip
def test_bad_payloads_raise_payload_error_with_capacity(payload: object) -> None:
    with pytest.raises(PayloadError, match="64 bits"):
        payload_to_bits(payload, 64)


def test_payload_forms_agree() -> None:
    value = 0x00_12_34_56_78_9A_BC_DE
    as_bits = [int(b) for b in f"{value:064b}"]
    reference = reference_int_to_bits(value, 64)
    for form in (value, np.uint64(value), value.to_bytes(8, "big"), b"\x12\x34\x56\x78\x9a\xbc\xde",
                 bytearray(value.to_bytes(8, "big")), as_bits, as_bits[8:], np.array(as_bits),
                 np.array(as_bits, dtype=bool)):  # fmt: skip
        assert np.array_equal(payload_to_bits(form, 64), reference)


def test_bytes_must_fit_non_byte_multiple_capacity() -> None:
    assert bits_to_int(payload_to_bits(b"\x0f\xff\xff", 20)) == 0xFFFFF
    with pytest.raises(PayloadError, match="20 bits"):
        payload_to_bits(b"\x10\x00\x00", 20)
    with pytest.raises(PayloadError, match="20 bits"):
        payload_to_bits(2**20, 20)

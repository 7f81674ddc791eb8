"""The watermark payload layer: CRC, BCH error correction, keyed whitening, Chase decoding.

A :class:`PayloadCodec` turns a payload of up to 64 bits into ``n_coded`` coded bits and
recovers it from one *soft* value per coded bit. Layout (version
:data:`PAYLOAD_LAYOUT_VERSION`), all bit strings most significant bit first:

1. ``info = payload bits + keyed CRC``. The CRC (:func:`crc_of_bits`, width ``crc_bits``)
   runs over ``derive(key, "crc", 4)`` followed by the payload bits, so a decode with the
   wrong key fails the check, except with probability ``2**-crc_bits``.
2. ``codeword = info + parity``: a systematic binary BCH code over GF(2^m)
   (:class:`BCH`), shortened to ``len(info)`` information bits.
3. ``coded = codeword XOR whitening``, the whitening bits being
   ``pn_sequence(key, "whiten", n_coded) > 0``. Without the key the coded bits look random,
   and an all-zero payload does not give a constant pattern.

Soft values follow one convention: a positive value means bit 1, zero or negative means
bit 0, and ``abs(value)`` is the confidence. Hard bits ``b`` can be given as ``2 * b - 1``.

The keyed CRC separates keys and rejects random words; it is not a MAC. CRC, BCH and
whitening are affine, so whoever can read the coded bits of one marked image and knows its
payload can compute the coded bits of any other payload. Reading them requires the key
(the whitening here, and the detector's keyed sync pattern).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tracemark.errors import ConfigError, PayloadError
from tracemark.watermark.keys import KeyLike, as_key, derive, pn_sequence

__all__ = [
    "PAYLOAD_LAYOUT_VERSION",
    "MAX_PAYLOAD_BITS",
    "CRC_WIDTHS",
    "MAX_CHASE_BITS",
    "crc_of_bits",
    "crc8",
    "crc16",
    "bch_dimension",
    "BCH",
    "BCHResult",
    "PayloadCodec",
    "PayloadDecode",
    "payload_to_bits",
    "int_to_bits",
    "bits_to_int",
]

PAYLOAD_LAYOUT_VERSION = 1
"""Version of the coded-bit layout described in the module docstring."""

MAX_PAYLOAD_BITS = 64
"""Largest payload a :class:`PayloadCodec` carries."""

MAX_CHASE_BITS = 12
"""Largest ``chase_bits`` accepted by :meth:`PayloadCodec.decode` (4096 BCH decodes)."""

Bits = npt.NDArray[np.uint8]

# width -> (polynomial without the leading term, initial register). MSB first, not
# reflected, no final XOR: CRC-8/SMBUS, CRC-16/CCITT-FALSE (= IBM-3740), CRC-32/MPEG-2.
_CRC_SPECS: dict[int, tuple[int, int]] = {
    8: (0x07, 0x00),
    16: (0x1021, 0xFFFF),
    32: (0x04C11DB7, 0xFFFFFFFF),
}
CRC_WIDTHS = tuple(sorted(_CRC_SPECS))
"""CRC widths :class:`PayloadCodec` supports."""

# Primitive polynomials of GF(2^m), bit i = coefficient of x^i (Lin & Costello, App. B).
_PRIMITIVE_POLYS: dict[int, int] = {
    5: 0b100101,  # x^5 + x^2 + 1
    6: 0b1000011,  # x^6 + x + 1
    7: 0b10001001,  # x^7 + x^3 + 1
    8: 0b100011101,  # x^8 + x^4 + x^3 + x^2 + 1
    9: 0b1000010001,  # x^9 + x^4 + 1
    10: 0b10000001001,  # x^10 + x^3 + 1
}
_CRC_KEY_BYTES = 4


# --- CRC ------------------------------------------------------------------------------


def crc_of_bits(bits: Any, width: int = 16, *, init: int | None = None) -> int:
    """CRC of a bit string (any length, MSB first) with the standard polynomial of ``width``.

    Widths 8, 16 and 32 are CRC-8/SMBUS, CRC-16/CCITT-FALSE and CRC-32/MPEG-2 (MSB first,
    no reflection, no final XOR); ``init`` overrides the initial register.
    """
    if width not in _CRC_SPECS:
        raise ConfigError(f"CRC width must be one of {CRC_WIDTHS}; got {width!r}")
    poly, register = _CRC_SPECS[width]
    if init is not None:
        register = init
    top = 1 << (width - 1)
    mask = (1 << width) - 1
    for bit in np.asarray(bits, dtype=np.uint8).ravel().tolist():
        feedback = bool(register & top) ^ bool(bit)
        register = (register << 1) & mask
        if feedback:
            register ^= poly
    return register


def crc8(data: bytes) -> int:
    """CRC-8/SMBUS of ``data`` (polynomial 0x07, init 0): ``crc8(b"123456789") == 0xF4``."""
    return crc_of_bits(np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8)), 8)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (0x1021, init 0xFFFF): ``crc16(b"123456789") == 0x29B1``."""
    return crc_of_bits(np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8)), 16)


def int_to_bits(value: int, width: int) -> Bits:
    """``value`` as ``width`` bits, MSB first."""
    return np.array([(value >> (width - 1 - i)) & 1 for i in range(width)], dtype=np.uint8)


def bits_to_int(bits: Bits) -> int:
    """Bits (MSB first) as an unsigned integer."""
    value = 0
    for bit in bits.tolist():
        value = (value << 1) | bit
    return value


# --- GF(2^m) and BCH ------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    m: int
    n: int  # multiplicative order, 2^m - 1
    exp: list[int]  # alpha^i for i in [0, 2n)
    log: list[int]  # log[x] for x in [1, n]; log[0] unused
    exp_array: npt.NDArray[np.int64]


@functools.cache
def _field(m: int) -> _Field:
    n = (1 << m) - 1
    poly = _PRIMITIVE_POLYS[m]
    exp = [0] * (2 * n)
    log = [0] * (n + 1)
    x = 1
    for i in range(n):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & (1 << m):
            x ^= poly
    for i in range(n, 2 * n):
        exp[i] = exp[i - n]
    return _Field(m, n, exp, log, np.array(exp, dtype=np.int64))


def _check_m(m: int) -> int:
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or int(m) not in _PRIMITIVE_POLYS:
        raise ConfigError(f"BCH field degree m must be an int in [5, 10]; got {m!r}")
    return int(m)


def _cyclotomic_cosets(m: int, t: int) -> list[list[int]]:
    """The distinct cyclotomic cosets (mod 2^m - 1) of 1 .. 2t."""
    n = (1 << m) - 1
    seen: set[int] = set()
    cosets = []
    for i in range(1, 2 * t + 1):
        if i % n in seen:
            continue
        coset = []
        j = i % n
        while j not in coset:
            coset.append(j)
            j = (2 * j) % n
        seen.update(coset)
        cosets.append(coset)
    return cosets


def bch_dimension(m: int, t: int) -> int:
    """Number of information bits ``k`` of the length ``2**m - 1`` BCH code correcting ``t``.

    Zero or less means no such code.
    """
    m = _check_m(m)
    if isinstance(t, bool) or not isinstance(t, int | np.integer) or t < 1:
        raise ConfigError(f"BCH t must be an int >= 1; got {t!r}")
    n = (1 << m) - 1
    if 2 * int(t) >= n:
        return 0
    return n - sum(len(c) for c in _cyclotomic_cosets(m, int(t)))


@dataclass(frozen=True)
class BCHResult:
    """Outcome of :meth:`BCH.decode`. ``bits`` and ``codeword`` are ``None`` on failure."""

    bits: Bits | None
    """The decoded information bits (the first ``k_used`` bits of the codeword)."""
    corrected: int
    """Number of bits flipped to reach the codeword (0 on failure)."""
    codeword: Bits | None = field(default=None, repr=False)
    """The whole decoded codeword (information then parity bits)."""

    @property
    def ok(self) -> bool:
        """Whether decoding found a codeword within ``t`` bit flips."""
        return self.bits is not None


class BCH:
    """Binary narrow-sense primitive BCH code over GF(2^m), optionally shortened.

    The full code has length ``n = 2**m - 1`` and corrects up to ``t`` errors; its generator
    is the LCM of the minimal polynomials of ``alpha**1 .. alpha**(2t)``. Shortened to
    ``k_used <= k`` information bits, a codeword is ``n_used = k_used + parity_bits`` bits:
    the information bits, then the parity bits (systematic; array index ``i`` holds the
    coefficient of ``x**(n_used - 1 - i)``). Decoding: syndromes, Berlekamp-Massey, Chien
    search; it fails when the error locator's degree differs from its number of roots in
    the used positions, i.e. when more than ``t`` errors are detected.
    """

    def __init__(self, m: int, t: int, k_used: int | None = None) -> None:
        self.m = _check_m(m)
        k = bch_dimension(self.m, t)
        if k < 1:
            raise ConfigError(f"no BCH code over GF(2^{self.m}) corrects t={t} errors")
        self.t = int(t)
        self.n = (1 << self.m) - 1
        self.k = k
        if k_used is None:
            k_used = k
        if isinstance(k_used, bool) or not isinstance(k_used, int | np.integer):
            raise ConfigError(f"k_used must be an int; got {type(k_used).__name__}")
        if not 1 <= k_used <= k:
            raise ConfigError(f"k_used must be in [1, {k}] for BCH({self.n}, {k}); got {k_used}")
        self.k_used = int(k_used)
        self.parity_bits = self.n - k
        self.n_used = self.k_used + self.parity_bits
        self._gf = _field(self.m)
        self.generator = self._generator_polynomial()
        self._parity_matrix = self._build_parity_matrix()

    def __repr__(self) -> str:
        return (
            f"BCH(m={self.m}, t={self.t}, n={self.n}, k={self.k}, "
            f"n_used={self.n_used}, k_used={self.k_used})"
        )

    def _generator_polynomial(self) -> Bits:
        """Coefficients of g(x), lowest degree first."""
        gf = self._gf
        g = np.array([1], dtype=np.uint8)
        for coset in _cyclotomic_cosets(self.m, self.t):
            # minimal polynomial: prod (x + alpha^j) over the coset, coefficients in GF(2^m)
            poly = [1]
            for j in coset:
                shifted = [0, *poly]  # x * poly
                scaled = [gf.exp[gf.log[c] + j] if c else 0 for c in poly] + [0]
                poly = [a ^ b for a, b in zip(shifted, scaled, strict=True)]
            if any(c not in (0, 1) for c in poly):  # cannot happen for a real coset
                raise ConfigError(f"minimal polynomial of coset {coset} is not binary")
            g = (np.convolve(g, np.array(poly, dtype=np.uint8)) & 1).astype(np.uint8)
        return g

    def _build_parity_matrix(self) -> Bits:
        """Row ``j``: parity bits contributed by information bit ``j`` (shortened layout)."""
        r = self.parity_bits
        g_low = self.generator[:r]
        rem = np.zeros(r, dtype=np.uint8)  # x^r mod g, lowest degree first
        rem[:] = g_low
        rows = np.empty((self.k_used, r), dtype=np.uint8)
        for d in range(self.k_used):  # remainder of x^(r + d)
            rows[self.k_used - 1 - d] = rem[::-1]
            top = rem[r - 1]
            rem = np.concatenate(([0], rem[:-1])).astype(np.uint8)
            if top:
                rem ^= g_low
        return rows

    def encode(self, info: Any) -> Bits:
        """The codeword (``n_used`` bits) of ``k_used`` information bits."""
        bits = _as_bit_vector(info, self.k_used, "information bits", ConfigError)
        parity = (bits.astype(np.int64) @ self._parity_matrix.astype(np.int64)) & 1
        return np.concatenate((bits, parity.astype(np.uint8)))

    def syndromes(self, word: Any) -> list[int]:
        """``S_j = r(alpha**j)`` for ``j = 1 .. 2t`` (all zero exactly for codewords)."""
        bits = _as_bit_vector(word, self.n_used, "a BCH word", ConfigError)
        return self._syndromes(bits)

    def _syndromes(self, bits: Bits) -> list[int]:
        degrees = (self.n_used - 1 - np.flatnonzero(bits)).astype(np.int64)
        if degrees.size == 0:
            return [0] * (2 * self.t)
        j = np.arange(1, 2 * self.t + 1, dtype=np.int64)[:, None]
        values = self._gf.exp_array[(j * degrees[None, :]) % self.n]
        return np.bitwise_xor.reduce(values, axis=1).tolist()

    def _berlekamp_massey(self, s: list[int]) -> list[int]:
        """Error-locator coefficients (lowest degree first, trimmed) from syndromes."""
        exp, log, n = self._gf.exp, self._gf.log, self._gf.n
        c = [1] + [0] * (2 * self.t)
        b = [1] + [0] * (2 * self.t)
        length, shift, b_disc = 0, 1, 1
        for step in range(2 * self.t):
            d = s[step]
            for i in range(1, length + 1):
                if c[i] and s[step - i]:
                    d ^= exp[log[c[i]] + log[s[step - i]]]
            if d == 0:
                shift += 1
                continue
            factor = (log[d] - log[b_disc]) % n
            new = c.copy()
            for i in range(len(b) - shift):
                if b[i]:
                    new[i + shift] ^= exp[log[b[i]] + factor]
            if 2 * length <= step:
                b, b_disc = c, d
                length = step + 1 - length
                shift = 1
            else:
                shift += 1
            c = new
        return c[: length + 1]

    def _chien(self, locator: list[int]) -> npt.NDArray[np.int64]:
        """Degrees ``e < n_used`` with ``locator(alpha**-e) == 0``."""
        gf = self._gf
        e = np.arange(self.n_used, dtype=np.int64)
        total = np.zeros(self.n_used, dtype=np.int64)
        for i, coef in enumerate(locator):
            if coef:
                total ^= gf.exp_array[(gf.log[coef] - i * e) % self.n]
        return np.flatnonzero(total == 0)

    def decode(self, word: Any) -> BCHResult:
        """Correct up to ``t`` bit errors in ``word`` (``n_used`` bits of 0/1)."""
        bits = _as_bit_vector(word, self.n_used, "a BCH word", ConfigError)
        return self._decode(bits)

    def _decode(self, bits: Bits) -> BCHResult:
        s = self._syndromes(bits)
        if not any(s):
            return BCHResult(bits[: self.k_used].copy(), 0, bits.copy())
        locator = self._berlekamp_massey(s)
        degree = len(locator) - 1
        if degree > self.t:
            return BCHResult(None, 0)
        roots = self._chien(locator)
        if roots.size != degree:
            return BCHResult(None, 0)
        fixed = bits.copy()
        fixed[self.n_used - 1 - roots] ^= 1
        if any(self._syndromes(fixed)):  # defensive; cannot happen when deg == #roots
            return BCHResult(None, 0)
        return BCHResult(fixed[: self.k_used].copy(), int(degree), fixed)


def _as_bit_vector(
    value: Any, length: int | None, what: str, error: type[Exception], *, max_length: int = 0
) -> Bits:
    """A 1-D uint8 0/1 array of exactly ``length`` bits (or at most ``max_length``)."""
    if isinstance(value, str | bytes | bytearray):
        raise error(f"{what} must be an array of 0/1 bits; got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise error(f"{what} must be an array of 0/1 bits: {exc}") from exc
    if array.ndim != 1:
        raise error(f"{what} must be a 1-D array of bits; got shape {array.shape}")
    if array.size and array.dtype.kind not in "biu":
        raise error(f"{what} must hold integer or bool bits; got dtype {array.dtype}")
    if length is not None and array.size != length:
        raise error(f"{what} must have {length} bits; got {array.size}")
    if length is None and array.size > max_length:
        raise error(f"{what} must have at most {max_length} bits; got {array.size}")
    if array.size and array.dtype.kind != "b" and not np.all((array == 0) | (array == 1)):
        raise error(f"{what} must hold only 0 and 1")
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
        bits = _as_bit_vector(
            payload, None, f"payload bits ({capacity})", PayloadError, max_length=cap
        )
        return np.concatenate((np.zeros(cap - bits.size, dtype=np.uint8), bits))
    raise PayloadError(
        f"a payload must be bytes, an int or a sequence of 0/1 bits; "
        f"got {type(payload).__name__}; {capacity}"
    )


# --- the payload codec ----------------------------------------------------------------


@dataclass(frozen=True)
class PayloadDecode:
    """Outcome of :meth:`PayloadCodec.decode`; "no payload" is ``crc_ok=False``, not an error."""

    payload_bits: Bits | None
    """The payload, ``payload_bits`` bits MSB first; ``None`` unless ``crc_ok``."""
    payload_int: int | None
    """The payload as an unsigned integer; ``None`` unless ``crc_ok``."""
    payload_bytes: bytes | None
    """The payload big-endian, ``ceil(payload_bits / 8)`` bytes, zero bits on the left."""
    crc_ok: bool
    """Whether a codeword passing the keyed CRC was found."""
    corrected: int
    """Hard-decision bit errors between the soft vector and the decoded codeword (0 if none)."""
    candidates_tried: int
    """Codewords tested against the CRC (1, or ``2**chase_bits`` when Chase ran)."""


@dataclass(frozen=True)
class PayloadCodec:
    """Payload of ``payload_bits`` bits + keyed CRC of ``crc_bits``, BCH over GF(2^m), whitened.

    ``t`` defaults to the largest number of correctable errors for which the BCH code of
    length ``2**m - 1`` still holds the ``payload_bits + crc_bits`` information bits; the
    defaults (64 + 16 bits, m = 7) give t = 6 and 122 coded bits. Invalid sizes raise
    :class:`ConfigError`. See the module docstring for the layout.
    """

    payload_bits: int = 64
    crc_bits: int = 16
    m: int = 7
    t: int | None = None
    _bch: BCH = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pb = self.payload_bits
        if isinstance(pb, bool) or not isinstance(pb, int) or not 1 <= pb <= MAX_PAYLOAD_BITS:
            raise ConfigError(f"payload_bits must be an int in [1, {MAX_PAYLOAD_BITS}]; got {pb!r}")
        if isinstance(self.crc_bits, bool) or self.crc_bits not in _CRC_SPECS:
            raise ConfigError(f"crc_bits must be one of {CRC_WIDTHS}; got {self.crc_bits!r}")
        m = _check_m(self.m)
        info = self.payload_bits + self.crc_bits
        t = self.t
        if t is None:
            t = 0
            while bch_dimension(m, t + 1) >= info:
                t += 1
            if t == 0:
                raise ConfigError(
                    f"{info} information bits do not fit any BCH code over GF(2^{m}) "
                    f"(length {2**m - 1}); use a larger m"
                )
        elif isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ConfigError(f"t must be None or an int >= 1; got {t!r}")
        elif bch_dimension(m, t) < info:
            raise ConfigError(
                f"the BCH code over GF(2^{m}) correcting t={t} has k={max(bch_dimension(m, t), 0)}"
                f" information bits; {info} are needed (payload {self.payload_bits}"
                f" + CRC {self.crc_bits})"
            )
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "t", int(t))
        object.__setattr__(self, "_bch", BCH(m, int(t), info))

    @property
    def info_bits(self) -> int:
        """Payload plus CRC bits."""
        return self.payload_bits + self.crc_bits

    @property
    def n_coded(self) -> int:
        """Number of coded bits (the shortened BCH length)."""
        return self._bch.n_used

    @property
    def bch(self) -> BCH:
        """The underlying (shortened) BCH code."""
        return self._bch

    @property
    def payload_nbytes(self) -> int:
        """Length of :attr:`PayloadDecode.payload_bytes`: ``ceil(payload_bits / 8)``."""
        return -(-self.payload_bits // 8)

    def to_bits(self, payload: Any) -> Bits:
        """The payload as ``payload_bits`` bits (MSB first); see :meth:`encode` for inputs."""
        return payload_to_bits(payload, self.payload_bits)

    def _crc(self, payload: Bits, crc_key: bytes) -> Bits:
        key_bits = np.unpackbits(np.frombuffer(crc_key, dtype=np.uint8))
        value = crc_of_bits(np.concatenate((key_bits, payload)), self.crc_bits)
        return int_to_bits(value, self.crc_bits)

    def _whitening(self, key: KeyLike) -> Bits:
        return (pn_sequence(key, "whiten", self.n_coded) > 0).astype(np.uint8)

    def encode(self, payload: Any, key: KeyLike) -> Bits:
        """The ``n_coded`` coded bits (uint8 0/1) of ``payload`` under ``key``.

        ``payload`` is an ``int`` in ``[0, 2**payload_bits)``, ``bytes`` (big-endian, at
        most ``ceil(payload_bits / 8)`` bytes, shorter ones zero-padded on the left), or a
        1-D sequence of 0/1 integers or bools, at most ``payload_bits`` long (zero-padded on
        the left). Anything else raises :class:`PayloadError`; a bad key
        :class:`~tracemark.errors.WatermarkKeyError`.
        """
        bits = self.to_bits(payload)
        wkey = as_key(key)
        info = np.concatenate((bits, self._crc(bits, derive(wkey, "crc", _CRC_KEY_BYTES))))
        return self._bch.encode(info) ^ self._whitening(wkey)

    def _soft_vector(self, soft: Any) -> npt.NDArray[np.float64]:
        try:
            array = np.asarray(soft)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"soft values must be an array of numbers: {exc}") from exc
        if array.dtype.kind not in "iuf":
            raise PayloadError(f"soft values must be real numbers; got dtype {array.dtype}")
        if array.shape != (self.n_coded,):
            raise PayloadError(
                f"soft values must be a 1-D array of {self.n_coded} values; got shape {array.shape}"
            )
        array = array.astype(np.float64)
        if not np.all(np.isfinite(array)):
            raise PayloadError("soft values contain NaN or infinite values")
        return array

    def _check_info(self, codeword: Bits, crc_key: bytes) -> bool:
        payload = codeword[: self.payload_bits]
        check = codeword[self.payload_bits : self.info_bits]
        return bool(np.array_equal(self._crc(payload, crc_key), check))

    def decode(self, soft: Any, key: KeyLike, *, chase_bits: int = 0) -> PayloadDecode:
        """Recover the payload from ``n_coded`` soft values (positive means bit 1).

        Hard decisions are un-whitened, BCH-decoded and checked against the keyed CRC. If
        that fails and ``chase_bits = c > 0``, Chase-II decoding flips every subset of the
        ``c`` least reliable bits (``2**c`` patterns, the empty one being the plain decode),
        BCH-decodes each, and among the codewords passing the CRC keeps the one best
        correlated with the soft values. A failed decode is ``crc_ok=False``, not an error.
        """
        values = self._soft_vector(soft)
        if isinstance(chase_bits, bool) or not isinstance(chase_bits, int | np.integer):
            raise ConfigError(f"chase_bits must be an int; got {type(chase_bits).__name__}")
        chase_bits = int(chase_bits)
        if not 0 <= chase_bits <= min(MAX_CHASE_BITS, self.n_coded):
            raise ConfigError(
                f"chase_bits must be in [0, {min(MAX_CHASE_BITS, self.n_coded)}]; got {chase_bits}"
            )
        wkey = as_key(key)
        crc_key = derive(wkey, "crc", _CRC_KEY_BYTES)
        whitening = self._whitening(wkey)
        hard = (values > 0).astype(np.uint8) ^ whitening
        signed = np.where(whitening == 1, -values, values)  # soft values of un-whitened bits

        first = self._bch._decode(hard)
        tried = 1
        best: Bits | None = None
        if first.codeword is not None and self._check_info(first.codeword, crc_key):
            best = first.codeword
        elif chase_bits:
            weakest = np.argsort(np.abs(values), kind="stable")[:chase_bits]
            best_score = -np.inf
            for pattern in range(1, 1 << chase_bits):
                flips = weakest[(pattern >> np.arange(chase_bits)) & 1 == 1]
                trial = hard.copy()
                trial[flips] ^= 1
                result = self._bch._decode(trial)
                tried += 1
                if result.codeword is None or not self._check_info(result.codeword, crc_key):
                    continue
                score = float(signed @ (2.0 * result.codeword - 1.0))
                if score > best_score:
                    best, best_score = result.codeword, score
        if best is None:
            return PayloadDecode(None, None, None, False, 0, tried)
        payload = best[: self.payload_bits].copy()
        value = bits_to_int(payload)
        return PayloadDecode(
            payload_bits=payload,
            payload_int=value,
            payload_bytes=value.to_bytes(self.payload_nbytes, "big"),
            crc_ok=True,
            corrected=int(np.count_nonzero(hard != best)),
            candidates_tried=tried,
        )

    def false_match_probability(self, candidates_tried: int) -> float:
        """Upper bound on P(a random soft vector decodes with a passing CRC).

        ``min(1, candidates_tried * 2**-crc_bits)``: each tested codeword passes the keyed
        CRC with probability ``2**-crc_bits``. The BCH decoder fails on most random words
        before the CRC is even checked, so the true rate is lower still.
        """
        if isinstance(candidates_tried, bool) or not isinstance(candidates_tried, int | np.integer):
            raise ConfigError(
                f"candidates_tried must be an int; got {type(candidates_tried).__name__}"
            )
        if candidates_tried < 0:
            raise ConfigError(f"candidates_tried must be >= 0; got {candidates_tried}")
        return min(1.0, int(candidates_tried) * 2.0**-self.crc_bits)

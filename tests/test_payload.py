"""Payload layer: CRC (against binascii and check values), BCH (against published generator
polynomials and brute-force nearest-codeword search), PayloadCodec round trips, Chase
decoding, key separation and false-match rates."""

from __future__ import annotations

import binascii
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracemark.errors import ConfigError, PayloadError, WatermarkKeyError
from tracemark.watermark.keys import derive, pn_sequence
from tracemark.watermark.payload import (
    BCH,
    PayloadCodec,
    bch_dimension,
    crc8,
    crc16,
    crc_of_bits,
)

KEY = b"tracemark-golden-key-0001"
OTHER_KEY = b"tracemark-golden-key-0002"
# Frozen coded bits (np.packbits hex) of layout version 1; a change breaks old watermarks.
GOLDEN_ENCODE_DEFAULT = "4f153cea1b4e176f7d8147fbd7c37440"  # 0x0123456789ABCDEF
GOLDEN_ENCODE_DEFAULT_ZERO = "4e36798d92e5da80d4d41da427f35cc0"  # 0
GOLDEN_ENCODE_SMALL = "e5fb9e341e6fa4a0"  # PayloadCodec(20, 8, m=6), 0xABCDE

DEFAULT = PayloadCodec()
SMALL = PayloadCodec(payload_bits=20, crc_bits=8, m=6)
CODECS = [DEFAULT, SMALL, PayloadCodec(payload_bits=48, crc_bits=32, m=8)]

keys = st.binary(min_size=16, max_size=40)


def soft_of(bits: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Soft values for coded bits: +-1, with random magnitudes in [0.5, 2] if ``rng``."""
    signs = 2.0 * bits - 1.0
    return signs if rng is None else signs * rng.uniform(0.5, 2.0, bits.size)


def bits_to_int(bits: np.ndarray) -> int:
    return int("".join(map(str, bits.tolist())) or "0", 2)


# --- CRC ----------------------------------------------------------------------------------


def test_crc_check_values() -> None:
    check = b"123456789"
    assert crc16(check) == 0x29B1  # CRC-16/CCITT-FALSE
    assert crc8(check) == 0xF4  # CRC-8/SMBUS
    assert crc_of_bits(np.unpackbits(np.frombuffer(check, np.uint8)), 32) == 0x0376E6E7  # MPEG-2


@given(st.binary(max_size=64))
def test_crc16_matches_binascii(data: bytes) -> None:
    assert crc16(data) == binascii.crc_hqx(data, 0xFFFF)


@given(st.binary(max_size=16), st.integers(0, 0xFFFF))
def test_crc_of_bits_init_matches_binascii(data: bytes, init: int) -> None:
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    assert crc_of_bits(bits, 16, init=init) == binascii.crc_hqx(data, init)


def test_crc_width_is_validated() -> None:
    with pytest.raises(ConfigError):
        crc_of_bits([1, 0], 12)


# --- BCH ----------------------------------------------------------------------------------

# Generator polynomials (octal, highest degree first) from Lin & Costello, Appendix C,
# built on the same primitive polynomials.
PUBLISHED_GENERATORS = {
    (5, 1): 0o45,
    (5, 2): 0o3551,
    (5, 3): 0o107657,
    (6, 2): 0o12471,
    (6, 3): 0o1701317,
    (7, 2): 0o41567,
    (7, 3): 0o11554743,
    (8, 2): 0o267543,
}


@pytest.mark.parametrize(("m", "t"), sorted(PUBLISHED_GENERATORS))
def test_generator_polynomial_matches_published_table(m: int, t: int) -> None:
    g = BCH(m, t).generator  # lowest degree first
    assert int("".join(map(str, g[::-1].tolist())), 2) == PUBLISHED_GENERATORS[(m, t)]


@pytest.mark.parametrize(
    ("m", "t", "n", "k"),
    [(7, 6, 127, 85), (7, 7, 127, 78), (6, 3, 63, 45), (8, 18, 255, 131), (5, 3, 31, 16),
     (9, 4, 511, 475), (10, 5, 1023, 973), (5, 5, 31, 11), (5, 7, 31, 6)],
)  # fmt: skip
def test_dimensions_match_standard_tables(m: int, t: int, n: int, k: int) -> None:
    code = BCH(m, t)
    assert (code.n, code.k) == (n, k)
    assert bch_dimension(m, t) == k
    assert code.generator.size - 1 == n - k


def test_generator_divides_x_n_minus_1() -> None:
    for m, t in [(5, 3), (6, 5), (7, 6), (8, 18)]:
        code = BCH(m, t)
        x_n_1 = np.zeros(code.n + 1, dtype=np.uint8)
        x_n_1[[0, code.n]] = 1
        remainder = x_n_1[::-1].copy()  # highest degree first
        g = code.generator[::-1]
        for i in range(remainder.size - g.size + 1):
            if remainder[i]:
                remainder[i : i + g.size] ^= g
        assert not remainder.any(), (m, t)


@pytest.mark.parametrize(("m", "t", "k_used"), [(7, 6, None), (7, 6, 80), (5, 3, None),
                                                (6, 3, 20), (8, 18, 100), (10, 5, 64)])  # fmt: skip
def test_bch_corrects_every_pattern_up_to_t(m: int, t: int, k_used: int | None) -> None:
    code = BCH(m, t, k_used)
    rng = np.random.default_rng(m * 100 + t)
    for trial in range(150):
        info = rng.integers(0, 2, code.k_used, dtype=np.uint8)
        word = code.encode(info)
        assert np.array_equal(word[: code.k_used], info)  # systematic
        assert not any(code.syndromes(word))
        weight = trial % (t + 1)
        received = word.copy()
        received[rng.choice(code.n_used, weight, replace=False)] ^= 1
        result = code.decode(received)
        assert result.ok
        assert np.array_equal(result.bits, info)
        assert np.array_equal(result.codeword, word)
        assert result.corrected == weight


@pytest.mark.parametrize(("m", "t", "k_used"), [(7, 6, None), (7, 6, 80), (6, 3, None)])
def test_bch_never_reports_t_plus_one_errors_as_the_original(
    m: int, t: int, k_used: int | None
) -> None:
    code = BCH(m, t, k_used)
    rng = np.random.default_rng(7)
    failed = miscorrected = 0
    for _ in range(300):
        word = code.encode(rng.integers(0, 2, code.k_used, dtype=np.uint8))
        received = word.copy()
        received[rng.choice(code.n_used, t + 1, replace=False)] ^= 1
        result = code.decode(received)
        if result.ok:
            miscorrected += 1
            assert result.codeword is not None
            assert not np.array_equal(result.codeword, word)
            assert not any(code.syndromes(result.codeword))
            assert result.corrected <= t
            assert np.count_nonzero(result.codeword != received) == result.corrected
        else:
            failed += 1
    assert failed + miscorrected == 300
    assert failed > 0  # most (t+1)-error words are detected, not miscorrected


def popcount(values: np.ndarray) -> np.ndarray:
    return np.unpackbits(values.astype(np.int64).view(np.uint8)).reshape(-1, 64).sum(axis=1)


def _codeword_ints(code: BCH) -> np.ndarray:
    """Every codeword as an int (bit d = coefficient of x^d), spanned by x^i g(x)."""
    g = int("".join(map(str, code.generator[::-1].tolist())), 2)
    words = np.zeros(1, dtype=np.int64)
    for i in range(code.k_used):
        words = np.concatenate((words, words ^ (g << i)))
    return words


@pytest.mark.parametrize("k_used", [16, 9])
def test_bch_decode_matches_brute_force_nearest_codeword(k_used: int) -> None:
    code = BCH(5, 3, k_used)  # (31, 16) and its shortening (24, 9); minimum distance 7
    words = _codeword_ints(code)
    weights = np.arange(code.n_used - 1, -1, -1, dtype=np.int64)  # array index -> degree
    rng = np.random.default_rng(11)
    for _ in range(200):
        info = rng.integers(0, 2, code.k_used, dtype=np.uint8)
        received = code.encode(info)
        assert int((received.astype(np.int64) << weights).sum()) in set(words.tolist())
        received[rng.choice(code.n_used, rng.integers(0, 8), replace=False)] ^= 1
        as_int = int((received.astype(np.int64) << weights).sum())
        distances = popcount(words ^ as_int)
        nearest = int(distances.min())
        result = code.decode(received)
        if nearest <= code.t:
            assert result.ok and result.corrected == nearest
            decoded = int((result.codeword.astype(np.int64) << weights).sum())
            assert decoded == int(words[np.argmin(distances)])
        else:
            assert not result.ok


@pytest.mark.parametrize(
    ("args", "match"),
    [((4, 2), "m"), ((11, 2), "m"), ((True, 2), "m"), ((5, 0), "t >= 1"), ((5, 16), "corrects"),
     ((7, 6, 0), "k_used"), ((7, 6, 86), "k_used"), ((7, 6, 8.0), "k_used")],
)  # fmt: skip
def test_bad_bch_parameters_raise(args: tuple, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BCH(*args)


def test_bad_bch_words_raise() -> None:
    code = BCH(5, 2)
    with pytest.raises(ConfigError):
        code.encode(np.zeros(code.k_used + 1, np.uint8))
    with pytest.raises(ConfigError):
        code.decode(np.full(code.n_used, 2))
    with pytest.raises(ConfigError):
        code.decode(np.zeros((1, code.n_used), np.uint8))


# --- PayloadCodec construction -------------------------------------------------------------


def test_default_codec_layout() -> None:
    assert (DEFAULT.payload_bits, DEFAULT.crc_bits, DEFAULT.m, DEFAULT.t) == (64, 16, 7, 6)
    assert DEFAULT.n_coded == 122 and DEFAULT.info_bits == 80
    assert PayloadCodec(t=6) == DEFAULT
    assert PayloadCodec(t=3).n_coded == 80 + 21


@pytest.mark.parametrize("m", [5, 6, 7, 8, 9, 10])
def test_default_t_is_the_largest_that_fits(m: int) -> None:
    info = 16 + 8
    codec = PayloadCodec(payload_bits=16, crc_bits=8, m=m)
    assert bch_dimension(m, codec.t) >= info
    assert bch_dimension(m, codec.t + 1) < info


@pytest.mark.parametrize(
    "kwargs",
    [{"payload_bits": 0}, {"payload_bits": 65}, {"payload_bits": True}, {"payload_bits": "64"},
     {"crc_bits": 12}, {"crc_bits": 0}, {"m": 4}, {"m": 11}, {"t": 0}, {"t": 7}, {"t": 2.0},
     {"payload_bits": 64, "crc_bits": 32, "m": 6}],
)  # fmt: skip
def test_bad_codec_parameters_raise(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PayloadCodec(**kwargs)


# --- round trips --------------------------------------------------------------------------


@given(st.sampled_from(CODECS), keys, st.data())
@settings(max_examples=60, deadline=None)
def test_int_round_trip_with_up_to_t_errors(codec: PayloadCodec, key: bytes, data) -> None:
    value = data.draw(st.integers(0, 2**codec.payload_bits - 1))
    errors = data.draw(st.integers(0, codec.t))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    coded = codec.encode(value, key)
    assert coded.dtype == np.uint8 and coded.shape == (codec.n_coded,)
    soft = soft_of(coded, rng)
    soft[rng.choice(codec.n_coded, errors, replace=False)] *= -1
    result = codec.decode(soft, key)
    assert result.crc_ok
    assert result.payload_int == value
    assert bits_to_int(result.payload_bits) == value
    assert result.payload_bytes == value.to_bytes(math.ceil(codec.payload_bits / 8), "big")
    assert result.corrected == errors
    assert result.candidates_tried == 1


@given(keys, st.binary(max_size=8))
@settings(max_examples=40, deadline=None)
def test_bytes_round_trip(key: bytes, payload: bytes) -> None:
    result = DEFAULT.decode(soft_of(DEFAULT.encode(payload, key)), key)
    assert result.crc_ok
    assert result.payload_bytes == payload.rjust(8, b"\x00")
    assert result.payload_int == int.from_bytes(payload, "big")


@given(keys, st.lists(st.integers(0, 1), max_size=20))
@settings(max_examples=40, deadline=None)
def test_bit_list_round_trip(key: bytes, bits: list[int]) -> None:
    result = SMALL.decode(soft_of(SMALL.encode(bits, key)), key)
    assert result.crc_ok
    assert result.payload_bits.tolist() == [0] * (20 - len(bits)) + bits
    assert np.array_equal(SMALL.encode(np.array(bits, dtype=bool), key), SMALL.encode(bits, key))


def test_payload_forms_agree() -> None:
    value = 0x00_12_34_56_78_9A_BC_DE
    as_bits = [int(b) for b in f"{value:064b}"]
    reference = DEFAULT.encode(value, KEY)
    for form in (value, np.uint64(value), value.to_bytes(8, "big"), b"\x12\x34\x56\x78\x9a\xbc\xde",
                 bytearray(value.to_bytes(8, "big")), as_bits, as_bits[8:], np.array(as_bits)):  # fmt: skip
        assert np.array_equal(DEFAULT.encode(form, KEY), reference)


def test_golden_encodings() -> None:
    assert np.packbits(DEFAULT.encode(0x0123456789ABCDEF, KEY)).tobytes().hex() == (
        GOLDEN_ENCODE_DEFAULT
    )
    assert np.packbits(DEFAULT.encode(0, KEY)).tobytes().hex() == GOLDEN_ENCODE_DEFAULT_ZERO
    assert np.packbits(SMALL.encode(0xABCDE, KEY)).tobytes().hex() == GOLDEN_ENCODE_SMALL


def test_zero_payload_is_whitened_and_key_dependent() -> None:
    coded = DEFAULT.encode(0, KEY)
    assert 30 < coded.sum() < 92
    assert np.count_nonzero(coded != DEFAULT.encode(0, OTHER_KEY)) > 30
    # the documented layout: un-whitened coded bits are the systematic BCH codeword
    whitening = (pn_sequence(KEY, "whiten", DEFAULT.n_coded) > 0).astype(np.uint8)
    codeword = coded ^ whitening
    assert not codeword[:64].any()
    assert not any(DEFAULT.bch.syndromes(codeword))
    crc_key_bits = np.unpackbits(np.frombuffer(derive(KEY, "crc", 4), np.uint8))
    crc = crc_of_bits(np.concatenate((crc_key_bits, np.zeros(64, np.uint8))), 16)
    assert bits_to_int(codeword[64:80]) == crc


def test_passphrase_keys_work() -> None:
    coded = SMALL.encode(12345, "open sesame")
    assert SMALL.decode(soft_of(coded), "open sesame").payload_int == 12345
    assert not SMALL.decode(soft_of(coded), "open sesame!").crc_ok


# --- Chase decoding -----------------------------------------------------------------------


@given(keys, st.integers(0, 2**64 - 1), st.integers(1, 2), st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_chase_recovers_extra_errors_on_weak_positions(
    key: bytes, value: int, extra: int, seed: int
) -> None:
    codec = DEFAULT
    rng = np.random.default_rng(seed)
    soft = soft_of(codec.encode(value, key), rng)  # magnitudes in [0.5, 2]
    positions = rng.choice(codec.n_coded, codec.t + extra, replace=False)
    soft[positions] *= -1
    soft[positions[:extra]] *= 0.01  # the extra errors are the least reliable bits
    assert not codec.decode(soft, key).crc_ok
    result = codec.decode(soft, key, chase_bits=4)
    assert result.crc_ok
    assert result.payload_int == value
    assert result.corrected == codec.t + extra
    assert result.candidates_tried == 16


def test_chase_is_not_run_when_the_plain_decode_passes() -> None:
    soft = soft_of(DEFAULT.encode(99, KEY))
    result = DEFAULT.decode(soft, KEY, chase_bits=6)
    assert result.crc_ok and result.candidates_tried == 1 and result.corrected == 0


def test_chase_on_noise_counts_every_pattern() -> None:
    rng = np.random.default_rng(5)
    result = DEFAULT.decode(rng.standard_normal(DEFAULT.n_coded), KEY, chase_bits=5)
    assert not result.crc_ok and result.payload_int is None
    assert result.candidates_tried == 32
    assert DEFAULT.false_match_probability(result.candidates_tried) == 32 * 2.0**-16


# --- keys and false matches ---------------------------------------------------------------


def test_wrong_key_never_decodes() -> None:
    rng = np.random.default_rng(3)
    for i in range(300):
        value = int(rng.integers(0, 2**63))
        key = rng.bytes(16)
        other = key[:-1] + bytes([key[-1] ^ (1 + i % 255)])
        result = DEFAULT.decode(soft_of(DEFAULT.encode(value, key)), other, chase_bits=i % 3)
        assert not result.crc_ok
        assert result.payload_bits is None and result.payload_int is None
        assert result.payload_bytes is None and result.corrected == 0


def test_random_soft_vectors_almost_never_pass() -> None:
    rng = np.random.default_rng(2024)
    passes = sum(DEFAULT.decode(rng.standard_normal(122), KEY).crc_ok for _ in range(20000))
    assert passes <= 2  # bound: 20000 * 2**-16 ~ 0.3, BCH failures lower it further


def test_keyed_crc_rejects_random_codewords_at_rate_two_to_minus_crc_bits() -> None:
    # Valid BCH codewords of random information bits (payload + random CRC field): only the
    # keyed CRC can reject them. CRC-8 -> expected pass rate 1/256.
    codec = PayloadCodec(payload_bits=8, crc_bits=8, m=5)
    rng = np.random.default_rng(8)
    whitening = (pn_sequence(KEY, "whiten", codec.n_coded) > 0).astype(np.uint8)
    trials = 20000
    infos = rng.integers(0, 2, (trials, codec.info_bits), dtype=np.uint8)
    passes = 0
    for info in infos:
        coded = codec.bch.encode(info) ^ whitening
        passes += codec.decode(soft_of(coded), KEY).crc_ok
    expected = trials / 256  # ~78, Poisson sd ~8.8
    assert abs(passes - expected) < 5 * math.sqrt(expected)
    assert passes / trials <= 1.5 * codec.false_match_probability(1)


def test_false_match_probability() -> None:
    assert DEFAULT.false_match_probability(0) == 0.0
    assert DEFAULT.false_match_probability(1) == 2.0**-16
    assert SMALL.false_match_probability(1000) == 1.0
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ConfigError):
            DEFAULT.false_match_probability(bad)  # type: ignore[arg-type]


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [-1, 2**64, True, np.bool_(False), 1.5, "abc", None, {"a": 1}, b"\x01" * 9,
     [0, 1] * 33, [0, 2, 1], [[0, 1]], np.array([0.0, 1.0]), np.zeros((2, 2), np.uint8),
     [0.0, 1.0]],
)  # fmt: skip
def test_bad_payloads_raise_payload_error_with_capacity(payload: object) -> None:
    with pytest.raises(PayloadError, match="64 bits"):
        DEFAULT.encode(payload, KEY)


def test_bytes_must_fit_non_byte_multiple_capacity() -> None:
    assert SMALL.decode(soft_of(SMALL.encode(b"\x0f\xff\xff", KEY)), KEY).payload_int == 0xFFFFF
    with pytest.raises(PayloadError, match="20 bits"):
        SMALL.encode(b"\x10\x00\x00", KEY)
    with pytest.raises(PayloadError, match="20 bits"):
        SMALL.encode(2**20, KEY)


@pytest.mark.parametrize(
    "soft",
    [np.zeros(121), np.zeros(123), np.zeros((2, 122)), np.full(122, np.nan),
     np.r_[np.zeros(121), np.inf], np.array(["1"] * 122), np.zeros(122, complex),
     np.zeros(122, bool), None, "soft", [[1.0]]],
)  # fmt: skip
def test_bad_soft_values_raise_payload_error(soft: object) -> None:
    with pytest.raises(PayloadError):
        DEFAULT.decode(soft, KEY)


@pytest.mark.parametrize("chase_bits", [-1, 13, 1.5, True, "2"])
def test_bad_chase_bits_raise(chase_bits: object) -> None:
    with pytest.raises(ConfigError):
        DEFAULT.decode(np.ones(122), KEY, chase_bits=chase_bits)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [b"short", "", 42, None])
def test_bad_keys_raise_key_error(key: object) -> None:
    with pytest.raises(WatermarkKeyError):
        DEFAULT.encode(1, key)  # type: ignore[arg-type]
    with pytest.raises(WatermarkKeyError):
        DEFAULT.decode(np.ones(122), key)  # type: ignore[arg-type]


def test_integer_soft_values_and_hard_bit_convention() -> None:
    coded = DEFAULT.encode(7, KEY)
    assert DEFAULT.decode(2 * coded.astype(np.int64) - 1, KEY).payload_int == 7
    # zero means bit 0 (with no confidence)
    assert DEFAULT.decode(coded.astype(np.float64), KEY).payload_int == 7

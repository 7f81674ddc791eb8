"""tracemark's own watermark, ``lattice``: a keyed periodic mark with self-synchronisation.

The payload (64 bits) gets a keyed CRC-16 and a rate-1/3 convolutional code (258
coded bits, soft Viterbi); the coded bits are spread over keyed chips of a 32 x 32
tile which also holds a keyed synchronisation sequence; the tile is repeated over
the image (see :mod:`tracemark.watermark.lattice` and docs/watermark.md).

The detector's p-value combines two tests, each with a conservative bound:
the synchronisation peak (Bonferroni over every lattice, symmetry and shift tried)
and the CRC of the decoded payload (``decodes x 2**-16``); ``p = min(1, 2 min(p1, p2))``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from tracemark.errors import ConfigError
from tracemark.watermark import lattice as L
from tracemark.watermark.base import (
    Bits,
    Detection,
    WatermarkMethod,
    bits_to_bytes,
    register_method,
)
from tracemark.watermark.conv import ConvCode
from tracemark.watermark.keys import WatermarkKey, derive, permutation, pn_sequence
from tracemark.watermark.payload import bits_to_int, crc16_of_bits, int_to_bits

CRC_BITS = 16
CODE = ConvCode()


@lru_cache(maxsize=32)
def _layout(key: WatermarkKey, n_coded: int) -> tuple[L.Layout, npt.NDArray[np.float32]]:
    n = L.N_CHIPS * L.N_CHIPS
    pn = pn_sequence(key, "lattice/chips", n).astype(np.float32)
    perm = permutation(key, "lattice/layout", n)
    layout = L.make_layout(pn, perm, n_coded)
    return layout, L.render_tile(layout.tile(None), L.SUB)


def _crc_init(key: WatermarkKey) -> int:
    return int.from_bytes(derive(key, "lattice/crc", 2), "big")


@register_method("lattice")
class LatticeWatermark(WatermarkMethod):
    """Keyed periodic watermark with autocorrelation synchronisation (ours)."""

    payload_bits = 64
    keyed = True
    calibrated = True
    min_size = 128

    def __init__(self, *, psnr: float = 40.5) -> None:
        if not 20.0 <= psnr <= 60.0:
            raise ConfigError(f"psnr must be in [20, 60] dB; got {psnr}")
        self.psnr = float(psnr)

    @property
    def n_info(self) -> int:
        return self.payload_bits + CRC_BITS

    @property
    def n_coded(self) -> int:
        return CODE.coded_length(self.n_info)

    def _info_bits(self, bits: Bits, key: WatermarkKey) -> Bits:
        crc = crc16_of_bits(bits, init=_crc_init(key))
        return np.concatenate([bits.astype(np.uint8), int_to_bits(crc, CRC_BITS)])

    def _decode(
        self, al: L.Alignment, layout: L.Layout, key: WatermarkKey
    ) -> tuple[Bits, bool, npt.NDArray[np.float64]]:
        """Info bits decoded from an alignment, whether their keyed CRC holds, and the soft bits."""
        soft = L.soft_bits(L.chip_values(al.aligned), layout)
        info, _ = CODE.decode(soft, self.n_info)
        payload_bits, crc_bits = info[: self.payload_bits], info[self.payload_bits :]
        crc = crc16_of_bits(payload_bits, init=_crc_init(key))
        return info, crc == bits_to_int(crc_bits), soft

    def _embed(
        self, image: npt.NDArray[np.uint8], bits: Bits, key: WatermarkKey
    ) -> npt.NDArray[np.uint8]:
        layout, _ = _layout(key, self.n_coded)
        coded = CODE.encode(self._info_bits(bits, key))
        y = L.luma(image)
        c = L.chip_size(*y.shape)
        mse = 255.0**2 / 10 ** (self.psnr / 10)
        delta = L.embed_delta(y, layout.tile(coded), c, mse)
        out = image.astype(np.float32) + delta[..., None]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def _detect(self, image: npt.NDArray[np.uint8], key: WatermarkKey, alpha: float) -> Detection:
        layout, sync_ref = _layout(key, self.n_coded)
        y, _ = L.working_luma(image)
        r0 = L.residual(y)
        lattices = L.find_lattices(r0)
        best: tuple[L.Alignment, L.Lattice] | None = None
        for lat in lattices:
            cw = float(np.mean(np.hypot(*lat.basis))) / L.N_CHIPS
            r = L.residual(y, cw) if abs(cw - L.NOMINAL_CHIP) > 1.0 else r0
            al = L.align(L.fold(r, lat.basis), sync_ref)
            if best is None or al.z > best[0].z:
                best = (al, lat)
        trials = 8.0 * (L.N_CHIPS * L.SUB) ** 2 * max(1, len(lattices))
        if best is None:
            return Detection(
                False, None, 0.0, 1.0, method=self.name, details={"reason": "no lattice found"}
            )
        al, lat = best
        info, crc_ok, soft = self._decode(al, layout, key)
        decodes, local = 1, False
        if not crc_ok:
            # second chance: follow smooth warps (perspective) with per-region corrections
            r = L.residual(y, float(np.mean(np.hypot(*lat.basis))) / L.N_CHIPS)
            off = L.local_offsets(r, lat.basis, sync_ref, al.sym)
            if off is not None:
                al2 = L.align(L.fold(r, lat.basis, offset=off), sync_ref)
                info2, ok2, soft2 = self._decode(al2, layout, key)
                decodes += 1
                if ok2 or al2.z > al.z:
                    al, info, crc_ok, soft, local = al2, info2, ok2, soft2, True
                trials *= 2  # the refined alignment is one more family of trials
        p_sync = L.z_to_p(al.z, trials)
        payload_bits = info[: self.payload_bits]
        p_crc = decodes * 2.0**-CRC_BITS if crc_ok else 1.0
        p = min(1.0, 2.0 * min(p_sync, p_crc))
        recoded = CODE.encode(info)
        bit_errors = int(np.sum((soft > 0).astype(np.uint8) != recoded)) if crc_ok else None
        score = min(300.0, -math.log10(max(p, 1e-300)))
        scale = float(np.mean(np.hypot(*lat.basis))) / L.N_CHIPS
        return Detection(
            present=p < alpha,
            payload=bits_to_bytes(payload_bits) if crc_ok else None,
            score=score,
            p_value=p,
            bits=payload_bits.astype(np.uint8),
            bit_errors=bit_errors,
            method=self.name,
            details={
                "sync_z": round(al.z, 3),
                "p_sync": p_sync,
                "crc_ok": bool(crc_ok),
                "chip_px": round(scale, 3),
                "symmetry": al.sym,
                "lattice": np.round(lat.basis, 3).tolist(),
                "local_refinement": local,
            },
        )

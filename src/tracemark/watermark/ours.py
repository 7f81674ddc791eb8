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

import cv2
import numpy as np
import numpy.typing as npt

from tracemark.errors import ConfigError, WatermarkEmbedError
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

ADAPTATIONS: tuple[tuple[float, bool], ...] = (
    (0.0, False), (0.0, True), (1.5, True), (3.0, True), (4.5, True))
"""What ``embed`` tries, in order, until its output reads back: (dB below the configured
PSNR, headroom for saturated pixels)."""
MIN_ADAPTED_PSNR = 36.0
"""An adaptation never makes the mark stronger than this PSNR (dB)."""
ROBUST_MIN_SIDE = 256
"""Images with a shorter side than this (px) must read back as written; larger ones also
after a JPEG 75 round trip (a 128 px thumbnail has too few pixels per chip for that)."""
VERIFY_ALPHA = 1e-4
"""The false-positive rate at which ``embed`` checks that its output reads back."""


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

    def __init__(self, *, psnr: float = 40.5, size_prior: bool = True, verify: bool = True) -> None:
        if not 20.0 <= psnr <= 60.0:
            raise ConfigError(f"psnr must be in [20, 60] dB; got {psnr}")
        self.psnr = float(psnr)
        self.size_prior = bool(size_prior)
        """Also try the lattice the embedder lays on an image of the query's size."""
        self.verify = bool(verify)
        """``embed`` checks that its output reads back (as it is, and after a JPEG 75
        round trip) and adapts, or raises :class:`~tracemark.errors.WatermarkEmbedError`."""

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

    def _delta(self, image: npt.NDArray[np.uint8], tile: npt.NDArray[np.float32],
               psnr: float) -> npt.NDArray[np.float32]:
        """The luma change (H, W) float32 that carries ``tile`` at ``psnr`` dB."""
        y = L.luma(image)
        mse = 255.0**2 / 10 ** (psnr / 10)
        return L.embed_delta(y, tile, L.chip_size(*y.shape), mse)

    @staticmethod
    def _marked(image: npt.NDArray[np.uint8], delta: npt.NDArray[np.float32],
                headroom: bool) -> npt.NDArray[np.uint8]:
        """``image`` plus the luma change ``delta`` on R, G and B. With ``headroom``, pixels
        too close to black or white to take the change are first moved inward by the local
        amplitude of the mark, so that clipping does not erase it."""
        base = image.astype(np.float32)
        if headroom:
            env = cv2.dilate(np.abs(delta), np.ones((3, 3), np.uint8))[..., None]
            base = np.clip(base, env, 255.0 - env)
        base += delta[..., None]  # in place: the same values, one float copy fewer
        np.rint(base, out=base)
        np.clip(base, 0, 255, out=base)
        return base.astype(np.uint8)

    def _reads_back(self, marked: npt.NDArray[np.uint8], bits: Bits,
                    key: WatermarkKey) -> tuple[bool, str]:
        """Does the blind detector read ``bits`` from ``marked``, and (short side >=
        :data:`ROBUST_MIN_SIDE`) from its JPEG 75 round trip? (and which check failed).
        An image over :data:`~tracemark.watermark.lattice.WHOLE_IMAGE_MAX_PIXELS` pixels
        takes its JPEG round trip a strip at a time, inside the detector's working copy."""
        from tracemark.imageio import encode_image, load_image

        def jpeg75(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
            return load_image(encode_image(img, "JPEG", quality=75))

        want = bits_to_bytes(bits)
        large = marked.shape[0] * marked.shape[1] > L.WHOLE_IMAGE_MAX_PIXELS
        checks: list[tuple[str, bool]] = [("as written", False)]
        if min(marked.shape[:2]) >= ROBUST_MIN_SIDE:
            checks.append(("after JPEG 75", True))
        for what, jpeg in checks:
            if not jpeg:
                det = self._detect(marked, key, VERIFY_ALPHA)
            elif large:
                y, scale = L.working_luma(marked, jpeg75)
                det = self._detect_luma(y, scale, marked.shape[:2], key, VERIFY_ALPHA)
            else:
                det = self._detect(jpeg75(marked), key, VERIFY_ALPHA)
            if not (det.present and det.payload == want):
                return False, what
        return True, ""

    def _embed(
        self, image: npt.NDArray[np.uint8], bits: Bits, key: WatermarkKey
    ) -> npt.NDArray[np.uint8]:
        """The marked copy of ``image``. Up to :data:`~tracemark.watermark.lattice.
        WHOLE_IMAGE_MAX_PIXELS` pixels the change is computed on the whole image; larger
        images a strip at a time (:class:`~tracemark.watermark.lattice.StripDelta`): the
        working memory is then about 2 bytes a pixel (the float16 mask) beside the input
        and the output (3 bytes a pixel each), plus strips of 16 MiB."""
        layout, _ = _layout(key, self.n_coded)
        tile = layout.tile(CODE.encode(self._info_bits(bits, key)))
        h, w = image.shape[:2]
        if h * w > L.WHOLE_IMAGE_MAX_PIXELS:
            strips = L.StripDelta(image, tile, L.chip_size(h, w),
                                  255.0**2 / 10 ** (self.psnr / 10))

            def marked_at(gain: float, headroom: bool) -> npt.NDArray[np.uint8]:
                return strips.apply(image, gain, headroom=headroom)
        else:
            delta = self._delta(image, tile, self.psnr)

            def marked_at(gain: float, headroom: bool) -> npt.NDArray[np.uint8]:
                # the change's amplitude goes as 10^(-PSNR/20): rendered once, scaled per attempt
                return self._marked(image, delta if gain == 1.0 else delta * np.float32(gain),
                                    headroom)
        if not self.verify:
            return marked_at(1.0, False)
        failed = []
        for step, (dpsnr, headroom) in enumerate(ADAPTATIONS):
            psnr = self.psnr - dpsnr
            if step and psnr < MIN_ADAPTED_PSNR:
                break
            marked = marked_at(1.0 if dpsnr == 0 else 10 ** (dpsnr / 20), headroom)
            ok, what = self._reads_back(marked, bits, key)
            if ok:
                return marked
            del marked
            failed.append(f"{psnr:.1f} dB{' with headroom' if headroom else ''}: not read "
                          f"back {what}")
        # the reason is worded from a subsample of at most ~1 Mpx
        k = max(1, math.ceil(math.sqrt(h * w / 1e6)))
        sample = np.ascontiguousarray(image[::k, ::k])
        saturated = float(np.mean((sample <= 2) | (sample >= 253)))
        flat = float(np.mean(L.activity_mask(L.luma(sample),
                                             L.chip_size(*sample.shape[:2])) <= 0.51))
        reason = ("much of the image is saturated (pure black or white)" if saturated > 0.4 else
                  "much of the image is flat" if flat > 0.5 else
                  "the content hides or imitates the mark's lattice")
        raise WatermarkEmbedError(
            f"the mark does not read back from this image: {reason} (tried "
            f"{'; '.join(failed)}); it is not marked")

    def _detect(self, image: npt.NDArray[np.uint8], key: WatermarkKey, alpha: float) -> Detection:
        y, scale = L.working_luma(image)
        return self._detect_luma(y, scale, image.shape[:2], key, alpha)

    def _detect_luma(self, y: npt.NDArray[np.float32], scale: float, shape: tuple[int, ...],
                     key: WatermarkKey, alpha: float) -> Detection:
        """Detection on the working luma ``y`` of an image of ``shape`` (H, W) read at
        ``scale`` working pixels per pixel (:func:`~tracemark.watermark.lattice.working_luma`)."""
        layout, sync_ref = _layout(key, self.n_coded)
        priors = [L.prior_basis(shape[0], shape[1], scale)] if self.size_prior else []
        r_plain = L.residual(y)
        # content that repeats (dot screens, fabric, tiles) can capture the synchronisation:
        # then the residual without it is tried too
        variants = [False]
        if self.size_prior and L.periodic_share(r_plain) >= L.PERIODIC_SHARE:
            variants.append(True)
        best: tuple[L.Alignment, L.Lattice, bool] | None = None
        n_lattices = 0
        for suppress in variants:
            r0 = L.residual(y, suppress=True) if suppress else r_plain
            lattices = L.find_lattices(r0, priors=priors)
            n_lattices += len(lattices)
            for lat in lattices:
                cw = float(np.mean(np.hypot(*lat.basis))) / L.N_CHIPS
                r = L.residual(y, cw, suppress=suppress) if abs(cw - L.NOMINAL_CHIP) > 1.0 else r0
                al = L.align(L.fold(r, lat.basis), sync_ref)
                if best is None or al.z > best[0].z:
                    best = (al, lat, suppress)
        trials = 8.0 * (L.N_CHIPS * L.SUB) ** 2 * max(1, n_lattices)
        if best is None:
            return Detection(
                False, None, 0.0, 1.0, method=self.name, details={"reason": "no lattice found"}
            )
        al, lat, suppressed = best
        info, crc_ok, soft = self._decode(al, layout, key)
        decodes, local = 1, False
        if not crc_ok:
            # second chance: follow smooth warps (perspective) with per-region corrections
            r = L.residual(y, float(np.mean(np.hypot(*lat.basis))) / L.N_CHIPS,
                           suppress=suppressed)
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
                "periodic_content_suppressed": suppressed,
            },
        )


@register_method("lattice-v1")
class LatticeV1Watermark(LatticeWatermark):
    """The first version of ``lattice``, kept to compare against and to read old marks:
    the same mark (``lattice`` detects it), but ``embed`` does not check that its output
    reads back, and ``detect`` neither tries the lattice expected from the image's size nor
    suppresses periodic content."""

    def __init__(self, *, psnr: float = 40.5) -> None:
        super().__init__(psnr=psnr, size_prior=False, verify=False)

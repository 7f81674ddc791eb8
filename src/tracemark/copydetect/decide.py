"""Calibrate and decide: the one copy-decision rule of tracemark.

A candidate's raw score is ``inliers + 10 * s_norm``, where ``s_norm`` is the descriptor
similarity normalised against a background of non-matching images, as the Image
Similarity Challenge 2021 winners did (Papakipos et al., "Results and findings of the 2021
Image Similarity Challenge", PMLR 176, 2022): ``s_norm = s(q, r) - mean(top-3 s(q, b))``.

:class:`NullModel` holds what calibration learnt: the background descriptors and the raw
scores of background images searched like queries (samples of the null distribution). Its
p-value is empirical up to the null median and an exponential tail fitted to the
exceedances beyond it (mean excess), so scores beyond every sample still get a graded,
small p-value.

:class:`DecisionRule` is the rule itself: with a p-value, ``p <= alpha``; without one
(uncalibrated), ``inliers >= min_inliers``. The index, the credential store's fingerprint
route, the command line and the benchmark all decide through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tracemark.errors import ConfigError
from tracemark.fingerprint import global_desc

__all__ = [
    "CALIBRATION_VERSION",
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_INLIERS",
    "SIMILARITY_WEIGHT",
    "DecisionRule",
    "NullModel",
    "raw_score",
    "recommended_background",
]

CALIBRATION_VERSION = 1
DEFAULT_ALPHA = 1e-3
"""Default false-positive rate of a copy decision on a calibrated collection."""
DEFAULT_MIN_INLIERS = 12
"""Default inlier threshold on an uncalibrated collection."""
SIMILARITY_WEIGHT = 10.0
"""Weight of the normalised descriptor similarity in the raw score."""


def raw_score(inliers: int, similarity: float, background_level: float) -> float:
    """``inliers + 10 * (similarity - background_level)`` (a float, unbounded)."""
    return float(inliers) + SIMILARITY_WEIGHT * (float(similarity) - float(background_level))


@dataclass(frozen=True)
class DecisionRule:
    """Is a candidate a copy? ``p_value <= alpha`` when calibrated, else
    ``inliers >= min_inliers``. Raises :class:`~tracemark.errors.ConfigError` when
    ``alpha`` is not in (0, 1) or ``min_inliers`` < 1."""

    alpha: float = DEFAULT_ALPHA
    min_inliers: int = DEFAULT_MIN_INLIERS

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_inliers < 1:
            raise ConfigError(f"min_inliers must be at least 1, got {self.min_inliers}")

    def decide(self, *, p_value: float | None, inliers: int) -> bool:
        """The decision for one candidate."""
        if p_value is not None:
            return p_value <= self.alpha
        return inliers >= self.min_inliers

    def score(self, *, p_value: float | None, raw: float) -> float:
        """A score in [0, 1]: ``1 - p`` when calibrated, else a fixed logistic of ``raw``
        centred on ``min_inliers`` (not a probability)."""
        if p_value is not None:
            return 1.0 - p_value
        return 0.5 * (1.0 + math.tanh((raw - self.min_inliers) / 6.0))

    def describe(self, null: NullModel | None) -> dict[str, Any]:
        """How decisions are taken against ``null`` (None: uncalibrated), as JSON-ready data:
        ``{"calibrated", "rule", "alpha", "raw_score"}`` or ``{"calibrated", "rule",
        "min_inliers"}``."""
        threshold = None if null is None else null.threshold_for_alpha(self.alpha)
        if threshold is None:
            return {"calibrated": False, "rule": "inliers >= min_inliers",
                    "min_inliers": self.min_inliers}
        return {"calibrated": True, "rule": "p_value <= alpha", "alpha": self.alpha,
                "raw_score": threshold}

    @staticmethod
    def explain(described: dict[str, Any]) -> str:
        """One sentence for people from :meth:`describe`'s output."""
        if described["calibrated"]:
            return (f"decision: p-value <= {described['alpha']:g} "
                    f"(raw score >= {described['raw_score']:.2f})")
        return (f"not calibrated: decision by inliers >= {described['min_inliers']} "
                "(calibrate on background images for p-values)")


def recommended_background(alpha: float = DEFAULT_ALPHA) -> int:
    """Background images for a calibration that measures p-values down to ``alpha``:
    ``2 * ceil(1/alpha - 1)`` (half of them give the null samples, and ``N`` samples measure
    down to ``1 / (1 + N)``): 1,998 for the default alpha 1e-3. With fewer, the smallest
    p-values come from the exponential tail fitted above the median (extrapolated)."""
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    return 2 * math.ceil(1 / alpha - 1)


class NullModel:
    """Background descriptors (B, D) float32 and sorted null raw scores (N,) float64."""

    def __init__(self, background: np.ndarray | None, null: np.ndarray | None) -> None:
        self.background = background
        self.null = None if null is None else np.sort(np.asarray(null, np.float64))

    @property
    def calibrated(self) -> bool:
        return self.null is not None and self.null.size > 0

    def background_level(self, qvlad: np.ndarray, k: int = 3) -> float:
        """Mean of the ``k`` best similarities of the query rows ``qvlad`` (R, D) to the
        background rows; 0.0 without a background."""
        if self.background is None or self.background.size == 0:
            return 0.0
        s = np.max(qvlad @ self.background.T, axis=0)  # best query row per background row
        k = min(k, s.size)
        return float(np.mean(np.sort(s)[-k:]))

    def p_value(self, raw: float) -> float | None:
        """The p-value of ``raw`` against the null samples (None when uncalibrated)."""
        null = self.null
        if null is None or null.size == 0:
            return None
        n = null.size
        u = float(np.quantile(null, 0.5))
        if raw <= u:
            return float((1 + np.sum(null >= raw)) / (1 + n))
        exceed = null[null > u] - u
        lam = max(float(exceed.mean()) if exceed.size else 1.0, 0.5)
        p_u = (1 + exceed.size) / (1 + n)
        return float(max(p_u * math.exp(-(raw - u) / lam), 1e-300))

    def threshold_for_alpha(self, alpha: float) -> float | None:
        """The raw score at which the p-value falls to ``alpha`` (None when uncalibrated)."""
        if self.null is None or self.null.size == 0:
            return None
        lo, hi = float(self.null.min()) - 1, float(self.null.max()) + 1000.0
        for _ in range(80):
            mid = (lo + hi) / 2
            if (self.p_value(mid) or 1.0) <= alpha:
                hi = mid
            else:
                lo = mid
        return hi

    @property
    def smallest_supported_p(self) -> float | None:
        """The smallest p-value the null sample measures, ``1 / (1 + N)`` for N samples
        (the empirical p-value of a score above every sample); below it :meth:`p_value`
        extrapolates the fitted exponential tail. None when uncalibrated."""
        if self.null is None or self.null.size == 0:
            return None
        return 1.0 / (1 + self.null.size)

    def support_warning(self, alpha: float = DEFAULT_ALPHA) -> str | None:
        """A warning when the null sample is too small to measure p-values down to
        ``alpha`` (the decision threshold is then extrapolated); None when it is large
        enough or uncalibrated. The sample size needed is ``1/alpha - 1`` null samples,
        i.e. :func:`recommended_background` images (half of them give null samples)."""
        smallest = self.smallest_supported_p
        if smallest is None or smallest <= alpha:
            return None
        n = int(self.null.size)  # type: ignore[union-attr]
        return (f"{n} null samples measure p-values only down to {smallest:.2g}: smaller "
                f"p-values, and the decision threshold at alpha {alpha:g}, are extrapolated "
                f"from the fitted tail; calibrate with at least "
                f"{recommended_background(alpha)} background images for alpha {alpha:g} to be "
                "measured")

    def summary(self, alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
        null = self.null if self.null is not None else np.zeros(0)
        out: dict[str, Any] = {
            "background_rows": 0 if self.background is None else int(self.background.shape[0]),
            "null_samples": int(null.size),
            "null_quantiles": ({q: float(np.quantile(null, q)) for q in (0.5, 0.9, 0.99, 1.0)}
                               if null.size else {}),
            "smallest_supported_p_value": self.smallest_supported_p,
            "recommended_background": recommended_background(alpha),
        }
        warning = self.support_warning(alpha)
        if warning is not None:
            out["warning"] = warning
        return out

    def save(self, path: Path) -> None:
        """Write ``path`` (npz, versioned) atomically."""
        tmp = path.with_suffix(".tmp.npz")
        background = (self.background if self.background is not None
                      else np.zeros((0, global_desc.DIM), np.float32))
        np.savez(tmp, version=np.array(CALIBRATION_VERSION), background=background,
                 null=self.null if self.null is not None else np.zeros(0))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> NullModel | None:
        """The model saved at ``path``, or None when there is none. Raises
        :class:`~tracemark.errors.ConfigError` for an unsupported version."""
        if not path.exists():
            return None
        with np.load(path) as data:
            if int(data["version"]) != CALIBRATION_VERSION:
                raise ConfigError(f"{path}: unsupported calibration version {int(data['version'])}")
            return cls(data["background"].astype(np.float32), data["null"].astype(np.float64))

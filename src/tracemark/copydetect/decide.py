"""Calibrate and decide: the one copy-decision rule of tracemark.

A candidate's raw score is ``inliers + 10 * s_norm``, where ``s_norm`` is the descriptor
similarity normalised against a background of non-matching images, as the Image
Similarity Challenge 2021 winners did (Papakipos et al., "Results and findings of the 2021
Image Similarity Challenge", PMLR 176, 2022): ``s_norm = s(q, r) - mean(top-3 s(q, b))``.
Score version ``"v2"`` (copy detection v2, the default) adds
``0.75 * max(0, 48 - d)`` for the smallest dihedral PDQ distance ``d`` (bits): blurred,
pixelated, thumbnail-sized and featureless copies keep their PDQ hash (distance <= 31 is
ThreatExchange's match threshold) when they lose their local features, while unrelated
images sit near 128 bits. Uncalibrated, the PDQ decision needs a query hash of quality
>= 20.

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

import io
import math
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from tracemark.errors import ConfigError
from tracemark.fingerprint import global_desc

__all__ = [
    "CALIBRATION_VERSION",
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_INLIERS",
    "SIMILARITY_WEIGHT",
    "PDQ_MATCH_DISTANCE",
    "PDQ_MIN_QUALITY",
    "PDQ_PIVOT",
    "PDQ_WEIGHT",
    "SCORE_VERSIONS",
    "DecisionRule",
    "NullModel",
    "raw_score",
    "recommended_background",
]

CALIBRATION_VERSION = 2
DEFAULT_ALPHA = 1e-3
"""Default false-positive rate of a copy decision on a calibrated collection."""
DEFAULT_MIN_INLIERS = 12
"""Default inlier threshold on an uncalibrated collection."""
SIMILARITY_WEIGHT = 10.0
"""Weight of the normalised descriptor similarity in the raw score."""
PDQ_WEIGHT = 0.75
"""Score version v2: raw-score points per PDQ bit below :data:`PDQ_PIVOT`."""
PDQ_PIVOT = 48
"""Score version v2: PDQ distances (bits, of 256) below this add to the raw score."""
PDQ_MATCH_DISTANCE = 31
"""Score version v2, uncalibrated: a PDQ distance at most this decides a copy
(ThreatExchange's usual PDQ threshold)."""
PDQ_MIN_QUALITY = 20
"""Score version v2, uncalibrated: the PDQ decision needs a query hash of at least this
quality (0..100, PDQ's gradient sum): two different near-uniform images can hash close.
The raw-score term is not gated (calibration weighs it): the copies of flat artwork,
whose hashes have quality 2-20, are still found by it on the copy-detection benchmark,
where ThreatExchange's gate of 50 lost them."""
SCORE_VERSIONS = ("v1", "v2")


def raw_score(inliers: int, similarity: float, background_level: float,
              pdq_distance: int | None = None) -> float:
    """``inliers + 10 * (similarity - background_level)`` (a float, unbounded), plus
    ``0.75 * max(0, 48 - pdq_distance)`` when ``pdq_distance`` (bits) is given (v2)."""
    raw = float(inliers) + SIMILARITY_WEIGHT * (float(similarity) - float(background_level))
    if pdq_distance is not None:
        raw += PDQ_WEIGHT * max(0, PDQ_PIVOT - int(pdq_distance))
    return raw


@dataclass(frozen=True)
class DecisionRule:
    """Is a candidate a copy? ``p_value <= alpha`` when calibrated, else
    ``inliers >= min_inliers``. Raises :class:`~tracemark.errors.ConfigError` when
    ``alpha`` is not in (0, 1) or ``min_inliers`` < 1."""

    alpha: float = DEFAULT_ALPHA
    min_inliers: int = DEFAULT_MIN_INLIERS
    pdq_max_distance: int | None = None
    """Uncalibrated: a PDQ distance at most this also decides a copy (None: inliers only)."""

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_inliers < 1:
            raise ConfigError(f"min_inliers must be at least 1, got {self.min_inliers}")

    def decide(self, *, p_value: float | None, inliers: int,
               pdq_distance: int | None = None) -> bool:
        """The decision for one candidate."""
        if p_value is not None:
            return p_value <= self.alpha
        if (self.pdq_max_distance is not None and pdq_distance is not None
                and pdq_distance <= self.pdq_max_distance):
            return True
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
            if self.pdq_max_distance is not None:
                return {"calibrated": False,
                        "rule": "inliers >= min_inliers or pdq_distance <= pdq_max_distance",
                        "min_inliers": self.min_inliers, "pdq_max_distance": self.pdq_max_distance}
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
        pdq = (f" or PDQ distance <= {described['pdq_max_distance']}"
               if described.get("pdq_max_distance") is not None else "")
        return (f"not calibrated: decision by inliers >= {described['min_inliers']}{pdq} "
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
    """Background descriptors (B, D) float32 and sorted null raw scores (N,) float64 of one
    score version (``"v1"`` or ``"v2"``: raw scores of different versions are not
    comparable, so a file keeps one null sample per version)."""

    def __init__(self, background: np.ndarray | None, null: np.ndarray | None,
                 score_version: str = "v2") -> None:
        if score_version not in SCORE_VERSIONS:
            raise ConfigError(f"score_version must be one of {SCORE_VERSIONS}, got {score_version!r}")
        self.background = background
        self.null = None if null is None else np.sort(np.asarray(null, np.float64))
        self.score_version = score_version

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

    def encode(self, previous: bytes | None = None) -> bytes:
        """This model as a calibration archive (npz, format 2). The null samples of the
        other score version in ``previous`` (the archive this one replaces) are kept when
        they were learnt against the same background (a calibration of each retrieval
        version on the same images), dropped otherwise (and with an unreadable archive)."""
        background = (self.background if self.background is not None
                      else np.zeros((0, global_desc.DIM), np.float32))
        nulls = {f"null_{v}": np.zeros(0) for v in SCORE_VERSIONS}
        try:
            old = None if previous is None else _parse(previous, "calibration", "")
        except ConfigError:
            old = None  # an unreadable archive is replaced
        if old is not None and np.array_equal(old["background"], background):
            nulls.update({k: v for k, v in old.items() if k.startswith("null_")})
        nulls[f"null_{self.score_version}"] = self.null if self.null is not None else np.zeros(0)
        buffer = io.BytesIO()
        np.savez(buffer, version=np.array(CALIBRATION_VERSION), background=background, **nulls)
        return buffer.getvalue()

    @classmethod
    def decode(cls, raw: bytes | None, score_version: str = "v2", *, where: str = "calibration",
               fix: str = "") -> NullModel | None:
        """The model in the calibration archive ``raw`` for ``score_version``, or None when
        ``raw`` is None. An archive without null samples for that version gives a model
        with the background and no null (uncalibrated: :attr:`calibrated` is False). Format
        1 archives (written before copy detection v2) hold v1 null samples. Raises
        :class:`~tracemark.errors.ConfigError` for an unsupported format or bytes that are
        not a calibration (truncated, arrays of the wrong shape or not finite), naming
        ``where`` and ending with ``fix`` (how to write a new one)."""
        if raw is None:
            return None
        data = _parse(raw, where, fix)
        null = data.get(f"null_{score_version}")
        return cls(data["background"].astype(np.float32),
                   None if null is None or null.size == 0 else null.astype(np.float64),
                   score_version)

    @staticmethod
    def versions_of(raw: bytes | None) -> list[str]:
        """The score versions with null samples in the calibration archive ``raw``."""
        if raw is None:
            return []
        data = _parse(raw, "calibration", "")
        return [v for v in SCORE_VERSIONS if data.get(f"null_{v}", np.zeros(0)).size]


def _parse(raw: bytes, path: str, fix: str) -> dict[str, np.ndarray]:
    """A calibration archive's arrays, format 1 (``null``: v1) or 2 (``null_v1``,
    ``null_v2``), checked: ``background`` (B, :data:`~tracemark.fingerprint.global_desc.DIM`)
    finite, each null sample (N,) finite. Raises :class:`~tracemark.errors.ConfigError` for
    bytes that are not one, naming ``path`` and ending with ``fix``."""
    try:
        if raw[:4] != b"PK\x03\x04":
            raise ConfigError(f"{path}: not a calibration file (not an .npz archive): {fix}")
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            version_arr = data["version"]
            if version_arr.shape != () or version_arr.dtype.kind not in "iu":
                raise ConfigError(f"{path}: not a calibration file (version {version_arr!r}): {fix}")
            version = int(version_arr)
            if version == 1:
                out = {"background": data["background"], "null_v1": data["null"]}
            elif version != CALIBRATION_VERSION:
                raise ConfigError(f"{path}: unsupported calibration version {version} (this "
                                  f"tracemark reads 1 and {CALIBRATION_VERSION}): {fix}")
            else:
                out = {k: data[k] for k in data.files if k != "version"}
    except ConfigError:
        raise
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: unreadable calibration file ({exc}): {fix}") from exc
    bg = out.get("background")
    if bg is None or bg.ndim != 2 or bg.shape[1] != global_desc.DIM or bg.dtype.kind != "f" \
            or not np.isfinite(bg).all():
        got = "none" if bg is None else f"{bg.dtype} {bg.shape}"
        raise ConfigError(f"{path}: the background must be finite float rows of width "
                          f"{global_desc.DIM}, got {got}: {fix}")
    for key, null in out.items():
        if key.startswith("null_") and (null.ndim != 1 or null.dtype.kind not in "fiu"
                                        or not np.isfinite(null).all()):
            raise ConfigError(f"{path}: {key} must be finite numbers (N,), got {null.dtype} "
                              f"{null.shape}: {fix}")
    return out

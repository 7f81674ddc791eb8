"""Detection metrics: bit accuracy, ROC curve, AUROC and TPR at a fixed FPR.

Scores follow one convention throughout: a higher score means "more likely positive"
(watermarked, a match), and the decision at threshold ``t`` is ``score >= t``. Scores are
given as two 1-D arrays, ``positives`` (the scores of items that are truly positive) and
``negatives`` (truly negative); both must be non-empty and finite.

The score functions (:func:`roc_curve`, :func:`auroc`, :func:`tpr_at_fpr`,
:func:`threshold_for_fpr`) take keyword arguments only, so that they cannot be called the
wrong way round silently: scikit-learn's ``roc_auc_score(y_true, y_score)`` takes labels
then scores, an older tracemark took positives then negatives, and both are two arrays of
numbers. A positional call raises :class:`~tracemark.errors.MetricError` saying how to call
it; :func:`scores_by_label` turns scikit-learn's ``(labels, scores)`` into the two groups.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import stats

from tracemark.errors import MetricError

__all__ = [
    "RocCurve",
    "TprAtFpr",
    "bit_accuracy",
    "roc_curve",
    "auroc",
    "scores_by_label",
    "tpr_at_fpr",
    "threshold_for_fpr",
    "wilson_interval",
]

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _keywords_only(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` (whose parameters are keyword-only), raising :class:`MetricError` rather than
    Python's ``TypeError`` on a positional call, with the right call in the message."""
    names = ", ".join(f"{n}=..." for n in inspect.signature(fn).parameters)

    @wraps(fn)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if args:
            raise MetricError(
                f"{fn.__name__}() takes keyword arguments only: {fn.__name__}({names}); "
                f"got {len(args)} positional. For scikit-learn's (labels, scores) order, "
                "positives, negatives = scores_by_label(labels=..., scores=...)"
            )
        return fn(**kwargs)

    return call


@dataclass(frozen=True)
class RocCurve:
    """Points of a ROC curve, one per candidate threshold, thresholds decreasing.

    ``thresholds[0]`` is ``inf`` (nothing is positive, the point (0, 0)); then every
    distinct score, so ``fpr[i]``/``tpr[i]`` are the fractions of negatives/positives with
    ``score >= thresholds[i]``.
    """

    fpr: FloatArray
    tpr: FloatArray
    thresholds: FloatArray


@dataclass(frozen=True)
class TprAtFpr:
    """An operating point chosen for a target false-positive rate."""

    tpr: float
    """Fraction of positives with ``score >= threshold``."""
    threshold: float
    """Decision threshold: ``score >= threshold`` is positive."""
    achieved_fpr: float
    """Fraction of negatives with ``score >= threshold``; at most the target."""


def _scores(values: Any, what: str) -> FloatArray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"{what} must be an array of numbers: {exc}") from exc
    if array.ndim != 1:
        raise MetricError(f"{what} must be 1-D; got shape {array.shape}")
    if array.size == 0:
        raise MetricError(f"{what} is empty")
    if not np.all(np.isfinite(array)):
        raise MetricError(f"{what} contains NaN or infinite scores")
    return array


def _bits(values: Any, what: str) -> npt.NDArray[np.bool_]:
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"{what} must be an array of bits: {exc}") from exc
    if array.dtype == np.bool_:
        return np.asarray(array, dtype=np.bool_)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise MetricError(f"{what} must hold 0/1 or booleans; got dtype {array.dtype}")
    if not np.all((array == 0) | (array == 1)):
        raise MetricError(f"{what} must hold only 0 and 1")
    return np.asarray(array == 1, dtype=np.bool_)


def bit_accuracy(expected_bits: ArrayLike, decoded_bits: ArrayLike) -> float | FloatArray:
    """Fraction of bits decoded correctly, in [0, 1].

    Bits are booleans or numbers equal to 0 or 1. Two 1-D arrays of the same length give
    a ``float``. A 2-D ``decoded_bits`` of shape ``(N, L)`` gives one accuracy per row, a
    ``float64`` array of length ``N``; ``expected_bits`` is then ``(N, L)`` or ``(L,)``
    (one message for every row). Symmetric for two 1-D arrays, so the argument order
    cannot give a wrong number; :class:`MetricError` for values other than 0/1, shapes
    that differ, or no bits.
    """
    expected = _bits(expected_bits, "expected_bits")
    decoded = _bits(decoded_bits, "decoded_bits")
    if decoded.ndim not in (1, 2):
        raise MetricError(f"decoded_bits must be 1-D or 2-D; got shape {decoded.shape}")
    if decoded.ndim == 1 and expected.shape != decoded.shape:
        raise MetricError(
            f"expected_bits and decoded_bits differ in shape: {expected.shape} vs {decoded.shape}"
        )
    if decoded.ndim == 2 and expected.shape not in (decoded.shape, decoded.shape[1:]):
        raise MetricError(
            f"expected_bits must have shape {decoded.shape} or {decoded.shape[1:]}; "
            f"got {expected.shape}"
        )
    if decoded.shape[-1] == 0 or decoded.size == 0:
        raise MetricError(f"no bits to compare: shape {decoded.shape}")
    correct = (expected == decoded).mean(axis=-1, dtype=np.float64)
    if decoded.ndim == 1:
        return float(correct)
    return np.asarray(correct, dtype=np.float64)


@_keywords_only
def scores_by_label(*, labels: ArrayLike, scores: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """``(positives, negatives)``: ``scores`` split by ``labels`` (scikit-learn's ``y_true``).

    ``labels`` is 1-D of booleans or numbers equal to 0 or 1 (1: positive); ``scores`` is
    1-D of finite numbers of the same length. Returns two ``float64`` arrays, each in the
    input's order. Raises :class:`MetricError` for labels that are not 0/1 (scores passed
    as labels, for instance), lengths that differ, or a group left empty.
    """
    lab = _bits(labels, "labels")
    sc = _scores(scores, "scores")
    if lab.ndim != 1 or lab.shape != sc.shape:
        raise MetricError(f"labels and scores must be 1-D of one length; got {lab.shape} and "
                          f"{sc.shape}")
    if lab.all() or not lab.any():
        raise MetricError("labels must hold both classes (0 and 1)")
    return sc[lab], sc[~lab]


@_keywords_only
def roc_curve(*, positives: ArrayLike, negatives: ArrayLike) -> RocCurve:
    """ROC curve over every distinct score, like ``sklearn.metrics.roc_curve`` with
    ``drop_intermediate=False``: tied scores form a single point.

    ``positives``/``negatives``: 1-D scores of the truly positive/negative items (keyword
    only; see the module docstring). Raises :class:`MetricError` on empty, non-finite or
    non-1-D scores and on a positional call.
    """
    pos = _scores(positives, "positives")
    neg = _scores(negatives, "negatives")
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    # last index of each run of equal scores
    ends = np.flatnonzero(np.diff(scores) != 0)
    ends = np.append(ends, scores.size - 1)
    tps = np.cumsum(labels)[ends]
    fps = (ends + 1) - tps
    return RocCurve(
        fpr=np.concatenate([[0.0], fps / neg.size]),
        tpr=np.concatenate([[0.0], tps / pos.size]),
        thresholds=np.concatenate([[np.inf], scores[ends]]),
    )


@_keywords_only
def auroc(*, positives: ArrayLike, negatives: ArrayLike) -> float:
    """Area under the ROC curve: ``P(pos > neg) + P(pos == neg) / 2``, in [0, 1].

    ``positives``/``negatives``: 1-D scores of the truly positive/negative items (keyword
    only: ``auroc(scores, labels)`` in scikit-learn's order raises :class:`MetricError`
    instead of returning a wrong number; use :func:`scores_by_label`). Equal to
    ``sklearn.metrics.roc_auc_score`` (ties count one half). Computed from average ranks
    (Mann-Whitney U), in ``O(n log n)``.
    """
    pos = _scores(positives, "positives")
    neg = _scores(negatives, "negatives")
    ranks = stats.rankdata(np.concatenate([pos, neg]), method="average")
    u = float(ranks[: pos.size].sum()) - pos.size * (pos.size + 1) / 2.0
    return u / (pos.size * neg.size)


def _check_fpr(fpr: float) -> float:
    try:
        value = float(fpr)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"fpr must be a number in [0, 1]; got {fpr!r}") from exc
    if not (0.0 <= value <= 1.0):
        raise MetricError(f"fpr must be in [0, 1]; got {fpr!r}")
    return value


@_keywords_only
def threshold_for_fpr(*, negatives: ArrayLike, fpr: float) -> float:
    """The smallest threshold ``t`` whose false-positive rate on ``negatives`` is <= ``fpr``.

    The false-positive rate of ``t`` is the fraction of negatives with ``score >= t``.
    With ``n`` negatives, only ``k`` of them, the largest ``k`` with ``k / n <= fpr``, may
    reach the threshold, so ``t`` is the smallest float64 strictly above the ``(k+1)``-th
    largest negative score: ``score >= t`` is exactly ``score > that negative``. The
    smallest non-zero FPR that can be resolved is ``1 / n``: for ``fpr < 1 / n`` (and for
    ``fpr = 0``) the threshold lies just above the maximum negative. Tied negatives cannot
    be split, so the achieved FPR may be below ``fpr``. For ``fpr = 1`` every score is
    accepted and the threshold is ``-inf``. Keyword arguments only; :class:`MetricError`
    on bad scores or an ``fpr`` outside [0, 1].
    """
    neg = _scores(negatives, "negatives")
    target = _check_fpr(fpr)
    n = neg.size
    # number of negatives allowed at or above the threshold: largest k with k/n <= fpr
    allowed = int(np.searchsorted(np.arange(n + 1) / n, target, side="right")) - 1
    if allowed >= n:
        return -math.inf
    descending = np.sort(neg)[::-1]
    return float(np.nextafter(descending[allowed], np.inf))


@_keywords_only
def tpr_at_fpr(*, positives: ArrayLike, negatives: ArrayLike, fpr: float) -> TprAtFpr:
    """True-positive rate at the threshold :func:`threshold_for_fpr` picks on ``negatives``.

    The threshold is the smallest ``t`` such that the fraction of negatives with
    ``score >= t`` is <= ``fpr``; ``tpr`` is the fraction of positives with
    ``score >= t``. Since the TPR can only fall as ``t`` rises, this is the highest TPR of
    any threshold meeting the FPR target, the same as the highest ``tpr`` of
    :func:`roc_curve` among points with ``fpr <= target``. With ``n`` negatives an FPR
    below ``1 / n`` cannot be resolved: the threshold is then just above the maximum
    negative score (achieved FPR 0). Keyword arguments only (see the module docstring).
    """
    pos = _scores(positives, "positives")
    neg = _scores(negatives, "negatives")
    threshold = threshold_for_fpr(negatives=neg, fpr=fpr)
    return TprAtFpr(
        tpr=float(np.mean(pos >= threshold)),
        threshold=threshold,
        achieved_fpr=float(np.mean(neg >= threshold)),
    )


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a rate ``successes / n`` (two-sided, ``confidence``).

    Unlike the normal approximation it stays inside [0, 1] and is informative at 0 and at
    ``n`` successes; it equals scipy's ``binomtest(k, n).proportion_ci(method="wilson")``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise MetricError(f"n must be an int >= 1; got {n!r}")
    if isinstance(successes, bool) or not isinstance(successes, int | np.integer):
        raise MetricError(f"successes must be an int; got {successes!r}")
    if not 0 <= successes <= n:
        raise MetricError(f"successes must be in [0, n={n}]; got {successes}")
    if not 0.0 < confidence < 1.0:
        raise MetricError(f"confidence must be in (0, 1); got {confidence!r}")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)  # exact ends, no rounding
    return lo, hi

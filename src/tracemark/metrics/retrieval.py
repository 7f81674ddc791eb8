"""Copy-detection metrics of the Image Similarity Challenge (DISC21 / ISC2021).

A system returns *predictions* ``(query, reference, score)``: "query image ``query`` is a
copy of reference image ``reference``", with a higher score meaning more confident. The
*ground truth* maps each query that is a copy to its one reference: ``{query: reference}``.
Queries absent from it (or mapped to ``None``) are distractors: every prediction for them
is a false positive. A prediction is positive when ``ground_truth[query] == reference``.

Conventions, following the ISC2021 reference code (``facebookresearch/isc2021``,
``isc/metrics.py``):

- Predictions are pooled over all queries and sorted by decreasing score. Among equal
  scores negatives come first (*pessimistic ties*), so tied scores can never raise a
  metric.
- Recall is relative to every ground-truth pair, retrieved or not: a copy that was never
  predicted lowers recall and average precision.
- Each query keeps at most ``max_per_query`` predictions (default 10), its highest
  scores; where the cut falls inside a tie, negatives are kept first (pessimistic).
- A ``(query, reference)`` pair predicted more than once counts once, with its highest
  score. (The ISC2021 scorer rejects such input instead.)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from tracemark.errors import MetricError

__all__ = [
    "Prediction",
    "PrecisionRecallCurve",
    "precision_recall_curve",
    "micro_average_precision",
    "recall_at_precision",
    "accuracy_at_rank1",
]

FloatArray = npt.NDArray[np.float64]


class Prediction(NamedTuple):
    """One predicted match: ``query`` is a copy of ``reference`` with confidence ``score``."""

    query: Hashable
    reference: Hashable
    score: float


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """Precision and recall after each prediction of the pooled, pessimistically sorted list.

    Arrays have one entry per kept prediction, in that order (scores decreasing, recall
    non-decreasing): ``precision[i]`` and ``recall[i]`` count the first ``i + 1``
    predictions, ``thresholds[i]`` is the score of prediction ``i``, and ``is_positive[i]``
    says whether it is a true match.
    """

    precision: FloatArray
    recall: FloatArray
    thresholds: FloatArray
    is_positive: npt.NDArray[np.bool_]
    num_positives: int
    """Number of ground-truth pairs (the denominator of recall)."""


def _best_scores(predictions: Iterable[Any]) -> dict[tuple[Hashable, Hashable], float]:
    """``{(query, reference): score}``, the highest score where a pair repeats."""
    if isinstance(predictions, str | bytes) or not isinstance(predictions, Iterable):
        raise MetricError(
            f"predictions must be a sequence of (query, reference, score); got {type(predictions).__name__}"
        )
    best: dict[tuple[Hashable, Hashable], float] = {}
    for index, item in enumerate(predictions):
        try:
            query, reference, raw = item
            score = float(raw)
            key = (query, reference)
            hash(key)
        except (TypeError, ValueError) as exc:
            raise MetricError(
                f"prediction {index} is not (query, reference, score) with a numeric score "
                f"and hashable ids: {item!r}"
            ) from exc
        if not math.isfinite(score):
            raise MetricError(f"prediction {index} has a non-finite score: {item!r}")
        if key not in best or score > best[key]:
            best[key] = score
    return best


def _positives(ground_truth: Mapping[Hashable, Hashable | None]) -> dict[Hashable, Hashable]:
    if not isinstance(ground_truth, Mapping):
        raise MetricError(
            f"ground_truth must be a mapping {{query: reference}}; got {type(ground_truth).__name__}"
        )
    truth = {q: r for q, r in ground_truth.items() if r is not None}
    if not truth:
        raise MetricError("ground_truth holds no positive pair (query -> reference)")
    return truth


def _check_cap(max_per_query: int | None) -> int | None:
    if max_per_query is None:
        return None
    if isinstance(max_per_query, bool) or not isinstance(max_per_query, int | np.integer):
        raise MetricError(f"max_per_query must be a positive int or None; got {max_per_query!r}")
    if max_per_query < 1:
        raise MetricError(f"max_per_query must be >= 1 or None; got {max_per_query}")
    return int(max_per_query)


def _pessimistic_order(scores: FloatArray, positive: npt.NDArray[np.bool_]) -> npt.NDArray[Any]:
    """Indices sorting by decreasing score, negatives before positives among ties."""
    return np.lexsort((positive, -scores))


def precision_recall_curve(
    predictions: Iterable[Any],
    ground_truth: Mapping[Hashable, Hashable | None],
    *,
    max_per_query: int | None = 10,
) -> PrecisionRecallCurve:
    """Precision and recall along the pooled prediction list (see the module docstring).

    Raises :class:`MetricError` when ``ground_truth`` has no positive pair. An empty
    ``predictions`` gives empty arrays.
    """
    truth = _positives(ground_truth)
    cap = _check_cap(max_per_query)
    best = _best_scores(predictions)

    per_query: dict[Hashable, list[tuple[float, bool]]] = {}
    for (query, reference), score in best.items():
        is_match = query in truth and bool(truth[query] == reference)
        per_query.setdefault(query, []).append((score, is_match))
    kept: list[tuple[float, bool]] = []
    for rows in per_query.values():
        # decreasing score, negatives (False) first among ties
        rows.sort(key=lambda row: (-row[0], row[1]))
        kept.extend(rows if cap is None else rows[:cap])

    scores = np.array([s for s, _ in kept], dtype=np.float64)
    positive = np.array([p for _, p in kept], dtype=np.bool_)
    order = _pessimistic_order(scores, positive)
    scores, positive = scores[order], positive[order]
    true_pos = np.cumsum(positive, dtype=np.float64)
    return PrecisionRecallCurve(
        precision=true_pos / np.arange(1, scores.size + 1, dtype=np.float64),
        recall=true_pos / len(truth),
        thresholds=scores,
        is_positive=positive,
        num_positives=len(truth),
    )


def micro_average_precision(
    predictions: Iterable[Any],
    ground_truth: Mapping[Hashable, Hashable | None],
    *,
    max_per_query: int | None = 10,
) -> float:
    """Micro average precision (uAP), the primary ISC2021 / DISC21 metric.

    ``AP = sum_i (recall_i - recall_{i-1}) * precision_i`` over the pooled, pessimistically
    sorted list, i.e. the sum of precision@k at each true match divided by the number of
    ground-truth pairs (so copies never predicted count as zero).
    """
    curve = precision_recall_curve(predictions, ground_truth, max_per_query=max_per_query)
    return float(curve.precision[curve.is_positive].sum() / curve.num_positives)


def recall_at_precision(
    predictions: Iterable[Any],
    ground_truth: Mapping[Hashable, Hashable | None],
    precision: float = 0.9,
    *,
    max_per_query: int | None = 10,
) -> float:
    """Highest recall of any operating point whose precision is at least ``precision``.

    Operating points are the prefixes of the pooled, pessimistically sorted list (as in the
    ISC2021 scorer's ``recall_at_p90``). Returns ``0.0`` when no point reaches the target:
    the only such point is then "predict nothing".
    """
    try:
        target = float(precision)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"precision must be a number in [0, 1]; got {precision!r}") from exc
    if not (0.0 <= target <= 1.0):
        raise MetricError(f"precision must be in [0, 1]; got {precision!r}")
    curve = precision_recall_curve(predictions, ground_truth, max_per_query=max_per_query)
    valid = curve.precision >= target
    if not np.any(valid):
        return 0.0
    return float(curve.recall[valid].max())


def accuracy_at_rank1(
    predictions: Iterable[Any],
    ground_truth: Mapping[Hashable, Hashable | None],
) -> float:
    """Fraction of ground-truth queries whose top-scoring prediction is their reference.

    A query without predictions counts as wrong. The right reference must score strictly
    higher than every other reference predicted for that query: a tie at the top counts
    as wrong (pessimistic). Distractor queries are ignored.
    """
    truth = _positives(ground_truth)
    best = _best_scores(predictions)
    right_score: dict[Hashable, float] = {}
    best_wrong: dict[Hashable, float] = {}
    for (query, reference), score in best.items():
        if query not in truth:
            continue
        if truth[query] == reference:
            right_score[query] = score
        else:
            best_wrong[query] = max(score, best_wrong.get(query, -math.inf))
    correct = sum(
        1 for query, score in right_score.items() if score > best_wrong.get(query, -math.inf)
    )
    return correct / len(truth)

"""Metrics: image quality (PSNR, SSIM), detection (bit accuracy, ROC, TPR at FPR) and
copy-detection retrieval (ISC2021 / DISC21 micro AP, recall at precision, rank-1 accuracy).

All functions are pure, take plain numpy arrays or Python sequences, and raise
:class:`tracemark.errors.MetricError` on inconsistent input. The functions of two score
groups take keyword arguments only (``auroc(positives=..., negatives=...)``), so that
scikit-learn's ``(labels, scores)`` order cannot be passed by mistake; a positional call
raises :class:`~tracemark.errors.MetricError`. :func:`scores_by_label` converts from
scikit-learn's form.
"""

from tracemark.metrics.detection import (
    RocCurve,
    TprAtFpr,
    auroc,
    bit_accuracy,
    roc_curve,
    scores_by_label,
    threshold_for_fpr,
    tpr_at_fpr,
    wilson_interval,
)
from tracemark.metrics.image import SSIM_SIGMA, SSIM_WINDOW, psnr, ssim
from tracemark.metrics.retrieval import (
    PrecisionRecallCurve,
    Prediction,
    accuracy_at_rank1,
    micro_average_precision,
    precision_recall_curve,
    recall_at_precision,
)

__all__ = [
    "psnr",
    "ssim",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "bit_accuracy",
    "roc_curve",
    "RocCurve",
    "auroc",
    "scores_by_label",
    "tpr_at_fpr",
    "TprAtFpr",
    "threshold_for_fpr",
    "wilson_interval",
    "Prediction",
    "PrecisionRecallCurve",
    "precision_recall_curve",
    "micro_average_precision",
    "recall_at_precision",
    "accuracy_at_rank1",
]

"""Tests of tracemark.metrics against independent oracles (scikit-image, scikit-learn,
brute force)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from tracemark.errors import ImageTooSmallError, MetricError
from tracemark.metrics import (
    Prediction,
    accuracy_at_rank1,
    auroc,
    bit_accuracy,
    micro_average_precision,
    precision_recall_curve,
    psnr,
    recall_at_precision,
    roc_curve,
    scores_by_label,
    ssim,
    threshold_for_fpr,
    tpr_at_fpr,
)

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "corpus"


# --- image ----------------------------------------------------------------------------


def _corpus_images() -> list[Path]:
    paths = (
        sorted((CORPUS / "photo").glob("*.jpg"))[:2] + sorted((CORPUS / "art").glob("*.jpg"))[:1]
    )
    return paths


@pytest.fixture(scope="module", params=range(3), ids=["photo0", "photo1", "art0"])
def image_pair(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray]:
    paths = _corpus_images()
    if len(paths) < 3:
        pytest.skip(f"test corpus of real JPEGs not found under {CORPUS}")
    image = np.asarray(Image.open(paths[request.param]).convert("RGB"))
    rng = np.random.default_rng(request.param)
    noise = rng.normal(0.0, 8.0, size=image.shape)
    noisy = np.clip(image + noise, 0, 255).round().astype(np.uint8)
    return image, noisy


def _sk_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255) -> float:
    return structural_similarity(
        a,
        b,
        channel_axis=-1 if a.ndim == 3 else None,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
    )


def test_psnr_matches_skimage_on_real_images(image_pair: tuple[np.ndarray, np.ndarray]) -> None:
    image, noisy = image_pair
    expected = peak_signal_noise_ratio(image, noisy, data_range=255)
    assert psnr(image, noisy) == pytest.approx(expected, rel=1e-12)
    assert 25 < psnr(image, noisy) < 35  # sigma-8 noise is about 30 dB
    grey = image[..., 0]
    assert psnr(grey, noisy[..., 0]) == pytest.approx(
        peak_signal_noise_ratio(grey, noisy[..., 0], data_range=255), rel=1e-12
    )


def test_ssim_matches_skimage_on_real_images(image_pair: tuple[np.ndarray, np.ndarray]) -> None:
    image, noisy = image_pair
    value = ssim(image, noisy)
    assert value == pytest.approx(_sk_ssim(image, noisy), abs=1e-10)
    assert 0.3 < value < 0.99
    # the default 7x7 uniform window gives a different number: the configuration matters
    assert abs(value - structural_similarity(image, noisy, channel_axis=-1)) > 1e-4
    grey = np.asarray(Image.fromarray(image).convert("L"))
    grey_noisy = np.asarray(Image.fromarray(noisy).convert("L"))
    assert ssim(grey, grey_noisy) == pytest.approx(_sk_ssim(grey, grey_noisy), abs=1e-10)


def test_ssim_colour_is_mean_of_channels() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (40, 33, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    per_channel = [ssim(a[..., c], b[..., c]) for c in range(3)]
    assert ssim(a, b) == pytest.approx(float(np.mean(per_channel)), abs=1e-12)


def test_identical_images() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)


def test_float_images_with_data_range() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((30, 30))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    assert psnr(a, b, data_range=1.0) == pytest.approx(
        peak_signal_noise_ratio(a, b, data_range=1.0), rel=1e-12
    )
    assert ssim(a, b, data_range=1.0) == pytest.approx(_sk_ssim(a, b, 1.0), abs=1e-10)


@pytest.mark.parametrize("metric", [psnr, ssim])
@pytest.mark.parametrize(
    ("reference", "test"),
    [
        (np.zeros((20, 20, 3), np.uint8), np.zeros((20, 21, 3), np.uint8)),
        (np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20), np.uint8)),
        (np.zeros((20, 20, 4), np.uint8), np.zeros((20, 20, 4), np.uint8)),
        (np.zeros((20, 20, 3, 1), np.uint8), np.zeros((20, 20, 3, 1), np.uint8)),
        (np.zeros((0, 20, 3), np.uint8), np.zeros((0, 20, 3), np.uint8)),
        (np.full((20, 20), np.nan), np.zeros((20, 20))),
        (np.zeros((20, 20), bool), np.zeros((20, 20), bool)),
        ([[0] * 20] * 20, np.zeros((20, 20), np.uint8)),
    ],
    ids=["shape", "channels", "rgba", "4d", "empty", "nan", "bool", "list"],
)
def test_image_metric_errors(metric, reference, test) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MetricError):
        metric(reference, test)


@pytest.mark.parametrize("metric", [psnr, ssim])
@pytest.mark.parametrize("data_range", [0, -1, math.nan, "x"])
def test_image_metric_bad_data_range(metric, data_range) -> None:  # type: ignore[no-untyped-def]
    image = np.zeros((20, 20), np.uint8)
    with pytest.raises(MetricError):
        metric(image, image, data_range=data_range)


def test_ssim_too_small() -> None:
    image = np.zeros((10, 40, 3), np.uint8)
    with pytest.raises(ImageTooSmallError, match=r"ssim needs both sides >= 11 px.*got 40x10"):
        ssim(image, image)
    assert psnr(image, image) == math.inf  # psnr has no minimum size


# --- bit accuracy -----------------------------------------------------------------------


def test_bit_accuracy_single_and_batch() -> None:
    rng = np.random.default_rng(0)
    expected = rng.integers(0, 2, (5, 48))
    flips = rng.random((5, 48)) < np.linspace(0, 0.5, 5)[:, None]
    decoded = expected ^ flips
    per_row = bit_accuracy(expected, decoded)
    assert isinstance(per_row, np.ndarray)
    assert per_row.shape == (5,)
    np.testing.assert_allclose(per_row, 1.0 - flips.sum(axis=1) / 48)
    assert bit_accuracy(expected[2], decoded[2]) == pytest.approx(1.0 - flips[2].sum() / 48)
    assert isinstance(bit_accuracy(expected[2], decoded[2]), float)
    # one message for every row; booleans and floats are bits too
    same = bit_accuracy(expected[0].astype(bool), decoded.astype(float))
    np.testing.assert_allclose(same, (decoded == expected[0]).mean(axis=1))
    assert bit_accuracy([1, 0, 1, 1], [True, True, True, True]) == 0.75


@pytest.mark.parametrize(
    ("expected", "decoded"),
    [
        ([0, 1, 1], [0, 1]),
        (np.zeros((2, 4)), np.zeros((3, 4))),
        (np.zeros((2, 4)), np.zeros(4)),
        ([0, 2, 1], [0, 1, 1]),
        ([0, 1, 1], [0, np.nan, 1]),
        ([], []),
        (np.zeros((3, 0)), np.zeros((3, 0))),
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2))),
        (["0", "1"], ["0", "1"]),
    ],
    ids=["length", "rows", "2d-expected", "value", "nan", "empty", "empty-rows", "3d", "strings"],
)
def test_bit_accuracy_errors(expected, decoded) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MetricError):
        bit_accuracy(expected, decoded)


# --- ROC, AUROC, TPR@FPR -----------------------------------------------------------------


def _random_scores(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Small integer-valued scores: many ties, within and across classes."""
    levels = int(rng.integers(1, 8))
    pos = rng.integers(0, levels, int(rng.integers(1, 25))) + rng.integers(0, 3)
    neg = rng.integers(0, levels, int(rng.integers(1, 25))).astype(float)
    return pos.astype(float), neg


def _sk_inputs(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    return labels, np.r_[pos, neg]


def test_roc_curve_and_auroc_match_sklearn_with_ties() -> None:
    rng = np.random.default_rng(42)
    for _ in range(300):
        pos, neg = _random_scores(rng)
        labels, scores = _sk_inputs(pos, neg)
        fpr, tpr, thresholds = sk_roc_curve(labels, scores, drop_intermediate=False)
        curve = roc_curve(positives=pos, negatives=neg)
        np.testing.assert_array_equal(curve.thresholds, thresholds)
        np.testing.assert_allclose(curve.fpr, fpr, rtol=0, atol=1e-15)
        np.testing.assert_allclose(curve.tpr, tpr, rtol=0, atol=1e-15)
        assert auroc(positives=pos, negatives=neg) == pytest.approx(
            roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_continuous_and_extremes() -> None:
    rng = np.random.default_rng(7)
    pos, neg = rng.normal(1, 1, 500), rng.normal(0, 1, 700)
    labels, scores = _sk_inputs(pos, neg)
    assert auroc(positives=pos, negatives=neg) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-12)
    assert auroc(positives=[2, 3], negatives=[0, 1]) == 1.0
    assert auroc(positives=[0, 1], negatives=[2, 3]) == 0.0
    assert auroc(positives=[1, 1], negatives=[1, 1, 1]) == 0.5


def _brute_tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float) -> tuple[float, float, float]:
    """Smallest candidate threshold meeting the FPR target, over every threshold that can
    make a difference (each score, the float just above it, and +-inf)."""
    values = np.r_[pos, neg]
    candidates = sorted({-math.inf, math.inf, *values, *np.nextafter(values, np.inf)})
    for t in candidates:  # increasing: the first feasible one is the smallest
        if np.mean(neg >= t) <= fpr:
            return float(np.mean(pos >= t)), t, float(np.mean(neg >= t))
    raise AssertionError("+inf is always feasible")


def test_tpr_at_fpr_matches_brute_force_and_sklearn() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        pos, neg = _random_scores(rng)
        labels, scores = _sk_inputs(pos, neg)
        sk_fpr, sk_tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
        for target in (0.0, 0.01, 0.05, 0.1, 1 / 3, 0.29, 0.5, 1.0, float(rng.random())):
            result = tpr_at_fpr(positives=pos, negatives=neg, fpr=target)
            tpr, threshold, achieved = _brute_tpr_at_fpr(pos, neg, target)
            assert (result.tpr, result.threshold, result.achieved_fpr) == (tpr, threshold, achieved)
            assert result.achieved_fpr <= target
            assert result.threshold == threshold_for_fpr(negatives=neg, fpr=target)
            # the best ROC point within the FPR budget
            assert result.tpr == pytest.approx(sk_tpr[sk_fpr <= target + 1e-12].max(), abs=1e-12)


def test_tpr_at_fpr_below_resolution() -> None:
    neg = np.arange(10.0)  # 10 negatives: FPR resolution 0.1
    pos = np.array([8.5, 9.0, 9.5, 10.0])
    result = tpr_at_fpr(positives=pos, negatives=neg, fpr=0.05)  # < 1/n: above the max negative
    assert result.threshold > neg.max()
    assert result.threshold == np.nextafter(9.0, np.inf)
    assert (result.tpr, result.achieved_fpr) == (0.5, 0.0)
    result = tpr_at_fpr(positives=pos, negatives=neg, fpr=0.1)  # exactly 1/n: one negative may pass
    assert result.threshold == np.nextafter(8.0, np.inf)
    assert (result.tpr, result.achieved_fpr) == (1.0, 0.1)


def test_tpr_at_fpr_all_ties() -> None:
    neg = np.full(4, 0.5)
    pos = np.full(3, 0.5)
    for target in (0.0, 0.25, 0.5, 0.99):  # tied negatives cannot be split
        result = tpr_at_fpr(positives=pos, negatives=neg, fpr=target)
        assert result.threshold == np.nextafter(0.5, np.inf)
        assert (result.tpr, result.achieved_fpr) == (0.0, 0.0)
    result = tpr_at_fpr(positives=pos, negatives=neg, fpr=1.0)
    assert (result.tpr, result.threshold, result.achieved_fpr) == (1.0, -math.inf, 1.0)


def test_threshold_for_fpr_quantile_without_rounding_trap() -> None:
    neg = np.arange(100.0)
    # 0.29 * 100 is 28.999999999999996 in floats; 29 negatives still meet FPR <= 0.29
    assert threshold_for_fpr(negatives=neg, fpr=0.29) == np.nextafter(70.0, np.inf)
    assert np.mean(neg >= threshold_for_fpr(negatives=neg, fpr=0.29)) == 0.29


@pytest.mark.parametrize(
    ("pos", "neg"),
    [
        ([], [1.0]),
        ([1.0], []),
        ([1.0, np.nan], [0.0]),
        ([1.0], [np.inf]),
        ([[1.0]], [0.0]),
        (["a"], [0.0]),
    ],
    ids=["no-pos", "no-neg", "nan", "inf", "2d", "strings"],
)
def test_detection_score_errors(pos, neg) -> None:  # type: ignore[no-untyped-def]
    for call in (
        lambda: roc_curve(positives=pos, negatives=neg),
        lambda: auroc(positives=pos, negatives=neg),
        lambda: tpr_at_fpr(positives=pos, negatives=neg, fpr=0.1),
    ):
        with pytest.raises(MetricError):
            call()


@pytest.mark.parametrize("fpr", [-0.1, 1.5, math.nan, "x"])
def test_fpr_out_of_range(fpr) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MetricError):
        threshold_for_fpr(negatives=[0.0, 1.0], fpr=fpr)
    with pytest.raises(MetricError):
        tpr_at_fpr(positives=[1.0], negatives=[0.0, 1.0], fpr=fpr)


def test_threshold_for_fpr_needs_negatives() -> None:
    with pytest.raises(MetricError):
        threshold_for_fpr(negatives=[], fpr=0.1)


@pytest.mark.parametrize(
    "call",
    [
        lambda s, lab: auroc(s, lab),
        lambda s, lab: roc_curve(s, lab),
        lambda s, lab: tpr_at_fpr(s, lab, 0.1),
        lambda s, lab: tpr_at_fpr(s, lab, fpr=0.1),
        lambda s, lab: threshold_for_fpr(s, 0.1),
    ],
    ids=["auroc", "roc_curve", "tpr_at_fpr", "tpr_at_fpr-fpr-named", "threshold_for_fpr"],
)
def test_score_functions_cannot_be_called_positionally(call) -> None:  # type: ignore[no-untyped-def]
    """scikit-learn's (y_true, y_score) order, or tracemark's old (pos, neg): both are two
    arrays of numbers, so a positional call is refused with a typed error, never a number."""
    rng = np.random.default_rng(3)
    scores = rng.random(50)
    labels = (rng.random(50) > 0.5).astype(int)
    with pytest.raises(MetricError, match="keyword arguments only"):
        call(labels, scores)
    with pytest.raises(MetricError, match="scores_by_label"):
        call(scores, labels)


def test_scores_by_label_is_sklearns_order_and_checks_its_labels() -> None:
    rng = np.random.default_rng(4)
    for _ in range(50):
        n = int(rng.integers(2, 60))
        labels = rng.integers(0, 2, n)
        labels[:2] = (0, 1)
        scores = rng.normal(size=n).round(1)  # ties
        pos, neg = scores_by_label(labels=labels, scores=scores)
        assert auroc(positives=pos, negatives=neg) == pytest.approx(
            roc_auc_score(labels, scores), abs=1e-12)
        pos_b, neg_b = scores_by_label(labels=labels.astype(bool), scores=scores)
        np.testing.assert_array_equal(pos, pos_b)
        np.testing.assert_array_equal(neg, neg_b)
    scores = rng.random(10)
    labels = np.r_[np.ones(5, int), np.zeros(5, int)]
    with pytest.raises(MetricError, match="labels"):  # scores where labels go
        scores_by_label(labels=scores, scores=labels)
    with pytest.raises(MetricError, match="one length"):
        scores_by_label(labels=labels[:-1], scores=scores)
    with pytest.raises(MetricError, match="both classes"):
        scores_by_label(labels=np.ones(10, int), scores=scores)
    with pytest.raises(MetricError):
        scores_by_label(labels, scores)  # type: ignore[misc]


def test_symmetric_metrics_do_not_depend_on_order() -> None:
    """The metrics left positional are symmetric: order cannot change their number."""
    rng = np.random.default_rng(6)
    a = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    assert psnr(a, b) == psnr(b, a)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)
    x, y = rng.integers(0, 2, 64), rng.integers(0, 2, 64)
    assert bit_accuracy(x, y) == bit_accuracy(y, x)
    with pytest.raises(MetricError):  # arrays only: a path is not an image here
        psnr("a.png", b)  # type: ignore[arg-type]


# --- retrieval ------------------------------------------------------------------------------


def _random_retrieval(
    rng: np.random.Generator, n_queries: int, n_refs: int, per_query: int, levels: int
) -> tuple[list[tuple[str, str, float]], dict[str, str]]:
    """Random predictions with integer scores (ties) for queries, half of them copies."""
    truth = {f"q{i}": f"r{rng.integers(n_refs)}" for i in range(n_queries) if rng.random() < 0.6}
    predictions = []
    for i in range(n_queries):
        k = int(rng.integers(0, per_query + 1))
        for r in rng.choice(n_refs, size=min(k, n_refs), replace=False):
            predictions.append((f"q{i}", f"r{r}", float(rng.integers(levels))))
    return predictions, truth


def _ap_of_order(labels: list[bool], num_positives: int) -> float:
    """ISC2021 formula: sum of (recall_i - recall_{i-1}) * precision_i."""
    ap, tp, previous_recall = 0.0, 0, 0.0
    for k, label in enumerate(labels, start=1):
        tp += label
        recall = tp / num_positives
        ap += (recall - previous_recall) * (tp / k)
        previous_recall = recall
    return ap


def _brute_ap(predictions, truth, cap) -> float:  # type: ignore[no-untyped-def]
    """Pessimistic order by the explicit key (-score, is_positive), cap per query."""
    best: dict[tuple[str, str], float] = {}
    for q, r, s in predictions:
        best[(q, r)] = max(s, best.get((q, r), -math.inf))
    rows = [(s, truth.get(q) == r, q) for (q, r), s in best.items()]
    rows.sort(key=lambda row: (-row[0], row[1]))
    seen: dict[str, int] = {}
    kept = []
    for _score, positive, q in rows:  # a query's first `cap` rows in pessimistic order
        seen[q] = seen.get(q, 0) + 1
        if cap is None or seen[q] <= cap:
            kept.append(positive)
    return _ap_of_order(kept, len(truth))


def test_micro_ap_matches_brute_force() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        predictions, truth = _random_retrieval(rng, 12, 6, 5, levels=4)
        if not truth:
            continue
        for cap in (None, 1, 3, 10):
            expected = _brute_ap(predictions, truth, cap)
            got = micro_average_precision(predictions, truth, max_per_query=cap)
            assert got == pytest.approx(expected, abs=1e-12)


def test_micro_ap_is_the_worst_order_among_ties() -> None:
    """Pessimistic ties: the AP equals the minimum over every order consistent with the
    scores (cap applied per query in that order)."""
    rng = np.random.default_rng(12)
    checked = 0
    while checked < 25:
        predictions, truth = _random_retrieval(rng, 3, 3, 3, levels=2)
        if not truth or not 2 <= len(predictions) <= 6:
            continue
        checked += 1
        for cap in (None, 1, 2):
            worst, best = math.inf, -math.inf
            for order in itertools.permutations(predictions):
                if any(a[2] < b[2] for a, b in itertools.pairwise(order)):
                    continue
                count: dict[str, int] = {}
                labels = []
                for q, r, _ in order:
                    count[q] = count.get(q, 0) + 1
                    if cap is None or count[q] <= cap:
                        labels.append(truth.get(q) == r)
                ap = _ap_of_order(labels, len(truth))
                worst, best = min(worst, ap), max(best, ap)
            got = micro_average_precision(predictions, truth, max_per_query=cap)
            assert got == pytest.approx(worst, abs=1e-12)
            assert got <= best


def test_tie_between_positive_and_negative_lowers_ap() -> None:
    truth = {"q1": "r1"}
    tied = [("q1", "r1", 0.5), ("q2", "r9", 0.5)]
    assert micro_average_precision(tied, truth) == 0.5  # negative ranked first
    untied = [("q1", "r1", 0.6), ("q2", "r9", 0.5)]
    assert micro_average_precision(untied, truth) == 1.0


def test_micro_ap_vs_sklearn_without_ties() -> None:
    """Tie-free: sklearn's AP over the predictions times the fraction of ground-truth pairs
    retrieved; with every pair retrieved the two coincide."""
    rng = np.random.default_rng(13)
    for trial in range(50):
        n_queries = 30
        truth = {f"q{i}": f"r{i}" for i in range(0, n_queries, 2)}
        scores = iter(rng.permutation(1000) / 1000.0)  # distinct scores
        predictions = []
        for i in range(n_queries):
            refs = [f"r{i + 100}", f"r{i + 200}"]
            if f"q{i}" in truth and (trial % 2 == 0 or rng.random() < 0.7):
                refs.append(f"r{i}")  # even trials: every copy retrieved
            predictions += [(f"q{i}", r, float(next(scores))) for r in refs]
        labels = np.array([truth.get(q) == r for q, r, _ in predictions])
        sk_ap = average_precision_score(labels, [s for _, _, s in predictions])
        retrieved = labels.sum() / len(truth)
        got = micro_average_precision(predictions, truth, max_per_query=None)
        assert got == pytest.approx(sk_ap * retrieved, abs=1e-12)
        if trial % 2 == 0:
            assert retrieved == 1.0
            assert got == pytest.approx(sk_ap, abs=1e-12)


def test_cap_per_query() -> None:
    truth = {"q1": "r1"}
    predictions = [("q1", f"x{i}", 0.9 - i / 100) for i in range(10)] + [("q1", "r1", 0.5)]
    # the right reference is 11th for its query: cut off by the default cap of 10
    assert micro_average_precision(predictions, truth) == 0.0
    assert micro_average_precision(predictions, truth, max_per_query=11) == pytest.approx(1 / 11)
    assert micro_average_precision(predictions, truth, max_per_query=None) == pytest.approx(1 / 11)
    # a cut inside a tie keeps the negative (pessimistic)
    tied = [("q1", "x", 0.5), ("q1", "r1", 0.5)]
    assert micro_average_precision(tied, truth, max_per_query=1) == 0.0
    assert micro_average_precision(tied, truth, max_per_query=2) == 0.5


def test_duplicates_keep_max_and_prediction_type() -> None:
    truth = {"q1": "r1", "q2": "r2"}
    predictions = [
        Prediction("q1", "r1", 0.2),
        Prediction("q1", "r1", 0.9),  # duplicate: 0.9 counts, once
        Prediction("q2", "x", 0.5),
        ("q2", "r2", 0.4),
    ]
    curve = precision_recall_curve(predictions, truth)
    np.testing.assert_array_equal(curve.thresholds, [0.9, 0.5, 0.4])
    np.testing.assert_array_equal(curve.is_positive, [True, False, True])
    np.testing.assert_allclose(curve.precision, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(curve.recall, [0.5, 0.5, 1.0])
    assert micro_average_precision(predictions, truth) == pytest.approx((1 + 2 / 3) / 2)


def test_distractors_and_none_in_ground_truth() -> None:
    predictions = [("q1", "r1", 0.9), ("d1", "r1", 0.8), ("q2", "r2", 0.7)]
    with_none = {"q1": "r1", "q2": "r2", "d1": None}
    without = {"q1": "r1", "q2": "r2"}
    expected = (1 + 2 / 3) / 2
    assert micro_average_precision(predictions, with_none) == pytest.approx(expected)
    assert micro_average_precision(predictions, without) == pytest.approx(expected)
    assert micro_average_precision([], without) == 0.0


def _brute_recall_at_precision(predictions, truth, target, cap) -> float:  # type: ignore[no-untyped-def]
    """Thresholds over distinct scores of the kept predictions (a tie is one point)."""
    best: dict[tuple[str, str], float] = {}
    for q, r, s in predictions:
        best[(q, r)] = max(s, best.get((q, r), -math.inf))
    by_query: dict[str, list[tuple[float, bool]]] = {}
    for (q, r), s in best.items():
        by_query.setdefault(q, []).append((s, truth.get(q) == r))
    kept = []
    for rows in by_query.values():
        rows.sort(key=lambda row: (-row[0], row[1]))
        kept += rows if cap is None else rows[:cap]
    recall = 0.0
    for t in {s for s, _ in kept}:
        selected = [p for s, p in kept if s >= t]
        if sum(selected) / len(selected) >= target:
            recall = max(recall, sum(selected) / len(truth))
    return recall


def test_recall_at_precision_matches_brute_force() -> None:
    rng = np.random.default_rng(21)
    hits = 0
    for _ in range(300):
        predictions, truth = _random_retrieval(rng, 10, 3, 3, levels=6)
        if not truth:
            continue
        for target, cap in ((0.9, 10), (0.5, 1), (0.75, None)):
            expected = _brute_recall_at_precision(predictions, truth, target, cap)
            got = recall_at_precision(predictions, truth, target, max_per_query=cap)
            assert got == pytest.approx(expected, abs=1e-12)
            hits += expected > 0
    assert hits > 50  # the cases exercise non-trivial operating points


def test_recall_at_precision_small_cases() -> None:
    truth = {"q1": "r1", "q2": "r2", "q3": "r3"}
    predictions = [("q1", "r1", 0.9), ("q2", "r2", 0.8), ("q9", "r1", 0.7), ("q3", "r3", 0.6)]
    assert recall_at_precision(predictions, truth) == pytest.approx(2 / 3)  # P@3 = 2/3 < 0.9
    assert recall_at_precision(predictions, truth, 0.75) == 1.0
    assert recall_at_precision([("q9", "r1", 0.7)], truth) == 0.0  # never reaches 0.9


def test_accuracy_at_rank1_small_cases() -> None:
    truth = {"q1": "r1", "q2": "r2", "q3": "r3", "q4": "r4"}
    predictions = [
        ("q1", "r1", 0.9),
        ("q1", "x", 0.5),  # q1 right
        ("q2", "r2", 0.5),
        ("q2", "x", 0.5),  # q2 tied at the top: wrong
        ("q3", "x", 0.9),
        ("q3", "r3", 0.1),  # q3 wrong; q4 has no prediction
        ("d", "r1", 1.0),  # a distractor changes nothing
    ]
    assert accuracy_at_rank1(predictions, truth) == 0.25
    assert accuracy_at_rank1([("q2", "r2", 0.1)], truth) == 0.25
    assert accuracy_at_rank1([], truth) == 0.0
    # a low-scored duplicate of the right pair does not hide its high score
    assert (
        accuracy_at_rank1([("q3", "x", 0.5), ("q3", "r3", 0.9), ("q3", "r3", 0.1)], truth) == 0.25
    )


@pytest.mark.parametrize(
    ("predictions", "truth"),
    [
        ([("q1", "r1", 0.5)], {}),
        ([("q1", "r1", 0.5)], {"d": None}),
        ([("q1", "r1", 0.5)], [("q1", "r1")]),
        ([("q1", "r1", math.nan)], {"q1": "r1"}),
        ([("q1", "r1", math.inf)], {"q1": "r1"}),
        ([("q1", "r1", "high")], {"q1": "r1"}),
        ([("q1", "r1")], {"q1": "r1"}),
        ([(["q1"], "r1", 0.5)], {"q1": "r1"}),
        ("q1 r1 0.5", {"q1": "r1"}),
        (42, {"q1": "r1"}),
    ],
    ids=[
        "empty-truth",
        "only-distractors",
        "truth-not-mapping",
        "nan",
        "inf",
        "score-str",
        "two-fields",
        "unhashable",
        "string",
        "not-iterable",
    ],
)
def test_retrieval_errors(predictions, truth) -> None:  # type: ignore[no-untyped-def]
    calls = (
        lambda: micro_average_precision(predictions, truth),
        lambda: recall_at_precision(predictions, truth),
        lambda: precision_recall_curve(predictions, truth),
        lambda: accuracy_at_rank1(predictions, truth),
    )
    for call in calls:
        with pytest.raises(MetricError):
            call()


@pytest.mark.parametrize("cap", [0, -1, 2.5, True, "10"])
def test_bad_cap(cap) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MetricError):
        micro_average_precision([("q1", "r1", 0.5)], {"q1": "r1"}, max_per_query=cap)


@pytest.mark.parametrize("precision", [-0.1, 1.1, math.nan, "x"])
def test_bad_precision_target(precision) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MetricError):
        recall_at_precision([("q1", "r1", 0.5)], {"q1": "r1"}, precision)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (57, 100),
                                      (1, 1000), (999, 1000)])  # fmt: skip
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_interval_matches_scipy(k: int, n: int, confidence: float) -> None:
    from scipy.stats import binomtest

    from tracemark.metrics import wilson_interval

    ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = wilson_interval(k, n, confidence=confidence)
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


@pytest.mark.parametrize(("k", "n", "confidence"), [(1, 0, 0.95), (-1, 5, 0.95), (6, 5, 0.95),
                                                    (1, 5, 1.0), (1.5, 5, 0.95), (True, 5, 0.95)])  # fmt: skip
def test_wilson_interval_rejects_bad_input(k: object, n: object, confidence: float) -> None:
    from tracemark.metrics import wilson_interval

    with pytest.raises(MetricError):
        wilson_interval(k, n, confidence=confidence)  # type: ignore[arg-type]


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_image_metrics_refuse_a_wrong_scale(metric) -> None:  # type: ignore[no-untyped-def]
    """A uint8 image against its [0, 1] float version, or a float pair without a range,
    is refused rather than measured on the wrong scale; unsigned dtypes have a default."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with pytest.raises(MetricError, match="same dtype"):
        metric(a, a / 255.0)
    with pytest.raises(MetricError, match="same dtype"):
        metric(a.astype(np.uint16) * 257, a)
    with pytest.raises(MetricError, match="give data_range"):
        metric(a / 255.0, a / 255.0 * 0.99)
    b = np.clip(a.astype(int) + rng.integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    wide = metric(a.astype(np.uint16) * 257, b.astype(np.uint16) * 257)
    assert wide == pytest.approx(metric(a, b), abs=1e-3)  # 65535 is uint16's default range
    assert metric(a / 255.0, b / 255.0, data_range=1.0) == pytest.approx(metric(a, b), abs=1e-6)

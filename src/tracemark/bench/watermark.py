"""Watermark robustness benchmark: embed, attack, detect, and aggregate like W-Bench.

Protocol, for every image and every method:

1. The image is loaded with :func:`tracemark.imageio.load_image`, then optionally resized:
   ``resize=S`` forces a square S x S (W-Bench uses 512), ``max_side=M`` shrinks it so its
   long side is at most M (aspect kept). Both use OpenCV, area interpolation when
   shrinking and bicubic when enlarging.
2. A random payload of ``method.payload_bits`` bits is drawn from a generator seeded with
   ``derive_seed(seed, image_name, method, "payload")`` and embedded, with the fixed
   :data:`BENCH_KEY` for keyed methods, giving the marked image; PSNR, SSIM (against the
   clean image) and the embed time are recorded.
3. The unattacked entry ``none`` and every suite entry are evaluated. An entry's concrete
   parameters are drawn ONCE per image with ``derive_seed(seed, image_name, entry.label)``
   (the same seed ``tracemark attack`` uses), so every method sees the identical attack.
   The attack is applied to the marked image and to the clean image; both are detected.
   For the marked image: bit accuracy of ``detection.bits`` against the payload (0.5 when
   the method returned no bits), exact payload recovery (``detection.payload`` equals the
   payload bytes; for a method without a calibrated detector, which verifies nothing, the
   decoded bits equal the payload when it returns no payload), ``score``, ``p_value`` and
   the detect time. For the clean image (the W-Bench null): its bits against the same
   payload, ``score`` and ``p_value``.
4. A bad image, or any exception inside one (method, image, entry), becomes a record with
   an ``error`` field and the run carries on; the summary counts them.

Aggregates per (method, suite, entry), over images: mean bit accuracy; exact payload rate;
TPR at FPR 1% and 0.1% with bit accuracy as the score, the negatives being the clean
images' bit accuracies under the same attack (W-Bench's protocol), with the threshold;
AUROC of that score; for calibrated methods, TPR at 1% and 0.1% with the method's own
``score`` (negatives: the clean images' scores) and the fractions of marked and of clean
images with ``p_value < 1e-3`` (the latter is the empirical FPR at alpha 1e-3). With
``n`` clean images the smallest resolvable FPR is ``1/n``: below it the threshold sits
just above the largest negative (see :func:`tracemark.metrics.threshold_for_fpr`), so
TPR@0.1% needs ``n >= 1000`` to mean what it says; the report flags it.

Timings are wall-clock per call, in milliseconds, on whatever machine runs the benchmark;
``workers > 1`` spreads images over processes and changes nothing but the timings.
"""

from __future__ import annotations

import math
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tracemark.attacks.suites import Suite, SuiteEntry, derive_seed, get_suite
from tracemark.errors import ConfigError, MissingExtraError, TracemarkError

__all__ = [
    "BENCH_KEY",
    "NONE_ENTRY",
    "FPR_TARGETS",
    "PRESENT_ALPHA",
    "RESULTS_VERSION",
    "BenchConfig",
    "list_images",
    "select_spread",
    "prepare_image",
    "bench_image",
    "run_watermark_bench",
    "aggregate",
    "format_markdown",
    "write_outputs",
    "write_csvs",
    "attack_quality",
    "CSV_COLUMNS",
]

RESULTS_VERSION = 1
BENCH_KEY = "tracemark benchmark key (public, not a secret)"
"""The fixed key every keyed method embeds and detects with."""
NONE_ENTRY = "none"
"""Label (and pseudo-suite name) of the unattacked evaluation."""
FPR_TARGETS = (0.01, 0.001)
PRESENT_ALPHA = 1e-3
"""A detection counts as "present" in the aggregates when ``p_value < PRESENT_ALPHA``."""

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class BenchConfig:
    """What a run does besides which images, methods and suites: validated when built."""

    seed: int = 0
    resize: int | None = None
    max_side: int | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        if self.resize is not None and self.max_side is not None:
            raise ConfigError("give either resize or max_side, not both")
        for name in ("resize", "max_side"):
            value = getattr(self, name)
            if value is not None and value < 16:
                raise ConfigError(f"{name} must be at least 16 px; got {value}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1; got {self.workers}")


# --- inputs ------------------------------------------------------------------------------


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, by suffix: every suffix the loader reads,
    :func:`tracemark.imageio.image_suffixes`, any case), sorted by path."""
    from tracemark.imageio import image_suffixes

    suffixes = image_suffixes()
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)


def select_spread(paths: Sequence[Path], limit: int | None) -> list[Path]:
    """``limit`` paths evenly spaced over ``paths`` (all of them when ``limit`` is None or
    not smaller): a deterministic spread over sub-folders, e.g. photos and art."""
    if limit is None or limit >= len(paths):
        return list(paths)
    if limit < 1:
        raise ConfigError(f"limit must be >= 1; got {limit}")
    return [paths[(i * len(paths)) // limit] for i in range(limit)]


def prepare_image(image: Image, *, resize: int | None = None, max_side: int | None = None) -> Image:
    """Resize for the benchmark: a square ``resize`` x ``resize``, or long side <= ``max_side``."""
    import cv2

    h, w = image.shape[:2]
    if resize is not None:
        size = (resize, resize)
    elif max_side is not None and max(h, w) > max_side:
        s = max_side / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
    else:
        return image
    if size == (w, h):
        return image
    shrink = size[0] * size[1] < w * h
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=interp))


# --- one image ---------------------------------------------------------------------------


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, TracemarkError):
        return exc.to_dict()
    return {"type": type(exc).__name__, "message": str(exc), "source": None}


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def _float(x: float | None, digits: int | None = 6) -> float | None:
    """JSON-safe float: None for None/NaN, +-1e308 for infinities, else rounded to
    ``digits`` significant digits (kept exactly when ``digits`` is None)."""
    if x is None or math.isnan(x):
        return None
    if math.isinf(x):
        return math.copysign(1e308, x)
    return float(x) if digits is None else float(f"{x:.{digits}g}")


def _bit_acc(bits: Any, payload: npt.NDArray[np.uint8]) -> float:
    from tracemark.metrics import bit_accuracy

    if bits is None:
        return 0.5
    return float(bit_accuracy(payload, np.asarray(bits).ravel()))


def _exact(det: Any, payload: npt.NDArray[np.uint8], calibrated: bool) -> bool:
    from tracemark.watermark.base import bits_to_bytes

    if det.payload is not None:
        return bytes(det.payload) == bits_to_bytes(payload)
    if calibrated or det.bits is None:
        return False
    bits = np.asarray(det.bits).ravel()
    return bits.shape == payload.shape and bool(np.array_equal(bits, payload))


def _detect(method: Any, image: Image, key: str | None) -> tuple[Any, float]:
    t0 = time.perf_counter()
    det = method.detect(image, key)
    return det, _ms(t0)


def _evaluate(
    method: Any,
    key: str | None,
    payload: npt.NDArray[np.uint8],
    attacked_marked: Image,
    attacked_clean: Image,
) -> dict[str, Any]:
    """Detection fields of one record (raises on any failure; the caller records it)."""
    det, ms = _detect(method, attacked_marked, key)
    bit_acc = _bit_acc(det.bits, payload)
    exact = _exact(det, payload, method.calibrated)
    cdet, cms = _detect(method, attacked_clean, key)
    return {
        "bit_acc": bit_acc,
        "exact": exact,
        "score": _float(float(det.score)),
        "p_value": _float(det.p_value),
        "detect_ms": ms,
        "clean_bit_acc": _bit_acc(cdet.bits, payload),
        "clean_score": _float(float(cdet.score)),
        "clean_p_value": _float(cdet.p_value),
        "clean_detect_ms": cms,
    }


def bench_image(
    path: Path,
    name: str,
    methods: Mapping[str, Any],
    suites: Sequence[Suite],
    config: BenchConfig,
) -> dict[str, list[dict[str, Any]]]:
    """Every record for one image: ``records`` (one per method and entry, or an error),
    ``embeds`` (quality and time per method) and ``attacks`` (the drawn parameters)."""
    from tracemark.attacks.base import SampleContext, get_attack
    from tracemark.imageio import load_image
    from tracemark.metrics import psnr, ssim

    records: list[dict[str, Any]] = []
    embeds: list[dict[str, Any]] = []
    attacks: list[dict[str, Any]] = []
    try:
        clean = prepare_image(
            load_image(path, name=name), resize=config.resize, max_side=config.max_side
        )
    except Exception as exc:  # a bad image is one error row, the run carries on
        records.append(
            {
                "image": name,
                "method": None,
                "suite": None,
                "entry": None,
                "stage": "load",
                "error": _error(exc),
            }
        )
        return {"records": records, "embeds": embeds, "attacks": attacks}

    marked: dict[str, tuple[Image, npt.NDArray[np.uint8], str | None]] = {}
    for mname, method in methods.items():
        key = BENCH_KEY if method.keyed else None
        rng = np.random.default_rng(derive_seed(config.seed, name, mname, "payload"))
        payload = rng.integers(0, 2, size=method.payload_bits, dtype=np.uint8)
        try:
            t0 = time.perf_counter()
            out = method.embed(clean, payload, key)
            ms = _ms(t0)
            q = psnr(clean, out) if out.shape == clean.shape else float("nan")
            s = ssim(clean, out) if out.shape == clean.shape else float("nan")
        except Exception as exc:
            records.append(
                {
                    "image": name,
                    "method": mname,
                    "suite": None,
                    "entry": None,
                    "stage": "embed",
                    "error": _error(exc),
                }
            )
            continue
        marked[mname] = (out, payload, key)
        embeds.append(
            {
                "image": name,
                "method": mname,
                "psnr": _float(q),
                "ssim": _float(s),
                "embed_ms": ms,
                "payload": "".join(map(str, payload.tolist())),
            }
        )

    def run_entry(
        suite_name: str, label: str, apply: Callable[[Image], Image] | None
    ) -> dict[str, float | None]:
        """Evaluate one entry for every method; returns the attack's quality cost."""
        clean_attacked: Image | None = None
        cost: dict[str, float | None] = {"attack_psnr": None, "attack_ssim": None}
        if apply is not None:
            try:
                clean_attacked = apply(clean)
                cost = attack_quality(clean, clean_attacked)
            except Exception as exc:
                for mname in marked:
                    records.append(
                        {
                            "image": name,
                            "method": mname,
                            "suite": suite_name,
                            "entry": label,
                            "stage": "attack",
                            "error": _error(exc),
                        }
                    )
                return cost
        for mname, (out, payload, key) in marked.items():
            row: dict[str, Any] = {
                "image": name,
                "method": mname,
                "suite": suite_name,
                "entry": label,
            }
            stage = "attack"
            try:
                attacked = out if apply is None else apply(out)
                stage = "detect"
                row.update(
                    _evaluate(
                        methods[mname],
                        key,
                        payload,
                        attacked,
                        clean if clean_attacked is None else clean_attacked,
                    )
                )
            except Exception as exc:
                row.update(stage=stage, error=_error(exc))
            records.append(row)
        return cost

    run_entry(NONE_ENTRY, NONE_ENTRY, None)
    ctx = SampleContext.for_image(clean)
    for suite in suites:
        for entry in suite:
            try:
                rec = suite.draw(entry, derive_seed(config.seed, name, entry.label), ctx)
            except Exception as exc:
                for mname in marked:
                    records.append(
                        {
                            "image": name,
                            "method": mname,
                            "suite": suite.name,
                            "entry": entry.label,
                            "stage": "draw",
                            "error": _error(exc),
                        }
                    )
                continue
            spec = get_attack(rec.attack)
            cost = run_entry(
                suite.name, entry.label, lambda img, spec=spec, rec=rec: spec.apply(img, rec.params)
            )
            attacks.append(
                {
                    "image": name,
                    "suite": suite.name,
                    "entry": entry.label,
                    "params": rec.params,
                    "seed": rec.seed,
                    "strength": _float(rec.strength),
                    **cost,
                }
            )
    return {"records": records, "embeds": embeds, "attacks": attacks}


def attack_quality(clean: Image, attacked: Image) -> dict[str, float | None]:
    """The quality cost of an attack, WAVES-style: PSNR (dB) and SSIM of ``attacked``
    against ``clean`` (both ``(H, W, 3)`` uint8).

    An attack that changes the size (resize, crop, rotation with expand, insert) is
    compared after resizing the attacked image back to the clean image's size (OpenCV
    area interpolation when shrinking, bicubic when enlarging), so geometric attacks get a
    finite, comparable cost; WAVES (An et al., ICML 2024, section 4) places every attack
    on the same quality axis in the same way. PSNR is capped at 100 dB for identical
    images so that the value stays finite in JSON.
    """
    import cv2

    from tracemark.metrics import psnr, ssim

    if attacked.shape != clean.shape:
        h, w = clean.shape[:2]
        shrink = attacked.shape[0] * attacked.shape[1] > h * w
        attacked = cv2.resize(
            attacked, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        )
    return {
        "attack_psnr": _float(min(100.0, float(psnr(clean, attacked)))),
        "attack_ssim": _float(float(ssim(clean, attacked))),
    }


_WORKER: dict[str, Any] = {}


def _load_method(name: str) -> Any:
    """``get_method(name)``, then one embed and detect on a small synthetic image.

    The trial run raises :class:`MissingExtraError` for a method whose optional library is
    missing (the peers import it lazily, on first use) and loads any model before
    anything is timed. Any other failure is left to surface in the per-image records.
    """
    from tracemark.bench.attack_speed import synthetic_image
    from tracemark.watermark import get_method

    method = get_method(name)
    key = BENCH_KEY if method.keyed else None
    image = synthetic_image(max(256, method.min_size))
    try:
        method.detect(method.embed(image, np.zeros(method.payload_bits, np.uint8), key), key)
    except MissingExtraError:
        raise
    except Exception:  # surfaces again, recorded per image, in bench_image
        pass
    return method


def _worker_init(method_names: Sequence[str], suites: Sequence[Suite], config: BenchConfig) -> None:
    _WORKER.update(methods={m: _load_method(m) for m in method_names}, suites=suites, config=config)


def _worker_run(task: tuple[Path, str]) -> dict[str, list[dict[str, Any]]]:
    return bench_image(task[0], task[1], _WORKER["methods"], _WORKER["suites"], _WORKER["config"])


# --- the run -----------------------------------------------------------------------------


def _image_names(paths: Sequence[Path], root: Path | None) -> list[str]:
    names = []
    for p in paths:
        if root is not None and p.is_relative_to(root):
            names.append(p.relative_to(root).as_posix())
        else:
            names.append(p.name)
    return names


def run_watermark_bench(
    images: Sequence[Path],
    methods: Sequence[str],
    suites: Sequence[Suite | str],
    *,
    config: BenchConfig | None = None,
    root: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-serialisable result (see the module docstring).

    ``images`` are paths, named in records by their path relative to ``root`` (else by
    file name; names seed the payloads and the attacks). A method whose extra is missing is
    listed under ``skipped_methods``; an unknown method or suite raises.
    """
    from tqdm import tqdm

    import tracemark.watermark.peers  # noqa: F401  (registers dwtDct, dwtDctSvd, rivaGan)

    cfg = config or BenchConfig()
    suite_objs = [s if isinstance(s, Suite) else get_suite(s) for s in suites]
    names_seen = {s.name for s in suite_objs}
    if len(names_seen) != len(suite_objs) or NONE_ENTRY in names_seen:
        raise ConfigError(f"suite names must be distinct and not {NONE_ENTRY!r}")
    instances: dict[str, Any] = {}
    skipped: list[dict[str, str]] = []
    for m in dict.fromkeys(methods):
        try:
            instances[m] = _load_method(m)
        except MissingExtraError as exc:
            skipped.append({"method": m, "reason": exc.message})
    names = _image_names(images, root)
    if len(set(names)) != len(names):
        raise ConfigError("image names must be distinct (pass root= to name them by relative path)")
    tasks = list(zip(images, names, strict=True))
    records: list[dict[str, Any]] = []
    embeds: list[dict[str, Any]] = []
    attacks: list[dict[str, Any]] = []
    started = time.perf_counter()
    # a bar on a terminal; in a log (not a terminal) a line every 30 s
    tty = sys.stderr.isatty()
    bar = tqdm(
        total=len(tasks),
        desc="bench watermark",
        unit="img",
        file=sys.stderr,
        disable=not progress,
        leave=not tty,
        mininterval=0.1 if tty else 30.0,
        ascii=not tty,
    )
    with bar:
        if cfg.workers == 1 or len(tasks) <= 1 or not instances:
            parts: Iterable[dict[str, list[dict[str, Any]]]] = (
                bench_image(p, n, instances, suite_objs, cfg) for p, n in tasks
            )
            for part in parts:
                records += part["records"]
                embeds += part["embeds"]
                attacks += part["attacks"]
                bar.update(1)
        else:
            with ProcessPoolExecutor(
                max_workers=min(cfg.workers, len(tasks)),
                initializer=_worker_init,
                initargs=(list(instances), suite_objs, cfg),
            ) as pool:
                for part in pool.map(_worker_run, tasks):
                    records += part["records"]
                    embeds += part["embeds"]
                    attacks += part["attacks"]
                    bar.update(1)
    elapsed = time.perf_counter() - started
    method_info = [
        {
            "name": m,
            "payload_bits": int(x.payload_bits),
            "keyed": bool(x.keyed),
            "calibrated": bool(x.calibrated),
            "extra": x.extra,
        }
        for m, x in instances.items()
    ]
    errors = [r for r in records if "error" in r]
    bad_images = sorted({r["image"] for r in errors if r.get("stage") == "load"})
    return {
        "version": RESULTS_VERSION,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "config": {
            **asdict(cfg),
            "key": BENCH_KEY,
            "present_alpha": PRESENT_ALPHA,
            "fpr_targets": list(FPR_TARGETS),
        },
        "methods": method_info,
        "skipped_methods": skipped,
        "suites": [
            {
                "name": s.name,
                "source": s.source,
                "description": s.description,
                "entries": [_entry_dict(e) for e in s],
            }
            for s in suite_objs
        ],
        "images": names,
        "summary": {
            "n_images": len(names),
            "n_bad_images": len(bad_images),
            "bad_images": bad_images,
            "n_records": len(records),
            "n_errors": len(errors),
            "n_detections": 2 * (len(records) - len(errors)),
            "elapsed_s": round(elapsed, 3),
        },
        "quality": _quality(method_info, embeds, records),
        "aggregates": aggregate(records, method_info, suite_objs, attacks),
        "embeds": embeds,
        "attacks": attacks,
        "records": records,
    }


def _entry_dict(e: SuiteEntry) -> dict[str, Any]:
    from tracemark.attacks.suites import _jsonable

    return {
        "label": e.label,
        "attack": e.attack,
        "params": _jsonable(e.params),
        "group": e.series,
        "level": e.level,
    }


# --- aggregation -------------------------------------------------------------------------


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(np.clip(v, -1e300, 1e300)) for v in values if v is not None]


def _tpr_block(pos: list[float], neg: list[float]) -> dict[str, Any] | None:
    from tracemark.metrics import tpr_at_fpr

    if not pos or not neg:
        return None
    out = {}
    for fpr in FPR_TARGETS:
        r = tpr_at_fpr(positives=pos, negatives=neg, fpr=fpr)
        out[str(fpr)] = {
            "tpr": r.tpr,
            "threshold": _float(r.threshold, None),
            "achieved_fpr": r.achieved_fpr,
            "resolvable": fpr * len(neg) >= 1,
        }
    return out


def _present(p_values: Sequence[float | None]) -> float | None:
    vals = [v for v in p_values if v is not None]
    return float(np.mean([v < PRESENT_ALPHA for v in vals])) if vals else None


def aggregate(
    records: Sequence[Mapping[str, Any]],
    methods: Sequence[Mapping[str, Any]],
    suites: Sequence[Suite],
    attacks: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """One aggregate per (method, suite, entry) over images, ``none`` first, suite order.

    ``methods`` are the result's method descriptions (``name``, ``calibrated``); ``attacks``
    the drawn attack records, used for the mean strength of entries without a level.
    """
    from tracemark.metrics import auroc

    by_key: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("method") is not None and r.get("entry") is not None:
            by_key[(r["method"], r["suite"], r["entry"])].append(r)
    strength: dict[tuple[str, str], list[float]] = defaultdict(list)
    cost: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for a in attacks:
        if a.get("strength") is not None:
            strength[(a["suite"], a["entry"])].append(a["strength"])
        for q in ("attack_psnr", "attack_ssim"):
            if a.get(q) is not None:
                cost[(a["suite"], a["entry"], q)].append(a[q])
    slots: list[tuple[str, str, str | None, float | None]] = [
        (NONE_ENTRY, NONE_ENTRY, NONE_ENTRY, 0.0)
    ]
    for s in suites:
        slots += [(s.name, e.label, e.series, e.level) for e in s]
    out = []
    for m in methods:
        for suite, label, group, level in slots:
            rows = by_key.get((m["name"], suite, label), [])
            ok = [r for r in rows if "error" not in r]
            pos = [r["bit_acc"] for r in ok]
            neg = [r["clean_bit_acc"] for r in ok]
            agg: dict[str, Any] = {
                "method": m["name"],
                "suite": suite,
                "entry": label,
                "group": group,
                "level": level,
                "strength": _mean(strength.get((suite, label), [])) if suite != NONE_ENTRY else 0.0,
                "attack_psnr": _mean(cost.get((suite, label, "attack_psnr"), []))
                if suite != NONE_ENTRY
                else 100.0,
                "attack_ssim": _mean(cost.get((suite, label, "attack_ssim"), []))
                if suite != NONE_ENTRY
                else 1.0,
                "n": len(ok),
                "n_errors": len(rows) - len(ok),
                "bit_acc": _mean(pos),
                "clean_bit_acc": _mean(neg),
                "exact": _mean([float(r["exact"]) for r in ok]),
                "tpr_bit_acc": _tpr_block(pos, neg),
                "auroc_bit_acc": auroc(positives=pos, negatives=neg) if ok else None,
                "tpr_score": None,
                "present_marked": None,
                "present_clean": None,
            }
            if m.get("calibrated") and ok:
                agg["tpr_score"] = _tpr_block(
                    _finite([r["score"] for r in ok]), _finite([r["clean_score"] for r in ok])
                )
                agg["present_marked"] = _present([r["p_value"] for r in ok])
                agg["present_clean"] = _present([r["clean_p_value"] for r in ok])
            out.append(agg)
    return out


def _quality(
    methods: Sequence[Mapping[str, Any]],
    embeds: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    out = []
    for m in methods:
        name = m["name"]
        emb = [e for e in embeds if e["method"] == name]
        rows = [r for r in records if r.get("method") == name]
        ok = [r for r in rows if "error" not in r]
        detect = [r["detect_ms"] for r in ok] + [r["clean_detect_ms"] for r in ok]
        out.append(
            {
                "method": name,
                "n_images": len(emb),
                "psnr": _mean([e["psnr"] for e in emb]),
                "ssim": _mean([e["ssim"] for e in emb]),
                "embed_ms": _mean([e["embed_ms"] for e in emb]),
                "detect_ms": _mean(detect),
                "n_detections": len(detect),
                "n_errors": len(rows) - len(ok),
            }
        )
    return out


# --- report ------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def _tpr(block: Mapping[str, Any] | None, fpr: float) -> str:
    if block is None:
        return "—"
    cell = block[str(fpr)]
    return f"{cell['tpr']:.2f}" + ("" if cell["resolvable"] else "*")


def format_markdown(
    result: Mapping[str, Any], *, suites: Sequence[str] | None = None, level: int = 1
) -> str:
    """The report: a quality/speed table, then per suite a table (rows: entries).

    ``suites`` restricts the suite tables to those names (default: all); ``level`` is the
    Markdown level of the title, sections one below (e.g. 3 to embed it under a ``##``).
    """
    h1, h2 = "#" * level, "#" * (level + 1)
    cfg = result["config"]
    size = (
        f"resized to {cfg['resize']}x{cfg['resize']}"
        if cfg.get("resize")
        else f"long side <= {cfg['max_side']}"
        if cfg.get("max_side")
        else "at their own size"
    )
    summ = result["summary"]
    lines = [
        f"{h1} Watermark benchmark",
        "",
        f"{summ['n_images']} images ({size}), seed {cfg['seed']}, {result['machine']}, "
        f"{result['date']}; {summ['n_detections']} detections in {summ['elapsed_s']:.0f} s, "
        f"{summ['n_errors']} error records ({summ['n_bad_images']} unreadable images).",
    ]
    for s in result.get("skipped_methods", []):
        lines.append(f"Skipped {s['method']}: {s['reason']}")
    lines += [
        "",
        f"{h2} Quality and speed",
        "",
        "PSNR, SSIM and embed time are means over the marked images (n images); detect time "
        "is the mean over every detection (n detections: marked and clean, attacked or not).",
        "",
        "| method | n images | PSNR dB | SSIM | embed ms | n detections | detect ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for q in result["quality"]:
        lines.append(
            f"| {q['method']} | {q['n_images']} | {_fmt(q['psnr'], '.2f')} | {_fmt(q['ssim'], '.4f')} "
            f"| {_fmt(q['embed_ms'], '.1f')} | {q.get('n_detections', '—')} "
            f"| {_fmt(q['detect_ms'], '.1f')} | {q['n_errors']} |"
        )
    aggs = result["aggregates"]
    methods = [m["name"] for m in result["methods"]]
    calibrated = [m["name"] for m in result["methods"] if m["calibrated"]]
    index = {(a["method"], a["suite"], a["entry"]): a for a in aggs}
    for suite in result["suites"]:
        if suites is not None and suite["name"] not in suites:
            continue
        labels = [NONE_ENTRY] + [e["label"] for e in suite["entries"]]
        keys = [(NONE_ENTRY if lab == NONE_ENTRY else suite["name"], lab) for lab in labels]
        lines += [
            "",
            f"{h2} {suite['name']}",
            "",
            f"Source: {suite['source'] or '—'}. Bit accuracy, exact payload rate, and TPR at "
            f"FPR 1% and 0.1% with bit accuracy as the score and the clean images under the same "
            f"attack as negatives (W-Bench); n: marked images, each with its clean counterpart."
            f" * marks a TPR whose FPR is below the floor 1/n: it is the TPR at a threshold "
            f"above every negative.",
            "",
            "| entry | method | n | bit accuracy | exact payload | TPR @ FPR 1% | TPR @ FPR 0.1% |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for s, lab in keys:
            for m in methods:
                a = index.get((m, s, lab))
                if a is None or a["n"] == 0:
                    lines.append(f"| {lab} | {m} | 0 | — | — | — | — |")
                    continue
                lines.append(
                    f"| {lab} | {m} | {a['n']} | {_fmt(a['bit_acc'])} | {_fmt(a['exact'], '.2f')} "
                    f"| {_tpr(a['tpr_bit_acc'], 0.01)} | {_tpr(a['tpr_bit_acc'], 0.001)} |"
                )
        if calibrated:
            lines += [
                "",
                f"Calibrated detectors on {suite['name']}: TPR at FPR 1% and 0.1% with the "
                f"method's own score, and the share of marked and of clean images with "
                f"p < {PRESENT_ALPHA:g} (the latter is the empirical FPR).",
                "",
                "| entry | method | n | TPR @ FPR 1% | TPR @ FPR 0.1% | marked, p < "
                f"{PRESENT_ALPHA:g} | clean, p < {PRESENT_ALPHA:g} |",
                "|---|---|---:|---:|---:|---:|---:|",
            ]
            for s, lab in keys:
                for m in calibrated:
                    a = index.get((m, s, lab))
                    if a is None or a["n"] == 0:
                        lines.append(f"| {lab} | {m} | 0 | — | — | — | — |")
                        continue
                    lines.append(
                        f"| {lab} | {m} | {a['n']} | {_tpr(a['tpr_score'], 0.01)} | "
                        f"{_tpr(a['tpr_score'], 0.001)} | {_fmt(a['present_marked'], '.2f')} | "
                        f"{_fmt(a['present_clean'], '.3f')} |"
                    )
    return "\n".join(lines) + "\n"


_ONE_PER_LINE = frozenset({"records", "attacks", "embeds", "aggregates"})


def _dump_json(result: Mapping[str, Any]) -> str:
    """Valid JSON, readable and compact: long lists of records hold one record per line."""
    import json

    def dump(value: Any, indent: int | None = None) -> str:
        return json.dumps(
            value,
            indent=indent,
            allow_nan=False,
            separators=(",", ": ") if indent else (", ", ": "),
        )

    parts = []
    for k, v in result.items():
        if k in _ONE_PER_LINE and isinstance(v, list) and v:
            body = ",\n  ".join(dump(item) for item in v)
            parts.append(f"{json.dumps(k)}: [\n  {body}\n ]")
        else:
            parts.append(f"{json.dumps(k)}: " + dump(v, 1).replace("\n", "\n "))
    return "{\n " + ",\n ".join(parts) + "\n}\n"


CSV_COLUMNS = (
    "suite",
    "entry",
    "group",
    "level",
    "method",
    "n",
    "n_errors",
    "bit_accuracy",
    "exact_payload",
    "tpr_at_fpr_0.1%",
    "tpr_at_fpr_1%",
    "fpr_resolvable_0.1%",
    "auroc",
    "attack_psnr_db",
    "attack_ssim",
)
"""Columns of the per-suite CSV files (W-Bench/WAVES style: one row per attack level and
method; TPRs use bit accuracy as the score, the clean images as negatives)."""


def write_csvs(result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """One CSV per suite, ``<out_dir>/<suite>.csv``, columns :data:`CSV_COLUMNS`; the
    unattacked entry ``none`` opens every file. Empty cells are undefined values (no
    detections). Returns the written paths."""
    import csv
    import re

    out_dir.mkdir(parents=True, exist_ok=True)
    index = {(a["method"], a["suite"], a["entry"]): a for a in result["aggregates"]}
    methods = [m["name"] for m in result["methods"]]

    def cell(x: Any) -> Any:
        return "" if x is None else x

    written = []
    for suite in result["suites"]:
        path = out_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", suite["name"]) + ".csv")
        keys = [(NONE_ENTRY, NONE_ENTRY)] + [(suite["name"], e["label"]) for e in suite["entries"]]
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(CSV_COLUMNS)
            for s_name, label in keys:
                for m in methods:
                    a = index.get((m, s_name, label))
                    if a is None:
                        continue
                    block = a["tpr_bit_acc"] or {}
                    t1, t01 = block.get("0.01"), block.get("0.001")
                    w.writerow(
                        [
                            suite["name"],
                            label,
                            cell(a["group"]),
                            cell(a["level"]),
                            m,
                            a["n"],
                            a["n_errors"],
                            cell(a["bit_acc"]),
                            cell(a["exact"]),
                            cell(t01 and t01["tpr"]),
                            cell(t1 and t1["tpr"]),
                            cell(t01 and t01["resolvable"]),
                            cell(a["auroc_bit_acc"]),
                            cell(a.get("attack_psnr")),
                            cell(a.get("attack_ssim")),
                        ]
                    )
        written.append(path)
    return written


def write_outputs(result: Mapping[str, Any], out_dir: Path, *, plots: bool = True) -> list[Path]:
    """Write ``results.json``, ``report.md``, ``csv/<suite>.csv`` (see :func:`write_csvs`)
    and (when ``plots`` and matplotlib is installed) ``plots/*.png``, including one WAVES
    quality-versus-robustness plot per suite; returns the written paths. A missing
    matplotlib warns."""
    import warnings

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "results.json", out_dir / "report.md"]
    written[0].write_text(_dump_json(result), encoding="utf-8")
    written[1].write_text(format_markdown(result), encoding="utf-8")
    written += write_csvs(result, out_dir / "csv")
    if plots:
        from tracemark.bench.plots import plot_suites, plot_waves

        try:
            written += plot_suites(result, out_dir / "plots")
            written += plot_waves(result, out_dir / "plots")
        except MissingExtraError as exc:
            warnings.warn(f"plots skipped: {exc.message}", RuntimeWarning, stacklevel=2)
    return written


# --- command line ------------------------------------------------------------------------

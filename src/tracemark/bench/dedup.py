"""Near-duplicate grouping benchmark: ``tracemark dedup`` against imagededup's hashes.

Construction (every random choice derives from ``seed`` with
:func:`tracemark.attacks.suites.derive_seed`; the drawn attack parameters are recorded):

1. ``originals`` images (a seeded permutation of the folder) are the sources of groups;
   the next ``distractors`` (default: all the rest) are singles. Every image is written
   into one folder, as JPEG quality 95 (long side at most ``max_side`` when set).
2. A share ``copied_share`` of the originals gets 1 or 2 edited copies, each a distinct
   entry of the ``disc21-like`` suite drawn with ``derive_seed(seed, name, "copy",
   label)`` (as the copy-detection benchmark draws its queries; insertions take procedural
   backgrounds, since a corpus image as background would make the insertion a copy of it
   too), written as JPEG quality 90.
3. A share ``exact_share`` of the originals (another seeded draw) gets an exact duplicate:
   the decoded pixels of its JPEG re-encoded as PNG.

Ground truth: every pair of files from the same source group. Each method sees the same
folder of files in the same run and predicts pairs; a method's groups are the connected
components of its pairs and its *group pairs* every pair inside a predicted group (what a
user deleting or merging by group acts on). Reported: precision, recall and F1 of the
direct pairs and of the group pairs, recall per kind of edit, groups, and seconds per image
(wall clock on one thread, reading the files included).

Methods: ``tracemark`` (:func:`tracemark.copydetect.find_duplicates` on a temporary index,
uncalibrated: inliers >= 12 or PDQ distance <= 31), ``tracemark_calibrated`` (the same,
calibrated on ``background`` images kept out of the folder: p-value <= 1e-3) and
imagededup's ``phash``, ``dhash``, ``whash``, ``ahash``
(``find_duplicates`` on the folder with its default ``max_distance_threshold`` 10, one
worker). imagededup declares torch and torchvision as dependencies for its CNN method;
the hashing methods need neither: when they cannot be imported (a CPU-only torch whose
torchvision wheel does not load), the CNN modules are replaced by stubs before import.
Install with ``pip install --no-deps imagededup==0.3.3.post2`` after
``pip install 'tracemark[bench]'`` (which brings its light dependencies).
"""

from __future__ import annotations

import itertools
import platform
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tracemark.attacks.suites import derive_seed, get_suite
from tracemark.errors import ConfigError, MissingExtraError

__all__ = ["DedupBenchConfig", "IMAGEDEDUP_METHODS", "run_dedup_bench", "format_markdown",
           "write_outputs", "imagededup_hashers"]

RESULTS_VERSION = 1
COPY_SUITE = "disc21-like"
IMAGEDEDUP_METHODS = ("phash", "dhash", "whash", "ahash")
METHODS = ("tracemark", "tracemark_calibrated", *IMAGEDEDUP_METHODS)


@dataclass(frozen=True)
class DedupBenchConfig:
    """What a run does besides which images; validated when built."""

    seed: int = 0
    originals: int = 100
    distractors: int | None = None
    """Single images besides the originals; None: every other image of the folder."""
    copied_share: float = 0.6
    exact_share: float = 0.2
    max_side: int | None = None
    methods: tuple[str, ...] = METHODS
    k: int = 10
    background: int = 40
    """Images kept out of the folder (after the originals in the seeded order) as the
    calibration background of ``tracemark_calibrated``."""

    def __post_init__(self) -> None:
        if self.originals < 1 or (self.distractors is not None and self.distractors < 0):
            raise ConfigError("originals must be >= 1 and distractors >= 0")
        for name in ("copied_share", "exact_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"methods must be a non-empty subset of {METHODS}; got {self.methods}")
        if self.max_side is not None and self.max_side < 64:
            raise ConfigError(f"max_side must be >= 64; got {self.max_side}")


# --- the folder ---------------------------------------------------------------------------


def build_folder(paths: Sequence[Path], config: DedupBenchConfig, out: Path,
                 progress: Callable[[str], None] = lambda _m: None) -> list[dict[str, Any]]:
    """Write the benchmark folder into ``out``; one record per file: ``file``, ``group``
    (the source's name, or None for a single), ``kind`` (``original``, ``distractor``,
    ``exact`` or the suite entry's label) and the drawn ``params``."""
    from PIL import Image

    from tracemark.attacks.base import SampleContext, get_attack
    from tracemark.bench.watermark import prepare_image
    from tracemark.imageio import load_image

    if len(paths) < config.originals + config.background + 1:
        raise ConfigError(f"need more than {config.originals} images; got {len(paths)}")
    order = np.random.default_rng(derive_seed(config.seed, "order")).permutation(len(paths))
    chosen = [paths[i] for i in order]
    originals = chosen[: config.originals]
    rest = chosen[config.originals + config.background:]
    distractors = rest if config.distractors is None else rest[: config.distractors]
    rng = np.random.default_rng(derive_seed(config.seed, "shares"))
    copied = set(rng.permutation(len(originals))[: round(config.copied_share * len(originals))])
    exact = set(rng.permutation(len(originals))[: round(config.exact_share * len(originals))])
    suite = get_suite(COPY_SUITE)
    labels = [e.label for e in suite]
    # insertions take procedural backgrounds: a corpus image as background would make the
    # inserted copy a true copy of that image too (and it may be in the folder)
    backgrounds: list[str] = []
    records: list[dict[str, Any]] = []

    def save(im: np.ndarray, name: str, **kw: Any) -> Path:
        dest = out / name
        Image.fromarray(im).save(dest, **kw)
        return dest

    for i, path in enumerate(originals):
        stem = f"o{i:04d}"
        im = prepare_image(load_image(path), max_side=config.max_side)
        dest = save(im, f"{stem}.jpg", quality=95)
        records.append({"file": dest.name, "group": stem, "kind": "original",
                        "source": path.name, "params": None})
        if i in exact:
            png = save(load_image(dest), f"{stem}_exact.png")
            records.append({"file": png.name, "group": stem, "kind": "exact",
                            "source": path.name, "params": None})
        if i in copied:
            r = np.random.default_rng(derive_seed(config.seed, path.name, "entries"))
            n = int(r.integers(1, 3))
            for j in sorted(r.choice(len(labels), size=n, replace=False).tolist()):
                entry = suite.entry(labels[j])
                rec = suite.draw(entry, derive_seed(config.seed, path.name, "copy", labels[j]),
                                 SampleContext.for_image(im, backgrounds))
                edited = get_attack(rec.attack).apply(im, rec.params)
                dest_c = save(np.ascontiguousarray(edited), f"{stem}_{labels[j]}.jpg", quality=90)
                records.append({"file": dest_c.name, "group": stem, "kind": rec.label,
                                "source": path.name, "attack": rec.attack,
                                "params": rec.params})
        if (i + 1) % 20 == 0:
            progress(f"folder: {i + 1}/{len(originals)} originals written")
    for i, path in enumerate(distractors):
        im = prepare_image(load_image(path), max_side=config.max_side)
        dest = save(im, f"d{i:04d}.jpg", quality=95)
        records.append({"file": dest.name, "group": None, "kind": "distractor",
                        "source": path.name, "params": None})
    return records


# --- methods ------------------------------------------------------------------------------


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def imagededup_hashers() -> dict[str, Any]:
    """imagededup's hashing classes by method name (see the module docstring for how they
    are imported without torch). Raises :class:`~tracemark.errors.MissingExtraError` when
    imagededup is not installed."""
    try:
        from imagededup.methods import hashing
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith(("torch", "torchvision")):
            raise MissingExtraError(
                "imagededup is not installed: run pip install 'tracemark[bench]' && "
                "pip install --no-deps imagededup==0.3.3.post2") from exc
        hashing = _import_hashing_without_torch()
    except RuntimeError:  # a torchvision whose compiled operators do not load
        hashing = _import_hashing_without_torch()
    return {"phash": hashing.PHash, "dhash": hashing.DHash, "whash": hashing.WHash,
            "ahash": hashing.AHash}


def _import_hashing_without_torch() -> Any:
    for name in [m for m in sys.modules if m == "imagededup" or m.startswith("imagededup.")]:
        del sys.modules[name]

    class _Unavailable:
        def __init__(self, *a: Any, **k: Any) -> None:
            raise MissingExtraError("imagededup's CNN needs torch and torchvision")

    sys.modules["imagededup.utils.models"] = _stub(
        "imagededup.utils.models", CustomModel=_Unavailable, MobilenetV3=_Unavailable,
        DEFAULT_MODEL_NAME="mobilenet_v3_small")
    sys.modules["imagededup.utils.data_generator"] = _stub(
        "imagededup.utils.data_generator", img_dataloader=_Unavailable)
    sys.modules["imagededup.methods.cnn"] = _stub("imagededup.methods.cnn", CNN=_Unavailable)
    from imagededup.methods import hashing

    return hashing


def background_images(paths: Sequence[Path], config: DedupBenchConfig) -> list[Path]:
    """The images kept out of the folder for calibration (see :class:`DedupBenchConfig`)."""
    order = np.random.default_rng(derive_seed(config.seed, "order")).permutation(len(paths))
    return [paths[i] for i in order[config.originals:config.originals + config.background]]


def _run_tracemark(folder: Path, files: list[str], config: DedupBenchConfig,
                   background: Sequence[Path] = ()
                   ) -> tuple[set[frozenset[str]], list[list[str]], dict[str, Any]]:
    from tracemark.copydetect import find_duplicates

    report = find_duplicates([folder / f for f in files], k=config.k, background=background)
    pairs = {frozenset((Path(p.a).name, Path(p.b).name)) for g in report.groups for p in g.pairs
             if p.a is not None and p.b is not None}
    groups = [[Path(str(m.source)).name for m in g.members] for g in report.groups]
    return pairs, groups, {"summary": report.summary(), "rule": report.rule}


def _run_imagededup(method: str, folder: Path) -> tuple[set[frozenset[str]], None, dict[str, Any]]:
    hasher = imagededup_hashers()[method](verbose=False)
    found = hasher.find_duplicates(image_dir=folder, num_enc_workers=1, num_dist_workers=1)
    pairs = {frozenset((a, b)) for a, dups in found.items() for b in dups if a != b}
    return pairs, None, {"max_distance_threshold": 10}


# --- metrics ------------------------------------------------------------------------------


def _components(pairs: set[frozenset[str]]) -> list[list[str]]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        a, b = sorted(p)
        parent[find(a)] = find(b)
    comps: dict[str, list[str]] = {}
    for x in sorted(parent):
        comps.setdefault(find(x), []).append(x)
    return [c for c in comps.values() if len(c) > 1]


def _prf(pred: set[frozenset[str]], truth: set[frozenset[str]]) -> dict[str, float | int | None]:
    tp = len(pred & truth)
    p = tp / len(pred) if pred else None
    r = tp / len(truth) if truth else None
    f1 = 2 * p * r / (p + r) if p and r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "true_pairs": tp, "predicted_pairs": len(pred)}


def score_method(pairs: set[frozenset[str]], groups: list[list[str]] | None,
                 records: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision, recall and F1 of the direct pairs and of the group pairs, recall by kind."""
    by_group: dict[str, list[str]] = {}
    kind = {r["file"]: r["kind"] for r in records}
    for r in records:
        if r["group"] is not None:
            by_group.setdefault(r["group"], []).append(r["file"])
    truth = {frozenset(p) for files in by_group.values()
             for p in itertools.combinations(files, 2)}
    comps = groups if groups is not None else _components(pairs)
    closure = {frozenset(p) for c in comps for p in itertools.combinations(c, 2)}
    closure |= pairs
    recall_by_kind: dict[str, list[int]] = {}
    for files in by_group.values():
        orig = next(f for f in files if kind[f] == "original")
        for f in files:
            if f != orig:
                hit = recall_by_kind.setdefault(kind[f], [0, 0])
                hit[0] += frozenset((orig, f)) in closure
                hit[1] += 1
    return {"pairs": _prf(pairs, truth), "group_pairs": _prf(closure, truth),
            "groups": len(comps),
            "recall_by_kind": {k: {"found": v[0], "of": v[1], "recall": v[0] / v[1]}
                               for k, v in sorted(recall_by_kind.items())}}


# --- the run ------------------------------------------------------------------------------


def run_dedup_bench(paths: Sequence[Path], config: DedupBenchConfig | None = None, *,
                    progress: bool = False) -> dict[str, Any]:
    """Build the folder, run every method on it, score them; a JSON-ready dict."""
    config = config or DedupBenchConfig()

    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="tracemark-bench-dedup-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        records = build_folder(paths, config, folder, say)
        files = sorted(r["file"] for r in records)
        say(f"folder: {len(files)} files written in {time.perf_counter() - t0:.1f} s")
        results: dict[str, Any] = {}
        for method in config.methods:
            say(f"running {method} on {len(files)} images...")
            t = time.perf_counter()
            try:
                if method == "tracemark":
                    pairs, groups, extra = _run_tracemark(folder, files, config)
                elif method == "tracemark_calibrated":
                    pairs, groups, extra = _run_tracemark(
                        folder, files, config, background_images(paths, config))
                else:
                    pairs, groups, extra = _run_imagededup(method, folder)
            except MissingExtraError as exc:
                results[method] = {"error": exc.message}
                say(f"{method}: skipped ({exc.message})")
                continue
            seconds = time.perf_counter() - t
            results[method] = {**score_method(pairs, groups, records),
                               "seconds": seconds, "ms_per_image": 1000 * seconds / len(files),
                               **extra}
            gp = results[method]["group_pairs"]
            say(f"{method}: group pairs precision {gp['precision']}, recall {gp['recall']}, "
                f"{results[method]['ms_per_image']:.1f} ms/image")
    n_truth = sum(1 for r in records if r["group"] is not None and r["kind"] != "original")
    return {
        "version": RESULTS_VERSION,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": asdict(config),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "images": len(records),
        "originals": config.originals,
        "copies": sum(1 for r in records if r["kind"] not in ("original", "exact", "distractor")),
        "exact": sum(1 for r in records if r["kind"] == "exact"),
        "distractors": sum(1 for r in records if r["kind"] == "distractor"),
        "ground_truth_groups": len({r["group"] for r in records if r["group"] is not None
                                    and any(q["group"] == r["group"] and q["kind"] != "original"
                                            for q in records)}),
        "ground_truth_duplicates": n_truth,
        "records": records,
        "results": results,
    }


def _f(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


def format_markdown(result: dict[str, Any], *, level: int = 2) -> str:
    """The report: one table of methods, then recall by kind of edit."""
    h = "#" * level
    lines = [
        f"{h} Near-duplicate groups: tracemark dedup vs imagededup",
        "",
        f"{result['images']} images: {result['originals']} originals, {result['copies']} "
        f"edited copies (`{COPY_SUITE}`), {result['exact']} exact duplicates (PNG "
        f"re-encodes), {result['distractors']} distractors; "
        f"{result['ground_truth_groups']} true groups. Date {result['date'][:10]}.",
        "",
        "| method | pair precision | pair recall | pair F1 | group-pair precision | "
        "group-pair recall | group-pair F1 | groups | ms / image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    res = result["results"]
    for m, r in res.items():
        if "error" in r:
            lines.append(f"| {m} | not run: {r['error']} | | | | | | | |")
            continue
        p, g = r["pairs"], r["group_pairs"]
        lines.append(f"| {m} | {_f(p['precision'])} | {_f(p['recall'])} | {_f(p['f1'])} | "
                     f"{_f(g['precision'])} | {_f(g['recall'])} | {_f(g['f1'])} | {r['groups']} "
                     f"| {r['ms_per_image']:.1f} |")
    kinds = sorted({k for r in res.values() for k in r.get("recall_by_kind", {})})
    ran = [m for m, r in res.items() if "error" not in r]
    if kinds and ran:
        lines += ["", f"{h}# Recall by kind of duplicate (original paired with it, in groups)", "",
                  "| kind | n | " + " | ".join(ran) + " |",
                  "|---|---|" + "---|" * len(ran)]
        for k in kinds:
            n = next(res[m]["recall_by_kind"][k]["of"] for m in ran
                     if k in res[m]["recall_by_kind"])
            cells = [_f(res[m]["recall_by_kind"].get(k, {}).get("recall")) for m in ran]
            lines.append(f"| {k} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "Pairs: a method's direct pairs (tracemark: the decided matches and exact "
              "hashes; imagededup: Hamming distance <= 10 of 64 bits). Group pairs: every pair "
              "inside a predicted group (connected components). Time: wall clock per image on "
              "one thread, reading included."]
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """``results.json`` and ``report.md`` in ``out``."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n",
                                      encoding="utf-8")
    (out / "report.md").write_text(format_markdown(result) + "\n", encoding="utf-8")


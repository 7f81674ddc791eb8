"""Speed of every registered attack on one image, single-threaded.

Each attack is timed in every configuration the built-in suites use (their published
parameters), and once in its default configuration; random parameters (positions,
seeds, stacks) are drawn afresh for every repeat, outside the timed region, and only
``apply`` is timed. A row per attack gives the mean over all its timed calls and the
slowest configuration.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

BUDGET_MS = 10.0


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like test image: smooth gradients, shapes and fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([xx, yy, 1 - (xx + yy) / 2], axis=-1) * 200
    for _ in range(12):
        cx, cy, r = rng.uniform(0, 1, 3) * [1, 1, 0.3]
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        base[mask] = rng.uniform(0, 255, 3)
    base += rng.normal(0, 6, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def _load(image_path: Path | None, size: int) -> np.ndarray:
    if image_path is None:
        return synthetic_image(size)
    import cv2

    from tracemark.imageio import load_image

    img = load_image(image_path)
    return np.ascontiguousarray(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))


def _configs() -> list[tuple[str, str, dict[str, Any]]]:
    """(attack, where, config): each suite entry, then each attack's default configuration."""
    from tracemark import attacks

    out = []
    for name in attacks.list_suites():
        for e in attacks.get_suite(name):
            out.append((e.attack, f"{name}/{e.label}", dict(e.params)))
    out += [(spec.name, "default", {}) for spec in attacks.list_attacks()]
    return out


def run_attack_speed(
    *, image_path: Path | None = None, size: int = 512, repeats: int = 10
) -> dict[str, Any]:
    """Time each configuration ``repeats`` times on a ``size`` x ``size`` image; milliseconds."""
    import cv2

    from tracemark import attacks

    cv2.setNumThreads(1)
    image = _load(image_path, size)
    ctx = attacks.SampleContext.for_image(image)
    calls: dict[str, list[float]] = defaultdict(list)
    worst: dict[str, tuple[float, str]] = {}
    for name, where, config in _configs():
        spec = attacks.get_attack(name)
        rng = np.random.default_rng(0)
        spec.apply(image, spec.draw(rng, config, ctx))  # warm-up (font caches, lazy imports)
        times = []
        for _ in range(repeats):
            params = spec.draw(rng, config, ctx)
            t0 = time.perf_counter()
            spec.apply(image, params)
            times.append((time.perf_counter() - t0) * 1000)
        calls[name] += times
        m = statistics.fmean(times)
        if m > worst.get(name, (-1.0, ""))[0]:
            worst[name] = (m, where)
    rows = []
    for spec in attacks.list_attacks():
        t = calls[spec.name]
        mean = statistics.fmean(t)
        rows.append(
            {
                "attack": spec.name,
                "family": str(spec.family),
                "configs": len(t) // repeats,
                "mean_ms": mean,
                "median_ms": statistics.median(t),
                "slowest_config": worst[spec.name][1],
                "slowest_config_mean_ms": worst[spec.name][0],
                "slow_allowed": spec.slow,
                "within_budget": mean < BUDGET_MS,
            }
        )
    means = [r["mean_ms"] for r in rows]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, single thread",
        "image": str(image_path) if image_path else f"synthetic {size}x{size}",
        "size": size,
        "repeats": repeats,
        "budget_ms": BUDGET_MS,
        "mean_of_means_ms": statistics.fmean(means),
        "over_budget": [r["attack"] for r in rows if not r["within_budget"]],
        "rows": rows,
    }


def format_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Attack speed on {result['image']} ({result['size']}x{result['size']}), "
        f"{result['repeats']} repeats per configuration, {result['machine']}, {result['date']}. "
        "Configurations: every entry of the built-in suites that uses the attack, plus its defaults. "
        "Mean and median are over every timed call (n = configurations x repeats).",
        "",
        "| attack | family | configurations | n calls | mean ms | median ms | slowest configuration | its mean ms |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['attack']} | {r['family']} | {r['configs']} | {r['configs'] * result['repeats']} "
            f"| {r['mean_ms']:.2f} | {r['median_ms']:.2f} | {r['slowest_config']} "
            f"| {r['slowest_config_mean_ms']:.2f} |"
        )
    slow = [r["attack"] for r in result["rows"] if r["slow_allowed"]]
    lines += [
        "",
        f"Mean over attacks: {result['mean_of_means_ms']:.2f} ms. Attacks averaging "
        f"{result['budget_ms']:g} ms or more: {', '.join(result['over_budget']) or 'none'}"
        f" (documented as slow: {', '.join(slow) or 'none'}).",
    ]
    return "\n".join(lines)

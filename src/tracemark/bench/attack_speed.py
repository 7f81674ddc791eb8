"""Speed of every registered attack on one image, single-threaded.

For each attack, parameters are drawn from its default configuration (random
parameters such as positions and seeds drawn afresh for every repeat, outside the
timed region); only ``apply`` is timed. Attacks whose default configuration is not
representative get a benchmark configuration here (``compose`` runs Stable Signature's
crop + brightness + JPEG combination).
"""

from __future__ import annotations

import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

BUDGET_MS = 10.0

BENCH_CONFIGS: dict[str, dict[str, Any]] = {
    "compose": {
        "steps": [
            {"attack": "center_crop", "params": {"area": 0.5}},
            {"attack": "brightness", "params": {"factor": 1.5}},
            {"attack": "jpeg", "params": {"quality": 80}},
        ]
    },
}


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


def run_attack_speed(*, image_path: Path | None = None, size: int = 512, repeats: int = 20) -> dict[str, Any]:
    """Time each attack ``repeats`` times on a ``size`` x ``size`` image; milliseconds."""
    import cv2

    from tracemark import attacks

    cv2.setNumThreads(1)
    image = _load(image_path, size)
    ctx = attacks.SampleContext.for_image(image)
    rows = []
    for spec in attacks.list_attacks():
        config = BENCH_CONFIGS.get(spec.name, {})
        rng = np.random.default_rng(0)
        spec.apply(image, spec.draw(rng, config, ctx))  # warm-up (font caches, lazy imports)
        times = []
        for _ in range(repeats):
            params = spec.draw(rng, config, ctx)
            t0 = time.perf_counter()
            spec.apply(image, params)
            times.append((time.perf_counter() - t0) * 1000)
        rows.append(
            {
                "attack": spec.name,
                "family": str(spec.family),
                "mean_ms": statistics.fmean(times),
                "median_ms": statistics.median(times),
                "max_ms": max(times),
                "slow_allowed": spec.slow,
                "within_budget": statistics.fmean(times) < BUDGET_MS,
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
        f"{result['repeats']} repeats, {result['machine']}, {result['date']}.",
        "",
        "| attack | family | mean ms | median ms | max ms | < 10 ms |",
        "|---|---|---:|---:|---:|:---:|",
    ]
    for r in result["rows"]:
        ok = "yes" if r["within_budget"] else ("no (stated)" if r["slow_allowed"] else "**no**")
        lines.append(
            f"| {r['attack']} | {r['family']} | {r['mean_ms']:.2f} | {r['median_ms']:.2f} | {r['max_ms']:.2f} | {ok} |"
        )
    lines += ["", f"Mean over attacks: {result['mean_of_means_ms']:.2f} ms; over budget: "
              f"{', '.join(result['over_budget']) or 'none'}."]
    return "\n".join(lines)

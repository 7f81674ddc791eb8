"""Plots of the watermark benchmark (matplotlib, the ``bench`` extra, Agg canvas).

For each suite and each ``group`` of its entries with at least two entries: bit accuracy
and TPR at FPR 1% (bit-accuracy score) against the entry's ``level`` (its mean drawn
strength when it has none), one line per method, in ``<suite>_<group>.png``. Groups of a
single entry are drawn together as grouped bars in ``<suite>_single.png``. The TPR carries
its Wilson 95% interval over the ``n`` marked images; ``n`` is in the title. Figures are
built on ``matplotlib.figure.Figure`` directly, so pyplot's global state is never touched.

:func:`plot_waves` draws WAVES' quality-versus-robustness view (An et al., "WAVES:
Benchmarking the Robustness of Image Watermarks", ICML 2024, figure 1 style): per suite,
one panel per method, each attack group a line through its levels, x the attack's
quality cost (mean PSNR of the attacked against the unattacked image, dB, axis reversed
so that stronger attacks lie to the right), y TPR at FPR 0.1% (bit-accuracy score).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tracemark._optional import require
from tracemark.metrics.detection import wilson_interval

__all__ = ["plot_suites", "plot_waves"]

_TPR_KEY = "0.01"


def _figure() -> Any:
    require("matplotlib", "bench", purpose="benchmark plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _x(agg: Mapping[str, Any]) -> float | None:
    return agg["level"] if agg["level"] is not None else agg["strength"]


def _tpr(agg: Mapping[str, Any]) -> float | None:
    block = agg.get("tpr_bit_acc")
    return None if block is None else block[_TPR_KEY]["tpr"]


def _tpr_error(agg: Mapping[str, Any]) -> tuple[float, float]:
    """Distances from the TPR down and up to its Wilson 95% interval (0, 0 when undefined)."""
    tpr, n = _tpr(agg), agg["n"]
    if tpr is None or not n:
        return 0.0, 0.0
    lo, hi = wilson_interval(round(tpr * n), n)
    return max(0.0, tpr - lo), max(0.0, hi - tpr)


def _n_text(aggs: Sequence[Mapping[str, Any]]) -> str:
    ns = sorted({a["n"] for a in aggs if a["n"]})
    if not ns:
        return "n = 0"
    return f"n = {ns[0]} marked images" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]} marked images"


def _panels(fig: Any, title: str) -> tuple[Any, Any]:
    ax1, ax2 = fig.subplots(1, 2)
    fig.suptitle(title)
    ax1.set_ylabel("bit accuracy (share of payload bits, mean per image)")
    ax1.set_ylim(-0.02, 1.02)
    ax1.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax2.set_ylabel("TPR at FPR 1% (share of marked images), Wilson 95% CI")
    ax2.set_ylim(-0.02, 1.02)
    return ax1, ax2


def _line_plot(
    suite: str, group: str, aggs: Sequence[Mapping[str, Any]], methods: Sequence[str], path: Path
) -> None:
    fig = _figure()
    ax1, ax2 = _panels(fig, f"{suite}: {group} ({_n_text(aggs)})")
    uses_level = all(a["level"] is not None for a in aggs)
    for m in methods:
        pts = sorted(
            ((_x(a), a) for a in aggs if a["method"] == m and a["n"] and _x(a) is not None),
            key=lambda p: p[0],
        )
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ax1.plot(xs, [p[1]["bit_acc"] for p in pts], marker="o", label=m)
        errors = [_tpr_error(p[1]) for p in pts]
        ax2.errorbar(
            xs, [_tpr(p[1]) for p in pts], yerr=[[e[0] for e in errors], [e[1] for e in errors]],
            marker="o", capsize=3, label=m,
        )
    xlabel = (
        f"{group} level (the suite's parameter value, in its own unit)"
        if uses_level
        else "attack strength (normalised: 0 none, 1 strongest)"
    )
    for ax in (ax1, ax2):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    ax2.legend(loc="best", fontsize="small")
    fig.savefig(path, dpi=100)


def _bar_plot(
    suite: str, aggs: Sequence[Mapping[str, Any]], methods: Sequence[str], path: Path
) -> None:
    fig = _figure()
    ax1, ax2 = _panels(fig, f"{suite}: single-entry groups ({_n_text(aggs)})")
    labels = list(dict.fromkeys(a["entry"] for a in aggs))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        by_entry = {a["entry"]: a for a in aggs if a["method"] == m}
        xs = [j + i * width for j in range(len(labels))]
        acc = [(by_entry[lab]["bit_acc"] or 0.0) if lab in by_entry else 0.0 for lab in labels]
        tpr = [(_tpr(by_entry[lab]) or 0.0) if lab in by_entry else 0.0 for lab in labels]
        errors = [_tpr_error(by_entry[lab]) if lab in by_entry else (0.0, 0.0) for lab in labels]
        ax1.bar(xs, acc, width=width, label=m)
        ax2.bar(xs, tpr, width=width, label=m,
                yerr=[[e[0] for e in errors], [e[1] for e in errors]], capsize=2)
    ticks = [j + 0.4 - width / 2 for j in range(len(labels))]
    for ax in (ax1, ax2):
        ax.set_xticks(ticks, labels, rotation=45, ha="right", fontsize="small")
        ax.set_xlabel("attack (suite entry)")
    ax2.legend(loc="best", fontsize="small")
    fig.savefig(path, dpi=100)


def _methods_to_plot(result: Mapping[str, Any], out_dir: Path) -> list[str]:
    """The result's method names, with ``out_dir`` made when there are any; raises
    :class:`~tracemark.errors.MissingExtraError` without matplotlib."""
    require("matplotlib", "bench", purpose="benchmark plots")
    methods = [m["name"] for m in result["methods"]]
    if methods:
        out_dir.mkdir(parents=True, exist_ok=True)
    return methods


def plot_suites(result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Draw the plots of a benchmark result into ``out_dir``; returns the written files.

    Raises :class:`~tracemark.errors.MissingExtraError` when matplotlib is not installed.
    """
    methods = _methods_to_plot(result, out_dir)
    written: list[Path] = []
    if not methods:
        return written
    for suite in result["suites"]:
        name = suite["name"]
        groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for a in result["aggregates"]:
            if a["suite"] == name:
                groups[a["group"]].append(a)
        singles: list[Mapping[str, Any]] = []
        for group, aggs in groups.items():
            if len({a["entry"] for a in aggs}) < 2:
                singles += aggs
                continue
            path = out_dir / f"{_safe(name)}_{_safe(group)}.png"
            _line_plot(name, group, aggs, methods, path)
            written.append(path)
        if singles:
            path = out_dir / f"{_safe(name)}_single.png"
            _bar_plot(name, singles, methods, path)
            written.append(path)
    return written


def plot_waves(result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """WAVES quality-versus-robustness plots, ``<suite>_waves.png``, one per suite.

    Each panel is one method; each attack group of the suite is a line through its
    entries ordered by quality cost (``attack_psnr``, dB, mean over images; the x axis is
    reversed so that stronger attacks lie to the right); y is the TPR at FPR 0.1% with
    bit accuracy as the score (the W-Bench/WAVES operating point; with fewer than 1000
    clean images the FPR is the floor 1/n, see the report). Entries with no quality cost
    (a result from before the cost was recorded) are left out. Raises
    :class:`~tracemark.errors.MissingExtraError` without matplotlib.
    """
    methods = _methods_to_plot(result, out_dir)
    written: list[Path] = []
    if not methods:
        return written
    for suite in result["suites"]:
        name = suite["name"]
        aggs = [
            a
            for a in result["aggregates"]
            if a["suite"] == name and a["n"] and a.get("attack_psnr") is not None
        ]
        if not aggs:
            continue
        cols = min(3, len(methods))
        rows = -(-len(methods) // cols)
        fig = _figure()
        fig.set_size_inches(5 * cols, 4 * rows)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        fig.suptitle(f"{name}: robustness against quality cost ({_n_text(aggs)})")
        groups = list(dict.fromkeys(a["group"] for a in aggs))
        import matplotlib

        cmap = matplotlib.colormaps["tab20"]
        for ax, m in zip(axes, methods, strict=False):
            for gi, g in enumerate(groups):
                pts = sorted(
                    (
                        (a["attack_psnr"], a["tpr_bit_acc"]["0.001"]["tpr"])
                        for a in aggs
                        if a["method"] == m and a["group"] == g and a["tpr_bit_acc"]
                    ),
                    key=lambda p: -p[0],
                )
                if pts:
                    ax.plot(
                        [p[0] for p in pts], [p[1] for p in pts], marker="o",
                        color=cmap(gi % 20), label=g,
                    )
            ax.set_title(m)
            ax.set_xlabel("attack quality cost: PSNR of attacked vs unattacked (dB)")
            ax.set_ylabel("TPR at FPR 0.1% (bit-accuracy score)")
            ax.set_ylim(-0.02, 1.02)
            ax.invert_xaxis()
            ax.grid(alpha=0.3)
        for ax in axes[len(methods):]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside right center", fontsize="small")
        path = out_dir / f"{_safe(name)}_waves.png"
        fig.savefig(path, dpi=90)
        written.append(path)
    return written

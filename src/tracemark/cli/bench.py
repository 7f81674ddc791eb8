"""``tracemark bench attacks|watermark|copydetect|credentials``: the benchmarks.

The runners live in :mod:`tracemark.bench` and return data; these commands parse options,
print progress and the report, and write the results where asked.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from tracemark.errors import TracemarkError

__all__ = ["bench_group"]


def _listed(folder: Path, list_images: Callable[[Path], list[Path]]) -> list[Path]:
    """The benchmark's images of ``folder``; every other file is reported as skipped."""
    from tracemark.cli._common import expand_inputs, note

    images = list_images(folder)
    kept = set(images)
    walked = expand_inputs([folder])
    for path in walked.paths:
        if path not in kept:
            note(f"skipped {path}: no image suffix (benchmarks take images by suffix)")
    for path, reason in walked.skipped:
        note(f"skipped {path}: {reason}")
    return images


@click.group("bench")
def bench_group() -> None:
    """Benchmarks: robustness and speed of methods, side by side (JSON and Markdown)."""


@bench_group.command("attacks")
@click.option("--image", "image_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Image to attack (resized to --size); default: a synthetic photo-like image.")
@click.option("--size", type=int, default=512, show_default=True)
@click.option("--repeats", type=int, default=10, show_default=True)
@click.option("--out", "out_json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results as JSON here.")
def bench_attacks(image_path: Path | None, size: int, repeats: int, out_json: Path | None) -> None:
    """Time every registered attack on one size x size image (single thread)."""
    from tracemark.bench.attack_speed import format_markdown, run_attack_speed

    result = run_attack_speed(image_path=image_path, size=size, repeats=repeats)
    if out_json:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    click.echo(format_markdown(result))


@bench_group.command("watermark")
@click.option(
    "--methods",
    default="lattice",
    show_default=True,
    help="Comma-separated watermark methods; ones whose extra is missing are skipped.",
)
@click.option(
    "--suite",
    "suites",
    multiple=True,
    required=True,
    help="Built-in suite name or a YAML/JSON suite file (repeatable).",
)
@click.option(
    "--images",
    "images_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of images (searched recursively).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Use N images evenly spread over the sorted list.",
)
@click.option(
    "--resize",
    type=click.IntRange(min=16),
    default=None,
    help="Force a square SIZE x SIZE (W-Bench: 512).",
)
@click.option(
    "--max-side",
    type=click.IntRange(min=16),
    default=None,
    help="Shrink so the long side is at most this (aspect kept).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("watermark-bench"),
    show_default=True,
)
@click.option("--no-plots", is_flag=True, help="Do not draw plots.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes over images (results identical to 1 apart from timings).",
)
def watermark_bench_command(
    methods: str,
    suites: tuple[str, ...],
    images_dir: Path,
    limit: int | None,
    resize: int | None,
    max_side: int | None,
    seed: int,
    out_dir: Path,
    no_plots: bool,
    workers: int,
) -> None:
    """Embed, attack and detect: robustness of watermark METHODS under attack SUITES.

    Writes OUT/results.json, OUT/report.md and OUT/plots/*.png, and prints the report.
    Exit codes: 0 success, 1 some records failed, 3 nothing could be benchmarked.
    """
    from tracemark.attacks.suites import get_suite
    from tracemark.bench.watermark import (
        BenchConfig,
        format_markdown,
        list_images,
        run_watermark_bench,
        select_spread,
        write_outputs,
    )

    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise click.UsageError("--methods is empty")
    try:
        config = BenchConfig(seed=seed, resize=resize, max_side=max_side, workers=workers)
        suite_objs = [get_suite(s) for s in suites]
        paths = select_spread(_listed(images_dir, list_images), limit)
        if not paths:
            raise click.UsageError(f"no images found in {images_dir}")
        result = run_watermark_bench(
            paths, names, suite_objs, config=config, root=images_dir, progress=True
        )
    except TracemarkError as exc:  # unknown method or suite, bad configuration
        raise click.UsageError(str(exc)) from exc
    for s in result["skipped_methods"]:
        click.echo(f"skipped {s['method']}: {s['reason']}", err=True)
    if not result["methods"]:
        click.echo("no method could be benchmarked", err=True)
        sys.exit(3)
    write_outputs(result, out_dir, plots=not no_plots)
    summ = result["summary"]
    click.echo(
        f"{summ['n_detections']} detections on {summ['n_images']} images, {summ['n_errors']} "
        f"error records; results in {out_dir}",
        err=True,
    )
    click.echo(format_markdown(result))
    if summ["n_records"] == summ["n_errors"]:
        sys.exit(3)
    if summ["n_errors"]:
        sys.exit(1)


@bench_group.command("copydetect")
@click.option(
    "--images",
    "images_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("../shared/data/corpus"),
    show_default=True,
    help="Folder of images (recursive); split into references and distractors.",
)
@click.option(
    "--refs", type=click.IntRange(min=1), default=None, help="Keep N references (evenly spread)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("copydetect-bench"),
    show_default=True,
)
@click.option(
    "--methods", default="pdq,phash,local,full_v1,full", show_default=True,
    help="Comma-separated subset of pdq, phash, local, full_v1 (the previous retrieval), full."
)
@click.option(
    "--max-side", type=click.IntRange(min=64), default=None, help="Shrink images to this long side."
)
@click.option(
    "--local-shortlist",
    type=click.IntRange(min=1),
    default=None,
    help="local: verify only the best N references by VLAD (default: all).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes over queries (changes nothing but the timings).",
)
def copydetect_bench_command(
    images_dir: Path,
    refs: int | None,
    seed: int,
    out_dir: Path,
    methods: str,
    max_side: int | None,
    local_shortlist: int | None,
    workers: int,
) -> None:
    """Copy detection on a DISC21-style benchmark built from a folder of images.

    Writes OUT/results.json and OUT/report.md and prints the report. Exit codes: 0 success,
    1 some queries failed.
    """
    from tracemark.bench.copydetect import (
        CopyDetectConfig,
        format_markdown,
        run_copydetect_bench,
        write_outputs,
    )
    from tracemark.bench.watermark import list_images

    try:
        config = CopyDetectConfig(
            seed=seed,
            refs=refs,
            methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
            max_side=max_side,
            local_shortlist=local_shortlist,
            workers=workers,
        )
        result = run_copydetect_bench(
            _listed(images_dir, list_images), config=config, root=images_dir, progress=True
        )
    except TracemarkError as exc:
        raise click.UsageError(str(exc)) from exc
    write_outputs(result, out_dir)
    click.echo(f"{result['metrics']['n_queries']} queries; results in {out_dir}", err=True)
    click.echo(format_markdown(result))
    if result["metrics"]["n_errors"]:
        sys.exit(1)


@bench_group.command("credentials")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--signed", type=click.IntRange(1), default=100, show_default=True)
@click.option("--other", type=click.IntRange(1), default=100, show_default=True)
@click.option("--unsigned", type=click.IntRange(1), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write results.json and report.md here.")
def credentials_bench_command(folder: Path, signed: int, other: int, unsigned: int, seed: int,
                              out: Path | None) -> None:
    """Sign, strip and verify images of FOLDER; print the report (Markdown)."""
    from tracemark.bench.credentials import (
        CredentialsBenchConfig,
        format_markdown,
        run_credentials_bench,
    )
    from tracemark.bench.watermark import list_images

    cfg = CredentialsBenchConfig(signed=signed, other=other, unsigned=unsigned, seed=seed)
    try:
        result = run_credentials_bench(_listed(folder, list_images), cfg, progress=True)
    except TracemarkError as exc:
        raise click.ClickException(str(exc)) from None
    report = format_markdown(result, f"tracemark bench credentials {folder}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=1))
        (out / "report.md").write_text(report + "\n")
    click.echo(report)

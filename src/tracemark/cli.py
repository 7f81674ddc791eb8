"""The ``tracemark`` command line.

JSON Lines go to stdout or to files for machines; progress bars and tables go to stderr
for people. Exit codes: 0 success, 1 some items failed (reported, the batch carried on),
2 usage error, 3 nothing could be processed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from tracemark.errors import TracemarkError

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_NOTHING = 3

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"})


def iter_inputs(inputs: Iterable[str]) -> Iterator[Path]:
    """Expand files and directories (recursively, image suffixes only, sorted) to paths.

    Explicit file arguments are kept whatever their suffix, so that a bad file is
    reported rather than silently skipped.
    """
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield p


def _progress(total: int | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=None, leave=False)


def _emit(stream: TextIO, record: dict[str, Any]) -> None:
    stream.write(json.dumps(record, sort_keys=False) + "\n")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tracemark")
def main() -> None:
    """tracemark: image provenance — attacks, metrics, watermarks, fingerprints."""


# --- attack -------------------------------------------------------------------------


def _unique_dir(out: Path, stem: str, used: set[str]) -> Path:
    name, k = stem, 2
    while name in used:
        name, k = f"{stem}-{k}", k + 1
    used.add(name)
    return out / name


@main.command("attack")
@click.option("--suite", "suite_name", required=True, help="Built-in suite name or a YAML/JSON suite file.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: one sub-folder per input, plus manifest.jsonl.")
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed; per-item seeds derive from it.")
@click.option("--format", "fmt", type=click.Choice(["png", "jpg", "webp"]), default="png", show_default=True,
              help="Format of the written images (png keeps the attacked pixels exactly).")
@click.option("--backgrounds", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of images that insertion attacks may use as backgrounds.")
@click.option("--metrics/--no-metrics", default=False, help="Compute PSNR/SSIM against the input and print a table.")
@click.option("--max-pixels", type=int, default=None, help="Refuse inputs above this many pixels (default 100 MP).")
@click.argument("inputs", nargs=-1, required=True)
def attack_cmd(
    suite_name: str,
    out_dir: Path,
    seed: int,
    fmt: str,
    backgrounds: Path | None,
    metrics: bool,
    max_pixels: int | None,
    inputs: tuple[str, ...],
) -> None:
    """Attack INPUT images (files or folders) with every entry of a suite.

    Writes OUT/<input-stem>/<entry-label>.<format> and OUT/manifest.jsonl, one line per
    (input, entry): source, output, attack, concrete parameters and the seed — enough
    to replay each image exactly with ``tracemark.attacks.apply_attack``.
    """
    from tracemark import attacks
    from tracemark.imageio import DEFAULT_MAX_PIXELS, load_image, save_image

    try:
        suite = attacks.get_suite(suite_name)
    except TracemarkError as exc:
        raise click.UsageError(str(exc)) from exc
    bg = tuple(str(p) for p in iter_inputs([str(backgrounds)])) if backgrounds else ()
    paths = list(iter_inputs(inputs))
    if not paths:
        raise click.UsageError("no input images found")
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    used: set[str] = set()
    n_ok = n_bad_inputs = n_bad_attacks = 0
    table: dict[str, list[tuple[float, float, float]]] = {}
    manifest_path = out_dir / "manifest.jsonl"
    with manifest_path.open("w", encoding="utf-8") as manifest, _progress(len(paths), f"attack {suite.name}") as bar:
        for path in paths:
            bar.update(1)
            try:
                image = load_image(path, max_pixels=limit)
            except TracemarkError as exc:
                n_bad_inputs += 1
                _emit(manifest, {"source": str(path), "error": exc.to_dict()})
                click.echo(f"skipped {path}: {exc.message}", err=True)
                continue
            target = _unique_dir(out_dir, path.stem, used)
            target.mkdir(parents=True, exist_ok=True)
            ctx = attacks.SampleContext.for_image(image, bg)
            for entry in suite:
                rec_seed = attacks.derive_seed(seed, path.name, entry.label)
                row: dict[str, Any] = {"source": str(path), "suite": suite.name}
                try:
                    rec = suite.draw(entry, rec_seed, ctx)
                    row.update(rec.to_dict())
                    attacked = attacks.apply_attack(image, rec.attack, **rec.params)
                    dest = target / f"{entry.label}.{fmt}"
                    save_image(attacked, dest, quality=95 if fmt != "png" else None)
                    row["output"] = str(dest)
                    row["size"] = [int(attacked.shape[1]), int(attacked.shape[0])]
                    if metrics:
                        row.update(_quality(image, attacked))
                        table.setdefault(entry.label, []).append(
                            (rec.strength, row.get("psnr") or float("nan"), row.get("ssim") or float("nan"))
                        )
                    n_ok += 1
                except TracemarkError as exc:
                    n_bad_attacks += 1
                    row["error"] = exc.to_dict()
                    click.echo(f"failed {path} / {entry.label}: {exc}", err=True)
                _emit(manifest, row)
    click.echo(
        f"{n_ok} attacked images written to {out_dir}; manifest {manifest_path}; "
        f"{n_bad_inputs} bad inputs, {n_bad_attacks} failed attacks",
        err=True,
    )
    if metrics and table:
        click.echo(_format_quality_table(suite.name, table))
    if n_ok == 0:
        sys.exit(EXIT_NOTHING)
    if n_bad_inputs or n_bad_attacks:
        sys.exit(EXIT_PARTIAL)


def _quality(original: Any, attacked: Any) -> dict[str, float | None]:
    """PSNR/SSIM of an attacked image against its input; None when geometry changed the size."""
    from tracemark.metrics import psnr, ssim

    if original.shape != attacked.shape:
        return {"psnr": None, "ssim": None}
    p = psnr(original, attacked)
    return {"psnr": None if p == float("inf") else round(p, 3), "ssim": round(ssim(original, attacked), 5)}


def _format_quality_table(name: str, table: dict[str, list[tuple[float, float, float]]]) -> str:
    import math

    def mean(xs: list[float]) -> str:
        vals = [x for x in xs if not math.isnan(x)]
        return f"{sum(vals) / len(vals):.3f}" if vals else "n/a"

    lines = [
        f"Suite {name}: mean over images (PSNR/SSIM n/a where the attack changes the size)",
        "",
        "| attack | n | strength | PSNR dB | SSIM |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, rows in table.items():
        s, p, q = zip(*rows, strict=True)
        lines.append(f"| {label} | {len(rows)} | {mean(list(s))} | {mean(list(p))} | {mean(list(q))} |")
    return "\n".join(lines)


# --- listings -------------------------------------------------------------------------


@main.group("attacks")
def attacks_group() -> None:
    """Inspect the attack registry."""


@attacks_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
def attacks_list(as_json: bool) -> None:
    """List registered attacks with their family and parameters."""
    from tracemark import attacks

    for spec in attacks.list_attacks():
        params = {p.name: spec.defaults.get(p.name) for p in spec.params}
        if as_json:
            click.echo(json.dumps({"name": spec.name, "family": str(spec.family), "defaults": _jsonable(params),
                                   "description": spec.description}))
        else:
            click.echo(f"{spec.name:22s} {str(spec.family):12s} {spec.description}")


@main.group("suites")
def suites_group() -> None:
    """Inspect the attack suites."""


@suites_group.command("list")
def suites_list() -> None:
    """List the built-in suites."""
    from tracemark import attacks

    for name in attacks.list_suites():
        suite = attacks.get_suite(name)
        click.echo(f"{name:26s} {len(suite):3d} entries  {suite.source}")


@suites_group.command("show")
@click.argument("name")
def suites_show(name: str) -> None:
    """Print a suite's entries as JSON Lines."""
    from tracemark import attacks

    try:
        suite = attacks.get_suite(name)
    except TracemarkError as exc:
        raise click.UsageError(str(exc)) from exc
    for e in suite:
        click.echo(json.dumps({"label": e.label, "attack": e.attack, "params": _jsonable(e.params),
                               "group": e.series, "level": e.level}))


def _jsonable(value: Any) -> Any:
    from tracemark.attacks.suites import _jsonable as conv

    return conv(value)


# --- bench ---------------------------------------------------------------------------


@main.group("bench")
def bench_group() -> None:
    """Benchmarks (results as JSON and Markdown)."""


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


from tracemark.bench.watermark import watermark_bench_command  # noqa: E402
from tracemark.watermark.cli import watermark_group  # noqa: E402

bench_group.add_command(watermark_bench_command)

from tracemark.bench.copydetect import copydetect_bench_command  # noqa: E402

bench_group.add_command(copydetect_bench_command)

from tracemark.bench.credentials import credentials_bench_command  # noqa: E402

bench_group.add_command(credentials_bench_command)

main.add_command(watermark_group)

from tracemark.match_cli import index_group, scan_command, search_command  # noqa: E402

main.add_command(index_group)
main.add_command(search_command)
main.add_command(scan_command)

if __name__ == "__main__":  # pragma: no cover
    main()

from tracemark.credentials.cli import (  # noqa: E402
    certs_group,
    credentials_group,
    sign_command,
    verify_command,
)

main.add_command(sign_command)
main.add_command(verify_command)
main.add_command(certs_group)
main.add_command(credentials_group)

from tracemark.service.cli import serve_command, service_group  # noqa: E402

main.add_command(serve_command)
main.add_command(service_group)

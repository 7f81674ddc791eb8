"""``tracemark attack``, ``tracemark attacks list`` and ``tracemark suites list|show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tracemark.cli import _options as opts
from tracemark.cli._common import (
    DEFAULT_QUALITY,
    JsonLines,
    Progress,
    Tally,
    collect_inputs,
    error_dict,
    expand_inputs,
    fail,
    is_lossy,
    keep_suffix,
    note,
    plan_outputs,
)
from tracemark.errors import TracemarkError

__all__ = ["attack_command", "attacks_group", "suites_group"]


# --- attack -------------------------------------------------------------------------


@click.command("attack")
@click.option("--suite", "suite_name", required=True,
              help="Built-in suite name or a YAML/JSON suite file.")
@opts.out_option(help="Output folder: OUT/<input>/<entry>.<format> and OUT/manifest.jsonl.")
@opts.force_option
@click.option("--seed", type=int, default=0, show_default=True,
              help="Base seed; per-item seeds derive from it.")
@opts.format_option(default="png", help="Format of the attacked images: png keeps the "
                    "attacked pixels exactly (the manifest then replays them bit for bit); "
                    "same keeps each input's format.")
@opts.quality_option
@click.option("--backgrounds", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of images that insertion attacks may use as backgrounds.")
@click.option("--metrics/--no-metrics", default=False,
              help="Compute PSNR/SSIM against the input; a table goes to stderr.")
@opts.max_pixels_option
@opts.formats_option
@click.argument("inputs", nargs=-1, required=True)
def attack_command(suite_name: str, out: Path, force: bool, seed: int, fmt: str,
                   quality: int | None, backgrounds: Path | None, metrics: bool,
                   max_pixels: int, formats: Any, inputs: tuple[str, ...]) -> None:
    """Attack INPUTS (files or folders) with every entry of a suite.

    Writes OUT/<input>/<entry-label>.<format> and OUT/manifest.jsonl, and prints the same
    lines on stdout, one per (input, entry): source, output, attack, concrete parameters
    and the seed (enough to replay each image exactly with
    ``tracemark.attacks.apply_attack``), size, alpha, error. An input with transparency
    keeps its alpha channel unchanged in a PNG, WebP or TIFF output for photometric and
    degradation attacks (alpha: "kept"; the attack is applied to the stored colour
    planes); geometric, overlay and composite attacks, and JPEG or BMP outputs, are
    applied to the image over white and written without alpha (alpha: "flattened"); alpha
    is null for an opaque input. Metrics compare the images over white.
    """
    from tracemark import attacks
    from tracemark.imageio import (
        composite,
        has_alpha_channel,
        load_image_with_alpha,
        save_image,
        save_image_with_alpha,
    )

    try:
        suite = attacks.get_suite(suite_name)
    except TracemarkError as exc:
        raise click.UsageError(str(exc)) from exc
    lines = JsonLines()
    bg = tuple(str(p) for p in expand_inputs([backgrounds], formats=formats).paths) \
        if backgrounds else ()
    found = collect_inputs(inputs, lines, formats=formats)
    dirs = plan_outputs(found, out, lambda _src: "", force=True)  # OUT/<input>/ folders
    suffix = keep_suffix(fmt)
    manifest_path = out / "manifest.jsonl"
    planned = [manifest_path] + [d / f"{e.label}{suffix(src)}" for src, d in dirs for e in suite]
    if not force:
        for dest in planned:
            if dest.exists():
                raise fail(f"{dest} exists: give --force to overwrite, or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if manifest_path.is_symlink() or manifest_path.exists():  # --force: replace the
            manifest_path.unlink()  # entry itself, never write through a link
    except OSError as exc:
        raise fail(f"cannot create --out {out}: {exc.strerror or exc}") from exc
    tally = Tally(skipped=len(found.skipped))
    n_bad_attacks = 0
    table: dict[str, list[tuple[float, float, float]]] = {}
    with manifest_path.open("x", encoding="utf-8") as mf, \
            Progress(len(dirs), f"attack {suite.name}") as bar:
        manifest = JsonLines(mf)
        lines.progress = bar

        def emit(row: dict[str, Any]) -> None:
            manifest.item(row)
            lines.item(row)

        for path, target in dirs:
            try:
                colour, alpha = load_image_with_alpha(path, max_pixels=max_pixels,
                                                      formats=formats)
                image = composite(colour, alpha)  # what a viewer sees, over white
            except TracemarkError as exc:
                tally.failed += 1
                emit({"source": str(path), "suite": suite.name, "error": error_dict(exc, path)})
                note(f"failed {path}: {exc.message}", bar)
                bar.update(failed=1)
                continue
            target.mkdir(parents=True, exist_ok=True)
            ctx = attacks.SampleContext.for_image(image, bg)
            ok_here = 0
            for entry in suite:
                rec_seed = attacks.derive_seed(seed, path.name, entry.label)
                row: dict[str, Any] = {"source": str(path), "suite": suite.name}
                try:
                    rec = suite.draw(entry, rec_seed, ctx)
                    row.update(rec.to_dict())
                    dest = target / f"{entry.label}{suffix(path)}"
                    lossy = is_lossy(dest.suffix)
                    q = (quality or DEFAULT_QUALITY) if lossy else None
                    if (alpha is not None and has_alpha_channel(dest.suffix)
                            and attacks.get_attack(rec.attack).family in _ALPHA_KEEPING):
                        # the stored colour is attacked, the alpha plane kept: replayed
                        # exactly by apply_attack on the colour planes
                        attacked = attacks.apply_attack(colour, rec.attack, **rec.params)
                        save_image_with_alpha(attacked, alpha, dest, quality=q)
                        if metrics:
                            attacked = composite(attacked, alpha)
                        row["alpha"] = "kept"
                    else:
                        attacked = attacks.apply_attack(image, rec.attack, **rec.params)
                        save_image(attacked, dest, quality=q)
                        row["alpha"] = None if alpha is None else "flattened"
                    row["output"] = str(dest)
                    row["size"] = [int(attacked.shape[1]), int(attacked.shape[0])]
                    if metrics:
                        row.update(_quality(image, attacked))
                        table.setdefault(entry.label, []).append(
                            (rec.strength, row.get("psnr") or float("nan"),
                             row.get("ssim") or float("nan")))
                    ok_here += 1
                except TracemarkError as exc:
                    n_bad_attacks += 1
                    row["error"] = error_dict(exc, path)
                    note(f"failed {path} / {entry.label}: {exc}", bar)
                emit(row)
            tally.ok += ok_here > 0
            tally.failed += ok_here == 0
            bar.update(failed=int(ok_here == 0))
    note(f"attacked {tally.ok} of {len(dirs)} inputs into {out} (manifest {manifest_path}); "
         f"{tally.failed} failed inputs, {n_bad_attacks} failed attacks, "
         f"{tally.skipped} files skipped")
    if metrics and table:
        note(_format_quality_table(suite.name, table))
    if n_bad_attacks and not tally.failed:
        tally.failed = 1 if tally.ok else 0
    tally.finish()


# Attack families that change the colour of each pixel in place (shape and geometry kept):
# the alpha plane stays valid for their output.
_ALPHA_KEEPING = frozenset({"photometric", "degradation"})


def _quality(original: Any, attacked: Any) -> dict[str, float | None]:
    """PSNR/SSIM of an attacked image against its input; None when geometry changed the size
    (both) or the image is below SSIM's window (ssim: the attack itself succeeded)."""
    from tracemark.metrics import psnr, ssim
    from tracemark.metrics.image import SSIM_WINDOW

    if original.shape != attacked.shape:
        return {"psnr": None, "ssim": None}
    p = psnr(original, attacked)
    s = round(ssim(original, attacked), 5) if min(original.shape[:2]) >= SSIM_WINDOW else None
    return {"psnr": None if p == float("inf") else round(p, 3), "ssim": s}


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


@click.group("attacks")
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


@click.group("suites")
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

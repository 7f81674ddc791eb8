"""``tracemark watermark embed|detect``: mark images, and look for the mark.

Keys never appear on the command line (process lists show it to every user): they come
from a file (``--key-file``, raw bytes), an environment variable holding hex
(``--key-env``), or an environment variable holding a passphrase (``--passphrase-env``).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tracemark.cli import _options as opts
from tracemark.cli._common import (
    DEFAULT_QUALITY,
    Batch,
    JsonLines,
    batch_executor,
    collect_inputs,
    collect_sources,
    fail,
    is_lossy,
    keep_suffix,
    note,
    plan_outputs,
    report_skipped,
)
from tracemark.errors import ImageSourceError, PayloadError, TracemarkError

if TYPE_CHECKING:
    from tracemark.watermark.base import WatermarkMethod
    from tracemark.watermark.keys import WatermarkKey

__all__ = ["watermark_group"]


def _finite(x: float | None, ndigits: int | None = None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return (round(x, ndigits) if ndigits is not None else float(x)) + 0.0  # no -0.0


def _method(name: str, strength: float | None) -> WatermarkMethod:
    from tracemark.watermark import get_method

    try:
        method = get_method(name)
        if strength is not None:
            accepted = inspect.signature(type(method)).parameters
            if "psnr" not in accepted:
                raise click.UsageError(f"method {name!r} has no --strength setting")
            method = get_method(name, psnr=strength)
    except TracemarkError as exc:
        raise fail(exc.message) from exc
    return method


def _key(method: WatermarkMethod, **sources: Any) -> WatermarkKey | None:
    from tracemark.watermark.keys import read_key

    try:
        key = read_key(**sources)
    except TracemarkError as exc:
        raise fail(str(exc)) from exc
    if method.keyed and key is None:
        raise click.UsageError(
            f"method {method.name!r} needs a key: give --key-file FILE, --key-env VAR (hex) or "
            "--passphrase-env VAR (keys are never taken on the command line)"
        )
    if not method.keyed and key is not None:
        raise click.UsageError(f"method {method.name!r} is keyless; do not give a key")
    return key


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageSourceError(
            f"cannot create the output folder: {exc.strerror or exc}", source=str(folder)
        ) from exc


def _collection(store: opts.StoreLocation) -> Any:
    """The copy-detection index at ``store`` (a manifest store's own index too), read-only."""
    from tracemark.copydetect import CopyIndex

    path = store.require_existing("collection")
    if (path / "credentials.sqlite").is_file():
        path = path / "index"  # a manifest store keeps its fingerprints in index/
    try:
        return CopyIndex.open(path, read_only=True)
    except TracemarkError as exc:
        raise fail(f"cannot open the collection {store.path}: {exc.message}") from exc


method_option = click.option("--method", "method_name", default="lattice", show_default=True,
                             help="Registered watermark method.")


@click.group("watermark")
def watermark_group() -> None:
    """Embed and detect invisible watermarks."""


# --- embed ------------------------------------------------------------------------------


@watermark_group.command("embed")
@opts.out_option(help="Output folder (created if needed), or the output file when one file "
                 "goes in.")
@opts.force_option
@click.option("--payload", "payload_spec", required=True,
              help="0x<hex>, a decimal integer, or text:<utf-8 text>; must fit the capacity.")
@method_option
@opts.key_options
@opts.format_option()
@opts.quality_option
@click.option("--strength", type=float, default=None,
              help="Target PSNR of the mark in dB (lower is stronger), for methods that take it.")
@click.option("--allow-remark", is_flag=True,
              help="Embed over a mark of this key that carries another payload (the two "
              "marks garble each other); without it such an image is an error.")
@opts.max_pixels_option
@opts.formats_option
@opts.ray_option
@click.argument("inputs", nargs=-1, required=True)
def embed_cmd(out: Path, force: bool, payload_spec: str, method_name: str,
              key_file: Path | None, key_env: str | None, passphrase_env: str | None,
              fmt: str, quality: int | None, strength: float | None, allow_remark: bool,
              max_pixels: int, formats: Any, ray_address: str | None,
              inputs: tuple[str, ...]) -> None:
    """Embed PAYLOAD into every INPUT image (files or folders, recursively).

    Writes OUT/<path relative to the folder argument, or the file's stem>.<format>, with
    -2, -3... on name clashes, and prints one JSON line per input: source, output, method,
    payload (0x<hex>, the capacity in whole bytes), psnr (of the written file against the
    input, dB), mark, alpha and error. Blind detection with the same method and key runs
    first: an image already carrying this payload is written as it is (mark: "kept"; a
    second embed would weaken the mark); one carrying another payload, or a mark that no
    longer reads, is an error for that item (AlreadyMarkedError; the batch goes on) unless
    --allow-remark (mark: "remarked"); otherwise mark: "embedded". Methods that cannot tell
    presence (the peers) always embed. Images are written upright (EXIF orientation applied),
    without metadata. An input with transparency keeps its alpha channel unchanged in a PNG,
    WebP or TIFF output (alpha: "kept"; the colour of visible pixels carries the mark); a
    JPEG or BMP output has none: it holds the image over white (alpha: "flattened"); alpha
    is null for opaque inputs.

    With --ray, the images are decoded, marked and encoded as Ray tasks and this process
    writes the files (the same files and names); lines come in completion order. A re-run
    resumes: an existing output that already carries this payload (read on the cluster)
    is not written again (its line says "skipped": true) and needs no --force; any other
    existing output still needs --force.
    """
    from tracemark.imageio import (
        colour_under_alpha,
        composite,
        has_alpha_channel,
        load_image,
        load_image_with_alpha,
        save_image,
        save_image_with_alpha,
    )
    from tracemark.metrics import psnr
    from tracemark.watermark import embed_once, format_payload, parse_payload

    if quality is not None and fmt == "png":
        raise click.UsageError("--quality applies to --format jpg, webp or same, not png")
    method = _method(method_name, strength)
    key = _key(method, key_file=key_file, key_env=key_env, passphrase_env=passphrase_env)
    try:
        payload = parse_payload(payload_spec, method.payload_bits)
    except PayloadError as exc:
        raise click.BadParameter(exc.message, param_hint="'--payload'") from exc
    lines = JsonLines()
    found = collect_inputs(inputs, lines, report=False, formats=formats)
    if ray_address is not None:
        _embed_on_ray(ray_address, found, out, force=force, fmt=fmt, method=method,
                      params={} if strength is None else {"psnr": strength}, payload=payload,
                      key=key, allow_remark=allow_remark, quality=quality,
                      max_pixels=max_pixels, formats=formats, lines=lines)
        return
    plan = plan_outputs(found, out, keep_suffix(fmt), force=force)
    report_skipped(found, lines)

    kept: list[Path] = []
    with Batch(len(plan), f"embed {method.name}", lines, skipped=len(found.skipped)) as batch:
        for src, dest in plan:

            def embed(row: dict[str, Any], src: Path = src, dest: Path = dest) -> None:
                colour, alpha = load_image_with_alpha(src, max_pixels=max_pixels,
                                                      formats=formats)
                image = composite(colour, alpha)  # what every reader of the mark sees
                marked, row["mark"] = embed_once(method, image, payload, key,
                                                 allow_remark=allow_remark)
                if marked is image:  # kept: the colour below is written, not the input's
                    marked = marked.copy()
                _mkdir(dest.parent)
                q = (quality or DEFAULT_QUALITY) if is_lossy(dest.suffix) else None
                if alpha is not None and has_alpha_channel(dest.suffix):
                    marked = colour_under_alpha(marked, colour, alpha, out=marked)
                    save_image_with_alpha(marked, alpha, dest, quality=q)
                    row["alpha"] = "kept"
                else:
                    save_image(marked, dest, quality=q)
                    row["alpha"] = None if alpha is None else "flattened"
                del marked, colour, alpha  # the read-back below needs the memory
                row["psnr"] = _finite(psnr(image, load_image(dest)), 3)
                row["output"] = str(dest)
                if row["mark"] == "kept":
                    kept.append(src)

            batch.run(src, {"source": str(src), "output": None, "method": method.name,
                            "payload": format_payload(payload), "psnr": None, "mark": None,
                            "alpha": None},
                      embed)
    tally = batch.tally
    already = f" ({len(kept)} already carried this mark: kept, not marked again)" if kept else ""
    note(f"{tally.ok} images marked into {out}{already}; {tally.failed} failed, "
         f"{tally.skipped} skipped")
    tally.finish()


def _embed_on_ray(ray_address: str, found: Any, out: Path, *, force: bool, fmt: str,
                  method: WatermarkMethod, params: dict[str, Any], payload: Any, key: Any,
                  allow_remark: bool, quality: int | None, max_pixels: int, formats: Any,
                  lines: JsonLines) -> None:
    """``watermark embed --ray``: :func:`tracemark.batch.embed_sources` over the plan of
    the local path; existing outputs that carry the payload are resumed, others need
    --force (checked before anything is written)."""
    from tracemark.batch import embed_sources, marked_outputs
    from tracemark.watermark import format_payload

    plan = plan_outputs(found, out, keep_suffix(fmt), force=True)
    existing = [dest for _src, dest in plan if dest.exists() or dest.is_symlink()]
    executor = batch_executor(ray_address)
    try:
        done_before: set[str] = set()
        if existing and not force:
            done_before = marked_outputs([str(d) for d in existing], executor,
                                         method=method.name, params=params, payload=payload,
                                         key=key)
            other = [d for d in existing if str(d) not in done_before]
            if other:
                raise fail(f"{other[0]} exists and does not carry this payload: give --force "
                           "to overwrite it, or choose another --out")
        report_skipped(found, lines)
        todo = [(str(src), str(dest)) for src, dest in plan if str(dest) not in done_before]
        base = {"method": method.name, "payload": format_payload(payload), "psnr": None,
                "mark": None, "alpha": None}
        kept = 0
        with Batch(len(plan), f"embed {method.name}", lines,
                   skipped=len(found.skipped)) as batch:
            for src, dest in plan:
                if str(dest) in done_before:
                    batch.run(src, {"source": str(src), "output": str(dest), **base,
                                    "skipped": True}, lambda row: None)
            for done in embed_sources(todo, executor, method=method.name, params=params,
                                      payload=payload, key=key, allow_remark=allow_remark,
                                      quality=quality or DEFAULT_QUALITY, formats=formats,
                                      max_pixels=max_pixels):

                def embed(row: dict[str, Any], done: Any = done) -> None:
                    nonlocal kept
                    if done.error is not None:
                        raise done.error
                    row.update(output=done.item[1], psnr=done.value.psnr,
                               mark=done.value.mark, alpha=done.value.alpha)
                    kept += done.value.mark == "kept"

                batch.run(done.item[0], {"source": done.item[0], "output": None, **base},
                          embed)
    finally:
        executor.close()
    tally = batch.tally
    already = f" ({kept} already carried this mark: kept, not marked again)" if kept else ""
    resumed = f"{len(done_before)} already written, " if done_before else ""
    note(f"{tally.ok - len(done_before)} images marked into {out}{already}; {resumed}"
         f"{tally.failed} failed, {tally.skipped} skipped")
    tally.finish()


# --- detect -----------------------------------------------------------------------------


@watermark_group.command("detect")
@method_option
@opts.key_options
@opts.store_option(what="collection of registered works (a copy-detection index, or a "
                   "manifest store): copies that blind detection misses are aligned to "
                   "the work they copy and read again", optional=True)
@opts.alpha_option(default=1e-4, help="False-positive rate: an unmarked image is called "
                   "marked with at most this probability (methods with a calibrated p-value).")
@opts.max_pixels_option
@opts.formats_option
@opts.ray_option
@click.argument("inputs", nargs=-1, required=True)
def detect_cmd(method_name: str, key_file: Path | None, key_env: str | None,
               passphrase_env: str | None, store: opts.StoreLocation | None, alpha: float,
               max_pixels: int, formats: Any, ray_address: str | None,
               inputs: tuple[str, ...]) -> None:
    """Look for the watermark in every INPUT image (files or folders, recursively).

    Prints one JSON line per input: source, method, present, payload (0x<hex>, or null
    when not read; give it back to embed --payload as it is), p_value (null for
    uncalibrated methods), score, bit_errors, route and error. An image without the mark
    is a normal result (present: false), not an error; exit code 10 or 11 says the mark was
    found in none or only some of the images. A method that cannot tell a marked image
    from an unmarked one (the peers dwtDct, dwtDctSvd, rivaGan) gives present: null and
    its decoded bits as payload, unverified, and exit code 13 (presence unknown). With --store, an image where blind
    detection finds nothing but which copy detection matches to a registered work is
    warped into that work's frame and read again (route "registry"; the p-value accounts
    for every test).

    With --ray, detection runs as Ray tasks (blind detection only: not with --store);
    lines come in completion order; INPUTS may be fsspec URLs.
    """
    from tracemark.imageio import load_image
    from tracemark.watermark import format_payload

    if ray_address is not None and store is not None:
        raise click.UsageError("--ray runs blind detection on the cluster; --store (aligning "
                               "copies to registered works) needs the collection in this "
                               "process: run it without --ray")
    method = _method(method_name, None)
    key = _key(method, key_file=key_file, key_env=key_env, passphrase_env=passphrase_env)
    collection = _collection(store) if store is not None else None
    lines = JsonLines()
    collect = collect_inputs if ray_address is None else collect_sources
    found = collect(inputs, lines, formats=formats)
    if ray_address is None:
        items: Any = ((src, None) for src in found.paths)
    else:
        from tracemark.batch import detect_sources

        executor = batch_executor(ray_address)
        items = ((done.item, done) for done in detect_sources(
            [str(p) for p in found.paths], executor, method=method.name, key=key,
            alpha=alpha, formats=formats, max_pixels=max_pixels))
    with Batch(len(found.paths), f"detect {method.name}", lines,
               skipped=len(found.skipped)) as batch:
        for src, done in items:

            def detect(row: dict[str, Any], src: Any = src, done: Any = done) -> bool:
                if done is not None:  # detected on the cluster
                    if done.error is not None:
                        raise done.error
                    det = done.value
                elif collection is None:
                    image = load_image(src, max_pixels=max_pixels, formats=formats)
                    det = method.detect(image, key, alpha=alpha)
                else:
                    from tracemark.copydetect.assist import detect_assisted

                    image = load_image(src, max_pixels=max_pixels, formats=formats)
                    det = detect_assisted(lambda im, a: method.detect(im, key, alpha=a), image,
                                          lambda im: collection.search(im, k=3), alpha=alpha)
                row["route"] = det.details.get("route", "blind")
                row.update(
                    present=None if det.present is None else bool(det.present),
                    payload=None if det.payload is None else format_payload(det.payload),
                    p_value=_finite(det.p_value),
                    score=_finite(det.score),
                    bit_errors=det.bit_errors,
                )
                if det.present is None:
                    batch.tally.unknown += 1
                return bool(det.present)  # None (unknown) is not "found"

            batch.run(src, {"source": str(src), "method": method.name, "present": None,
                            "payload": None, "p_value": None, "score": None,
                            "bit_errors": None, "route": None}, detect)
    if collection is not None:
        collection.close()
    if ray_address is not None:
        executor.close()
    tally = batch.tally
    if tally.unknown:
        what = (f"presence unknown for {tally.unknown} of {tally.ok} images read ("
                f"{method.name} cannot tell presence: its bits are unverified; compare them "
                "with the payload you embedded)")
        if tally.found:
            what = f"mark found in {tally.found}, " + what
    else:
        what = f"mark found in {tally.found} of {tally.ok} images read"
    note(f"{what}; {tally.failed} failed, {tally.skipped} skipped")
    tally.finish(finding=True)

"""``tracemark guard image``: screen generated images against the protected collection.

One JSON line per image (:meth:`tracemark.guard.image.ImageScreening.to_dict` with the
image's path and an ``error``); the decision rule is :mod:`tracemark.guard.image`'s. The
command is attached to the ``guard`` group (:mod:`tracemark.cli.guard`) as ``image``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import click

from tracemark.cli import _options as opts
from tracemark.cli._common import (
    JsonLines,
    Progress,
    Tally,
    batch_executor,
    collect_inputs,
    collect_sources,
    fail,
    note,
)
from tracemark.errors import TracemarkError

__all__ = ["guard_image_command", "read_concepts"]


def read_concepts(path: Path) -> list[Any]:
    """The concepts of ``path``: a JSON array of concept objects, or JSON Lines of them
    (:meth:`tracemark.guard.Concept.from_dict`); a bad file is a usage error."""
    from tracemark.guard import Concept

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"--concepts {path}: cannot read it ({exc})") from exc
    try:
        data = json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines() if line.strip()]
        return [Concept.from_dict(d) for d in data]
    except ValueError as exc:  # JSONDecodeError, GuardInputError
        raise fail(f"--concepts {path}: {exc}") from exc


@click.command("image")
@opts.store_option(what="index directory (the protected collection)")
@click.option("--concepts", "concepts_file", type=click.Path(exists=True, dir_okay=False,
                                                               path_type=Path),
              default=None, help="Protected concepts (JSON array or JSON Lines of concept "
              "objects); a copy of one of their reference images names the concept "
              "[default: the concepts registered in --store].")
@opts.key_options
@click.option("--method", default="lattice", show_default=True,
              help="Watermark method detected with the key.")
@click.option("--own-signer", "own_signers", multiple=True, metavar="NAME",
              help="A signer (certificate common name, organisation or issuer) whose "
              "manifests are the platform's own, not evidence (repeatable).")
@opts.trust_option
@opts.alpha_option(default=None, help="False-positive rate of a copy decision; p-values up "
                   "to 10x it ask for review [default: the collection's, 0.001].")
@click.option("--watermark-alpha", type=click.FloatRange(0, 0.1, min_open=True,
                                                         max_open=True),
              default=1e-4, show_default=True,
              help="False-positive rate of a watermark decision.")
@opts.max_pixels_option
@opts.formats_option
@opts.ray_option
@click.argument("inputs", nargs=-1, required=True)
def guard_image_command(store: opts.StoreLocation, concepts_file: Path | None,
                        key_file: Path | None, key_env: str | None, passphrase_env: str | None,
                        method: str, own_signers: tuple[str, ...], trust: Path | None,
                        alpha: float | None, watermark_alpha: float, max_pixels: int,
                        formats: Any, ray_address: str | None, inputs: tuple[str, ...]) -> None:
    """Screen each generated image of INPUTS (files or folders) against --store.

    Three checks: a copy of a registered image (with its region in the image), the
    watermark of the key (--key-file, --key-env or --passphrase-env; skipped without a
    key), a C2PA manifest from another signer that declares a protected work. One JSON
    line per image: image, decision (allow, review, block), reasons, matches (concept,
    score, p_value, flagged, evidence with how = image, watermark or manifest), copies
    (ref_id, concepts, p_value, inliers, query_region, region), watermark, manifest,
    checks, seconds, error.

    Exit codes: 0 every image screened and each was flagged (review or block); 10 none
    was; 11 some were; 1 some images failed (reported); 2 usage error; 3 no image could
    be screened.

    With --ray, images are decoded, described, detected and their manifests read as Ray
    tasks, and decided here; lines come in completion order; INPUTS may be fsspec URLs.
    """
    from tracemark.batch import LocalExecutor
    from tracemark.batch.screening import screen_sources
    from tracemark.copydetect import CopyIndex
    from tracemark.watermark import get_method
    from tracemark.watermark.keys import read_key

    db = store.require_existing("index")
    concepts = read_concepts(concepts_file) if concepts_file is not None else []
    try:
        key = read_key(key_file=key_file, key_env=key_env, passphrase_env=passphrase_env)
        if key is not None and not get_method(method).keyed:
            raise fail(f"method {method!r} is keyless; do not give a key")
    except TracemarkError as exc:
        raise fail(str(exc)) from exc
    trust_pem = opts.trust_setup(trust, None, None)[0]
    lines = JsonLines()
    collect = collect_inputs if ray_address is None else collect_sources
    found = collect(inputs, lines, what="image", key="image", formats=formats)
    tally = Tally(skipped=len(found.skipped))
    try:
        ci = CopyIndex.open(db, read_only=True)
    except TracemarkError as exc:
        raise fail(f"cannot open the index {db}: {exc.message}") from exc
    with contextlib.closing(ci), contextlib.ExitStack() as stack:
        if len(ci) == 0:
            note(f"the index {db} is empty")
        if concepts_file is None:  # the collection's own concepts
            from tracemark.guard import ConceptRegistry

            try:
                concepts = ConceptRegistry(ci).list()
            except TracemarkError as exc:
                raise fail(f"cannot read the concepts of {db}: {exc.message}") from exc
        executor = (LocalExecutor() if ray_address is None
                    else stack.enter_context(batch_executor(ray_address)))
        results = screen_sources(ci, [str(p) for p in found.paths], executor,
                                 concepts=concepts, key=key, method=method,
                                 own_signers=own_signers, trust_pem=trust_pem, alpha=alpha,
                                 watermark_alpha=watermark_alpha, formats=formats,
                                 max_pixels=max_pixels)
        decisions = {"allow": 0, "review": 0, "block": 0}
        with Progress(len(found.paths), "guard image") as bar:
            lines.progress = bar
            for name, screening, error in results:
                if screening is None:
                    tally.failed += 1
                    note(f"failed {name}: {error['message'] if error else '?'}", bar)
                    lines.item({"image": name, "decision": None, "error": error})
                else:
                    tally.ok += 1
                    tally.found += screening.flagged
                    decisions[screening.decision] += 1
                    lines.item({"image": name, **screening.to_dict(), "error": None})
                bar.update(failed=int(screening is None))
    note(f"{tally.ok} images screened: {decisions['block']} blocked, {decisions['review']} "
         f"to review, {decisions['allow']} allowed; {tally.failed} failed, {tally.skipped} "
         "skipped")
    tally.finish(finding=True)

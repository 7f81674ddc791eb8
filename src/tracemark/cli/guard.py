"""``tracemark guard``: the generation guard's commands.

``tracemark guard concepts add|list|remove`` manage the protected concepts of a
copy-detection collection (:class:`tracemark.guard.ConceptRegistry`), kept with the
collection's metadata: ``--store`` is the index directory of ``tracemark index`` (and takes
its ``--database-url`` and ``--vectors``). ``tracemark guard prompt`` screens prompts
against them (:meth:`tracemark.guard.Guard.screen`), ``tracemark guard calibrate`` keeps the
prompt screen's calibration with the collection, and ``tracemark guard image``
(:mod:`tracemark.cli.guard_image`) screens generated images.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import click

from tracemark.cli import _options as opts
from tracemark.cli._common import (
    Acknowledgements,
    JsonLines,
    Tally,
    dumps,
    error_dict,
    fail,
    note,
    source_for,
)
from tracemark.cli.copydetect import _db_option, _open, _open_or_create
from tracemark.cli.guard_image import guard_image_command

__all__ = ["guard_group"]

_KINDS = ("character", "artwork", "style", "brand", "person")
""":class:`tracemark.guard.ConceptKind`'s values (here as text: ``--help`` stays light)."""
MAX_CONCEPT_FILE = 64 * 1024 * 1024
"""The largest ``--from`` file read, bytes."""
MAX_REQUEST_LINE = 4 * 1024 * 1024
"""The longest line of ``guard prompt --from``, bytes (64 prompts of 8,000 characters fit
in UTF-8 and JSON escapes); a longer line is reported as an error, never read whole."""


@click.group("guard")
def guard_group() -> None:
    """The generation guard: protected concepts a generator must not draw."""


@guard_group.group("concepts")
def concepts_group() -> None:
    """Manage the protected concepts of a collection (kept with its metadata)."""


def _items(path: Path) -> list[tuple[str, Any]]:
    """``(source, parsed object or the error)`` of each concept in a JSON file (an object
    or an array of objects) or a JSON Lines file (one object a line; blank lines skipped).
    A line that is not UTF-8 or not JSON is an item with its error."""
    from tracemark.errors import GuardInputError

    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONCEPT_FILE + 1)
    except OSError as exc:
        raise fail(f"cannot read --from {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_CONCEPT_FILE:
        raise fail(f"--from {path} is larger than {MAX_CONCEPT_FILE} bytes")
    try:
        whole = json.loads(raw.decode("utf-8"))
    except ValueError:  # not UTF-8 as a whole, or not one JSON value: JSON Lines
        whole = None
    if isinstance(whole, list):
        return [(f"{path}[{i}]", item) for i, item in enumerate(whole)]
    if isinstance(whole, dict):
        return [(str(path), whole)]
    out: list[tuple[str, Any]] = []
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        source = f"{path}:{n}"
        try:
            out.append((source, json.loads(line.decode("utf-8"))))
        except UnicodeDecodeError:
            out.append((source, GuardInputError("the line is not UTF-8", source=source)))
        except ValueError as exc:
            out.append((source, GuardInputError(f"the line is not JSON ({exc})",
                                                source=source)))
    return out


@concepts_group.command("add")
@_db_option
@click.option("--name", default=None, help="The concept's name (its id is derived from it).")
@click.option("--kind", type=click.Choice(_KINDS), default="character", show_default=True,
              help="What the concept is.")
@click.option("--owner", default="", help="Who holds the rights.")
@click.option("--alias", "aliases", multiple=True, help="Another name or spelling (repeatable).")
@click.option("--trait", "traits", multiple=True,
              help="A distinctive trait, a short phrase (repeatable).")
@click.option("--generic", default="", help="What a rewritten prompt says instead of the "
              "concept [default: from the kind].")
@click.option("--reference", "references", multiple=True, type=click.Path(path_type=Path),
              help="A reference image: registered in the collection, its id linked "
              "(repeatable).")
@click.option("--from", "from_file", type=click.Path(path_type=Path), default=None,
              help="Add the concepts of this JSON or JSON Lines file (Concept.to_dict "
              "objects; references are image ids of the collection) instead of the flags.")
@click.option("--replace", is_flag=True, help="Replace a concept of the same id (else an "
              "existing id is an error).")
@opts.formats_option
def concepts_add(db: Path, name: str | None, kind: str, owner: str, aliases: tuple[str, ...],
                 traits: tuple[str, ...], generic: str, references: tuple[Path, ...],
                 from_file: Path | None, replace: bool, formats: Any) -> None:
    """Register protected concepts in the collection --store (created if needed).

    From the flags (--name ...) or from --from FILE. Prints one JSON line per concept: id,
    concept (its record, reference ids included), source and error; a line is printed once
    its concept is committed. A bad item of FILE is reported and the rest are added.
    """
    from tracemark.errors import TracemarkError
    from tracemark.guard import Concept, ConceptRegistry

    if (name is None) == (from_file is None):
        raise click.UsageError("give either --name (and the other flags) or --from FILE")
    if from_file is not None and (aliases or traits or references or generic or owner):
        raise click.UsageError("--from takes the concepts from FILE: no other concept flags")
    items = _items(from_file) if from_file is not None else []
    lines, tally = JsonLines(), Tally()
    with contextlib.ExitStack() as stack:
        ci = stack.enter_context(contextlib.closing(
            _open_or_create(db)))
        registry = ConceptRegistry(ci)
        acks = Acknowledgements(lines.item, ci.commit, every=256, seconds=5.0)

        def report(source: str, concept: Any, exc: TracemarkError | None) -> None:
            if exc is None:
                tally.ok += 1
                acks.wait({"id": concept.id, "concept": concept.to_dict(), "source": source})
            else:  # nothing of the item is pending: printed now
                tally.failed += 1
                row = {"id": None, "concept": None, "source": source,
                       "error": error_dict(exc, source)}
                note(f"failed {source}: {exc.message}")
                lines.item(row)

        if from_file is None:
            load = source_for(formats)
            try:
                ids = []
                for ref in references:
                    ids.append(ci.add(load(ref), source=str(ref)).id)
                concept = registry.add(Concept(
                    name=name, kind=kind, owner=owner, aliases=aliases, traits=traits,
                    generic=generic, references=tuple(ids)), replace=replace)
                report("--name", concept, None)
            except TracemarkError as exc:
                ci.rollback()  # the reference images registered for it too
                report("--name", None, exc)
        for source, item in items:
            try:
                if isinstance(item, TracemarkError):
                    raise item
                report(source, registry.add(Concept.from_dict(item), replace=replace), None)
            except TracemarkError as exc:
                report(source, None, exc)
            acks.tick()
        acks.flush()
        total = len(registry)
    note(f"{tally.ok} added, {tally.failed} failed; {db} holds {total} concepts")
    tally.finish()


@concepts_group.command("list")
@_db_option
def concepts_list(db: Path) -> None:
    """Print the concepts as JSON lines, by id: id, name, kind, owner, aliases, traits,
    generic, references."""
    from tracemark.guard import ConceptRegistry

    with contextlib.closing(_open(db, read_only=True)) as ci:
        for concept in ConceptRegistry(ci).list():
            click.echo(dumps(concept.to_dict()))


@concepts_group.command("remove")
@_db_option
@click.argument("ids", nargs=-1, required=True)
def concepts_remove(db: Path, ids: tuple[str, ...]) -> None:
    """Remove the concepts with the given IDS (their reference images stay registered).

    Prints one JSON line per id: {"id", "removed", "error"} (an unknown id is an error),
    once the removal is committed.
    """
    from tracemark.errors import UnknownConceptError
    from tracemark.guard import ConceptRegistry

    lines, tally = JsonLines(), Tally()
    with _open(db, read_only=False) as ci:
        registry = ConceptRegistry(ci)
        acks = Acknowledgements(lines.item, ci.commit, every=256, seconds=5.0)
        for cid in ids:
            try:
                registry.remove(cid)
                tally.ok += 1
                acks.wait({"id": cid, "removed": True})
            except UnknownConceptError as exc:
                tally.failed += 1
                acks.wait({"id": cid, "removed": False, "error": error_dict(exc, cid)})
            acks.tick()
        acks.flush()
    note(f"{tally.ok} removed, {tally.failed} unknown ids")
    tally.finish()


guard_group.add_command(guard_image_command)


def _matchers_option(f: Any) -> Any:
    return click.option(
        "--matchers", default=None, metavar="NAMES",
        help="Prompt matchers, comma-separated: lexical, or lexical,semantic (the semantic "
             "one needs the guard extra) [default: every installed one].")(f)


def _matcher_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise click.BadParameter("give matcher names, comma-separated, each once",
                                 param_hint="--matchers")
    return names


def _request_lines(path: Path) -> Any:
    """``(source, request or the error)`` of each non-blank line of the JSON Lines file
    ``path`` (:func:`tracemark.guard.request.request_of`), read a line at a time; a line
    that is not UTF-8, not JSON or longer than :data:`MAX_REQUEST_LINE` is an item with its
    error."""
    from tracemark.errors import GuardInputError, TracemarkError
    from tracemark.guard.request import request_of

    try:
        fh = path.open("rb")
    except OSError as exc:
        raise fail(f"cannot read --from {path}: {exc.strerror or exc}") from exc
    with fh:
        n = 0
        while True:
            line = fh.readline(MAX_REQUEST_LINE + 1)
            if not line:
                return
            n += 1
            source = f"{path}:{n}"
            if len(line) > MAX_REQUEST_LINE and not line.endswith(b"\n"):
                while (rest := fh.readline(1024 * 1024)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the line
                yield source, GuardInputError(f"the line is longer than {MAX_REQUEST_LINE} "
                                              "bytes", source=source)
                continue
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                yield source, GuardInputError("the line is not UTF-8", source=source)
                continue
            try:
                data = json.loads(text)
            except ValueError as exc:
                yield source, GuardInputError(f"the line is not JSON ({exc})", source=source)
                continue
            try:
                yield source, request_of(data)
            except TracemarkError as exc:
                yield source, exc


@guard_group.command("prompt")
@_db_option
@click.argument("prompts", nargs=-1)
@click.option("--negative", "negatives", multiple=True, metavar="TEXT",
              help="A negative prompt of the request (repeatable).")
@click.option("--from", "from_file", type=click.Path(path_type=Path), default=None,
              help='Screen the requests of this JSON Lines file, one a line: {"prompts": '
              '[TEXT or {"text", "weight", "negative"}, ...], "negative": [TEXT, ...], "id": '
              'ID} or {"prompt": TEXT}.')
@opts.alpha_option(default=None, help="False-positive rate of a decision on benign prompts "
                   "[default: 0.01].")
@_matchers_option
def guard_prompt(db: Path, prompts: tuple[str, ...], negatives: tuple[str, ...],
                 from_file: Path | None, alpha: float | None, matchers: str | None) -> None:
    """Screen prompts against the protected concepts of --store before a generator draws.

    PROMPTS (with --negative) form ONE request, screened together, so that a concept split
    across them is caught; --from FILE screens one request a line. Generator syntax is
    read (weights, AND, ::, --no). One JSON line per request: source (args or FILE:LINE),
    id, decision (allow, rewrite, block), flagged, alpha, matches (concept, score,
    p_value, flagged, evidence), rewritten, negative, matchers, seconds, error. A bad line
    of FILE (not UTF-8, not JSON, an unknown key, an empty or overlong prompt) is
    reported and the rest are screened.

    Uses the calibration `tracemark guard calibrate` stored with the collection; without
    one that fits, calibrates in memory first (says so on stderr; seconds with the
    semantic matcher). Exit codes: 0 every request was flagged; 10 none was; 11 some
    were; 1 some requests failed; 2 usage error; 3 no request could be screened.
    """
    from tracemark.errors import TracemarkError
    from tracemark.guard import ConceptRegistry

    if bool(prompts) == (from_file is not None):
        raise click.UsageError("give either PROMPTS or --from FILE")
    if from_file is not None and negatives:
        raise click.UsageError("--negative goes with PROMPTS; in --from FILE, give each "
                               "request's \"negative\"")
    names = _matcher_names(matchers)
    with contextlib.closing(_open(db, read_only=True)) as ci:
        registry = ConceptRegistry(ci)
        try:
            guard = registry.guard(names, alpha=alpha)
        except TracemarkError as exc:  # unknown matcher, a missing extra
            raise fail(f"--matchers: {exc.message}") from exc
        if not guard.concepts:
            note(f"{db} has no protected concepts: every request is allowed")
        elif guard.calibration is None:
            why = "none is stored" if registry.calibration() is None else \
                "the stored one is for other concepts or matchers"
            note(f"calibrating the prompt screen in memory ({why}; `tracemark guard "
                 "calibrate` keeps one)")
    if from_file is None:
        from tracemark.guard.request import prompts_of

        try:
            one: Any = (prompts_of(list(prompts), list(negatives)), None)
        except TracemarkError as exc:  # the request's error line
            one = exc
        requests: Any = [("args", one)]
    else:
        requests = _request_lines(from_file)
    lines, tally = JsonLines(), Tally()
    decisions = {"allow": 0, "rewrite": 0, "block": 0}
    for source, request in requests:
        rid = None
        try:
            if isinstance(request, TracemarkError):
                raise request
            ps, rid = request
            res = guard.screen(ps, alpha=alpha)
        except TracemarkError as exc:
            tally.failed += 1
            note(f"failed {source}: {exc.message}")
            lines.item({"source": source, "id": rid, "decision": None,
                        "error": error_dict(exc, source)})
            continue
        tally.ok += 1
        tally.found += res.flagged
        decisions[res.decision] += 1
        lines.item({"source": source, "id": rid, **res.to_dict(), "error": None})
    note(f"{tally.ok} requests screened: {decisions['block']} blocked, {decisions['rewrite']} "
         f"rewritten, {decisions['allow']} allowed; {tally.failed} failed")
    tally.finish(finding=True)


@guard_group.command("calibrate")
@_db_option
@_matchers_option
def guard_calibrate(db: Path, matchers: str | None) -> None:
    """Calibrate the prompt screen of --store's concepts on benign prompts and keep it.

    Scores the generated benign background (everyday prompts and one-trait near-misses of
    the concepts) with each matcher and stores the calibration with the collection, so
    that `tracemark guard prompt` and the service need not make one (seconds with the
    semantic matcher). Run it again after adding or removing concepts. Prints one JSON
    line: concepts, matchers, size (benign requests), stamp (of the concepts), seconds.
    """
    import time

    from tracemark.errors import TracemarkError
    from tracemark.guard import ConceptRegistry

    names = _matcher_names(matchers)
    t0 = time.perf_counter()
    with contextlib.closing(_open(db, read_only=False)) as ci:
        registry = ConceptRegistry(ci)
        try:
            guard = registry.calibrate(names)
        except TracemarkError as exc:
            raise fail(f"cannot calibrate: {exc.message}") from exc
        ci.commit()
    cal = guard.calibration  # made by calibrate()
    click.echo(dumps({"concepts": len(guard.concepts), "matchers": list(guard.matchers or []),
                      "size": cal.size if cal else 0, "stamp": cal.stamp if cal else None,
                      "seconds": round(time.perf_counter() - t0, 3)}))
    note(f"calibrated {len(guard.concepts)} concepts on {cal.size if cal else 0} benign "
         f"requests ({', '.join(guard.matchers or [])})")

"""``tracemark guard``: the generation guard's commands.

``tracemark guard concepts add|list|remove`` manage the protected concepts of a
copy-detection collection (:class:`tracemark.guard.ConceptRegistry`), kept with the
collection's metadata: ``--store`` is the index directory of ``tracemark index`` (and takes
its ``--database-url`` and ``--vectors``).
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

__all__ = ["guard_group"]

_KINDS = ("character", "artwork", "style", "brand", "person")
""":class:`tracemark.guard.ConceptKind`'s values (here as text: ``--help`` stays light)."""
MAX_CONCEPT_FILE = 64 * 1024 * 1024
"""The largest ``--from`` file read, bytes."""


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
            _open(db, read_only=False) if from_file is not None else _open_or_create(db)))
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

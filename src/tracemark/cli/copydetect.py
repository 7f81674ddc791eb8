"""``tracemark index|search|scan|dedup``: register works, find edited copies, audit generated
images, group near duplicates.

* ``index add|remove|list|stats|calibrate`` manage a persistent
  :class:`~tracemark.copydetect.CopyIndex` (the directory given with ``--store``);
* ``search`` looks for each query image among the references;
* ``scan`` audits generated images for replication of training images, against an index or
  a folder of training images (indexed on the fly);
* ``dedup`` groups the near duplicates (edited copies) and exact duplicates of a folder, or
  of new images within a collection (:mod:`tracemark.copydetect.dedup`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tracemark.cli import _options as opts
from tracemark.cli._common import (
    Acknowledgements,
    JsonLines,
    Progress,
    Tally,
    batch_executor,
    collect_inputs,
    collect_sources,
    dumps,
    error_dict,
    fail,
    loaded,
    note,
    report_skipped,
    source_for,
)
from tracemark.errors import ConfigError, TracemarkError

if TYPE_CHECKING:
    from tracemark.copydetect import CopyIndex, MatchConfig

__all__ = ["CALIBRATION_ALPHAS", "dedup_command", "index_group", "scan_command", "search_command"]

CALIBRATION_ALPHAS = (1e-2, 1e-3, 1e-4)
"""False-positive rates whose raw-score thresholds ``index calibrate`` reports."""

_SQLITE_NAME = "index.sqlite"


def _config(alpha: float | None = None, min_inliers: int | None = None) -> MatchConfig:
    from tracemark.copydetect import MatchConfig

    changes: dict[str, Any] = {}
    if alpha is not None:
        changes["alpha"] = alpha
    if min_inliers is not None:
        changes["min_inliers"] = min_inliers
    try:
        return dataclasses.replace(MatchConfig(), **changes)
    except ConfigError as exc:
        raise fail(exc.message) from exc


_DATABASE_URL: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tracemark_index_database_url", default=None)
"""The ``--database-url`` of the running index command (set by :func:`_db_option`)."""


_VECTORS: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tracemark_index_vectors", default=None)
"""The ``--vectors`` of the running index command (set by :func:`_db_option`)."""


def _db_kwargs(db: Path, *, create: bool) -> dict[str, Any]:
    vectors = _VECTORS.get()
    out: dict[str, Any] = {} if vectors is None else {"vectors": vectors}
    url = _DATABASE_URL.get()
    if url is None:
        return out
    if not create:
        return {**out, "database_url": url}
    from tracemark._db import schema_name

    try:
        return {**out, "database_url": url,
                "schema": schema_name("tm_ix", db.resolve().name)}
    except ConfigError as exc:
        raise fail(f"--store {db}: {exc.message} (the schema is named after the "
                   "index directory)") from exc


def _open(db: Path, *, read_only: bool, config: MatchConfig | None = None) -> CopyIndex:
    """Open an existing index; a missing or foreign ``db`` is a usage error."""
    from tracemark.copydetect import CopyIndex

    if not db.exists():
        raise fail(f"no index at {db}: create one with `tracemark index add IMAGES... "
                   f"--store {db}`")
    try:
        return CopyIndex.open(db, read_only=read_only, config=config,
                              **_db_kwargs(db, create=False))
    except TracemarkError as exc:
        raise fail(f"cannot open the index {db}: {exc.message}") from exc


def _open_or_create(db: Path, config: MatchConfig | None = None, *,
                    global_index: str = "flat") -> CopyIndex:
    """Open ``db``, or create an index there when it is missing or an empty directory
    (``global_index``: how a new index holds its VLAD rows, see ``CopyIndex.create``)."""
    from tracemark.copydetect import CopyIndex

    if db.exists() and not db.is_dir():
        raise fail(f"--store {db} is a file, not an index directory")
    try:
        if db.exists() and any(db.iterdir()):
            return CopyIndex.open(db, config=config, **_db_kwargs(db, create=False))
        return CopyIndex.create(db, config, global_index=global_index,
                                **_db_kwargs(db, create=True))
    except (TracemarkError, OSError) as exc:
        message = exc.message if isinstance(exc, TracemarkError) else str(exc)
        raise fail(f"cannot open or create the index {db}: {message}") from exc


def _decision_rule(ci: CopyIndex) -> dict[str, Any]:
    """How ``decision`` is taken (:meth:`tracemark.copydetect.DecisionRule.describe`)."""
    return ci.decision_rule()


def _describe_rule(rule: dict[str, Any]) -> str:
    from tracemark.copydetect import DecisionRule

    return DecisionRule.explain(rule)


def _add_batches(
    ci: CopyIndex,
    paths: Sequence[Path],
    meta: dict[str, str | None],
    *,
    batch_size: int,
    commit_interval: float,
    on_item: Callable[[dict[str, Any]], None],
    bar: Progress,
    formats: Any = "default",
) -> tuple[int, int, int]:
    """Add ``paths`` in batches; call ``on_item`` with one row per path; (added, duplicates,
    failed).

    Each batch is one ``add_many`` call; the index is committed after a batch when
    ``commit_interval`` seconds have passed since the last commit (0: after every batch),
    and at the end. Rows of added images are handed to ``on_item`` only after the commit
    that made them durable (failed rows at once).
    """
    added = duplicates = failed = 0
    acks = Acknowledgements(on_item, ci.commit, seconds=commit_interval)
    for start in range(0, len(paths), batch_size):
        batch = paths[start : start + batch_size]
        try:
            results: list[Any] = _add_many(ci, batch, meta, formats)
        except TracemarkError as exc:  # the store refused the whole batch
            results = [exc] * len(batch)
        n_bad = 0
        for path, res in zip(batch, results, strict=True):
            row: dict[str, Any] = {"source": str(path), "id": None, "duplicate_of": None,
                                   "error": None}
            if isinstance(res, TracemarkError):
                failed += 1
                n_bad += 1
                row["error"] = error_dict(res, path)
                on_item(row)  # nothing was written for it
            else:
                row["id"], row["duplicate_of"] = res.id, res.duplicate_of
                if res.duplicate_of is None:
                    added += 1
                else:
                    duplicates += 1
                acks.wait(row)
        bar.update(len(batch), failed=n_bad)
        acks.tick()
    acks.flush()
    return added, duplicates, failed


def _add_many(ci: CopyIndex, paths: Sequence[Path], meta: dict[str, str | None],
              formats: Any) -> list[Any]:
    """``ci.add_many`` of ``paths`` read with ``--formats``: one result or typed error per
    path, in order."""
    load = source_for(formats)
    results: list[Any] = [None] * len(paths)
    items, slots = [], []
    for i, p in enumerate(paths):
        try:
            items.append((load(p), {**meta, "source": str(p)}))
            slots.append(i)
        except TracemarkError as exc:
            results[i] = exc
    for i, res in zip(slots, ci.add_many(items), strict=True):
        results[i] = res
    return results


def _search_one(ci: CopyIndex, path: Path, k: int, formats: Any) -> Any:
    """``ci.search_many`` of one query read with ``--formats`` (its QueryResult)."""
    from tracemark.copydetect.index import QueryResult

    try:
        image = source_for(formats)(path)
    except TracemarkError as exc:
        return QueryResult(str(path), error=exc.to_dict())
    res = ci.search_many([image], k=k)[0]
    res.query = str(path)
    if res.error is not None and res.error.get("source") in (None, "<image>"):
        res.error["source"] = str(path)
    return res


def _query_results(ci: CopyIndex, paths: Sequence[Any], k: int, formats: Any,
                   ray_address: str | None, stack: contextlib.ExitStack) -> Iterator[Any]:
    """The QueryResult of every query: searched one by one here, or (``--ray``) described
    as Ray tasks and searched here, in completion order."""
    if ray_address is None:
        return (_search_one(ci, Path(p), k, formats) for p in paths)
    from tracemark.batch import search_sources

    executor = stack.enter_context(batch_executor(ray_address))
    return search_sources(ci, [str(p) for p in paths], executor, k=k, formats=formats)


def _db_option(f: Any) -> Any:
    """``--store DIR`` (the index directory) and ``--database-url URL`` (metadata in
    PostgreSQL: the schema is named after the index directory, FAISS files stay in it);
    passes ``db: Path``."""

    @functools.wraps(f)
    def with_url(*args: Any, store: opts.StoreLocation, database_url: str | None = None,
                 vectors: str | None = None, **kwargs: Any) -> Any:
        token = _DATABASE_URL.set(database_url)
        token_v = _VECTORS.set(vectors)
        try:
            return f(*args, db=store.path, **kwargs)
        finally:
            _DATABASE_URL.reset(token)
            _VECTORS.reset(token_v)

    with_url = opts.database_url_option(
        "Keep the index's metadata and vectors in this database (PostgreSQL) instead of "
        "index.sqlite.")(with_url)
    with_url = opts.vectors_option(
        "Vector store of the index: milvus://HOST:PORT (a new index records it; default "
        "FAISS files in the index directory).")(with_url)
    return opts.store_option(what="index directory (a copy-detection collection)")(with_url)


def _k_option(default: int, help: str) -> Callable[[Any], Any]:
    return click.option("-k", "--k", "k", type=click.IntRange(1, 1000), default=default,
                        show_default=True, help=help)


def _decision_options(f: Any) -> Any:
    f = click.option(
        "--min-inliers",
        type=click.IntRange(1, 1000),
        default=None,
        help="Decision threshold on inliers for an uncalibrated index [default: 12].",
    )(f)
    return opts.alpha_option(
        default=None, help="False-positive rate of a copy decision on a calibrated index "
        "(p-value threshold) [default: 0.001].")(f)


# --- index ------------------------------------------------------------------------------


@click.group("index")
def index_group() -> None:
    """Manage a collection of protected works (a copy-detection index)."""


@index_group.command("add")
@_db_option
@click.option("--owner", default=None, help="Owner recorded with every image of this call.")
@click.option("--license", "license_", default=None, help="License recorded with every image.")
@click.option("--notes", default=None, help="Free text recorded with every image.")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Images added per transaction.",
)
@click.option(
    "--commit-every",
    "commit_interval",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Commit after a batch when this many seconds passed since the last commit "
    "(0: after every batch); a crash loses at most the uncommitted batches.",
)
@click.option(
    "--global-index",
    type=click.Choice(["flat", "hnsw", "ivf", "auto", "none"]),
    default="flat",
    show_default=True,
    help="When the index is created: how its VLAD rows are held. flat: searched exactly in "
    "memory (6 KB a reference); ivf: IVF-PQ once 10,000 rows can train it (~0.3 KB); auto: "
    "flat up to 200,000 rows, then IVF-PQ; none: kept on disk only, for millions of "
    "references (retrieval by the inverted file and PDQ).",
)
@opts.formats_option
@opts.ray_option
@click.argument("images", nargs=-1, required=True)
def index_add(
    db: Path,
    owner: str | None,
    license_: str | None,
    notes: str | None,
    batch_size: int,
    commit_interval: float,
    global_index: str,
    formats: Any,
    ray_address: str | None,
    images: tuple[str, ...],
) -> None:
    """Register IMAGES (files or folders, recursively) in the index --store, created if
    needed.

    Prints one JSON line per image: source (the path as given, also stored as the
    reference's source), id, duplicate_of (the id of the reference with the same pixels,
    when nothing was added) and error. A duplicate is not an error. Batches are committed
    as they go (--commit-every) and an image's line is printed only once its batch is
    committed; an interrupted run keeps the batches finished before it.

    With --ray, images are decoded and described as Ray tasks and this process adds them
    in batches; lines come in completion order; IMAGES may be fsspec URLs; a re-run
    decodes an image already registered (same pixels) but does not describe it again: its
    line names the reference (id and duplicate_of).
    """
    lines = JsonLines()
    if ray_address is None:
        found = collect_inputs(images, lines, formats=formats)
    else:
        found = collect_sources(images, lines, formats=formats)
    paths = found.paths
    meta = {"owner": owner, "license": license_, "notes": notes}
    with contextlib.ExitStack() as stack:
        # the cluster first: a bad --ray address creates no index
        executor = None if ray_address is None else stack.enter_context(
            batch_executor(ray_address))
        ci = stack.enter_context(contextlib.closing(_open_or_create(db,
                                                                    global_index=global_index)))
        bar = stack.enter_context(Progress(len(paths), "index add"))
        lines.progress = bar

        def emit(row: dict[str, Any]) -> None:
            if row["error"] is not None:
                note(f"failed {row['source']}: {row['error']['message']}", bar)
            lines.item(row)

        if ray_address is None:
            added, duplicates, failed = _add_batches(
                ci, paths, meta, batch_size=batch_size, commit_interval=commit_interval,
                on_item=emit, bar=bar, formats=formats)
        else:
            from tracemark.batch import ingest

            counts = ingest(ci, [str(p) for p in paths], executor, on_item=emit, meta=meta,
                            batch_size=batch_size, commit_interval=commit_interval,
                            formats=formats, on_done=lambda bad: bar.update(failed=int(bad)))
            added, failed = counts.added, counts.failed
            duplicates = counts.duplicates + counts.registered
        total = len(ci)
    note(f"{added} added, {duplicates} duplicates, {failed} failed, {len(found.skipped)} "
         f"skipped; {db} holds {total} references")
    Tally(ok=added + duplicates, failed=failed).finish()


@index_group.command("remove")
@_db_option
@click.argument("ids", nargs=-1, type=int, required=True)
def index_remove(db: Path, ids: tuple[int, ...]) -> None:
    """Remove the references with the given IDS.

    Prints one JSON line per id: {"id", "removed", "error"} (an unknown id is an error).
    Removals are committed in batches (every 256 ids or 5 seconds) and an id's line is
    printed only once its removal is committed.
    """
    lines = JsonLines()
    tally = Tally()
    with _open(db, read_only=False) as ci:
        # the database commits make the removals durable; the FAISS files are rewritten
        # when the index closes (and rebuilt from the database after a crash)
        acks = Acknowledgements(lines.item, lambda: ci.commit(write_vectors=False),
                                every=256, seconds=5.0)
        for ref_id in ids:
            ok = ci.remove(ref_id)
            tally.ok += ok
            tally.failed += not ok
            acks.wait({"id": ref_id, "removed": ok, "error": None if ok else {
                "type": "ReferenceNotFoundError", "message": f"no reference {ref_id}",
                "source": str(ref_id)}})
            acks.tick()
        acks.flush()
    note(f"{tally.ok} removed, {tally.failed} unknown ids")
    tally.finish()


@index_group.command("list")
@_db_option
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=None,
    help="At most this many references [default: all].",
)
@click.option(
    "--offset", type=click.IntRange(0), default=0, show_default=True, help="Skip this many first."
)
def index_list(db: Path, limit: int | None, offset: int) -> None:
    """Print the references as JSON lines, in id order: id, content_hash, source, owner,
    license, notes, added_at."""
    page = 1000
    with contextlib.closing(_open(db, read_only=True)) as ci:
        left = limit
        while left is None or left > 0:
            n = page if left is None else min(page, left)
            refs = ci.index.list(limit=n, offset=offset)
            for ref in refs:
                click.echo(dumps(dataclasses.asdict(ref)))
            offset += len(refs)
            if left is not None:
                left -= len(refs)
            if len(refs) < n:
                break


@index_group.command("stats")
@_db_option
def index_stats(db: Path) -> None:
    """Print one JSON object: reference count, vector sets, sizes, calibration state."""
    with contextlib.closing(_open(db, read_only=True)) as ci:
        click.echo(dumps(ci.stats()))


@index_group.command("calibrate")
@_db_option
@opts.formats_option
@click.argument("background", nargs=-1, required=True)
def index_calibrate(db: Path, formats: Any, background: tuple[str, ...]) -> None:
    """Learn the score distribution of non-copies from BACKGROUND images (files or folders).

    BACKGROUND must be images that are NOT copies of anything in the collection, like the
    queries the index will see (at least 4). N images measure p-values down to about 2/N:
    below that the p-values, and the threshold at the decision's alpha, are extrapolated
    from a fitted tail, and the command says so (a warning, and "warning" in the JSON);
    2,000 images measure the default alpha 1e-3 (smallest_supported_p_value and
    recommended_background in the JSON).
    Images whose pixels are a registered reference are left out and counted as
    in_collection. The images are decoded into memory first. Prints one JSON object: the
    calibration summary (background_rows, null_samples, null_quantiles), thresholds (the
    raw score at which the p-value reaches each alpha), used, in_collection and failed.

    Exit codes: 0 calibrated; 1 calibrated, some images failed; 2 usage error (fewer than
    4 usable images); 3 no image could be read.
    """
    from tracemark.copydetect import content_hash
    from tracemark.imageio import load_image

    found = collect_inputs(background, JsonLines(), what="background", formats=formats)
    paths = found.paths
    with _open(db, read_only=False) as ci:
        images = []
        failed = in_collection = 0
        with Progress(len(paths), "load background") as bar:
            for path in paths:
                try:
                    rgb = load_image(path, formats=formats)
                except TracemarkError as exc:
                    failed += 1
                    note(f"failed {path}: {exc.message}", bar)
                    bar.update(failed=1)
                    continue
                bar.update()
                ref_id = ci.index.find(content_hash(rgb))
                if ref_id is not None:
                    in_collection += 1
                    note(f"left out {path}: it is reference {ref_id} of the collection", bar)
                    continue
                images.append(rgb)
        if failed == len(paths):
            note("no background image could be read")
            Tally(ok=0, failed=failed).finish()
        note(f"calibrating: searching the collection with {len(images)} background images...")
        try:
            summary = ci.calibrate(images)
        except ConfigError as exc:
            raise fail(f"{exc.message} (got {len(images)} usable)") from exc
        thresholds = {f"{a:g}": ci.threshold_for_alpha(a) for a in CALIBRATION_ALPHAS}
        rule = _decision_rule(ci)
    JsonLines().item({**summary, "thresholds": thresholds, "used": len(images),
                      "in_collection": in_collection, "failed": failed,
                      "skipped_files": len(found.skipped)})
    note(f"calibrated on {len(images)} images; {_describe_rule(rule)}")
    if "warning" in summary:
        note(f"warning: {summary['warning']}")
    Tally(ok=len(images), failed=failed).finish()


# --- search -----------------------------------------------------------------------------


@click.command("search")
@_db_option
@_k_option(5, "Matches kept per query, best first.")
@click.option("--all", "show_all", is_flag=True, help="List the top k whatever their decision.")
@_decision_options
@opts.formats_option
@opts.ray_option
@click.argument("queries", nargs=-1, required=True)
def search_command(
    db: Path,
    k: int,
    show_all: bool,
    alpha: float | None,
    min_inliers: int | None,
    formats: Any,
    ray_address: str | None,
    queries: tuple[str, ...],
) -> None:
    """Look for each QUERY image (files or folders) among the references of --store.

    Prints one JSON line per query: query, matches (best first: ref_id, source, score,
    p_value, raw_score, inliers, similarity, pdq_distance, region, query_region, flipped,
    decision), error and seconds. By default only matches whose decision is true are
    listed; --all lists the top k.

    Exit codes: 0 every query was searched; 1 some queries failed (reported); 2 usage
    error (e.g. no index at --db); 3 no query could be searched.

    With --ray, queries are decoded and described as Ray tasks and searched here; lines
    come in completion order; QUERIES may be fsspec URLs.
    """
    lines = JsonLines()
    collect = collect_inputs if ray_address is None else collect_sources
    found = collect(queries, lines, what="query", key="query", formats=formats)
    paths = found.paths
    tally = Tally(skipped=len(found.skipped))
    with _open(db, read_only=True, config=_config(alpha, min_inliers)) as ci, \
            contextlib.ExitStack() as stack:
        rule = _decision_rule(ci)
        if len(ci) == 0:
            note(f"the index {db} is empty")
        results = _query_results(ci, paths, k, formats, ray_address, stack)
        with Progress(len(paths), "search") as bar:
            lines.progress = bar
            for res in results:
                if res.error is not None:
                    tally.failed += 1
                    note(f"failed {res.query}: {res.error['message']}", bar)
                else:
                    tally.ok += 1
                    tally.found += any(m.decision for m in res.matches)
                if not show_all:
                    res.matches = [m for m in res.matches if m.decision]
                lines.item(res.to_dict())
                bar.update(failed=int(res.error is not None))
    note(f"{tally.ok} queries searched, {tally.found} with a match, {tally.failed} failed, "
         f"{tally.skipped} skipped; {_describe_rule(rule)}")
    tally.finish(finding=True)


# --- scan -------------------------------------------------------------------------------


@contextlib.contextmanager
def _scan_index(
    against: Path, db_out: Path | None, config: MatchConfig, background: tuple[str, ...] = (),
    formats: Any = "default", executor: Any = None,
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The index to scan against, and facts about it for the summary."""
    from tracemark.copydetect import CopyIndex

    if not against.exists():
        raise fail(f"--against {against} does not exist")
    if (against / _SQLITE_NAME).is_file():
        if db_out is not None:
            raise fail("--db-out applies when --against is a folder of training images")
        if background:
            raise fail(
                "--background applies when --against is a folder of training images "
                "(calibrate an existing index with 'tracemark index calibrate')"
            )
        with contextlib.closing(_open(against, read_only=True, config=config)) as ci:
            yield ci, {"index": str(against), "training_failed": 0}
        return
    if not against.is_dir():
        raise fail(
            f"--against {against} is neither an index nor a folder of training images"
        )
    training = collect_inputs([str(against)], None, what="training", formats=formats).paths
    with contextlib.ExitStack() as stack:
        if db_out is None:
            db = (
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tracemark-scan-")))
                / "index"
            )
        else:
            db = db_out
            if db.exists() and not db.is_dir():
                raise fail(f"--db-out {db} is a file, not an index directory")
        try:
            ci = CopyIndex.open_or_create(db, config)
        except TracemarkError as exc:
            raise fail(f"cannot open or create the index {db}: {exc.message}") from exc
        stack.callback(ci.close)
        with Progress(len(training), "index training") as bar:

            def report(row: dict[str, Any]) -> None:
                if row["error"] is not None:
                    note(f"training image skipped, {row['source']}: "
                         f"{row['error']['message']}", bar)

            if executor is None:
                added, duplicates, failed = _add_batches(
                    ci, training, {}, batch_size=64, commit_interval=30.0, on_item=report,
                    bar=bar, formats=formats)
            else:
                from tracemark.batch import ingest

                counts = ingest(ci, [str(p) for p in training], executor, on_item=report,
                                batch_size=64, commit_interval=30.0, formats=formats,
                                on_done=lambda bad: bar.update(failed=int(bad)))
                added, failed = counts.added, counts.failed
                duplicates = counts.duplicates + counts.registered
        if added + duplicates == 0:
            note(f"no training image of {against} could be indexed")
            Tally(ok=0, failed=failed).finish()
        click.echo(f"indexed {added + duplicates} training images ({failed} failed)", err=True)
        if background:
            bg = collect_inputs(background, JsonLines(), what="background",
                                formats=formats).paths
            try:
                ci.calibrate(loaded(bg, formats))
            except ConfigError as exc:
                raise fail(f"--background: {exc.message}") from exc
            ci.commit()
            click.echo(f"calibrated on {len(bg)} background images", err=True)
        yield ci, {"index": None if db_out is None else str(db_out), "training_failed": failed}


@click.command("scan")
@click.option(
    "--against",
    type=click.Path(path_type=Path),
    required=True,
    help="An index directory, or a folder of training images to index first.",
)
@_k_option(3, "Nearest training images listed per generated image.")
@click.option(
    "--db-out",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the index built from a training folder here (default: a temporary directory).",
)
@click.option(
    "--background",
    multiple=True,
    help="Images (files or folders, repeatable) known NOT to be in the training set: the "
    "index built from --against is calibrated on them, so decisions use a p-value.",
)
@_decision_options
@opts.formats_option
@opts.ray_option
@click.argument("generated", nargs=-1, required=True)
def scan_command(
    against: Path,
    k: int,
    db_out: Path | None,
    background: tuple[str, ...],
    alpha: float | None,
    min_inliers: int | None,
    formats: Any,
    ray_address: str | None,
    generated: tuple[str, ...],
) -> None:
    """Audit GENERATED images (files or folders) for copies of training images.

    --against is an index directory (used read-only) or a folder of training images,
    indexed first (into --db-out when given; an index already there is reused and the
    folder's images are added to it). Prints one JSON line per generated image: query,
    matches (the k nearest training images, each with its decision), replicated (some
    match has decision true), error and seconds; then one summary line {"summary":
    {generated, scanned, replicated, replication_rate, failed, calibrated, threshold,
    references, index, training_failed}}, where replication_rate = replicated / scanned
    (the images that could be read) and threshold says how decisions were taken (an
    uncalibrated index decides by inlier count).

    Exit codes: 0 every generated image scanned; 1 some failed (reported); 2 usage error;
    3 none could be scanned, or no training image could be indexed.

    With --ray, the training folder (when indexed here) and the generated images are
    decoded and described as Ray tasks; lines come in completion order; GENERATED may be
    fsspec URLs.
    """
    lines = JsonLines()
    collect = collect_inputs if ray_address is None else collect_sources
    found = collect(generated, lines, what="generated", key="query", formats=formats)
    paths = found.paths
    config = _config(alpha, min_inliers)
    tally = Tally(skipped=len(found.skipped))
    with contextlib.ExitStack() as stack:
        executor = (None if ray_address is None
                    else stack.enter_context(batch_executor(ray_address)))
        ci, facts = stack.enter_context(
            _scan_index(against, db_out, config, background, formats, executor))
        rule = _decision_rule(ci)
        references = len(ci)
        if executor is None:
            results: Iterator[Any] = (_search_one(ci, p, k, formats) for p in paths)
        else:
            from tracemark.batch import search_sources

            results = search_sources(ci, [str(p) for p in paths], executor, k=k,
                                     formats=formats)
        with Progress(len(paths), "scan") as bar:
            lines.progress = bar
            for res in results:
                row = res.to_dict()
                if res.error is not None:
                    tally.failed += 1
                    row["replicated"] = None
                    note(f"failed {res.query}: {res.error['message']}", bar)
                else:
                    tally.ok += 1
                    row["replicated"] = any(m.decision for m in res.matches)
                    tally.found += row["replicated"]
                lines.item(row)
                bar.update(failed=int(res.error is not None))
    n_ok, n_bad, n_replicated = tally.ok, tally.failed, tally.found
    summary = {
        "generated": len(paths),
        "scanned": n_ok,
        "replicated": n_replicated,
        "replication_rate": n_replicated / n_ok if n_ok else None,
        "failed": n_bad,
        "calibrated": rule["calibrated"],
        "threshold": rule,
        "references": references,
        **facts,
    }
    lines.record({"summary": summary, "error": None})
    note(f"{n_replicated} of {n_ok} generated images replicate a training image; {n_bad} "
         f"failed, {tally.skipped} skipped; {_describe_rule(rule)}")
    tally.finish(finding=True)


# --- dedup ------------------------------------------------------------------------------


@contextlib.contextmanager
def _dedup_output(out: Path | None, force: bool, inputs: Sequence[Path]) -> Iterator[JsonLines]:
    """The JSON Lines of ``dedup``: stdout, or ``out`` written atomically when the command
    ends (a temporary file beside it, renamed into place; removed when the command fails).
    An existing ``out`` is refused unless ``force``; an input never, even with ``force``."""
    if out is None:
        yield JsonLines()
        return
    real = os.path.realpath(out).casefold()
    if any(os.path.realpath(p).casefold() == real for p in inputs):
        raise fail(f"--out {out} is an input: tracemark never writes over an input")
    if out.is_dir():
        raise fail(f"--out {out} is a folder: name the JSON Lines file to write")
    if (out.exists() or out.is_symlink()) and not force:
        raise fail(f"{out} exists: give --force to overwrite it, or choose another --out")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent or ".")
    except OSError as exc:
        raise fail(f"cannot write --out {out}: {exc.strerror or exc}") from exc
    ok = False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield JsonLines(stream=fh)
        if out.is_symlink():  # replace the link itself, never write through it
            out.unlink()
        os.replace(tmp, out)
        ok = True
    finally:
        if not ok:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@click.command("dedup")
@opts.store_option(what="index directory (a copy-detection collection) the images are "
                   "checked against and, with --add, registered in (created if needed); "
                   "default: a temporary index, for a folder", optional=True)
@opts.database_url_option("Keep the --store index's metadata and vectors in this database "
                          "(PostgreSQL) instead of index.sqlite.")
@click.option("--add/--no-add", default=True, show_default=True,
              help="With --store: register the new images in it (a later run checks only "
              "the images registered after), or only check them against it.")
@click.option("--background", multiple=True,
              help="Images (files or folders, repeatable; at least 4) that are no copies of "
              "the inputs nor of one another: the temporary index is calibrated on them, so "
              "pairs are decided by p-value (without --store).")
@_k_option(10, "Matches kept per image searched (the index's candidates are verified).")
@_decision_options
@opts.out_option(help="Write the JSON lines to this file (atomically, at the end) instead of "
                 "stdout.", required=False)
@opts.force_option
@opts.formats_option
@click.argument("paths", nargs=-1, required=True)
def dedup_command(
    store: opts.StoreLocation | None,
    database_url: str | None,
    add: bool,
    background: tuple[str, ...],
    k: int,
    alpha: float | None,
    min_inliers: int | None,
    out: Path | None,
    force: bool,
    formats: Any,
    paths: tuple[str, ...],
) -> None:
    """Group the near duplicates (edited copies) and exact duplicates among PATHS (files or
    folders).

    Each image is searched against the images registered before it (never all pairs) and
    then registered: in --store, or in a temporary index that is removed at the end.
    Exact duplicates are found by content (the same decoded pixels); near duplicates by
    the copy-detection matcher and its decision rule (a p-value on a calibrated index,
    else an inlier count). With --store, images already registered under the same path are
    not checked again, so a run over a grown folder checks only the new images against
    everything registered; a group then lists the registered images it joins (new:
    false). The store is committed only at the end: an interrupted run registers nothing.

    Prints one JSON line per group: group (1, 2...), size, members (source, id: the
    reference id in --store or null, new), pairs (a, b, a_id, b_id, kind: exact|near,
    inliers, region: b's outline in a's pixels, query_region: a's outline in b's pixels,
    p_value, raw_score, flipped; b was searched and matched a); one line per image that
    failed (source, error) or was skipped. A summary on stderr.

    Exit codes: 0 every image is in a group; 1 some images failed (reported); 2 usage
    error; 3 no image could be read; 10 no duplicates; 11 duplicates among some images.
    """
    from tracemark.copydetect import find_duplicates

    found = collect_inputs(paths, None, report=False, formats=formats)
    inputs = found.paths
    config = dataclasses.replace(_config(alpha, min_inliers),
                                 candidates=max(k, _config().candidates))
    if store is not None and background:
        raise fail("--background calibrates the temporary index of a folder run; calibrate "
                   f"--store itself with `tracemark index calibrate BACKGROUND --store {store.path}`")
    bg_paths: list[Path] = []
    if background:
        bg_paths = collect_inputs(background, None, what="background", formats=formats).paths
        if len(bg_paths) < 4:
            raise fail(f"--background needs at least 4 images (got {len(bg_paths)})")
    token = _DATABASE_URL.set(database_url)
    tally = Tally(skipped=len(found.skipped))
    try:
        with _dedup_output(out, force, inputs) as lines, contextlib.ExitStack() as stack:
            report_skipped(found, lines)
            ci = None
            if store is not None:
                if add:
                    ci = stack.enter_context(_open_or_create(store.path, config))
                else:
                    ci = stack.enter_context(_open(store.path, read_only=True, config=config))
                if len(ci) == 0 and not add:
                    note(f"the index {store.path} is empty")
            bar = stack.enter_context(Progress(len(inputs), "dedup"))
            lines.progress = bar

            def on_item(item: Any) -> None:
                if item.error is not None:
                    note(f"failed {item.source}: {item.error['message']}", bar)
                    lines.item({"source": item.source, "error": item.error})
                bar.update(failed=int(item.error is not None))

            register_bar: Progress | None = None
            if bg_paths:
                register_bar = stack.enter_context(Progress(len(inputs), "dedup register"))

            def on_registered(item: Any) -> None:
                if register_bar is not None:
                    register_bar.update(failed=int(item.error is not None))

            try:
                report = find_duplicates(
                    [(str(p), p) for p in inputs], index=ci, add=add,
                    background=loaded(bg_paths, formats), k=k, config=config,
                    load=source_for(formats), on_item=on_item, on_registered=on_registered)
            except ConfigError as exc:
                raise fail(exc.message) from exc
            rule = report.rule
            if ci is not None and add:
                ci.commit()  # the registrations are durable before the groups are printed
            bar.close()
            for n, group in enumerate(report.groups, 1):
                lines.item({"group": n, **group.to_dict()})
            summary = report.summary()
    finally:
        _DATABASE_URL.reset(token)
    new_in_groups = {m.source for g in report.groups for m in g.members if m.new}
    tally.ok = summary["checked"] + summary["registered"]
    tally.failed = summary["errors"]
    tally.found = sum(1 for i in report.items if i.error is None and i.source in new_in_groups)
    note(f"{summary['groups']} groups holding {summary['images_in_groups']} images "
         f"({summary['exact_pairs']} exact pairs, {summary['near_pairs']} near pairs); "
         f"{summary['checked']} images checked, {summary['registered']} already registered, "
         f"{summary['errors']} failed, {tally.skipped} skipped; {_describe_rule(rule)}")
    tally.finish(finding=True)


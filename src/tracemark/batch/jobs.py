"""Batch jobs over an :class:`~tracemark.batch.executor.Executor`: decoding and feature
extraction run on the executor (Ray workers), and the one process that holds the index
open writes (or searches) in batches.

* :func:`ingest`: register sources in a :class:`~tracemark.copydetect.CopyIndex`
  (``tracemark index add --ray``). Each source is decoded and described on the executor
  (:func:`tracemark.copydetect.index.new_reference`); this process adds the descriptors in
  batches of ``batch_size`` (:meth:`CopyIndex.add_described`), commits every
  ``commit_interval`` seconds, and reports an added item only after the commit that made
  it durable: a crash loses at most the uncommitted batches, never an acknowledged item.
  A re-run skips what is registered: when the index is not empty at the start, each
  source is first decoded and hashed on the executor (the content hash of its pixels,
  :func:`tracemark.copydetect.describe.content_hash`, the key the index deduplicates on)
  and this process asks the index whether that hash is registered before the features
  are extracted (a registered source costs one decode, not a description).
* :func:`search_sources`: queries described on the executor
  (:meth:`CopyIndex.describe_query` there), searched here
  (:meth:`CopyIndex.search_described`: retrieval and verification need the index).
* :func:`detect_sources`: blind watermark detection, wholly on the executor.

The functions named ``*_task`` are what runs on a worker: module-level, so Ray pickles
them by reference and the workers import them from their tracemark.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracemark.batch.executor import Done, Executor
from tracemark.batch.sources import load_source
from tracemark.errors import TracemarkError
from tracemark.imageio import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from tracemark.copydetect import CopyIndex
    from tracemark.copydetect.index import QueryResult
    from tracemark.watermark.base import Detection

__all__ = ["IngestCounts", "describe_query_task", "describe_task", "detect_sources",
           "detect_task", "hash_task", "ingest", "search_sources"]


# --- what runs on a worker -----------------------------------------------------------


def hash_task(source: str, *, formats: Any = "default",
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> str:
    """The content hash (64 hex characters: SHA-256 of the decoded pixels and their shape)
    of ``source``; raises the loader's typed errors."""
    from tracemark.copydetect.describe import content_hash

    return content_hash(load_source(source, max_pixels=max_pixels, formats=formats))


def describe_task(source: str, *, meta: Mapping[str, str | None], max_features: int,
                  formats: Any = "default", max_pixels: int | None = DEFAULT_MAX_PIXELS
                  ) -> tuple[Any, Any]:
    """``(NewReference, Words)`` of ``source`` (:func:`tracemark.copydetect.index.
    new_reference`, recorded with ``source`` and ``meta``'s owner, license, notes)."""
    from tracemark.copydetect.index import new_reference

    image = load_source(source, max_pixels=max_pixels, formats=formats)
    return new_reference(image, max_features=max_features, source=str(source),
                         owner=meta.get("owner"), license=meta.get("license"),
                         notes=meta.get("notes"))


def describe_query_task(source: str, *, max_features: int, formats: Any = "default",
                        max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Any, float]:
    """``(QueryDescriptors, seconds)`` of a query (:func:`tracemark.copydetect.describe.
    describe_query`) and the seconds it took."""
    from tracemark.copydetect.describe import describe_query

    t0 = time.perf_counter()
    image = load_source(source, max_pixels=max_pixels, formats=formats)
    return describe_query(image, max_features=max_features), time.perf_counter() - t0


def detect_task(source: str, *, method: str, key: Any, alpha: float, formats: Any = "default",
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Detection:
    """Blind detection of the registered watermark ``method`` (by name, instantiated on the
    worker) with ``key`` in ``source``: a :class:`~tracemark.watermark.Detection`."""
    from tracemark.watermark import get_method

    image = load_source(source, max_pixels=max_pixels, formats=formats)
    return get_method(method).detect(image, key, alpha=alpha)


# --- what runs here -------------------------------------------------------------------


@dataclass
class IngestCounts:
    """What :func:`ingest` did: ``added`` new references, ``duplicates`` (same pixels as a
    reference added earlier in this run or found by the store), ``registered`` (skipped
    before extraction: already in the index), ``failed``."""

    added: int = 0
    duplicates: int = 0
    registered: int = 0
    failed: int = 0


def _row(source: Any, ref_id: int | None = None, duplicate_of: int | None = None,
         error: TracemarkError | None = None) -> dict[str, Any]:
    err = None
    if error is not None:
        err = error.to_dict()
        err["source"] = err.get("source") or str(source)
    return {"source": str(source), "id": ref_id, "duplicate_of": duplicate_of, "error": err}


def ingest(ci: CopyIndex, sources: Iterable[str], executor: Executor, *,
           on_item: Callable[[dict[str, Any]], None],
           meta: Mapping[str, str | None] | None = None, batch_size: int = 64,
           commit_interval: float = 30.0, formats: Any = "default",
           on_done: Callable[[bool], None] | None = None) -> IngestCounts:
    """Register ``sources`` (paths or URLs) in ``ci``: see the module docstring.

    ``on_item(row)`` gets one row per source, ``{"source", "id", "duplicate_of",
    "error"}`` (the rows of ``tracemark index add``; a registered source's row names its
    reference as ``id`` and ``duplicate_of``): a failed or registered source's row at once,
    an added or duplicate source's row only after the commit that made it durable.
    ``on_done(failed)`` is called as each source comes back (progress). Rows come in
    completion order. Returns the counts; the index is committed at the end. A store
    error on a batch (the database refused it) fails that batch's items and the job goes
    on.
    """
    counts = IngestCounts()
    meta = dict(meta or {})
    max_features = ci.config.max_features
    pending: list[tuple[Any, Any]] = []  # (source, (NewReference, Words)) not yet added
    waiting: list[dict[str, Any]] = []  # rows added, not yet committed
    last_commit = time.monotonic()
    registered: dict[Any, int] = {}  # source -> the reference holding its content hash

    def keep(source: Any, content_hash: str) -> bool:
        ref_id = ci.index.find(content_hash)
        if ref_id is None:
            return True
        registered[source] = ref_id
        return False

    def add_pending() -> None:
        if not pending:
            return
        batch = list(pending)
        pending.clear()
        try:
            results: list[Any] = ci.add_described([d for _, d in batch])
        except TracemarkError as exc:  # the store refused the whole batch
            for source, _ in batch:
                counts.failed += 1
                on_item(_row(source, error=exc))
            return
        for (source, _), res in zip(batch, results, strict=True):
            if res.duplicate_of is None:
                counts.added += 1
            else:
                counts.duplicates += 1
            waiting.append(_row(source, res.id, res.duplicate_of))

    def commit() -> None:
        nonlocal last_commit
        ci.commit()
        last_commit = time.monotonic()
        rows = list(waiting)
        waiting.clear()
        for row in rows:
            on_item(row)

    task = functools.partial(describe_task, meta=meta, max_features=max_features,
                             formats=formats)
    gate = functools.partial(hash_task, formats=formats) if len(ci) > 0 else None
    done: Done
    for done in executor.map_unordered(task, sources, gate=gate, keep=keep):
        if done.error is not None:
            counts.failed += 1
            on_item(_row(done.item, error=done.error))
        elif done.skipped is not None:
            counts.registered += 1
            ref_id = registered.pop(done.item)
            on_item(_row(done.item, ref_id, ref_id))
        else:
            pending.append((done.item, done.value))
            if len(pending) >= batch_size:
                add_pending()
                if time.monotonic() - last_commit >= commit_interval:
                    commit()
        if on_done is not None:
            on_done(done.error is not None)
    add_pending()
    commit()
    return counts


def search_sources(ci: CopyIndex, sources: Iterable[str], executor: Executor, *, k: int,
                   formats: Any = "default") -> Iterator[QueryResult]:
    """One :class:`~tracemark.copydetect.QueryResult` per query source, in completion
    order: described on the executor, searched in ``ci`` here (the same matches as
    :meth:`CopyIndex.search` of the image). A query that cannot be read or described gets
    its typed error in ``error``; ``seconds`` counts its description and its search."""
    from tracemark.copydetect.index import QueryResult

    task = functools.partial(describe_query_task, max_features=ci.config.max_features,
                             formats=formats)
    for done in executor.map_unordered(task, sources):
        name = str(done.item)
        if done.error is not None:
            error = done.error.to_dict()
            error["source"] = error.get("source") or name
            yield QueryResult(name, error=error)
            continue
        q, seconds = done.value
        t0 = time.perf_counter()
        try:
            res = QueryResult(name, ci.search_described(q, k=k))
        except TracemarkError as exc:
            error = exc.to_dict()
            error["source"] = error.get("source") or name
            res = QueryResult(name, error=error)
        res.seconds = seconds + time.perf_counter() - t0
        yield res


def detect_sources(sources: Iterable[str], executor: Executor, *, method: str, key: Any,
                   alpha: float, formats: Any = "default",
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterator[Done]:
    """Blind watermark detection of every source on the executor: one
    :class:`~tracemark.batch.executor.Done` per source, in completion order, whose
    ``value`` is a :class:`~tracemark.watermark.Detection` (or ``error`` its typed error)."""
    task = functools.partial(detect_task, method=method, key=key, alpha=alpha,
                             formats=formats, max_pixels=max_pixels)
    yield from executor.map_unordered(task, sources)

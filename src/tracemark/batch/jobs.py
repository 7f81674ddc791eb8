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
* :func:`embed_sources`: watermark embedding: a worker decodes, marks and encodes the
  output file's bytes (:func:`embed_task`); this process writes them (atomically) and
  reports the item. :func:`marked_outputs` checks on the executor which existing outputs
  already carry the payload (a re-run skips them).

The functions named ``*_task`` are what runs on a worker: module-level, so Ray pickles
them by reference and the workers import them from their tracemark.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracemark.batch.executor import Done, Executor
from tracemark.batch.sources import is_url, load_source, read_source
from tracemark.errors import TracemarkError
from tracemark.imageio import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from tracemark.copydetect import CopyIndex
    from tracemark.copydetect.index import QueryResult
    from tracemark.watermark.base import Detection

__all__ = ["Embedded", "IngestCounts", "carries_task", "describe_query_task", "describe_task",
           "detect_sources", "detect_task", "embed_sources", "embed_task", "hash_task",
           "ingest", "marked_outputs", "search_sources"]


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


@dataclass(frozen=True)
class Embedded:
    """One embed's output, made on a worker: the file's ``data`` (encoded as the output's
    suffix says), ``mark`` (``"embedded"``, ``"kept"``, ``"remarked"``: :func:`tracemark.
    watermark.embed_once`), ``alpha`` (``"kept"``, ``"flattened"`` or None) and ``psnr``
    (dB, of the file's pixels against the input's; None when infinite)."""

    data: bytes
    mark: str
    alpha: str | None
    psnr: float | None


def embed_task(pair: tuple[str, str], *, method: str, params: Mapping[str, Any], payload: Any,
               key: Any, allow_remark: bool, quality: int | None, formats: Any = "default",
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Embedded:
    """Mark ``pair``'s input (a path or URL) with ``payload`` (:func:`tracemark.watermark.
    embed_once` of ``get_method(method, **params)`` and ``key``) and encode it as its output
    (``pair[1]``) is named, with ``quality`` for a lossy format (JPEG, WebP): the bytes
    ``tracemark watermark embed`` writes. Raises the loader's errors,
    :class:`~tracemark.errors.AlreadyMarkedError` and the method's errors."""
    import math

    from tracemark.imageio import (
        colour_under_alpha,
        composite,
        encode_image,
        encode_image_with_alpha,
        format_of_suffix,
        has_alpha_channel,
        load_image,
        load_image_with_alpha,
    )
    from tracemark.metrics import psnr
    from tracemark.watermark import embed_once, get_method

    source, output = pair
    wm = get_method(method, **params)
    if is_url(source):
        colour, alpha = load_image_with_alpha(read_source(source), max_pixels=max_pixels,
                                              formats=formats, name=source)
    else:
        colour, alpha = load_image_with_alpha(source, max_pixels=max_pixels, formats=formats)
    image = composite(colour, alpha)  # what every reader of the mark sees
    marked, outcome = embed_once(wm, image, payload, key, allow_remark=allow_remark)
    if marked is image:  # kept: the colour below is written, not the input's
        marked = marked.copy()
    suffix = os.path.splitext(output)[1]
    fmt = format_of_suffix(suffix)
    if fmt not in ("JPEG", "WEBP"):
        quality = None  # lossless formats take none
    if alpha is not None and has_alpha_channel(suffix):
        marked = colour_under_alpha(marked, colour, alpha, out=marked)
        data, kept = encode_image_with_alpha(marked, alpha, fmt, quality=quality), "kept"
    else:
        data = encode_image(marked, fmt, quality=quality)
        kept = None if alpha is None else "flattened"
    del marked, colour, alpha
    value = psnr(image, load_image(data, max_pixels=None))
    return Embedded(data, outcome, kept, round(value, 3) + 0.0 if math.isfinite(value) else None)


def carries_task(path: str, *, method: str, params: Mapping[str, Any], payload: Any,
                 key: Any) -> bool:
    """Whether the image file at ``path`` carries ``payload`` in the mark of
    ``get_method(method, **params)`` under ``key`` (blind detection at the default alpha,
    :func:`tracemark.watermark.carried_mark`); False when it cannot be read."""
    import numpy as np

    from tracemark.imageio import load_image
    from tracemark.watermark import carried_mark, get_method, payload_to_bits

    wm = get_method(method, **params)
    try:
        found = carried_mark(wm, load_image(path, max_pixels=None), key)
    except TracemarkError:
        return False
    if found is None or found.payload is None:
        return False
    return bool(np.array_equal(payload_to_bits(found.payload, wm.payload_bits),
                               payload_to_bits(payload, wm.payload_bits)))


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


def embed_sources(plan: Iterable[tuple[str, str]], executor: Executor, *, method: str,
                  params: Mapping[str, Any] | None = None, payload: Any, key: Any,
                  allow_remark: bool = False, quality: int | None = None,
                  formats: Any = "default", max_pixels: int | None = DEFAULT_MAX_PIXELS
                  ) -> Iterator[Done]:
    """Mark every ``(input, output)`` of ``plan`` on the executor (:func:`embed_task`) and
    write each output here, atomically (:func:`tracemark.imageio.write_file`; its folder
    made when missing), before yielding it: one :class:`~tracemark.batch.executor.Done`
    per item, in completion order, whose ``value`` is the :class:`Embedded` written (its
    ``data`` dropped), or ``error`` the item's typed error (nothing written). The caller
    planned the outputs (never an input; an existing one only when it may be replaced)."""
    from dataclasses import replace

    from tracemark.errors import ImageSourceError
    from tracemark.imageio import write_file

    task = functools.partial(embed_task, method=method, params=dict(params or {}),
                             payload=payload, key=key, allow_remark=allow_remark,
                             quality=quality, formats=formats, max_pixels=max_pixels)
    for done in executor.map_unordered(task, plan):
        if done.error is not None:
            yield done
            continue
        _src, dest = done.item
        try:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
            except OSError as exc:
                raise ImageSourceError(f"cannot create the output folder: "
                                       f"{exc.strerror or exc}", source=str(dest)) from exc
            write_file(dest, done.value.data)
        except TracemarkError as exc:
            yield Done(done.item, error=exc)
            continue
        yield Done(done.item, value=replace(done.value, data=b""))


def marked_outputs(paths: Iterable[str], executor: Executor, *, method: str,
                   params: Mapping[str, Any] | None = None, payload: Any, key: Any
                   ) -> set[str]:
    """The files of ``paths`` that already carry ``payload`` (:func:`carries_task`, on the
    executor): a re-run's outputs."""
    task = functools.partial(carries_task, method=method, params=dict(params or {}),
                             payload=payload, key=key)
    return {done.item for done in executor.map_unordered(task, paths) if done.value}

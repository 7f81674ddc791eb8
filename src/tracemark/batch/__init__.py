"""Batch jobs over very large inputs: the per-item work (decoding, feature extraction,
detection) on an executor -- this process, or Ray tasks on a cluster -- and the writes in
batches by the one process that holds the store open.

* :mod:`tracemark.batch.executor`: :class:`Executor` (items in, :class:`Done` out in
  completion order, bounded work in flight), :class:`LocalExecutor`, :class:`RayExecutor`
  (extra ``ray``);
* :mod:`tracemark.batch.sources`: local paths and fsspec URLs as inputs;
* :mod:`tracemark.batch.jobs`: the jobs of ``tracemark index add|search|scan|watermark
  detect --ray``.

Ray and fsspec are imported only when a Ray executor or a URL is used.
"""

from tracemark.batch.executor import (
    DEFAULT_OBJECT_STORE_MEMORY,
    Done,
    Executor,
    LocalExecutor,
    RayExecutor,
    open_executor,
)
from tracemark.batch.jobs import IngestCounts, detect_sources, ingest, search_sources
from tracemark.batch.sources import expand_url, is_url, load_source, read_source

__all__ = [
    "DEFAULT_OBJECT_STORE_MEMORY",
    "Done",
    "Executor",
    "IngestCounts",
    "LocalExecutor",
    "RayExecutor",
    "detect_sources",
    "expand_url",
    "ingest",
    "is_url",
    "load_source",
    "open_executor",
    "read_source",
    "search_sources",
]

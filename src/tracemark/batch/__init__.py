"""Batch jobs over very large inputs: the per-item work (decoding, feature extraction,
detection) on an executor -- this process, or Ray tasks on a cluster -- and the writes in
batches by the one process that holds the store open.

* :mod:`tracemark.batch.executor`: :class:`Executor` (items in, :class:`Done` out in
  completion order, bounded work in flight), :class:`LocalExecutor`, :class:`RayExecutor`
  (extra ``ray``);
* :mod:`tracemark.batch.sources`: local paths and fsspec URLs as inputs;
* :mod:`tracemark.batch.jobs`: the jobs of ``tracemark index add|search|scan|watermark
  embed|detect --ray``;
* :mod:`tracemark.batch.signing`: the job of ``tracemark sign --ray`` (image work on the
  workers, the manifest store written here).

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
from tracemark.batch.jobs import (
    Embedded,
    IngestCounts,
    detect_sources,
    embed_sources,
    ingest,
    marked_outputs,
    search_sources,
)
from tracemark.batch.signing import SignCounts, sign_sources
from tracemark.batch.sources import expand_url, is_url, load_source, read_source

__all__ = [
    "DEFAULT_OBJECT_STORE_MEMORY",
    "Done",
    "Embedded",
    "Executor",
    "IngestCounts",
    "LocalExecutor",
    "RayExecutor",
    "SignCounts",
    "detect_sources",
    "embed_sources",
    "expand_url",
    "ingest",
    "is_url",
    "load_source",
    "marked_outputs",
    "open_executor",
    "read_source",
    "search_sources",
    "sign_sources",
]

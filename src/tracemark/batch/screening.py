"""The batch job of ``tracemark guard image --ray``: output screening over an executor.

Each source is decoded, described, checked for the watermark and its manifest read on the
executor (:func:`screen_task`: :func:`tracemark.guard.image.inspect_image`, no collection
needed); this process, which holds the collection open, searches it and decides
(:func:`tracemark.guard.image.decide`), as :func:`tracemark.batch.jobs.search_sources`
splits a search.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tracemark.batch.executor import Executor
from tracemark.batch.sources import read_source
from tracemark.errors import TracemarkError
from tracemark.imageio import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from tracemark.copydetect import CopyIndex
    from tracemark.guard.image import ImageFacts, ImageScreening
    from tracemark.guard.types import Concept

__all__ = ["screen_sources", "screen_task"]


def screen_task(source: str, *, key: Any, method: str, watermark_alpha: float,
                trust_pem: str | None, max_features: int, formats: Any = "default",
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageFacts:
    """What runs on a worker: :func:`tracemark.guard.image.inspect_image` of the bytes of
    ``source`` (a path or an fsspec URL). Raises the reader's and loader's typed errors."""
    from tracemark.guard.image import inspect_image

    return inspect_image(read_source(source), key=key, method=method,
                         watermark_alpha=watermark_alpha, trust_pem=trust_pem,
                         max_features=max_features, max_pixels=max_pixels, formats=formats)


def screen_sources(ci: CopyIndex, sources: Iterable[str], executor: Executor, *,
                   concepts: Sequence[Concept] = (), key: Any = None, method: str = "lattice",
                   own_signers: Sequence[str] = (), trust_pem: str | None = None,
                   alpha: float | None = None, watermark_alpha: float = 1e-4,
                   formats: Any = "default", max_pixels: int | None = DEFAULT_MAX_PIXELS
                   ) -> Iterator[tuple[str, ImageScreening | None, dict[str, Any] | None]]:
    """``(source, screening, error)`` per source, in completion order: inspected on the
    executor, decided here against ``ci`` (the same answer as
    :func:`tracemark.guard.image.screen_image` of the file). A source that cannot be read
    or decided gets its typed error as a dict (``{"type", "message", "source"}``) and the
    batch carries on."""
    from tracemark.guard.image import decide

    task = functools.partial(screen_task, key=key, method=method,
                             watermark_alpha=watermark_alpha, trust_pem=trust_pem,
                             max_features=ci.config.max_features, formats=formats,
                             max_pixels=max_pixels)
    for done in executor.map_unordered(task, sources):
        name = str(done.item)
        if done.error is not None:
            error = done.error.to_dict()
            error["source"] = error.get("source") or name
            yield name, None, error
            continue
        try:
            yield name, decide(done.value, ci, concepts=concepts, own_signers=own_signers,
                               alpha=alpha, watermark_alpha=watermark_alpha), None
        except TracemarkError as exc:
            error = exc.to_dict()
            error["source"] = error.get("source") or name
            yield name, None, error

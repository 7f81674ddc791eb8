"""One lifecycle for every persistent object: index, copy-detection index, credential store,
API key store (after c2pa-python's ``ManagedResource``).

* ``with obj:`` returns the object; a clean exit commits and closes; when the block raises,
  the uncommitted writes are rolled back, then the object is closed (nothing is committed).
* :meth:`Resource.close` commits pending writes, then releases; it is idempotent.
* :attr:`Resource.closed` says whether it is closed; any other use after close raises the
  subclass's typed :class:`~tracemark.errors.ClosedError`.

A subclass calls :meth:`Resource._init_resource` when it is built and implements three
hooks: ``_commit`` (make pending writes durable), ``_rollback`` (discard them) and
``_release`` (give back files, connections, locks; called once, never commits). An object
that writes through on every call has nothing to commit or roll back and keeps the default
no-op hooks. The hooks run under the object's re-entrant lock ``_mutex``.

:meth:`Resource.commit_guard` lets a caller refuse commits it did not expect to reach: while
its block runs, every :meth:`~Resource.commit` made by that thread first calls the check,
under the object's lock; when the check raises, nothing is committed (the HTTP service uses
it so that work past its deadline rolls back instead of committing after a 503).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import ClassVar, Self

from tracemark.errors import ClosedError

__all__ = ["Resource"]


class Resource:
    """Base of tracemark's persistent objects: commit, rollback, idempotent close, ``with``."""

    _closed_error: ClassVar[type[ClosedError]] = ClosedError
    """The typed error raised on use after close."""
    _noun: ClassVar[str] = "object"
    """What the object is called in that error's message."""

    _closed: bool
    _mutex: threading.RLock

    def _init_resource(self) -> None:
        """Mark the object open; create its lock (call once, when it is built)."""
        self._closed = False
        self._mutex = threading.RLock()
        self._commit_checks: dict[int, Callable[[], None]] = {}

    # --- hooks ----------------------------------------------------------------------

    def _commit(self) -> None:
        """Make pending writes durable (no-op for a read-only or write-through object)."""

    def _rollback(self) -> None:
        """Discard writes since the last commit."""

    def _release(self) -> None:
        """Give back what the object holds. Never commits; called once."""

    def _closed_source(self) -> str | None:
        """The ``source`` of the closed error (a path, a URL), if any."""
        return None

    # --- the lifecycle ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` (or the end of a ``with`` block) has run."""
        return self._closed

    def commit(self) -> None:
        """Make pending writes durable."""
        with self._mutex:
            self._check_open()
            self._check_commit()
            self._commit()

    @contextlib.contextmanager
    def commit_guard(self, check: Callable[[], None]) -> Iterator[None]:
        """While the block runs, every :meth:`commit` this thread makes calls ``check()``
        first, under the object's lock; an exception from ``check`` propagates and nothing
        is committed (the caller rolls back). Commits of other threads, and :meth:`close`,
        are not checked. Guards do not nest (a second one in the same thread replaces the
        first until its block ends)."""
        me = threading.get_ident()
        checks = self._commit_checks
        before = checks.get(me)
        checks[me] = check
        try:
            yield
        finally:
            if before is None:
                checks.pop(me, None)
            else:
                checks[me] = before

    def _check_commit(self) -> None:
        """Run this thread's :meth:`commit_guard` check, if any (subclasses that override
        :meth:`commit` call it under ``_mutex``, before ``_commit``)."""
        check = getattr(self, "_commit_checks", {}).get(threading.get_ident())
        if check is not None:
            check()

    def rollback(self) -> None:
        """Discard writes since the last commit."""
        with self._mutex:
            self._check_open()
            self._rollback()

    def close(self) -> None:
        """Commit pending writes and release the object. Idempotent."""
        self._shutdown(commit=True)

    def _shutdown(self, *, commit: bool) -> None:
        """Close: commit first when ``commit``, release in any case (once)."""
        with self._mutex:
            if self._closed:
                return
            try:
                if commit:
                    self._commit()
            finally:
                self._closed = True
                self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit and close on a clean exit; roll back, then close, when the block raised."""
        if exc_type is None:
            self.close()
            return
        with self._mutex:
            if self._closed:
                return
            try:
                self._rollback()
            finally:
                self._shutdown(commit=False)

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error(f"the {self._noun} is closed", source=self._closed_source())

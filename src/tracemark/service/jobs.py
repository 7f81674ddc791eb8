"""The service's blocking work: a bounded worker pool, request deadlines, and a commit point
that a timed-out request never passes.

Every endpoint hands its blocking work (decode, fingerprint, watermark, sign, store writes)
to :class:`Workers` as ``fn(job)``; the :class:`Job` carries the request's deadline,
``request_timeout`` seconds after the hand-over. The deadline covers the time queued for a
worker *and* the work:

* **queued past the deadline**: the work never starts; the answer is 503 ``Busy`` with a
  ``Retry-After`` header (:class:`DeadlineExceeded` with ``queued=True``);
* **running at the deadline, before its commit point**: the job is cancelled and the answer
  is 503 ``Timeout`` at once; the worker thread runs on (Python cannot stop it) but raises
  :class:`DeadlineExceeded` when it reaches :meth:`Job.commit_point`, and its writes are
  rolled back (a read's result is dropped); its pool slot stays taken until it ends, so at
  most ``max_concurrency`` jobs ever run;
* **past its commit point**: the request completes and says so (2xx), even when that is
  after the deadline -- a 503 never stands for work that was committed.

Which of the last two happens is decided once, under the job's lock, between
:meth:`Job.cancel` (the request at its deadline) and :meth:`Job.commit_point` (the worker,
right before it commits, while it holds the collection's writer lock).

A job may carry a **weight** (bytes of memory it is expected to need; the service weighs an
image upload by its pixels). :class:`MemoryBudget` admits jobs while the weights of those
running fit the budget, so that ``max_concurrency`` large images cannot multiply the peak:
a job waits for room as it waits for a worker (its time counts against the deadline, and a
job still waiting at the deadline is answered 503 ``Busy`` without starting); a job heavier
than the whole budget runs alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import anyio

__all__ = ["DeadlineExceeded", "Job", "MemoryBudget", "Workers"]

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The request's deadline passed before its work committed (nothing was written).

    ``queued``: the work never started (it waited for a worker slot the whole time)."""

    def __init__(self, message: str, *, queued: bool = False) -> None:
        super().__init__(message)
        self.queued = queued


_QUEUED, _RUNNING, _CANCELLED, _COMMITTING = "queued", "running", "cancelled", "committing"


class Job:
    """One request's work: its deadline (``time.monotonic()`` seconds) and its state,
    queued -> running -> committing, or cancelled at the deadline."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self._state = _QUEUED
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        return self._state

    def remaining(self) -> float:
        """Seconds left before the deadline (0 when past)."""
        return max(0.0, self.deadline - time.monotonic())

    def start(self) -> None:
        """Called by the worker before any work: raises :class:`DeadlineExceeded`
        (``queued=True``) when the job was cancelled or its deadline passed in the queue."""
        with self._lock:
            if self._state == _QUEUED and time.monotonic() < self.deadline:
                self._state = _RUNNING
                return
            self._state = _CANCELLED
        raise DeadlineExceeded(
            f"no worker was free within the request's {self.timeout:g} s", queued=True)

    def commit_point(self) -> None:
        """Called by the worker right before it commits (holding the store's lock): raises
        :class:`DeadlineExceeded` when the job was cancelled or its deadline passed -- the
        caller then rolls back; otherwise the job can no longer be cancelled and the request
        will be answered with what the work did. Idempotent once passed."""
        with self._lock:
            if self._state == _COMMITTING:
                return
            if self._state == _RUNNING and time.monotonic() < self.deadline:
                self._state = _COMMITTING
                return
            self._state = _CANCELLED
        raise DeadlineExceeded(f"the request took longer than {self.timeout:g} s; "
                               "nothing was committed")

    def cancel(self) -> bool:
        """Called at the deadline: True when the job was cancelled (it will not commit),
        False when it has passed its commit point (its answer must be awaited)."""
        with self._lock:
            if self._state == _COMMITTING:
                return False
            self._state = _CANCELLED
            return True


class MemoryBudget:
    """At most ``capacity`` bytes of job weight admitted at once (a job heavier than the
    capacity is admitted when nothing else runs). ``capacity`` None admits everything."""

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, weight: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for room for ``weight`` bytes; True when admitted."""
        if self.capacity is None or weight <= 0:
            return True
        end = time.monotonic() + timeout
        with self._cond:
            while self.used > 0 and self.used + weight > self.capacity:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            self.used += weight
            return True

    def release(self, weight: int) -> None:
        if self.capacity is None or weight <= 0:
            return
        with self._cond:
            self.used -= weight
            self._cond.notify_all()


class Workers:
    """A pool of ``size`` worker threads that runs ``fn(job)`` under a deadline
    (module docstring). The pool is made on first use and again after :meth:`shutdown`."""

    def __init__(self, size: int, *, on_start: Callable[[], None] | None = None,
                 on_end: Callable[[], None] | None = None,
                 memory_budget: int | None = None) -> None:
        self.size = size
        self.budget = MemoryBudget(memory_budget)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._on_start, self._on_end = on_start, on_end

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.size, thread_name_prefix="tracemark-worker")
            return self._pool

    def shutdown(self) -> None:
        """Drop queued jobs and wait for the running ones (so that their commits finish
        before the stores close)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _call(self, fn: Callable[[Job], T], job: Job, weight: int) -> T:
        if not self.budget.acquire(weight, job.remaining()):  # still queued: the request
            raise DeadlineExceeded(                                # side answers Busy
                f"no memory was free within the request's {job.timeout:g} s", queued=True)
        try:
            job.start()
            if self._on_start is not None:
                self._on_start()
            try:
                return fn(job)
            finally:
                if self._on_end is not None:
                    self._on_end()
        finally:
            self.budget.release(weight)

    async def run(self, fn: Callable[[Job], T], timeout: float, weight: int = 0) -> T:
        """``fn(job)`` in a worker thread once ``weight`` bytes fit the memory budget; its
        result, or :class:`DeadlineExceeded` when the deadline passed before its commit
        point (its exceptions propagate)."""
        job = Job(timeout)
        future = self._executor().submit(self._call, fn, job, weight)
        waiting = asyncio.wrap_future(future)
        waiting.add_done_callback(_retrieve)
        try:
            with anyio.move_on_after(job.remaining()):
                return await asyncio.shield(waiting)
        except BaseException:  # the client went away (or the server stops): no commit now
            if job.cancel():
                future.cancel()
            raise
        before = job.state  # cancel() changes it
        if job.cancel():  # the deadline, before the commit point: the worker will roll back
            queued = future.cancel() or before == _QUEUED
            raise DeadlineExceeded(
                f"no worker was free within the request's {timeout:g} s" if queued
                else f"the request took longer than {timeout:g} s; nothing was committed",
                queued=queued)
        return await waiting  # committing: the answer says what was done

    def retry_after(self, timeout: float) -> int:
        """Seconds a client told ``Busy`` should wait: one request's time, at least 1."""
        return max(1, math.ceil(timeout))


def _retrieve(future: asyncio.Future[object]) -> None:
    """Mark an abandoned future's exception as seen (no 'never retrieved' warning)."""
    if not future.cancelled():
        future.exception()

"""Where a batch job's per-item work runs: in this process, or as Ray tasks on a cluster.

An :class:`Executor` takes items (sources: paths or URLs) and a function of one item, and
yields one :class:`Done` per item **in completion order**, with the function's value or its
typed error: a bad item never stops the batch. At most ``max_in_flight`` items are being
worked on at once, so a million inputs never become a million submitted tasks and the
memory that their results take stays bounded (the caller consumes results as they come:
that is the back-pressure).

An optional *gate* runs first for each item (also on the executor) and the caller's
``keep`` decides, in this process, whether the main function runs: a batch job asks a
store whether an item's content hash is already registered before it pays for feature
extraction (:func:`tracemark.batch.jobs.ingest`).

* :class:`LocalExecutor`: the item's work runs here, one item at a time (what the commands
  do without ``--ray``); a reference for the Ray path in tests.
* :class:`RayExecutor`: each item's work is a Ray task (``ray.remote``; Ray retries a task
  whose worker died ``max_retries`` times, then the item gets a
  :class:`~tracemark.errors.BatchTaskError`). Ray is imported only here, through
  :func:`tracemark._optional.require` (extra ``ray``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tracemark.errors import BatchTaskError, ConfigError, TracemarkError

__all__ = ["DEFAULT_OBJECT_STORE_MEMORY", "Done", "Executor", "LocalExecutor", "RayExecutor",
           "open_executor"]

DEFAULT_OBJECT_STORE_MEMORY = 512 * 1024**2
"""Bytes of Ray's object store when :class:`RayExecutor` starts a local cluster (Ray's own
default is 30% of RAM): results are small (descriptors, detections) and at most
``max_in_flight`` are held, so 512 MiB is plenty, and a laptop keeps its memory."""


@dataclass(frozen=True)
class Done:
    """One item's outcome: exactly one of ``value`` (the function's result), ``error`` (its
    :class:`~tracemark.errors.TracemarkError`) or ``skipped`` (the gate's value, when
    ``keep`` said no) is set; ``skipped`` is None otherwise."""

    item: Any
    value: Any = None
    error: TracemarkError | None = None
    skipped: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None


def _call(fn: Callable[[Any], Any], item: Any) -> tuple[bool, Any]:
    """``(True, fn(item))``, or ``(False, error)`` for a typed error (returned, not raised,
    so the engine does not treat a bad image as a failed task and retry it)."""
    try:
        return True, fn(item)
    except TracemarkError as exc:
        return False, exc


class Executor(ABC):
    """Runs one function per item and yields the outcomes in completion order.

    Use as a context manager (or call :meth:`close`): a :class:`RayExecutor` that started
    a cluster stops it."""

    name: str = ""
    max_in_flight: int = 1

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 (nothing to release by default)
        """Release what the executor started (idempotent)."""

    @abstractmethod
    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
                      gate: Callable[[Any], Any] | None = None,
                      keep: Callable[[Any, Any], bool] | None = None) -> Iterator[Done]:
        """One :class:`Done` per item of ``items`` (consumed lazily), in completion order.

        ``fn(item)`` and ``gate(item)`` must be picklable module-level functions (or
        :func:`functools.partial` of them) for a :class:`RayExecutor`; a
        :class:`~tracemark.errors.TracemarkError` they raise becomes the item's ``error``.
        With ``gate``, ``keep(item, gate(item))`` runs here and ``fn`` runs only when it
        is true (else the item is ``skipped`` with the gate's value)."""


class LocalExecutor(Executor):
    """Every item's work in this process, one at a time, in input order."""

    name = "local"

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
                      gate: Callable[[Any], Any] | None = None,
                      keep: Callable[[Any, Any], bool] | None = None) -> Iterator[Done]:
        for item in items:
            if gate is not None:
                ok, value = _call(gate, item)
                if not ok:
                    yield Done(item, error=value)
                    continue
                if keep is not None and not keep(item, value):
                    yield Done(item, skipped=value)
                    continue
            ok, value = _call(fn, item)
            yield Done(item, value=value) if ok else Done(item, error=value)


class RayExecutor(Executor):
    """Each item's work as a Ray task.

    ``address``: None or ``"local"`` starts a private local cluster (``num_cpus`` CPUs,
    default all; ``object_store_memory`` bytes of object store, default
    :data:`DEFAULT_OBJECT_STORE_MEMORY`) that :meth:`close` stops; ``"auto"`` (the cluster
    ``ray start`` started on this machine, or ``$RAY_ADDRESS``), ``HOST:PORT`` (the head's
    GCS port, 6379 by default) or ``ray://HOST:10001`` (Ray Client) connect to an existing
    cluster, whose nodes must have the same tracemark installed. A process already
    connected to Ray (``ray.is_initialized()``) keeps its connection, and :meth:`close`
    leaves it.

    ``max_in_flight``: tasks submitted and not yet consumed (default twice the cluster's
    CPUs, at least 2). ``max_retries``: Ray's retries of a task whose worker died.

    Raises :class:`~tracemark.errors.MissingExtraError` without Ray (``pip install
    'tracemark[ray]'``), :class:`~tracemark.errors.ConfigError` when the cluster cannot be
    reached or started.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 object_store_memory: int | None = None, max_in_flight: int | None = None,
                 max_retries: int = 3) -> None:
        from tracemark._optional import require

        ray = require("ray", "ray", purpose="batch jobs on Ray (--ray)")
        self._ray = ray
        self._own = False
        if max_in_flight is not None and max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        if not ray.is_initialized():
            local = address in (None, "local")
            if not local:
                _probe(address)  # type: ignore[arg-type]
            kwargs: dict[str, Any] = {
                "address": "local" if local else address,
                "log_to_driver": False,  # workers' prints never reach our stdout (JSON Lines)
                "logging_level": logging.WARNING,
            }
            if local:
                kwargs.update(num_cpus=num_cpus, include_dashboard=False,
                              object_store_memory=object_store_memory
                              or DEFAULT_OBJECT_STORE_MEMORY)
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = "start a local Ray cluster" if local else \
                    f"connect to the Ray cluster at {address}"
                raise ConfigError(f"cannot {where}: {exc}") from exc
            self._own = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.cpus = cpus
        self.max_in_flight = max_in_flight or max(2, 2 * cpus)
        self._remote = ray.remote(_call).options(max_retries=max_retries, num_cpus=1)

    def close(self) -> None:
        if self._own:
            self._own = False
            self._ray.shutdown()

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
                      gate: Callable[[Any], Any] | None = None,
                      keep: Callable[[Any, Any], bool] | None = None) -> Iterator[Done]:
        ray = self._ray
        # fn and gate are put in the object store once, not pickled into every task
        fn_ref = ray.put(fn)
        gate_ref = ray.put(gate) if gate is not None else None
        pending: dict[Any, tuple[Any, bool]] = {}  # ref -> (item, is the gate)
        source = iter(items)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self.max_in_flight:
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    first = gate_ref if gate_ref is not None else fn_ref
                    pending[self._remote.remote(first, item)] = (item, gate_ref is not None)
                if not pending:
                    return
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                item, gated = pending.pop(ref)
                try:
                    ok, value = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    yield Done(item, error=BatchTaskError(
                        f"the Ray task failed ({type(exc).__name__}): "
                        f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}",
                        source=str(item)))
                    continue
                del ref
                if not ok:
                    yield Done(item, error=value)
                elif gated:
                    if keep is None or keep(item, value):
                        pending[self._remote.remote(fn_ref, item)] = (item, False)
                    else:
                        yield Done(item, skipped=value)
                else:
                    yield Done(item, value=value)
        finally:
            for ref in pending:  # the consumer stopped early: drop what is left
                ray.cancel(ref)


def _probe(address: str) -> None:
    """Fail fast when nothing listens at a ``HOST:PORT`` address (Ray itself waits about a
    minute for an absent head). Other forms (``auto``, ``ray://``) are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if address.startswith("ray://") or not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address}: nothing answers "
                          f"there ({exc.strerror or exc}); start one with `ray start --head` "
                          "or give its address") from exc


def open_executor(ray_address: str | None, **kwargs: Any) -> Executor:
    """:class:`RayExecutor` (``ray_address``: see its ``address``) or, for None, a
    :class:`LocalExecutor`."""
    if ray_address is None:
        return LocalExecutor()
    return RayExecutor(ray_address, **kwargs)

"""Signing as a batch job (``tracemark sign --ray``): the image work on the executor's
workers, the store writes in this process, in batches.

A sign (:mod:`tracemark.credentials.sign`) interleaves store writes with image work.
:func:`sign_sources` splits it; for each ``(input, output)``, in this order::

    here:    hash the input (SHA-256 of its bytes)  ->  resume: already signed into the
             output -> skipped  ->  reserve a manifest id (pending row, in the open
             transaction)
    worker:  read + decode  ->  this store's mark already there? -> back to the driver
             ->  embed the mark carrying the id  ->  encode  ->  sign the C2PA manifest
             ->  describe the signed pixels' fingerprint
    here:    write the signed file beside the output (temp file, fsynced)  ->  add the
             fingerprint  ->  activate the manifest  ->  ... every ``batch_size`` items or
             ``commit_interval`` seconds: commit the store (index, then manifests)  ->
             rename the temp files into place  ->  report the items

so a crash loses nothing reported (a reported item's manifest, fingerprint and file are
durable), a manifest is never active without its signed file on disk (in place, or in
the temp file that a re-run's resume renames into place), and a re-run skips what is
signed (:func:`tracemark.credentials.sign._skip`, as :func:`sign_image`). Pending
manifests that a crash committed (reserved for items still in flight at a commit) are
stale once this process is gone: the next writable open deletes them. An input that
carries this store's mark (a signed image, edited) comes back from the worker unsigned;
its reservation is replaced by one that keeps the mark (the lineage is resolved here) and
it is signed in a second round, as :func:`sign_image` signs it.

No key material goes through the executor: a worker reads the signer's certificate and
key from the paths given (checked to be the certificate this process loaded) and the
store's watermark secret from the store's directory (checked against the store's
``secret_check``, :meth:`tracemark.credentials.store.StoreWatermark.read`). Workers must
therefore see the same files at the same paths (one machine, or a shared file system),
and the inputs too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tracemark.batch.executor import Executor
from tracemark.batch.sources import read_source
from tracemark.credentials import manifest as mf
from tracemark.credentials.certs import SigningCredentials
from tracemark.credentials.sign import SignOptions, SignResult, _finite, _skip, _write_temp
from tracemark.credentials.store import CredentialStore
from tracemark.errors import (
    CertificateError,
    ImageSourceError,
    ImageTooSmallError,
    SigningError,
    TracemarkError,
)

__all__ = ["SignCounts", "SignJob", "SignSetup", "sign_sources", "sign_task"]


@dataclass(frozen=True)
class SignSetup:
    """What every worker of a sign job needs (bound once): paths and public digests only."""

    store_path: str
    store_id: str
    secret_check: str
    """:attr:`CredentialStore.secret_check`: proves the worker read this store's secret."""
    watermark_method: str
    cert: str
    """Path of the signer's certificate chain (PEM), read on the worker."""
    key: str
    """Path of the signer's private key (PEM), read on the worker."""
    chain_sha256: str
    """SHA-256 (hex) of the chain this process loaded: the worker's must be the same."""
    options: SignOptions
    max_features: int
    """The store's fingerprint index's ``MatchConfig.max_features``."""


@dataclass(frozen=True)
class SignJob:
    """One item as a worker gets it."""

    source: str
    output: str
    manifest_id: int
    input_sha256: str
    title: str
    media_type: str
    carried: int | None = None
    """The mark id the input carries (second round): kept, no mark embedded."""
    supersedes: tuple[int, str | None] | None = None
    """The newest manifest of that mark's lineage, ``(id, label)``."""


@dataclass(frozen=True)
class _Carried:
    """A worker's answer for an input that carries this store's mark ``mark_id``."""

    mark_id: int


@dataclass(frozen=True)
class _Signed:
    """A worker's answer: the signed file and what the store records of it."""

    signed: bytes
    label: str
    manifest_json: str
    manifest_store: bytes
    file_sha256: str
    described: Any
    """``(NewReference, Words)`` of the signed pixels."""
    psnr: float | None
    mark_id: int
    parent: str | None
    alpha: str | None
    watermark_skipped: str | None = None


@dataclass
class SignCounts:
    """What :func:`sign_sources` did: ``signed``, ``resumed`` (already signed: skipped),
    ``failed``."""

    signed: int = 0
    resumed: int = 0
    failed: int = 0


# --- what runs on a worker -----------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _credentials(cert: str, key: str, _stamp: tuple[float, float]) -> SigningCredentials:
    from tracemark.credentials.certs import load_signing_credentials

    return load_signing_credentials(cert, key)


@functools.lru_cache(maxsize=4)
def _watermark(path: str, method: str, check: str) -> Any:
    from tracemark.credentials.store import StoreWatermark

    return StoreWatermark.read(path, method=method, secret_check=check)


def _chain_sha256(creds: SigningCredentials) -> str:
    return hashlib.sha256(creds.chain_pem.encode()).hexdigest()


def sign_task(job: SignJob, *, setup: SignSetup) -> _Signed | _Carried:
    """The image work of one sign (:func:`tracemark.credentials.sign.render_signed`) and
    the fingerprint's description (:func:`tracemark.copydetect.index.new_reference`); an
    input carrying this store's mark, on a first round, comes back as such, unsigned.

    Raises :class:`~tracemark.errors.CertificateError` (the files at the paths are not
    the driver's certificate), :class:`~tracemark.errors.ManifestStoreError` (the store's
    secret), :class:`~tracemark.errors.ImageSourceError` (unreadable, or changed since it
    was hashed), the loader's errors, and :func:`render_signed`'s."""
    from tracemark.copydetect.index import new_reference
    from tracemark.credentials.sign import render_signed
    from tracemark.imageio import composite, load_image_with_alpha
    from tracemark.metrics import psnr

    try:
        stamp = (os.stat(setup.cert).st_mtime, os.stat(setup.key).st_mtime)
    except OSError as exc:
        raise CertificateError(f"cannot read the signer's files on this worker: "
                               f"{exc.strerror or exc}", source=setup.cert) from None
    creds = _credentials(setup.cert, setup.key, stamp)
    if _chain_sha256(creds) != setup.chain_sha256:
        raise CertificateError("the certificate at this path on the worker is not the one "
                               "the driver loaded", source=setup.cert)
    wm = _watermark(setup.store_path, setup.watermark_method, setup.secret_check)
    original = read_source(job.source)
    if hashlib.sha256(original).hexdigest() != job.input_sha256:
        raise ImageSourceError("the input changed while it was being signed",
                               source=job.source)
    opts = setup.options
    colour, alpha = load_image_with_alpha(original, max_pixels=opts.max_pixels,
                                          formats=opts.formats, name=job.source)
    rgb = composite(colour, alpha)
    if job.carried is None:
        try:
            carried = wm.carried(rgb)
        except ImageTooSmallError:  # too small to carry a mark: signed without one
            carried = None
        if carried is not None:
            return _Carried(carried)
    mark_id = job.manifest_id if job.carried is None else job.carried
    r = render_signed(rgb, colour, alpha, creds, opts, media_type=job.media_type,
                      title=job.title, store_id=setup.store_id, manifest_id=job.manifest_id,
                      mark_id=mark_id, payload=wm.payload_for(mark_id),
                      mark=wm.mark if job.carried is None else None,
                      supersedes=job.supersedes, original=original, name=job.source)
    del colour, alpha
    described = new_reference(r.distributed, max_features=setup.max_features,
                              source=job.output,
                              notes=json.dumps({"manifest_id": job.manifest_id}))
    return _Signed(signed=r.signed, label=r.label, manifest_json=r.manifest_json,
                   manifest_store=r.manifest_store, file_sha256=r.file_sha256,
                   described=described, psnr=_finite(round(psnr(rgb, r.distributed), 2)),
                   mark_id=mark_id, parent=r.parent, alpha=r.alpha,
                   watermark_skipped=r.watermark_skipped)


# --- what runs here -------------------------------------------------------------------


def _hash_input(source: str) -> str:
    try:
        with open(source, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        raise ImageSourceError("no such file", source=source) from None
    except IsADirectoryError:
        raise ImageSourceError("is a directory", source=source) from None
    except OSError as exc:
        raise ImageSourceError(f"cannot read: {exc.strerror or exc}", source=source) from None


@dataclass
class _Waiting:
    """Items activated and not yet committed: their temp files and results."""

    items: list[tuple[Path, Path, SignResult]] = field(default_factory=list)


def sign_sources(store: CredentialStore, plan: Iterable[tuple[str | os.PathLike[str],
                                                                str | os.PathLike[str]]],
                 executor: Executor, *, cert: str | os.PathLike[str],
                 key: str | os.PathLike[str], creds: SigningCredentials,
                 options: SignOptions | None = None,
                 on_item: Callable[[str, SignResult | None, TracemarkError | None], None],
                 batch_size: int = 32, commit_interval: float = 10.0) -> SignCounts:
    """Sign every ``(input, output)`` of ``plan`` (local paths) into ``store``: see the
    module docstring. ``creds``: the credentials loaded from ``cert`` and ``key`` here
    (checked against the C2PA profile first; the workers read the same files).

    ``on_item(source, result, error)`` gets one call per input: a
    :class:`~tracemark.credentials.SignResult` (``skipped`` for a resumed input; the same
    fields as :func:`sign_image`'s) or the item's typed error; a signed item only after the
    commit that made it durable and the rename of its file. Calls come in completion order.

    Raises :class:`~tracemark.errors.CertificateError` before any work, and the store's
    errors when a commit fails (what was reported before is durable; the uncommitted items
    are rolled back and their temp files removed)."""
    opts = options or SignOptions()
    creds.check()
    setup = SignSetup(
        store_path=str(store.path), store_id=store.store_id, secret_check=store.secret_check,
        watermark_method=store.watermark_method, cert=os.fspath(cert), key=os.fspath(key),
        chain_sha256=_chain_sha256(creds), options=opts,
        max_features=store.match_config.max_features)
    task = functools.partial(sign_task, setup=setup)
    counts = SignCounts()
    waiting = _Waiting()
    last_commit = time.monotonic()
    again: list[tuple[SignJob, int]] = []  # (job, mark id) of inputs carrying our mark
    reserved: set[int] = set()  # manifest ids reserved and not yet activated or discarded

    def failed(source: str, exc: TracemarkError) -> None:
        counts.failed += 1
        if exc.source is None:
            exc.source = source
        on_item(source, None, exc)

    def jobs() -> Iterator[SignJob]:
        for src, dest in plan:
            source, output = os.fspath(src), os.fspath(dest)
            try:
                media_type = mf.media_type_for(Path(output).suffix)
                sha = _hash_input(source)
                if not opts.resign:
                    skipped = _skip(store, sha, Path(output), source)
                    if skipped is not None:
                        counts.resumed += 1
                        on_item(source, skipped[0], None)
                        continue
                title = opts.title or Path(output).name
                mid = store.reserve(title=title, author=opts.author,
                                    ai_generated=opts.is_ai, media_type=media_type,
                                    input_sha256=sha, source_type=opts.create_type)
                reserved.add(mid)
            except TracemarkError as exc:
                failed(source, exc)
                continue
            yield SignJob(source, output, mid, sha, title, media_type)

    def second_round() -> Iterator[SignJob]:
        for job, carried in again:
            try:
                previous = store.resolve_mark(carried)
                mid = store.reserve(title=job.title, author=opts.author,
                                    ai_generated=opts.is_ai, media_type=job.media_type,
                                    input_sha256=job.input_sha256, mark_id=carried,
                                    source_type=opts.create_type)
                reserved.add(mid)
            except TracemarkError as exc:
                failed(job.source, exc)
                continue
            yield replace(job, manifest_id=mid, carried=carried,
                          supersedes=None if previous is None else (previous.id,
                                                                     previous.label))

    def commit() -> None:
        nonlocal last_commit
        try:
            store.commit()
        except BaseException:
            for tmp, _out, _res in waiting.items:
                tmp.unlink(missing_ok=True)
            waiting.items.clear()
            raise
        last_commit = time.monotonic()
        items = list(waiting.items)
        waiting.items.clear()
        for tmp, out, res in items:
            try:
                os.replace(tmp, out)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                failed(res.source, SigningError(
                    f"cannot write the output: {exc.strerror or exc}", source=str(out)))
                continue
            counts.signed += 1
            on_item(res.source, res, None)

    def accept(job: SignJob, v: _Signed) -> None:
        out = Path(job.output)
        tmp = _write_temp(out, v.signed)
        added = None
        try:
            [added] = store.add_described_fingerprints([v.described])
            store.activate(job.manifest_id, label=v.label, ref_id=added.id,
                           file_sha256=v.file_sha256, signer=creds.subject,
                           manifest_json=v.manifest_json, manifest_store=v.manifest_store)
        except TracemarkError:
            tmp.unlink(missing_ok=True)
            if added is not None and added.duplicate_of is None:
                store.remove_fingerprint(added.id)
            raise
        waiting.items.append((tmp, out, SignResult(
            source=job.source, output=job.output, manifest_id=job.manifest_id, label=v.label,
            media_type=job.media_type, ref_id=added.id, file_sha256=v.file_sha256,
            psnr=v.psnr, mark_id=v.mark_id, mark_kept=job.carried is not None,
            supersedes=None if job.supersedes is None else job.supersedes[0],
            input_sha256=job.input_sha256, parent=v.parent, alpha=v.alpha,
            watermark_skipped=v.watermark_skipped)))

    def run(items: Iterator[SignJob]) -> None:
        for done in executor.map_unordered(task, items):
            job: SignJob = done.item
            reserved.discard(job.manifest_id)  # activated or discarded below
            try:
                if done.error is not None:
                    raise done.error
                if isinstance(done.value, _Carried):
                    store.discard(job.manifest_id)
                    again.append((job, done.value.mark_id))
                    continue
                accept(job, done.value)
            except TracemarkError as exc:
                store.discard(job.manifest_id)
                failed(job.source, exc)
            if waiting.items and (len(waiting.items) >= batch_size
                                  or time.monotonic() - last_commit >= commit_interval):
                commit()

    try:
        run(jobs())
        if again:
            run(second_round())
        commit()
    except BaseException:
        for tmp, _out, _res in waiting.items:
            tmp.unlink(missing_ok=True)
        store.rollback()
        _discard_committed(store, reserved)
        raise
    return counts


def _discard_committed(store: CredentialStore, ids: set[int]) -> None:
    """Delete the pending manifests ``ids`` that a commit made durable while their items
    were in flight (best effort, after a failure: a dead driver's are deleted by the next
    writable open instead, as stale)."""
    if not ids:
        return
    try:
        for mid in ids:
            store.discard(mid)
        store.commit()
    except Exception:  # noqa: BLE001 (the job's own error is the one to raise)
        store.rollback()

"""A command prints an item's line only once its write is committed (issue 12, kind 3).

Each test runs the real command in a subprocess, kills it with SIGKILL once it has printed
some lines, reopens the store and checks that every printed write is there. ``index remove``
is also checked with its stdout left unread: a command that printed before committing
blocks on the full pipe with its printed removals uncommitted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tracemark.copydetect import CopyIndex


def _start(*args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from tracemark.cli import main; main()", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def _read_lines(proc: subprocess.Popen[bytes], n: int, timeout: float = 300) -> list[dict]:
    """The first ``n`` JSON lines the command prints (fewer if it ends first)."""
    assert proc.stdout is not None
    lines: list[dict] = []
    end = time.monotonic() + timeout
    while len(lines) < n and time.monotonic() < end:
        raw = proc.stdout.readline()
        if not raw:
            break
        lines.append(json.loads(raw))
    return lines


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _textures(folder: Path, n: int, size: int = 192) -> list[Path]:
    """``n`` distinct textured PNGs that copy detection can describe."""
    folder.mkdir()
    out = []
    for i in range(n):
        small = (np.random.default_rng(i).random((16, 16, 3)) * 255).astype(np.uint8)
        path = folder / f"{i:03d}.png"
        Image.fromarray(small).resize((size, size), Image.BICUBIC).save(path)
        out.append(path)
    return out


@pytest.mark.parametrize("commit_every", ["0", "30"])
def test_index_add_killed_after_its_first_lines_keeps_every_printed_id(
        tmp_path: Path, commit_every: str) -> None:
    _textures(tmp_path / "imgs", 24)
    store = tmp_path / "ix"
    proc = _start("index", "add", tmp_path / "imgs", "--store", store, "--batch-size", "2",
                  "--commit-every", commit_every)
    try:
        printed = _read_lines(proc, 3)
    finally:
        _kill(proc)
    assert printed and all(r["error"] is None for r in printed)
    with CopyIndex.open(store, read_only=True) as ci:
        for row in printed:
            assert row["id"] in ci.index, row  # printed, so committed
            assert ci.index.get(row["id"]).source == row["source"]


def _index_of(store: Path, n: int) -> list[int]:
    """An index of ``n`` references (one real description, distinct content hashes)."""
    from tracemark.copydetect.index import new_reference
    from tracemark.index import NewReference

    img = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    with CopyIndex.create(store) as ci:
        one, _words = new_reference(np.asarray(Image.fromarray(img).resize((128, 128))))
        refs = [NewReference(content_hash=f"{i:064x}", vectors=one.vectors, source=f"r{i}",
                             blobs=one.blobs) for i in range(n)]
        ids = [r.id for r in ci.index.add_many(refs)]
    return ids


def test_index_remove_prints_only_committed_removals(tmp_path: Path) -> None:
    store = tmp_path / "ix"
    ids = _index_of(store, 3000)
    proc = _start("index", "remove", "--store", store, *ids)
    try:
        printed = _read_lines(proc, 1)
        time.sleep(3)  # the command runs on: it prints until the unread pipe is full
    finally:
        _kill(proc)
    assert printed
    with CopyIndex.open(store, read_only=True) as ci:
        left = {r.id for r in ci.index.list(limit=10_000)}
    assert printed[0]["removed"] is True
    assert printed[0]["id"] not in left
    # the removals it printed (a pipe's worth) were committed before they were printed
    assert len(left) < len(ids) - 256 + 1


def test_index_remove_lines_follow_the_commits(tmp_path: Path) -> None:
    store = tmp_path / "ix"
    ids = _index_of(store, 600)
    proc = _start("index", "remove", "--store", store, *ids, 10**9)
    try:
        printed = _read_lines(proc, 300)
    finally:
        _kill(proc)
    with CopyIndex.open(store, read_only=True) as ci:
        left = {r.id for r in ci.index.list(limit=10_000)}
    assert len(printed) >= 256
    for row in printed:
        assert row["removed"] and row["id"] not in left, row


def test_sign_killed_after_its_first_line_keeps_every_printed_manifest(tmp_path: Path) -> None:
    pytest.importorskip("c2pa")
    from tracemark.credentials import CredentialStore, init_dev_ca

    certs = tmp_path / "certs"
    init_dev_ca(certs)
    _textures(tmp_path / "imgs", 6, size=256)
    store = tmp_path / "store"
    proc = _start("sign", tmp_path / "imgs", "--out", tmp_path / "out", "--cert",
                  certs / "signer.pem", "--key", certs / "signer.key", "--store", store)
    try:
        printed = _read_lines(proc, 1)
    finally:
        _kill(proc)
    assert printed and printed[0]["error"] is None, printed
    with CredentialStore.open(store, read_only=True) as cs:
        for row in printed:
            rec = cs.get(row["manifest_id"])  # printed, so stored
            assert rec.label == row["label"]
            assert Path(row["output"]).is_file()

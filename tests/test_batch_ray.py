"""Batch jobs on Ray (``--ray``): the same results as the local path, per-item errors,
re-runs that skip what is registered, a SIGKILLed run that loses no acknowledged item,
fsspec URLs, and a cluster reached by its address.

One Ray cluster serves the whole module: ``ray start --head --num-cpus 2`` on a free
port (stopped after), which this process joins (``ray.init(address=...)``) for the
in-process commands and which subprocess commands reach with ``--ray=127.0.0.1:PORT``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import corpus_images, small_image
from tracemark.cli import main
from tracemark.copydetect import CopyIndex
from tracemark.imageio import save_image

ray = pytest.importorskip("ray")

SRC = Path(__file__).resolve().parents[1] / "src"
N = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_AUTH_MODE"] = "disabled"  # a throw-away cluster on loopback
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a 2-CPU Ray head started for this module; this process joins it."""
    if shutil.which("ray", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("the ray command is not installed beside this Python")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # as the head (see _env)
    head = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
         "--num-cpus", "2", "--port", str(port), "--node-ip-address", "127.0.0.1",
         "--object-store-memory", str(256 * 1024**2), "--include-dashboard", "false",
         "--disable-usage-stats"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        end = time.monotonic() + 60
        while True:
            try:
                ray.init(address=address, log_to_driver=False, logging_level="warning")
                break
            except (ConnectionError, RuntimeError):
                if time.monotonic() > end or head.poll() is not None:
                    raise
                time.sleep(1)
        yield address
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
        # --block: SIGTERM makes `ray start` stop the processes of this head (and only them)
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(30)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """N small corpus images (PNG, long side 128) in a folder."""
    folder = tmp_path_factory.mktemp("batch") / "images"
    folder.mkdir()
    for i, p in enumerate(corpus_images(n=N)):
        save_image(small_image(p, 128), folder / f"im{i:02d}.png")
    return folder


def _invoke(*args: str | Path) -> tuple[int, list[dict]]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, [json.loads(line) for line in res.stdout.splitlines() if line]


def _refs(store: Path) -> dict[str, dict]:
    """content hash -> source, pdq and vlad rows of every reference."""
    with CopyIndex.open(store, read_only=True) as ci:
        out = {}
        for ref in ci.index.list(limit=10_000):
            assert ref.content_hash not in out, "two references hold the same pixels"
            out[ref.content_hash] = {"source": ref.source,
                                     "pdq": ci.index.vectors(ref.id, "pdq"),
                                     "vlad": ci.index.vectors(ref.id, "vlad")}
        return out


def _same_fingerprints(a: dict[str, dict], b: dict[str, dict], *, sources: bool = True) -> None:
    assert a.keys() == b.keys()
    for h in a:
        if sources:
            assert a[h]["source"] == b[h]["source"]
        np.testing.assert_array_equal(a[h]["pdq"], b[h]["pdq"])
        np.testing.assert_allclose(a[h]["vlad"], b[h]["vlad"], atol=1e-6)


@pytest.fixture(scope="module")
def local_index(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("local") / "index"
    code, lines = _invoke("index", "add", "--store", store, images)
    assert code == 0 and len(lines) == N
    return store


def test_index_add_on_ray_matches_the_local_path_and_reports_bad_items(
        cluster: str, images: Path, local_index: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    missing = tmp_path / "missing.png"
    store = tmp_path / "index"
    code, lines = _invoke("index", "add", "--store", store, "--ray=local", images, bad, missing)
    assert code == 1  # some items failed, the rest landed
    by_source = {row["source"]: row for row in lines}
    assert len(lines) == N + 2 and len(by_source) == N + 2
    assert by_source[str(bad)]["error"]["type"] == "CorruptImageError"
    assert by_source[str(missing)]["error"]["type"] == "ImageSourceError"
    assert sum(row["error"] is None and row["duplicate_of"] is None for row in lines) == N
    _same_fingerprints(_refs(store), _refs(local_index))

    # a re-run skips everything (the registered rows name their reference)
    code, again = _invoke("index", "add", "--store", store, "--ray=local", images)
    assert code == 0 and len(again) == N
    assert all(row["id"] is not None and row["duplicate_of"] == row["id"] for row in again)
    assert len(_refs(store)) == N


def test_a_rerun_skips_registered_images_before_describing_them(
        cluster: str, images: Path, tmp_path: Path) -> None:
    from tracemark.batch import RayExecutor, ingest

    store = tmp_path / "index"
    sources = sorted(str(p) for p in images.iterdir())
    rows: list[dict] = []
    with CopyIndex.create(store) as ci, RayExecutor() as ex:
        first = ingest(ci, sources[:5], ex, on_item=rows.append, batch_size=2)
        assert (first.added, first.registered, first.failed) == (5, 0, 0)
        second = ingest(ci, sources, ex, on_item=rows.append, batch_size=4)
        # the first five were found by their content hash, never described again
        assert (second.added, second.registered, second.duplicates) == (N - 5, 5, 0)
    assert len(_refs(store)) == N


def test_sigkill_mid_run_loses_no_acknowledged_image_and_a_rerun_completes(
        cluster: str, images: Path, local_index: Path, tmp_path: Path) -> None:
    store = tmp_path / "index"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tracemark.cli import main; main()", "index", "add",
         "--store", str(store), f"--ray={cluster}", "--batch-size", "2", "--commit-every",
         "0", str(images)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env())
    assert proc.stdout is not None
    acknowledged = []
    end = time.monotonic() + 120
    while len(acknowledged) < 4 and time.monotonic() < end:
        raw = proc.stdout.readline()
        if not raw:
            break
        acknowledged.append(json.loads(raw))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert len(acknowledged) == 4, "the command printed no lines before the kill"
    kept = {ref["source"] for ref in _refs(store).values()}
    assert {row["source"] for row in acknowledged} <= kept
    assert len(kept) < N, "the command finished before the kill: nothing was tested"

    code, lines = _invoke("index", "add", "--store", store, f"--ray={cluster}", images)
    assert code == 0 and len(lines) == N
    _same_fingerprints(_refs(store), _refs(local_index))


def test_file_urls_are_inputs(cluster: str, images: Path, local_index: Path,
                              tmp_path: Path) -> None:
    store = tmp_path / "index"
    (images.parent / "notes.txt").write_text("not an image")
    code, lines = _invoke("index", "add", "--store", store, "--ray", "--",
                          images.as_uri() + "/", (images.parent / "notes.txt").as_uri())
    assert code == 1  # the text file named by its URL is a failed item
    assert sum(row["error"] is None for row in lines) == N
    refs = _refs(store)
    assert all(r["source"].startswith("file://") for r in refs.values())
    _same_fingerprints(refs, _refs(local_index), sources=False)


def _matches(lines: list[dict]) -> dict[str, list[tuple]]:
    return {row["query"]: sorted((m["source"], m["inliers"], m["decision"])
                                 for m in row["matches"]) for row in lines if "query" in row}


def test_search_and_scan_on_ray_match_the_local_path(
        cluster: str, images: Path, local_index: Path, tmp_path: Path) -> None:
    queries = tmp_path / "queries"
    queries.mkdir()
    for p in sorted(images.iterdir())[:6]:  # edited copies: crop and darken
        im = np.asarray(small_image(p, 128))
        save_image((im[8:-8, 8:-8] * 0.8).astype(np.uint8), queries / p.name)
    (queries / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for cmd in (["search", "--store", local_index, "--all"],
                ["scan", "--against", local_index]):
        code, lines = _invoke(*cmd, queries)
        code_ray, lines_ray = _invoke(*cmd, "--ray=local", queries)
        assert code == code_ray == 1  # the broken query failed, the rest were searched
        assert _matches(lines) == _matches(lines_ray)
        assert sum(any(m["decision"] for m in r["matches"]) for r in lines_ray
                   if "query" in r) >= 3  # small (128 px) edited copies: most are found


def test_watermark_detect_on_ray_matches_the_local_path(cluster: str, images: Path,
                                                       tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(bytes(range(32)))
    marked = tmp_path / "marked"
    folder = tmp_path / "in"
    folder.mkdir()
    for i, p in enumerate(corpus_images(n=3)):
        save_image(small_image(p, 256), folder / f"w{i}.png")
    code, _ = _invoke("watermark", "embed", "--key-file", key, "--payload", "0x2a", "--out",
                      marked, folder)
    assert code == 0
    shutil.copy(folder / "w0.png", marked / "unmarked.png")
    code, lines = _invoke("watermark", "detect", "--key-file", key, marked)
    code_ray, lines_ray = _invoke("watermark", "detect", "--key-file", key, "--ray=local", marked)
    assert code == code_ray == 11  # found in some
    key_of = lambda rows: {r["source"]: (r["present"], r["payload"]) for r in rows}  # noqa: E731
    assert key_of(lines) == key_of(lines_ray)
    assert key_of(lines_ray)[str(marked / "unmarked.png")][0] is False


def test_ray_executor_keeps_the_work_in_flight_bounded(cluster: str) -> None:
    from tracemark.batch import RayExecutor
    from tracemark.batch.sources import is_url  # a picklable module-level function

    consumed = 0

    def items() -> Iterator[str]:
        nonlocal consumed
        for i in range(40):
            consumed += 1
            yield f"x{i}://y" if i % 2 else f"plain{i}"

    with RayExecutor(max_in_flight=3) as ex:
        seen = 0
        for done in ex.map_unordered(is_url, items()):
            seen += 1
            assert consumed - seen <= 3
            assert done.value == done.item.startswith("x")
    assert seen == 40


def test_a_path_after_a_bare_ray_is_refused_as_an_address(images: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["index", "add", "--store", str(tmp_path / "i"), "--ray",
                                    str(images)])
    assert res.exit_code == 2 and "not a Ray address" in res.output
    assert not (tmp_path / "i").exists()


def test_ray_with_an_unreachable_address_is_a_usage_error(images: Path, tmp_path: Path) -> None:
    code = subprocess.run(
        [sys.executable, "-c", "from tracemark.cli import main; main()", "index", "add",
         "--store", str(tmp_path / "i"), f"--ray=127.0.0.1:{_free_port()}",
         str(images)], env=_env(), capture_output=True, timeout=120)
    assert code.returncode == 2, code.stderr.decode()[-2000:]

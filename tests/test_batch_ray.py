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
                          images.as_uri() + "/", (images.parent / "notes.txt").as_uri(),
                          "nosuchprotocol://host/folder/")
    assert code == 1  # the text file named by its URL, the unlistable URL: failed items
    assert sum(row["error"] is None for row in lines) == N
    bad = [row for row in lines if row["error"] is not None]
    assert {row["source"].split("/")[-1] or row["source"] for row in bad} >= {"notes.txt"}
    assert any("nosuchprotocol" in row["source"] for row in bad)
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
    assert not (tmp_path / "i").exists()  # no index was created for a batch that never ran


# --- watermark embed --ray and sign --ray ------------------------------------------------


@pytest.fixture(scope="module")
def few(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """Four corpus images (long side 256): three PNG, one JPEG, and one PNG with an
    alpha channel (its colour and transparency are both kept by embed and sign)."""
    from tracemark.imageio import save_image_with_alpha

    folder = tmp_path_factory.mktemp("few") / "in"
    folder.mkdir()
    paths = corpus_images(n=4)
    for i, p in enumerate(paths[:2]):
        save_image(small_image(p, 256), folder / f"p{i}.png")
    save_image(small_image(paths[2], 256), folder / "j2.jpg", quality=92)
    im = small_image(paths[3], 256)
    alpha = np.full(im.shape[:2], 255, np.uint8)
    alpha[:40] = 90  # a translucent band
    save_image_with_alpha(im, alpha, folder / "a3.png")
    return folder


def _by_name(rows: list[dict], field: str = "source") -> dict[str, dict]:
    return {Path(r[field]).name: r for r in rows if r.get(field)}


def test_watermark_embed_on_ray_matches_the_local_path_and_a_rerun_resumes(
        cluster: str, few: Path, tmp_path: Path) -> None:
    from tracemark.imageio import load_image

    key = tmp_path / "key"
    key.write_bytes(bytes(range(32)))
    bad = tmp_path / "bad" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    args = ("watermark", "embed", "--key-file", key, "--payload", "0x2a")
    code, local = _invoke(*args, "--out", tmp_path / "local", few, bad)
    code_ray, on_ray = _invoke(*args, "--out", tmp_path / "ray", "--ray=local", few, bad)
    assert code == code_ray == 1  # the broken input failed, the rest were written
    local_rows, ray_rows = _by_name(local), _by_name(on_ray)
    assert local_rows.keys() == ray_rows.keys() == {"p0.png", "p1.png", "j2.jpg", "a3.png",
                                                    "broken.png"}
    assert ray_rows["broken.png"]["error"]["type"] == "CorruptImageError"
    assert ray_rows["broken.png"]["output"] is None
    assert not (tmp_path / "ray" / "broken.png").exists()
    for name, row in local_rows.items():
        other = ray_rows[name]
        assert {k: v for k, v in row.items() if k not in ("output", "error")} == \
            {k: v for k, v in other.items() if k not in ("output", "error")}
        if row["output"] is not None:
            assert Path(row["output"]).name == Path(other["output"]).name
            # the same pixels (and the alpha channel) as the local path wrote
            np.testing.assert_array_equal(load_image(row["output"]), load_image(other["output"]))
    assert ray_rows["a3.png"]["alpha"] == "kept"
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == \
        sorted(p.name for p in (tmp_path / "local").iterdir())  # no temp file left

    code, found = _invoke("watermark", "detect", "--key-file", key, tmp_path / "ray")
    assert code == 0 and {r["payload"] for r in found} == {"0x000000000000002a"[:len(
        found[0]["payload"])]} and all(r["present"] for r in found)

    # a re-run: what is written already carries the payload and is skipped, not rewritten
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()}
    code, again = _invoke(*args, "--out", tmp_path / "ray", "--ray=local", few)
    assert code == 0 and len(again) == 4 and all(r["skipped"] for r in again)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()}
    # an existing output that is not this run's still needs --force (nothing written)
    save_image(np.zeros((64, 64, 3), np.uint8), tmp_path / "ray" / "p0.png")
    code, _ = _invoke(*args, "--out", tmp_path / "ray", "--ray=local", few)
    assert code == 2
    assert stamps["p1.png"] == (tmp_path / "ray" / "p1.png").stat().st_mtime_ns
    code, forced = _invoke(*args, "--out", tmp_path / "ray", "--force", "--ray=local", few)
    assert code == 0 and all(r["mark"] in ("embedded", "kept") for r in forced)
    np.testing.assert_array_equal(load_image(tmp_path / "ray" / "p0.png"),
                                  load_image(tmp_path / "local" / "p0.png"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    code, _ = _invoke("certs", "init", folder)
    assert code == 0
    return folder


def _sign(certs: Path, store: Path, out: Path, *inputs: str | Path) -> tuple[int, list[dict]]:
    return _invoke("sign", "--cert", certs / "signer.pem", "--key", certs / "signer.key",
                   "--store", store, "--out", out, *inputs)


def _store_counts(store: Path) -> tuple[int, int, int]:
    from tracemark.credentials import CredentialStore

    with CredentialStore.open(store, read_only=True) as cs:
        stats = cs.stats()
        return stats["manifests"], stats["pending"], cs.fingerprint_count()


SAME_FIELDS = ("media_type", "psnr", "mark_kept", "skipped", "input_sha256", "parent",
               "alpha", "supersedes")


def test_sign_on_ray_matches_the_local_path_and_verifies(
        cluster: str, few: Path, certs: Path, tmp_path: Path) -> None:
    from tracemark.imageio import load_image

    bad = tmp_path / "bad" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    from tracemark.credentials import CredentialStore

    for name in ("store-local", "store-ray"):  # the same watermark key: the same pixels
        CredentialStore.create(tmp_path / name, secret=bytes(range(32))).close()
    code, local = _sign(certs, tmp_path / "store-local", tmp_path / "local", few, bad)
    code_ray, on_ray = _sign(certs, tmp_path / "store-ray", tmp_path / "ray", "--ray=local",
                             few, bad)
    assert code == code_ray == 1
    local_rows, ray_rows = _by_name(local), _by_name(on_ray)
    assert local_rows.keys() == ray_rows.keys()
    assert ray_rows["broken.jpg"]["error"]["type"] == "CorruptImageError"
    for name, row in local_rows.items():
        other = ray_rows[name]
        assert {f: row.get(f) for f in SAME_FIELDS} == {f: other.get(f) for f in SAME_FIELDS}, (row, other)
        if row["error"] is None:
            assert Path(row["output"]).name == Path(other["output"]).name
            assert other["mark_id"] == other["manifest_id"]
            np.testing.assert_array_equal(load_image(row["output"]), load_image(other["output"]))
    assert sorted(r["manifest_id"] for r in on_ray if r["error"] is None) == [1, 2, 3, 4]
    assert _store_counts(tmp_path / "store-ray") == (4, 0, 4)
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == \
        sorted(p.name for p in (tmp_path / "local").iterdir())  # no temp file left

    # c2pa validates every signed file, and the store recovers a stripped copy by its mark
    code, verified = _invoke("verify", "--trust", certs / "ca.pem", "--store",
                             tmp_path / "store-ray", tmp_path / "ray")
    assert code == 0 and {r["state"] for r in verified} == {"trusted"}
    ids = {Path(r["source"]).name: r["manifest_id"] for r in verified}
    assert ids == {Path(r["output"]).name: r["manifest_id"] for r in on_ray if r["output"]}
    stripped = tmp_path / "stripped" / "p0.png"
    stripped.parent.mkdir()
    save_image(load_image(tmp_path / "ray" / "p0.png"), stripped)
    code, (row,) = _invoke("verify", "--trust", certs / "ca.pem", "--store",
                           tmp_path / "store-ray", stripped)
    assert (row["state"], row["manifest_id"]) == ("recovered", ids["p0.png"])

    # re-signing the stripped copy keeps its mark: the new manifest supersedes the first,
    # as without --ray (the second round of the job)
    code, (kept,) = _sign(certs, tmp_path / "store-ray", tmp_path / "again", "--ray=local",
                          stripped)
    assert code == 0 and kept["mark_kept"] is True
    assert (kept["mark_id"], kept["supersedes"]) == (ids["p0.png"], ids["p0.png"])
    assert kept["manifest_id"] == 5
    # the same pixels as p0's signed file (PNG, mark kept): its fingerprint is p0's
    assert _store_counts(tmp_path / "store-ray") == (5, 0, 4)

    # a re-run skips what is signed: nothing new in the store, outputs untouched
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()}
    code, again = _sign(certs, tmp_path / "store-ray", tmp_path / "ray", "--ray=local", few)
    assert code == 0 and len(again) == 4 and all(r["skipped"] for r in again)
    assert {Path(r["output"]).name: r["manifest_id"] for r in again} == \
        {k: v for k, v in ids.items()}
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()}
    assert _store_counts(tmp_path / "store-ray") == (5, 0, 4)


class _Crash(Exception):
    """Stands for the driver dying (not a TracemarkError: nothing handles it)."""


def test_a_crashed_sign_job_loses_nothing_reported_and_a_rerun_completes(
        cluster: str, certs: Path, tmp_path: Path, corpus_dir: Path) -> None:
    from tracemark.batch import RayExecutor, sign_sources
    from tracemark.credentials import CredentialStore, load_signing_credentials

    store, out = tmp_path / "store", tmp_path / "out"
    (tmp_path / "in").mkdir()
    inputs = []
    for i, p in enumerate(corpus_images(n=8)):
        inputs.append(tmp_path / "in" / f"s{i}.png")
        save_image(small_image(p, 256), inputs[-1])
    plan = [(str(p), str(out / p.name)) for p in inputs]
    creds = load_signing_credentials(certs / "signer.pem", certs / "signer.key")
    reported: list[str] = []

    def on_item(source: str, res: object, error: object) -> None:
        assert error is None
        reported.append(source)
        if len(reported) == 3:
            raise _Crash

    with pytest.raises(_Crash), CredentialStore.open_or_create(store) as cs, \
            RayExecutor(max_in_flight=2) as ex:
        sign_sources(cs, plan, ex, cert=certs / "signer.pem", key=certs / "signer.key",
                     creds=creds, on_item=on_item, batch_size=1)
    manifests, pending, fingerprints = _store_counts(store)
    assert 3 <= manifests < len(inputs) and pending == 0 and fingerprints == manifests
    for source in reported:  # every reported item: its file is in place
        assert (out / Path(source).name).is_file()

    code, lines = _sign(certs, store, out, "--ray=local", *inputs)
    assert code == 0 and len(lines) == len(inputs)
    skipped = {Path(r["source"]).name for r in lines if r["skipped"]}
    assert {Path(s).name for s in reported} <= skipped and len(skipped) == manifests
    assert _store_counts(store) == (len(inputs), 0, len(inputs))
    code, verified = _invoke("verify", "--trust", certs / "ca.pem", "--store", store, out)
    assert code == 0 and len(verified) == len(inputs)
    assert {r["state"] for r in verified} == {"trusted"}

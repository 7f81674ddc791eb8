"""Crash leftovers in signing (issue 12, kind 6) and re-signing a marked image (kind 7).

Real processes are killed with SIGKILL mid-run; the stores, c2pa and the watermark are the
real ones. Images are crops of the shared corpus written here.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import c2pa
import numpy as np
import pytest

from tracemark.credentials import (
    CredentialStore,
    SigningCredentials,
    init_dev_ca,
    load_signing_credentials,
    sign_image,
    verify_image,
)
from tracemark.credentials.store import PENDING_MAX_AGE_SECONDS, SQLITE_NAME
from tracemark.imageio import encode_image, load_image

from .conftest import CORPUS
from .conftest import corpus_crop as small

IMAGES = ["art/debian_1.jpg", "art/debian_2.jpg", "art/debian_3.jpg", "photo/gcompris_100.jpg",
          "photo/gcompris_60.jpg", "art/gcompris_20.jpg", "art/gcompris_10.jpg"]
CLI = "from tracemark.cli import main; main()"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def certs(work: Path) -> Path:
    return init_dev_ca(work / "ca").directory


@pytest.fixture(scope="module")
def creds(certs: Path) -> SigningCredentials:
    return load_signing_credentials(certs / "signer.pem", certs / "signer.key")


def states(store: Path) -> dict[str, int]:
    with sqlite3.connect(store / SQLITE_NAME) as db:
        return dict(db.execute("select state, count(*) from manifests group by state").fetchall())


def sign_cmd(certs: Path, folder: Path, out: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", CLI, "sign", str(folder), "--out", str(out), "--cert",
            str(certs / "signer.pem"), "--key", str(certs / "signer.key"), "--store",
            str(store), *extra]


def rows(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


# --- kind 6: kill, re-run -----------------------------------------------------------------


def test_a_run_killed_mid_way_resumes_without_signing_twice(work: Path, certs: Path) -> None:
    folder, out, store = work / "in", work / "out", work / "store"
    folder.mkdir()
    for i, rel in enumerate(IMAGES):
        (folder / f"{i}.png").write_bytes(encode_image(small(rel), "PNG"))
    proc = subprocess.Popen(sign_cmd(certs, folder, out, store), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    first = [proc.stdout.readline() for _ in range(2)]  # two images are done
    time.sleep(0.3)  # into the third
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert all(json.loads(line)["error"] is None for line in first)
    done = states(store).get("active", 0)
    assert 2 <= done < len(IMAGES)

    res = subprocess.run(sign_cmd(certs, folder, out, store), capture_output=True, text=True,
                         timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    lines = rows(res.stdout)
    assert len(lines) == len(IMAGES)
    assert sum(r["skipped"] for r in lines) == done  # reported, not signed again
    assert states(store) == {"active": len(IMAGES)}  # one manifest per file, nothing pending
    assert len(list(out.glob("*.png"))) == len(IMAGES)
    assert not list(out.glob(".*.tmp-*"))
    with CredentialStore.open(store, read_only=True) as cs:
        assert cs.fingerprint_count() == len(IMAGES)

    again = subprocess.run(sign_cmd(certs, folder, out, store), capture_output=True, text=True,
                           timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert all(r["skipped"] for r in rows(again.stdout))
    assert states(store) == {"active": len(IMAGES)}


def test_resign_signs_again_and_an_unrelated_output_still_needs_force(
    work: Path, certs: Path, tmp_path: Path
) -> None:
    folder, out, store = tmp_path / "in", tmp_path / "out", tmp_path / "store"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode_image(small(IMAGES[0]), "PNG"))
    assert subprocess.run(sign_cmd(certs, folder, out, store), capture_output=True,
                          timeout=600, check=False).returncode == 0
    res = subprocess.run(sign_cmd(certs, folder, out, store, "--resign"), capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 2 and "exists" in res.stderr  # --resign overwrites: --force
    res = subprocess.run(sign_cmd(certs, folder, out, store, "--resign", "--force"),
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    assert rows(res.stdout)[0]["skipped"] is False and states(store) == {"active": 2}
    (out / "a.png").write_bytes(encode_image(small(IMAGES[1]), "PNG"))  # not ours any more
    res = subprocess.run(sign_cmd(certs, folder, out, store), capture_output=True, text=True,
                         timeout=600, check=False)
    assert res.returncode == 2 and "is not the file this store signed" in res.stderr


_HOLDER = """
import sys, time
from tracemark.credentials import CredentialStore
with CredentialStore.open(sys.argv[1]) as cs:
    mid = cs.reserve(title="t", author=None, ai_generated=False, media_type="image/png")
    cs.commit()
    print(mid, flush=True)
    time.sleep(600)
"""


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("flags", [(), ("--force",)])
def test_a_new_file_joining_the_folder_is_signed_alone(
    work: Path, certs: Path, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    """a.bmp a.ppm a.png were signed as a.png, a-2.png, a-3.png (clash renames); a.avif
    joins: the three are found by content wherever their outputs went and skipped (with
    --force too), the new one is signed into a name that clashes with nothing."""
    from PIL import Image

    folder, out, store = tmp_path / "r1", tmp_path / "r1out", tmp_path / "r1store"
    folder.mkdir()
    for i, (name, fmt) in enumerate([("a.bmp", "BMP"), ("a.ppm", "PPM"), ("a.png", "PNG")]):
        Image.fromarray(small(IMAGES[i])).save(folder / name, fmt)
    first = subprocess.run(sign_cmd(certs, folder, out, store), capture_output=True,
                           text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr
    before = {p.name: _sha(p) for p in out.iterdir()}
    assert sorted(before) == ["a-2.png", "a-3.png", "a.png"]
    by_source = {Path(r["source"]).name: Path(r["output"]).name for r in rows(first.stdout)}

    Image.fromarray(small(IMAGES[3])).save(folder / "a.avif", "AVIF")
    res = subprocess.run(sign_cmd(certs, folder, out, store, *flags), capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    lines = {Path(r["source"]).name: r for r in rows(res.stdout)}
    assert sorted(lines) == ["a.avif", "a.bmp", "a.png", "a.ppm"]
    for name, output in by_source.items():  # the same output, untouched, not signed again
        assert lines[name]["skipped"] is True and Path(lines[name]["output"]).name == output
    assert lines["a.avif"]["skipped"] is False and lines["a.avif"]["error"] is None
    new = Path(lines["a.avif"]["output"])
    assert new.name not in before and new.is_file()
    assert {p.name: _sha(p) for p in out.iterdir() if p != new} == before
    assert states(store) == {"active": 4}  # one manifest per file

    # --resign --force signs each input again into its own earlier output
    again = subprocess.run(sign_cmd(certs, folder, out, store, "--resign", "--force"),
                           capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    outputs = {Path(r["source"]).name: Path(r["output"]).name for r in rows(again.stdout)}
    assert outputs == {**by_source, "a.avif": new.name}
    assert not any(r["skipped"] for r in rows(again.stdout))
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, new.name])


def test_a_killed_signers_pending_row_is_cleaned_and_a_live_ones_kept(tmp_path: Path) -> None:
    store = tmp_path / "store"
    CredentialStore.create(store).close()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(store)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        mid = int(holder.stdout.readline())
        assert states(store) == {"pending": 1}
        with CredentialStore.open(store) as cs:  # a concurrent signer: its row stays
            assert cs.cleaned_pending == []
        assert states(store) == {"pending": 1}
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    with CredentialStore.open(store, read_only=True) as cs:  # read-only opens change nothing
        assert cs.stats()["pending"] == 1
    with CredentialStore.open(store) as cs:
        assert cs.cleaned_pending == [mid]
    assert states(store) == {}


@pytest.mark.parametrize(("age", "cleaned"), [(PENDING_MAX_AGE_SECONDS + 60, True), (60, False)])
def test_another_hosts_pending_row_is_cleaned_only_when_old(
    tmp_path: Path, age: int, cleaned: bool
) -> None:
    store = tmp_path / "store"
    with CredentialStore.create(store) as cs:
        mid = cs.reserve(title="t", author=None, ai_generated=False, media_type="image/png")
    created = (datetime.now(UTC) - timedelta(seconds=age)).isoformat(timespec="seconds")
    with sqlite3.connect(store / SQLITE_NAME) as db:
        db.execute("update manifests set created_at = ? where id = ?", (created, mid))
        db.execute("update signings set owner = 'elsewhere.example:1' where manifest_id = ?",
                   (mid,))
    with CredentialStore.open(store) as cs:
        assert cs.cleaned_pending == ([mid] if cleaned else [])


def test_a_failed_sign_leaves_no_store_it_created(work: Path, certs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 10)
    store = tmp_path / "new-store"
    res = subprocess.run(sign_cmd(certs, folder, tmp_path / "out", store), capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 3, res.stderr  # no item could be processed
    assert not store.exists()
    kept = tmp_path / "kept-store"
    CredentialStore.create(kept).close()
    res = subprocess.run(sign_cmd(certs, folder, tmp_path / "out2", kept), capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 3, res.stderr
    with CredentialStore.open(kept, read_only=True) as cs:  # a store that was there stays
        assert len(cs) == 0
    empty_dir = tmp_path / "empty-dir"
    empty_dir.mkdir()
    subprocess.run(sign_cmd(certs, folder, tmp_path / "out3", empty_dir), capture_output=True,
                   timeout=600, check=False)
    assert empty_dir.is_dir() and not any(empty_dir.iterdir())  # the folder the user made


def test_library_resume_finishes_a_rename_a_crash_interrupted(
    tmp_path: Path, creds: SigningCredentials
) -> None:
    src = tmp_path / "in.png"
    src.write_bytes(encode_image(small(IMAGES[0]), "PNG"))
    dest = tmp_path / "out" / "a.jpg"
    with CredentialStore.create(tmp_path / "store") as store:
        first, data = sign_image(store, src, dest, creds)
        dest.rename(dest.with_name(f".{dest.name}.tmp-99999999"))  # killed before the rename
        again, data2 = sign_image(store, src, dest, creds)
        assert again.skipped and again.manifest_id == first.manifest_id
        assert data2 == data and dest.read_bytes() == data
        assert len(store) == 1


# --- kind 7: re-signing keeps the mark -----------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_signing_three_times_keeps_one_mark_resolving_to_the_newest(
    tmp_path: Path, creds: SigningCredentials, suffix: str
) -> None:
    src = tmp_path / "in.png"
    src.write_bytes(encode_image(small(IMAGES[0]), "PNG"))
    with CredentialStore.create(tmp_path / "store") as store:
        prev, results = src, []
        for i in range(3):
            dest = tmp_path / f"signed{i}{suffix}"
            res, _ = sign_image(store, prev, dest, creds)
            results.append(res)
            if i:  # the pixels change at most by the re-encode of the previous file
                before = load_image(prev)
                fmt = "PNG" if suffix == ".png" else "JPEG"
                reencoded = load_image(encode_image(before, fmt, quality=None if fmt == "PNG"
                                                    else 95))
                assert np.array_equal(load_image(dest), reencoded)
            prev = dest
        first, last = results[0], results[-1]
        assert [r.mark_id for r in results] == [first.manifest_id] * 3
        assert [r.mark_kept for r in results] == [False, True, True]
        assert [r.supersedes for r in results] == [None, results[0].manifest_id,
                                                    results[1].manifest_id]
        det = store.read_mark(load_image(prev), assisted=False)
        assert det.present and store.id_from_payload(det.payload_int) == first.manifest_id
        stripped = encode_image(load_image(prev), "PNG")  # no manifest: through the mark
        v = verify_image(stripped, store)
        assert v.state == "recovered" and v.route == "watermark"
        assert v.manifest_id == last.manifest_id
        assert store.resolve_mark(first.manifest_id).id == last.manifest_id
        embedded = verify_image(prev, store)
        assert embedded.manifest_id == last.manifest_id
        with c2pa.Reader("image/jpeg" if suffix == ".jpg" else "image/png",
                         io.BytesIO(prev.read_bytes())) as r:
            active = r.get_active_manifest()
            data = r.json()
        credential = [a["data"] for a in active["assertions"]
                      if a["label"] == "org.tracemark.credential"][0]
        assert credential["supersedes"]["manifest_id"] == results[1].manifest_id
        assert credential["mark_manifest_id"] == first.manifest_id
        # the parent ingredient is the previous signed file, with its manifest
        assert results[1].label in data


def test_a_cli_re_sign_of_signed_outputs_keeps_the_mark(
    work: Path, certs: Path, tmp_path: Path
) -> None:
    src = tmp_path / "a.png"
    src.write_bytes(encode_image(small(IMAGES[2]), "PNG"))
    store = tmp_path / "store"
    cur = src
    for i in range(3):
        nxt = tmp_path / f"s{i}.png"
        res = subprocess.run(sign_cmd(certs, cur, nxt, store), capture_output=True, text=True,
                             timeout=600, check=False)
        assert res.returncode == 0, res.stderr
        row = rows(res.stdout)[0]
        assert row["mark_kept"] is (i > 0) and row["mark_id"] == 1
        cur = nxt
    with CredentialStore.open(store, read_only=True) as cs:
        assert cs.resolve_mark(1).id == 3
    env = {**os.environ}
    res = subprocess.run([sys.executable, "-c", CLI, "verify", str(cur), "--store", str(store)],
                         capture_output=True, text=True, timeout=600, check=False, env=env)
    assert rows(res.stdout)[0]["manifest_id"] == 3


def test_a_create_that_fails_half_way_leaves_nothing(tmp_path: Path) -> None:
    # the database cannot be made: the secret is already written when that fails
    url = f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}"
    with pytest.raises(Exception):  # noqa: B017 - the database driver's own error
        CredentialStore.create(tmp_path / "second", database_url=url)
    assert not (tmp_path / "second").exists()
    (tmp_path / "third").mkdir()
    with pytest.raises(Exception):  # noqa: B017
        CredentialStore.create(tmp_path / "third", database_url=url)
    assert (tmp_path / "third").is_dir() and not any((tmp_path / "third").iterdir())

"""`tracemark certs init`, `sign`, `verify` and `credentials stats|list|show`: JSON lines on
stdout, exit codes, and errors that name the problem. Real c2pa, store and watermark."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tracemark.cli import main
from tracemark.cli._common import EXIT_INVALID, EXIT_SOME_FOUND
from tracemark.cli._common import EXIT_NONE_FOUND as EXIT_NOT_FOUND
from tracemark.credentials import init_dev_ca
from tracemark.imageio import encode_image, load_image

from .conftest import CORPUS
from .conftest import corpus_crop as small

UNSIGNED = ("art/gcompris_21.jpg", "photo/gcompris_62.jpg")


def _run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def _rows(res: Result) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]




def flip(data: bytes, pos: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 0xFF
    return bytes(out)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    root = tmp_path_factory.mktemp("cli-credentials")
    (root / "in").mkdir()
    (root / "in" / "art.png").write_bytes(encode_image(small("art/debian_1.jpg"), "PNG"))
    folder = root / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.jpg").write_bytes(encode_image(small("art/debian_2.jpg"), "JPEG", quality=95))
    (folder / "sub" / "two.png").write_bytes(encode_image(small("photo/gcompris_100.jpg"), "PNG"))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return root


@pytest.fixture(scope="module")
def certs(work: Path) -> Path:
    res = _run("certs", "init", work / "certs")
    assert res.exit_code == 0, res.output
    (row,) = _rows(res)
    assert row["ca"] == str(work / "certs" / "ca.pem")
    assert row["cert"] == str(work / "certs" / "signer.pem")
    assert row["key"] == str(work / "certs" / "signer.key")
    assert "TEST ONLY" in row["note"] and "TEST ONLY" in res.stderr
    assert dt.datetime.fromisoformat(row["not_after"]) > dt.datetime.now(dt.UTC)
    return work / "certs"


@pytest.fixture(scope="module")
def store(work: Path) -> Path:
    return work / "store"


def _sign(certs: Path, store: Path, src: str | Path, out: str | Path, *args: str | Path) -> Result:
    return _run("sign", src, "--out", out, *args, "--cert", certs / "signer.pem",
                "--key", certs / "signer.key", "--store", store)


@pytest.fixture(scope="module")
def signed_file(work: Path, certs: Path, store: Path) -> dict:
    out = work / "out" / "art.jpg"
    res = _sign(certs, store, work / "in" / "art.png", out, "--author", "Ada", "--title", "Art")
    assert res.exit_code == 0, res.output
    (row,) = _rows(res)
    assert row["output"] == str(out) and out.is_file()
    assert row["source"] == str(work / "in" / "art.png")
    assert row["media_type"] == "image/jpeg" and row["manifest_id"] >= 1
    assert row["psnr"] > 38
    assert "development certificate" in res.stderr and "signed 1 of 1" in res.stderr
    return row


@pytest.fixture(scope="module")
def signed_folder(work: Path, certs: Path, store: Path, signed_file: dict) -> Result:
    return _sign(certs, store, work / "folder", work / "signed-folder")


# --- certs ---------------------------------------------------------------------------------


def test_certs_init_writes_the_files(certs: Path) -> None:
    assert sorted(p.name for p in certs.iterdir()) == [
        "README.txt", "ca.key", "ca.pem", "signer.key", "signer.pem"]
    assert (certs / "signer.key").stat().st_mode & 0o777 == 0o600


def test_certs_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert _run("certs", "init", tmp_path).exit_code == 0
    key = (tmp_path / "signer.key").read_bytes()
    res = _run("certs", "init", tmp_path)
    assert res.exit_code != 0
    assert "refusing to overwrite" in res.stderr and "--force" in res.stderr
    assert (tmp_path / "signer.key").read_bytes() == key
    res = _run("certs", "init", tmp_path, "--force", "--days", "30")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "signer.key").read_bytes() != key
    not_after = dt.datetime.fromisoformat(_rows(res)[0]["not_after"])
    assert dt.timedelta(days=29) < not_after - dt.datetime.now(dt.UTC) < dt.timedelta(days=31)


# --- sign ----------------------------------------------------------------------------------


def test_sign_a_folder_signs_the_good_images_and_reports_the_bad_one(
    work: Path, signed_folder: Result
) -> None:
    res = signed_folder
    assert res.exit_code == 1, res.output
    rows = {Path(r["source"]).name: r for r in _rows(res)}
    assert sorted(rows) == ["broken.jpg", "one.jpg", "two.png"]
    err = rows["broken.jpg"]["error"]
    assert err["type"] == "CorruptImageError" and err["source"] == str(work / "folder" / "broken.jpg")
    assert "manifest_id" not in rows["broken.jpg"]
    assert rows["one.jpg"]["output"] == str(work / "signed-folder" / "one.jpg")
    assert rows["two.png"]["output"] == str(work / "signed-folder" / "sub" / "two.png")
    assert rows["one.jpg"]["manifest_id"] != rows["two.png"]["manifest_id"]
    assert sorted(str(p.relative_to(work / "signed-folder"))
                  for p in (work / "signed-folder").rglob("*") if p.is_file()) == [
        "one.jpg", "sub/two.png"]
    assert "signed 2 of 3" in res.stderr


def test_sign_errors_name_the_problem(work: Path, certs: Path, store: Path, tmp_path: Path) -> None:
    src = work / "in" / "art.png"
    missing = tmp_path / "nope.pem"
    res = _run("sign", src, "--out", tmp_path / "x.jpg", "--cert", missing,
               "--key", certs / "signer.key", "--store", store)
    assert res.exit_code == 2
    assert "certificate chain not found" in res.stderr and str(missing) in res.stderr
    expired = init_dev_ca(tmp_path / "old", days=1,
                          now=dt.datetime.now(dt.UTC) - dt.timedelta(days=730))
    res = _run("sign", src, "--out", tmp_path / "x.jpg", "--cert", expired.signer_chain,
               "--key", expired.signer_key, "--store", store)
    assert res.exit_code == 2
    assert "signing certificate expired on" in res.stderr
    assert str(expired.signer_chain) in res.stderr
    res = _sign(certs, store, tmp_path / "absent.png", tmp_path / "x.jpg")
    assert res.exit_code == 3 and "no such file" in res.stderr
    assert _rows(res)[0]["error"]["type"] == "ImageSourceError"
    res = _sign(certs, store, src, tmp_path / "x.bmp")
    assert res.exit_code == 3
    (row,) = _rows(res)
    assert row["error"]["type"] == "UnsupportedFormatError" and "cannot sign .bmp" in row["error"]["message"]
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path / "x.bmp").exists()


# --- verify --------------------------------------------------------------------------------


def test_verify_signed_files_exits_0(
    work: Path, certs: Path, store: Path, signed_file: dict, signed_folder: Result
) -> None:
    folder_ids = {Path(r["output"]).name: r["manifest_id"] for r in _rows(signed_folder)
                  if "manifest_id" in r}
    res = _run("verify", signed_file["output"], work / "signed-folder",
               "--trust", certs / "ca.pem", "--store", store)
    assert res.exit_code == 0, res.output
    rows = {Path(r["source"]).name: r for r in _rows(res)}
    assert sorted(rows) == ["art.jpg", "one.jpg", "two.png"]
    assert {r["state"] for r in rows.values()} == {"trusted"}
    assert {r["route"] for r in rows.values()} == {"embedded"}
    assert rows["art.jpg"]["manifest_id"] == signed_file["manifest_id"]
    assert rows["art.jpg"]["label"] == signed_file["label"]
    assert rows["one.jpg"]["manifest_id"] == folder_ids["one.jpg"]
    assert rows["two.png"]["manifest_id"] == folder_ids["two.png"]
    assert "manifest" not in rows["art.jpg"]  # only with --manifest
    assert "trusted 3" in res.stderr


def test_verify_without_trust_is_valid_and_with_manifest_prints_it(
    certs: Path, store: Path, signed_file: dict
) -> None:
    res = _run("verify", signed_file["output"], "--store", store, "--manifest")
    assert res.exit_code == 0, res.output
    (row,) = _rows(res)
    assert row["state"] == "valid" and row["codes"]["failure"] == ["signingCredential.untrusted"]
    assert row["manifest"]["label"] == signed_file["label"]
    assert row["manifest"]["title"] == "Art"


def test_verify_a_stripped_copy_is_recovered(
    work: Path, certs: Path, store: Path, signed_file: dict
) -> None:
    stripped = work / "stripped.jpg"
    stripped.write_bytes(encode_image(load_image(signed_file["output"]), "JPEG", quality=80))
    res = _run("verify", stripped, "--trust", certs / "ca.pem", "--store", store)
    assert res.exit_code == 0, res.output
    (row,) = _rows(res)
    assert (row["state"], row["manifest_id"], row["signature"]) == (
        "recovered", signed_file["manifest_id"], "trusted")
    assert row["route"] in ("watermark", "fingerprint")
    # --no-store: the embedded manifest only, so the stripped copy has none
    res = _run("verify", stripped, signed_file["output"], "--trust", certs / "ca.pem",
               "--store", store, "--no-store")
    assert res.exit_code == EXIT_SOME_FOUND == 11, res.output
    rows = _rows(res)
    assert [r["state"] for r in rows] == ["not_found", "trusted"]
    assert rows[1]["manifest_id"] is None  # no store: no store id either


def test_verify_unsigned_images_exits_10(certs: Path, store: Path, signed_file: dict) -> None:
    res = _run("verify", *(CORPUS / rel for rel in UNSIGNED), "--trust", certs / "ca.pem",
               "--store", store)
    assert res.exit_code == EXIT_NOT_FOUND == 10, res.output
    rows = _rows(res)
    assert [r["state"] for r in rows] == ["not_found", "not_found"]
    assert [r["source"] for r in rows] == [str(CORPUS / rel) for rel in UNSIGNED]
    assert "not_found 2" in res.stderr


def test_verify_a_tampered_file_exits_11(
    work: Path, certs: Path, store: Path, signed_file: dict
) -> None:
    data = Path(signed_file["output"]).read_bytes()
    tampered = work / "tampered.jpg"
    tampered.write_bytes(flip(data, len(data) * 3 // 4))
    res = _run("verify", signed_file["output"], CORPUS / UNSIGNED[0], tampered,
               "--trust", certs / "ca.pem", "--store", store)
    assert res.exit_code == EXIT_INVALID == 12, res.output
    rows = _rows(res)
    assert [r["state"] for r in rows] == ["trusted", "not_found", "invalid"]
    assert "assertion.dataHash.mismatch" in rows[2]["codes"]["failure"]
    assert rows[2]["manifest_id"] == signed_file["manifest_id"]


def test_verify_exit_codes_for_unreadable_inputs(
    work: Path, certs: Path, store: Path, signed_file: dict
) -> None:
    (work / "empty.jpg").write_bytes(b"")
    (work / "text.png").write_text("not an image\n")
    bad = [work / "empty.jpg", work / "text.png", work / "missing.jpg"]
    res = _run("verify", *bad, "--store", store)
    assert res.exit_code == 3, res.output
    rows = _rows(res)
    assert [r["error"]["type"] for r in rows] == [
        "EmptyImageError", "CorruptImageError", "ImageSourceError"]
    assert [r["source"] for r in rows] == [str(p) for p in bad]
    assert "verified: nothing; 3 unreadable" in res.stderr
    res = _run("verify", signed_file["output"], work / "empty.jpg", "--trust", certs / "ca.pem",
               "--store", store)
    assert res.exit_code == 1, res.output
    assert [r["error"] is not None for r in _rows(res)] == [False, True]
    assert "trusted 1; 1 unreadable" in res.stderr


def test_verify_errors_name_the_problem(work: Path, store: Path, signed_file: dict,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _run("verify", signed_file["output"], "--trust", work / "in" / "art.png",
               "--store", store)
    assert res.exit_code == 2
    assert "not a PEM certificate file" in res.stderr and "art.png" in res.stderr
    not_a_store = work / "in"
    res = _run("verify", signed_file["output"], "--store", not_a_store)
    assert res.exit_code == 2 and "cannot read the store's secret" in res.stderr
    # a store named on the command line or in the environment must exist
    for how in (("--store", work / "no-store-here"),):
        res = _run("verify", signed_file["output"], *how)
        assert res.exit_code == 2, res.output
        assert "no manifest store at" in res.stderr and "no-store-here" in res.stderr
    res = _run("verify", signed_file["output"], env={"TRACEMARK_STORE": str(work / "nope")})
    assert res.exit_code == 2 and "no manifest store at" in res.stderr
    # the default store missing: a note, and the embedded manifest alone
    output = str(Path(signed_file["output"]).resolve())
    monkeypatch.chdir(tmp_path)  # no ./tracemark-store here
    res = _run("verify", output, env={"TRACEMARK_STORE": None})
    assert res.exit_code == 0, res.output
    assert "no manifest store at" in res.stderr
    assert _rows(res)[0]["state"] == "valid" and _rows(res)[0]["manifest_id"] is None


# --- credentials ---------------------------------------------------------------------------


def test_credentials_stats_list_show(
    store: Path, signed_file: dict, signed_folder: Result
) -> None:
    ids = sorted([signed_file["manifest_id"]]
                 + [r["manifest_id"] for r in _rows(signed_folder) if "manifest_id" in r])
    res = _run("credentials", "stats", "--store", store)
    assert res.exit_code == 0, res.output
    (stats,) = _rows(res)
    assert (stats["format"], stats["version"], stats["path"]) == (
        "tracemark-credentials", 1, str(store))
    assert stats["manifests"] >= len(ids) and stats["pending"] == 0
    # the store path may also come from the environment
    res = _run("credentials", "stats", env={"TRACEMARK_STORE": str(store)})
    assert res.exit_code == 0 and _rows(res)[0]["store_id"] == stats["store_id"]

    res = _run("credentials", "list", "--store", store)
    assert res.exit_code == 0, res.output
    listed = _rows(res)
    assert set(ids) <= {r["id"] for r in listed} and len(listed) == stats["manifests"]
    assert all(r["state"] == "active" and "manifest_store" not in r for r in listed)
    res = _run("credentials", "list", "--store", store, "--limit", "1", "--offset", "1")
    assert [r["id"] for r in _rows(res)] == [sorted(r["id"] for r in listed)[1]]

    res = _run("credentials", "show", str(signed_file["manifest_id"]), "--store", store)
    assert res.exit_code == 0, res.output
    (shown,) = _rows(res)
    assert (shown["id"], shown["label"], shown["title"], shown["author"]) == (
        signed_file["manifest_id"], signed_file["label"], "Art", "Ada")
    assert shown["manifest"]["active_manifest"] == signed_file["label"]

    res = _run("credentials", "show", "999999", "--store", store)
    assert res.exit_code == 3 and "no manifest 999999" in res.stderr
    assert _rows(res)[0]["error"]["type"] == "ManifestNotFoundError"


def test_credentials_on_a_missing_store(tmp_path: Path) -> None:
    for args in (("stats",), ("list",), ("show", "1")):
        res = _run("credentials", *args, "--store", tmp_path / "none")
        assert res.exit_code == 2
        assert "no manifest store at" in res.stderr and str(tmp_path / "none") in res.stderr


def test_credentials_calibrate_switches_the_fingerprint_route_to_p_values(
    work: Path, certs: Path, tmp_path: Path
) -> None:
    store = tmp_path / "cal-store"
    src = work / "in" / "art.png"
    res = _sign(certs, store, src, tmp_path / "signed.png")
    assert res.exit_code == 0, res.output
    background = tmp_path / "bg"
    background.mkdir()
    for i, rel in enumerate(["photo/gcompris_62.jpg", "art/gcompris_21.jpg", "photo/gcompris_49.jpg",
                             "art/gcompris_24.jpg", "photo/gcompris_50.jpg", "art/gcompris_27.jpg"]):
        (background / f"{i}.png").write_bytes(encode_image(small(rel), "PNG"))
    res = _run("credentials", "calibrate", background, "--store", store)
    assert res.exit_code == 0, res.output
    (summary,) = _rows(res)
    assert summary["null_samples"] == 3 and summary["background_rows"] > 0
    # a stripped copy now carries a p-value in its fingerprint evidence
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(encode_image(load_image(tmp_path / "signed.png"), "JPEG", quality=80))
    res = _run("verify", copy, "--store", store, "--trust", certs / "ca.pem")
    (row,) = _rows(res)
    fp = row["evidence"].get("fingerprint")
    if fp is not None:  # the watermark may have answered first
        assert fp["p_value"] is not None
    assert row["state"] == "recovered"
    res = _run("credentials", "calibrate", tmp_path / "nothing-here", "--store", store)
    assert res.exit_code != 0


def test_sign_create_takes_an_iptc_type_and_edit_refuses_it(work: Path, certs: Path,
                                                            store: Path, tmp_path: Path) -> None:
    src = next(p for p in (work / "in").iterdir() if p.suffix == ".png")
    res = _sign(certs, store, src, tmp_path / "c.png", "--create", "digitalCapture",
                "--title", "Captured")
    assert res.exit_code == 0, res.output
    import c2pa

    with c2pa.Reader("image/png", io.BytesIO((tmp_path / "c.png").read_bytes())) as r:
        m = json.loads(r.json())
    active = m["manifests"][m["active_manifest"]]
    actions = next(a["data"]["actions"] for a in active["assertions"]
                   if a["label"].startswith("c2pa.actions"))
    assert [a.get("digitalSourceType") for a in actions if a["action"] == "c2pa.created"] == [
        "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"]
    bad = _sign(certs, store, src, tmp_path / "d.png", "--create", "inventedType")
    assert bad.exit_code == 2 and "unknown digital source type" in bad.output
    both = _sign(certs, store, src, tmp_path / "e.png", "--create", "digitalCapture", "--edit")
    assert both.exit_code == 2 and "--edit" in both.output
    assert not (tmp_path / "d.png").exists() and not (tmp_path / "e.png").exists()

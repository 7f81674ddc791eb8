"""``--formats`` / ``TRACEMARK_FORMATS``: the optional formats (TGA, PCX, XBM, XPM, ICO, CUR,
SGI, DDS, QOI, FITS, IM) reach every command that reads images, the folder walk and the
service; without the option they are refused as UnsupportedImageError (issue 12, kind 13).
Every file is generated here."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from tracemark.cli import main
from tracemark.cli._common import EXIT_NOTHING, EXIT_OK, EXIT_USAGE, expand_inputs
from tracemark.errors import ConfigError
from tracemark.imageio import (
    OPTIONAL_FORMATS,
    READ_FORMATS,
    format_of_suffix,
    image_suffixes,
    load_image,
    resolve_formats,
    sniff_format,
)

KEY = bytes(range(7, 39))


def _run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def _rows(res: Result) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def picture(side: int = 256, seed: int = 0) -> np.ndarray:
    """A textured RGB image (blobs and edges at several scales: SIFT finds features)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((side, side, 3), np.float32)
    for cells in (4, 16, 64):
        noise = rng.random((cells, cells, 3)).astype(np.float32)
        img += cv2.resize(noise, (side, side), interpolation=cv2.INTER_CUBIC) * (255 / 3)
    for _ in range(12):
        x, y = rng.integers(0, side - 40, 2)
        cv2.rectangle(img, (int(x), int(y)), (int(x) + 30, int(y) + 20),
                      tuple(float(c) for c in rng.integers(0, 256, 3)), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def tga_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "TGA")
    return buf.getvalue()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("formats")
    rgb = picture()
    (root / "work.tga").write_bytes(tga_bytes(rgb))
    (root / "key").write_bytes(KEY)
    folder = root / "folder"
    folder.mkdir()
    Image.fromarray(picture(seed=1)).save(folder / "a.png")
    (folder / "b.tga").write_bytes(tga_bytes(picture(seed=2)))
    return root


def _refused(res: Result, path: Path) -> None:
    """Exit code 3 and the item's typed error naming the option."""
    assert res.exit_code == EXIT_NOTHING, res.output
    (row,) = [r for r in _rows(res) if "summary" not in r]
    assert row["error"]["type"] == "UnsupportedImageError", row
    assert "TGA" in row["error"]["message"] and "formats" in row["error"]["message"]
    assert row["error"]["source"] == str(path)


# --- the library's vocabulary follows formats ------------------------------------------------


def test_vocabulary_takes_formats() -> None:
    assert ".tga" not in image_suffixes() and ".tga" in image_suffixes("all")
    assert image_suffixes(["TGA"]) == {".tga", ".icb", ".vda", ".vst"}
    assert format_of_suffix(".TGA") is None and format_of_suffix("x.tga", "all") == "TGA"
    qoi = io.BytesIO()
    Image.fromarray(picture(64)).save(qoi, "QOI")
    assert sniff_format(qoi.getvalue()) is None and sniff_format(qoi.getvalue(), "all") == "QOI"
    assert sniff_format(qoi.getvalue(), ["PNG"]) is None
    assert resolve_formats("all") == (*READ_FORMATS, *OPTIONAL_FORMATS)
    assert resolve_formats(["jpg", "tga"]) == ("JPEG", "TGA")
    for bad in ("everything", [], ["TGA", "NOPE"], 3):
        with pytest.raises(ConfigError):
            resolve_formats(bad)  # type: ignore[arg-type]


def test_folder_walk_picks_up_optional_suffixes_only_when_allowed(work: Path) -> None:
    folder = work / "folder"
    default = expand_inputs([folder])
    assert default.paths == [folder / "a.png"]
    ((path, reason),) = default.skipped
    assert path == folder / "b.tga" and "--formats" in reason
    allowed = expand_inputs([folder], formats="all")
    assert allowed.paths == [folder / "a.png", folder / "b.tga"] and not allowed.skipped
    only_tga = expand_inputs([folder], formats=("TGA",))
    assert only_tga.paths == [folder / "b.tga"]


# --- the command line -----------------------------------------------------------------------


def test_index_add_and_search_refuse_tga_by_default_and_read_it_with_formats(
        work: Path, tmp_path: Path) -> None:
    src, store = work / "work.tga", tmp_path / "index"
    _refused(_run("index", "add", "--store", store, src), src)
    res = _run("index", "add", "--store", store, "--formats", "all", src)
    assert res.exit_code == EXIT_OK, res.output
    (row,) = _rows(res)
    assert row["error"] is None and row["id"] == 1
    _refused(_run("search", "--store", store, src), src)
    # the environment variable, with a list: the default set plus TGA
    res = _run("search", "--store", store, src, env={"TRACEMARK_FORMATS": "default,tga"})
    assert res.exit_code == EXIT_OK, res.output
    (row,) = _rows(res)
    assert row["error"] is None and row["query"] == str(src)
    assert row["matches"][0]["ref_id"] == 1 and row["matches"][0]["decision"] is True
    # a folder argument: b.tga is skipped (reported) by default, added with the option
    res = _run("index", "add", "--store", store, work / "folder")
    rows = _rows(res)
    assert res.exit_code == EXIT_OK, res.output
    skipped = [r for r in rows if r.get("skipped")]
    assert [r["source"] for r in skipped] == [str(work / "folder" / "b.tga")]
    assert "--formats" in skipped[0]["error"]["message"]
    res = _run("index", "add", "--store", store, "--formats", "all", work / "folder")
    assert res.exit_code == EXIT_OK, res.output
    rows = _rows(res)
    added = {r["source"]: r for r in rows}
    assert added[str(work / "folder" / "b.tga")]["id"] is not None
    assert added[str(work / "folder" / "a.png")]["duplicate_of"] is not None


def test_watermark_embed_and_detect_read_tga_only_with_formats(work: Path, tmp_path: Path) -> None:
    src, key = work / "work.tga", work / "key"
    embed = ("watermark", "embed", "--key-file", key, "--payload", "0x2a", "--out",
             tmp_path / "out")
    _refused(_run(*embed, src), src)
    assert not (tmp_path / "out").exists()
    res = _run(*embed, src, env={"TRACEMARK_FORMATS": "all"})
    assert res.exit_code == EXIT_OK, res.output
    (row,) = _rows(res)
    out = Path(row["output"])
    assert row["error"] is None and out.suffix == ".png"  # a read-only format is written as PNG
    assert load_image(out).shape == (256, 256, 3)
    detect = ("watermark", "detect", "--key-file", key)
    _refused(_run(*detect, src), src)
    res = _run(*detect, "--formats", "tga", src)
    (row,) = _rows(res)
    assert row["error"] is None and row["present"] is False  # read: the original is unmarked
    res = _run(*detect, out)
    (row,) = _rows(res)
    assert res.exit_code == EXIT_OK and row["present"] is True and row["payload"].endswith("2a")


def test_sign_and_verify_read_tga_only_with_formats(work: Path, tmp_path: Path) -> None:
    from tracemark.credentials import init_dev_ca

    certs = tmp_path / "certs"
    init_dev_ca(certs)
    src, store = work / "work.tga", tmp_path / "store"
    sign = ("sign", "--cert", certs / "signer.pem", "--key", certs / "signer.key",
            "--store", store, "--out", tmp_path / "signed")
    _refused(_run(*sign, src), src)
    res = _run(*sign, "--formats", "all", src)
    assert res.exit_code == EXIT_OK, res.output
    (row,) = _rows(res)
    signed = Path(row["output"])
    assert row["error"] is None and signed.suffix == ".png"
    verify = ("verify", "--no-store")
    _refused(_run(*verify, src), src)
    res = _run(*verify, "--formats", "all", src)
    (row,) = _rows(res)
    assert row["error"] is None and row["state"] == "not_found"
    res = _run("verify", "--store", store, "--trust", certs / "ca.pem", signed)
    (row,) = _rows(res)
    assert res.exit_code == EXIT_OK and row["state"] == "trusted", row


@pytest.mark.parametrize("value", ["bogus", "tga,nope", ",", ""])
def test_bad_formats_is_a_usage_error(work: Path, tmp_path: Path, value: str) -> None:
    res = _run("index", "add", "--store", tmp_path / "i", "--formats", value, work / "work.tga")
    assert res.exit_code == EXIT_USAGE and "--formats" in res.stderr
    assert not (tmp_path / "i").exists()
    res = _run("index", "add", "--store", tmp_path / "i", work / "work.tga",
               env={"TRACEMARK_FORMATS": value or ","})
    assert res.exit_code == EXIT_USAGE


# --- the service ------------------------------------------------------------------------------


def test_service_reads_the_formats_of_its_setting(work: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tracemark.service.app import ServiceSettings, create_app

    with pytest.raises(ConfigError):
        create_app(ServiceSettings(data_dir=tmp_path / "bad", formats="everything"))
    data = (work / "work.tga").read_bytes()
    for setting, status in (("default", 415), ("all", 201), (("TGA",), 201)):
        app = create_app(ServiceSettings(data_dir=tmp_path / str(setting), formats=setting))
        token = app.state.tm.keys.create(scope="write", collections=["*"], name="a")[0]
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(app) as client:
            assert client.post("/v1/collections", json={"name": "w"},
                               headers=headers).status_code == 201
            res = client.post("/v1/collections/w/images", headers=headers,
                              files={"image": ("w.tga", io.BytesIO(data), "image/x-tga")})
            assert res.status_code == status, res.text
            if status == 415:
                assert res.json()["error"]["type"] == "UnsupportedImageError"
                assert "formats" in res.json()["error"]["message"]

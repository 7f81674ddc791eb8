"""Too-small images are valid images below what an operation needs: ImageTooSmallError
naming the size and the minimum, HTTP 422 (never 415 or 500), the CLI's per-item error and
exit code 3 (issue 12, kind 14). End to end through the real app and the real commands;
every image is generated here."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from tracemark.cli import main
from tracemark.cli._common import EXIT_NONE_FOUND, EXIT_NOTHING, EXIT_OK
from tracemark.errors import ImageTooSmallError
from tracemark.imageio import encode_image

from .test_cli_formats import picture

# (height, width): a single pixel, and a 3x7 image (7 wide, 3 high) below PDQ's 5 px.
SHAPES = ((1, 1), (3, 7))


def tiny(shape: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _size(shape: tuple[int, int]) -> str:
    return f"{shape[1]}x{shape[0]}"


def assert_too_small(error: dict, shape: tuple[int, int]) -> None:
    """The typed error names the image's size and the operation's minimum."""
    assert error["type"] == "ImageTooSmallError", error
    assert _size(shape) in error["message"], error
    assert re.search(r"(>= ?|at least )\d+ px", error["message"]), error


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _rows(res: Result) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tracemark.credentials import init_dev_ca

    d = tmp_path_factory.mktemp("small-certs")
    init_dev_ca(d)
    return d


# --- the library ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_search_of_an_empty_index_refuses_a_too_small_query_too(
        tmp_path: Path, shape: tuple[int, int]) -> None:
    from tracemark.copydetect import CopyIndex

    with CopyIndex.create(tmp_path / "idx") as ci:
        with pytest.raises(ImageTooSmallError, match=_size(shape)):
            ci.search(tiny(shape))
        (res,) = ci.search_many([tiny(shape)])
        assert_too_small(res.error, shape)
        assert ci.search(picture(64)) == []  # an image it can describe: no match, no error


# --- the service ----------------------------------------------------------------------------


ENDPOINTS = (
    ("images", {}),
    ("search", {}),
    ("watermark/embed", {"payload": "42"}),
    ("sign", {}),
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, certs: Path):  # type: ignore[no-untyped-def]
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tracemark.service.app import ServiceSettings, create_app

    app = create_app(ServiceSettings(data_dir=tmp_path_factory.mktemp("small-svc"),
                                     cert=certs / "signer.pem", key=certs / "signer.key"))
    token = app.state.tm.keys.create(scope="write", collections=["*"], name="admin")[0]
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        for name in ("empty", "full"):
            assert client.post("/v1/collections", json={"name": name},
                               headers=headers).status_code == 201
        work = io.BytesIO(encode_image(picture(), "PNG"))
        res = client.post("/v1/collections/full/sign", headers=headers,
                          files={"image": ("work.png", work, "image/png")})
        assert res.status_code == 200, res.text
        yield client, headers


@pytest.mark.parametrize("collection", ["empty", "full"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("endpoint", "form"), ENDPOINTS, ids=[e for e, _ in ENDPOINTS])
def test_service_answers_422_with_the_typed_error(  # type: ignore[no-untyped-def]
        service, collection: str, shape: tuple[int, int], endpoint: str, form: dict) -> None:
    client, headers = service
    data = encode_image(tiny(shape), "PNG")
    res = client.post(f"/v1/collections/{collection}/{endpoint}", headers=headers, data=form,
                      files={"image": ("tiny.png", io.BytesIO(data), "image/png")})
    assert res.status_code == 422, (res.status_code, res.text)
    assert_too_small(res.json()["error"], shape)


@pytest.mark.parametrize("collection", ["empty", "full"])
@pytest.mark.parametrize("shape", SHAPES)
def test_service_detect_and_verify_give_documented_results_on_tiny_images(  # type: ignore[no-untyped-def]
        service, collection: str, shape: tuple[int, int]) -> None:
    """Detection and verification answer (no mark, nothing found) with the reason, the same
    on an empty and on a full collection; only the operations that need a size fail."""
    client, headers = service
    data = encode_image(tiny(shape), "PNG")
    res = client.post(f"/v1/collections/{collection}/watermark/detect", headers=headers,
                      files={"image": ("tiny.png", io.BytesIO(data), "image/png")})
    assert res.status_code == 200 and res.json()["present"] is False, res.text
    res = client.post(f"/v1/collections/{collection}/verify", headers=headers,
                      files={"image": ("tiny.png", io.BytesIO(data), "image/png")})
    assert res.status_code == 200 and res.json()["state"] == "not_found", res.text
    assert_too_small(res.json()["evidence"]["recovery_error"], shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_service_verify_without_a_collection_reads_the_tiny_image(  # type: ignore[no-untyped-def]
        service, shape: tuple[int, int]) -> None:
    """Embedded-manifest verification needs no minimum size: a documented result."""
    client, headers = service
    data = encode_image(tiny(shape), "PNG")
    res = client.post("/v1/verify", headers=headers,
                      files={"image": ("tiny.png", io.BytesIO(data), "image/png")})
    assert res.status_code == 200 and res.json()["state"] == "not_found", res.text


# --- the command line -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("small-cli")
    paths = {}
    for shape in SHAPES:
        p = root / f"tiny-{_size(shape)}.png"
        p.write_bytes(encode_image(tiny(shape), "PNG"))
        paths[_size(shape)] = p
    work = root / "work.png"
    work.write_bytes(encode_image(picture(), "PNG"))
    (root / "key").write_bytes(bytes(range(32)))
    assert _run("index", "add", "--store", root / "index", work).exit_code == EXIT_OK
    res = _run("sign", "--cert", certs / "signer.pem", "--key", certs / "signer.key",
               "--store", root / "store", "--out", root / "signed", work)
    assert res.exit_code == EXIT_OK, res.output
    return {"root": root, "certs": certs, **paths}


def _commands(cli: dict[str, Path], tmp_path: Path) -> dict[str, tuple]:
    root, certs = cli["root"], cli["certs"]
    return {
        "index add": ("index", "add", "--store", tmp_path / "new-index"),
        "search": ("search", "--store", root / "index"),
        "scan": ("scan", "--against", root / "index"),
        "watermark embed": ("watermark", "embed", "--key-file", root / "key", "--payload", "7",
                            "--out", tmp_path / "marked"),
        "sign": ("sign", "--cert", certs / "signer.pem", "--key", certs / "signer.key",
                 "--store", tmp_path / "new-store", "--out", tmp_path / "signed"),
    }


COMMANDS = ("index add", "search", "scan", "watermark embed", "sign")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("command", COMMANDS)
def test_cli_reports_the_typed_error_and_exit_code_3(
        cli: dict[str, Path], tmp_path: Path, command: str, shape: tuple[int, int]) -> None:
    src = cli[_size(shape)]
    res = _run(*_commands(cli, tmp_path)[command], src)
    assert res.exit_code == EXIT_NOTHING, (res.exit_code, res.output)
    rows = [r for r in _rows(res) if "summary" not in r]
    (row,) = rows
    assert_too_small(row["error"], shape)
    assert row["error"]["source"] == str(src)
    assert "Traceback" not in res.output


@pytest.mark.parametrize("shape", SHAPES)
def test_cli_commands_that_can_read_a_tiny_image_do(
        cli: dict[str, Path], tmp_path: Path, shape: tuple[int, int]) -> None:
    """Blind watermark detection (no mark: present false), embedded-manifest verification
    and the attacks handle a tiny image: documented results, not errors."""
    src, root = cli[_size(shape)], cli["root"]
    res = _run("watermark", "detect", "--key-file", root / "key", src)
    (row,) = _rows(res)
    assert res.exit_code == EXIT_NONE_FOUND and row["error"] is None and row["present"] is False
    res = _run("verify", "--no-store", src)
    (row,) = _rows(res)
    assert res.exit_code == EXIT_NONE_FOUND and row["state"] == "not_found"
    # with a registry: the registry routes cannot search it, the evidence says so
    res = _run("watermark", "detect", "--key-file", root / "key", "--store", root / "index", src)
    (row,) = _rows(res)
    assert res.exit_code == EXIT_NONE_FOUND and row["error"] is None and row["present"] is False
    res = _run("verify", "--store", root / "store", src)
    (row,) = _rows(res)
    assert res.exit_code == EXIT_NONE_FOUND and row["state"] == "not_found", row
    assert_too_small(row["evidence"]["recovery_error"], shape)
    res = _run("attack", "--suite", "disc21-like", "--metrics", "--out", tmp_path / "att", src)
    rows = _rows(res)
    assert res.exit_code == EXIT_OK, res.output
    assert rows and all(r["error"] is None for r in rows)
    # below SSIM's 11 px window: ssim is null, the attack is not failed for it
    assert all(r["ssim"] is None for r in rows if "ssim" in r)
    assert any("psnr" in r for r in rows)


def test_ssim_names_the_size_and_its_window() -> None:
    from tracemark.metrics import ssim

    with pytest.raises(ImageTooSmallError, match=r"ssim needs both sides >= 11 px.*got 7x3"):
        ssim(tiny((3, 7)), tiny((3, 7)))

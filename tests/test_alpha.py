"""Transparency is kept (issue 12, kind 10): watermark embed and sign of an image with an
alpha channel write PNG, WebP and TIFF with the alpha plane unchanged and the mark in the
colour; JPEG outputs (no alpha channel) say "flattened" in their record."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tracemark.cli import main
from tracemark.imageio import (
    colour_under_alpha,
    composite,
    encode_image_with_alpha,
    load_image,
    load_image_with_alpha,
)
from tracemark.watermark import get_method

from .conftest import CORPUS, corpus_crop

PASSPHRASE = "transparency test passphrase"


def rgba_image(size: int = 384) -> tuple[np.ndarray, np.ndarray]:
    """A textured colour plane and an alpha plane: a fully transparent left quarter (its
    colour random, as editors leave it), a half-transparent band, the rest opaque."""
    if CORPUS.is_dir():
        import cv2

        colour = cv2.resize(corpus_crop("photo/gcompris_100.jpg", 256), (size, size),
                            interpolation=cv2.INTER_CUBIC)
    else:  # pragma: no cover - the corpus is beside every checkout that runs the suite
        rng = np.random.default_rng(1)
        colour = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    rng = np.random.default_rng(2)
    colour = colour.copy()
    alpha = np.full((size, size), 255, np.uint8)
    alpha[:, : size // 4] = 0
    colour[:, : size // 4] = rng.integers(0, 256, (size, size // 4, 3), dtype=np.uint8)
    alpha[size // 2 : size // 2 + 40] = 128
    return colour, alpha


def rgba_file(path: Path, colour: np.ndarray, alpha: np.ndarray) -> Path:
    Image.fromarray(np.dstack([colour, alpha]), "RGBA").save(path)
    return path


def alpha_of(path_or_bytes: Path | bytes) -> np.ndarray:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGBA", im.mode
        return np.asarray(im)[:, :, 3].copy()


# --- the imageio functions ----------------------------------------------------------------


def test_load_with_alpha_splits_colour_and_alpha(tmp_path: Path) -> None:
    colour, alpha = rgba_image(64)
    path = rgba_file(tmp_path / "a.png", colour, alpha)
    got_colour, got_alpha = load_image_with_alpha(path)
    assert np.array_equal(got_colour, colour) and np.array_equal(got_alpha, alpha)
    assert np.array_equal(composite(got_colour, got_alpha), load_image(path))
    opaque = tmp_path / "o.png"
    Image.fromarray(colour).save(opaque)
    c, a = load_image_with_alpha(opaque)
    assert a is None and np.array_equal(c, colour)
    # palette transparency becomes an alpha plane
    pal = Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    c, a = load_image_with_alpha(tmp_path / "p.png")
    assert a is not None and set(np.unique(a)) <= {0, 255}
    assert np.array_equal(composite(c, a), load_image(tmp_path / "p.png"))


def test_colour_under_alpha_carries_the_change_over_any_background() -> None:
    colour, alpha = rgba_image(64)
    flat = composite(colour, alpha)
    change = np.where(np.indices(flat.shape[:2]).sum(0)[..., None] % 2 == 0, 3, -3)
    marked = np.clip(flat.astype(int) + change, 0, 255).astype(np.uint8)
    out = colour_under_alpha(marked, colour, alpha)
    transparent = alpha == 0
    assert np.array_equal(out[transparent], colour[transparent])  # kept byte for byte
    # where the change is written (and not clipped), the composite is the marked image
    visible = (alpha > 0)[..., None] & (out > 0) & (out < 255)
    assert visible.mean() > 0.5
    assert np.abs(composite(out, alpha).astype(int) - marked)[visible].max() <= 1
    black = composite(out, alpha, (0, 0, 0)).astype(int) - composite(colour, alpha, (0, 0, 0))
    opaque = (alpha == 255)[..., None] & (out > 0) & (out < 255)
    assert np.array_equal(black[opaque], (marked.astype(int) - flat)[opaque])


# --- watermark embed: the command -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "webp", "tiff"])
def test_embed_keeps_alpha_byte_exact_and_the_mark_is_found(tmp_path: Path, fmt: str) -> None:
    colour, alpha = rgba_image()
    src = rgba_file(tmp_path / "in.png", colour, alpha)
    suffix = {"png": ".png", "webp": ".webp", "tiff": ".tiff"}[fmt]
    out = tmp_path / f"out{suffix}"
    res = CliRunner().invoke(main, ["watermark", "embed", str(src), "--out", str(out),
                                    "--payload", "0xC0FFEE", "--passphrase-env", "TM_PASS",
                                    "--format", "same" if fmt == "tiff" else fmt],
                             env={"TM_PASS": PASSPHRASE})
    if fmt == "tiff":  # --format same keeps png; write TIFF through the library instead
        assert res.exit_code == 0, res.output
        marked = get_method("lattice").embed(composite(colour, alpha), 0xC0FFEE, PASSPHRASE)
        out.write_bytes(encode_image_with_alpha(colour_under_alpha(marked, colour, alpha),
                                                alpha, "TIFF"))
    else:
        assert res.exit_code == 0, res.output
        row = json.loads(res.stdout.splitlines()[0])
        assert row["alpha"] == "kept" and row["error"] is None
    assert np.array_equal(alpha_of(out), alpha)
    det = get_method("lattice").detect(load_image(out), PASSPHRASE)
    assert det.present and det.payload_int == 0xC0FFEE
    if fmt != "webp":  # lossless: the colour under fully transparent pixels is untouched
        with Image.open(out) as im:
            kept = np.asarray(im)[:, :, :3]
        assert np.array_equal(kept[alpha == 0], colour[alpha == 0])


def test_embed_to_jpeg_says_alpha_was_flattened(tmp_path: Path) -> None:
    colour, alpha = rgba_image()
    src = rgba_file(tmp_path / "in.png", colour, alpha)
    opaque = tmp_path / "opaque.png"
    Image.fromarray(colour).save(opaque)
    res = CliRunner().invoke(main, ["watermark", "embed", str(src), str(opaque), "--out",
                                    str(tmp_path / "out"), "--payload", "7", "--passphrase-env",
                                    "TM_PASS", "--format", "jpg"], env={"TM_PASS": PASSPHRASE})
    assert res.exit_code == 0, res.output
    rows = {Path(r["source"]).name: r for r in map(json.loads, res.stdout.splitlines())}
    assert rows["in.png"]["alpha"] == "flattened" and rows["opaque.png"]["alpha"] is None
    with Image.open(rows["in.png"]["output"]) as im:
        assert im.mode == "RGB"


# --- sign: the library, and the service ------------------------------------------------------


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tracemark.credentials import CredentialStore, init_dev_ca, load_signing_credentials

    d = tmp_path_factory.mktemp("alpha-sign")
    ca = init_dev_ca(d / "ca")
    creds = load_signing_credentials(ca.signer_chain, ca.signer_key)
    with CredentialStore.create(d / "store") as store:
        yield store, creds, d


@pytest.mark.parametrize("suffix", [".png", ".webp"])
def test_sign_keeps_alpha_byte_exact_and_the_mark_is_found(signing, suffix: str) -> None:  # type: ignore[no-untyped-def]
    from tracemark.credentials import sign_image

    store, creds, d = signing
    colour, alpha = rgba_image()
    src = rgba_file(d / f"in{suffix}.png", colour, alpha)
    res, signed = sign_image(store, src, d / f"signed{suffix}", creds)
    assert res.alpha == "kept" and res.to_dict()["alpha"] == "kept"
    assert np.array_equal(alpha_of(signed), alpha)
    det = store.read_mark(load_image(signed), assisted=False)
    assert det.present and det.payload_int == store.payload_for(res.manifest_id)


def test_sign_to_jpeg_reports_alpha_flattened(signing) -> None:  # type: ignore[no-untyped-def]
    from tracemark.credentials import sign_image

    store, creds, d = signing
    colour, alpha = rgba_image()
    src = rgba_file(d / "in-jpeg.png", colour, alpha)
    res, _ = sign_image(store, src, d / "signed.jpg", creds)
    assert res.alpha == "flattened"
    opaque = d / "opaque.png"
    Image.fromarray(colour).save(opaque)
    assert sign_image(store, opaque, d / "opaque-signed.png", creds)[0].alpha is None


def test_sign_command_record_says_alpha(signing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _store, _creds, d = signing
    colour, alpha = rgba_image()
    src = rgba_file(tmp_path / "in.png", colour, alpha)
    res = CliRunner().invoke(main, ["sign", str(src), "--out", str(tmp_path / "s.jpg"),
                                    "--cert", str(d / "ca" / "signer.pem"),
                                    "--key", str(d / "ca" / "signer.key"),
                                    "--store", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[0])["alpha"] == "flattened"


def test_service_embed_and_sign_keep_alpha(tmp_path: Path, signing) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from tracemark.service.app import ServiceSettings, create_app

    _store, _creds, d = signing
    app = create_app(ServiceSettings(data_dir=tmp_path / "svc", cert=d / "ca" / "signer.pem",
                                     key=d / "ca" / "signer.key", trust=d / "ca" / "ca.pem"))
    token = app.state.tm.keys.create(scope="write", collections=["*"], name="t")[0]
    h = {"Authorization": f"Bearer {token}"}
    colour, alpha = rgba_image()
    buf = io.BytesIO()
    Image.fromarray(np.dstack([colour, alpha]), "RGBA").save(buf, format="PNG")
    with TestClient(app) as client:
        assert client.post("/v1/collections", json={"name": "w"}, headers=h).status_code == 201
        for fmt, want in (("png", "kept"), ("webp", "kept"), ("jpg", "flattened")):
            files = {"image": ("a.png", io.BytesIO(buf.getvalue()), "image/png")}
            res = client.post("/v1/collections/w/watermark/embed", files=files,
                              data={"payload": "0xC0FFEE", "format": fmt}, headers=h)
            assert res.status_code == 200 and res.headers["X-Alpha"] == want, res.text
            if want == "kept":
                assert np.array_equal(alpha_of(res.content), alpha)
            det = client.post("/v1/collections/w/watermark/detect",
                              files={"image": ("m", io.BytesIO(res.content), "image/png")},
                              headers=h).json()
            assert det["present"] and det["payload"] == 0xC0FFEE
        files = {"image": ("a.png", io.BytesIO(buf.getvalue()), "image/png")}
        res = client.post("/v1/collections/w/sign", files=files, data={"format": "png"}, headers=h)
        assert res.status_code == 200 and res.headers["X-Alpha"] == "kept", res.text
        assert np.array_equal(alpha_of(res.content), alpha)


# --- tracemark attack -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "webp", "jpg"])
def test_attack_keeps_alpha_for_colour_attacks_and_says_flattened_otherwise(
    tmp_path: Path, fmt: str
) -> None:
    """Photometric and degradation attacks keep the alpha plane byte for byte (PNG, WebP);
    a geometric attack or a JPEG output writes the image over white and says so."""
    from tracemark import attacks

    colour, alpha = rgba_image(128)
    src = rgba_file(tmp_path / "in.png", colour, alpha)
    opaque = tmp_path / "opaque.png"
    Image.fromarray(colour).save(opaque)
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"name": "s", "entries": [
        {"attack": "brightness", "params": {"factor": 0.7}},
        {"attack": "gaussian_noise", "params": {"std": 0.05}},
        {"attack": "rotate", "params": {"angle": 10}},
    ]}))
    res = CliRunner().invoke(main, ["attack", "--suite", str(suite), "--out",
                                    str(tmp_path / "out"), "--format", fmt, str(src), str(opaque)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(r) for r in res.stdout.splitlines()]
    assert len(rows) == 6 and all("alpha" in r for r in rows)
    for row in rows:
        if Path(row["source"]).name == "opaque.png":
            assert row["alpha"] is None
            continue
        kept = fmt != "jpg" and row["attack"] != "rotate"
        assert row["alpha"] == ("kept" if kept else "flattened"), row
        out = Path(row["output"])
        if not kept:
            with Image.open(out) as im:
                assert im.mode == "RGB"
            continue
        np.testing.assert_array_equal(alpha_of(out), alpha)
        got_colour, got_alpha = load_image_with_alpha(out)
        expected = attacks.apply_attack(colour, row["attack"], **row["params"])
        diff = np.abs(got_colour.astype(int) - expected.astype(int))[alpha > 0]
        if fmt == "png":  # the replay is exact
            assert diff.max() == 0
        else:  # WebP's colour is lossy (noise costs it most)
            assert diff.mean() < 16


def test_alpha_loader_reads_a_file_object_once() -> None:
    """A file object can be read only once: the alpha loader opens its source one time."""
    import io

    from PIL import Image

    from tracemark.imageio import load_image_with_alpha

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    for image, has_alpha in ((rgba, True), (rgba[..., :3], False)):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buf, "PNG")
        colour, alpha = load_image_with_alpha(io.BytesIO(buf.getvalue()))
        assert np.array_equal(colour, image[..., :3])
        assert (alpha is not None) == has_alpha

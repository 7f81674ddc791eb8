"""Reference previews: the small JPEG kept with each registered image (copydetect's
``preview`` blob), its lifecycle in the index (added with the reference in one
transaction, removed with it, absent after a rolled-back registration, absent for a
reference registered before previews), every way of registering (the index, the CLI's
``index add``, the service's register and sign), and the service route that serves it
(``GET /v1/collections/{name}/references/{ref_id}/preview``)."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tracemark.copydetect import CopyIndex
from tracemark.copydetect.describe import PREVIEW_BLOB, PREVIEW_MAX_SIDE, reference_preview
from tracemark.copydetect.index import new_reference
from tracemark.errors import ReferenceNotFoundError
from tracemark.imageio import encode_image, load_image

from .conftest import CORPUS, corpus_crop, corpus_images, small_image


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-9))


def _rng_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random picture (upsampled noise), so that resampling is comparable."""
    import cv2

    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC))


@pytest.mark.parametrize("h,w", [(1200, 300), (300, 1200), (513, 512), (256, 256),
                                 (100, 60), (3000, 7), (1, 1)])
def test_a_preview_is_a_small_jpeg_of_the_picture(h: int, w: int) -> None:
    import cv2

    rgb = _rng_image(h, w, seed=h * 7 + w)
    data = reference_preview(rgb)
    assert data[:3] == b"\xff\xd8\xff"  # JPEG SOI
    out = load_image(data)
    scale = min(1.0, PREVIEW_MAX_SIDE / max(h, w))
    assert out.shape == (max(1, round(h * scale)), max(1, round(w * scale)), 3)
    assert max(out.shape[:2]) <= PREVIEW_MAX_SIDE
    # an independent downscale (OpenCV's area filter) looks the same
    oracle = cv2.resize(rgb, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_AREA)
    assert _psnr(out, oracle) > 28, _psnr(out, oracle)
    assert reference_preview(rgb) == data  # deterministic
    assert len(data) < 40_000


def _db_blob_names(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path / "index.sqlite") as db:
        return sorted(db.execute("SELECT ref_id, name FROM blobs WHERE name = ?",
                                 (PREVIEW_BLOB,)).fetchall())


def test_the_preview_lives_and_dies_with_its_reference(tmp_path: Path) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    a, b, c = (small_image(p, 400) for p in corpus_images("photo", 3))
    path = tmp_path / "ci"
    with CopyIndex.create(path) as ci:
        ra = ci.add(a, source="a")
        [rb, err] = ci.add_many([(b, {"source": "b"}), (b"not an image", {"source": "bad"})])
    assert isinstance(err, Exception)  # the bad item is its error; b was added
    assert _db_blob_names(path) == [(ra.id, PREVIEW_BLOB), (rb.id, PREVIEW_BLOB)]
    with CopyIndex.open(path) as ci:
        pa = load_image(ci.preview(ra.id))
        assert pa.shape[:2] == (round(a.shape[0] * PREVIEW_MAX_SIDE / max(a.shape[:2])),
                                round(a.shape[1] * PREVIEW_MAX_SIDE / max(a.shape[:2])))
        assert ci.remove(ra.id)
        with pytest.raises(ReferenceNotFoundError):
            ci.preview(ra.id)
        with pytest.raises(ReferenceNotFoundError):
            ci.preview(999)
    # a registration rolled back (the block raised) leaves no preview behind
    with pytest.raises(RuntimeError), CopyIndex.open(path) as ci:
        rc = ci.add(c, source="c")
        assert ci.preview(rc.id) is not None  # visible inside its own transaction
        raise RuntimeError("the caller failed before the commit")
    assert _db_blob_names(path) == [(rb.id, PREVIEW_BLOB)]
    # a reference registered before previews were kept: None, not an error
    ref, words = new_reference(c, source="old")
    del ref.blobs[PREVIEW_BLOB]
    with CopyIndex.open(path) as ci:
        [old] = ci.add_described([(ref, words)])
    with CopyIndex.open(path, read_only=True) as ci:
        assert ci.preview(old.id) is None
        assert ci.preview(rb.id) is not None


def test_the_cli_index_add_keeps_previews(tmp_path: Path) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    from click.testing import CliRunner

    from tracemark.cli import main

    imgs, shapes = [], {}
    for i, p in enumerate(corpus_images("art", 2)):
        f = tmp_path / f"art{i}.png"
        rgb = small_image(p, 300)
        f.write_bytes(encode_image(rgb, "PNG"))
        imgs.append(str(f))
        shapes[str(f)] = tuple(round(s * 256 / 300) for s in rgb.shape[:2])
    store = tmp_path / "store"
    res = CliRunner().invoke(main, ["index", "add", "--store", str(store), *imgs])
    assert res.exit_code == 0, res.output
    with CopyIndex.open(store, read_only=True) as ci:
        refs = ci.index.list()
        assert len(refs) == 2
        for r in refs:
            assert load_image(ci.preview(r.id)).shape[:2] == shapes[r.source]


# --- the service route -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    pytest.importorskip("fastapi")
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    from fastapi.testclient import TestClient

    from tracemark.credentials import init_dev_ca
    from tracemark.service.app import ServiceSettings, create_app

    certs = tmp_path_factory.mktemp("certs")
    init_dev_ca(certs)
    app = create_app(ServiceSettings(data_dir=tmp_path_factory.mktemp("data"),
                                     cert=certs / "signer.pem", key=certs / "signer.key",
                                     trust=certs / "ca.pem"))
    keys = app.state.tm.keys
    tokens = {"admin": keys.create(scope="write", collections=["*"], name="admin")[0],
              "reader": keys.create(scope="read", collections=["works"], name="reader")[0],
              "other": keys.create(scope="read", collections=["elsewhere"], name="o")[0]}
    with TestClient(app) as client:
        for name in ("works", "elsewhere"):
            res = client.post("/v1/collections", json={"name": name},
                              headers={"Authorization": f"Bearer {tokens['admin']}"})
            assert res.status_code == 201, res.text
        yield client, tokens, app


def _h(tokens: dict[str, str], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}"}


def _upload(data: bytes) -> dict:
    return {"image": ("x.png", io.BytesIO(data), "application/octet-stream")}


def test_the_service_serves_previews_and_the_region_lands_on_them(service) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _app = service
    ref = small_image(corpus_images("photo", 5)[4], 480)  # 480 x 360 or so
    res = client.post("/v1/collections/works/images", files=_upload(encode_image(ref, "PNG")),
                      headers=_h(tokens, "admin"))
    assert res.status_code == 201, res.text
    rid = res.json()["ref_id"]
    url = f"/v1/collections/works/references/{rid}/preview"
    got = client.get(url, headers=_h(tokens, "reader"))
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert got.headers["cache-control"] == "private, no-cache" and got.headers["etag"]
    prev = load_image(got.content)
    scale = PREVIEW_MAX_SIDE / max(ref.shape[:2])
    assert prev.shape[:2] == (round(ref.shape[0] * scale), round(ref.shape[1] * scale))
    same = client.get(url, headers={**_h(tokens, "reader"),
                                    "If-None-Match": got.headers["etag"]})
    assert same.status_code == 304 and same.content == b""
    # a copy (a crop) is found; its region, scaled to the preview, covers the cropped part
    h, w = ref.shape[:2]
    crop = ref[h // 4: h * 3 // 4, w // 4: w * 3 // 4]
    res = client.post("/v1/collections/works/search", files=_upload(encode_image(crop, "PNG")),
                      headers=_h(tokens, "reader"))
    [m] = [m for m in res.json()["matches"] if m["ref_id"] == rid]
    assert m["reference_size"] == [w, h]
    k = prev.shape[1] / m["reference_size"][0]
    corners = np.array(m["region"]) * k
    expect = np.array([[w / 4, h / 4], [w * 3 / 4, h / 4], [w * 3 / 4, h * 3 / 4],
                       [w / 4, h * 3 / 4]]) * k
    assert np.abs(np.sort(corners, axis=0) - np.sort(expect, axis=0)).max() < 6
    # the missing, the forbidden, the malformed
    for bad, status, kind in [
        (f"/v1/collections/works/references/{rid + 1000}/preview", 404, "UnknownImage"),
        (f"/v1/collections/nope/references/{rid}/preview", 404, "UnknownCollection"),
        ("/v1/collections/works/references/0/preview", 422, None),
        ("/v1/collections/works/references/abc/preview", 422, None)]:
        res = client.get(bad, headers=_h(tokens, "admin"))
        assert res.status_code == status, res.text
        assert kind is None or res.json()["error"]["type"] == kind
    assert client.get(url).status_code == 401
    assert client.get(url, headers=_h(tokens, "other")).status_code == 403
    # removing the image removes its preview
    assert client.delete(f"/v1/collections/works/images/{rid}",
                         headers=_h(tokens, "admin")).status_code == 200
    res = client.get(url, headers=_h(tokens, "admin"))
    assert res.status_code == 404 and res.json()["error"]["type"] == "UnknownImage"


def test_signed_images_have_previews_and_old_references_a_documented_404(service) -> None:  # type: ignore[no-untyped-def]
    client, tokens, app = service
    src = corpus_crop("photo/gcompris_51.jpg", 320)
    signed = client.post("/v1/collections/works/sign", files=_upload(encode_image(src, "PNG")),
                         data={"format": "png"}, headers=_h(tokens, "admin"))
    assert signed.status_code == 200, signed.text
    res = client.post("/v1/collections/works/search",
                      files=_upload(encode_image(load_image(signed.content), "JPEG", quality=85)),
                      headers=_h(tokens, "reader"))
    best = res.json()["matches"][0]
    assert best["decision"]
    got = client.get(f"/v1/collections/works/references/{best['ref_id']}/preview",
                     headers=_h(tokens, "reader"))
    assert got.status_code == 200
    import cv2

    prev = load_image(got.content)
    assert prev.shape[:2] == (256, 256)  # the signed image (320 x 320), scaled
    assert _psnr(prev, cv2.resize(src, (256, 256), interpolation=cv2.INTER_AREA)) > 25
    # a reference from before previews (its blob absent): 404 NoPreview, a clear reason
    ref, words = new_reference(corpus_crop("art/" + corpus_images("art", 1)[0].name, 200),
                               source="old")
    del ref.blobs[PREVIEW_BLOB]
    state = app.state.tm
    with state.reading("works") as store:
        [old] = store.add_described_fingerprints([(ref, words)])
        store.commit()
    res = client.get(f"/v1/collections/works/references/{old.id}/preview",
                     headers=_h(tokens, "reader"))
    assert res.status_code == 404 and res.json()["error"]["type"] == "NoPreview"
    assert "before previews" in res.json()["error"]["message"]
    schema = client.get("/openapi.json").json()
    op = schema["paths"]["/v1/collections/{name}/references/{ref_id}/preview"]["get"]
    assert "image/jpeg" in op["responses"]["200"]["content"] and "404" in op["responses"]

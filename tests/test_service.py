"""The HTTP service in-process (FastAPI's TestClient): endpoints, keys and scopes, limits,
and a clear 4xx JSON error for every client mistake. Real stores, watermark and c2pa."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tracemark.imageio import encode_image, load_image  # noqa: E402
from tracemark.service.app import ServiceSettings, create_app  # noqa: E402

from .conftest import CORPUS  # noqa: E402
from .conftest import corpus_crop as small  # noqa: E402
from .test_imageio import crafted_png  # noqa: E402


def png(rgb: np.ndarray) -> bytes:
    return encode_image(rgb, "PNG")


def jpeg(rgb: np.ndarray, q: int = 80) -> bytes:
    return encode_image(rgb, "JPEG", quality=q)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tracemark.credentials import init_dev_ca

    d = tmp_path_factory.mktemp("svc-certs")
    init_dev_ca(d)
    return d


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, certs: Path):  # type: ignore[no-untyped-def]
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    data = tmp_path_factory.mktemp("svc-data")
    app = create_app(ServiceSettings(data_dir=data, cert=certs / "signer.pem",
                                     key=certs / "signer.key", trust=certs / "ca.pem",
                                     max_upload_bytes=2 * 1024 * 1024, max_pixels=4_000_000))
    keys = app.state.tm.keys
    tokens = {
        "admin": keys.create(scope="write", collections=["*"], name="admin")[0],
        "reader": keys.create(scope="read", collections=["works"], name="reader")[0],
        "other": keys.create(scope="write", collections=["elsewhere"], name="other")[0],
    }
    revoked, rec = keys.create(scope="write", collections=["*"], name="gone")
    keys.revoke(rec.id)
    tokens["revoked"] = revoked
    with TestClient(app) as client:
        res = client.post("/v1/collections", json={"name": "works"},
                          headers={"Authorization": f"Bearer {tokens['admin']}"})
        assert res.status_code == 201, res.text
        yield client, tokens, app


def auth(tokens: dict[str, str], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}"}


def upload(data: bytes, name: str = "x.png") -> dict:
    return {"image": (name, io.BytesIO(data), "application/octet-stream")}


def assert_error(res, status: int, type_: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    assert body["error"]["message"]
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    return body


# --- service --------------------------------------------------------------------------------


def test_health_metrics_and_openapi(service) -> None:  # type: ignore[no-untyped-def]
    client, _tokens, _app = service
    res = client.get("/v1/health")
    assert res.status_code == 200 and res.json()["status"] == "ok"
    assert res.json()["signing"] is True
    schema = client.get("/openapi.json").json()
    for path in ("/v1/collections", "/v1/collections/{name}/search",
                 "/v1/collections/{name}/watermark/embed", "/v1/collections/{name}/sign",
                 "/v1/verify"):
        assert path in schema["paths"], path
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'tracemark_requests_total{method="GET",route="/v1/health",status="200"}' in metrics.text


# --- keys and scopes ------------------------------------------------------------------------


def test_missing_wrong_revoked_and_out_of_scope_keys(service) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _app = service
    assert_error(client.get("/v1/collections"), 401, "MissingApiKey")
    assert_error(client.get("/v1/collections", headers={"Authorization": "Bearer tm_0000_nope"}),
                 401, "InvalidApiKey")
    assert_error(client.get("/v1/collections", headers={"X-API-Key": tokens["admin"] + "x"}),
                 401, "InvalidApiKey")
    assert_error(client.get("/v1/collections", headers=auth(tokens, "revoked")), 401)
    assert client.get("/v1/collections", headers={"X-API-Key": tokens["admin"]}).status_code == 200
    # read key: may search, may not add; other key: not this collection at all
    img = png(small("photo/gcompris_48.jpg"))
    assert_error(client.post("/v1/collections/works/images", files=upload(img),
                             headers=auth(tokens, "reader")), 403, "Forbidden")
    assert_error(client.post("/v1/collections/works/search", files=upload(img),
                             headers=auth(tokens, "other")), 403, "Forbidden")
    assert_error(client.post("/v1/collections", json={"name": "mine"},
                             headers=auth(tokens, "other")), 403, "Forbidden")
    listed = client.get("/v1/collections", headers=auth(tokens, "other")).json()
    assert listed == {"collections": []}


def test_keys_are_stored_hashed(service) -> None:  # type: ignore[no-untyped-def]
    _client, tokens, app = service
    db = Path(app.state.tm.settings.data_dir) / "service.sqlite"
    raw = db.read_bytes()
    for token in tokens.values():
        assert token.encode() not in raw
        assert token.split("_", 2)[2].encode() not in raw


# --- collections ------------------------------------------------------------------------------


def test_collections_create_list_and_mistakes(service) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _app = service
    h = auth(tokens, "admin")
    assert_error(client.post("/v1/collections", json={"name": "works"}, headers=h), 409,
                 "CollectionExists")
    assert_error(client.post("/v1/collections", json={"name": "../etc"}, headers=h), 422,
                 "ValidationError")
    assert_error(client.post("/v1/collections", json={}, headers=h), 422)
    assert_error(client.post("/v1/collections", content=b"not json", headers=h), 422)
    assert "works" in client.get("/v1/collections", headers=h).json()["collections"]
    assert_error(client.get("/v1/collections/nope", headers=h), 404, "UnknownCollection")
    assert_error(client.post("/v1/collections/nope/search", files=upload(b"x"), headers=h), 404)
    assert_error(client.get("/v1/nothing-here", headers=h), 404)


def test_add_search_list_remove(service) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _app = service
    h = auth(tokens, "admin")
    src = small("photo/gcompris_50.jpg", 320)
    res = client.post("/v1/collections/works/images", files=upload(png(src), "a.png"), headers=h,
                      data={"owner": "Ann", "license": "CC-BY-4.0"})
    assert res.status_code == 201, res.text
    ref = res.json()["ref_id"]
    again = client.post("/v1/collections/works/images", files=upload(png(src)), headers=h)
    assert again.status_code == 200, again.text  # nothing was created
    assert again.json() == {"ref_id": ref, "duplicate_of": ref,
                            "store_id": res.json()["store_id"]}
    copy = jpeg(src[20:300, 10:290], 70)
    found = client.post("/v1/collections/works/search", files=upload(copy, "q.jpg"),
                        headers=auth(tokens, "reader"))
    assert found.status_code == 200, found.text
    best = found.json()["matches"][0]
    assert best["ref_id"] == ref and best["decision"] is True
    images = client.get("/v1/collections/works/images", headers=h).json()["images"]
    assert any(i["id"] == ref and i["owner"] == "Ann" for i in images)
    assert client.delete(f"/v1/collections/works/images/{ref}", headers=h).status_code == 200
    assert_error(client.delete(f"/v1/collections/works/images/{ref}", headers=h), 404)
    assert_error(client.get("/v1/collections/works/images?limit=0", headers=h), 422)


# --- watermark ---------------------------------------------------------------------------------


def test_embed_detect_and_the_key_never_leaves(service) -> None:  # type: ignore[no-untyped-def]
    client, tokens, app = service
    h = auth(tokens, "admin")
    src = small("photo/gcompris_100.jpg", 320)
    res = client.post("/v1/collections/works/watermark/embed", files=upload(png(src)),
                      data={"payload": "0xC0FFEE", "format": "png"}, headers=h)
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    marked = load_image(res.content)
    det = client.post("/v1/collections/works/watermark/detect", files=upload(jpeg(marked, 85)),
                      headers=auth(tokens, "reader"))
    body = det.json()
    assert body["present"] is True and body["payload"] == 0xC0FFEE and body["p_value"] < 1e-6
    plain = client.post("/v1/collections/works/watermark/detect", files=upload(png(src)),
                        headers=h).json()
    assert plain["present"] is False and plain["payload"] is None
    secret = app.state.tm.collection("works").watermark_key.material
    for text in (det.text, json.dumps(plain), client.get("/openapi.json").text):
        assert secret.hex() not in text
    for bad in ("seven", "-1", str(1 << 64)):
        assert_error(client.post("/v1/collections/works/watermark/embed", files=upload(png(src)),
                                 data={"payload": bad}, headers=h), 422, "PayloadError")


# --- credentials --------------------------------------------------------------------------------


def test_sign_then_verify_embedded_and_stripped(service, certs: Path) -> None:  # type: ignore[no-untyped-def]
    import c2pa

    client, tokens, _app = service
    h = auth(tokens, "admin")
    src = small("photo/gcompris_51.jpg", 320)
    res = client.post("/v1/collections/works/sign", files=upload(png(src)),
                      data={"format": "jpg", "ai_generated": "true", "title": "gen"}, headers=h)
    assert res.status_code == 200, res.text
    mid = int(res.headers["X-Manifest-Id"])
    ctx = c2pa.Context.from_dict({"trust": {"user_anchors": (certs / "ca.pem").read_text()}})
    with c2pa.Reader("image/jpeg", io.BytesIO(res.content), context=ctx) as reader:
        assert reader.get_validation_state() == "Trusted"
    v = client.post("/v1/collections/works/verify", files=upload(res.content, "s.jpg"),
                    headers=auth(tokens, "reader")).json()
    assert (v["state"], v["route"], v["manifest_id"]) == ("trusted", "embedded", mid)
    stripped = jpeg(load_image(res.content), 80)
    v = client.post("/v1/collections/works/verify", files=upload(stripped),
                    headers=auth(tokens, "reader")).json()
    assert (v["state"], v["manifest_id"]) == ("recovered", mid)
    m = client.get(f"/v1/collections/works/manifests/{mid}", headers=h).json()
    assert m["ai_generated"] is True and m["manifest"]["active_manifest"] == m["label"]
    assert_error(client.get("/v1/collections/works/manifests/999999", headers=h), 404)
    only = client.post("/v1/verify", files=upload(stripped), headers=h).json()
    assert only["state"] == "not_found"
    # any IPTC digital source type (c2patool's --create); an unknown one is a 422
    made = client.post("/v1/collections/works/sign", files=upload(png(src[:200, :200])),
                       data={"format": "png", "digital_source_type": "compositeWithTrained"
                             "AlgorithmicMedia"}, headers=h)
    assert made.status_code == 200, made.text
    with c2pa.Reader("image/png", io.BytesIO(made.content), context=ctx) as reader:
        active = json.loads(reader.json())
    manifest = active["manifests"][active["active_manifest"]]
    actions = next(a["data"]["actions"] for a in manifest["assertions"]
                   if a["label"].startswith("c2pa.actions"))
    assert any(a.get("digitalSourceType", "").endswith("/compositeWithTrainedAlgorithmicMedia")
               for a in actions)
    rec = client.get(f"/v1/collections/works/manifests/{made.headers['X-Manifest-Id']}",
                     headers=h).json()
    assert rec["ai_generated"] is True
    assert_error(client.post("/v1/collections/works/sign", files=upload(png(src)),
                             data={"digital_source_type": "madeUp"}, headers=h),
                 422, "BadDigitalSourceType")


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 415),
        (b"hello, this is not an image", 415),
        (b"%PDF-1.7\n" + bytes(64), 415),
        (crafted_png(50_000, 50_000), 413),
        (crafted_png(3_000, 3_000), 413),  # 9 MP: over this service's 4 MP limit
    ],
)
def test_bad_uploads_are_4xx_json(service, data: bytes, status: int) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _app = service
    h = auth(tokens, "admin")
    for path in ("/v1/collections/works/search", "/v1/collections/works/watermark/detect",
                 "/v1/collections/works/images", "/v1/collections/works/verify"):
        assert_error(client.post(path, files=upload(data), headers=h), status)


def test_truncated_oversized_and_missing_uploads(service) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _app = service
    h = auth(tokens, "admin")
    good = jpeg(small("photo/gcompris_48.jpg"), 90)
    assert_error(client.post("/v1/collections/works/search", files=upload(good[: len(good) // 2]),
                             headers=h), 415, "CorruptImageError")
    big = b"\xff\xd8" + bytes(3 * 1024 * 1024)
    assert_error(client.post("/v1/collections/works/search", files=upload(big), headers=h), 413)
    assert_error(client.post("/v1/collections/works/search", headers=h), 422, "ValidationError")

    def chunks():  # no Content-Length: the body limit is enforced while reading
        boundary = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x\"\r\n\r\n"
        yield boundary
        for _ in range(64):
            yield bytes(64 * 1024)
        yield b"\r\n--b--\r\n"
    assert_error(client.post("/v1/collections/works/search", content=chunks(),
                             headers={**h, "Content-Type": "multipart/form-data; boundary=b"}),
                 413, "PayloadTooLarge")
    assert_error(client.post("/v1/collections/works/search", data={"image": "text"}, headers=h),
                 422)
    assert_error(client.post("/v1/collections/works/search", files=upload(good),
                             data={"k": "many"}, headers=h), 422)


def test_concurrent_adds_and_searches_agree(service) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _app = service
    h = auth(tokens, "admin")
    assert client.post("/v1/collections", json={"name": "busy"}, headers=h).status_code == 201
    names = ["photo/gcompris_60.jpg", "photo/gcompris_61.jpg", "photo/gcompris_63.jpg",
             "photo/gcompris_64.jpg", "art/gcompris_30.jpg", "art/gcompris_31.jpg"]
    images = [small(n, 256) for n in names]

    def add(img: np.ndarray) -> int:
        r = client.post("/v1/collections/busy/images", files=upload(png(img)), headers=h)
        assert r.status_code == 201, r.text
        return int(r.json()["ref_id"])

    with ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(add, images))
    assert len(set(ids)) == len(ids)

    def search(i: int) -> int:
        r = client.post("/v1/collections/busy/search", files=upload(jpeg(images[i], 85)), headers=h)
        assert r.status_code == 200, r.text
        return int(r.json()["matches"][0]["ref_id"])

    with ThreadPoolExecutor(6) as pool:
        found = list(pool.map(search, list(range(len(images))) * 2))
    assert found == ids * 2
    stats = client.get("/v1/collections/busy", headers=h).json()
    assert stats["images"] == len(images)


def test_a_slow_request_times_out_with_503(tmp_path: Path) -> None:
    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    app = create_app(ServiceSettings(data_dir=tmp_path, request_timeout=0.05))
    token, _ = app.state.tm.keys.create(scope="write", collections=["*"])
    h = {"Authorization": f"Bearer {token}"}
    # a 6-megapixel query: decoding and SIFT extraction take far longer than 50 ms, so the
    # deadline passes while the worker thread is busy, however loaded the machine is
    big = np.kron(small("photo/gcompris_50.jpg", 256), np.ones((10, 10, 1), np.uint8))
    with TestClient(app) as client:
        store = app.state.tm.create("c")  # one reference, so a search extracts features
        store.index.add(small("photo/gcompris_50.jpg", 256))
        store.index.commit()
        res = client.post("/v1/collections/c/search", files=upload(jpeg(big, 90)), headers=h)
        assert_error(res, 503, "Timeout")
        assert client.get("/v1/health").status_code == 200


def test_signing_not_configured_is_409(tmp_path: Path) -> None:
    app = create_app(ServiceSettings(data_dir=tmp_path))
    token, _ = app.state.tm.keys.create(scope="write", collections=["*"])
    h = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        assert client.post("/v1/collections", json={"name": "c"}, headers=h).status_code == 201
        assert_error(client.post("/v1/collections/c/sign", files=upload(b"x"), headers=h), 409,
                     "SigningNotConfigured")


def test_delete_a_collection(service) -> None:  # type: ignore[no-untyped-def]
    client, tokens, app = service
    h = auth(tokens, "admin")
    assert client.post("/v1/collections", json={"name": "gone"}, headers=h).status_code == 201
    img = png(small("photo/gcompris_100.jpg"))
    assert client.post("/v1/collections/gone/images", files=upload(img), headers=h).status_code == 201
    assert_error(client.delete("/v1/collections/gone", headers=auth(tokens, "reader")), 403)
    assert_error(client.delete("/v1/collections/gone", headers=auth(tokens, "other")), 403)
    res = client.delete("/v1/collections/gone", headers=h)
    assert res.status_code == 200 and res.json() == {"deleted": "gone"}
    assert "gone" not in client.get("/v1/collections", headers=h).json()["collections"]
    assert_error(client.get("/v1/collections/gone", headers=h), 404, "UnknownCollection")
    assert_error(client.delete("/v1/collections/gone", headers=h), 404)
    root = Path(app.state.tm.settings.data_dir) / "collections"
    assert not any(p.name.startswith((".deleted-gone", "gone")) for p in root.iterdir())
    # the name can be used again, for a new, empty collection
    assert client.post("/v1/collections", json={"name": "gone"}, headers=h).status_code == 201
    assert client.get("/v1/collections/gone", headers=h).json()["images"] == 0


def test_embed_over_a_mark_keeps_it_or_is_409(service) -> None:  # type: ignore[no-untyped-def]
    """Issue 12, kind 7: the same payload is kept, another is 409 unless allow_remark."""
    client, tokens, _app = service
    h = auth(tokens, "admin")
    src = small("photo/gcompris_100.jpg", 320)
    url = "/v1/collections/works/watermark/embed"
    first = client.post(url, files=upload(png(src)), data={"payload": "0x111"}, headers=h)
    assert first.status_code == 200 and first.headers["X-Mark"] == "embedded"
    marked = load_image(first.content)
    again = client.post(url, files=upload(first.content), data={"payload": "0x111"}, headers=h)
    assert again.status_code == 200 and again.headers["X-Mark"] == "kept"
    assert (load_image(again.content) == marked).all()
    assert_error(client.post(url, files=upload(first.content), data={"payload": "0x222"},
                             headers=h), 409, "AlreadyMarkedError")
    forced = client.post(url, files=upload(first.content),
                         data={"payload": "0x222", "allow_remark": "true"}, headers=h)
    assert forced.status_code == 200 and forced.headers["X-Mark"] == "remarked"


def test_openapi_declares_the_key_schemes_and_limits_and_405_says_allow(service) -> None:  # type: ignore[no-untyped-def]
    """Swagger's Authorize button and generated clients need the security schemes; a limit
    the service enforces is in the schema; a 405 names the allowed methods."""
    client, tokens, _app = service
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["BearerAuth"] == {"type": "http", "scheme": "bearer",
                                     "description": schemes["BearerAuth"]["description"]}
    assert schemes["ApiKeyHeader"]["in"] == "header" and schemes["ApiKeyHeader"]["name"] == "X-API-Key"
    op = spec["paths"]["/v1/collections/{name}/images"]["get"]
    assert {"BearerAuth": []} in op["security"]
    limit = next(p for p in op["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)
    res = client.put("/v1/collections", headers=auth(tokens, "admin"))
    assert res.status_code == 405 and set(res.headers["allow"].replace(" ", "").split(",")) == {
        "GET", "POST"}
    assert res.json()["error"]["type"] == "HTTPError"
    assert client.get("/v1/collections", headers={"X-API-Key": tokens["admin"]}).status_code == 200
    assert client.get("/v1/collections", headers={"Authorization": "Basic eDp5"}).status_code == 401


def test_a_collection_is_calibrated_over_http_and_searches_then_answer_p_values(service) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _app = service
    h = auth(tokens, "admin")
    assert client.post("/v1/collections", json={"name": "calib"}, headers=h).status_code == 201
    refs = [small(f"photo/gcompris_{i}.jpg", 256) for i in (51, 100)]
    for i, ref in enumerate(refs):
        assert client.post("/v1/collections/calib/images", files=upload(png(ref), f"{i}.png"),
                           headers=h).status_code == 201
    query = jpeg(refs[0][10:240, 10:240], 80)
    before = client.post("/v1/collections/calib/search", files=upload(query, "q.jpg"),
                         headers=h).json()["matches"][0]
    assert before["p_value"] is None  # uncalibrated
    background = [png(small(f"art/gcompris_{i}.jpg", 160)) for i in range(1, 9)]
    files = [("images", (f"b{i}.png", io.BytesIO(b), "image/png"))
             for i, b in enumerate(background)]
    files.append(("images", ("bad.png", io.BytesIO(b"not an image"), "image/png")))
    files.append(("images", ("ref.png", io.BytesIO(png(refs[1])), "image/png")))
    res = client.post("/v1/collections/calib/calibrate", files=files, headers=h)
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["used"], body["failed"], body["in_collection"]) == (8, 1, 1)
    assert body["null_samples"] == 4
    after = client.post("/v1/collections/calib/search", files=upload(query, "q.jpg"),
                        headers=h).json()["matches"][0]
    assert after["ref_id"] == before["ref_id"] and after["p_value"] is not None
    assert after["p_value"] < 0.5
    few = [("images", (f"b{i}.png", io.BytesIO(b), "image/png")) for i, b in
           enumerate(background[:3])]
    assert_error(client.post("/v1/collections/calib/calibrate", files=few, headers=h), 422)
    assert_error(client.post("/v1/collections/calib/calibrate", files=files,
                             headers=auth(tokens, "reader")), 403)
    assert_error(client.post("/v1/collections/nope/calibrate", files=files, headers=h), 404)


def test_calibrate_takes_the_5000_files_it_states(service) -> None:  # type: ignore[no-untyped-def]
    client, tokens, _app = service
    h = auth(tokens, "admin")
    assert client.post("/v1/collections", json={"name": "many"}, headers=h).status_code == 201
    # 1,001 parts (none an image: cheap) within the stated 4..5,000: the route's own answer
    files = [("images", (f"b{i}.png", io.BytesIO(b"x"), "image/png")) for i in range(1001)]
    body = assert_error(client.post("/v1/collections/many/calibrate", files=files, headers=h),
                        422)
    assert "usable background images" in body["error"]["message"]
    # past the stated 5,000: refused by the parser with the documented error body
    files = [("images", (f"b{i}.png", io.BytesIO(b"x"), "image/png")) for i in range(5001)]
    r = client.post("/v1/collections/many/calibrate", files=files, headers=h)
    assert r.status_code in (400, 413, 422) and "error" in r.json()

"""The service's verify routes give c2pa's own states (remote, unsupported) and read HEIC;
its sign route writes HEIC and AVIF. In-process (FastAPI's TestClient), real c2pa.

A remote manifest's URL points at a local HTTP server that counts its requests: the service
must answer ``remote`` with the URL and never fetch it (docs/credentials.md, *What c2pa
says*).
"""

from __future__ import annotations

import http.server
import io
from collections.abc import Iterator
from typing import Any

import c2pa
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tracemark.credentials import init_dev_ca, load_trust_anchors  # noqa: E402
from tracemark.credentials.manifest import PRERELEASE_CODE  # noqa: E402
from tracemark.imageio import encode_image, load_image, sniff_format  # noqa: E402
from tracemark.service.app import ServiceSettings, create_app  # noqa: E402

from .conftest import local_http_server  # noqa: E402
from .test_c2pa_agreement import FIXTURES, asset, builder_sign, c2pa_says  # noqa: E402


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    certs = tmp_path_factory.mktemp("certs")
    ca = init_dev_ca(certs)
    app = create_app(ServiceSettings(data_dir=tmp_path_factory.mktemp("data"),
                                     cert=ca.signer_chain, key=ca.signer_key, trust=ca.ca_cert,
                                     max_upload_bytes=4 * 1024 * 1024, max_pixels=4_000_000))
    token = app.state.tm.keys.create(scope="write", collections=["*"], name="admin")[0]
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        res = client.post("/v1/collections", json={"name": "works"}, headers=headers)
        assert res.status_code == 201, res.text
        yield {"client": client, "headers": headers, "ca": ca,
               "trust": load_trust_anchors(ca.ca_cert)}


@pytest.fixture
def counting_server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that records every request path (and serves nothing)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            self.send_error(404)

    with local_http_server(Handler) as base:
        yield base, seen


def _verify(svc: dict[str, Any], data: bytes, name: str, route: str = "/v1/verify") -> dict:
    res = svc["client"].post(route, headers=svc["headers"],
                             files={"image": (name, io.BytesIO(data), "application/octet-stream")})
    assert res.status_code == 200, res.text
    return res.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("route", ["/v1/verify", "/v1/collections/works/verify"])
def test_a_remote_manifest_is_remote_and_never_fetched(
        service: dict[str, Any], counting_server: tuple[str, list[str]], route: str) -> None:
    base, seen = counting_server
    url = f"{base}/manifests/one.c2pa"
    signed, _ = builder_sign(asset("JPEG"), "image/jpeg", service["ca"], remote_url=url)
    assert c2pa_says(signed, "image/jpeg", service["trust"])[0] == "remote"
    v = _verify(service, signed, "remote.jpg", route)
    assert (v["state"], v["remote_url"]) == ("remote", url), v
    assert v["c2pa_state"] is None
    assert seen == []  # the server never fetched it


def test_the_sdk_fixtures_remote_and_prerelease(service: dict[str, Any]) -> None:
    cloud = _verify(service, (FIXTURES / "cloud.jpg").read_bytes(), "cloud.jpg")
    assert cloud["state"] == "remote" and "cai-manifests.adobe.com" in cloud["remote_url"]
    pre = _verify(service, (FIXTURES / "prerelease.jpg").read_bytes(), "prerelease.jpg")
    state, failures, _ = c2pa_says((FIXTURES / "prerelease.jpg").read_bytes(), None)
    assert (pre["state"], pre["codes"]["failure"]) == (state, failures) == (
        "unsupported", [PRERELEASE_CODE])


def test_an_unknown_claim_version_is_unsupported(service: dict[str, Any]) -> None:
    signed, _ = builder_sign(asset("PNG"), "image/png", service["ca"])
    data = signed.replace(b"c2pa.claim.v2\x00", b"c2pa.claim.v9\x00")
    v = _verify(service, data, "future.png")
    assert (v["state"], v["codes"]["failure"]) == ("unsupported", ["c2pa.verify"])


def test_a_heic_upload_verifies(service: dict[str, Any]) -> None:
    """A HEIC signed by c2pa's Builder (another tool) verifies as trusted over HTTP."""
    pillow_heif = pytest.importorskip("pillow_heif")
    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([x * 2, y * 3, (x + y) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    pillow_heif.from_bytes("RGB", (96, 64), rgb.tobytes()).save(buf, quality=90)
    signed, _ = builder_sign(buf.getvalue(), "image/heic", service["ca"])
    v = _verify(service, signed, "phone.heic")
    assert (v["state"], v["route"]) == ("trusted", "embedded"), v


@pytest.mark.parametrize(("fmt", "mime", "ours"), [("heic", "image/heic", "HEIF"),
                                                   ("avif", "image/avif", "AVIF")])
def test_the_sign_route_writes_heic_and_avif(service: dict[str, Any], fmt: str, mime: str,
                                             ours: str) -> None:
    if fmt == "heic":
        pytest.importorskip("pillow_heif")
    y, x = np.mgrid[0:256, 0:256]
    rng = np.random.default_rng(7)
    rgb = np.stack([x, y, (x * y // 64 + rng.integers(0, 20, x.shape)) % 256],
                   -1).astype(np.uint8)
    client, headers = service["client"], service["headers"]
    res = client.post("/v1/collections/works/sign", headers=headers, data={"format": fmt},
                      files={"image": ("in.png", io.BytesIO(encode_image(rgb, "PNG")),
                                       "image/png")})
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == mime and sniff_format(res.content[:64]) == ours
    ctx = c2pa.Context.from_dict({"trust": {"user_anchors": service["trust"]}})
    with c2pa.Reader(mime, io.BytesIO(res.content), context=ctx) as reader:
        assert reader.get_validation_state() == "Trusted"
    v = _verify(service, res.content, f"s.{fmt}", "/v1/collections/works/verify")
    assert (v["state"], v["manifest_id"]) == ("trusted", int(res.headers["X-Manifest-Id"]))
    stripped = encode_image(load_image(res.content), "PNG")
    r = _verify(service, stripped, "stripped.png", "/v1/collections/works/verify")
    assert (r["state"], r["manifest_id"]) == ("recovered", int(res.headers["X-Manifest-Id"]))


def test_the_sign_route_refuses_other_formats(service: dict[str, Any]) -> None:
    res = service["client"].post(
        "/v1/collections/works/sign", headers=service["headers"], data={"format": "bmp"},
        files={"image": ("in.png", io.BytesIO(encode_image(asset_rgb(), "PNG")), "image/png")})
    assert res.status_code == 422 and "error" in res.json()


def asset_rgb() -> np.ndarray:
    return load_image(asset("PNG"))

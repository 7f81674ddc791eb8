"""A client generated from the service's OpenAPI schema (openapi-python-client, offline: no
post hooks) runs register -> search -> sign -> verify against a real uvicorn server.

The client is generated at test time into a temporary directory (never committed), from the
schema of the app the test serves; its typed models parse every answer (a field the schema
gets wrong fails here as a parse error or a wrong value)."""

from __future__ import annotations

import importlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openapi_python_client")

from tracemark.imageio import encode_image, load_image  # noqa: E402
from tracemark.service.app import ServiceSettings, create_app  # noqa: E402

from ._serving import uvicorn_in_thread  # noqa: E402
from .conftest import CORPUS  # noqa: E402
from .conftest import corpus_crop as small  # noqa: E402

PACKAGE = "tm_client"


def generate_client(schema: dict[str, Any], where: Path) -> Any:
    """Generate the client package ``tm_client`` for ``schema`` under ``where`` and import
    it (the ``openapi-python-client`` command beside this interpreter)."""
    exe = Path(sys.executable).with_name("openapi-python-client")
    if not exe.exists():
        found = shutil.which("openapi-python-client")
        if found is None:
            pytest.skip("openapi-python-client is not installed (the dev extra)")
        exe = Path(found)
    (where / "openapi.json").write_text(json.dumps(schema))
    (where / "config.yaml").write_text(  # offline: no ruff post hooks
        f"post_hooks: []\nproject_name_override: {PACKAGE}\npackage_name_override: {PACKAGE}\n"
        # binary answers (images, manifest stores) as the generator's File
        "content_type_overrides:\n" + "".join(
            f"  {t}: application/octet-stream\n"
            for t in ("image/png", "image/jpeg", "image/webp", "application/c2pa", "image/*")))
    res = subprocess.run([str(exe), "generate", "--path", str(where / "openapi.json"),
                          "--config", str(where / "config.yaml"), "--meta", "none",
                          "--output-path", str(where / PACKAGE)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    sys.path.insert(0, str(where))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    return importlib.import_module(PACKAGE)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, int]]:
    from tracemark.credentials import init_dev_ca

    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    root = tmp_path_factory.mktemp("client")
    (root / "certs").mkdir()
    init_dev_ca(root / "certs")
    app = create_app(ServiceSettings(data_dir=root / "svc", cert=root / "certs" / "signer.pem",
                                     key=root / "certs" / "signer.key",
                                     trust=root / "certs" / "ca.pem",
                                     max_upload_bytes=4 * 1024 * 1024))
    token, _ = app.state.tm.keys.create(scope="write", collections=["*"], name="client")
    gen = root / "gen"
    gen.mkdir()
    client_pkg = generate_client(app.openapi(), gen)
    try:
        with uvicorn_in_thread(app, lifespan="on") as port:
            yield client_pkg, token, port
    finally:
        sys.path.remove(str(gen))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _api(name: str) -> Any:
    """The generated module of operation ``name`` (generated names carry the path)."""
    pkg = importlib.import_module(PACKAGE + ".api")
    for tag in Path(pkg.__file__).parent.iterdir():
        if tag.is_dir():
            for mod in tag.glob(f"{name}_*.py"):
                return importlib.import_module(f"{PACKAGE}.api.{tag.name}.{mod.stem}")
    raise LookupError(name)


def _file(pkg: Any, data: bytes, name: str, mime: str) -> Any:
    return pkg.types.File(payload=io.BytesIO(data), file_name=name, mime_type=mime)


def test_register_search_sign_verify_through_the_generated_client(served: Any) -> None:
    pkg, token, port = served
    models = importlib.import_module(PACKAGE + ".models")
    types = importlib.import_module(PACKAGE + ".types")
    pkg.types = types
    client = pkg.AuthenticatedClient(base_url=f"http://127.0.0.1:{port}", token=token,
                                     raise_on_unexpected_status=True)

    made = _api("create_collection").sync(client=client, body=models.CollectionIn(name="works"))
    assert isinstance(made, models.CollectionCreated) and made.name == "works"

    # register two works; the second registration of the same pixels is a duplicate (200)
    works = [small(rel, 320) for rel in ("photo/gcompris_51.jpg", "photo/gcompris_52.jpg")]
    add = _api("add_image")
    refs = []
    for i, rgb in enumerate(works):
        body = models.BodyAddImageV1CollectionsNameImagesPost(
            image=_file(pkg, encode_image(rgb, "PNG"), f"w{i}.png", "image/png"),
            owner="tests")
        res = add.sync_detailed("works", client=client, body=body)
        assert res.status_code == 201 and isinstance(res.parsed, models.ImageAdded)
        assert res.parsed.duplicate_of is None
        refs.append(res.parsed.ref_id)
    again = add.sync_detailed("works", client=client, body=models.BodyAddImageV1CollectionsNameImagesPost(
        image=_file(pkg, encode_image(works[0], "PNG"), "again.png", "image/png")))
    assert again.status_code == 200 and again.parsed.duplicate_of == refs[0]

    # search with an edited copy of the second work: a crop, re-encoded as JPEG
    h, w = works[1].shape[:2]
    copy = np.ascontiguousarray(works[1][h // 8: h - h // 8, w // 10: w - w // 10])
    found = _api("search").sync("works", client=client,
                                body=models.BodySearchV1CollectionsNameSearchPost(
                                    image=_file(pkg, encode_image(copy, "JPEG", quality=80),
                                                "copy.jpg", "image/jpeg"), k=2))
    assert isinstance(found, models.SearchResult)
    best = found.matches[0]
    assert isinstance(best, models.CopyMatch)
    assert (best.ref_id, best.decision, best.source) == (refs[1], True, "w1.png")
    assert best.p_value is None  # uncalibrated collection

    # sign: the image comes back in the body (binary, not parsed), the ids in headers
    src = small("photo/gcompris_53.jpg", 320)
    signed = _api("sign").sync_detailed("works", client=client,
                                        body=models.BodySignV1CollectionsNameSignPost(
                                            image=_file(pkg, encode_image(src, "PNG"),
                                                        "s.png", "image/png"),
                                            format_="jpg", title="generated client"))
    assert signed.status_code == 200, signed.content[:300]
    assert isinstance(signed.parsed, types.File)  # the binary answer, typed
    assert signed.parsed.payload.read() == signed.content
    assert signed.headers["content-type"] == "image/jpeg"
    mid = int(signed.headers["X-Manifest-Id"])

    verify = _api("verify_in")
    v = verify.sync("works", client=client, body=models.BodyVerifyInV1CollectionsNameVerifyPost(
        image=_file(pkg, signed.content, "signed.jpg", "image/jpeg")))
    assert isinstance(v, models.Verification)
    assert (v.state, v.route, v.manifest_id) == (models.VerificationState.TRUSTED,
                                                 models.VerificationRouteType0.EMBEDDED, mid)
    # stripped of its manifest (pixels re-encoded): recovered through the watermark
    stripped = encode_image(load_image(signed.content), "JPEG", quality=85)
    v = verify.sync("works", client=client, body=models.BodyVerifyInV1CollectionsNameVerifyPost(
        image=_file(pkg, stripped, "stripped.jpg", "image/jpeg")))
    assert (v.state, v.manifest_id) == (models.VerificationState.RECOVERED, mid)
    assert v.route in (models.VerificationRouteType0.WATERMARK,
                       models.VerificationRouteType0.FINGERPRINT)

    m = _api("get_manifest").sync("works", mid, client=client)
    assert isinstance(m, models.ManifestDetail)
    assert (m.id, m.title, m.label) == (mid, "generated client", signed.headers["X-Manifest-Label"])
    assert m.state == models.ManifestDetailState.ACTIVE

    # errors parse as the documented ErrorBody
    missing = _api("search").sync_detailed("nope", client=pkg.AuthenticatedClient(
        base_url=f"http://127.0.0.1:{port}", token=token), body=models.BodySearchV1CollectionsNameSearchPost(
            image=_file(pkg, encode_image(copy, "PNG"), "c.png", "image/png")))
    assert missing.status_code == 404 and isinstance(missing.parsed, models.ErrorBody)
    assert missing.parsed.error.type_ == "UnknownCollection"

"""The C2PA Soft Binding Resolution API of ``tracemark serve``, used as an independent client
would: sign through the service, strip the manifest, read the soft binding (c2pa-python's
Reader on the signed file, the service's detector, the pdqhash reference), resolve it, fetch
the manifest store and validate it with c2pa-python's Reader. Real app, stores and c2pa."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
c2pa = pytest.importorskip("c2pa")
from fastapi.testclient import TestClient  # noqa: E402

from tracemark.credentials import manifest as mf  # noqa: E402
from tracemark.credentials.verify import HARD_BINDING_CODES  # noqa: E402
from tracemark.imageio import encode_image, load_image  # noqa: E402
from tracemark.service.app import ServiceSettings, create_app  # noqa: E402
from tracemark.service.softbinding import ALGORITHMS, MAX_RESULTS  # noqa: E402

from .conftest import CORPUS  # noqa: E402
from .conftest import corpus_crop as crop  # noqa: E402

WM, FP = mf.SOFT_BINDING_WATERMARK, mf.SOFT_BINDING_FINGERPRINT
DOCS = Path(__file__).resolve().parents[1] / "docs" / "softbinding"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    from tracemark.credentials import init_dev_ca

    root = tmp_path_factory.mktemp("sbr")
    init_dev_ca(root / "certs")
    app = create_app(ServiceSettings(data_dir=root / "data", cert=root / "certs/signer.pem",
                                     key=root / "certs/signer.key", trust=root / "certs/ca.pem",
                                     max_upload_bytes=2 * 1024 * 1024))
    keys = app.state.tm.keys
    tokens = {"admin": keys.create(scope="write", collections=["*"], name="admin")[0],
              "reader": keys.create(scope="read", collections=["works"], name="r")[0],
              "outsider": keys.create(scope="read", collections=["elsewhere"], name="o")[0]}
    gone, rec = keys.create(scope="read", collections=["*"], name="gone")
    keys.revoke(rec.id)
    tokens["revoked"] = gone
    with TestClient(app) as client:
        h = {"Authorization": f"Bearer {tokens['admin']}"}
        for name in ("works", "archive"):
            assert client.post("/v1/collections", json={"name": name}, headers=h).status_code == 201
        src = encode_image(crop("photo/gcompris_50.jpg", 384), "PNG")
        signed = {}
        for name in ("works", "archive"):  # the same picture signed in two collections
            res = client.post(f"/v1/collections/{name}/sign", headers=h,
                              files={"image": ("a.png", io.BytesIO(src), "image/png")},
                              data={"format": "jpg", "title": f"Harbour ({name})"})
            assert res.status_code == 200, res.text
            signed[name] = (res.content, res.headers["X-Manifest-Label"])
        yield client, tokens, signed, (root / "certs/ca.pem").read_text()


def auth(tokens: dict[str, str], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}"}


def assert_error(res: Any, status: int, type_: str | None = None) -> dict[str, Any]:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["message"]
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    return body


def strip(signed: bytes) -> bytes:
    """The pixels re-encoded: no manifest left, slightly different pixels."""
    return encode_image(load_image(signed), "JPEG", quality=90)


def soft_bindings(asset: bytes, media_type: str) -> dict[str, str]:
    """alg -> value of the active manifest's soft-binding assertions, read by c2pa-python."""
    with c2pa.Reader(media_type, io.BytesIO(asset)) as reader:
        store = json.loads(reader.json())
    active = store["manifests"][store["active_manifest"]]
    return {a["data"]["alg"]: a["data"]["blocks"][0]["value"] for a in active["assertions"]
            if a["label"].startswith("c2pa.soft-binding")}


def validation(asset: bytes, media_type: str, manifest_store: bytes,
               anchors: str) -> tuple[str, dict, dict]:
    """c2pa-python's verdict on ``asset`` with ``manifest_store`` as its sidecar, trusting the
    PEM ``anchors`` (c2pa's own settings): the state, the active manifest's codes by kind,
    and the store's JSON."""
    context = c2pa.Context.from_dict({"trust": {"user_anchors": anchors},
                                      "verify": {"remote_manifest_fetch": False}})
    with c2pa.Reader(media_type, io.BytesIO(asset), manifest_store, context) as reader:
        state = reader.get_validation_state()
        results = reader.get_validation_results() or {}
        store = json.loads(reader.json())
    active = results.get("activeManifest", {})
    codes = {k: {c["code"] for c in active.get(k, [])} for k in ("success", "failure")}
    return str(state), codes, store


def reference_pdq(asset: bytes) -> bytes:
    """The PDQ hash of ``asset`` by the reference implementation (pdqhash), as the 32 bytes
    of the ThreatExchange hash string."""
    pdqhash = pytest.importorskip("pdqhash", reason="the oracle 'pdqhash' is a dev dependency")
    from .test_fingerprint_api import _reference_pdq_hex

    bits, _quality = pdqhash.compute(load_image(asset))
    return bytes.fromhex(_reference_pdq_hex(bits))


def by_binding(client: TestClient, headers: dict[str, str], alg: str, value: str,
               **params: Any) -> Any:
    return client.get("/v1/matches/byBinding", params={"alg": alg, "value": value, **params},
                      headers=headers)


def test_an_independent_client_resolves_a_stripped_copy(svc: Any) -> None:
    client, tokens, signed, ca = svc
    asset, label = signed["works"]
    h = auth(tokens, "reader")
    bindings = soft_bindings(asset, "image/jpeg")  # what a C2PA validator finds in the file
    assert set(bindings) == {WM, FP}
    stripped = strip(asset)
    assert c2pa.Reader.try_create("image/jpeg", io.BytesIO(stripped)) is None  # really stripped

    # the watermark value, read from the stripped copy by the service's detector
    det = client.post("/v1/collections/works/watermark/detect", headers=h,
                      files={"image": ("s.jpg", io.BytesIO(stripped), "image/jpeg")}).json()
    assert det["present"] is True
    value = base64.b64encode(int(det["payload"]).to_bytes(8, "big")).decode()
    assert value == bindings[WM]  # the encoding the algorithm entry states

    res = by_binding(client, h, WM, value)
    assert res.status_code == 200, res.text
    assert res.json() == {"matches": [{"manifestId": label, "similarityScore": 100}]}

    got = client.get(f"/v1/manifests/{label}", headers=h)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/c2pa"
    manifest_store = got.content

    # c2pa-python validates the returned store: against the signed file it is the file's own
    # (valid); against the stripped copy only the hard binding fails (the pixels changed)
    state, codes, store = validation(asset, "image/jpeg", manifest_store, ca)
    assert state == "Trusted", codes
    assert store["active_manifest"] == label
    assert store["manifests"][label]["title"] == "Harbour (works)"
    state, codes, _ = validation(stripped, "image/jpeg", manifest_store, ca)
    assert state == "Invalid"
    assert {"claimSignature.validated", "signingCredential.trusted"} <= codes["success"]
    assert codes["failure"] and codes["failure"] <= HARD_BINDING_CODES, codes
    # the validation is real: a flipped byte in the store's signature breaks it
    broken = bytearray(manifest_store)
    broken[-40] ^= 0xFF
    try:
        state, codes, _ = validation(asset, "image/jpeg", bytes(broken), ca)
    except c2pa.C2paError:
        pass  # refused outright: also a failed validation
    else:
        assert state == "Invalid" and not codes["failure"] <= HARD_BINDING_CODES, codes
        assert "claimSignature.validated" not in codes["success"], codes

    # returnActiveManifest: this store holds the active manifest only, so the same bytes
    only = client.get(f"/v1/manifests/{label}", params={"returnActiveManifest": "true"},
                      headers=h)
    assert only.status_code == 200 and only.content == manifest_store


def test_fingerprint_values_from_the_reference_pdq_resolve(svc: Any) -> None:
    client, tokens, signed, _ca = svc
    (asset, label), (_, label2) = signed["works"], signed["archive"]
    h = auth(tokens, "admin")
    # the value of a stripped copy, computed by the reference PDQ: near, not equal
    value = base64.b64encode(reference_pdq(strip(asset))).decode()
    res = by_binding(client, h, FP, value)
    assert res.status_code == 200, res.text
    matches = res.json()["matches"]
    assert {m["manifestId"] for m in matches} == {label, label2}  # both collections
    assert all(88 <= m["similarityScore"] <= 100 for m in matches)  # within 31 bits
    # the value in the manifest names it too; URL-safe base64 without padding is accepted
    exact = soft_bindings(asset, "image/jpeg")[FP]
    urlsafe = exact.replace("+", "-").replace("/", "_").rstrip("=")
    for v in (exact, urlsafe):
        assert {m["manifestId"] for m in by_binding(client, h, FP, v).json()["matches"]} \
            == {label, label2}
    # maxResults caps; collection narrows; POST takes the query as a JSON body
    assert len(by_binding(client, h, FP, exact, maxResults=1).json()["matches"]) == 1
    narrowed = by_binding(client, h, FP, exact, collection="archive").json()["matches"]
    assert [m["manifestId"] for m in narrowed] == [label2]
    posted = client.post("/v1/matches/byBinding", json={"alg": FP, "value": exact},
                         params={"maxResults": 5}, headers=h)
    assert posted.status_code == 200
    assert {m["manifestId"] for m in posted.json()["matches"]} == {label, label2}
    # the key decides what is searched: the reader sees "works" only
    seen = by_binding(client, auth(tokens, "reader"), FP, exact).json()["matches"]
    assert [m["manifestId"] for m in seen] == [label]


def test_by_content_answers_a_stripped_copy(svc: Any) -> None:
    client, tokens, signed, _ca = svc
    asset, label = signed["works"]
    h = {**auth(tokens, "admin"), "Content-Type": "image/jpeg"}
    stripped = strip(asset)

    def post(data: bytes, **params: Any) -> Any:
        return client.post("/v1/matches/byContent", content=data, params=params, headers=h)

    res = post(stripped, collection="works")
    assert res.status_code == 200, res.text
    assert [m["manifestId"] for m in res.json()["matches"]] == [label]
    assert res.json()["matches"][0]["similarityScore"] >= 99  # watermark: 1 - p-value
    for alg in (WM, FP):  # each route alone finds it
        only = post(stripped, collection="works", alg=alg).json()["matches"]
        assert [m["manifestId"] for m in only] == [label], alg
    every = post(stripped).json()["matches"]  # every readable collection
    assert {m["manifestId"] for m in every} == {label, signed["archive"][1]}
    # a hint binding is merged in
    hint = soft_bindings(signed["archive"][0], "image/jpeg")[WM]
    hinted = post(stripped, collection="works", hintAlg=WM, hintValue=hint).json()["matches"]
    assert {m["manifestId"] for m in hinted} == {label}  # the archive's tag is not works'
    other = encode_image(crop("photo/gcompris_100.jpg", 320), "JPEG", quality=90)
    assert post(other).json() == {"matches": []}  # an unrelated image: nothing, no error


def test_unknown_values_are_empty_results(svc: Any) -> None:
    client, tokens, signed, _ca = svc
    h = auth(tokens, "admin")
    payload = int.from_bytes(base64.b64decode(soft_bindings(signed["works"][0],
                                                            "image/jpeg")[WM]), "big")
    rng = np.random.default_rng(15)
    unused_id = (payload >> 40 << 40) | ((1 << 40) - 1)  # our tag, no such manifest
    for v in (unused_id, int(rng.integers(0, 2**63))):  # and a tag of no store
        res = by_binding(client, h, WM, base64.b64encode(v.to_bytes(8, "big")).decode())
        assert res.status_code == 200 and res.json() == {"matches": []}, res.text
    far = base64.b64encode(rng.integers(0, 256, 32, dtype=np.uint8).tobytes()).decode()
    assert by_binding(client, h, FP, far).json() == {"matches": []}
    assert_error(client.get("/v1/manifests/urn:c2pa:00000000-0000-4000-8000-000000000000",
                            headers=h), 404, "UnknownManifest")


def test_bad_queries_are_400_with_a_reason(svc: Any) -> None:
    client, tokens, _, _ca = svc
    h = auth(tokens, "admin")
    good = base64.b64encode(bytes(8)).decode()
    body = assert_error(by_binding(client, h, "com.example.nope.1", good), 400, "UnknownAlgorithm")
    assert WM in body["error"]["message"] and FP in body["error"]["message"]
    assert_error(client.get("/v1/matches/byBinding", params={"value": good}, headers=h),
                 400, "MissingAlgorithm")
    assert_error(client.get("/v1/matches/byBinding", params={"alg": WM}, headers=h),
                 400, "MissingParameter")
    for bad in ("%%%", "not base64!", base64.b64encode(bytes(7)).decode(),
                base64.b64encode(bytes(33)).decode()):
        for alg in (WM, FP):
            assert_error(by_binding(client, h, alg, bad), 400, "InvalidBindingValue")
    for body_ in (b"{", b"[]", b'{"alg": "x"}', b'{"alg": 1, "value": "AA=="}',
                  b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000):  # deeper than json parses
        assert_error(client.post("/v1/matches/byBinding", content=body_, headers={
            **h, "Content-Type": "application/json"}), 400, "InvalidQuery")
    jpeg = {**h, "Content-Type": "image/jpeg"}
    img = encode_image(crop("photo/gcompris_48.jpg", 200), "JPEG")
    assert_error(client.post("/v1/matches/byContent", content=img, params={"alg": "x.y"},
                             headers=jpeg), 400, "UnknownAlgorithm")
    assert_error(client.post("/v1/matches/byContent", content=img, params={"hintAlg": WM},
                             headers=jpeg), 400, "InvalidHint")
    assert_error(client.post("/v1/matches/byContent", content=b"", headers=jpeg), 415)
    assert_error(client.post("/v1/matches/byContent", content=b"hello", headers={
        **h, "Content-Type": "text/plain"}), 415, "UnsupportedMediaType")
    assert_error(client.post("/v1/matches/byContent", content=b"not an image at all",
                             headers=jpeg), 415)
    for bad_id in ("42", "urn:", "x" * 300, "urn:c2pa:a b"):
        assert_error(client.get(f"/v1/manifests/{bad_id}", headers=h), 400,
                     "InvalidManifestId")
    assert_error(client.get("/v1/manifests/urn:c2pa:x", params={"returnActiveManifest": "yes"},
                            headers=h), 400)


@pytest.mark.parametrize("n,ok", [(0, False), (-1, False), (1, True), (MAX_RESULTS, True),
                                  (MAX_RESULTS + 1, False), ("ten", False), ("1.5", False)])
def test_max_results_bounds(svc: Any, n: Any, ok: bool) -> None:
    client, tokens, _, _ca = svc
    h = auth(tokens, "admin")
    value = base64.b64encode(bytes(8)).decode()
    res = by_binding(client, h, WM, value, maxResults=n)
    posted = client.post("/v1/matches/byBinding", params={"maxResults": n},
                         json={"alg": WM, "value": value}, headers=h)
    for r in (res, posted):
        if ok:
            assert r.status_code == 200, r.text
        else:
            assert_error(r, 400, "InvalidMaxResults")


def test_keys_and_scopes(svc: Any) -> None:
    client, tokens, signed, _ca = svc
    label = signed["works"][1]
    value = soft_bindings(signed["works"][0], "image/jpeg")[WM]
    assert_error(by_binding(client, {}, WM, value), 401, "MissingApiKey")
    assert_error(by_binding(client, {"Authorization": "Bearer tm_nope_nope"}, WM, value), 401)
    assert_error(by_binding(client, auth(tokens, "revoked"), WM, value), 401)
    assert_error(client.get(f"/v1/manifests/{label}"), 401)
    assert_error(client.post("/v1/matches/byContent", content=b"x"), 401)
    out = auth(tokens, "outsider")  # may read "elsewhere" only
    assert by_binding(client, out, WM, value).json() == {"matches": []}  # "works" not searched
    assert_error(by_binding(client, out, WM, value, collection="works"), 403, "Forbidden")
    assert_error(client.get(f"/v1/manifests/{label}", headers=out), 404)
    assert_error(client.get(f"/v1/manifests/{label}", params={"collection": "works"},
                            headers=out), 403)
    assert_error(by_binding(client, auth(tokens, "admin"), WM, value, collection="nope"), 404,
                 "UnknownCollection")
    assert client.get(f"/v1/manifests/{label}", headers={"X-API-Key": tokens["reader"]}
                      ).status_code == 200
    # the algorithm list needs no key (the specification gives it no security)
    algs = client.get("/v1/services/supportedAlgorithms")
    assert algs.status_code == 200
    assert algs.json() == {"watermarks": [{"alg": WM}], "fingerprints": [{"alg": FP}]}


def test_algorithm_entries_are_the_names_sign_writes(svc: Any) -> None:
    """docs/softbinding/<alg>.json: one entry per algorithm, in the C2PA soft-binding
    algorithm list's entry format (its required fields and value rules), naming exactly the
    algorithms the API resolves and the manifests carry."""
    _client, _tokens, signed, _ca = svc
    entries = {p.stem: json.loads(p.read_text()) for p in sorted(DOCS.glob("*.json"))}
    assert set(entries) == set(ALGORITHMS)
    for name, e in entries.items():
        assert {"identifier", "alg", "type", "entryMetadata"} <= set(e)
        assert e["alg"] == name and re.fullmatch(r"[a-zA-Z0-9]+\.[a-zA-Z0-9.]+", name)
        assert isinstance(e["identifier"], int) and 0 <= e["identifier"] <= 65535
        assert e["type"] == ALGORITHMS[name].type
        assert ("decodedMediaTypes" in e) != ("encodedMediaTypes" in e)
        assert e["decodedMediaTypes"] == ["image"]
        meta = e["entryMetadata"]
        assert {"description", "dateEntered", "contact", "informationalUrl"} <= set(meta)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", meta["dateEntered"])
        assert "@" in meta["contact"] and meta["informationalUrl"].startswith("https://")
    assert set(soft_bindings(signed["works"][0], "image/jpeg")) == set(ALGORITHMS)


def test_the_openapi_schema_states_the_specification(svc: Any) -> None:
    client, _tokens, _, _ca = svc
    paths = client.get("/openapi.json").json()["paths"]
    ops = {(p, m): op for p, item in paths.items() for m, op in item.items()}
    assert ops[("/v1/matches/byBinding", "get")]["operationId"] == "queryByBinding"
    assert ops[("/v1/matches/byBinding", "post")]["operationId"] == "queryByLargeBinding"
    assert ops[("/v1/matches/byContent", "post")]["operationId"] == "uploadFile"
    assert ops[("/v1/manifests/{manifestId}", "get")]["operationId"] == "getManifestById"
    assert ops[("/v1/services/supportedAlgorithms", "get")]["operationId"] \
        == "getSupportedBindings"
    params = {p["name"]: p for p in ops[("/v1/matches/byBinding", "get")]["parameters"]}
    assert params["alg"]["required"] and params["value"]["required"]
    assert params["maxResults"]["schema"] == {"type": "integer", "minimum": 1,
                                              "maximum": MAX_RESULTS, "default": 10}
    assert "application/c2pa" in ops[("/v1/manifests/{manifestId}", "get")]["responses"][
        "200"]["content"]
    assert "image/*" in ops[("/v1/matches/byContent", "post")]["requestBody"]["content"]


# --- returnActiveManifest: the active manifest and what it references, cut from the store ---


def test_return_active_manifest_keeps_what_the_active_one_references(svc: Any) -> None:
    from tracemark.credentials.jumbf import active_manifest_store, manifest_boxes
    from tracemark.errors import ManifestStoreError

    client, tokens, signed, ca = svc
    h = auth(tokens, "admin")
    (_asset_a, label_a), (asset_b, label_b) = signed["works"], signed["archive"]
    store_a = client.get(f"/v1/manifests/{label_a}", headers=h).content
    store_b = client.get(f"/v1/manifests/{label_b}", headers=h).content
    [box_a] = manifest_boxes(store_a)
    [box_b] = manifest_boxes(store_b)
    # a store holding a manifest the active one does not reference (A, then B active):
    # B's store box with A's manifest box put before B's
    head = store_b[:len(store_b) - len(box_b.data)]
    body = head[8:] + box_a.data + box_b.data
    mixed = (8 + len(body)).to_bytes(4, "big") + b"jumb" + body
    assert [m.label for m in manifest_boxes(mixed)] == [label_a, label_b]
    cut = active_manifest_store(mixed)
    assert [m.label for m in manifest_boxes(cut)] == [label_b] and cut == store_b
    state, codes, store = validation(asset_b, "image/jpeg", cut, ca)  # c2pa: still signed
    assert state == "Trusted" and list(store["manifests"]) == [label_b], codes

    # through the API: an edit of a signed image holds its ingredient's manifest, which the
    # active one references: both come back, and c2pa validates the answer
    src = encode_image(crop("photo/gcompris_52.jpg", 320), "PNG")
    first = client.post("/v1/collections/works/sign", headers=h, data={"format": "jpg"},
                        files={"image": ("p.png", io.BytesIO(src), "image/png")})
    again = client.post("/v1/collections/works/sign", headers=h, data={"format": "jpg"},
                        files={"image": ("p.jpg", io.BytesIO(first.content), "image/jpeg")})
    assert again.status_code == 200, again.text
    label_1, label_2 = first.headers["X-Manifest-Label"], again.headers["X-Manifest-Label"]
    whole = client.get(f"/v1/manifests/{label_2}", headers=h)
    only = client.get(f"/v1/manifests/{label_2}", params={"returnActiveManifest": "true"},
                      headers=h)
    assert only.status_code == 200 and only.headers["content-type"] == "application/c2pa"
    assert [m.label for m in manifest_boxes(only.content)] == [label_1, label_2]
    assert only.content == whole.content
    state, codes, store = validation(again.content, "image/jpeg", only.content, ca)
    assert state == "Trusted" and store["active_manifest"] == label_2, codes
    # the first manifest's own store is itself only
    first_only = client.get(f"/v1/manifests/{label_1}", headers=h,
                            params={"returnActiveManifest": "1"}).content
    assert [m.label for m in manifest_boxes(first_only)] == [label_1]

    # malformed stores are typed errors
    for bad in (b"", b"junk", store_b[:-10], store_b[:7], b"\x00\x00\x00\x08free",
                head[:8] + b"\x00" * 20, bytes(8 + 17 - 8).rjust(8, b"\x00")):
        with pytest.raises(ManifestStoreError):
            active_manifest_store(bad)
    empty = (len(head)).to_bytes(4, "big") + b"jumb" + head[8:]  # the store box, no manifest
    with pytest.raises(ManifestStoreError, match="no manifest"):
        active_manifest_store(empty)
    with pytest.raises(ManifestStoreError):
        manifest_boxes("a str")  # type: ignore[arg-type]


# --- byContent: a manifest still embedded in the upload ---------------------------------------


def test_by_content_answers_the_manifest_embedded_in_the_upload(svc: Any) -> None:
    client, tokens, _signed, _ca = svc
    h = auth(tokens, "admin")
    assert client.post("/v1/collections", json={"name": "tiny"}, headers=h).status_code == 201
    # too small for the watermark (signed without it), and its fingerprint removed: the
    # watermark and fingerprint routes cannot find it, only the embedded manifest can
    small = encode_image(crop("art/" + sorted(p.name for p in (CORPUS / "art").glob("*.jpg"))[0],
                              256)[:100, :120], "PNG")
    res = client.post("/v1/collections/tiny/sign", headers=h, data={"format": "png"},
                      files={"image": ("t.png", io.BytesIO(small), "image/png")})
    assert res.status_code == 200, res.text
    signed, label = res.content, res.headers["X-Manifest-Label"]
    [ref] = client.get("/v1/collections/tiny/images", headers=h).json()["images"]
    assert client.delete(f"/v1/collections/tiny/images/{ref['id']}", headers=h).status_code == 200

    def post(data: bytes, **params: Any) -> list[Any]:
        r = client.post("/v1/matches/byContent", content=data, params=params,
                        headers={**h, "Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        return r.json()["matches"]

    assert post(signed, collection="tiny") == [{"manifestId": label, "similarityScore": 100}]
    assert [m["manifestId"] for m in post(signed)] == [label]  # every collection searched
    stripped = encode_image(load_image(signed), "PNG")
    assert post(stripped, collection="tiny") == []  # the routes alone find nothing
    assert post(signed, collection="tiny", alg=FP) == []  # alg asks for one soft binding
    # a manifest whose hard binding fails (other pixels under the same caBX chunk): c2pa
    # says invalid, and it is not answered
    other = load_image(signed).copy()
    other[0:8, 0:8] = 255 - other[0:8, 0:8]
    tampered = _png_with_chunks_of(signed, encode_image(other, "PNG"))
    from tracemark.credentials import manifest as _mf

    assert _mf.read_manifest(tampered, "image/png").state == "invalid"
    assert post(tampered, collection="tiny") == []


def _png_with_chunks_of(signed: bytes, pixels: bytes) -> bytes:
    """``signed``'s chunks with ``pixels``' IDAT chunks in place of its own."""
    import struct

    def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
        out, pos = [], 8
        while pos < len(png):
            (n,) = struct.unpack(">I", png[pos:pos + 4])
            out.append((png[pos + 4:pos + 8], png[pos:pos + 12 + n]))
            pos += 12 + n
        return out
    idat = [raw for kind, raw in chunks(pixels) if kind == b"IDAT"]
    out, placed = [signed[:8]], False
    for kind, raw in chunks(signed):
        if kind != b"IDAT":
            out.append(raw)
        elif not placed:
            out.extend(idat)
            placed = True
    return b"".join(out)

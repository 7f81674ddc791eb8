"""Output screening (issue 16 item 4): a generated image against the protected collection.

Every input is made here: a collection of corpus photos (calibrated on other photos), crops
and re-encodes of its references, an unrelated photo marked with tracemark's watermark,
files signed with c2pa-python's own Builder by "another tool" whose manifest declares a
protected work (by name, or by the PDQ soft binding of a registered image).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tracemark.copydetect import CopyIndex
from tracemark.errors import (
    ConfigError,
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    ImageTooSmallError,
)
from tracemark.guard import Concept
from tracemark.guard.image import DECISIONS, screen_image
from tracemark.imageio import encode_image

from .conftest import corpus_images, small_image

c2pa = pytest.importorskip("c2pa")

KEY = "guard image test passphrase"
NIMBUS = "Captain Nimbus"


def _crop(rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The part ``box`` (fractions x0, y0, x1, y1) of ``rgb``."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = (round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h))
    return np.ascontiguousarray(rgb[y0:y1, x0:x1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> dict[str, Any]:
    """A calibrated collection of six photos; concept Captain Nimbus has the first as its
    reference; unrelated photos kept out of it."""
    root = tmp_path_factory.mktemp("guard-image")
    photos = corpus_images("photo")
    refs = [small_image(p, 400) for p in photos[5::9][:6]]
    background = [small_image(p, 360) for p in photos[7::9][:8]]
    unrelated = [small_image(p, 400) for p in photos[2::9][:4]]
    db = root / "ix"
    with CopyIndex.create(db) as ci:
        ids = [ci.add(r, source=f"ref{i}.png", owner="Nimbus Studios").id
               for i, r in enumerate(refs)]
        ci.calibrate(background)
    concept = Concept(NIMBUS, owner="Nimbus Studios", aliases=("Nimbus",),
                      traits=("a caped cloud hero",), references=(ids[0],))
    return {"db": db, "refs": refs, "ids": ids, "unrelated": unrelated, "concept": concept,
            "root": root}


@pytest.fixture
def ci(world: dict[str, Any]):  # type: ignore[no-untyped-def]
    with CopyIndex.open(world["db"], read_only=True) as index:
        yield index


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tracemark.credentials import init_dev_ca

    return init_dev_ca(tmp_path_factory.mktemp("other-ca"))


def foreign_sign(data: bytes, ca: Any, *, ingredient: str | None = None,
                 about: str | None = None, pdq: bytes | None = None) -> bytes:
    """``data`` (a JPEG) signed by "another tool" with c2pa-python's Builder: optionally an
    ingredient titled ``ingredient``, a schema.org CreativeWork ``about``, and a PDQ soft
    binding (tracemark's algorithm name) of ``pdq``."""
    from tracemark.credentials.manifest import SOFT_BINDING_FINGERPRINT

    assertions: list[dict[str, Any]] = []
    if about is not None:
        assertions.append({"label": "stds.schema-org.CreativeWork",
                           "data": {"@context": "http://schema.org/", "@type": "CreativeWork",
                                    "about": about}})
    if pdq is not None:
        assertions.append({"label": "c2pa.soft-binding",
                           "data": {"alg": SOFT_BINDING_FINGERPRINT,
                                    "blocks": [{"scope": {},
                                                "value": base64.b64encode(pdq).decode()}]}})
    definition: dict[str, Any] = {
        "claim_generator_info": [{"name": "another-generator", "version": "2.1"}],
        "title": "generated.jpg", "assertions": assertions}
    if ingredient is not None:
        definition["ingredients"] = [{"title": ingredient, "format": "image/png",
                                      "relationship": "inputTo"}]
    ctx = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}},
                                  "verify": {"remote_manifest_fetch": False}})
    builder = c2pa.Builder(definition, context=ctx)
    builder.set_intent(c2pa.C2paBuilderIntent.CREATE,
                       c2pa.C2paDigitalSourceType.TRAINED_ALGORITHMIC_MEDIA)
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(
        b"es256", ca.signer_chain.read_bytes(), ca.signer_key.read_bytes(), None))
    out = io.BytesIO()
    builder.sign(signer, "image/jpeg", io.BytesIO(data), out)
    return out.getvalue()


def _inside(points: list[list[float]], w: int, h: int, tol: float) -> bool:
    return all(-tol <= x <= w + tol and -tol <= y <= h + tol for x, y in points)


# --- copies -------------------------------------------------------------------------------


@pytest.mark.parametrize("box", [(0.1, 0.15, 0.85, 0.9), (0.4, 0.3, 1.0, 0.95)])
def test_crop_reencode_of_a_concept_reference_blocks_with_its_region(world, ci, box) -> None:
    ref = world["refs"][0]
    crop = _crop(ref, box)
    data = encode_image(crop, "JPEG", quality=70)
    s = screen_image(data, ci, concepts=[world["concept"]])
    assert s.decision == "block", s.reasons
    top = s.matches[0]
    assert top.concept.id == world["concept"].id and top.flagged
    assert {e.how for e in top.evidence} == {"image"}
    copy = next(c for c in s.copies if c.ref_id == world["ids"][0])
    assert copy.concepts == (world["concept"].id,) and copy.decision == "block"
    assert copy.p_value is not None and copy.p_value <= s.alpha
    # the crop's outline in the reference's pixels is the crop box (a few pixels off)
    h, w = ref.shape[:2]
    xs = [p[0] for p in copy.region]
    ys = [p[1] for p in copy.region]
    assert abs(min(xs) - box[0] * w) < 0.04 * w and abs(max(xs) - box[2] * w) < 0.04 * w
    assert abs(min(ys) - box[1] * h) < 0.04 * h and abs(max(ys) - box[3] * h) < 0.04 * h
    # and the reference's outline in the query holds the whole query
    qh, qw = crop.shape[:2]
    qx = [p[0] for p in copy.query_region]
    qy = [p[1] for p in copy.query_region]
    assert min(qx) <= 0.05 * qw and max(qx) >= 0.95 * qw
    assert min(qy) <= 0.05 * qh and max(qy) >= 0.95 * qh
    assert s.to_dict()["decision"] == "block"
    json.dumps(s.to_dict())


def test_a_copy_of_a_registered_image_no_concept_names_is_a_protected_work(world, ci) -> None:
    inset = np.full((420, 560, 3), 235, np.uint8)
    part = _crop(world["refs"][3], (0.0, 0.0, 0.9, 0.9))
    inset[40:40 + part.shape[0], 60:60 + part.shape[1]] = part
    s = screen_image(encode_image(inset, "PNG"), ci, concepts=[world["concept"]])
    assert s.decision == "block", s.reasons
    rid = world["ids"][3]
    assert s.matches[0].concept.id == f"image-{rid}"
    assert s.matches[0].concept.owner == "Nimbus Studios"
    copy = next(c for c in s.copies if c.ref_id == rid)
    assert copy.concepts == ()
    # the reference sits where it was pasted in the query
    assert _inside(copy.query_region, inset.shape[1], inset.shape[0], tol=8)
    assert min(p[0] for p in copy.query_region) == pytest.approx(60, abs=8)


def test_unrelated_corpus_images_are_allowed(world, ci) -> None:
    for rgb in world["unrelated"]:
        s = screen_image(encode_image(rgb, "JPEG", quality=85), ci,
                         concepts=[world["concept"]], key=KEY)
        assert s.decision == "allow", s.reasons
        assert s.matches == [] and s.copies == [] and not s.flagged
        assert s.checks == {"copy": "ran", "watermark": "ran", "manifest": "ran"}
        assert s.watermark is not None and s.watermark["present"] is False


# --- the watermark ------------------------------------------------------------------------


def test_an_unrelated_image_marked_with_the_key_blocks_with_watermark_evidence(world, ci) -> None:
    from tracemark.watermark import get_method

    marked = get_method("lattice").embed(world["unrelated"][1], 0xC0FFEE, KEY)
    data = encode_image(marked, "JPEG", quality=90)
    s = screen_image(data, ci, concepts=[world["concept"]], key=KEY)
    assert s.decision == "block", s.reasons
    assert s.copies == []
    (m,) = s.matches
    assert m.concept.id == "watermarked-work" and m.flagged
    assert m.evidence[0].how == "watermark" and "c0ffee" in m.evidence[0].text
    assert s.watermark["present"] is True and s.watermark["p_value"] <= s.watermark_alpha
    # another key does not read it: nothing says the image is a protected work
    other = screen_image(data, ci, concepts=[world["concept"]], key=KEY + " (another)")
    assert other.decision == "allow" and other.watermark["present"] is False
    # without a key the check is skipped, and says so
    nokey = screen_image(data, ci)
    assert nokey.decision == "allow" and nokey.checks["watermark"] == "skipped: no key"


# --- a foreign manifest -------------------------------------------------------------------


def test_a_foreign_manifest_declaring_a_concept_is_evidence(world, ci, other_ca) -> None:
    plain = encode_image(world["unrelated"][2], "JPEG", quality=88)
    signed = foreign_sign(plain, other_ca, ingredient=f"{NIMBUS} key art.png",
                          about="Fan art of C-a-p-t-a-i-n N1mbus")
    s = screen_image(signed, ci, concepts=[world["concept"]], own_signers=["platform signer"])
    assert s.manifest is not None and not s.manifest.own
    assert s.manifest.state == "valid"  # signed and intact; its CA is not trusted here
    assert s.manifest.generator == "another-generator"
    assert s.decision == "block", s.reasons
    (m,) = s.matches
    assert m.concept.id == world["concept"].id
    hows = {e.how for e in m.evidence}
    assert hows == {"manifest"}
    texts = " | ".join(e.text for e in m.evidence)
    assert NIMBUS in texts and "N1mbus" in texts
    # trusted under the c2pa anchors the caller gives: the same decision, state trusted
    trusted = screen_image(signed, ci, concepts=[world["concept"]],
                           trust_pem=other_ca.ca_cert.read_text())
    assert trusted.manifest.state == "trusted" and trusted.decision == "block"
    # the platform's own signer: its manifests are not evidence
    own = screen_image(signed, ci, concepts=[world["concept"]],
                       own_signers=["tracemark development signer"])
    assert own.manifest.own and own.decision == "allow" and own.matches == []


def test_a_foreign_manifest_carrying_a_registered_fingerprint(world, ci, other_ca) -> None:
    from tracemark.fingerprint.pdq import pdq_hash

    packed = pdq_hash(world["refs"][4], packed=True)[0].tobytes()
    plain = encode_image(world["unrelated"][3], "JPEG", quality=88)
    s = screen_image(foreign_sign(plain, other_ca, pdq=packed), ci, concepts=[world["concept"]])
    assert s.decision == "block", s.reasons
    rid = world["ids"][4]
    assert s.manifest.fingerprints == (packed,)
    assert s.matches[0].concept.id == f"image-{rid}"
    assert s.matches[0].evidence[0].how == "manifest"


def test_a_foreign_manifest_declaring_nothing_protected_is_allowed(world, ci, other_ca) -> None:
    plain = encode_image(world["unrelated"][0], "JPEG", quality=88)
    s = screen_image(foreign_sign(plain, other_ca, ingredient="holiday.png",
                                  about="a cartoon mouse in a meadow"), ci,
                     concepts=[world["concept"]])
    assert s.decision == "allow", s.reasons
    assert s.manifest is not None and s.manifest.declared


def test_a_broken_foreign_manifest_declaring_a_concept_asks_for_review(world, ci,
                                                                       other_ca) -> None:
    plain = encode_image(world["unrelated"][2], "JPEG", quality=88)
    signed = bytearray(foreign_sign(plain, other_ca, about=f"{NIMBUS} poster"))
    # flip a byte of the scan data: the manifest's hash of the image no longer holds
    signed[-200] ^= 0xFF
    s = screen_image(bytes(signed), ci, concepts=[world["concept"]])
    assert s.manifest is not None and s.manifest.state == "invalid"
    assert s.decision == "review", s.reasons
    assert not s.matches[0].flagged


# --- bad input ----------------------------------------------------------------------------


def test_bad_inputs_raise_typed_errors(world, ci, tmp_path) -> None:
    from .test_imageio import crafted_png

    with pytest.raises(EmptyImageError):
        screen_image(b"", ci)
    with pytest.raises(CorruptImageError):
        screen_image(b"\xff\xd8\xff\xe0 not really a jpeg", ci)
    with pytest.raises(CorruptImageError):
        screen_image(encode_image(world["refs"][0], "PNG")[:-300], ci)
    with pytest.raises(ImageTooLargeError):
        screen_image(crafted_png(60_000, 60_000), ci)
    with pytest.raises(ImageTooSmallError):
        screen_image(np.zeros((1, 1, 3), np.uint8), ci)
    for bad in (0.0, 0.5, -1, float("nan"), True):
        with pytest.raises(ConfigError):
            screen_image(world["refs"][0], ci, alpha=bad)
    with pytest.raises(ConfigError):
        screen_image(world["refs"][0], ci, own_signers="just one string")
    assert set(DECISIONS) == {"allow", "review", "block"}


def test_an_array_is_screened_without_the_manifest_check(world, ci) -> None:
    s = screen_image(world["unrelated"][0], ci)
    assert s.decision == "allow"
    assert s.checks["manifest"].startswith("skipped")


def test_an_empty_collection_allows(tmp_path, world) -> None:
    with CopyIndex.create(tmp_path / "empty") as empty:
        s = screen_image(encode_image(world["refs"][0], "PNG"), empty,
                         concepts=[world["concept"]])
    assert s.decision == "allow" and s.copies == []


# --- the command --------------------------------------------------------------------------


def _cli(args: list[str], env: dict[str, str] | None = None) -> Any:
    from tracemark.cli.guard_image import guard_image_command

    return CliRunner().invoke(guard_image_command, args, env=env, catch_exceptions=False)


def _lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture
def folder(world, tmp_path) -> Path:
    from tracemark.watermark import get_method

    d = tmp_path / "generated"
    d.mkdir()
    (d / "copy.jpg").write_bytes(encode_image(_crop(world["refs"][0], (0.1, 0.1, 0.9, 0.9)),
                                              "JPEG", quality=75))
    (d / "fresh.png").write_bytes(encode_image(world["unrelated"][0], "PNG"))
    marked = get_method("lattice").embed(world["unrelated"][1], 7, KEY)
    (d / "marked.png").write_bytes(encode_image(marked, "PNG"))
    (d / "broken.jpg").write_bytes(encode_image(world["unrelated"][2], "JPEG")[:300])
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps([world["concept"].to_dict()]))
    return d


def test_cli_batch_over_a_folder_reports_the_corrupt_file_and_carries_on(world, folder) -> None:
    res = _cli(["--store", str(world["db"]), "--concepts", str(folder.parent / "concepts.json"),
                "--passphrase-env", "GUARD_KEY", str(folder)], env={"GUARD_KEY": KEY})
    rows = {Path(r["image"]).name: r for r in _lines(res.output)}
    assert set(rows) == {"copy.jpg", "fresh.png", "marked.png", "broken.jpg"}
    assert rows["broken.jpg"]["error"]["type"] == "CorruptImageError"
    assert rows["broken.jpg"]["decision"] is None
    assert rows["copy.jpg"]["decision"] == "block"
    assert rows["copy.jpg"]["matches"][0]["concept"] == world["concept"].id
    assert rows["copy.jpg"]["copies"][0]["query_region"] is not None
    assert rows["marked.png"]["decision"] == "block"
    assert rows["marked.png"]["matches"][0]["evidence"][0]["how"] == "watermark"
    assert rows["fresh.png"]["decision"] == "allow" and rows["fresh.png"]["error"] is None
    assert res.exit_code == 1  # one image failed (reported), the others screened


def test_cli_exit_codes_and_usage_errors(world, folder, tmp_path) -> None:
    fresh = str(folder / "fresh.png")
    assert _cli(["--store", str(world["db"]), fresh]).exit_code == 10  # nothing flagged
    assert _cli(["--store", str(world["db"]), fresh, str(folder / "copy.jpg")]).exit_code == 11
    res = _cli(["--store", str(tmp_path / "nowhere"), fresh])
    assert res.exit_code == 2 and "no index" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": ""}]')
    assert _cli(["--store", str(world["db"]), "--concepts", str(bad), fresh]).exit_code == 2
    assert _cli(["--store", str(world["db"]), str(folder / "broken.jpg")]).exit_code == 3


def test_cli_on_a_local_ray_cluster_gives_the_same_decisions(world, folder) -> None:
    pytest.importorskip("ray")
    res = _cli(["--store", str(world["db"]), "--concepts", str(folder.parent / "concepts.json"),
                "--passphrase-env", "GUARD_KEY", "--ray=local", str(folder)],
               env={"GUARD_KEY": KEY})
    rows = {Path(r["image"]).name: r for r in _lines(res.output)}
    assert rows["broken.jpg"]["error"]["type"] == "CorruptImageError"
    assert {n: r["decision"] for n, r in rows.items()} == {
        "copy.jpg": "block", "fresh.png": "allow", "marked.png": "block", "broken.jpg": None}
    assert res.exit_code == 1


# --- the service --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, world):  # type: ignore[no-untyped-def]
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tracemark.credentials import init_dev_ca
    from tracemark.service.app import ServiceSettings, create_app
    from tracemark.service.guard_image import guard_image_router

    certs = tmp_path_factory.mktemp("svc-certs")
    init_dev_ca(certs)
    app = create_app(ServiceSettings(data_dir=tmp_path_factory.mktemp("svc-data"),
                                     cert=certs / "signer.pem", key=certs / "signer.key",
                                     max_upload_bytes=4 * 1024 * 1024, max_pixels=4_000_000))
    if not any(getattr(r, "path", "").endswith("/guard/image") for r in app.routes):
        app.include_router(guard_image_router(app.state.tm), prefix="/v1")
    keys = app.state.tm.keys
    admin = keys.create(scope="write", collections=["*"], name="admin")[0]
    reader = keys.create(scope="read", collections=["works"], name="reader")[0]
    other = keys.create(scope="read", collections=["elsewhere"], name="other")[0]
    with TestClient(app) as client:
        h = {"Authorization": f"Bearer {admin}"}
        assert client.post("/v1/collections", json={"name": "works"}, headers=h).status_code == 201
        res = client.post("/v1/collections/works/images", headers=h, files={
            "image": ("ref.png", io.BytesIO(encode_image(world["refs"][0], "PNG")),
                      "image/png")})
        assert res.status_code == 201, res.text
        yield client, {"admin": admin, "reader": reader, "other": other}, res.json()


def _post(client: Any, token: str | None, data: bytes, name: str = "works",
          **form: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(f"/v1/collections/{name}/guard/image", headers=headers, data=form,
                       files={"image": ("x", io.BytesIO(data), "application/octet-stream")})


def test_service_screens_an_upload(service, world) -> None:
    client, tokens, added = service
    ref_id = added["ref_id"]
    concepts = json.dumps([Concept(NIMBUS, references=(ref_id,)).to_dict()])
    crop = encode_image(_crop(world["refs"][0], (0.15, 0.1, 0.9, 0.85)), "JPEG", quality=75)
    res = _post(client, tokens["reader"], crop, concepts=concepts)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["decision"] == "block"  # uncalibrated: the collection's inlier rule
    assert body["copies"][0]["ref_id"] == ref_id
    assert body["matches"][0]["concept"] == "captain-nimbus"
    assert body["checks"]["watermark"] == "ran"
    fresh = _post(client, tokens["reader"], encode_image(world["unrelated"][0], "PNG"))
    assert fresh.status_code == 200 and fresh.json()["decision"] == "allow"


def test_service_errors(service, world) -> None:
    client, tokens, _ = service
    png = encode_image(world["unrelated"][0], "PNG")
    assert _post(client, None, png).status_code == 401
    assert _post(client, tokens["other"], png).status_code == 403
    res = _post(client, tokens["admin"], png, name="nosuch")
    assert res.status_code == 404, res.text
    assert _post(client, tokens["reader"], b"").status_code == 415
    assert _post(client, tokens["reader"], b"\x89PNG\r\n\x1a\n broken").status_code == 415
    from .test_imageio import crafted_png

    assert _post(client, tokens["reader"], crafted_png(30_000, 30_000)).status_code == 413
    res = _post(client, tokens["reader"], png, concepts="[{\"name\": 3}]")
    assert res.status_code == 422 and res.json()["error"]["type"] == "GuardInputError"
    assert _post(client, tokens["reader"], png, concepts="not json").status_code == 422
    assert _post(client, tokens["reader"], png, alpha="0.5").status_code == 422

"""Odd but valid files get the right verdict (issue 12, kind 8): only a manifest that is
there and fails validation is ``invalid``; a container c2pa cannot parse is ``not_found``
(no manifest in it), ``invalid`` (a manifest in it) or the loader's typed error (not an
image); such files can be signed.

Oracles: c2pa-python's own Reader (it must really fail to parse the container, or really
find the manifest broken) and Pillow (the pixels must really decode). Images are crops of
the shared corpus, files are cut and flipped here.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import c2pa
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tracemark.credentials import (
    CredentialStore,
    SigningCredentials,
    init_dev_ca,
    load_signing_credentials,
    load_trust_anchors,
    sign_image,
    verify_image,
)
from tracemark.credentials import manifest as mf
from tracemark.credentials.verify import UNREADABLE_CODE, VerifyOptions
from tracemark.errors import CorruptImageError
from tracemark.imageio import encode_image, load_image

from .conftest import CORPUS
from .conftest import corpus_crop as small


def c2pa_error(data: bytes, media_type: str) -> str | None:
    """The oracle: the kind and text of c2pa's error reading ``data``, or None."""
    try:
        reader = c2pa.Reader.try_create(media_type, io.BytesIO(data))
    except c2pa.C2paError as exc:
        return f"{type(exc).__name__}: {exc}"
    if reader is not None:
        reader.close()
    return None


def pillow_decodes(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size[0] > 0


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    return tmp_path_factory.mktemp("containers")


@pytest.fixture(scope="module")
def ca(work: Path) -> tuple[SigningCredentials, str, Path]:
    dev = init_dev_ca(work / "ca")
    return (load_signing_credentials(dev.signer_chain, dev.signer_key),
            load_trust_anchors(dev.ca_cert), dev.directory)


@pytest.fixture(scope="module")
def store(work: Path) -> Iterator[CredentialStore]:
    with CredentialStore.create(work / "store") as s:
        yield s


@pytest.fixture(scope="module")
def art() -> np.ndarray:
    return small("art/debian_1.jpg")


@pytest.mark.parametrize("cut", [1, 4, 12])
def test_a_manifest_less_png_missing_its_end_is_not_found(
    art: np.ndarray, store: CredentialStore, cut: int
) -> None:
    data = encode_image(art, "PNG")[:-cut]
    assert pillow_decodes(data)
    assert "could not be parsed" in (c2pa_error(data, "image/png") or "")
    for where in (None, store):
        res = verify_image(data, where)
        assert res.state == "not_found", res.to_dict(with_manifest=False)
        assert res.codes == {}
        assert res.evidence["container"]["readable_by_c2pa"] is False


def test_not_an_image_behind_a_png_signature_is_a_typed_error(store: CredentialStore) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    assert "could not be parsed" in (c2pa_error(data, "image/png") or "")
    with pytest.raises(CorruptImageError):
        verify_image(data, store)


@pytest.fixture(scope="module")
def truncated_input_signed(
    work: Path, art: np.ndarray, store: CredentialStore, ca: tuple
) -> tuple:
    creds = ca[0]
    src = work / "cut.png"
    src.write_bytes(encode_image(art, "PNG")[:-1])
    result, data = sign_image(store, src, work / "out" / "cut.png", creds)
    return result, data


def test_a_png_missing_its_last_byte_can_be_signed(
    truncated_input_signed: tuple, ca: tuple, art: np.ndarray
) -> None:
    result, data = truncated_input_signed
    assert result.parent == "reencoded_png"  # the record says the parent was re-encoded
    with c2pa.Reader("image/png", io.BytesIO(data),
                     context=c2pa.Context.from_dict({"trust": {"user_anchors": ca[1]}})) as r:
        assert r.get_validation_state() == "Trusted"
        ingredients = r.get_active_manifest()["ingredients"]
    assert [i["relationship"] for i in ingredients] == ["parentOf"]
    assert ingredients[0]["format"] == "image/png"
    assert np.abs(load_image(data).astype(int) - art.astype(int)).mean() < 3


def test_a_complete_jpeg_without_its_end_marker_keeps_the_original_as_parent(
    work: Path, art: np.ndarray, store: CredentialStore, ca: tuple
) -> None:
    data = encode_image(art, "JPEG", quality=95)[:-2]  # no EOI: c2pa reads it as it is
    assert c2pa_error(data, "image/jpeg") is None
    result, _ = sign_image(store, data, work / "out" / "noeoi.jpg", ca[0])
    assert result.parent == "original"


def test_a_signed_png_missing_its_last_byte_is_recovered_not_invalid(
    truncated_input_signed: tuple, store: CredentialStore, ca: tuple
) -> None:
    """The manifest is there but c2pa cannot walk the container: a damaged copy, not a
    tampered one. Its credentials come back through the watermark; without the store
    nothing is found."""
    result, data = truncated_input_signed
    cut = data[:-1]
    assert pillow_decodes(cut)
    assert "could not be parsed" in (c2pa_error(cut, "image/png") or "")
    assert mf.has_manifest_marker(cut, "image/png")
    res = verify_image(cut, store, VerifyOptions(trust_pem=ca[1]))
    assert res.state == "recovered", res.to_dict(with_manifest=False)
    assert res.manifest_id == result.manifest_id and res.route == "watermark"
    assert res.evidence["container"] == {"readable_by_c2pa": False, "manifest_present": True,
                                         "error": res.evidence["container"]["error"],
                                         "code": UNREADABLE_CODE}
    alone = verify_image(cut, None, VerifyOptions(trust_pem=ca[1]))
    assert alone.state == "not_found"
    assert alone.evidence["container"]["code"] == UNREADABLE_CODE


def test_a_broken_manifest_is_invalid_like_c2pa_says(
    truncated_input_signed: tuple, store: CredentialStore
) -> None:
    _, data = truncated_input_signed
    i = data.find(b"jumb")
    broken = bytearray(data)
    broken[i + 600] ^= 0xFF  # inside the JUMBF boxes
    broken = bytes(broken)
    err = c2pa_error(broken, "image/png")
    state = None
    if err is None:
        with c2pa.Reader("image/png", io.BytesIO(broken)) as r:
            state = r.get_validation_state()
    assert err is not None or state == "Invalid"
    assert "could not be parsed" not in (err or "")
    assert verify_image(broken, store).state == "invalid"


def test_has_manifest_marker_walks_each_container(
    truncated_input_signed: tuple, art: np.ndarray, ca: tuple
) -> None:
    _, png = truncated_input_signed
    assert mf.has_manifest_marker(png, "image/png")
    for fmt, mt in (("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")):
        plain = encode_image(art, fmt)
        assert not mf.has_manifest_marker(plain, mt)
        assert not mf.has_manifest_marker(plain[: len(plain) // 2], mt)
        definition = mf.manifest_definition(title="t", media_type=mt, store_id="s",
                                            manifest_id=1, payload=1, pdq_hash=bytes(32))
        signed, _ = mf.sign_asset(ca[0], definition, mt, plain, ai_generated=True)
        assert mf.has_manifest_marker(signed, mt), mt
        assert mf.has_manifest_marker(signed[:-1], mt), mt


def test_cli_verify_and_sign_a_png_missing_its_last_byte(
    work: Path, art: np.ndarray, ca: tuple
) -> None:
    import json

    from click.testing import CliRunner

    from tracemark.cli import main

    folder = work / "cli-in"
    folder.mkdir()
    (folder / "cut.png").write_bytes(encode_image(art, "PNG")[:-1])
    res = CliRunner().invoke(main, ["verify", str(folder), "--no-store"])
    assert res.exit_code == 10, res.output  # every image processed, none has a manifest
    row = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")][0]
    assert row["state"] == "not_found"
    certs = ca[2]
    res = CliRunner().invoke(main, ["sign", str(folder), "--out", str(work / "cli-out"),
                                    "--cert", str(certs / "signer.pem"),
                                    "--key", str(certs / "signer.key"),
                                    "--store", str(work / "cli-store")])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert rows[0]["parent"] == "reencoded_png" and rows[0]["manifest_id"] == 1


def test_service_verify_of_a_png_missing_its_last_byte(work: Path, art: np.ndarray) -> None:
    from tracemark.service.app import ServiceSettings, create_app

    app = create_app(ServiceSettings(data_dir=work / "svc"))
    token = app.state.tm.keys.create(scope="read", collections=["*"], name="r")[0]
    data = encode_image(art, "PNG")[:-1]
    with TestClient(app) as client:
        res = client.post("/v1/verify", headers={"Authorization": f"Bearer {token}"},
                          files={"image": ("cut.png", io.BytesIO(data), "image/png")})
    assert res.status_code == 200, res.text
    assert res.json()["state"] == "not_found"


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk bytes) of a PNG, in order."""
    import struct

    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        out.append((kind, data[pos:pos + 12 + length]))
        pos += 12 + length
    return out


def test_a_manifest_on_an_image_too_small_to_search_stays_invalid(
    truncated_input_signed: tuple, store: CredentialStore, ca: tuple
) -> None:
    """The manifest's verdict stands when the recovery routes cannot run on the pixels."""
    _, signed = truncated_input_signed
    manifest = [c for kind, c in _png_chunks(signed) if kind == b"caBX"]
    assert manifest, "the signed PNG carries its manifest in a caBX chunk"
    tiny = encode_image(np.full((3, 3, 3), 128, np.uint8), "PNG")
    chunks = _png_chunks(tiny)
    data = tiny[:8] + chunks[0][1] + manifest[0] + b"".join(c for _, c in chunks[1:])
    assert pillow_decodes(data) and mf.has_manifest_marker(data, "image/png")
    res = verify_image(data, store, VerifyOptions(trust_pem=ca[1]))
    assert res.state == "invalid", res.to_dict(with_manifest=False)
    assert res.evidence["recovery_error"]["type"] == "ImageTooSmallError"

"""tracemark's verify agrees with c2pa-python's Reader on C2PA files signed by other tools.

The files are made here with c2pa-python's ``Builder`` directly (never through tracemark's
signing code): trusted, untrusted (an unknown CA), remote (``set_no_embed`` +
``set_remote_url``, served by a local ``http.server``), tampered signature, tampered data
(image bytes changed after signing), tampered manifest bytes; plus the C2PA SDK's own
fixtures in ``tests/data/c2pa-fixtures`` (a CAWG identity assertion, a cloud manifest, a
pre-release manifest; see its SOURCES.md). For every file, tracemark's state and failure
codes must be c2pa's (the mapping: docs/credentials.md, *What c2pa says*).
"""

from __future__ import annotations

import functools
import http.server
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import c2pa
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tracemark.cli import main
from tracemark.cli._common import EXIT_UNKNOWN
from tracemark.credentials import (
    DevCA,
    VerifyOptions,
    init_dev_ca,
    load_trust_anchors,
    verify_image,
)
from tracemark.credentials.manifest import MANIFEST_INACCESSIBLE, PRERELEASE_CODE

from .conftest import local_http_server

FIXTURES = Path(__file__).parent / "data" / "c2pa-fixtures"
FORMATS = {"jpeg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png"),
           "webp": ("WEBP", "image/webp")}
AUTHOR = b"Ada Lovelace"


# --- the oracle ----------------------------------------------------------------------------


def _context(trust: str | None) -> Any:
    settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    if trust:
        settings["trust"] = {"user_anchors": trust}
    return c2pa.Context.from_dict(settings)


def c2pa_says(data: bytes, mime: str | None, trust: str | None = None,
              manifest: bytes | None = None) -> tuple[str, list[str], str | None]:
    """c2pa-python's verdict: (state, failure codes, raised error text). The state is the
    Reader's ``validation_state`` lower-cased; when the Reader raises: ``remote`` for its
    "must fetch remote manifests" error, ``unsupported`` for "prerelease content detected"
    and "claim version is too new, not supported", ``error`` otherwise; ``absent`` when it finds nothing."""
    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), manifest, _context(trust))
    except c2pa.C2paError as exc:
        text = str(exc)
        if "must fetch remote manifests from url" in text:
            return "remote", [], text
        if "prerelease content detected" in text:
            return "unsupported", [PRERELEASE_CODE], text
        if "claim version is too new, not supported" in text:
            # no validation code: the kind of error it raised ("Verify: ..."), by its text
            return "unsupported", ["c2pa." + text.split(":", 1)[0].strip().lower()], text
        return "error", [], text
    if reader is None:
        return "absent", [], None
    with reader:
        state = reader.get_validation_state()
        block = (reader.get_validation_results() or {}).get("activeManifest") or {}
    return str(state).lower(), [c["code"] for c in block.get("failure", [])], None


def assert_agree(data: bytes | Path, mime: str | None, trust: str | None = None,
                 **options: Any) -> Any:
    """verify_image (no store) and c2pa's Reader give the same state and failure codes."""
    raw = data.read_bytes() if isinstance(data, Path) else data
    state, failures, _ = c2pa_says(raw, mime, trust)
    res = verify_image(data, None, VerifyOptions(trust_pem=trust, **options))
    assert res.state == state, (res.state, state, res.codes)
    if state != "remote":  # nothing validated: c2pa gives no codes
        assert res.codes.get("failure", []) == failures
    if state in ("trusted", "valid", "invalid"):
        assert res.c2pa_state is not None and res.c2pa_state.lower() == state
    return res


# --- files signed with c2pa-python's Builder -----------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two CAs: ``ours`` is trusted by the tests, ``other`` is unknown to them."""
    ours: DevCA = init_dev_ca(tmp_path_factory.mktemp("ours"))
    other: DevCA = init_dev_ca(tmp_path_factory.mktemp("other"))
    return {"trust": load_trust_anchors(ours.ca_cert), "ours": ours, "other": other}


def asset(fmt: str, seed: int = 0) -> bytes:
    """A 96x64 smooth RGB image in ``fmt`` (Pillow's name), written by Pillow."""
    y, x = np.mgrid[0:64, 0:96]
    rng = np.random.default_rng(seed)
    rgb = np.stack([x * 2 + rng.integers(0, 40), y * 3, (x + y) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def builder_sign(data: bytes, mime: str, ca: DevCA, *,
                 remote_url: str | None = None) -> tuple[bytes, bytes]:
    """Sign ``data`` with c2pa-python's Builder as another tool would: a creation with a
    schema.org author; (signed file, manifest store bytes)."""
    ctx = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}},
                                  "verify": {"remote_manifest_fetch": False}})
    builder = c2pa.Builder({
        "claim_generator_info": [{"name": "another-tool", "version": "1.0"}],
        "title": "made elsewhere",
        "assertions": [{"label": "stds.schema-org.CreativeWork",
                        "data": {"@context": "http://schema.org/", "@type": "CreativeWork",
                                 "author": [{"@type": "Person", "name": AUTHOR.decode()}]}}],
    }, context=ctx)
    builder.set_intent(c2pa.C2paBuilderIntent.CREATE,
                       c2pa.C2paDigitalSourceType.DIGITAL_CAPTURE)
    if remote_url is not None:
        builder.set_no_embed()
        builder.set_remote_url(remote_url)
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(
        b"es256", ca.signer_chain.read_bytes(), ca.signer_key.read_bytes(), None))
    out = io.BytesIO()
    store = builder.sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue(), bytes(store)


def _content_box(data: bytes, label: bytes) -> tuple[int, int]:
    """(start, end) of the content box of the JUMBF superbox labelled ``label``."""
    at = data.index(label + b"\x00")
    jumd = data.rindex(b"jumd", 0, at) - 4
    box = jumd + int.from_bytes(data[jumd:jumd + 4], "big")
    return box + 8, box + int.from_bytes(data[box:box + 4], "big")


def _flip(data: bytes, pos: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 0x5A
    return bytes(out)


_IMAGE_DATA = {"JPEG": b"\xff\xda", "PNG": b"IDAT", "WEBP": b"VP8 "}
"""Where each format's compressed pixels start (JPEG's start of scan, PNG's IDAT, WebP's
lossy VP8 chunk): a flip past it changes the image, not the manifest."""


def tamper_signature(data: bytes, fmt: str) -> bytes:
    _, end = _content_box(data, b"c2pa.signature")
    return _flip(data, end - 1)  # COSE_Sign1's last field: the signature bytes


def tamper_data(data: bytes, fmt: str) -> bytes:
    return _flip(data, data.rindex(_IMAGE_DATA[fmt]) + 40)


def tamper_manifest(data: bytes, fmt: str) -> bytes:
    assert data.count(AUTHOR) == 1
    return data.replace(AUTHOR, b"Eda Lovelace")  # inside the signed CreativeWork assertion


CASES: dict[str, tuple[str, str, Callable[[bytes, str], bytes] | None, str | None]] = {
    # case: (CA, expected state, tampering, a failure code c2pa must give)
    "trusted": ("ours", "trusted", None, None),
    "untrusted": ("other", "valid", None, "signingCredential.untrusted"),
    "tampered-signature": ("ours", "invalid", tamper_signature, "claimSignature.mismatch"),
    "tampered-data": ("ours", "invalid", tamper_data, "assertion.dataHash.mismatch"),
    "tampered-manifest": ("ours", "invalid", tamper_manifest, "assertion.hashedURI.mismatch"),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_builder_signed_files_agree_with_the_reader(pki: dict[str, Any], fmt: str,
                                                   case: str) -> None:
    ca_name, expected, tamper, code = CASES[case]
    pil, mime = FORMATS[fmt]
    signed, _ = builder_sign(asset(pil), mime, pki[ca_name])
    data = tamper(signed, pil) if tamper is not None else signed
    assert data != signed or tamper is None
    state, failures, _ = c2pa_says(data, mime, pki["trust"])
    assert state == expected and (code is None or code in failures), (state, failures)
    res = assert_agree(data, mime, pki["trust"])
    assert res.route == "embedded"
    assert res.found == (expected in ("trusted", "valid"))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("version", [b"3", b"9"])
def test_an_unknown_claim_version_is_unsupported_as_c2pa_says(pki: dict[str, Any], fmt: str,
                                                              version: bytes) -> None:
    """The claim box's label hand-edited from ``c2pa.claim.v2`` to a version c2pa does not
    know: c2pa raises "claim version is too new, not supported" (c2pa-rs
    ``InvalidClaimError::ClaimVersionTooNew``, no validation code); tracemark says
    ``unsupported`` with the kind of that error, and the CLI's "cannot tell" exit."""
    pil, mime = FORMATS[fmt]
    signed, _ = builder_sign(asset(pil), mime, pki["ours"])
    assert signed.count(b"c2pa.claim.v2\x00") == 1
    data = signed.replace(b"c2pa.claim.v2\x00", b"c2pa.claim.v" + version + b"\x00")
    state, failures, text = c2pa_says(data, mime, pki["trust"])
    assert (state, failures) == ("unsupported", ["c2pa.verify"]), text
    assert text is not None and "claim version is too new" in text
    res = assert_agree(data, mime, pki["trust"])
    assert res.route == "embedded" and not res.found and res.c2pa_state is None
    assert res.label is None


def test_cli_verify_unknown_claim_version_cannot_tell(pki: dict[str, Any], tmp_path: Path) -> None:
    signed, _ = builder_sign(asset("PNG"), "image/png", pki["ours"])
    path = tmp_path / "future.png"
    path.write_bytes(signed.replace(b"c2pa.claim.v2\x00", b"c2pa.claim.v9\x00"))
    res = CliRunner().invoke(main, ["verify", str(path)])
    assert res.exit_code == EXIT_UNKNOWN, res.output
    (row,) = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert row["state"] == "unsupported" and row["codes"]["failure"] == ["c2pa.verify"]


# --- remote manifests and sidecars ---------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local http.server serving ``tmp_path / "www"``: (its base URL, the folder)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    with local_http_server(functools.partial(Quiet, directory=str(www))) as base:
        yield base, www


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_a_remote_manifest_is_remote_and_fetched_only_when_allowed(
        pki: dict[str, Any], server: tuple[str, Path], tmp_path: Path, fmt: str) -> None:
    base, www = server
    pil, mime = FORMATS[fmt]
    url = f"{base}/manifests/{fmt}.c2pa"
    signed, manifest = builder_sign(asset(pil, 1), mime, pki["ours"], remote_url=url)
    path = tmp_path / f"remote.{fmt}"
    path.write_bytes(signed)
    # not fetched: c2pa says "remote" and names the URL; so does tracemark
    res = assert_agree(path, mime, pki["trust"])
    assert (res.state, res.remote_url, res.found) == ("remote", url, False)
    # allowed but not there (404): still remote, with C2PA's manifest.inaccessible
    res = verify_image(path, None, VerifyOptions(trust_pem=pki["trust"], fetch_remote=True))
    assert res.state == "remote" and res.codes["failure"] == [MANIFEST_INACCESSIBLE]
    assert "404" in res.evidence["remote_fetch_error"]
    # served: validated against the fetched manifest, as c2pa validates it
    (www / "manifests").mkdir()
    (www / "manifests" / f"{fmt}.c2pa").write_bytes(manifest)
    res = verify_image(path, None, VerifyOptions(trust_pem=pki["trust"], fetch_remote=True))
    state, failures, _ = c2pa_says(signed, mime, pki["trust"], manifest)
    assert (res.state, res.route, res.remote_url) == (state, "remote", url) == ("trusted",
                                                                                "remote", url)
    assert res.codes["failure"] == failures
    # the image changed after signing: the fetched manifest says so
    tampered = tmp_path / f"tampered.{fmt}"
    tampered.write_bytes(tamper_data(signed, pil))
    res = verify_image(tampered, None, VerifyOptions(trust_pem=pki["trust"],
                                                     fetch_remote=True))
    state, failures, _ = c2pa_says(tampered.read_bytes(), mime, pki["trust"], manifest)
    assert res.state == state == "invalid" and res.codes["failure"] == failures


@pytest.mark.parametrize("how", ["trickles", "ends-early"])
def test_a_remote_manifest_that_trickles_is_given_up_at_the_timeout(
        pki: dict[str, Any], tmp_path: Path, how: str) -> None:
    """A server that answers one byte at a time, each within the socket timeout: the fetch
    is bounded by ``remote_timeout`` as a whole, not per read. One that closes before its
    Content-Length: inaccessible too (not a truncated manifest that c2pa calls invalid)."""
    import time

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/c2pa")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            if how == "ends-early":
                self.wfile.write(b"\x00" * 10)
                self.close_connection = True
                return
            try:
                for _ in range(100):
                    self.wfile.write(b"\x00")
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:  # the client gave up
                pass

    with local_http_server(Trickle) as base:
        url = f"{base}/m.c2pa"
        signed, _ = builder_sign(asset("JPEG", 3), "image/jpeg", pki["ours"], remote_url=url)
        (tmp_path / "slow.jpg").write_bytes(signed)
        t0 = time.monotonic()
        res = verify_image(tmp_path / "slow.jpg", None, VerifyOptions(
            trust_pem=pki["trust"], fetch_remote=True, remote_timeout=1.0))
        took = time.monotonic() - t0
        assert res.state == "remote" and res.codes["failure"] == [MANIFEST_INACCESSIBLE]
        assert ("timed out" if how == "trickles" else "short of its Content-Length") in \
            res.evidence["remote_fetch_error"]
        assert took < 5, f"the fetch took {took:.1f} s with a 1 s timeout"


def test_a_sidecar_beside_the_file_is_read(pki: dict[str, Any], tmp_path: Path) -> None:
    signed, manifest = builder_sign(asset("JPEG", 2), "image/jpeg", pki["other"],
                                    remote_url="https://example.invalid/m.c2pa")
    (tmp_path / "photo.jpg").write_bytes(signed)
    assert verify_image(tmp_path / "photo.jpg").state == "remote"
    (tmp_path / "photo.c2pa").write_bytes(manifest)
    res = verify_image(tmp_path / "photo.jpg", None, VerifyOptions(trust_pem=pki["trust"]))
    state, failures, _ = c2pa_says(signed, "image/jpeg", pki["trust"], manifest)
    assert (res.state, res.route, state) == ("valid", "sidecar", "valid")
    assert res.codes["failure"] == failures == ["signingCredential.untrusted"]
    assert res.evidence["sidecar"] == str(tmp_path / "photo.c2pa")
    off = verify_image(tmp_path / "photo.jpg", None, VerifyOptions(sidecar=False))
    assert off.state == "remote"


def test_cli_verify_fetch_remote(pki: dict[str, Any], server: tuple[str, Path],
                                 tmp_path: Path) -> None:
    base, www = server
    signed, manifest = builder_sign(asset("PNG", 3), "image/png", pki["ours"],
                                    remote_url=f"{base}/m.c2pa")
    (www / "m.c2pa").write_bytes(manifest)
    path = tmp_path / "remote.png"
    path.write_bytes(signed)
    trust = pki["ours"].ca_cert
    res = CliRunner().invoke(main, ["verify", "--no-store", "--trust", str(trust), str(path)])
    row = json.loads(res.stdout.splitlines()[0])
    assert res.exit_code == EXIT_UNKNOWN and row["state"] == "remote"
    assert row["remote_url"] == f"{base}/m.c2pa"
    res = CliRunner().invoke(main, ["verify", "--no-store", "--fetch-remote", "--trust",
                                    str(trust), str(path)])
    row = json.loads(res.stdout.splitlines()[0])
    assert res.exit_code == 0 and (row["state"], row["route"]) == ("trusted", "remote")


# --- the C2PA SDK's own fixtures -----------------------------------------------------------

SDK_FIXTURES = {
    # file: (state c2pa gives, a failure code it gives)
    "CA.jpg": ("valid", "signingCredential.untrusted"),
    "C_with_CAWG_data.jpg": ("valid", "cawg.x509.credential.untrusted"),
    "E-sig-CA.jpg": ("invalid", "claimSignature.mismatch"),
    "XCA.jpg": ("invalid", "assertion.dataHash.mismatch"),
    "cloud.jpg": ("remote", None),
    "libpng-test_with_url.png": ("remote", None),
    "prerelease.jpg": ("unsupported", PRERELEASE_CODE),
}


@pytest.mark.parametrize("name", sorted(SDK_FIXTURES))
def test_sdk_fixtures_agree_with_the_reader(name: str, tmp_path: Path) -> None:
    path = tmp_path / name  # copied: no sidecar beside it
    path.write_bytes((FIXTURES / name).read_bytes())
    expected, code = SDK_FIXTURES[name]
    state, failures, _ = c2pa_says(path.read_bytes(), None)
    assert state == expected and (code is None or code in failures)
    res = assert_agree(path, None)
    if expected == "remote":
        assert res.remote_url is not None and res.remote_url.startswith("http")
    assert not res.found or expected == "valid"


def test_sdk_cloud_manifest_as_a_sidecar(tmp_path: Path) -> None:
    (tmp_path / "cloud.jpg").write_bytes((FIXTURES / "cloud.jpg").read_bytes())
    manifest = (FIXTURES / "cloud_manifest.c2pa").read_bytes()
    (tmp_path / "cloud.c2pa").write_bytes(manifest)
    res = verify_image(tmp_path / "cloud.jpg")
    state, failures, _ = c2pa_says((tmp_path / "cloud.jpg").read_bytes(), "image/jpeg",
                                   None, manifest)
    assert (res.state, res.route) == (state, "sidecar") == ("valid", "sidecar")
    assert res.codes["failure"] == failures
    assert res.remote_url is not None and "cai-manifests.adobe.com" in res.remote_url


# --- every image format c2pa reads and signs -----------------------------------------------


def _encode_any(rgb: np.ndarray, fmt: str) -> bytes:
    """``rgb`` written as ``fmt`` by Pillow, HEIF/HEIC by pillow-heif (tests make inputs)."""
    buf = io.BytesIO()
    if fmt == "HEIF":
        import pillow_heif

        h, w = rgb.shape[:2]
        pillow_heif.from_bytes("RGB", (w, h), rgb.tobytes()).save(buf, format="HEIF",
                                                                   quality=90)
    else:
        Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


READ_FORMATS = {"tiff": ("TIFF", "image/tiff"), "gif": ("GIF", "image/gif"),
                "heic": ("HEIF", "image/heic"), "heif": ("HEIF", "image/heif"),
                "avif": ("AVIF", "image/avif")}


@pytest.mark.parametrize("fmt", sorted(READ_FORMATS))
@pytest.mark.parametrize("case", ["trusted", "untrusted", "tampered-signature"])
def test_other_formats_signed_by_the_builder_agree(pki: dict[str, Any], fmt: str,
                                                   case: str) -> None:
    pil, mime = READ_FORMATS[fmt]
    if mime not in c2pa.Builder.get_supported_mime_types():
        pytest.skip(f"c2pa-python does not sign {mime}")
    ca_name, expected, tamper, code = CASES[case]
    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([x * 2, y * 3, (x + y) % 256], -1).astype(np.uint8)
    signed, _ = builder_sign(_encode_any(rgb, pil), mime, pki[ca_name])
    data = tamper(signed, pil) if tamper is not None else signed
    state, failures, _ = c2pa_says(data, None, pki["trust"])
    assert state == expected and (code is None or code in failures)
    assert_agree(data, None, pki["trust"])
    # stripped of its manifest the pixels still decode (pillow-heif, Pillow's AVIF)
    res = verify_image(_encode_any(rgb, pil), None, VerifyOptions(trust_pem=pki["trust"]))
    assert res.state == "not_found"


@pytest.mark.parametrize("suffix", [".tif", ".gif"])
def test_tracemark_signs_tiff_and_gif_as_c2pa_reads_them(pki: dict[str, Any], tmp_path: Path,
                                                       suffix: str) -> None:
    from tracemark.credentials import CredentialStore, load_signing_credentials, sign_image

    from .conftest import CORPUS
    from .conftest import corpus_crop as small

    if not CORPUS.is_dir():
        pytest.skip("the shared corpus is not beside the checkout")
    creds = load_signing_credentials(pki["ours"].signer_chain, pki["ours"].signer_key)
    src = tmp_path / "in.png"
    src.write_bytes(_encode_any(small("art/debian_1.jpg"), "PNG"))
    with CredentialStore.create(tmp_path / "store") as store:
        result, data = sign_image(store, src, tmp_path / f"out{suffix}", creds)
        assert result.media_type == {".tif": "image/tiff", ".gif": "image/gif"}[suffix]
        assert Image.open(io.BytesIO(data)).format == {".tif": "TIFF", ".gif": "GIF"}[suffix]
        res = assert_agree(data, result.media_type, pki["trust"])
        assert res.state == "trusted" and res.label == result.label
        bad = tamper_signature(data, "")
        assert assert_agree(bad, result.media_type, pki["trust"]).state == "invalid"


def test_a_remote_manifest_redirecting_off_http_is_not_followed(
        pki: dict[str, Any], tmp_path: Path) -> None:
    """urllib follows redirects to ftp:// (and file:// is one step away): the fetch only
    follows http and https, and reports the refusal as inaccessible."""

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/m.c2pa")
            self.end_headers()

    with local_http_server(Redirect) as base:
        pil, mime = FORMATS["jpeg"]
        url = f"{base}/m.c2pa"
        signed, _ = builder_sign(asset(pil, 2), mime, pki["ours"], remote_url=url)
        path = tmp_path / "redirect.jpg"
        path.write_bytes(signed)
        res = verify_image(path, None, VerifyOptions(trust_pem=pki["trust"], fetch_remote=True))
        assert res.state == "remote" and res.codes["failure"] == [MANIFEST_INACCESSIBLE]
        assert "ftp://" in res.evidence["remote_fetch_error"]

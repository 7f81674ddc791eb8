"""c2patool-style signing: external signers (a Python callable, a command), an RFC 3161
timestamp authority (a local one: ``openssl ts -reply`` behind a threaded HTTP handler).

c2pa-python's own ``Reader`` is the oracle: files signed through an external signer must be
Trusted there under the test CA; every failing signer leaves nothing written and no row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import c2pa
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tracemark.cli._common import EXIT_NOTHING
from tracemark.credentials import (
    CredentialStore,
    DevCA,
    SignOptions,
    init_dev_ca,
    load_trust_anchors,
    sign_image,
)
from tracemark.credentials.certs import load_signing_certificate
from tracemark.credentials.signers import CommandSigner, cose_signature
from tracemark.errors import CertificateError, ConfigError, SigningError

from .conftest import CORPUS, corpus_images, local_http_server
from .conftest import corpus_crop as small

OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    first = corpus_images("photo", 1)[0]
    return small(str(first.relative_to(CORPUS)))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    return init_dev_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def signer_key(ca: DevCA) -> ec.EllipticCurvePrivateKey:
    return serialization.load_pem_private_key(ca.signer_key.read_bytes(), None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CredentialStore]:
    with CredentialStore.create(tmp_path / "store") as s:
        yield s


def _reader(signed: bytes, ca: DevCA, media: str = "image/jpeg") -> tuple[str, dict]:
    """c2pa-python's validation state and active manifest under the test CA."""
    ctx = c2pa.Context.from_dict({"trust": {"user_anchors": load_trust_anchors(ca.ca_cert)},
                                  "verify": {"ocsp_fetch": False,
                                             "remote_manifest_fetch": False}})
    import io

    with c2pa.Reader(media, io.BytesIO(signed), context=ctx) as r:
        store = json.loads(r.json())
        return r.get_validation_state(), store


def _nothing_written(store: CredentialStore, out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))
    stats = store.stats()
    assert stats["manifests"] == 0 and stats["pending"] == 0, stats


# --- external signers --------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["der", "raw"])
def test_callable_signer_is_trusted(ca: DevCA, signer_key, store: CredentialStore,
                                    image: np.ndarray, tmp_path: Path, encoding: str) -> None:
    """A Python callable holding the key signs; the key never reaches tracemark. ECDSA
    signatures come DER (cryptography's, most KMS) or raw r||s (COSE): both verify."""
    creds = load_signing_certificate(ca.signer_chain)
    assert creds.alg == "es256" and creds.key_pem == ""
    seen: list[bytes] = []

    def sign(data: bytes) -> bytes:
        seen.append(data)
        der = signer_key.sign(data, ec.ECDSA(hashes.SHA256()))
        if encoding == "der":
            return der
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    out = tmp_path / "signed.jpg"
    res, signed = sign_image(store, image, out, creds, SignOptions(signer=sign))
    assert seen and out.read_bytes() == signed
    state, manifest_store = _reader(signed, ca)
    assert state == "Trusted"
    active = manifest_store["manifests"][manifest_store["active_manifest"]]
    assert "tracemark development signer" in active["signature_info"]["common_name"]
    assert store.get(res.manifest_id).label == res.label


def test_cose_signature_encodings(signer_key) -> None:
    der = signer_key.sign(b"x", ec.ECDSA(hashes.SHA256()))
    raw = cose_signature(der, "es256")
    r, s = decode_dss_signature(der)
    assert raw == r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert cose_signature(raw, "es256") == raw  # already raw: unchanged
    assert cose_signature(b"\x05" * 7, "ps256") == b"\x05" * 7  # not ECDSA: as it comes
    for bad in (b"", b"\x30\x02\x01", b"\x00" * 63):
        with pytest.raises(SigningError):
            cose_signature(bad, "es256")


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return f"{sys.executable} {path}"


@pytest.mark.skipif(OPENSSL is None, reason="no openssl on this machine")
def test_openssl_command_signer_is_trusted(ca: DevCA, store: CredentialStore,
                                           image: np.ndarray, tmp_path: Path) -> None:
    """c2patool's external signer shape: ``openssl dgst -sign`` reads the claim on stdin and
    writes a DER ECDSA signature on stdout."""
    creds = load_signing_certificate(ca.signer_chain, alg="es256")
    cmd = CommandSigner(f"{OPENSSL} dgst -sha256 -sign {ca.signer_key}", alg=creds.alg)
    out = tmp_path / "cmd.png"
    _, signed = sign_image(store, image, out, creds, SignOptions(signer=cmd))
    assert _reader(signed, ca, "image/png")[0] == "Trusted"


@pytest.mark.parametrize("kind", ["fails", "hangs", "garbage", "empty", "missing", "floods",
                                  "noisy", "orphan"])
def test_failing_command_signer_writes_nothing(ca: DevCA, store: CredentialStore,
                                              image: np.ndarray, tmp_path: Path,
                                              kind: str) -> None:
    creds = load_signing_certificate(ca.signer_chain)
    bodies = {
        "fails": "import sys\nsys.stderr.write('kms: access denied for key 42\\n')\n"
                 "sys.exit(3)\n",
        "hangs": "import time\ntime.sleep(30)\n",
        "garbage": "import os, sys\nsys.stdin.buffer.read()\n"
                   "sys.stdout.buffer.write(os.urandom(64))\n",
        "empty": "import sys\nsys.stdin.buffer.read()\n",
        # writes without end: killed once past MAX_SIGNATURE_BYTES, not held in memory
        "floods": "import sys\nwhile True:\n    sys.stdout.buffer.write(b'x' * 65536)\n",
        # 50 MB on stderr, then fails: only the tail is kept and quoted
        "noisy": "import sys\nsys.stdin.buffer.read()\n"
                 "sys.stderr.write('y' * 50_000_000 + 'the end')\nsys.exit(1)\n",
        # exits at once, its child keeps the pipes open
        "orphan": "import subprocess, sys\n"
                  "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n",
    }
    command = (str(tmp_path / "no-such-signer") if kind == "missing"
               else _script(tmp_path, f"{kind}.py", bodies[kind]))
    cmd = CommandSigner(command, alg="es256", timeout=2)
    out = tmp_path / "out.jpg"
    with pytest.raises(SigningError) as err:
        sign_image(store, image, out, creds, SignOptions(signer=cmd))
    message = str(err.value)
    expected = {"fails": "exited with status 3; stderr: kms: access denied for key 42",
                "hangs": "ran past 2 s", "garbage": "signature does not match",
                "empty": "wrote no signature", "missing": "cannot run the signer command",
                "floods": "wrote more than 65536 bytes", "orphan": "ran past 2 s",
                "noisy": "exited with status 1; stderr: ...yyy"}
    assert expected[kind] in message, message[:300]
    assert len(message) < 1000
    _nothing_written(store, out)


def test_signer_configuration_errors(ca: DevCA, store: CredentialStore, image: np.ndarray,
                                     tmp_path: Path) -> None:
    creds = load_signing_certificate(ca.signer_chain)
    with pytest.raises(ConfigError, match="no private key"):
        sign_image(store, image, tmp_path / "x.jpg", creds)
    _nothing_written(store, tmp_path / "x.jpg")
    with pytest.raises(ConfigError, match="callable"):
        SignOptions(signer=b"not callable")  # type: ignore[arg-type]
    for bad in ("", "   ", "'unclosed"):
        with pytest.raises(ConfigError):
            CommandSigner(bad, alg="es256")
    with pytest.raises(CertificateError, match="cannot verify ps256"):
        load_signing_certificate(ca.signer_chain, alg="ps256")
    with pytest.raises(CertificateError, match="unknown signing algorithm"):
        load_signing_certificate(ca.signer_chain, alg="md5")
    with pytest.raises(CertificateError, match="not found"):
        load_signing_certificate(tmp_path / "missing.pem")


# --- a local RFC 3161 timestamp authority ------------------------------------------------


@dataclass
class LocalTSA:
    url: str
    requests: list[int]
    ca_pem: Path


def _tsa_files(ca: DevCA, d: Path) -> tuple[Path, Path, Path]:
    """A TSA certificate issued by the test CA (extendedKeyUsage critical timeStamping, as
    RFC 3161 section 2.3 requires), its key, and an ``openssl ts`` configuration."""
    ca_key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test TSA")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                       critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem, key_path, conf = d / "tsa.pem", d / "tsa.key", d / "tsa.cnf"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    conf.write_text(
        "[ tsa ]\ndefault_tsa = tsa_config\n[ tsa_config ]\n"
        f"serial = {d / 'serial'}\ndefault_policy = 1.2.3.4.1\n"
        "digests = sha256, sha384, sha512\naccuracy = secs:1\nordering = no\n"
        "tsa_name = no\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n"
        "signer_digest = sha256\n")
    (d / "serial").write_text("01\n")
    return pem, key_path, conf


@pytest.fixture(scope="module")
def tsa(ca: DevCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTSA]:
    if OPENSSL is None:
        pytest.skip("no openssl on this machine")
    d = tmp_path_factory.mktemp("tsa")
    pem, key, conf = _tsa_files(ca, d)
    requests: list[int] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            query = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Type") != "application/timestamp-query":
                self.send_error(415)
                return
            with lock:
                n = len(requests)
                requests.append(len(query))
                q, r = d / f"q{n}.tsq", d / f"r{n}.tsr"
                q.write_bytes(query)
                done = subprocess.run(
                    [OPENSSL, "ts", "-reply", "-config", str(conf), "-queryfile", str(q),
                     "-signer", str(pem), "-inkey", str(key), "-chain", str(ca.ca_cert),
                     "-out", str(r)], capture_output=True, timeout=30, check=False)
            if done.returncode != 0:
                self.send_error(500, done.stderr.decode(errors="replace")[-200:])
                return
            body = r.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with local_http_server(Handler) as base:
        yield LocalTSA(f"{base}/", requests, pem)


def test_timestamp_authority(ca: DevCA, signer_key, store: CredentialStore,
                             image: np.ndarray, tmp_path: Path, tsa: LocalTSA) -> None:
    """The manifest carries the local TSA's RFC 3161 token: c2pa reports the signing time
    from it and validates the time stamp."""
    before = len(tsa.requests)
    creds = load_signing_certificate(ca.signer_chain)
    out = tmp_path / "ts.jpg"
    _, signed = sign_image(store, image, out, creds, SignOptions(
        signer=lambda d: signer_key.sign(d, ec.ECDSA(hashes.SHA256())), tsa_url=tsa.url))
    assert len(tsa.requests) > before  # c2pa asked our TSA
    state, manifest_store = _reader(signed, ca)
    active = manifest_store["manifests"][manifest_store["active_manifest"]]
    codes = manifest_store["validation_results"]["activeManifest"]
    success = [c["code"] for c in codes["success"]]
    assert "timeStamp.validated" in success, codes
    when = dt.datetime.fromisoformat(active["signature_info"]["time"])
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 600
    assert state == "Trusted"


def test_timestamp_authority_with_own_key(ca: DevCA, store: CredentialStore,
                                          image: np.ndarray, tmp_path: Path,
                                          tsa: LocalTSA) -> None:
    """``tsa_url`` works the same with a PEM key (c2pa's ``ta_url``)."""
    from tracemark.credentials import load_signing_credentials

    creds = load_signing_credentials(ca.signer_chain, ca.signer_key)
    _, signed = sign_image(store, image, tmp_path / "own.webp", creds,
                           SignOptions(tsa_url=tsa.url))
    _, manifest_store = _reader(signed, ca, "image/webp")
    success = [c["code"] for c in
               manifest_store["validation_results"]["activeManifest"]["success"]]
    assert "timeStamp.validated" in success


def test_unreachable_timestamp_authority(ca: DevCA, signer_key, store: CredentialStore,
                                         image: np.ndarray, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    creds = load_signing_certificate(ca.signer_chain)
    out = tmp_path / "no-tsa.jpg"
    url = f"http://127.0.0.1:{port}/tsa"
    with pytest.raises(SigningError, match="timestamp authority"):
        sign_image(store, image, out, creds, SignOptions(
            signer=lambda d: signer_key.sign(d, ec.ECDSA(hashes.SHA256())), tsa_url=url))
    _nothing_written(store, out)
    for bad in ("ftp://x/tsa", "127.0.0.1:3180", "http://", "http://a b/"):
        with pytest.raises(ConfigError, match="tsa_url"):
            SignOptions(tsa_url=bad)


@pytest.mark.parametrize("answer", ["garbage", "server-error", "empty"])
def test_misbehaving_timestamp_authority(ca: DevCA, signer_key, store: CredentialStore,
                                         image: np.ndarray, tmp_path: Path,
                                         answer: str) -> None:
    """A TSA that answers, but not with a time-stamp token: a SigningError naming the
    timestamp authority, nothing written."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = {"garbage": b"\x30\x03\x02\x01\x00" + bytes(range(256)), "empty": b"",
                    "server-error": b"busy"}[answer]
            self.send_response(500 if answer == "server-error" else 200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with local_http_server(Handler) as base:
        url = f"{base}/tsa"
        out = tmp_path / "bad-tsa.jpg"
        with pytest.raises(SigningError, match="timestamp authority"):
            sign_image(store, image, out, load_signing_certificate(ca.signer_chain),
                       SignOptions(signer=lambda d: signer_key.sign(
                           d, ec.ECDSA(hashes.SHA256())), tsa_url=url))
        _nothing_written(store, out)


# --- manifest definitions (c2patool --manifest) ---------------------------------------------


def _active(signed: bytes, ca: DevCA, media: str = "image/jpeg") -> tuple[str, dict]:
    state, manifest_store = _reader(signed, ca, media)
    return state, manifest_store["manifests"][manifest_store["active_manifest"]]


def _labels_actions(active: dict) -> tuple[list[str], list[str]]:
    labels = [a["label"] for a in active["assertions"]]
    actions = [x["action"] for a in active["assertions"] if a["label"].startswith("c2pa.actions")
               for x in a["data"]["actions"]]
    return labels, actions


def _nested(depth: int) -> object:
    """``depth`` arrays inside each other, around a number."""
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _definition_file(d: Path, image: np.ndarray, **over: object) -> Path:
    from tracemark.imageio import encode_image

    d.mkdir(parents=True, exist_ok=True)
    (d / "parts").mkdir(exist_ok=True)
    (d / "parts" / "logo.png").write_bytes(encode_image(image[:64, :64], "PNG"))
    obj = {"title": "Harbour at dawn",
           "claim_generator_info": [{"name": "my-app", "version": "2.1"}],
           "assertions": [
               {"label": "com.example.review", "data": {"reviewed": True, "by": "desk 4"}},
               {"label": "c2pa.actions", "data": {"actions": [
                   {"action": "c2pa.color_adjustments", "parameters": {"name": "brightness"}},
                   {"action": "c2pa.cropped"}]}}],
           "ingredients": [{"title": "logo.png", "relationship": "componentOf",
                            "file_path": "parts/logo.png"},
                           {"title": "brief.txt", "relationship": "inputTo",
                            "format": "text/plain"}]}
    obj.update(over)
    path = d / "manifest.json"
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize("create", [None, "digitalCapture"])
def test_definition_is_merged_with_tracemarks_manifest(ca: DevCA, store: CredentialStore,
                                                       image: np.ndarray, tmp_path: Path,
                                                       create: str | None) -> None:
    from tracemark.credentials import load_signing_credentials
    from tracemark.credentials.definition import load_definition

    creds = load_signing_credentials(ca.signer_chain, ca.signer_key)
    definition = load_definition(_definition_file(tmp_path / "def", image))
    res, signed = sign_image(store, image, tmp_path / "d.jpg", creds,
                             SignOptions(definition=definition, source_type=create))
    state, active = _active(signed, ca)
    assert state == "Trusted"
    assert active["title"] == "Harbour at dawn" == store.get(res.manifest_id).title
    assert active["claim_generator_info"][0]["name"] == "my-app"
    labels, actions = _labels_actions(active)
    # ours kept (both soft bindings, the tracemark assertion), theirs added
    assert labels.count("c2pa.soft-binding") == 2
    assert {"org.tracemark.credential", "com.example.review"} <= set(labels)
    review = next(a for a in active["assertions"] if a["label"] == "com.example.review")
    assert review["data"] == {"reviewed": True, "by": "desk 4"}
    first = "c2pa.created" if create else "c2pa.opened"
    assert actions == [first, "c2pa.color_adjustments", "c2pa.cropped", "c2pa.watermarked"]
    ingredients = {(i["title"], i["relationship"]) for i in active["ingredients"]}
    assert {("logo.png", "componentOf"), ("brief.txt", "inputTo")} <= ingredients
    assert any(rel == "parentOf" for _, rel in ingredients) is (create is None)
    # --title wins over the definition's title
    res2, signed2 = sign_image(store, image[::-1].copy(), tmp_path / "d2.png", creds,
                               SignOptions(definition=definition, title="mine"))
    assert _active(signed2, ca, "image/png")[1]["title"] == "mine"


@pytest.mark.parametrize(("change", "pattern"), [
    ({"assertions": [{"label": "org.tracemark.credential", "data": {}}]}, "written by tracemark"),
    ({"assertions": [{"label": "c2pa.soft-binding", "data": {}}]}, "written by tracemark"),
    ({"assertions": [{"label": "c2pa.hash.bmff.v2", "data": {}}]}, "written by tracemark"),
    ({"assertions": [{"label": "c2pa.actions", "data": {"actions": [
        {"action": "c2pa.created"}]}}]}, "declared by tracemark"),
    ({"assertions": [{"label": "x.y"}]}, "has no data"),
    ({"assertions": [{"label": 5, "data": {}}]}, r"assertions\[0\].label: expected a non-empty"),
    ({"assertions": {"label": "x"}}, "assertions: expected an array"),
    ({"assertions": [{"label": "c2pa.actions", "data": {"actions": "crop"}}]},
     "expected an array"),
    ({"title": ["t"]}, "title: expected a non-empty string"),
    ({"claim_generator_info": [{"name": "a"}, {"name": "b"}]}, "names one claim generator"),
    ({"claim_generator_info": [{"version": "1"}]}, r"claim_generator_info\[0\].name"),
    ({"ingredients": [{"title": "p", "relationship": "parentOf"}]}, "componentOf or inputTo"),
    ({"ingredients": [{"title": "p", "file_path": "nowhere.png"}]}, "no such file"),
    ({"ingredients": [{"title": "p", "file_path": "manifest.json"}]}, "not an image"),
    ({"ingredients": [{"title": "p", "thumbnail": {}}]}, "unknown keys thumbnail"),
    ({"vendor": "acme"}, "unknown keys vendor"),
    # what c2pa-rs 0.91 refuses deep in signing (a 502 SigningError in the service) or
    # aborts the process on (a label starting with a multi-byte character: a Rust panic)
    ({"assertions": [{"label": chr(246) + "." + chr(252), "data": {}}]}, "a label is"),
    ({"assertions": [{"label": "com/x", "data": {}}]}, "a label is"),
    ({"assertions": [{"label": "com x", "data": {}}]}, "a label is"),
    ({"assertions": [{"label": "com.x\x00", "data": {}}]}, "a label is"),
    ({"assertions": [{"label": "com.x", "data": {}, "kind": "Zzz"}]}, "expected Cbor or Json"),
    # c2pa signs it into a manifest it cannot read back (was a SigningError, HTTP 502)
    ({"assertions": [{"label": "cawg.identity", "data": {"x": 1}}]}, "CAWG identity"),
    ({"assertions": [{"label": "cawg.identity.v2", "data": []}]}, "CAWG identity"),
    ({"assertions": [{"label": "com.x", "data": _nested(65)}]}, "nested deeper than 64"),
    ({"assertions": [{"label": "c2pa.actions", "data": {"actions": [
        {"action": "c2pa.cropped", "parameters": _nested(100)}]}}]}, "nested deeper than 64"),
    ({"claim_generator_info": [{"name": "a", "x": _nested(70)}]}, "nested deeper than 64"),
    # Python's JSON reads NaN and any integer; c2pa-rs does not (a 502 SigningError)
    ({"assertions": [{"label": "com.x", "data": {"v": float("nan")}}]}, "not a JSON number"),
    ({"assertions": [{"label": "com.x", "data": [float("-inf")]}]}, "not a JSON number"),
    ({"assertions": [{"label": "com.x", "data": {"v": (1 << 64) - 1}}]}, "integer outside"),
    ({"assertions": [{"label": "com.x", "data": {"v": -(1 << 63) - 1}}]}, "integer outside"),
])
def test_bad_definitions_are_config_errors(image: np.ndarray, tmp_path: Path,
                                           change: dict, pattern: str) -> None:
    from tracemark.credentials.definition import load_definition

    with pytest.raises(ConfigError, match=pattern):
        load_definition(_definition_file(tmp_path, image, **change))


def test_bad_definition_files(tmp_path: Path) -> None:
    from tracemark.credentials.definition import (
        MAX_DEFINITION_BYTES,
        load_definition,
        parse_definition,
    )

    for name, content in {"syntax.json": b'{"title": "x",}', "list.json": b"[1, 2]",
                          "binary.json": b"\xff\xfe\x00garbage",
                          "huge.json": b" " * (MAX_DEFINITION_BYTES + 1)}.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError):
            load_definition(tmp_path / name)
    with pytest.raises(ConfigError, match="no such file"):
        load_definition(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="not read here"):  # the service reads no files
        parse_definition({"ingredients": [{"title": "a", "file_path": "/etc/passwd"}]})
    # an integer of more digits than Python converts (a ValueError, not a ConfigError)
    (tmp_path / "digits.json").write_text('{"title": ' + "9" * 5000 + "}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_definition(tmp_path / "digits.json")
    with pytest.raises(ConfigError, match="not a JSON value"):  # a Python caller's bytes
        parse_definition({"assertions": [{"label": "com.x", "data": {"v": b"raw"}}]})
    # nesting deeper than Python's JSON parser goes (a RecursionError, not a ConfigError)
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_definition(tmp_path / "deep.json")


@pytest.mark.parametrize("assertion", [
    {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.cropped",
                                                    "softwareAgent": 5}]}},
    {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.cropped",
                                                    "parameters": "x"}]}},
    {"label": "stds.exif", "data": "x"},
    {"label": "stds.schema-org.CreativeWork", "data": [1]},
])
def test_definitions_c2pa_cannot_read_are_config_errors(
        ca: DevCA, image: np.ndarray, store: CredentialStore, tmp_path: Path,
        assertion: dict) -> None:
    """Fields of the wrong shape for c2pa's own structures: c2pa refuses them while signing;
    that is the definition's fault (ConfigError; HTTP 422 BadManifestDefinition), not a
    failed signing (SigningError; HTTP 502), and nothing is written."""
    from tracemark.credentials import load_signing_credentials
    from tracemark.credentials.definition import parse_definition

    creds = load_signing_credentials(ca.signer_chain, ca.signer_key)
    out = tmp_path / "x.png"
    with pytest.raises(ConfigError, match="manifest definition refused by c2pa"):
        sign_image(store, image, out, creds,
                   SignOptions(definition=parse_definition({"assertions": [assertion]})))
    _nothing_written(store, out)


def test_definition_data_at_the_depth_limit_signs(ca: DevCA, image: np.ndarray,
                                                  store: CredentialStore, tmp_path: Path) -> None:
    from tracemark.credentials.definition import MAX_DATA_DEPTH, parse_definition

    definition = parse_definition({"assertions": [
        {"label": "com.example.deep", "data": {"v": _nested(MAX_DATA_DEPTH - 1)}},
        {"label": "com.example.uni-code_1", "data": {chr(252): chr(0x65e5) + chr(0x672c),
                                                     "big": (1 << 63) - 1, "f": 1e308}}]})
    from tracemark.credentials import load_signing_credentials

    creds = load_signing_credentials(ca.signer_chain, ca.signer_key)
    res, signed = sign_image(store, image, tmp_path / "deep.png", creds,
                             SignOptions(definition=definition))
    state, active = _active(signed, ca, "image/png")
    assert state == "Trusted"
    deep = next(a for a in active["assertions"] if a["label"] == "com.example.deep")
    assert deep["data"] == {"v": _nested(MAX_DATA_DEPTH - 1)}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize(("kind", "where", "expect"), [
    ("folder", "definition", "not a regular file or a pipe"),
    ("folder", "ingredient", "not a regular file"),
    ("fifo", "ingredient", "not a regular file"),  # no writer: reading it would block forever
    ("fifo", "definition", "ok"),  # a pipe with a writer, as `--manifest <(jq ...)` gives
    ("flood", "definition", "larger than"),  # a pipe writing past the limit: read only to it
])
def test_definition_files_that_are_not_regular(tmp_path: Path, kind: str, where: str,
                                               expect: str) -> None:
    """Folders and pipes as the definition or as an ingredient's ``file_path``: a
    ConfigError at once, or read (a definition from a pipe). Run in a child process so that
    a hang fails the test instead of blocking the suite."""
    odd = tmp_path / "odd"
    os.mkfifo(odd) if kind in ("fifo", "flood") else odd.mkdir()
    path = odd
    if where == "ingredient":
        path = tmp_path / "manifest.json"
        path.write_text(json.dumps({"ingredients": [{"title": "x", "file_path": "odd"}]}))
    code = ("import sys\nfrom tracemark.credentials.definition import load_definition\n"
            "from tracemark.errors import ConfigError\n"
            "try:\n    print(load_definition(sys.argv[1]).title)\nexcept ConfigError as e:\n"
            "    print(e)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if where == "definition" and kind in ("fifo", "flood"):
        # the other end of the pipe; the reader may stop at its limit (a broken pipe)
        with contextlib.suppress(BrokenPipeError), open(odd, "wb", buffering=0) as writer:
            writer.write(b'{"title": "piped"}' if kind == "fifo" else b" " * (3 << 20))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert ("piped" if expect == "ok" else expect) in out, out


def test_definition_creative_work_conflicts_with_author() -> None:
    from tracemark.credentials.definition import parse_definition

    d = parse_definition({"assertions": [{"label": "stds.schema-org.CreativeWork",
                                          "data": {"@type": "CreativeWork"}}]})
    SignOptions(definition=d)
    with pytest.raises(ConfigError, match="CreativeWork"):
        SignOptions(definition=d, author="Ada")


# --- the command line -----------------------------------------------------------------------


def _cli(*args: object) -> tuple[int, list[dict], str]:
    from click.testing import CliRunner

    from tracemark.cli import main

    res = CliRunner().invoke(main, [str(a) for a in args])
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return res.exit_code, rows, res.stderr


@pytest.mark.skipif(OPENSSL is None, reason="no openssl on this machine")
def test_cli_signer_command_tsa_and_manifest(ca: DevCA, image: np.ndarray, tmp_path: Path,
                                             tsa: LocalTSA) -> None:
    from tracemark.imageio import encode_image

    src = tmp_path / "in.png"
    src.write_bytes(encode_image(image, "PNG"))
    definition = _definition_file(tmp_path / "def", image)
    out = tmp_path / "out.jpg"
    code, rows, err = _cli(
        "sign", src, "--out", out, "--store", tmp_path / "store", "--cert", ca.signer_chain,
        "--signer-command", f"{OPENSSL} dgst -sha256 -sign {ca.signer_key}",
        "--alg", "es256", "--tsa-url", tsa.url, "--manifest", definition)
    assert code == 0, err
    assert rows[0]["error"] is None and rows[0]["output"] == str(out)
    state, active = _active(out.read_bytes(), ca)
    assert state == "Trusted" and active["title"] == "Harbour at dawn"
    assert "time" in active["signature_info"]
    # a failing command: the image fails (exit 3: nothing done), its stderr in the line,
    # nothing written
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nsys.stderr.write('hsm offline')\nsys.exit(7)\n")
    out2 = tmp_path / "out2.jpg"
    code, rows, err = _cli("sign", src, "--out", out2, "--store", tmp_path / "store2",
                           "--cert", ca.signer_chain, "--signer-command",
                           f"{sys.executable} {bad}", "--resign")
    assert code == EXIT_NOTHING, (code, rows, err)
    assert rows[0]["error"]["type"] == "SigningError"
    assert "exited with status 7; stderr: hsm offline" in rows[0]["error"]["message"]
    assert not out2.exists()


@pytest.mark.parametrize(("extra", "pattern"), [
    (["--manifest", "{def}/nope.json"], "no such file"),
    (["--manifest", "{def}/bad.json"], "not valid JSON"),
    (["--manifest", "{def}/reserved.json"], "written by tracemark"),
    (["--tsa-url", "ftp://tsa"], "tsa_url"),
    (["--alg", "es256"], "--alg is for --signer-command"),
    (["--signer-command", "true"], "one of them"),
    (["--alg", "ps256", "--signer-command", "x", "--no-key"], "cannot verify ps256"),
])
def test_cli_bad_signing_options_exit_2(ca: DevCA, image: np.ndarray, tmp_path: Path,
                                        extra: list[str], pattern: str) -> None:
    from tracemark.imageio import encode_image

    src = tmp_path / "in.png"
    src.write_bytes(encode_image(image, "PNG"))
    d = tmp_path / "defs"
    d.mkdir()
    (d / "bad.json").write_text("{nope")
    (d / "reserved.json").write_text(json.dumps(
        {"assertions": [{"label": "org.tracemark.credential", "data": {}}]}))
    args = [a.replace("{def}", str(d)) for a in extra]
    key = [] if "--no-key" in args else ["--key", ca.signer_key]
    args = [a for a in args if a != "--no-key"]
    out = tmp_path / "out.jpg"
    code, _, err = _cli("sign", src, "--out", out, "--store", tmp_path / "store",
                        "--cert", ca.signer_chain, *key, *args)
    assert code == 2 and re.search(pattern, err), (code, err)
    assert not out.exists() and not (tmp_path / "store").exists()


# --- the service ----------------------------------------------------------------------------


def test_service_sign_takes_a_definition(ca: DevCA, image: np.ndarray, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tracemark.imageio import encode_image
    from tracemark.service.app import ServiceSettings, create_app

    app = create_app(ServiceSettings(data_dir=tmp_path / "svc", cert=ca.signer_chain,
                                     key=ca.signer_key, trust=ca.ca_cert))
    token = app.state.tm.keys.create(scope="write", collections=["*"], name="admin")[0]
    h = {"Authorization": f"Bearer {token}"}
    definition = {"title": "From the API", "assertions": [
        {"label": "com.example.review", "data": {"ok": 1}},
        {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.resized"}]}}],
        "ingredients": [{"title": "brief.txt", "relationship": "inputTo",
                         "format": "text/plain"}]}
    with TestClient(app) as client:
        assert client.post("/v1/collections", json={"name": "w"}, headers=h).status_code == 201

        def sign(manifest: str) -> object:
            return client.post("/v1/collections/w/sign", headers=h, data={
                "format": "png", "manifest": manifest},
                files={"image": ("x.png", encode_image(image, "PNG"), "image/png")})

        res = sign(json.dumps(definition))
        assert res.status_code == 200, res.text
        state, active = _active(res.content, ca, "image/png")
        labels, actions = _labels_actions(active)
        assert state == "Trusted" and active["title"] == "From the API"
        assert "com.example.review" in labels and "org.tracemark.credential" in labels
        assert actions == ["c2pa.opened", "c2pa.resized", "c2pa.watermarked"]
        before = client.get("/v1/collections/w", headers=h).json()
        for bad in ("{", "[]", json.dumps({"assertions": [
                {"label": "c2pa.soft-binding", "data": {}}]}),
                json.dumps({"ingredients": [{"title": "a", "file_path": "/etc/hostname"}]}),
                # c2pa would refuse these while signing: they were 502 SigningError / 500
                json.dumps({"assertions": [{"label": "com/x", "data": {}}]}),
                json.dumps({"assertions": [{"label": "com.x", "data": {}, "kind": "Zzz"}]}),
                json.dumps({"assertions": [{"label": "com.x", "data": _nested(200)}]}),
                '{"assertions": [{"label": "com.x", "data": {"v": NaN}}]}',
                '{"title": ' + "9" * 5000 + "}",
                json.dumps({"assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.cropped", "softwareAgent": 5}]}}]}),
                "[" * 50_000 + "]" * 50_000):
            r = sign(bad)
            assert r.status_code == 422, r.text
            assert r.json()["error"]["type"] == "BadManifestDefinition"
        assert client.get("/v1/collections/w", headers=h).json() == before


# --- trust as c2pa settings: anchors, allowed list, EKU configuration -----------------------


@pytest.fixture(scope="module")
def foreign(ca: DevCA, image: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A file signed by another CA than ``ca`` (and its signer's certificate)."""
    from tracemark.credentials import load_signing_credentials

    d = tmp_path_factory.mktemp("foreign")
    other = init_dev_ca(d / "other")
    with CredentialStore.create(d / "store") as s:
        sign_image(s, image, d / "foreign.jpg",
                   load_signing_credentials(other.signer_chain, other.signer_key))
    leaf = x509.load_pem_x509_certificates(other.signer_chain.read_bytes())[0]
    (d / "allowed.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(
        leaf.public_bytes(serialization.Encoding.DER)).digest()).decode()
    (d / "allowed.hashes").write_text(f"# the foreign signer\n{digest}\n")
    (d / "bad.hashes").write_text("not-a-hash\n")
    (d / "ekus.cfg").write_text("# id-kp-documentSigning\n1.3.6.1.5.5.7.3.36\n")
    (d / "bad.cfg").write_text("documentSigning\n")
    return {"file": d / "foreign.jpg", "ca": other, "dir": d}


@pytest.mark.parametrize(("args", "state"), [
    ([], "valid"),  # neither under the anchors nor allowed: valid, untrusted
    (["--allowed-list", "{d}/allowed.pem"], "trusted"),
    (["--allowed-list", "{d}/allowed.hashes"], "trusted"),
    (["--trust", "{other}"], "trusted"),
    (["--trust", "{other}", "--trust-config", "{d}/ekus.cfg"], "trusted"),
])
def test_verify_trust_settings(ca: DevCA, foreign: dict, args: list[str], state: str) -> None:
    """The file's signer is not under ``--trust`` (the test CA): c2pa reports it valid but
    untrusted, unless the allowed list names its certificate (PEM or SHA-256 hash) or the
    anchors hold its CA. A trust configuration naming documentSigning only still accepts
    the emailProtection signer (c2pa-rs 0.91, measured)."""
    args = [a.replace("{d}", str(foreign["dir"])).replace("{other}", str(foreign["ca"].ca_cert))
            for a in args]
    if "--trust" not in args:
        args = ["--trust", str(ca.ca_cert), *args]
    code, rows, err = _cli("verify", foreign["file"], "--no-store", *args)
    assert rows and rows[0]["state"] == state, (code, rows, err)
    untrusted = "signingCredential.untrusted" in rows[0]["codes"]["failure"]
    assert untrusted is (state == "valid"), rows[0]["codes"]


@pytest.mark.parametrize(("option", "name", "pattern"), [
    ("--allowed-list", "bad.hashes", "neither a PEM certificate"),
    ("--allowed-list", "missing.pem", "not found"),
    ("--trust-config", "bad.cfg", "not an OID"),
    ("--trust-config", "missing.cfg", "not found"),
])
def test_verify_bad_trust_files_exit_2(foreign: dict, option: str, name: str,
                                       pattern: str) -> None:
    code, _, err = _cli("verify", foreign["file"], "--no-store", option,
                        foreign["dir"] / name)
    assert code == 2 and pattern in err, (code, err)


def test_trust_settings_shape() -> None:
    from tracemark.credentials.manifest import trust_settings

    assert trust_settings() == {}
    assert trust_settings("PEM") == {"user_anchors": "PEM"}
    assert trust_settings("PEM", "ALLOWED", "1.2.3\n") == {"anchors": [
        {"trust_kind": "manifest", "trust_anchors": "PEM", "allowed_list": "ALLOWED",
         "trust_config": "1.2.3\n"}]}


# --- the store records the digital source type ------------------------------------------------


def test_store_records_the_source_type(ca: DevCA, store: CredentialStore, image: np.ndarray,
                                       tmp_path: Path) -> None:
    from tracemark.credentials import load_signing_credentials

    creds = load_signing_credentials(ca.signer_chain, ca.signer_key)
    kinds = {"capture.jpg": SignOptions(source_type="digitalCapture"),
             "ai.jpg": SignOptions(ai_generated=True),
             "composite.jpg": SignOptions(
                 source_type="compositeWithTrainedAlgorithmicMedia"),
             "edit.jpg": SignOptions()}
    got = {}
    for i, (name, opts) in enumerate(kinds.items()):
        res, _ = sign_image(store, np.roll(image, 7 * i, axis=1), tmp_path / name, creds, opts)
        rec = store.get(res.manifest_id)
        got[name] = (rec.source_type, rec.ai_generated, rec.summary()["source_type"])
    assert got == {"capture.jpg": ("digitalCapture", False, "digitalCapture"),
                   "ai.jpg": ("trainedAlgorithmicMedia", True, "trainedAlgorithmicMedia"),
                   "composite.jpg": ("compositeWithTrainedAlgorithmicMedia", True,
                                     "compositeWithTrainedAlgorithmicMedia"),
                   "edit.jpg": (None, False, None)}
    store.commit()
    code, rows, err = _cli("credentials", "list", "--store", store.path)
    assert code == 0, err
    assert [r["source_type"] for r in rows] == [g[0] for g in got.values()]


def test_older_store_gains_the_source_type_column(tmp_path: Path) -> None:
    """The committed version-1 fixture (made before the column): read-only, its rows read
    with source_type None; a writable open adds the column and keeps every row."""
    import sqlite3

    fixture = Path(__file__).parent / "data" / "credentials_v1"
    shutil.copytree(fixture / "store", tmp_path / "store")
    db = tmp_path / "store" / "credentials.sqlite"
    cols = {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(manifests)")}
    assert "source_type" not in cols  # the fixture predates it
    with CredentialStore.open(tmp_path / "store", read_only=True) as ro:
        before = [r.summary() for r in ro.list()]
    assert before and all(r["source_type"] is None for r in before)
    with CredentialStore.open(tmp_path / "store") as rw:
        after = [r.summary() for r in rw.list()]
    assert after == before
    con = sqlite3.connect(db)
    assert "source_type" in {r[1] for r in con.execute("PRAGMA table_info(manifests)")}
    con.close()
    with CredentialStore.open(tmp_path / "store") as again:  # a second open: no-op
        assert [r.summary() for r in again.list()] == before


# --- the service: external signer, timestamp authority, trust lists --------------------------


def test_service_signs_with_an_external_signer_and_a_tsa(
        ca: DevCA, signer_key, image: np.ndarray, tmp_path: Path, tsa: LocalTSA,
        foreign: dict) -> None:
    """``serve --signer-command/--tsa-url/--allowed-list`` as settings: the service signs
    with a key it never holds, each manifest carries the TSA's time stamp, verify honours
    the allowed list, and a failing signer is a 502 that stores nothing."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tracemark.imageio import encode_image
    from tracemark.service.app import ServiceSettings, create_app

    calls: list[int] = []
    broken = {"on": False}

    def kms(data: bytes) -> bytes:
        calls.append(len(data))
        if broken["on"]:
            raise RuntimeError("the KMS is down")
        return signer_key.sign(data, ec.ECDSA(hashes.SHA256()))

    app = create_app(ServiceSettings(
        data_dir=tmp_path / "svc", cert=ca.signer_chain, signer=kms, tsa_url=tsa.url,
        trust=ca.ca_cert, allowed_list=foreign["dir"] / "allowed.pem"))
    token = app.state.tm.keys.create(scope="write", collections=["*"], name="admin")[0]
    h = {"Authorization": f"Bearer {token}"}
    png = encode_image(image, "PNG")
    with TestClient(app) as client:
        assert client.post("/v1/collections", json={"name": "w"}, headers=h).status_code == 201
        res = client.post("/v1/collections/w/sign", headers=h, data={"format": "jpg"},
                          files={"image": ("x.png", png, "image/png")})
        assert res.status_code == 200, res.text
        assert calls
        state, manifest_store = _reader(res.content, ca)
        success = [c["code"] for c in
                   manifest_store["validation_results"]["activeManifest"]["success"]]
        assert state == "Trusted" and "timeStamp.validated" in success
        active = manifest_store["manifests"][manifest_store["active_manifest"]]
        # the upload's file name names the parent ingredient and the title
        assert [i["title"] for i in active["ingredients"]] == ["x.png"]
        assert active["title"] == "x"
        v = client.post("/v1/verify", headers=h, files={
            "image": ("f.jpg", foreign["file"].read_bytes(), "image/jpeg")}).json()
        assert v["state"] == "trusted", v  # another CA's signer, on the allowed list
        before = client.get("/v1/collections/w", headers=h).json()
        broken["on"] = True
        res = client.post("/v1/collections/w/sign", headers=h, data={"format": "jpg"},
                          files={"image": ("x.png", png, "image/png")})
        assert res.status_code == 502 and res.json()["error"]["type"] == "SigningError", res.text
        assert "KMS is down" in res.json()["error"]["message"]
        assert client.get("/v1/collections/w", headers=h).json() == before
    with pytest.raises(ConfigError, match="tsa_url"):
        create_app(ServiceSettings(data_dir=tmp_path / "svc2", cert=ca.signer_chain,
                                   signer=kms, tsa_url="ftp://x/"))


def test_serve_refuses_unfit_signing_options(ca: DevCA, tmp_path: Path) -> None:
    for args, pattern in [
        (["--signer-command", "cat", "--key", str(ca.signer_key), "--cert",
          str(ca.signer_chain)], "one of them"),
        (["--signer-command", "cat"], "--cert"),
        (["--tsa-url", "http://127.0.0.1:1/"], "--tsa-url"),
        (["--cert", str(ca.signer_chain), "--key", str(ca.signer_key), "--allowed-list",
          str(tmp_path / "missing.pem")], "not found"),
    ]:
        code, _, err = _cli("serve", "--store", tmp_path / "d", *args)
        assert code == 2 and pattern in err, (args, code, err)

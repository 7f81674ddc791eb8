"""The C2PA certificate profile is checked before any work, and names the certificate and
the rule (issue 12, kind 9); watermark passphrases have a minimum length.

Every certificate is generated here with ``cryptography``; c2pa-python's own signer is the
oracle: a chain tracemark refuses for a rule c2pa enforces at signing must also be refused by
c2pa (so the check is not stricter by accident), and the chain tracemark accepts signs.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import c2pa
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from tracemark.credentials import (
    CredentialStore,
    SigningCredentials,
    check_certificate_profile,
    init_dev_ca,
    load_signing_credentials,
    sign_image,
)
from tracemark.errors import CertificateError, WatermarkKeyError
from tracemark.imageio import encode_image
from tracemark.watermark.keys import MIN_PASSPHRASE_CHARS, as_key, read_key

NOW = dt.datetime.now(dt.UTC)
PEM = serialization.Encoding.PEM
EMAIL = ExtendedKeyUsageOID.EMAIL_PROTECTION
SERVER = ExtendedKeyUsageOID.SERVER_AUTH


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(*, sign: bool, cert_sign: bool = False, non_repudiation: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign, content_commitment=non_repudiation, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )


class Pki:
    """A CA and a factory of leaf certificates it issues, one property changed at a time."""

    def __init__(self, *, ca_days: tuple[int, int] = (-1, 30)) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.ca = (
            x509.CertificateBuilder().subject_name(_name("profile test CA"))
            .issuer_name(_name("profile test CA")).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW + dt.timedelta(days=ca_days[0]))
            .not_valid_after(NOW + dt.timedelta(days=ca_days[1]))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(sign=False, cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def leaf(self, *, key: Any = None, ekus: list[ObjectIdentifier] | None = (EMAIL,),  # type: ignore[assignment]
             usage: x509.KeyUsage | None = _usage(sign=True), ca: bool = False,  # noqa: B008
             aki: bool = True, days: tuple[int, int] = (-1, 30),
             hash_alg: Any = None) -> tuple[Any, Any]:
        key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder().subject_name(_name("profile test signer"))
            .issuer_name(self.ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW + dt.timedelta(days=days[0]))
            .not_valid_after(NOW + dt.timedelta(days=days[1]))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if usage is not None:
            b = b.add_extension(usage, critical=True)
        if ekus is not None:
            b = b.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
        if aki:
            b = b.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False)
        return b.sign(self.key, hash_alg or hashes.SHA256()), key

    def write(self, d: Path, name: str, cert: Any, key: Any) -> tuple[Path, Path]:
        chain, k = d / f"{name}.pem", d / f"{name}.key"
        chain.write_bytes(cert.public_bytes(PEM) + self.ca.public_bytes(PEM))
        k.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        return chain, k


def c2pa_signs(chain: Path, key: Path, alg: str = "es256") -> bool:
    """The oracle: does c2pa-python itself sign with this chain (no verification after)?"""
    asset = encode_image(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8), "JPEG")
    try:
        ctx = c2pa.Context.from_dict({"verify": {"verify_after_sign": False}})
        builder = c2pa.Builder({"claim_generator_info": [{"name": "test", "version": "1"}],
                                "title": "t", "format": "image/jpeg", "assertions": []},
                               context=ctx)
        builder.set_intent(c2pa.C2paBuilderIntent.CREATE,
                           c2pa.C2paDigitalSourceType.DIGITAL_CREATION)
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(
            alg.encode(), chain.read_bytes(), key.read_bytes(), None))
        builder.sign(signer, "image/jpeg", io.BytesIO(asset), io.BytesIO())
        return True
    except c2pa.C2paError:
        return False


Case = Callable[[Pki], tuple[Any, Any]]
# name -> (leaf factory, rule named in the message, does c2pa itself refuse it at signing?)
CASES: dict[str, tuple[Case, str, bool]] = {
    "no extended key usage": (lambda p: p.leaf(ekus=None), "extended key usage: none", True),
    "TLS server auth only": (lambda p: p.leaf(ekus=[SERVER]),
                             "extended key usage: id-kp-serverAuth", True),
    "TLS client auth only": (lambda p: p.leaf(ekus=[ExtendedKeyUsageOID.CLIENT_AUTH]),
                             "extended key usage: id-kp-clientAuth", True),
    "anyExtendedKeyUsage": (lambda p: p.leaf(ekus=[ObjectIdentifier("2.5.29.37.0"), EMAIL]),
                            "anyExtendedKeyUsage is not allowed", True),
    "timeStamping beside emailProtection": (
        lambda p: p.leaf(ekus=[ExtendedKeyUsageOID.TIME_STAMPING, EMAIL]),
        "timeStamping and OCSPSigning are for", True),
    # c2pa signs these but no claim signer should carry them (C2PA 2.1 section 14.5.1)
    "timeStamping only": (lambda p: p.leaf(ekus=[ExtendedKeyUsageOID.TIME_STAMPING]),
                          "timeStamping and OCSPSigning are for", False),
    # c2pa signs it, then its own validator reports signingCredential.invalid
    "documentSigning only": (lambda p: p.leaf(ekus=[ObjectIdentifier("1.3.6.1.5.5.7.3.36")]),
                             "id-kp-documentSigning is allowed by the C2PA specification", False),
    "no key usage": (lambda p: p.leaf(usage=None), "key usage: no key usage extension", True),
    "key usage without digitalSignature": (
        lambda p: p.leaf(usage=_usage(sign=False, non_repudiation=True)),
        "lacks the digitalSignature key usage", False),
    "keyCertSign on the signer": (lambda p: p.leaf(usage=_usage(sign=True, cert_sign=True)),
                                  "keyCertSign on an end-entity", True),
    "a CA as signer": (lambda p: p.leaf(ca=True), "basic constraints cA must be false", True),
    "no authority key identifier": (lambda p: p.leaf(aki=False),
                                    "authority key identifier: missing", True),
    "expired": (lambda p: p.leaf(days=(-30, -1)), "the signing certificate expired on", True),
    "not yet valid": (lambda p: p.leaf(days=(1, 30)), "is not valid before", True),
    "signed with SHA-224": (lambda p: p.leaf(hash_alg=hashes.SHA224()),
                          "signature algorithm: ecdsa-with-SHA224", True),
}


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_broken_rule_is_named_with_the_certificate(
    pki: Pki, tmp_path: Path, case: str
) -> None:
    make, rule, c2pa_refuses = CASES[case]
    cert, key = make(pki)
    chain, key_path = pki.write(tmp_path, "leaf", cert, key)
    with pytest.raises(CertificateError) as err:
        load_signing_credentials(chain, key_path)
    message = str(err.value)
    assert rule in message
    assert "profile test signer" in message  # the certificate is named
    assert err.value.source == str(chain)
    if "certificate 1 of 2" not in message:  # the older messages name it in brackets
        assert "(certificate 1 of 2 (the signer" in message or "is a CA" in message, message
    # the oracle: a rule c2pa enforces when signing is refused there too
    assert c2pa_signs(chain, key_path) is not c2pa_refuses


def test_a_chain_that_fits_the_profile_signs_in_c2pa(pki: Pki, tmp_path: Path) -> None:
    for name, key, alg in [("p256", None, "es256"),
                           ("p384", ec.generate_private_key(ec.SECP384R1()), "es384"),
                           ("ed25519", ed25519.Ed25519PrivateKey.generate(), "ed25519"),
                           ("rsa", rsa.generate_private_key(65537, 2048), "ps256")]:
        cert, k = pki.leaf(key=key, ekus=[EMAIL, SERVER])  # extra EKUs beside one allowed
        chain, key_path = pki.write(tmp_path, name, cert, k)
        creds = load_signing_credentials(chain, key_path)
        assert creds.alg == alg
        assert c2pa_signs(chain, key_path, alg), name


def test_an_expired_ca_certificate_is_named_by_position(tmp_path: Path) -> None:
    old = Pki(ca_days=(-60, -1))
    cert, key = old.leaf()
    chain, key_path = old.write(tmp_path, "leaf", cert, key)
    with pytest.raises(CertificateError,
                       match=r"certificate 2 of 2 \(a CA certificate, CN=profile test CA\) "
                             r"expired on"):
        load_signing_credentials(chain, key_path)


def test_check_certificate_profile_takes_the_time(pki: Pki) -> None:
    cert, _ = pki.leaf()
    check_certificate_profile([cert, pki.ca])
    with pytest.raises(CertificateError, match="expired on"):
        check_certificate_profile([cert, pki.ca], now=NOW + dt.timedelta(days=60))


# --- before any work --------------------------------------------------------------------


def test_sign_image_checks_credentials_before_touching_the_input(
    pki: Pki, tmp_path: Path
) -> None:
    """Credentials built by hand (or expired since they were loaded) fail before the input
    is read and before a manifest id is reserved."""
    dev = init_dev_ca(tmp_path / "ca")
    good = load_signing_credentials(dev.signer_chain, dev.signer_key)
    cert, key = pki.leaf(ekus=[SERVER])
    bad = replace(good, chain_pem=(cert.public_bytes(PEM) + pki.ca.public_bytes(PEM)).decode(),
                  key_pem=key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode())
    assert isinstance(bad, SigningCredentials)
    with CredentialStore.create(tmp_path / "store") as store:
        with pytest.raises(CertificateError, match="extended key usage: id-kp-serverAuth"):
            sign_image(store, tmp_path / "does-not-exist.png", tmp_path / "out.png", bad)
        assert store.stats()["pending"] == 0 and len(store) == 0
    assert not (tmp_path / "out.png").exists()


def _cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from tracemark.cli import main; main()", *map(str, args)], capture_output=True,
        text=True, timeout=120, env={**os.environ, **(env or {})}, check=False,
    )


def test_cli_sign_refuses_a_tls_certificate_before_any_work(pki: Pki, tmp_path: Path) -> None:
    cert, key = pki.leaf(ekus=[SERVER])
    chain, key_path = pki.write(tmp_path, "tls", cert, key)
    src = tmp_path / "in.png"
    src.write_bytes(encode_image(np.full((64, 64, 3), 120, np.uint8), "PNG"))
    store, out = tmp_path / "store", tmp_path / "out"
    res = _cli("sign", src, "--out", out, "--cert", chain, "--key", key_path, "--store", store)
    assert res.returncode == 2, res.stderr
    assert "certificate 1 of 2 (the signer, CN=profile test signer)" in res.stderr
    assert "extended key usage: id-kp-serverAuth" in res.stderr
    assert not store.exists() and not out.exists()


def test_the_service_refuses_to_start_with_an_unfit_certificate(
    pki: Pki, tmp_path: Path
) -> None:
    from tracemark.service.app import ServiceSettings, create_app

    cert, key = pki.leaf(ekus=None)
    chain, key_path = pki.write(tmp_path, "noeku", cert, key)
    with pytest.raises(CertificateError, match="extended key usage: none"):
        create_app(ServiceSettings(data_dir=tmp_path / "data", cert=chain, key=key_path))


def test_the_service_answers_503_when_its_certificate_expires_while_it_runs(
    pki: Pki, tmp_path: Path
) -> None:
    """The signing certificate is the server's, not the client's: a sign after it expired
    is 503 with the rule named, and nothing is reserved."""
    import time

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tracemark.service.app import ServiceSettings, create_app

    ends = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)
    cert, key = pki.leaf(days=(-1, (ends - NOW).total_seconds() / 86400))
    chain, key_path = pki.write(tmp_path, "short", cert, key)
    app = create_app(ServiceSettings(data_dir=tmp_path / "data", cert=chain, key=key_path))
    token = app.state.tm.keys.create(scope="write", collections=["*"], name="admin")[0]
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/v1/collections", json={"name": "c"}, headers=headers).status_code == 201
        time.sleep(max(0.0, (ends - dt.datetime.now(dt.UTC)).total_seconds()) + 1.5)
        image = encode_image(np.full((64, 64, 3), 120, np.uint8), "PNG")
        res = client.post("/v1/collections/c/sign", headers=headers,
                          files={"image": ("in.png", io.BytesIO(image), "image/png")})
    assert res.status_code == 503, res.text
    assert res.json()["error"]["type"] == "CertificateError"
    assert "expired on" in res.json()["error"]["message"]


# --- watermark passphrases ----------------------------------------------------------------


@pytest.mark.parametrize("passphrase", ["hunter", "a" * (MIN_PASSPHRASE_CHARS - 1), "pässwört"])
def test_short_passphrases_are_refused_without_echoing_them(passphrase: str) -> None:
    with pytest.raises(WatermarkKeyError, match=f"at least {MIN_PASSPHRASE_CHARS} characters") as err:
        as_key(passphrase)
    assert passphrase not in str(err.value)
    with pytest.raises(WatermarkKeyError, match=f"at least {MIN_PASSPHRASE_CHARS}") as err:
        read_key(passphrase_env="TM_PASS", environ={"TM_PASS": passphrase})
    assert passphrase not in str(err.value)


def test_a_short_passphrase_is_accepted_only_on_purpose() -> None:
    key = as_key("hunter2", allow_short=True)
    assert key == read_key(passphrase_env="P", environ={"P": "hunter2"},
                           allow_short_passphrase=True)
    assert as_key("correct horse battery staple").material != key.material


@pytest.mark.parametrize("passphrase", [" " * 12, "a" * 24, "abababababab", "abcabcabcabc"])
def test_uniform_passphrases_are_refused(passphrase: str) -> None:
    with pytest.raises(WatermarkKeyError, match="different characters") as err:
        as_key(passphrase)
    assert passphrase.strip() == "" or passphrase not in str(err.value)
    assert as_key(passphrase, allow_short=True).material  # on purpose only


@pytest.mark.parametrize("material", [bytes(16), b"\xff" * 32, b"ab" * 16, bytes(range(7)) * 3])
def test_placeholder_keys_are_refused(material: bytes) -> None:
    with pytest.raises(WatermarkKeyError, match="distinct byte values"):
        as_key(material)
    with pytest.raises(WatermarkKeyError, match="distinct byte values"):
        read_key(key_env="K", environ={"K": material.hex()})
    assert as_key(material, allow_short=True).material == material
    assert as_key(bytes(range(16))).material == bytes(range(16))


def test_cli_refuses_a_short_passphrase(tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    src.write_bytes(encode_image(np.full((64, 64, 3), 120, np.uint8), "PNG"))
    res = _cli("watermark", "embed", src, "--out", tmp_path / "out", "--payload", "text:abc",
               "--passphrase-env", "TM_PASS", env={"TM_PASS": "12345"})
    assert res.returncode == 2, res.stderr
    assert "at least 12" in res.stderr and "12345" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_chain_whose_signer_is_not_signed_by_the_next_certificate_is_refused(
    pki: Pki, tmp_path: Path
) -> None:
    """A leaf that names the CA as issuer but signs itself (or a chain out of order) is
    refused before any work, naming the certificate (RFC 5280 section 6.1)."""
    good, key = pki.leaf()
    forged = (
        x509.CertificateBuilder().subject_name(good.subject).issuer_name(pki.ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(good.not_valid_before_utc).not_valid_after(good.not_valid_after_utc)
    )
    for ext in good.extensions:
        forged = forged.add_extension(ext.value, critical=ext.critical)
    forged = forged.sign(key, hashes.SHA256())  # signed by its own key, not the CA's
    with pytest.raises(CertificateError, match="is not signed by the next certificate"):
        check_certificate_profile([forged, pki.ca])
    with pytest.raises(CertificateError, match="names issuer"):
        check_certificate_profile([good, good])  # not followed by its issuer
    check_certificate_profile([good, pki.ca])
    chain, key_path = pki.write(tmp_path, "forged", forged, key)
    src = tmp_path / "in.png"
    src.write_bytes(encode_image(np.full((64, 64, 3), 120, np.uint8), "PNG"))
    res = _cli("sign", src, "--out", tmp_path / "out", "--cert", chain, "--key", key_path,
               "--store", tmp_path / "store")
    assert res.returncode == 2, res.stderr
    assert "is not signed by the next certificate" in res.stderr
    assert not (tmp_path / "store").exists()

"""Signing credentials: a development CA for offline use, and checks on the user's own chain.

C2PA validators reject a lone self-signed certificate: a signer needs a leaf certificate
issued by a CA, with the digitalSignature key usage and a C2PA-accepted extended key usage
(here emailProtection), and a verifier trusts the leaf through the CA certificate given as a
trust anchor. :func:`init_dev_ca` makes such a pair, clearly named as for testing only, so
that signing and verifying run offline. Production use takes the user's own chain and key
through :func:`load_signing_credentials`, which checks them before the C2PA library sees
them: a missing or unreadable file, an expired or not-yet-valid certificate, a key that does
not belong to the certificate, or a CA certificate used as a signer each give a
:class:`~tracemark.errors.CertificateError` that says which.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracemark._optional import require
from tracemark.errors import CertificateError, ConfigError

__all__ = [
    "DEV_MARKER",
    "DevCA",
    "SigningCredentials",
    "init_dev_ca",
    "load_signing_credentials",
    "load_trust_anchors",
]

DEV_MARKER = "TEST ONLY - NOT FOR PRODUCTION"
"""Written into the organisation name of every development certificate."""

_README = f"""tracemark development certificates -- {DEV_MARKER}

Made by `tracemark certs init` so that signing and verifying run offline. Anyone can make
such a CA: a manifest signed with it proves nothing to anybody else. Use your own
certificate chain and key for real content credentials.

  ca.pem        the development CA certificate: give it to `tracemark verify --trust`
  ca.key        the CA's private key (kept only to issue more test signers)
  signer.pem    the signing certificate chain (signer, then CA): `tracemark sign --cert`
  signer.key    the signer's private key: `tracemark sign --key`
"""

_OID_EMAIL_PROTECTION = "1.3.6.1.5.5.7.3.4"


def _crypto() -> Any:
    return require("cryptography.x509", "c2pa", purpose="content credentials")


@dataclass(frozen=True)
class DevCA:
    """The files written by :func:`init_dev_ca`."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    signer_chain: Path
    signer_key: Path
    not_after: dt.datetime


@dataclass(frozen=True)
class SigningCredentials:
    """A checked certificate chain (PEM, leaf first) and its private key (PEM)."""

    chain_pem: str = field(repr=False)
    key_pem: str = field(repr=False)
    alg: str
    """The C2PA signing algorithm for the key: es256, es384, es512, ps256 or ed25519."""
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    development: bool
    """True for a certificate made by :func:`init_dev_ca` (its name says so)."""


def _name(common_name: str) -> Any:
    x509 = _crypto()
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"tracemark ({DEV_MARKER})"),
        ]
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def init_dev_ca(
    directory: str | os.PathLike[str],
    *,
    days: int = 365,
    overwrite: bool = False,
    now: dt.datetime | None = None,
) -> DevCA:
    """Make a development CA and a signing certificate it issued, in ``directory``.

    Both use ECDSA P-256 (C2PA's ES256). The CA is valid ``days`` days, the signer as long
    (they are for tests). Existing files are kept unless ``overwrite``; private keys are
    written with mode 0600.
    """
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not isinstance(days, int) or days < 1:
        raise ConfigError(f"days must be a positive integer; got {days!r}")
    out = Path(directory)
    paths = {n: out / n for n in ("ca.pem", "ca.key", "signer.pem", "signer.key")}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise CertificateError(
            f"refusing to overwrite existing files: {', '.join(existing)} (use --force)"
        )
    out.mkdir(parents=True, exist_ok=True)
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    end = start + dt.timedelta(days=days)

    def usage(*, sign: bool) -> Any:
        return x509.KeyUsage(
            digital_signature=sign, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=not sign,
            crl_sign=not sign, encipher_only=False, decipher_only=False,
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("tracemark development CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("tracemark development signer"))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM

    def key_bytes(k: Any) -> bytes:
        return k.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    paths["ca.pem"].write_bytes(ca.public_bytes(pem))
    _write_private(paths["ca.key"], key_bytes(ca_key))
    paths["signer.pem"].write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    _write_private(paths["signer.key"], key_bytes(leaf_key))
    (out / "README.txt").write_text(_README)
    return DevCA(out, paths["ca.pem"], paths["ca.key"], paths["signer.pem"], paths["signer.key"], end)


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CertificateError(f"{what} not found", source=str(p)) from None
    except IsADirectoryError:
        raise CertificateError(f"{what} is a directory, not a file", source=str(p)) from None
    except OSError as exc:
        raise CertificateError(f"cannot read the {what}: {exc.strerror or exc}", source=str(p)) from None
    if not data.strip():
        raise CertificateError(f"the {what} is empty", source=str(p))
    return data


def _parse_chain(data: bytes, source: str) -> list[Any]:
    x509 = _crypto()
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate file ({exc})", source=source) from None
    if not certs:
        raise CertificateError("no certificate in the file", source=source)
    return certs


def _alg_for(key: Any, source: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        alg = algs.get(key.curve.name)
        if alg is None:
            raise CertificateError(f"unsupported elliptic curve {key.curve.name}", source=source)
        return alg
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise CertificateError(f"RSA key of {key.key_size} bits; C2PA needs at least 2048", source=source)
        return "ps256"
    raise CertificateError(f"unsupported key type {type(key).__name__}", source=source)


def _public_bytes(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_signing_credentials(
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str],
    *,
    now: dt.datetime | None = None,
) -> SigningCredentials:
    """Read and check a signing chain (PEM, leaf first) and its private key (PEM, unencrypted).

    Raises :class:`~tracemark.errors.CertificateError` for a missing, empty or unreadable
    file; no certificate; a leaf that is expired or not yet valid (at ``now``, default the
    current time); a key that is encrypted, unreadable, of an unsupported type, or not the
    leaf's; a leaf that is a CA or lacks the digitalSignature key usage.
    """
    _crypto()
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_src, key_src = os.fspath(cert), os.fspath(key)
    chain = _parse_chain(_read(cert, "certificate chain"), cert_src)
    leaf = chain[0]
    key_data = _read(key, "private key")
    try:
        private_key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise CertificateError(
            "the private key is encrypted; give an unencrypted PEM key", source=key_src
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"not a PEM private key ({exc})", source=key_src) from None
    alg = _alg_for(private_key, key_src)
    if _public_bytes(private_key.public_key()) != _public_bytes(leaf.public_key()):
        raise CertificateError(
            "the private key does not belong to the first certificate of the chain "
            "(wrong key, or the chain is not leaf-first)",
            source=key_src,
        )
    when = now or dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc < when:
        raise CertificateError(
            f"the signing certificate expired on {leaf.not_valid_after_utc.isoformat()}",
            source=cert_src,
        )
    if leaf.not_valid_before_utc > when:
        raise CertificateError(
            f"the signing certificate is not valid before {leaf.not_valid_before_utc.isoformat()}",
            source=cert_src,
        )
    try:
        basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if basic.ca:
            raise CertificateError(
                "the first certificate is a CA certificate; C2PA signs with a leaf "
                "(end-entity) certificate issued by the CA",
                source=cert_src,
            )
    except x509.ExtensionNotFound:
        pass
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            raise CertificateError(
                "the signing certificate lacks the digitalSignature key usage", source=cert_src
            )
    except x509.ExtensionNotFound:
        pass
    if len(chain) == 1 and leaf.issuer == leaf.subject:
        raise CertificateError(
            "a lone self-signed certificate: C2PA needs a certificate issued by a CA "
            "(the chain: signer, then its CA); `tracemark certs init` makes a test pair",
            source=cert_src,
        )
    for upper in chain[1:]:
        if upper.not_valid_after_utc < when:
            raise CertificateError(
                f"a CA certificate of the chain ({upper.subject.rfc4514_string()}) expired on "
                f"{upper.not_valid_after_utc.isoformat()}",
                source=cert_src,
            )
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain).decode()
    subject = leaf.subject.rfc4514_string()
    return SigningCredentials(
        chain_pem=chain_pem,
        key_pem=key_data.decode("ascii", errors="replace"),
        alg=alg,
        subject=subject,
        issuer=leaf.issuer.rfc4514_string(),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        development=DEV_MARKER in subject,
    )


def load_trust_anchors(path: str | os.PathLike[str]) -> str:
    """The PEM text of the trust anchors in ``path`` (one or more CA certificates)."""
    from cryptography.hazmat.primitives import serialization

    _crypto()
    certs = _parse_chain(_read(path, "trust anchor file"), os.fspath(path))
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs).decode()

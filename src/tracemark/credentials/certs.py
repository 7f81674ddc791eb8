"""Signing credentials: a development CA for offline use, and checks on the user's own chain.

C2PA validators reject a lone self-signed certificate: a signer needs a leaf certificate
issued by a CA, with the digitalSignature key usage and a C2PA-accepted extended key usage
(here emailProtection), and a verifier trusts the leaf through the CA certificate given as a
trust anchor. :func:`init_dev_ca` makes such a pair, clearly named as for testing only, so
that signing and verifying run offline. Production use takes the user's own chain and key
through :func:`load_signing_credentials`, which checks them before the C2PA library sees
them: a missing or unreadable file, a key that does not belong to the certificate, and every
rule of the C2PA certificate profile (:func:`check_certificate_profile`: C2PA 2.1 section
14.5.1, as c2pa-python applies it) give a :class:`~tracemark.errors.CertificateError` that
names the certificate (its position in the chain and its subject) and the rule it breaks.
:meth:`SigningCredentials.check` runs the same checks again at signing time (a long-running
service's certificate may expire), before any image work.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from tracemark._optional import require
from tracemark.errors import CertificateError, ConfigError

__all__ = [
    "DEV_MARKER",
    "DevCA",
    "SigningCredentials",
    "SIGNER_EKUS",
    "check_certificate_profile",
    "init_dev_ca",
    "load_signing_certificate",
    "load_signing_credentials",
    "load_allowed_list",
    "load_trust_anchors",
    "load_trust_config",
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
_OID_DOCUMENT_SIGNING = "1.3.6.1.5.5.7.3.36"
_OID_C2PA_CLAIM_SIGNING = "1.3.6.1.4.1.62558.2.1"
_OID_TIME_STAMPING = "1.3.6.1.5.5.7.3.8"
_OID_OCSP_SIGNING = "1.3.6.1.5.5.7.3.9"
_OID_ANY_EKU = "2.5.29.37.0"

SIGNER_EKUS = {_OID_EMAIL_PROTECTION: "id-kp-emailProtection"}
"""Extended key usages a tracemark signing certificate may carry to sign (OID -> name).

C2PA 2.1 section 14.5.1 allows id-kp-emailProtection and id-kp-documentSigning
(1.3.6.1.5.5.7.3.36) for claim signers, and C2PA 2.2 adds c2pa-kp-claimSigning
(1.3.6.1.4.1.62558.2.1); but the validator of c2pa-python 0.38 (tracemark's ``c2pa`` extra),
without a configured EKU list, reports the latter two as ``signingCredential.invalid``
("certificate missing required EKU"), so every manifest signed with them would verify
``invalid``. Only emailProtection is accepted here until that validator accepts the others."""

_SPEC_ONLY_EKUS = {_OID_DOCUMENT_SIGNING: "id-kp-documentSigning",
                   _OID_C2PA_CLAIM_SIGNING: "c2pa-kp-claimSigning"}
_EKU_NAMES = {
    **SIGNER_EKUS, **_SPEC_ONLY_EKUS,
    "1.3.6.1.5.5.7.3.1": "id-kp-serverAuth (TLS server)",
    "1.3.6.1.5.5.7.3.2": "id-kp-clientAuth (TLS client)",
    "1.3.6.1.5.5.7.3.3": "id-kp-codeSigning",
    _OID_TIME_STAMPING: "id-kp-timeStamping",
    _OID_OCSP_SIGNING: "id-kp-OCSPSigning",
    _OID_ANY_EKU: "anyExtendedKeyUsage",
}
_SIGNATURE_ALGORITHMS = {
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
    "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.2.840.113549.1.1.10": "RSASSA-PSS",
    "1.3.101.112": "Ed25519",
}
"""Signature algorithms C2PA accepts on a certificate (C2PA 2.1 section 14.5.1; the list
c2pa-rs ``check_certificate_profile`` applies)."""
_EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")
MIN_RSA_BITS = 2048


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
    """The private key (PEM); empty for a chain loaded by :func:`load_signing_certificate`,
    whose key stays with an external signer."""
    alg: str
    """The C2PA signing algorithm for the key: es256, es384, es512, ps256 or ed25519."""
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    development: bool
    """True for a certificate made by :func:`init_dev_ca` (its name says so)."""

    def check(self, now: dt.datetime | None = None) -> None:
        """Check the chain against the C2PA certificate profile at ``now`` (default the
        current time): :func:`check_certificate_profile`. Signing calls it before any image
        work, so that credentials built by hand, or expired since they were loaded, fail
        early with a :class:`~tracemark.errors.CertificateError` that names the rule."""
        _crypto()
        check_certificate_profile(_parse_chain(self.chain_pem.encode(), "signing chain"),
                                  now=now, source=self.subject)


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


SIGNING_ALGS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")
"""The C2PA signing algorithms (C2PA 2.1 section 13.2; c2pa-python's ``C2paSigningAlg``)."""


def _algs_for_public(key: Any, source: str) -> tuple[str, ...]:
    """The C2PA algorithms a certificate's public key can verify, the default first."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePublicKey):
        algs = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name not in algs:
            raise CertificateError(f"unsupported elliptic curve {key.curve.name}", source=source)
        return (algs[key.curve.name],)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ("ed25519",)
    if isinstance(key, rsa.RSAPublicKey):
        return ("ps256", "ps384", "ps512")
    raise CertificateError(f"unsupported key type {type(key).__name__}", source=source)


def _public_bytes(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _where(cert: Any, position: int, total: int) -> str:
    """How an error names a certificate: its position in the chain and its subject."""
    role = "the signer" if position == 0 else "a CA certificate"
    return (f"certificate {position + 1} of {total} ({role}, "
            f"{cert.subject.rfc4514_string() or 'no subject'})")


def _ext(cert: Any, cls: Any) -> Any:
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _check_key(cert: Any, broken: Callable[[str, str], NoReturn]) -> None:
    """The certificate's public key: P-256/384/521, Ed25519, or RSA of >= 2048 bits."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _EC_CURVES:
            broken("public key", f"elliptic curve {key.curve.name}; C2PA allows P-256, P-384 "
                   "and P-521")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            broken("public key", f"RSA key of {key.key_size} bits; C2PA needs at least "
                   f"{MIN_RSA_BITS}")
        e = key.public_numbers().e
        if e < 3 or e % 2 == 0:
            broken("public key", f"RSA public exponent {e} (must be odd and >= 3)")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        broken("public key", f"{type(key).__name__.lstrip('_')}; C2PA allows ECDSA "
               "(P-256/384/521), RSA (>= 2048 bits) and Ed25519")


def check_certificate_profile(
    chain: list[Any], *, now: dt.datetime | None = None, source: str | None = None
) -> None:
    """Check a signing chain (``cryptography`` certificates, leaf first) against the C2PA
    certificate profile; raise :class:`~tracemark.errors.CertificateError` on the first rule
    broken, naming the certificate (position and subject) and the rule.

    Source: C2PA 2.1 section 14.5.1 "Certificate Profile", as c2pa-rs
    ``check_end_entity_certificate_profile`` applies it at signing. Every certificate: X.509
    v3, valid at ``now`` (default the current time, UTC), signed with ECDSA (SHA-256/384/512),
    RSA PKCS#1 v1.5 or PSS (SHA-256/384/512) or Ed25519. The signer (first certificate):
    not a CA (basic constraints cA false); a key usage extension with digitalSignature and
    without keyCertSign; an extended key usage extension, without anyExtendedKeyUsage, with
    one of :data:`SIGNER_EKUS` and neither timeStamping nor OCSPSigning (those are for time
    stamp and OCSP responders); an authority key identifier; a public key of an allowed
    kind (P-256/384/521, Ed25519, RSA >= 2048 bits with an odd exponent >= 3); and not a lone
    self-signed certificate. Each certificate but the last must be issued and signed by the
    next one (RFC 5280 section 6.1), checked with
    ``cryptography.x509.Certificate.verify_directly_issued_by``.
    """
    from cryptography import x509

    when = now or dt.datetime.now(dt.UTC)
    total = len(chain)
    for position, cert in enumerate(chain):
        where = _where(cert, position, total)

        def broken(rule: str, what: str, where: str = where) -> NoReturn:
            raise CertificateError(f"{where}: {rule}: {what} (C2PA certificate profile, "
                                   "C2PA 2.1 section 14.5.1)", source=source)

        who = "the signing certificate" if position == 0 else f"{where}"
        if cert.not_valid_after_utc < when:
            raise CertificateError(
                f"{who} expired on {cert.not_valid_after_utc.isoformat()}"
                + (f" ({where})" if position == 0 else ""), source=source)
        if cert.not_valid_before_utc > when:
            raise CertificateError(
                f"{who} is not valid before {cert.not_valid_before_utc.isoformat()}"
                + (f" ({where})" if position == 0 else ""), source=source)
        if cert.version != x509.Version.v3:
            broken("version", f"X.509 {cert.version.name}; C2PA needs v3")
        alg = cert.signature_algorithm_oid.dotted_string
        if alg not in _SIGNATURE_ALGORITHMS:
            name = getattr(cert.signature_algorithm_oid, "_name", alg)
            broken("signature algorithm", f"{name} ({alg}); C2PA allows "
                   f"{', '.join(sorted(set(_SIGNATURE_ALGORITHMS.values())))}")
        if position + 1 < total:
            _check_issued_by(cert, chain[position + 1], where, _where(chain[position + 1],
                                                                      position + 1, total), source)
        if position > 0:
            continue
        basic = _ext(cert, x509.BasicConstraints)
        if basic is not None and basic.ca:
            raise CertificateError(
                f"the first certificate is a CA certificate ({where}); C2PA signs with a leaf "
                "(end-entity) certificate issued by the CA: basic constraints cA must be false",
                source=source)
        usage = _ext(cert, x509.KeyUsage)
        if usage is None:
            broken("key usage", "no key usage extension; the signer needs one with "
                   "digitalSignature")
        if not usage.digital_signature:
            raise CertificateError(
                f"the signing certificate lacks the digitalSignature key usage ({where})",
                source=source)
        if usage.key_cert_sign:
            broken("key usage", "keyCertSign on an end-entity certificate")
        if total == 1 and cert.issuer == cert.subject:
            raise CertificateError(
                "a lone self-signed certificate: C2PA needs a certificate issued by a CA "
                "(the chain: signer, then its CA); `tracemark certs init` makes a test pair",
                source=source)
        eku = _ext(cert, x509.ExtendedKeyUsage)
        wanted = " or ".join(f"{n} ({o})" for o, n in SIGNER_EKUS.items())
        if eku is None:
            broken("extended key usage", f"none; the signer needs {wanted}")
        oids = [u.dotted_string for u in eku]
        found = ", ".join(_EKU_NAMES.get(o, o) for o in oids) or "empty"
        if _OID_ANY_EKU in oids:
            broken("extended key usage", "anyExtendedKeyUsage is not allowed")
        if _OID_TIME_STAMPING in oids or _OID_OCSP_SIGNING in oids:
            broken("extended key usage", f"{found}: timeStamping and OCSPSigning are for time "
                   f"stamp and OCSP responders, not claim signers; the signer needs {wanted}")
        if not any(o in SIGNER_EKUS for o in oids):
            spec_only = [n for o, n in _SPEC_ONLY_EKUS.items() if o in oids]
            extra = (f" ({', '.join(spec_only)} is allowed by the C2PA specification but "
                     "c2pa-python's validator reports it as signingCredential.invalid)"
                     if spec_only else "")
            broken("extended key usage", f"{found}; the signer needs {wanted}{extra}")
        if _ext(cert, x509.AuthorityKeyIdentifier) is None:
            broken("authority key identifier", "missing; c2pa refuses a signer without one")
        _check_key(cert, broken)


def _check_issued_by(cert: Any, issuer: Any, where: str, issuer_where: str,
                     source: str | None) -> None:
    """Each certificate of a chain must be issued, and signed, by the next one (RFC 5280
    section 6.1: name chaining and signature); a chain out of order, or a certificate that
    names a CA it was not signed by, is refused here rather than reported ``untrusted``
    after the work."""
    if cert.issuer != issuer.subject:
        raise CertificateError(
            f"{where} names issuer {cert.issuer.rfc4514_string()!r}, but the next "
            f"certificate in the chain is {issuer_where}: give the chain leaf first, each "
            "certificate followed by its issuer (RFC 5280 section 6.1)", source=source)
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError) as exc:
        why = str(exc) or "the signature does not verify"
        raise CertificateError(
            f"{where} is not signed by the next certificate in the chain ({issuer_where}): "
            f"{why} (RFC 5280 section 6.1)", source=source) from None


def load_signing_credentials(
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str],
    *,
    now: dt.datetime | None = None,
) -> SigningCredentials:
    """Read and check a signing chain (PEM, leaf first) and its private key (PEM, unencrypted).

    Raises :class:`~tracemark.errors.CertificateError` for a missing, empty or unreadable
    file; no certificate; a key that is encrypted, unreadable, of an unsupported type, or not
    the leaf's; and a chain that breaks the C2PA certificate profile at ``now`` (default the
    current time): see :func:`check_certificate_profile`.
    """
    _crypto()
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
    check_certificate_profile(chain, now=now, source=cert_src)
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


def load_signing_certificate(
    cert: str | os.PathLike[str],
    *,
    alg: str | None = None,
    now: dt.datetime | None = None,
) -> SigningCredentials:
    """Read and check a signing chain (PEM, leaf first) whose private key stays elsewhere
    (an external signer: a KMS, an HSM, a command; see :mod:`tracemark.credentials.signers`).

    ``alg``: the C2PA signing algorithm (:data:`SIGNING_ALGS`), which must fit the leaf's
    public key (EC P-256 -> es256, P-384 -> es384, P-521 -> es512, RSA -> ps256/ps384/ps512,
    Ed25519 -> ed25519); None takes the key's default (the first of those). The returned
    credentials have an empty ``key_pem``: signing with them needs a signer
    (``SignOptions.signer``).

    Raises :class:`~tracemark.errors.CertificateError` (file, chain, profile: as
    :func:`load_signing_credentials`; an ``alg`` the key cannot verify)."""
    _crypto()
    from cryptography.hazmat.primitives import serialization

    cert_src = os.fspath(cert)
    chain = _parse_chain(_read(cert, "certificate chain"), cert_src)
    leaf = chain[0]
    fits = _algs_for_public(leaf.public_key(), cert_src)
    if alg is not None:
        alg = str(alg).strip().lower()
        if alg not in SIGNING_ALGS:
            raise CertificateError(f"unknown signing algorithm {alg!r}; C2PA's are "
                                   f"{', '.join(SIGNING_ALGS)}", source=cert_src)
        if alg not in fits:
            raise CertificateError(f"the signer's key cannot verify {alg}: its key takes "
                                   f"{', '.join(fits)}", source=cert_src)
    check_certificate_profile(chain, now=now, source=cert_src)
    subject = leaf.subject.rfc4514_string()
    return SigningCredentials(
        chain_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain).decode(),
        key_pem="", alg=alg or fits[0], subject=subject,
        issuer=leaf.issuer.rfc4514_string(), not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc, development=DEV_MARKER in subject)


def load_trust_anchors(path: str | os.PathLike[str]) -> str:
    """The PEM text of the trust anchors in ``path`` (one or more CA certificates)."""
    from cryptography.hazmat.primitives import serialization

    _crypto()
    certs = _parse_chain(_read(path, "trust anchor file"), os.fspath(path))
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs).decode()


def load_allowed_list(path: str | os.PathLike[str]) -> str:
    """The allowed list in ``path`` (c2pa's ``allowed_list``: end-entity certificates trusted
    as they are, whatever their CA): PEM certificates, or base64 SHA-256 hashes of their DER
    encoding, one a line (``#`` comments allowed). Raises
    :class:`~tracemark.errors.CertificateError` for a missing, empty or unreadable file,
    and for lines that are neither (c2pa would ignore them silently)."""
    import base64
    import binascii

    data = _read(path, "allowed list")
    if b"-----BEGIN CERTIFICATE-----" in data:
        from cryptography.hazmat.primitives import serialization

        _crypto()
        certs = _parse_chain(data, os.fspath(path))
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs).decode()
    lines = [ln.strip() for ln in data.decode("utf-8", errors="replace").splitlines()]
    hashes = [ln for ln in lines if ln and not ln.startswith("#")]
    for n, ln in enumerate(hashes, 1):
        try:
            ok = len(base64.b64decode(ln, validate=True)) == 32
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            raise CertificateError(f"entry {n} is neither a PEM certificate nor the base64 "
                                   f"SHA-256 hash of one: {ln[:40]!r}", source=os.fspath(path))
    if not hashes:
        raise CertificateError("no certificate or hash in the allowed list",
                               source=os.fspath(path))
    return "\n".join(hashes) + "\n"


def load_trust_config(path: str | os.PathLike[str]) -> str:
    """The EKU configuration in ``path`` (c2pa's ``trust_config``): extended key usage OIDs in
    dotted form, one a line (``#`` comments allowed), e.g. ``1.3.6.1.5.5.7.3.36``
    (id-kp-documentSigning). Raises :class:`~tracemark.errors.CertificateError` for a
    missing, empty or unreadable file and a line that is not an OID."""
    import re

    text = _read(path, "trust configuration").decode("utf-8", errors="replace")
    oids = [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.strip().startswith("#")]
    for ln in oids:
        if not re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", ln):
            raise CertificateError(f"not an OID (dotted numbers): {ln[:40]!r}",
                                   source=os.fspath(path))
    if not oids:
        raise CertificateError("no OID in the trust configuration", source=os.fspath(path))
    return "\n".join(oids) + "\n"

"""Content credentials that survive stripping: C2PA manifests bound to a watermark and a
fingerprint.

``sign_image`` watermarks an image with the identifier of its manifest, signs a C2PA
manifest (c2pa-python) naming both soft bindings, and stores the manifest and the image's
fingerprint in a :class:`CredentialStore`. ``verify_image`` validates an embedded manifest,
or recovers the stored one through the watermark, then the fingerprint. Needs the ``c2pa``
extra (``pip install 'tracemark[c2pa]'``). See ``docs/credentials.md``.
"""

from tracemark.credentials.certs import (
    DEV_MARKER,
    DevCA,
    SigningCredentials,
    check_certificate_profile,
    init_dev_ca,
    load_allowed_list,
    load_signing_certificate,
    load_signing_credentials,
    load_trust_anchors,
    load_trust_config,
)
from tracemark.credentials.definition import ManifestDefinition, load_definition, parse_definition
from tracemark.credentials.sign import SignOptions, SignResult, sign_image, sign_many
from tracemark.credentials.signers import CommandSigner
from tracemark.credentials.store import CredentialStore, ManifestRecord
from tracemark.credentials.verify import (
    Located,
    VerifyOptions,
    VerifyResult,
    locate,
    verify_image,
    verify_many,
)

__all__ = [
    "DEV_MARKER",
    "DevCA",
    "SigningCredentials",
    "check_certificate_profile",
    "init_dev_ca",
    "load_allowed_list",
    "load_signing_certificate",
    "load_signing_credentials",
    "load_trust_anchors",
    "load_trust_config",
    "CommandSigner",
    "ManifestDefinition",
    "load_definition",
    "parse_definition",
    "CredentialStore",
    "ManifestRecord",
    "SignOptions",
    "SignResult",
    "sign_image",
    "sign_many",
    "Located",
    "locate",
    "VerifyOptions",
    "VerifyResult",
    "verify_image",
    "verify_many",
]

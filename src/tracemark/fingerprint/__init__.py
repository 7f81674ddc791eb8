"""Fingerprints: perceptual hashes and descriptors behind one interface and a registry.

``get_fingerprinter("pdq").compute(image)`` returns a :class:`Fingerprint`; see
:mod:`tracemark.fingerprint.base` for the vector conventions and distances. Built-in
fingerprinters: ``pdq`` (:mod:`~tracemark.fingerprint.pdq`), ``ahash``, ``dhash``,
``phash``, ``whash`` (:mod:`~tracemark.fingerprint.hashes`), ``vlad`` (a global
descriptor, :mod:`~tracemark.fingerprint.global_desc`); local features and geometric
verification in :mod:`~tracemark.fingerprint.local`.
"""

from __future__ import annotations

# Importing the modules registers their fingerprinters.
from tracemark.fingerprint import global_desc, hashes, local, pdq  # noqa: E402  (registers "vlad")
from tracemark.fingerprint.base import (
    Fingerprint,
    Fingerprinter,
    get_fingerprinter,
    hamming_distance,
    list_fingerprinters,
    register_fingerprinter,
)
from tracemark.fingerprint.hashes import ahash, dhash, phash, whash
from tracemark.fingerprint.local import LocalFeatures, Verification, extract, verify  # noqa: E402
from tracemark.fingerprint.pdq import (
    DIHEDRAL_NAMES,
    pdq_dihedral,
    pdq_hash,
    pdq_match_distance,
)

__all__ = [
    "DIHEDRAL_NAMES",
    "Fingerprint",
    "LocalFeatures",
    "Verification",
    "extract",
    "global_desc",
    "local",
    "verify",
    "Fingerprinter",
    "ahash",
    "dhash",
    "get_fingerprinter",
    "hamming_distance",
    "hashes",
    "list_fingerprinters",
    "pdq",
    "pdq_dihedral",
    "pdq_hash",
    "pdq_match_distance",
    "phash",
    "register_fingerprinter",
    "whash",
]

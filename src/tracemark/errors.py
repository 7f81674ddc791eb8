"""The one exception hierarchy of tracemark.

Every error tracemark raises on purpose derives from :class:`TracemarkError`.
Subclasses say what was expected and what was found; callers can catch the
base class, or a precise subclass. Each error carries an optional ``source``
(a path, URI or a short description of the input) so that batch jobs can say
which item failed.
"""

from __future__ import annotations

__all__ = [
    "TracemarkError",
    "ImageError",
    "EmptyImageError",
    "CorruptImageError",
    "UnsupportedImageError",
    "ImageTooLargeError",
    "ImageTooSmallError",
    "ImageSourceError",
    "AttackError",
    "UnknownAttackError",
    "AttackParameterError",
    "SuiteError",
    "UnknownSuiteError",
    "MetricError",
    "WatermarkError",
    "PayloadError",
    "WatermarkEmbedError",
    "AlreadyMarkedError",
    "WatermarkKeyError",
    "UnknownMethodError",
    "FingerprintError",
    "IndexStoreError",
    "VectorStoreUnavailableError",
    "IndexExistsError",
    "IndexNotFoundError",
    "IndexFormatError",
    "IndexReadOnlyError",
    "IndexLockedError",
    "IndexClosedError",
    "IndexInputError",
    "UnknownVectorSetError",
    "ReferenceNotFoundError",
    "CredentialError",
    "CertificateError",
    "SigningError",
    "UnsupportedFormatError",
    "ManifestStoreError",
    "ManifestNotFoundError",
    "MissingExtraError",
    "BatchTaskError",
    "GuardError",
    "GuardInputError",
    "GuardModelError",
    "UnknownConceptError",
    "ConceptExistsError",
    "ConfigError",
    "ClosedError",
]


class TracemarkError(Exception):
    """Base class of every error raised by tracemark."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.message = message
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)

    def to_dict(self) -> dict[str, str | None]:
        """A JSON-serialisable description (for JSON Lines and HTTP errors)."""
        return {"type": type(self).__name__, "message": self.message, "source": self.source}


class ConfigError(TracemarkError, ValueError):
    """A configuration value is invalid."""


class ClosedError(TracemarkError, ValueError):
    """An object (index, store, key store) was used after it was closed."""


# --- images -----------------------------------------------------------------


class ImageError(TracemarkError):
    """An input could not be used as an image."""


class ImageSourceError(ImageError):
    """The source itself is unusable: missing file, a directory, wrong Python type."""


class EmptyImageError(ImageError):
    """The input holds no bytes, or an array with no pixels."""


class CorruptImageError(ImageError):
    """The bytes are not a decodable image: truncated, corrupt, or not an image at all."""


class UnsupportedImageError(ImageError):
    """The image is decodable in principle but its format, mode, dtype or shape is not supported."""


class ImageTooLargeError(ImageError):
    """The image exceeds the configured pixel limit (decompression-bomb protection)."""


class ImageTooSmallError(ImageError):
    """The image is below the minimum size an operation needs."""


# --- attacks ------------------------------------------------------------------


class AttackError(TracemarkError):
    """An attack could not be applied."""


class UnknownAttackError(AttackError, KeyError):
    """No attack is registered under that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return Exception.__str__(self)


class AttackParameterError(AttackError, ValueError):
    """An attack parameter is missing, unknown, of the wrong type or out of range."""


class SuiteError(TracemarkError, ValueError):
    """A suite definition is invalid."""


class UnknownSuiteError(SuiteError, KeyError):
    """No suite is known under that name."""

    def __str__(self) -> str:
        return Exception.__str__(self)


# --- metrics ------------------------------------------------------------------


class MetricError(TracemarkError, ValueError):
    """Inputs to a metric are inconsistent (shapes, lengths, empty, no positives...)."""


# --- watermarks -----------------------------------------------------------------


class WatermarkError(TracemarkError):
    """A watermark could not be embedded or detected."""


class WatermarkEmbedError(WatermarkError):
    """The mark could not be made to read back from this image (after every adaptation the
    method tries): the message names the reason (flat or saturated content, content that
    imitates the mark, too little room)."""


class AlreadyMarkedError(WatermarkEmbedError):
    """The image already carries a mark of this method and key with another payload (or
    one that no longer reads): a second mark on top would garble both
    (:func:`tracemark.watermark.embed_once`). HTTP 409."""


class PayloadError(WatermarkError, ValueError):
    """A payload is too long, of the wrong type, or does not fit the method's capacity."""


class WatermarkKeyError(WatermarkError, TypeError):
    """A watermark key is missing, of the wrong type, or too short."""


class UnknownMethodError(WatermarkError, KeyError):
    """No watermark method (or fingerprint) is registered under that name."""

    def __str__(self) -> str:
        return Exception.__str__(self)


# --- fingerprints -------------------------------------------------------------------


class FingerprintError(TracemarkError, ValueError):
    """A fingerprint could not be computed or compared (wrong kind, shape, featureless...)."""


# --- the reference index ------------------------------------------------------------


class IndexStoreError(TracemarkError):
    """Base class of the errors raised by :mod:`tracemark.index`."""


class VectorStoreUnavailableError(IndexStoreError, ConnectionError):
    """The index's vector store (a Milvus server) cannot be reached: refused, timed out or
    gone; the ``source`` is the store's URL without credentials. A write that raised it may
    have reached the store in part (the index repairs the store from its database when it
    next opens). HTTP 503."""


class IndexExistsError(IndexStoreError, FileExistsError):
    """``Index.create`` was given a path that exists and is not an empty directory."""


class IndexNotFoundError(IndexStoreError, FileNotFoundError):
    """``Index.open`` was given a path that does not exist."""


class IndexFormatError(IndexStoreError, ValueError):
    """The path is not a tracemark index, is corrupt, or has an unsupported format version."""


class IndexReadOnlyError(IndexStoreError, PermissionError):
    """A write was attempted on an index opened with ``read_only=True``."""


class IndexLockedError(IndexStoreError, BlockingIOError):
    """Another writer holds the index open for writing."""


class IndexClosedError(IndexStoreError, ClosedError):
    """An operation was attempted on a closed index."""


class IndexInputError(IndexStoreError, ValueError):
    """A vector, metadata field, blob or search argument has the wrong type, dtype or shape."""


class UnknownVectorSetError(IndexInputError, KeyError):
    """No vector set of that name exists in the index."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return Exception.__str__(self)


class ReferenceNotFoundError(IndexStoreError, KeyError):
    """No reference with that id exists in the index."""

    def __str__(self) -> str:
        return Exception.__str__(self)


# --- content credentials -------------------------------------------------------------


class CredentialError(TracemarkError):
    """Base class of the errors raised by :mod:`tracemark.credentials`."""


class CertificateError(CredentialError, ValueError):
    """A certificate or key is missing, unreadable, expired, not yet valid, mismatched, or
    unfit for C2PA signing (a CA certificate, no digitalSignature key usage...)."""


class SigningError(CredentialError):
    """The C2PA library refused to sign (its message is kept)."""


class UnsupportedFormatError(CredentialError, ValueError):
    """The output format cannot carry a C2PA manifest here (JPEG, PNG and WebP can)."""


class ManifestStoreError(CredentialError):
    """The manifest store is missing, corrupt, of an unsupported version, or locked."""


class ManifestNotFoundError(ManifestStoreError, KeyError):
    """No manifest with that identifier is in the store."""

    def __str__(self) -> str:
        return Exception.__str__(self)


# --- dependencies ---------------------------------------------------------------


class MissingExtraError(TracemarkError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


# --- batch jobs ------------------------------------------------------------------


class BatchTaskError(TracemarkError):
    """One item's task of a batch job (:mod:`tracemark.batch`) failed for a reason other
    than a tracemark error: its worker died (killed for memory, crashed) after the
    engine's retries, or it raised an unexpected exception. The message names the
    engine's error; the batch carries on with the other items."""


class GuardError(TracemarkError):
    """Base of the generation guard's errors (:mod:`tracemark.guard`)."""


class GuardInputError(GuardError, ValueError):
    """A prompt, a concept or a guard request is malformed: empty, too long, the wrong
    type, not UTF-8, control characters, an unknown field or kind."""


class GuardModelError(GuardError):
    """The guard's sentence-embedding model cannot be used: a model or tokenizer file of
    the ``guard`` extra is missing, unreadable or not the pinned file (its SHA-256 differs),
    or the runtime rejects it. An installation problem, not the request's."""


class UnknownConceptError(GuardError, KeyError):
    """No protected concept of that id is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class ConceptExistsError(GuardError):
    """A concept of that id is registered already (add it with ``replace``, or remove it
    first). HTTP 409."""

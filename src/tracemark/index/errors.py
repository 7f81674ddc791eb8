"""Typed errors of the reference index (defined in :mod:`tracemark.errors`, re-exported here)."""

from tracemark.errors import (
    IndexClosedError,
    IndexExistsError,
    IndexFormatError,
    IndexInputError,
    IndexLockedError,
    IndexNotFoundError,
    IndexReadOnlyError,
    IndexStoreError,
    ReferenceNotFoundError,
    UnknownVectorSetError,
    VectorStoreUnavailableError,
)

__all__ = [
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
]

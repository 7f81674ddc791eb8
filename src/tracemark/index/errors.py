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
)

__all__ = [
    "IndexStoreError",
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

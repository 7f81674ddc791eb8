"""The persistent reference index: named vector sets (FAISS) plus metadata and blobs (SQLite).

>>> from tracemark.index import Index, VectorSpec
>>> with Index.create("refs.idx", vector_specs={"pdq": VectorSpec("binary", 256)}) as index:
...     result = index.add(content_hash=sha256, vectors={"pdq": pdq_rows}, source="a.jpg")
>>> with Index.open("refs.idx", read_only=True) as index:
...     hits = index.search("pdq", query_rows, k=10)

SQLite holds the truth (metadata, raw vectors, blobs); the FAISS files are search caches,
checked and rebuilt on open. The on-disk format is in ``docs/index-format.md``.
"""

from tracemark.index._schema import FORMAT_VERSION
from tracemark.index.errors import (
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
from tracemark.index.model import (
    MAX_ROWS_PER_REFERENCE,
    AddResult,
    Hit,
    NewReference,
    Reference,
    VectorSpec,
)
from tracemark.index.store import Index

__all__ = [
    "FORMAT_VERSION",
    "MAX_ROWS_PER_REFERENCE",
    "AddResult",
    "Hit",
    "Index",
    "IndexClosedError",
    "IndexExistsError",
    "IndexFormatError",
    "IndexInputError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexReadOnlyError",
    "IndexStoreError",
    "NewReference",
    "Reference",
    "ReferenceNotFoundError",
    "UnknownVectorSetError",
    "VectorSpec",
]

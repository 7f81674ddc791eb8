"""The active manifest of a C2PA manifest store, cut out of the store's JUMBF boxes.

A C2PA manifest store (C2PA 2.1, section 11.1 "Use of JUMBF") is one JUMBF superbox
(ISO/IEC 19566-5: ``jumb`` with a ``jumd`` description box of type ``c2pa``) holding one
superbox per manifest (``jumd`` type ``c2ma``, or ``c2um`` for an update manifest, labelled
with the manifest's URN); the *active* manifest is the last one. An ingredient's manifest is
another box of the same store, reached from the active manifest's assertions through a
hashed URI ``self#jumbf=/c2pa/<label>/...`` whose hash covers that box's bytes.

:func:`active_manifest_store` answers the Soft Binding Resolution API's
``returnActiveManifest=true``: a manifest store with the active manifest and the manifests it
references, directly or through them (every manifest a validator follows from it), in the
store's order, each box copied byte for byte -- so every signature and hashed URI in them
still validates -- and none of the store's other manifests. c2pa-python (0.38) reads and
writes whole stores only, so the boxes are cut here; nothing in them is re-encoded.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from tracemark.errors import ManifestStoreError

__all__ = ["ManifestBox", "active_manifest_store", "manifest_boxes"]

C2PA_STORE_TYPE = bytes.fromhex("6332706100110010800000aa00389b71")
"""The ``jumd`` type UUID of a manifest store (``c2pa`` + the ISO 19566-5 suffix)."""
MANIFEST_TYPES = {
    bytes.fromhex("63326d6100110010800000aa00389b71"),  # c2ma: a standard manifest
    bytes.fromhex("6332756d00110010800000aa00389b71"),  # c2um: an update manifest
}
"""The ``jumd`` type UUIDs of a manifest (C2PA 2.1, Table 4)."""
_REFERENCE = re.compile(rb"jumbf=/?c2pa/([\x21-\x2e\x30-\x7e]{1,255})")
"""A hashed URI naming a manifest of the store (the label ends at the next ``/``)."""


@dataclass(frozen=True)
class ManifestBox:
    """One manifest of a store: its ``label`` (URN) and its whole JUMBF superbox ``data``."""

    label: str
    data: bytes


def _boxes(data: bytes, start: int, end: int, what: str) -> list[tuple[bytes, int, int, int]]:
    """``(type, box start, payload start, box end)`` of the boxes in ``data[start:end]``
    (ISO/IEC 14496-12 box headers: LBox 0 = to the end, 1 = a 64-bit XLBox follows)."""
    out = []
    pos = start
    while pos < end:
        if end - pos < 8:
            raise ManifestStoreError(f"{what}: a truncated box header at byte {pos}")
        size, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1:
            if end - pos < 16:
                raise ManifestStoreError(f"{what}: a truncated box header at byte {pos}")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise ManifestStoreError(f"{what}: a box at byte {pos} overruns its container "
                                     f"({size} bytes declared, {end - pos} left)")
        out.append((kind, pos, pos + head, pos + size))
        pos += size
    return out


def _description(data: bytes, start: int, end: int, what: str) -> tuple[bytes, str | None, int]:
    """The first child of a superbox, its ``jumd``: ``(type UUID, label, its end)``."""
    children = _boxes(data, start, end, what)
    if not children or children[0][0] != b"jumd":
        raise ManifestStoreError(f"{what}: a JUMBF superbox without its description box")
    _kind, _s, p, e = children[0]
    if e - p < 17:
        raise ManifestStoreError(f"{what}: a truncated JUMBF description box")
    uuid, toggles = data[p:p + 16], data[p + 16]
    label = None
    if toggles & 0x02:  # a label is present: UTF-8, NUL-terminated
        nul = data.find(b"\x00", p + 17, e)
        if nul < 0:
            raise ManifestStoreError(f"{what}: an unterminated JUMBF label")
        try:
            label = data[p + 17:nul].decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestStoreError(f"{what}: a JUMBF label that is not UTF-8") from None
    return uuid, label, e


def _store(data: bytes) -> tuple[int, int, list[ManifestBox]]:
    """The store's description box span (start of the store box, end of its ``jumd``) and
    its manifests in order."""
    what = "manifest store"
    top = _boxes(data, 0, len(data), what)
    if len(top) != 1 or top[0][0] != b"jumb":
        raise ManifestStoreError(f"{what}: not one JUMBF superbox (found "
                                 f"{[k.decode('latin-1') for k, *_ in top][:4]})")
    _k, start, payload, end = top[0]
    uuid, _label, desc_end = _description(data, payload, end, what)
    if uuid != C2PA_STORE_TYPE:
        raise ManifestStoreError(f"{what}: its JUMBF type is not c2pa ({uuid.hex()})")
    manifests = []
    for kind, s, p, e in _boxes(data, desc_end, end, what):
        if kind != b"jumb":
            continue  # e.g. a padding box: not a manifest
        m_uuid, label, _ = _description(data, p, e, what)
        if m_uuid in MANIFEST_TYPES:
            if not label:
                raise ManifestStoreError(f"{what}: a manifest box without a label")
            manifests.append(ManifestBox(label, data[s:e]))
    return start, desc_end, manifests


def manifest_boxes(store: bytes) -> list[ManifestBox]:
    """The manifests of a C2PA manifest store (JUMBF bytes), in the store's order (the
    active one last). Raises :class:`~tracemark.errors.ManifestStoreError` for bytes that
    are not one well-formed ``c2pa`` JUMBF superbox."""
    if not isinstance(store, bytes | bytearray | memoryview):
        raise ManifestStoreError(f"a manifest store is bytes, not {type(store).__name__}")
    return _store(bytes(store))[2]


def active_manifest_store(store: bytes) -> bytes:
    """A manifest store holding only the active manifest of ``store`` and the manifests it
    references (transitively: the ingredients' manifests and theirs), in the store's
    order, every box byte for byte.

    References are the hashed URIs ``self#jumbf=c2pa/<label>/...`` (or ``/c2pa/...``) in a
    manifest's bytes that name another manifest of the store. A store whose manifests are
    all reached from the active one comes back with the same manifests (and, when the
    store box has no other content, the same bytes). Raises
    :class:`~tracemark.errors.ManifestStoreError` for a malformed store or one without a
    manifest."""
    data = bytes(store) if isinstance(store, bytes | bytearray | memoryview) else store
    if not isinstance(data, bytes):
        raise ManifestStoreError(f"a manifest store is bytes, not {type(store).__name__}")
    start, desc_end, manifests = _store(data)
    if not manifests:
        raise ManifestStoreError("manifest store: it holds no manifest")
    by_label = {m.label: m for m in manifests}
    keep = {manifests[-1].label}
    todo = [manifests[-1]]
    while todo:
        box = todo.pop()
        for ref in _REFERENCE.findall(box.data):
            label = ref.decode("ascii")
            if label in by_label and label not in keep:
                keep.add(label)
                todo.append(by_label[label])
    body = data[start + 8:desc_end] if struct.unpack_from(">I", data, start)[0] != 1 \
        else data[start + 16:desc_end]
    payload = body + b"".join(m.data for m in manifests if m.label in keep)
    size = 8 + len(payload)
    if size < 2**32:
        return struct.pack(">I4s", size, b"jumb") + payload
    return struct.pack(">I4sQ", 1, b"jumb", size + 8) + payload

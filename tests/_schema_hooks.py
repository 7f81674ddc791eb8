"""schemathesis hooks that let generated requests reach the service's real flows.

The schema can only say that an image part is a non-empty ``format: binary`` file, so
schemathesis' own generator sends bytes no image decoder reads (or 1-pixel samples, too small
for a fingerprint): register, search, sign, verify, calibrate and byContent were only ever
refused (415/422), and the stateful phase followed register -> remove and sign -> manifest
with ids that do not exist. These hooks, used by ``tests/test_service_schema.py`` (imported)
and ``benchmarks/schema_conformance.py`` (``SCHEMATHESIS_HOOKS=<this file>``), change two
things and nothing else:

- ``format: binary`` values: about three in four are real encoded images, drawn by
  hypothesis: JPEG / PNG / WebP, 128..512 px a side (large enough for the watermark to carry
  its 64-bit mark and for the fingerprints), either a synthetic photo-like picture
  (``tracemark.bench.attack_speed.synthetic_image`` of a drawn seed) or, when the shared
  corpus is beside the checkout, a drawn corpus photo; the rest stay schemathesis' own (its
  minimal file samples and arbitrary bytes). Sizes stay under the 256 KiB upload limit the
  runs configure (a 512 px PNG of a photo would not: PNG is drawn at most 256 px).
- the ``{name}`` path parameter of positive-mode cases: one in two names a collection that
  exists (``COLLECTION``, created by the runs); the rest keep the generated name (404). A
  negative case keeps its name (its mutation may be the name).

Nothing else is touched: every check still judges the answers against the schema.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import schemathesis
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

COLLECTION = "fuzz"
"""The collection both runs create before schemathesis starts (a write key reaches it)."""

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus" / "photo"
"""The shared corpus' photos (tests/conftest.py's ``CORPUS``); used when present."""

MIN_SIDE, MAX_SIDE = 128, 512
"""Pixel range of each side of a generated image."""

MAX_PNG_SIDE = 256
"""PNG is lossless: a 512 px photo is ~600 KiB, over the runs' 256 KiB upload limit."""


@functools.lru_cache(maxsize=8)
def _corpus_photo(index: int) -> np.ndarray:
    from tracemark.imageio import load_image

    files = sorted(CORPUS.glob("*.jpg"))[:8]
    img = load_image(files[index % len(files)])
    f = max(1, min(img.shape[:2]) // MAX_SIDE)  # subsample: decoding is the cost, not this
    return np.ascontiguousarray(img[::f, ::f])


@functools.lru_cache(maxsize=32)
def _synthetic(seed: int) -> np.ndarray:
    from tracemark.bench.attack_speed import synthetic_image

    return synthetic_image(MAX_SIDE, seed=seed)


def _encode(source: tuple[str, int], width: int, height: int, fmt: str, quality: int) -> bytes:
    import cv2

    from tracemark.imageio import encode_image

    kind, index = source
    base = _corpus_photo(index) if kind == "corpus" else _synthetic(index)
    if fmt == "PNG":
        width, height = min(width, MAX_PNG_SIDE), min(height, MAX_PNG_SIDE)
    img = cv2.resize(base, (width, height), interpolation=cv2.INTER_AREA)
    return encode_image(img, fmt, quality=None if fmt == "PNG" else quality)


def image_files() -> st.SearchStrategy[bytes]:
    """Encoded RGB images: JPEG/PNG/WebP bytes, each side 128..512 px (PNG <= 256 px)."""
    sources = st.tuples(st.just("synthetic"), st.integers(0, 31))
    if CORPUS.is_dir() and any(CORPUS.glob("*.jpg")):
        sources = sources | st.tuples(st.just("corpus"), st.integers(0, 7))
    return st.builds(_encode, sources, st.integers(MIN_SIDE, MAX_SIDE),
                     st.integers(MIN_SIDE, MAX_SIDE), st.sampled_from(["JPEG", "PNG", "WEBP"]),
                     st.integers(60, 95))


def binary_values() -> st.SearchStrategy[bytes]:
    """The ``format: binary`` strategy: three in four real images, the rest arbitrary."""
    from schemathesis.core.file_samples import FILE_SAMPLES

    arbitrary = st.sampled_from(list(FILE_SAMPLES.values())) | st.binary(min_size=1)
    return st.sampled_from([True, True, True, False]).flatmap(
        lambda real: image_files() if real else arbitrary)


schemathesis.openapi.format("binary", binary_values())


@schemathesis.hook
def flatmap_case(context: Any, case: Any) -> st.SearchStrategy[Any]:
    """Positive cases with a ``{name}`` path parameter name ``COLLECTION`` one time in two."""
    params = case.path_parameters
    meta = case.meta
    if (not params or "name" not in params or meta is None
            or meta.generation.mode != GenerationMode.POSITIVE):
        return st.just(case)

    def rename(existing: bool) -> Any:
        if existing:
            case.path_parameters = {**params, "name": COLLECTION}
        return case

    return st.booleans().map(rename)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    """The stateful phase may delete ``COLLECTION`` (its name is captured from answers):
    make it again, so that the rest of the run still reaches a collection that exists."""
    if (case.method.upper() == "DELETE" and case.path == "/v1/collections/{name}"
            and (case.path_parameters or {}).get("name") == COLLECTION
            and 200 <= response.status_code < 300):
        create = case.operation.schema["/v1/collections"]["POST"]
        auth = {k: v for k, v in response.request.headers.items()
                if k.lower() in ("authorization", "x-api-key")}
        create.Case(body={"name": COLLECTION}, media_type="application/json").call(headers=auth)


def _form_schema(case: Any) -> dict[str, Any] | None:
    """The multipart body schema of ``case``'s operation (its ``$ref`` resolved), or None."""
    raw = case.operation.definition.raw.get("requestBody", {}).get("content", {})
    schema = raw.get("multipart/form-data", {}).get("schema")
    if isinstance(schema, dict) and "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = case.operation.schema.raw_schema["components"]["schemas"].get(name)
    return schema if isinstance(schema, dict) else None


def _valid_on_the_wire(case: Any) -> bool:
    """Whether the multipart form ``case`` sends is valid as the server receives it: a form
    field is text, so a "negative" value that is a number, boolean or object where the schema
    wants a string reaches the server as its JSON spelling (``0``, ``true``, ``{}``) -- a
    valid string. True when every sent field is valid as that text (or as the JSON it spells,
    for typed fields) and the required ones are there; a list is the field repeated, so an
    empty one is the field absent and one of one value is that value."""
    import json

    import jsonschema_rs
    from schemathesis.transport.serialization import Binary

    schema, body = _form_schema(case), case.body
    if (schema is None or not isinstance(body, dict)
            or not str(case.media_type or "").startswith("multipart/form-data")):
        return False
    props = schema.get("properties", {})
    if not set(schema.get("required", [])) <= set(body):
        return False
    for key, value in body.items():
        if isinstance(value, list):  # sent as the field repeated: [] is no field, [x] is x
            if len(value) > 1:
                return False  # (the service refuses a repeated field: 422)
            if not value:
                if key in schema.get("required", []):
                    return False
                continue
            value = value[0]
        if key not in props or isinstance(value, bytes | Binary):
            continue  # unknown fields are ignored by the server; files are not text
        text = value if isinstance(value, str) else json.dumps(value)
        validator = jsonschema_rs.validator_for(props[key])
        try:
            as_json = json.loads(text)
        except ValueError:
            as_json = text
        if not (validator.is_valid(text) or validator.is_valid(as_json)):
            return False
    return True


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Drop (schemathesis counts them as dropped) only ST201 "schema-violating request
    accepted" on a multipart form that is valid as the server receives it (see
    ``_valid_on_the_wire``): no server can tell the integer 0 from the text "0" in a form."""
    from schemathesis.core.failures import AcceptedNegativeData

    return not (isinstance(failure, AcceptedNegativeData) and _valid_on_the_wire(case))

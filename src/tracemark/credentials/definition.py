"""A user's manifest definition (c2patool's ``--manifest FILE.json``), checked and ready to
merge with the manifest tracemark signs.

The shape is c2patool's manifest definition (c2pa-rs ``ManifestDefinition``), the subset
that makes sense beside tracemark's own manifest::

    {"title": "Harbour at dawn",
     "claim_generator_info": [{"name": "my-app", "version": "2.1"}],
     "assertions": [{"label": "stds.schema-org.CreativeWork", "data": {...}},
                    {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.color_adjustments"}]}},
                    {"label": "com.example.review", "data": {"reviewed": true}}],
     "ingredients": [{"title": "logo.png", "relationship": "componentOf",
                      "file_path": "logo.png"}]}

Merge rules (decided here, documented in ``docs/credentials.md``):

* tracemark's own assertions are not overridden: a user assertion labelled
  ``org.tracemark.credential``, ``c2pa.soft-binding``, a hash, ingredient, thumbnail or
  signature label (:data:`RESERVED_LABELS`) is a :class:`~tracemark.errors.ConfigError`;
  so is ``stds.schema-org.CreativeWork`` together with ``SignOptions.author`` (checked by
  ``SignOptions``).
* a user's ``c2pa.actions`` (or ``c2pa.actions.v2``) are merged: each action is added after
  tracemark's ``c2pa.created``/``c2pa.opened`` and before ``c2pa.watermarked``; the user
  may not declare ``c2pa.created`` or ``c2pa.opened`` (``--create``/``--edit`` do).
* ingredients are ``componentOf`` or ``inputTo`` (the parent of an edit is the input
  itself); ``file_path`` is resolved against the JSON file's folder, read when the
  definition is loaded (so a missing file fails before anything is signed), and must be a
  format c2pa reads; without ``file_path`` the ingredient is named only (title, format).
* ``title`` is the manifest title unless ``SignOptions.title`` is given;
  ``claim_generator_info`` (one entry, an object or an array of one: a C2PA 2 claim names
  one generator) replaces tracemark's as the claim generator; tracemark stays named as
  the software agent of ``c2pa.watermarked`` and by its ``org.tracemark.credential``
  assertion.

Anything else (unknown keys, wrong types, invalid JSON) is a
:class:`~tracemark.errors.ConfigError` naming the JSON path of the fault.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracemark.errors import ConfigError, TracemarkError

__all__ = ["MAX_DEFINITION_BYTES", "RESERVED_LABELS", "Ingredient", "ManifestDefinition",
           "load_definition", "parse_definition"]

MAX_DEFINITION_BYTES = 1 << 20
"""Largest definition JSON read (1 MiB)."""
MAX_INGREDIENT_BYTES = 200 << 20
"""Largest ingredient file read (200 MiB)."""

RESERVED_LABELS = ("org.tracemark.credential", "c2pa.soft-binding", "c2pa.hash.data",
                   "c2pa.hash.boxes", "c2pa.hash.bmff", "c2pa.hash.collection.data",
                   "c2pa.ingredient", "c2pa.thumbnail", "c2pa.signature", "c2pa.claim")
"""Labels (and label prefixes, e.g. ``c2pa.hash.bmff.v2``, ``c2pa.ingredient.v3``) that
tracemark or c2pa writes itself: a user assertion may not use them."""
LABEL_PATTERN = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
"""An assertion label: dot-separated components of ASCII letters, digits, ``_`` and ``-``
(the characters of C2PA's labels, ``c2pa.actions.v2``, ``stds.schema-org.CreativeWork``).
c2pa-rs 0.91 refuses others deep in signing (``/``: "AssertionNotFound") or aborts the
whole process (a label starting with a multi-byte character: a Rust panic)."""
ASSERTION_KINDS = ("Cbor", "Json")
"""``kind`` values of an inline assertion (c2pa-rs ``ManifestAssertionKind``; ``Binary``
and ``Uri`` need a resource a definition does not carry)."""
MAX_DATA_DEPTH = 64
"""Deepest nesting of arrays/objects in an assertion's ``data``, an action or the claim
generator entry: c2pa-rs parses the whole manifest with serde_json's recursion limit (128
levels), measured to fail at 200."""
IDENTITY_LABEL = "cawg.identity"
"""CAWG identity assertions sign the claim's other assertions (CAWG identity assertion 1.1
section 5): one cannot be written ahead in a definition, and c2pa-rs 0.91 signs a
declared one into a manifest that no Reader can read back ("no readable manifest")."""
ACTIONS_LABELS = ("c2pa.actions", "c2pa.actions.v2")
FIRST_ACTIONS = ("c2pa.created", "c2pa.opened")
RELATIONSHIPS = ("componentOf", "inputTo")
_TOP_KEYS = {"title", "claim_generator_info", "assertions", "ingredients"}
_INGREDIENT_KEYS = {"title", "relationship", "file_path", "format", "description"}


@dataclass(frozen=True)
class Ingredient:
    """One ingredient of a definition."""

    title: str
    relationship: str
    """``componentOf`` or ``inputTo``."""
    format: str | None = None
    """Media type (``image/png``...); of the file when ``data`` is set."""
    data: bytes | None = field(default=None, repr=False)
    """The ingredient file's bytes (``file_path``), or None for a named-only ingredient."""
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        """c2pa's ingredient JSON (without the file)."""
        out: dict[str, Any] = {"title": self.title, "relationship": self.relationship}
        if self.format:
            out["format"] = self.format
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class ManifestDefinition:
    """A checked user definition (:func:`parse_definition`)."""

    title: str | None = None
    claim_generator_info: tuple[dict[str, Any], ...] = ()
    assertions: tuple[dict[str, Any], ...] = ()
    """``{"label": str, "data": JSON}`` entries, ``c2pa.actions`` excluded."""
    actions: tuple[dict[str, Any], ...] = ()
    """The actions of the user's ``c2pa.actions`` assertions, in order."""
    ingredients: tuple[Ingredient, ...] = ()


def _fail(where: str, what: str) -> ConfigError:
    return ConfigError(f"manifest definition {where}: {what}")


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"expected a non-empty string, found {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value),
                                                                         type(value).__name__)


def _reserved(label: str) -> bool:
    return any(label == r or label.startswith(r + ".") for r in RESERVED_LABELS)


CREATIVE_WORK = "stds.schema-org.CreativeWork"


def parse_definition(obj: Any, *,
                     base: str | os.PathLike[str] | None = None) -> ManifestDefinition:
    """Check a definition (the parsed JSON) and read its ingredient files.

    ``base``: the folder ``file_path`` is resolved against; None refuses ``file_path``
    (a definition sent to the service names no server files).
    Raises :class:`~tracemark.errors.ConfigError` (see the module docstring)."""
    if not isinstance(obj, dict):
        raise _fail("", f"expected a JSON object, found {_kind(obj)}")
    unknown = sorted(set(obj) - _TOP_KEYS)
    if unknown:
        raise _fail("", f"unknown keys {', '.join(unknown)} (known: "
                    f"{', '.join(sorted(_TOP_KEYS))})")
    title = None if obj.get("title") is None else _str(obj["title"], "title")
    cgi = obj.get("claim_generator_info", [])
    if isinstance(cgi, dict):
        cgi = [cgi]
    if not isinstance(cgi, list):
        raise _fail("claim_generator_info", f"expected an array, found {_kind(cgi)}")
    if len(cgi) > 1:
        raise _fail("claim_generator_info", f"{len(cgi)} entries: a C2PA 2 claim names one "
                    "claim generator")
    for i, info in enumerate(cgi):
        if not isinstance(info, dict):
            raise _fail(f"claim_generator_info[{i}]", f"expected an object, found {_kind(info)}")
        _str(info.get("name"), f"claim_generator_info[{i}].name")
        _check_value(info, f"claim_generator_info[{i}]")
        if "version" in info:
            _str(info["version"], f"claim_generator_info[{i}].version")
    assertions: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    raw = obj.get("assertions", [])
    if not isinstance(raw, list):
        raise _fail("assertions", f"expected an array, found {_kind(raw)}")
    for i, a in enumerate(raw):
        where = f"assertions[{i}]"
        if not isinstance(a, dict):
            raise _fail(where, f"expected an object, found {_kind(a)}")
        extra = sorted(set(a) - {"label", "data", "kind"})
        if extra:
            raise _fail(where, f"unknown keys {', '.join(extra)} (known: data, kind, label)")
        label = _str(a.get("label"), f"{where}.label")
        if not LABEL_PATTERN.fullmatch(label):
            raise _fail(f"{where}.label", f"{label!r}: a label is dot-separated components "
                        "of ASCII letters, digits, '_' and '-'")
        if "data" not in a:
            raise _fail(where, "has no data")
        _check_value(a["data"], f"{where}.data")
        if "kind" in a and a["kind"] not in ASSERTION_KINDS:
            raise _fail(f"{where}.kind", f"expected {' or '.join(ASSERTION_KINDS)}, found "
                        f"{a['kind']!r}")
        if label == IDENTITY_LABEL or label.startswith(IDENTITY_LABEL + "."):
            raise _fail(f"{where}.label", f"{label!r}: a CAWG identity assertion is made by "
                        "an identity signer over this claim's assertions, not declared")
        if _reserved(label):
            raise _fail(f"{where}.label", f"{label!r} is written by tracemark or c2pa itself "
                        "(soft bindings, hashes, ingredients, the tracemark assertion)")
        if label in ACTIONS_LABELS:
            actions += _actions(a["data"], f"{where}.data")
            continue
        assertions.append({"label": label, "data": a["data"]}
                          | ({"kind": a["kind"]} if "kind" in a else {}))
    ingredients = tuple(_ingredient(ing, f"ingredients[{i}]", base)
                        for i, ing in enumerate(_list(obj.get("ingredients", []),
                                                      "ingredients")))
    return ManifestDefinition(title=title, claim_generator_info=tuple(cgi),
                              assertions=tuple(assertions), actions=tuple(actions),
                              ingredients=ingredients)


def _check_value(value: Any, where: str) -> None:
    """Refuse what c2pa-rs cannot take as JSON, without recursion: nesting deeper than
    :data:`MAX_DATA_DEPTH`, NaN or infinite numbers (Python's JSON reads them, serde_json
    does not), integers outside -2**63..2**63-1 (c2pa-rs 0.91 refuses 2**63..2**64-1, "u64
    value too large for i64", and turns larger ones into lossy floats), and values that are
    not JSON at all (a Python caller's bytes or sets)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            if level > MAX_DATA_DEPTH:
                raise _fail(where, f"nested deeper than {MAX_DATA_DEPTH} levels")
            if isinstance(item, dict) and not all(isinstance(k, str) for k in item):
                raise _fail(where, "object keys must be strings")
            stack.extend((child, level + 1) for child in
                         (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise _fail(where, f"{item!r} is not a JSON number")
        elif isinstance(item, int) and not isinstance(item, bool) and \
                not -(1 << 63) <= item < (1 << 63):
            raise _fail(where, "an integer outside -2**63..2**63-1 (what c2pa keeps exact); "
                        "write it as a string")
        elif not isinstance(item, str | int | float | bool | type(None)):
            raise _fail(where, f"{type(item).__name__} is not a JSON value")


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, f"expected an array, found {_kind(value)}")
    return value


def _actions(data: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        raise _fail(where, f"expected an object, found {_kind(data)}")
    out = []
    for i, act in enumerate(_list(data.get("actions"), f"{where}.actions")):
        w = f"{where}.actions[{i}]"
        if not isinstance(act, dict):
            raise _fail(w, f"expected an object, found {_kind(act)}")
        name = _str(act.get("action"), f"{w}.action")
        _check_value(act, w)
        if name in FIRST_ACTIONS:
            raise _fail(f"{w}.action", f"{name} is declared by tracemark (sign --create "
                        "TYPE or --edit), not by the definition")
        out.append(act)
    return out


def _ingredient(ing: Any, where: str, base: str | os.PathLike[str] | None) -> Ingredient:
    from tracemark.imageio import media_type, open_image_info

    if not isinstance(ing, dict):
        raise _fail(where, f"expected an object, found {_kind(ing)}")
    extra = sorted(set(ing) - _INGREDIENT_KEYS)
    if extra:
        raise _fail(where, f"unknown keys {', '.join(extra)} (known: "
                    f"{', '.join(sorted(_INGREDIENT_KEYS))})")
    title = _str(ing.get("title"), f"{where}.title")
    rel = ing.get("relationship", "componentOf")
    if rel not in RELATIONSHIPS:
        raise _fail(f"{where}.relationship", f"expected {' or '.join(RELATIONSHIPS)}, found "
                    f"{rel!r} (the parent of an edit is the input itself)")
    fmt = None if ing.get("format") is None else _str(ing["format"], f"{where}.format")
    desc = None if ing.get("description") is None else _str(ing["description"],
                                                             f"{where}.description")
    data = None
    if ing.get("file_path") is not None:
        rel_path = _str(ing["file_path"], f"{where}.file_path")
        if base is None:
            raise _fail(f"{where}.file_path", "files are not read here (only from a "
                        "definition file given on the command line)")
        path = Path(base) / rel_path
        try:
            if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the read forever
                raise _fail(f"{where}.file_path", f"{path} is not a regular file")
            if path.stat().st_size > MAX_INGREDIENT_BYTES:
                raise _fail(f"{where}.file_path", f"{path} is larger than "
                            f"{MAX_INGREDIENT_BYTES >> 20} MiB")
            data = path.read_bytes()
        except FileNotFoundError:
            raise _fail(f"{where}.file_path", f"no such file {path}") from None
        except OSError as exc:
            raise _fail(f"{where}.file_path",
                        f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            sniffed = media_type(open_image_info(data, max_pixels=None).format)
        except TracemarkError as exc:
            raise _fail(f"{where}.file_path", f"{path} is not an image tracemark reads: "
                        f"{exc.message}") from None
        if fmt is not None and fmt != sniffed:
            raise _fail(f"{where}.format", f"{fmt} but {path} is {sniffed}")
        fmt = sniffed
    return Ingredient(title=title, relationship=rel, format=fmt, data=data, description=desc)


def load_definition(path: str | os.PathLike[str]) -> ManifestDefinition:
    """Read and check the definition JSON at ``path`` (:func:`parse_definition`, with
    ``file_path`` resolved against its folder). ``path`` may be a pipe (a shell's process
    substitution, ``--manifest <(jq ...)``), read up to the limit. Raises
    :class:`~tracemark.errors.ConfigError` for a missing, unreadable, too large (over
    :data:`MAX_DEFINITION_BYTES`) or invalid file, and for one that is neither a regular
    file nor a pipe (a folder, a socket, a device)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise ConfigError("not a regular file or a pipe", source=str(p))
        with p.open("rb") as f:
            raw = f.read(MAX_DEFINITION_BYTES + 1)
        if len(raw) > MAX_DEFINITION_BYTES:
            raise ConfigError(f"larger than {MAX_DEFINITION_BYTES >> 10} KiB", source=str(p))
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", source=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {getattr(exc, 'strerror', None) or exc}",
                          source=str(p)) from None
    return parse_definition(loads(text, source=str(p)), base=p.parent)


def loads(text: str, *, source: str | None = None) -> Any:
    """The JSON in ``text``; :class:`~tracemark.errors.ConfigError` with the position of
    a syntax error or of nesting too deep for Python's parser."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc.msg} at line {exc.lineno} column "
                          f"{exc.colno}", source=source) from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise ConfigError(f"not valid JSON: {exc}", source=source) from None
    except RecursionError:
        raise ConfigError("not valid JSON: nested too deeply", source=source) from None

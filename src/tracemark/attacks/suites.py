"""Named attack suites and user suites from YAML or JSON.

A suite is an ordered list of entries; each entry names an attack and its configuration
(which may contain random specifications, see :func:`tracemark.attacks.base.resolve_random`).
The published suites ship as YAML files in ``tracemark/attacks/suites/`` and load through
the same code as user suites.

Suite file format::

    name: my-suite
    description: what it is for
    source: where the parameters come from
    entries:
      - label: jpeg_q50            # unique within the suite
        attack: jpeg
        params: {quality: 50}
        group: jpeg                # optional: series name for plots (default: attack)
        level: 50                  # optional: x value for plots (default: strength)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tracemark.attacks.base import Image, SampleContext, get_attack
from tracemark.errors import SuiteError, TracemarkError, UnknownSuiteError

__all__ = [
    "SuiteEntry",
    "Suite",
    "AttackRecord",
    "load_suite",
    "get_suite",
    "list_suites",
    "suite_from_dict",
    "derive_seed",
]


@dataclass(frozen=True)
class SuiteEntry:
    label: str
    attack: str
    params: Mapping[str, Any] = field(default_factory=dict)
    group: str | None = None
    level: float | None = None

    @property
    def series(self) -> str:
        return self.group or self.attack


@dataclass(frozen=True)
class AttackRecord:
    """What was applied: enough to replay the output exactly with ``apply_attack``."""

    label: str
    attack: str
    params: dict[str, Any]
    seed: int
    strength: float
    family: str
    group: str
    level: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "attack": self.attack,
            "params": self.params,
            "seed": self.seed,
            "strength": self.strength,
            "family": self.family,
            "group": self.group,
            "level": self.level,
        }


def derive_seed(base_seed: int, *keys: str | int) -> int:
    """A stable 63-bit seed from a base seed and keys (independent of PYTHONHASHSEED)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(int(base_seed)).encode())
    for k in keys:
        h.update(b"\x00" + str(k).encode())
    return int.from_bytes(h.digest(), "big") >> 1


@dataclass(frozen=True)
class Suite:
    name: str
    entries: tuple[SuiteEntry, ...]
    description: str = ""
    source: str = ""

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[SuiteEntry]:
        return iter(self.entries)

    def entry(self, label: str) -> SuiteEntry:
        for e in self.entries:
            if e.label == label:
                return e
        raise SuiteError(f"suite {self.name!r} has no entry {label!r}")

    def draw(self, entry: SuiteEntry, seed: int, context: SampleContext) -> AttackRecord:
        """Concrete parameters for one entry, drawn from a generator seeded with ``seed``."""
        spec = get_attack(entry.attack)
        rng = np.random.default_rng(seed)
        params = spec.draw(rng, entry.params, context)
        return AttackRecord(
            label=entry.label,
            attack=entry.attack,
            params=_jsonable(params),
            seed=int(seed),
            strength=spec.strength(params),
            family=str(spec.family),
            group=entry.series,
            level=entry.level,
        )

    def run(
        self,
        image: Image,
        *,
        seed: int = 0,
        key: str = "",
        backgrounds: Sequence[str] = (),
    ) -> Iterator[tuple[AttackRecord, Image]]:
        """Apply every entry to ``image``; per-entry seeds derive from (seed, key, label)."""
        ctx = SampleContext.for_image(image, backgrounds)
        for e in self.entries:
            rec = self.draw(e, derive_seed(seed, key, e.label), ctx)
            yield rec, get_attack(rec.attack).apply(image, rec.params)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def suite_from_dict(data: Any, *, origin: str = "<dict>") -> Suite:
    """Build and validate a suite from parsed YAML/JSON.

    Every entry's attack must exist and its configuration must draw valid parameters
    (checked once here with a fixed generator), so mistakes surface at load time.
    """
    if not isinstance(data, Mapping):
        raise SuiteError(f"{origin}: a suite must be a mapping with 'name' and 'entries'")
    unknown = set(data) - {"name", "description", "source", "entries"}
    if unknown:
        raise SuiteError(f"{origin}: unknown key(s) {sorted(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise SuiteError(f"{origin}: 'name' must be a non-empty string")
    raw_entries = data.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise SuiteError(f"{origin}: 'entries' must be a non-empty list")
    entries: list[SuiteEntry] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_entries):
        where = f"{origin}: entry {i}"
        if not isinstance(raw, Mapping):
            raise SuiteError(f"{where} must be a mapping")
        bad = set(raw) - {"label", "attack", "params", "group", "level"}
        if bad:
            raise SuiteError(f"{where}: unknown key(s) {sorted(bad)}")
        attack = raw.get("attack")
        if not isinstance(attack, str):
            raise SuiteError(f"{where}: 'attack' must be a string")
        label = raw.get("label", attack)
        if not isinstance(label, str) or not label:
            raise SuiteError(f"{where}: 'label' must be a non-empty string")
        if label in seen:
            raise SuiteError(f"{where}: duplicate label {label!r}")
        seen.add(label)
        params = raw.get("params") or {}
        if not isinstance(params, Mapping):
            raise SuiteError(f"{where}: 'params' must be a mapping")
        level = raw.get("level")
        if level is not None and not isinstance(level, int | float):
            raise SuiteError(f"{where}: 'level' must be a number")
        group = raw.get("group")
        if group is not None and not isinstance(group, str):
            raise SuiteError(f"{where}: 'group' must be a string")
        entry = SuiteEntry(label, attack, dict(params), group, None if level is None else float(level))
        try:
            get_attack(attack).draw(np.random.default_rng(0), entry.params, SampleContext(512, 512))
        except TracemarkError as exc:
            raise SuiteError(f"{where} ({label}): {exc}") from exc
        entries.append(entry)
    return Suite(
        name=name,
        entries=tuple(entries),
        description=str(data.get("description", "")),
        source=str(data.get("source", "")),
    )


def load_suite(path: str | Path) -> Suite:
    """Load a user suite from a ``.yaml``/``.yml`` or ``.json`` file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"cannot read suite file: {exc}", source=str(p)) from exc
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SuiteError(f"cannot parse suite file: {exc}", source=str(p)) from exc
    return suite_from_dict(data, origin=str(p))


def _builtin_dir() -> Any:
    return resources.files("tracemark.attacks").joinpath("suites")


def list_suites() -> list[str]:
    """Names of the built-in suites."""
    return sorted(
        f.name.removesuffix(".yaml") for f in _builtin_dir().iterdir() if f.name.endswith(".yaml")
    )


def get_suite(name_or_path: str | Path) -> Suite:
    """A built-in suite by name, or a user suite from a file path."""
    s = str(name_or_path)
    if s.endswith((".yaml", ".yml", ".json")) or Path(s).is_file():
        return load_suite(s)
    f = _builtin_dir().joinpath(f"{s}.yaml")
    if not f.is_file():
        raise UnknownSuiteError(f"unknown suite {s!r}; built-in suites: {', '.join(list_suites())}")
    try:
        data = yaml.safe_load(f.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:  # a packaging bug, but say so clearly
        raise SuiteError(f"built-in suite {s!r} does not parse: {exc}") from exc
    return suite_from_dict(data, origin=f"suite {s}")

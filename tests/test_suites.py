"""Built-in attack suites: they load, draw, run and replay, and they match ATTACK_SUITES.md.

The published parameters live in ``../shared/ATTACK_SUITES.md`` (beside the repository).
The document tests read that file, pull the numbers out of each suite's section with small
regular expressions, and compare them with the YAML suites in both directions: every
number in the document has its entry, and every entry has its number. Changing a value on
either side (say JPEG 25 -> 30) fails a test.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tracemark.attacks import (
    REQUIRED,
    SampleContext,
    Suite,
    SuiteEntry,
    apply_attack,
    get_attack,
    get_suite,
    list_suites,
    load_suite,
)
from tracemark.errors import SuiteError, UnknownSuiteError

DOC = Path(__file__).resolve().parents[1].parent / "shared" / "ATTACK_SUITES.md"

EXPECTED_COUNTS = {
    "wbench-distortions": 25,
    "waves-distortions": 60,
    "stable-signature": 18,
    "tree-ring": 6,
    "copyrightmeter-classical": 11,
    "perception-hash": 10,
    "disc21-like": 15,
}
SUITE_NAMES = sorted(EXPECTED_COUNTS)
# tracemark's own suites (not from a publication, so not compared with ATTACK_SUITES.md)
OWN_SUITES = {"watermark-robustness", "watermark-v2", "credential-strip", "copydetect-v2"}
RANDOM_KEYS = {"uniform", "loguniform", "randint", "choice", "normal"}


# --- helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A small 96x128 gradient with noise: texture for every attack, fast to process."""
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], axis=-1)
    noise = np.random.default_rng(1234).normal(0.0, 20.0, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _has_random_spec(value: Any) -> bool:
    if isinstance(value, Mapping):
        if len(value) == 1 and next(iter(value)) in RANDOM_KEYS:
            return True
        return any(_has_random_spec(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_random_spec(v) for v in value)
    return False


def _close(a: Any, b: Any) -> bool:
    """Equality with float tolerance, through nested mappings and sequences."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _filled(attack: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration with the attack's defaults filled in (random specs kept)."""
    spec = get_attack(attack)
    defaults = {k: v for k, v in spec.defaults.items() if v is not REQUIRED}
    return {**defaults, **params}


def _run(suite: Suite, img: np.ndarray, seed: int) -> list[tuple[Any, np.ndarray]]:
    return list(suite.run(img, seed=seed))


# --- the built-in suites load and draw -------------------------------------------------


def test_list_suites_is_the_seven_published_and_our_own() -> None:
    assert list_suites() == sorted([*SUITE_NAMES, *OWN_SUITES])


@pytest.mark.parametrize("name", sorted(OWN_SUITES))
def test_own_suites_load_and_draw(name: str) -> None:
    suite = get_suite(name)
    assert suite.name == name and len(suite) > 0 and suite.source.strip()
    for e in suite:
        get_attack(e.attack).draw(np.random.default_rng(0), e.params, SampleContext(512, 512))


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_builtin_suite_loads_and_draws(name: str) -> None:
    suite = get_suite(name)
    assert suite.name == name
    assert len(suite) == EXPECTED_COUNTS[name]
    labels = [e.label for e in suite]
    assert len(set(labels)) == len(labels)
    assert suite.description.strip() and suite.source.strip()
    ctx = SampleContext(512, 512)
    for entry in suite:
        for seed in (0, 1, 2):
            rec = suite.draw(entry, seed, ctx)
            assert not _has_random_spec(rec.params), (entry.label, rec.params)
            json.dumps(rec.to_dict())  # concrete, JSON-serialisable
            get_attack(rec.attack).validate(rec.params)
            assert 0.0 <= rec.strength <= 1.0
            assert rec.group == entry.series and rec.level == entry.level


def test_unknown_suite() -> None:
    with pytest.raises(UnknownSuiteError, match=r"unknown suite 'nope'.*wbench-distortions"):
        get_suite("nope")


# --- running and replaying ------------------------------------------------------------


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_suite_run_replays_exactly(name: str, image: np.ndarray) -> None:
    """Every record replays its image with apply_attack, also after a JSON round trip."""
    suite = get_suite(name)
    results = _run(suite, image, seed=7)
    assert [rec.label for rec, _ in results] == [e.label for e in suite]
    for rec, out in results:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        replay = apply_attack(image, rec.attack, **rec.params)
        assert np.array_equal(replay, out), rec.label
    rec, out = results[0]
    stored = json.loads(json.dumps(rec.to_dict()))
    assert np.array_equal(apply_attack(image, stored["attack"], **stored["params"]), out)


def test_random_entries_depend_on_the_seed(image: np.ndarray) -> None:
    suite = get_suite("disc21-like")
    a = _run(suite, image, seed=0)
    b = _run(suite, image, seed=0)
    c = _run(suite, image, seed=1)
    for (ra, ia), (rb, ib) in zip(a, b, strict=True):
        assert ra == rb and np.array_equal(ia, ib)
    changed = [ra.label for (ra, _), (rc, _) in zip(a, c, strict=True) if ra.params != rc.params]
    assert changed == [e.label for e in suite]  # every disc21-like entry is random


# --- user suites -----------------------------------------------------------------------

USER_SUITE: dict[str, Any] = {
    "name": "my-suite",
    "description": "a test suite",
    "source": "tests",
    "entries": [
        {
            "label": "jpeg_q50",
            "attack": "jpeg",
            "params": {"quality": 50},
            "group": "jpeg",
            "level": 50,
        },
        {
            "label": "noise",
            "attack": "gaussian_noise",
            "params": {"std": {"uniform": [0.02, 0.08]}},
        },
        {"label": "crop", "attack": "resized_crop", "params": {"area": {"choice": [0.5, 0.7]}}},
        {"attack": "rotate", "params": {"angle": {"randint": [-20, 20]}}},
    ],
}


def _write_user_suite(tmp_path: Path, fmt: str) -> Path:
    if fmt == "json":
        path = tmp_path / "suite.json"
        path.write_text(json.dumps(USER_SUITE), encoding="utf-8")
    else:
        import yaml

        path = tmp_path / "suite.yaml"
        path.write_text(yaml.safe_dump(USER_SUITE, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_user_suite_loads_and_runs(tmp_path: Path, image: np.ndarray, fmt: str) -> None:
    path = _write_user_suite(tmp_path, fmt)
    suite = get_suite(path)
    assert load_suite(path) == suite
    assert suite.name == "my-suite" and len(suite) == 4
    assert suite.entry("rotate").attack == "rotate"  # the label defaults to the attack
    assert suite.entry("jpeg_q50").level == 50.0 and suite.entry("noise").series == "gaussian_noise"

    first = _run(suite, image, seed=0)
    again = _run(suite, image, seed=0)
    other = _run(suite, image, seed=1)
    recs = {r.label: r for r, _ in first}
    assert recs["jpeg_q50"].params == {"quality": 50}
    assert 0.02 <= recs["noise"].params["std"] <= 0.08 and isinstance(
        recs["noise"].params["seed"], int
    )
    assert recs["crop"].params["area"] in (0.5, 0.7)
    assert (
        isinstance(recs["rotate"].params["angle"], float)
        and -20 <= recs["rotate"].params["angle"] <= 20
    )
    for (r1, i1), (r2, i2) in zip(first, again, strict=True):
        assert r1.to_dict() == r2.to_dict() and np.array_equal(i1, i2)
    for (r1, i1), (r3, i3) in zip(first, other, strict=True):
        if r1.label == "jpeg_q50":  # fixed parameters: the seed does not matter
            assert r1.params == r3.params and np.array_equal(i1, i3)
        elif r1.label == "noise":  # a fresh std and noise seed
            assert r1.params != r3.params and not np.array_equal(i1, i3)


MALFORMED: dict[str, tuple[str, str]] = {
    "unknown attack": ("name: s\nentries:\n  - {attack: nope}\n", r"unknown attack 'nope'"),
    "unknown top-level key": (
        "name: s\nentriez: []\nentries:\n  - {attack: jpeg}\n",
        r"unknown key\(s\) \['entriez'\]",
    ),
    "unknown entry key": (
        "name: s\nentries:\n  - {attack: jpeg, lable: x}\n",
        r"entry 0: unknown key\(s\) \['lable'\]",
    ),
    "out-of-range param": (
        "name: s\nentries:\n  - {attack: jpeg, params: {quality: 500}}\n",
        r"jpeg\.quality must be <= 100",
    ),
    "unknown param": (
        "name: s\nentries:\n  - {attack: jpeg, params: {qualty: 5}}\n",
        r"unknown parameter\(s\) \['qualty'\]",
    ),
    "bad random spec": (
        "name: s\nentries:\n  - {attack: gaussian_noise, params: {std: {uniform: [0.5, 0.1]}}}\n",
        r"high < low",
    ),
    "duplicate label": (
        "name: s\nentries:\n  - {label: a, attack: jpeg}\n  - {label: a, attack: webp}\n",
        r"entry 1: duplicate label 'a'",
    ),
    "empty entries": ("name: s\nentries: []\n", r"'entries' must be a non-empty list"),
    "no name": ("entries:\n  - {attack: jpeg}\n", r"'name' must be a non-empty string"),
    "non-mapping suite": ("- jpeg\n- webp\n", r"a suite must be a mapping"),
    "non-mapping entry": ("name: s\nentries:\n  - jpeg\n", r"entry 0 must be a mapping"),
    "non-numeric level": (
        "name: s\nentries:\n  - {attack: jpeg, level: high}\n",
        r"'level' must be a number",
    ),
    "unparsable YAML": ("name: [unclosed\nentries: {\n", r"cannot parse suite file"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_suite_is_rejected_clearly(tmp_path: Path, case: str) -> None:
    text, message = MALFORMED[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SuiteError, match=message):
        load_suite(path)


def test_malformed_json_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "s", "entries": [', encoding="utf-8")
    with pytest.raises(SuiteError, match="cannot parse suite file"):
        get_suite(bad)
    with pytest.raises(SuiteError, match="cannot read suite file"):
        load_suite(tmp_path / "missing.yaml")


# --- ATTACK_SUITES.md -------------------------------------------------------------------


@pytest.fixture(scope="module")
def doc_sections() -> dict[str, tuple[str, str]]:
    """``{suite name: (heading remainder, body)}`` for each ``## name (...)`` section."""
    if not DOC.is_file():
        pytest.skip(
            f"{DOC} is absent (the repository was checked out without the shared folder "
            "beside it), so the suites cannot be compared with the published parameters"
        )
    sections: dict[str, tuple[str, str]] = {}
    name, heading, body = None, "", []
    for line in [*DOC.read_text(encoding="utf-8").splitlines(), "## end"]:
        if line.startswith("## "):
            if name is not None:
                sections[name] = (heading, "\n".join(body))
            name, _, heading = line[3:].partition(" ")
            body = []
        else:
            body.append(line)
    return sections


def _bullets(body: str) -> list[str]:
    """Bullet items, with their indented continuation lines joined."""
    items: list[str] = []
    for line in body.splitlines():
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif line.startswith("  ") and line.strip() and items:
            items[-1] += " " + line.strip()
    return items


def _segments(body: str) -> list[str]:
    """Bullet items without parenthetical remarks, split on ';'."""
    out: list[str] = []
    for item in _bullets(body):
        out += [s.strip() for s in re.sub(r"\([^()]*\)", "", item).split(";") if s.strip()]
    return out


def _numbers(text: str) -> list[float]:
    """The numbers of a phrase; ``25%`` is 0.25 and ``0.2×255`` is 0.2 (8-bit scale)."""
    text = re.sub(r"\s*×\s*255\b", "", text)
    return [
        float(v) / 100 if pct else float(v)
        for v, pct in re.findall(r"(\d+(?:\.\d+)?)\s*(%?)", text)
    ]


@dataclass(frozen=True)
class Rule:
    """How one kind of phrase in the document maps onto suite entries."""

    pattern: str
    """Regex matched (case-insensitively) at the start of a phrase."""
    group: str
    attack: str | None
    """None: the document names it but the suite must not ship it (an optional extra)."""
    expect: Callable[[list[float], str], dict[str, Any]] = lambda v, t: {}
    """Expected parameters from the phrase's numbers (one number, or all when ``joint``)."""
    joint: bool = False
    level: Callable[[list[float]], float] = lambda v: v[0]


@dataclass
class Expected:
    group: str
    attack: str
    level: float | None
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def _expected_from(rules: Sequence[Rule], phrase: str) -> list[Expected]:
    for rule in rules:
        m = re.match(rule.pattern, phrase, re.IGNORECASE)
        if m is None:
            continue
        rest = phrase[m.end() :]
        values = _numbers(rest)
        if rule.attack is None:
            return []
        if not values:
            return [Expected(rule.group, rule.attack, None, rule.expect([], rest), phrase)]
        if rule.joint:
            return [
                Expected(
                    rule.group, rule.attack, rule.level(values), rule.expect(values, rest), phrase
                )
            ]
        return [
            Expected(rule.group, rule.attack, v, rule.expect([v], rest), phrase) for v in values
        ]
    raise AssertionError(
        f"ATTACK_SUITES.md phrase {phrase!r} matches no rule of this test: update the test"
    )


def _combination(
    rules: Sequence[Rule], group: str, phrase: str, level: float | None = None
) -> Expected:
    steps = []
    for part in phrase.split("+"):
        (exp,) = _expected_from(rules, part.strip())
        steps.append({"attack": exp.attack, "params": exp.params})
    return Expected(group, "compose", level, {"steps": steps}, phrase)


def _assert_params(entry: SuiteEntry, expected: Mapping[str, Any]) -> None:
    config = _filled(entry.attack, entry.params)
    if entry.attack == "compose" and "steps" in expected:
        steps = config["steps"]
        assert [s["attack"] for s in steps] == [s["attack"] for s in expected["steps"]], entry.label
        for got, want in zip(steps, expected["steps"], strict=True):
            _assert_subset(
                entry.label, _filled(got["attack"], got.get("params", {})), want["params"]
            )
            assert got.get("p", 1.0) == 1.0, entry.label
        return
    _assert_subset(entry.label, config, expected)


def _assert_subset(label: str, config: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    for key, want in expected.items():
        assert key in config and _close(config[key], want), (
            f"{label}: {key}={config.get(key)!r}, expected {want!r}"
        )


def _assert_matches(suite: Suite, expected: Sequence[Expected]) -> None:
    """Each expected entry exists exactly once with its parameters; nothing else exists."""
    remaining = list(suite.entries)
    for exp in expected:
        hits = [
            e
            for e in remaining
            if e.attack == exp.attack
            and e.series == exp.group
            and (
                e.level is None
                if exp.level is None
                else e.level is not None and _close(e.level, exp.level)
            )
        ]
        assert len(hits) == 1, (
            f"{suite.name}: document says {exp.source!r}; matching entries: {[e.label for e in hits]}"
        )
        _assert_params(hits[0], exp.params)
        remaining.remove(hits[0])
    assert not remaining, (
        f"{suite.name}: entries not in ATTACK_SUITES.md: {[e.label for e in remaining]}"
    )


def _q(v: list[float], t: str) -> dict[str, Any]:
    return {"quality": int(v[0])}


def _factor(v: list[float], t: str) -> dict[str, Any]:
    return {"factor": v[0]}


def _rotate(v: list[float], t: str) -> dict[str, Any]:
    return {"angle": v[0], "expand": False}


def _imgaug_ksize(sigma: float) -> int:
    """imgaug's kernel size for a cv2 Gaussian blur of ``sigma`` (below 3: 3.3 sigma), made odd."""
    k = int(max(3.3 * sigma if sigma < 3 else 2.9 * sigma if sigma < 5 else 2.6 * sigma, 5))
    return k + 1 if k % 2 == 0 else k


def _check_simple(
    suite: Suite, body: str, rules: Sequence[Rule], combination: str | None = None
) -> None:
    expected: list[Expected] = []
    for phrase in _segments(body):
        if combination is not None and phrase.lower().startswith("combination:"):
            expected.append(_combination(rules, combination, phrase.split(":", 1)[1]))
        else:
            expected += _expected_from(rules, phrase)
    _assert_matches(suite, expected)


def _check_wbench(suite: Suite, body: str) -> None:
    rules = [
        Rule(r"brightness", "brightness", "brightness", _factor),
        Rule(r"contrast", "contrast", "contrast", _factor),
        Rule(r"gaussian blur", "gaussian_blur", "gaussian_blur", lambda v, t: {"radius": v[0]}),
        Rule(r"gaussian noise", "gaussian_noise", "gaussian_noise", lambda v, t: {"std": v[0]}),
        Rule(r"jpeg", "jpeg", "jpeg", _q),
    ]
    _check_simple(suite, body, rules)
    size = re.search(r"(\d+)\s*×\s*(\d+)", body)
    assert size is not None and f"{size[1]}x{size[2]}" in suite.description


def _check_stable_signature(suite: Suite, body: str) -> None:
    rules = [
        Rule(r"(center )?crop( keeping)?", "crop", "center_crop", lambda v, t: {"area": v[0]}),
        Rule(r"rotation", "rotation", "rotate", _rotate),
        # utils_img.resize takes an AREA fraction: sides scale by its square root
        Rule(r"resize", "resize", "resize", lambda v, t: {"scale": math.sqrt(v[0]), "back": False}),
        Rule(r"jpeg", "jpeg", "jpeg", _q),
        Rule(r"brightness", "brightness", "brightness", _factor),
        Rule(r"contrast", "contrast", "contrast", _factor),
        Rule(r"saturation", "saturation", "saturation", _factor),
        Rule(r"sharpness", "sharpness", "sharpness", _factor),
        Rule(r"text overlay", "overlay_text", "text_overlay"),
    ]
    _check_simple(suite, body, rules, combination="comb")


def _check_tree_ring(suite: Suite, body: str) -> None:
    rules = [
        Rule(r"rotation", "rotation", "rotate", _rotate),
        Rule(
            r"randomresizedcrop",
            "resized_crop",
            "resized_crop",
            lambda v, t: {"area": v[0], "ratio": v[1]},
            joint=True,
        ),
        Rule(r"jpeg", "jpeg", "jpeg", _q),
        Rule(r"gaussian blur", "gaussian_blur", "gaussian_blur", lambda v, t: {"radius": v[0]}),
        Rule(r"gaussian noise", "gaussian_noise", "gaussian_noise", lambda v, t: {"std": v[0]}),
        # torchvision ColorJitter(brightness=b) draws a factor in [max(0, 1-b), 1+b]
        Rule(
            r"colorjitter brightness",
            "color_jitter",
            "color_jitter",
            lambda v, t: {"brightness": {"uniform": [max(0.0, 1 - v[0]), 1 + v[0]]}},
        ),
    ]
    _check_simple(suite, body, rules)
    assert "clip" in suite.description.lower()  # the document says tracemark says so


def _check_copyrightmeter(suite: Suite, body: str) -> None:
    rules = [
        Rule(r"random crop", "random_crop", "random_crop", lambda v, t: {"area": v[0]}),
        Rule(r"random drop", "random_drop", "random_drop", lambda v, t: {"ratio": v[0]}),
        Rule(r"resize", "resize", "resize", lambda v, t: {"scale": v[0], "back": "and back" in t}),
        Rule(r"median filter", "median_filter", "median_filter", lambda v, t: {"size": int(v[0])}),
        Rule(r"gaussian noise", "gaussian_noise", "gaussian_noise", lambda v, t: {"std": v[0]}),
        Rule(
            r"salt-and-pepper", "salt_and_pepper", "salt_and_pepper", lambda v, t: {"amount": v[0]}
        ),
        Rule(
            r"gaussian blur kernel",
            "gaussian_blur",
            "gaussian_blur_kernel",
            lambda v, t: {"kernel_size": int(v[0]), "sigma": v[1]},
            joint=True,
            level=lambda v: v[1],
        ),
        Rule(r"jpeg", "jpeg", "jpeg", _q),
        Rule(r"rotation", "rotation", "rotate", _rotate),
        Rule(r"brightness", "brightness", "brightness", _factor),
        Rule(r"contrast", "contrast", "contrast", _factor),
        Rule(r"bm3d", "bm3d", None),
    ]
    _check_simple(suite, body, rules)
    assert "BM3D" in suite.description and not any("bm3d" in e.attack for e in suite)


def _check_perception(suite: Suite, body: str) -> None:
    rules = [
        Rule(r"crop", "crop", "center_crop", lambda v, t: {"area": (1 - 2 * v[0]) ** 2}),
        Rule(
            r"pad",
            "pad",
            "pad",
            lambda v, t: {
                side: (v[0] if side in t else 0.0) for side in ("left", "right", "top", "bottom")
            },
        ),
        Rule(r"rotation", "rotate", "rotate", _rotate),
        Rule(r"resize", "resize", "resize", lambda v, t: {"scale": v[0], "back": False}),
        Rule(
            r"gaussian blur",
            "blur",
            "gaussian_blur_kernel",
            lambda v, t: {"sigma": v[0], "kernel_size": _imgaug_ksize(v[0])},
        ),
        Rule(r"gamma", "gamma", "gamma", lambda v, t: {"gamma": v[0]}),
        Rule(r"jpeg", "jpeg", "jpeg", _q),
        Rule(r"additive noise", "noise", "gaussian_noise", lambda v, t: {"std": v[0]}),
        Rule(r"vignette", "vignette", "vignette"),
        Rule(r"text overlay", "text_overlay", "text_overlay"),
    ]
    _check_simple(suite, body, rules)


WAVES_RULES = {
    # document phrase -> (WAVES group, attack, parameter, fixed parameters)
    "rotation": ("rotation", "rotate", "angle", {"expand": False}),
    "resized crop": ("resizedcrop", "resized_crop", "area", {}),
    "random erasing": ("erasing", "random_erasing", "area", {"ratio": 1.0}),
    "brightness": ("brightness", "brightness", "factor", {}),
    "contrast": ("contrast", "contrast", "factor", {}),
    "gaussian blur": ("blurring", "gaussian_blur", "radius", {}),
    "gaussian noise": ("noise", "gaussian_noise", "std", {}),
    "jpeg": ("jpeg", "jpeg", "quality", {}),
}


def _check_waves(suite: Suite, body: str) -> None:
    grid_m = re.search(r"s\s*∈\s*\{([^}]*)\}", body)
    assert grid_m is not None, "the strength grid is not in the document"
    grid = [float(v) for v in grid_m[1].split(",")]
    ranges: dict[str, Callable[[float], dict[str, Any]]] = {}
    for item in _bullets(body):
        key = next((k for k in WAVES_RULES if item.lower().startswith(k)), None)
        assert key is not None, f"ATTACK_SUITES.md phrase {item!r} matches no rule of this test"
        group, attack, param, fixed = WAVES_RULES[key]
        m = re.search(r"(\d+(?:\.\d+)?)\s*(%?)\s*°?\s*(?:–|→|-)\s*(\d+(?:\.\d+)?)\s*(%?)", item)
        assert m is not None, item
        div = 100.0 if (m[2] or m[4]) else 1.0
        lo, hi = float(m[1]) / div, float(m[3]) / div
        extra = dict(fixed)
        ratio = re.search(r"aspect ratio (\d+(?:\.\d+)?)", item)
        if ratio:
            extra["ratio"] = float(ratio[1])

        def params(
            s: float, lo=lo, hi=hi, param=param, extra=extra, attack=attack
        ) -> dict[str, Any]:
            v = lo + s * (hi - lo)
            return {param: int(round(v)) if attack == "jpeg" else v, **extra}

        ranges[key] = params
    assert set(ranges) == set(WAVES_RULES)

    combos: dict[str, list[str]] = {}
    text = " ".join(body.split())
    combo_m = re.search(r"Combinations:(.*?)\.\s", text)
    assert combo_m is not None
    for name, members in re.findall(r"(\w+) \(([^)]*)\)", combo_m[1]):
        combos[name] = [
            next(k for k in WAVES_RULES if part.strip().lower() in k) for part in members.split("+")
        ]
    assert re.search(r",\s*all$", combo_m[1].strip()), (
        "the 'all' combination is not in the document"
    )
    combos["all"] = [
        k for name in ("geometric", "photometric", "degradation") for k in combos[name]
    ]

    expected: list[Expected] = []
    for s in grid:
        for key, params in ranges.items():
            group, attack, _, _ = WAVES_RULES[key]
            expected.append(Expected(group, attack, s, params(s), f"{key} at s={s}"))
        for name, members in combos.items():
            steps = [{"attack": WAVES_RULES[k][1], "params": ranges[k](s)} for k in members]
            expected.append(
                Expected(f"combo_{name}", "compose", s, {"steps": steps}, f"{name} at s={s}")
            )
    _assert_matches(suite, expected)


def _check_disc21(suite: Suite, body: str) -> None:
    text = " ".join(body.split())
    named = text.split("plus DISC21's", 1)[1]
    keywords = {
        "insertion": "insert",
        "screenshot": "screenshot",
        "meme": "meme",
        "pixelization": "pixelize",
        "padding": "pad",
    }
    fixed = {attack for word, attack in keywords.items() if word in named}
    assert fixed == set(keywords.values())
    stacks = [e for e in suite if e.attack == "disc21_augment"]
    assert [e.label for e in stacks] == [f"disc21_{i:02d}" for i in range(10)]
    assert all(not e.params for e in stacks)  # the stack is the attack's own, as documented
    singles = [e for e in suite if e.attack != "disc21_augment"]
    assert sorted(e.attack for e in singles) == sorted(fixed)
    assert all(e.label == f"disc21_{e.attack}" for e in singles)


CHECKERS: dict[str, Callable[[Suite, str], None]] = {
    "wbench-distortions": _check_wbench,
    "waves-distortions": _check_waves,
    "stable-signature": _check_stable_signature,
    "tree-ring": _check_tree_ring,
    "copyrightmeter-classical": _check_copyrightmeter,
    "perception-hash": _check_perception,
    "disc21-like": _check_disc21,
}


def test_document_sections_are_the_builtin_suites(doc_sections: dict[str, tuple[str, str]]) -> None:
    assert sorted(n for n in doc_sections if n != "Metrics") == sorted(set(list_suites()) - OWN_SUITES)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_suite_matches_attack_suites_md(
    name: str, doc_sections: dict[str, tuple[str, str]]
) -> None:
    CHECKERS[name](get_suite(name), doc_sections[name][1])


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_suite_source_cites_the_document(
    name: str, doc_sections: dict[str, tuple[str, str]]
) -> None:
    """The project, repository and file named in the section heading are in ``source``."""
    heading = doc_sections[name][0]
    files = re.findall(r"`([^`]+)`", heading)
    rest = re.sub(r"`[^`]*`", "", heading)
    repos = re.findall(r"[\w.-]+/[\w.-]+", rest)
    rest = re.sub(r"[\w.-]+/[\w.-]+", "", rest)
    projects = re.findall(r"\b[A-Z][A-Za-z0-9]*[A-Z][A-Za-z0-9]*\b", rest)
    required = files + repos + projects
    assert required, heading
    source = get_suite(name).source
    assert all(token in source for token in required), (required, source)


def test_document_edit_is_detected(doc_sections: dict[str, tuple[str, str]]) -> None:
    """The comparison is not vacuous: a changed number in the document fails it."""
    body = doc_sections["wbench-distortions"][1].replace("quality 10, 25,", "quality 10, 30,")
    assert body != doc_sections["wbench-distortions"][1]
    with pytest.raises(AssertionError, match="30"):
        _check_wbench(get_suite("wbench-distortions"), body)


def test_perception_text_overlay_spans_a_fifth_of_the_width() -> None:
    """'text overlay at 20% of the width', measured on a square white 512x512 image."""
    entry = get_suite("perception-hash").entry("text_overlay")
    white = np.full((512, 512, 3), 255, np.uint8)
    out = apply_attack(white, entry.attack, **entry.params)
    cols = np.nonzero((out != 255).any(axis=(0, 2)))[0]
    assert entry.level is not None
    assert abs((cols.max() - cols.min() + 1) / 512 - entry.level) < 0.01

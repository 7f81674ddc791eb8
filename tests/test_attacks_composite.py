"""compose and disc21_augment: sequential application, step draws, replay and errors."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from tracemark import attacks
from tracemark.attacks.composite import DISC21_STACK, draw_compose, draw_steps
from tracemark.errors import AttackParameterError, UnknownAttackError


def _image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [xx * 255 / (w - 1), yy * 255 / (h - 1), 255 - (xx + yy) * 255 / (h + w - 2)], -1
    )
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


CTX = attacks.SampleContext(48, 64)
STEPS = [
    {"attack": "brightness", "params": {"factor": 1.8}},
    {"attack": "contrast", "params": {"factor": 0.4}},
    {"attack": "meme", "params": {"text": "HI", "caption": 0.25}},
]


def test_compose_equals_sequential_application_and_order_matters() -> None:
    img = _image()
    expected = img
    for step in STEPS:
        expected = attacks.apply_attack(expected, step["attack"], **step["params"])
    out = attacks.apply_attack(img, "compose", steps=STEPS)
    assert np.array_equal(out, expected) and out.shape == (60, 64, 3)
    swapped = attacks.apply_attack(img, "compose", steps=[STEPS[1], STEPS[0], STEPS[2]])
    assert not np.array_equal(out, swapped)


def test_compose_with_other_families() -> None:
    img = _image()
    steps = [
        {"attack": "rotate", "params": {"angle": 90}},
        {"attack": "jpeg", "params": {"quality": 40}},
    ]
    expected = attacks.apply_attack(
        attacks.apply_attack(img, "rotate", angle=90), "jpeg", quality=40
    )
    assert np.array_equal(attacks.apply_attack(img, "compose", steps=steps), expected)


def test_compose_without_steps_is_the_identity() -> None:
    img = _image()
    out = attacks.apply_attack(img, "compose", steps=[])
    assert np.array_equal(out, img) and out is not img
    assert attacks.get_attack("compose").strength({"steps": []}) == 0.0


def test_compose_strength_combines_steps() -> None:
    steps = [
        {"attack": "jpeg", "params": {"quality": 50}},
        {"attack": "hue", "params": {"shift": 0.1}},
    ]
    assert attacks.get_attack("compose").strength({"steps": steps}) == pytest.approx(1 - 0.5 * 0.8)


def test_draw_keeps_p1_drops_p0_and_resolves_specs() -> None:
    config = {
        "steps": [
            {"attack": "jpeg", "params": {"quality": {"randint": [10, 20]}}, "p": 1},
            {"attack": "grayscale", "p": 0.0},
            {"attack": "hue", "params": {"shift": {"uniform": [-0.1, 0.1]}}},
            {"attack": "color_jitter", "params": {"brightness": 1.5}},
        ]
    }
    for seed in range(10):
        drawn = draw_compose(np.random.default_rng(seed), config, CTX)["steps"]
        assert [s["attack"] for s in drawn] == ["jpeg", "hue", "color_jitter"]
        assert all(set(s) == {"attack", "params"} for s in drawn)
        assert 10 <= drawn[0]["params"]["quality"] <= 20
        assert -0.1 <= drawn[1]["params"]["shift"] <= 0.1
        assert sorted(drawn[2]["params"]["order"]) == [0, 1, 2, 3], (
            "random params of a step are drawn"
        )
    again = draw_compose(np.random.default_rng(3), config, CTX)
    assert again == draw_compose(np.random.default_rng(3), config, CTX)
    assert again != draw_compose(np.random.default_rng(4), config, CTX)


def test_draw_with_intermediate_p_keeps_some() -> None:
    config = [{"attack": "grayscale", "p": 0.5}]
    kept = sum(len(draw_steps(np.random.default_rng(s), config, CTX)) for s in range(200))
    assert 70 < kept < 130


def test_draw_resolves_a_choice_of_step_lists() -> None:
    config = {
        "steps": {
            "choice": [[{"attack": "grayscale"}], [{"attack": "jpeg", "params": {"quality": 5}}]]
        }
    }
    names = {
        draw_compose(np.random.default_rng(s), config, CTX)["steps"][0]["attack"] for s in range(20)
    }
    assert names == {"grayscale", "jpeg"}


def _compose_draw_is_wired() -> bool:
    spec = attacks.get_attack("compose")
    try:
        drawn = spec.draw(
            np.random.default_rng(0), {"steps": [{"attack": "grayscale", "p": 0.0}]}, CTX
        )
    except AttackParameterError:
        return False
    return drawn["steps"] == []


def test_spec_draw_uses_draw_compose() -> None:
    assert _compose_draw_is_wired()
    config = {"steps": [{"attack": "jpeg", "params": {"quality": {"randint": [0, 100]}}, "p": 0.7}]}
    for seed in range(5):
        rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
        assert attacks.get_attack("compose").draw(rng_a, config, CTX) == draw_compose(
            rng_b, config, CTX
        )


@pytest.mark.parametrize(
    ("steps", "error", "match"),
    [
        ([{"attack": "nope"}], UnknownAttackError, r"steps\[0\].*unknown attack 'nope'"),
        (
            [{"attack": "jpeg", "params": {"quality": 500}}],
            AttackParameterError,
            r"steps\[0\] \(jpeg\)",
        ),
        (
            [{"attack": "jpeg", "params": {"quality": 5}}, {"attack": "hue", "params": {"bad": 1}}],
            AttackParameterError,
            r"steps\[1\] \(hue\)",
        ),
        (
            [{"attack": "jpeg", "params": {"quality": 5}, "p": 0.5}],
            AttackParameterError,
            "only used when drawing",
        ),
        (
            [{"attack": "jpeg", "params": {"quality": {"uniform": [1, 2]}}}],
            AttackParameterError,
            "draw parameters first",
        ),
        (["jpeg"], AttackParameterError, "must be a mapping"),
        ([{"params": {}}], AttackParameterError, "attack must be an attack name"),
        ([{"attack": "jpeg", "params": [50]}], AttackParameterError, "params must be a mapping"),
        ({"attack": "jpeg"}, AttackParameterError, "expected a list"),
    ],
)
def test_bad_steps_are_typed_errors(steps: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        attacks.apply_attack(_image(), "compose", steps=steps)


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ([{"attack": "jpeg", "p": 1.5}], AttackParameterError),
        ([{"attack": "jpeg", "p": "often"}], AttackParameterError),
        ([{"attack": "nope"}], UnknownAttackError),
        ([{"attack": "jpeg", "params": {"quality": {"uniform": [9, 1]}}}], AttackParameterError),
        ([{"attack": "jpeg", "extra": 1}], AttackParameterError),
        ("jpeg", AttackParameterError),
    ],
)
def test_bad_draw_configurations_are_typed_errors(config: object, error: type) -> None:
    with pytest.raises(error):
        draw_steps(np.random.default_rng(0), config, CTX)


def test_bad_steps_make_strength_fail_clearly() -> None:
    with pytest.raises(UnknownAttackError):
        attacks.get_attack("compose").strength({"steps": [{"attack": "nope"}]})


# --- disc21_augment -------------------------------------------------------------------


def _disc21(seed: int, ctx: attacks.SampleContext = CTX) -> list[dict]:
    return attacks.get_attack("disc21_augment").draw(np.random.default_rng(seed), {}, ctx)["steps"]


def test_disc21_draws_are_reproducible_and_differ_across_seeds() -> None:
    assert _disc21(5) == _disc21(5)
    draws = [json.dumps(_disc21(s), sort_keys=True) for s in range(20)]
    assert len(set(draws)) == 20


def test_disc21_replays_exactly_from_the_recorded_steps() -> None:
    img = _image(64, 80, seed=1)
    ctx = attacks.SampleContext.for_image(img)
    for seed in range(6):
        steps = _disc21(seed, ctx)
        out = attacks.apply_attack(img, "disc21_augment", steps=steps)
        recorded = json.loads(json.dumps({"steps": steps}, default=list))["steps"]
        assert np.array_equal(attacks.apply_attack(img, "disc21_augment", steps=recorded), out)
        assert np.array_equal(attacks.apply_attack(img, "compose", steps=recorded), out)
        assert 0.0 < attacks.get_attack("disc21_augment").strength({"steps": recorded}) <= 1.0


def test_disc21_stack_frequencies_and_order() -> None:
    order = [alt[1] for row in DISC21_STACK for alt in row]
    counts: Counter[str] = Counter()
    n = 300
    for seed in range(n):
        steps = _disc21(seed)
        assert steps, "the stack is never empty"
        names = [s["attack"] for s in steps]
        positions = [order.index(name) for name in names]
        assert positions == sorted(positions), f"steps out of stack order: {names}"
        assert sum(name in ("insert", "screenshot", "meme") for name in names) <= 1
        counts.update(set(names))
    assert 0.7 * n < counts["color_jitter"] < 0.9 * n
    assert 0.4 * n < counts["gaussian_blur"] < 0.6 * n
    assert 0.12 * n < counts["emoji_overlay"] < 0.28 * n
    assert counts["rotate"] > 0 and counts["insert"] > 0 and counts["meme"] > 0


def test_disc21_uses_context_backgrounds() -> None:
    ctx = attacks.SampleContext(48, 64, backgrounds=("bg.jpg",))
    inserts = [s for seed in range(200) for s in _disc21(seed, ctx) if s["attack"] == "insert"]
    assert inserts and all(s["params"]["background"] == "bg.jpg" for s in inserts)


def test_disc21_with_no_steps_is_the_identity() -> None:
    img = _image()
    assert np.array_equal(attacks.apply_attack(img, "disc21_augment"), img)

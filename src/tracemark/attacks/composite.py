"""Composite attacks: an explicit chain of attacks, and a DISC21-like random stack.

``compose(image, steps=[...])`` applies ``steps`` (each ``{"attack": name, "params": {...}}``)
in order through the registry. When drawing, each configured step may also carry ``p``,
the probability that the step is kept, and random specifications in its params:
:func:`draw_compose` keeps each step with probability ``p`` (one uniform per step, in order)
and draws the kept step's parameters with that attack's own ``draw``. The result is a
concrete step list without ``p``, which replays exactly. Every step draws with the context
of the *original* image, even when an earlier step changes the size: size-dependent draws
see the input size, which is what a suite can state in advance.

``disc21_augment`` applies concrete steps the same way; its ``steps`` parameter, when a
configuration leaves it out, is drawn from the DISC21/SSCD-like stack below. Each row is
one uniform draw; a row with several alternatives keeps at most one (cumulative
probabilities). Rows are applied in this order:

====  ======================================================  =====================================
row   step (probability)                                      parameters drawn
====  ======================================================  =====================================
1     ``rotate`` by 90/180/270 (0.05) or free (0.05)          angle in {90, 180, 270}, or U(-30, 30)
2     ``resized_crop`` (0.5)                                  area U(0.1, 1), ratio logU(3/4, 4/3), x, y
3     ``pad`` (0.1)                                           each side U(0, 0.3), random fill colour
4     ``color_jitter`` (0.8)                                  factors U(0.2, 1.8), hue U(-0.2, 0.2), order
5     ``grayscale`` (0.2)                                     --
6     ``pixelize`` (0.1)                                      ratio U(0.1, 0.5)
7     ``text_overlay`` (0.1)                                  font_size U(0.05, 0.2), opacity U(0.5, 1)
8     ``emoji_overlay`` (0.2)                                 size U(0.1, 0.4), opacity U(0.6, 1)
9     ``insert`` (0.1) / ``screenshot`` (0.05) / ``meme``      insert scale U(0.3, 0.9), background from
      (0.05)                                                  the context; screenshot scale
                                                              U(0.6, 0.95); meme caption U(0.1, 0.3)
10    ``gaussian_blur`` (0.5)                                 radius U(1, 5)
11    ``jpeg`` (0.2)                                          quality randint(0, 100)
====  ======================================================  =====================================

Parameters not listed are drawn by the attack's own ``draw`` (positions, text, emoji,
seeds, colours). The crop area range is [0.1, 1] (torchvision's default is [0.08, 1]).
If no row keeps a step, a ``resized_crop`` is drawn so that the stack is never empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tracemark.attacks.base import (
    Family,
    Image,
    Param,
    SampleContext,
    get_attack,
    register_attack,
    resolve_random,
)
from tracemark.errors import AttackParameterError, UnknownAttackError

__all__ = ["compose", "disc21_augment", "draw_compose", "draw_steps", "DISC21_STACK"]

_STEP_KEYS = frozenset({"attack", "params"})
_DRAW_KEYS = frozenset({"attack", "params", "p"})


def _check_step(
    step: Any, i: int, where: str, *, allow_p: bool
) -> tuple[str, Mapping[str, Any], float]:
    """``(attack, params, p)`` of one step, or a typed error naming the step."""
    at = f"{where}.steps[{i}]"
    if not isinstance(step, Mapping):
        raise AttackParameterError(
            f"{at} must be a mapping {{attack, params}}; got {type(step).__name__}"
        )
    allowed = _DRAW_KEYS if allow_p else _STEP_KEYS
    extra = set(step) - allowed
    if extra:
        hint = " ('p' is only used when drawing; record the drawn steps)" if "p" in extra else ""
        raise AttackParameterError(
            f"{at}: unknown key(s) {sorted(extra)}; expected {sorted(allowed)}{hint}"
        )
    name = step.get("attack")
    if not isinstance(name, str):
        raise AttackParameterError(f"{at}.attack must be an attack name; got {name!r}")
    params = step.get("params") or {}
    if not isinstance(params, Mapping):
        raise AttackParameterError(f"{at}.params must be a mapping; got {type(params).__name__}")
    p = step.get("p", 1.0)
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise AttackParameterError(f"{at}.p must be a probability in [0, 1]; got {p!r}")
    return name, params, float(p)


def _spec(name: str, i: int, where: str) -> Any:
    try:
        return get_attack(name)
    except UnknownAttackError as exc:
        raise UnknownAttackError(f"{where}.steps[{i}]: {exc}") from None


def _apply_steps(image: Image, steps: Sequence[Any], where: str) -> Image:
    out = image
    for i, step in enumerate(steps):
        name, params, _ = _check_step(step, i, where, allow_p=False)
        spec = _spec(name, i, where)
        try:
            out = spec.apply(out, params)
        except AttackParameterError as exc:
            raise AttackParameterError(f"{where}.steps[{i}] ({name}): {exc}") from exc
    return out.copy() if out is image else out


def _steps_strength(params: Mapping[str, Any]) -> float:
    keep = 1.0
    for i, step in enumerate(params["steps"]):
        name, step_params, _ = _check_step(step, i, "steps", allow_p=False)
        keep *= 1.0 - _spec(name, i, "steps").strength(step_params)
    return 1.0 - keep


def draw_steps(
    rng: np.random.Generator,
    steps: Any,
    ctx: SampleContext,
    *,
    where: str = "compose",
) -> list[dict[str, Any]]:
    """Concrete steps from configured ones: keep each with probability ``p``, draw its params.

    ``steps`` may itself be a random specification (e.g. ``{"choice": [[...], [...]]}``).
    One uniform is drawn per step, in order, then the kept step's parameters.
    """
    steps = resolve_random(steps, rng, name=f"{where}.steps")
    if not isinstance(steps, list | tuple):
        raise AttackParameterError(
            f"{where}.steps must be a list of steps; got {type(steps).__name__}"
        )
    out: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        name, params, p = _check_step(step, i, where, allow_p=True)
        spec = _spec(name, i, where)
        if float(rng.random()) >= p:
            continue
        try:
            concrete = spec.draw(rng, params, ctx)
        except AttackParameterError as exc:
            raise AttackParameterError(f"{where}.steps[{i}] ({name}): {exc}") from exc
        out.append({"attack": name, "params": concrete})
    return out


def draw_compose(
    rng: np.random.Generator, config: Mapping[str, Any], ctx: SampleContext
) -> dict[str, Any]:
    """Resolve a ``compose``/``disc21_augment`` configuration's ``steps`` to concrete steps.

    A per-attack resolve hook for :meth:`AttackSpec.draw` (the generic draw only calls a
    parameter's ``draw`` when the configuration leaves it out, and ``compose`` always
    gets ``steps``). A configuration without ``steps`` is returned unchanged.
    """
    out = dict(config)
    if "steps" in out:
        out["steps"] = draw_steps(rng, out["steps"], ctx)
    return out


def _draw_empty(
    rng: np.random.Generator, ctx: SampleContext, resolved: Mapping[str, Any]
) -> list[Any]:
    return []


_STEPS_DOC = "list of {attack, params}; when drawing, each may carry p (probability of keeping it)"


@register_attack(
    "compose",
    Family.COMPOSITE,
    params=[Param("steps", list, random=True, draw=_draw_empty, doc=_STEPS_DOC)],
    strength=_steps_strength,
    identity={"steps": []},
    resolver=draw_compose,
)
def compose(image: Image, *, steps: Sequence[Mapping[str, Any]] = ()) -> Image:
    """Apply ``steps`` (``{"attack": name, "params": {...}}``) in order through the registry."""
    return _apply_steps(image, steps, "compose")


# --- DISC21-like stack ----------------------------------------------------------------

_Alternative = tuple[float, str, Mapping[str, Any]]

_JITTER = {
    "brightness": {"uniform": [0.2, 1.8]},
    "contrast": {"uniform": [0.2, 1.8]},
    "saturation": {"uniform": [0.2, 1.8]},
    "hue": {"uniform": [-0.2, 0.2]},
}
_SIDE = {"uniform": [0.0, 0.3]}

DISC21_STACK: tuple[tuple[_Alternative, ...], ...] = (
    (
        (0.05, "rotate", {"angle": {"choice": [90, 180, 270]}}),
        (0.05, "rotate", {"angle": {"uniform": [-30, 30]}}),
    ),
    (
        (
            0.5,
            "resized_crop",
            {"area": {"uniform": [0.1, 1.0]}, "ratio": {"loguniform": [0.75, 4 / 3]}},
        ),
    ),
    ((0.1, "pad", {"left": _SIDE, "top": _SIDE, "right": _SIDE, "bottom": _SIDE}),),
    ((0.8, "color_jitter", _JITTER),),
    ((0.2, "grayscale", {}),),
    ((0.1, "pixelize", {"ratio": {"uniform": [0.1, 0.5]}}),),
    (
        (
            0.1,
            "text_overlay",
            {"font_size": {"uniform": [0.05, 0.2]}, "opacity": {"uniform": [0.5, 1.0]}},
        ),
    ),
    (
        (
            0.2,
            "emoji_overlay",
            {"size": {"uniform": [0.1, 0.4]}, "opacity": {"uniform": [0.6, 1.0]}},
        ),
    ),
    (
        (0.1, "insert", {"scale": {"uniform": [0.3, 0.9]}}),
        (0.05, "screenshot", {"scale": {"uniform": [0.6, 0.95]}}),
        (0.05, "meme", {"caption": {"uniform": [0.1, 0.3]}}),
    ),
    ((0.5, "gaussian_blur", {"radius": {"uniform": [1.0, 5.0]}}),),
    ((0.2, "jpeg", {"quality": {"randint": [0, 100]}}),),
)
"""The rows of the ``disc21_augment`` stack: ``(probability, attack, config)`` alternatives."""

_FALLBACK = DISC21_STACK[1][0]


def _draw_disc21(
    rng: np.random.Generator, ctx: SampleContext, resolved: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Draw a concrete step list from :data:`DISC21_STACK` (never empty)."""
    out: list[dict[str, Any]] = []
    for row in DISC21_STACK:
        u, cum = float(rng.random()), 0.0
        for p, name, config in row:
            cum += p
            if u < cum:
                params = dict(config)
                if name == "pad":
                    params["fill"] = [int(c) for c in rng.integers(0, 256, size=3)]
                out.append({"attack": name, "params": get_attack(name).draw(rng, params, ctx)})
                break
    if not out:
        _, name, config = _FALLBACK
        out.append({"attack": name, "params": get_attack(name).draw(rng, config, ctx)})
    return out


@register_attack(
    "disc21_augment",
    Family.COMPOSITE,
    params=[
        Param(
            "steps",
            list,
            random=True,
            draw=_draw_disc21,
            doc="concrete steps; drawn from the DISC21-like stack (see tracemark.attacks.composite)",
        )
    ],
    strength=_steps_strength,
    slow=True,
    resolver=draw_compose,
)
def disc21_augment(image: Image, *, steps: Sequence[Mapping[str, Any]] = ()) -> Image:
    """Apply a drawn DISC21/SSCD-like stack of attacks (replay: pass the recorded ``steps``)."""
    return _apply_steps(image, steps, "disc21_augment")

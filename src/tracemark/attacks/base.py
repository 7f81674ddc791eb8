"""Attack specifications, parameter validation, random-parameter drawing and the registry.

An attack is a *pure, deterministic* function ``func(image, **params) -> image`` on
RGB ``uint8`` arrays of shape ``(H, W, 3)``. Anything random about an attack (a crop
position, a noise seed, the corners of a perspective warp, the steps of a random stack)
is an ordinary parameter with a deterministic default. Drawing is separate:
:meth:`AttackSpec.draw` turns a configuration (which may hold random specifications
such as ``{"uniform": [0.3, 0.9]}``) into concrete parameters with a
:class:`numpy.random.Generator`. Recording those concrete parameters replays the result
exactly: ``spec.apply(image, params)``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from tracemark.errors import (
    AttackError,
    AttackParameterError,
    TracemarkError,
    UnknownAttackError,
    UnsupportedImageError,
)

__all__ = [
    "Family",
    "Image",
    "Param",
    "SampleContext",
    "AttackSpec",
    "register_attack",
    "get_attack",
    "list_attacks",
    "attack_names",
    "apply_attack",
    "draw_params",
    "resolve_random",
    "check_image",
    "REQUIRED",
]

Image = npt.NDArray[np.uint8]
"""An RGB image: ``uint8`` array of shape ``(H, W, 3)``, values 0..255."""


class Family(StrEnum):
    GEOMETRIC = "geometric"
    PHOTOMETRIC = "photometric"
    DEGRADATION = "degradation"
    OVERLAY = "overlay"
    COMPOSITE = "composite"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Marker for a parameter without a default."""


@dataclass(frozen=True)
class SampleContext:
    """What a parameter draw may depend on besides the generator."""

    height: int
    width: int
    backgrounds: tuple[str, ...] = ()
    """Paths of images that attacks such as ``insert`` may use as a background."""

    @classmethod
    def for_image(cls, image: Image, backgrounds: Sequence[str] = ()) -> SampleContext:
        return cls(height=int(image.shape[0]), width=int(image.shape[1]), backgrounds=tuple(backgrounds))


DrawFn = Callable[[np.random.Generator, SampleContext, Mapping[str, Any]], Any]
ResolveFn = Callable[[np.random.Generator, Mapping[str, Any], SampleContext], dict[str, Any]]


@dataclass(frozen=True)
class Param:
    """One parameter of an attack.

    ``kind`` is one of ``float, int, bool, str, list, tuple, dict`` (``tuple`` values are
    stored as lists in JSON). ``low``/``high`` bound numbers (inclusive), ``choices``
    enumerates allowed values. A ``random`` parameter is drawn by :meth:`AttackSpec.draw`
    when the configuration does not fix it: with ``draw`` when given, else uniformly in
    ``[low, high]`` (integers for ``int``). Its default (from the function signature)
    is what a direct call uses.
    """

    name: str
    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    random: bool = False
    draw: DrawFn | None = None
    nullable: bool = False
    doc: str = ""


RANDOM_SPEC_KEYS = ("uniform", "loguniform", "randint", "choice", "normal")


def _is_random_spec(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in RANDOM_SPEC_KEYS


def resolve_random(value: Any, rng: np.random.Generator, *, name: str = "value") -> Any:
    """Resolve a random specification to a concrete value (other values pass through).

    Specifications: ``{"uniform": [lo, hi]}``, ``{"loguniform": [lo, hi]}``,
    ``{"randint": [lo, hi]}`` (inclusive), ``{"choice": [a, b, ...]}``,
    ``{"normal": [mean, std]}``.
    """
    if not _is_random_spec(value):
        return value
    (key, arg), = value.items()
    try:
        if key == "choice":
            seq = list(arg)
            if not seq:
                raise AttackParameterError(f"{name}: 'choice' needs at least one value")
            return seq[int(rng.integers(len(seq)))]
        lo, hi = (float(v) for v in arg)
    except (TypeError, ValueError) as exc:
        raise AttackParameterError(f"{name}: bad random specification {value!r}: {exc}") from exc
    if key == "normal":
        return float(rng.normal(lo, hi))
    if hi < lo:
        raise AttackParameterError(f"{name}: random range {value!r} has high < low")
    if key == "uniform":
        return float(rng.uniform(lo, hi)) if hi > lo else lo
    if key == "loguniform":
        if lo <= 0:
            raise AttackParameterError(f"{name}: loguniform needs positive bounds, got {value!r}")
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return int(rng.integers(int(lo), int(hi) + 1))  # randint


def check_image(image: Any, *, what: str = "image") -> Image:
    """Check that ``image`` is an RGB uint8 array ``(H, W, 3)`` with at least one pixel."""
    if not isinstance(image, np.ndarray):
        raise UnsupportedImageError(
            f"{what} must be a numpy uint8 array of shape (H, W, 3); got {type(image).__name__} "
            "(use tracemark.imageio.load_image to convert)"
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UnsupportedImageError(
            f"{what} must be a uint8 array of shape (H, W, 3); got dtype {image.dtype} shape {image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise UnsupportedImageError(f"{what} has no pixels: shape {image.shape}")
    return image


def _coerce(p: Param, value: Any, attack: str) -> Any:
    where = f"{attack}.{p.name}"
    if value is None:
        if p.nullable:
            return None
        raise AttackParameterError(f"{where} must not be null")
    kind = p.kind
    try:
        if kind is bool:
            if not isinstance(value, bool | np.bool_):
                raise TypeError(f"expected a boolean, got {type(value).__name__}")
            value = bool(value)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int | np.integer | float | np.floating):
                raise TypeError(f"expected an integer, got {type(value).__name__}")
            if not math.isfinite(float(value)) or float(value) != int(value):
                raise TypeError(f"expected an integer, got {value!r}")
            value = int(value)
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, int | np.integer | float | np.floating):
                raise TypeError(f"expected a number, got {type(value).__name__}")
            value = float(value)
            if not math.isfinite(value):
                raise TypeError(f"expected a finite number, got {value!r}")
        elif kind is str:
            if not isinstance(value, str):
                raise TypeError(f"expected a string, got {type(value).__name__}")
        elif kind in (list, tuple):
            if not isinstance(value, list | tuple):
                raise TypeError(f"expected a list, got {type(value).__name__}")
            value = kind(value)
        elif kind is dict:
            if not isinstance(value, Mapping):
                raise TypeError(f"expected a mapping, got {type(value).__name__}")
            value = dict(value)
    except TypeError as exc:
        raise AttackParameterError(f"{where}: {exc}") from None
    if p.choices is not None and value not in p.choices:
        raise AttackParameterError(f"{where} must be one of {list(p.choices)}; got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if p.low is not None and value < p.low:
            raise AttackParameterError(f"{where} must be >= {p.low}; got {value!r}")
        if p.high is not None and value > p.high:
            raise AttackParameterError(f"{where} must be <= {p.high}; got {value!r}")
    return value


def _default_draw(p: Param, rng: np.random.Generator) -> Any:
    if p.low is None or p.high is None:
        raise AttackError(f"random parameter {p.name} needs low/high or a draw function")
    if p.kind is int:
        return int(rng.integers(int(p.low), int(p.high) + 1))
    return float(rng.uniform(p.low, p.high))


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its function, parameters, family and strength."""

    name: str
    family: Family
    func: Callable[..., Image]
    params: tuple[Param, ...]
    strength_fn: Callable[[Mapping[str, Any]], float]
    description: str = ""
    identity: Mapping[str, Any] | None = None
    """Parameters at which the attack is the identity (strength 0), where defined."""
    slow: bool = False
    """True for attacks allowed to exceed the 10 ms budget on 512x512 (stated in docs)."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    resolver: ResolveFn | None = None
    """Optional hook run first by :meth:`draw`: ``resolver(rng, config, context) -> config``.
    Used by composite attacks whose configuration nests other attacks' configurations;
    parameters it leaves out are then drawn as usual."""

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise AttackParameterError(f"{self.name} has no parameter {name!r}; it has {list(self.param_names)}")

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults, coerce types, check ranges; reject unknown or missing parameters."""
        if not isinstance(params, Mapping):
            raise AttackParameterError(f"{self.name}: parameters must be a mapping, got {type(params).__name__}")
        unknown = set(params) - set(self.param_names)
        if unknown:
            raise AttackParameterError(
                f"{self.name}: unknown parameter(s) {sorted(unknown)}; expected some of {list(self.param_names)}"
            )
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name in params:
                value = params[p.name]
                if _is_random_spec(value):
                    raise AttackParameterError(
                        f"{self.name}.{p.name} is a random specification {value!r}; draw parameters first"
                    )
                out[p.name] = _coerce(p, value, self.name)
            elif self.defaults.get(p.name, REQUIRED) is not REQUIRED:
                out[p.name] = self.defaults[p.name]
            else:
                raise AttackParameterError(f"{self.name}: missing required parameter {p.name!r}")
        return out

    def draw(
        self,
        rng: np.random.Generator,
        config: Mapping[str, Any] | None = None,
        context: SampleContext | None = None,
    ) -> dict[str, Any]:
        """Concrete, validated parameters from a configuration.

        Random specifications in ``config`` are resolved first; then every ``random``
        parameter the configuration does not fix is drawn. Draw order is the declared
        parameter order, so the same generator state gives the same parameters.
        """
        config = dict(config or {})
        ctx = context or SampleContext(512, 512)
        unknown = set(config) - set(self.param_names)
        if unknown:
            raise AttackParameterError(
                f"{self.name}: unknown parameter(s) {sorted(unknown)}; expected some of {list(self.param_names)}"
            )
        if self.resolver is not None:
            config = dict(self.resolver(rng, config, ctx))
        resolved: dict[str, Any] = {}
        for p in self.params:
            if p.name in config:
                resolved[p.name] = resolve_random(config[p.name], rng, name=f"{self.name}.{p.name}")
        for p in self.params:
            if p.random and p.name not in resolved:
                resolved[p.name] = p.draw(rng, ctx, resolved) if p.draw else _default_draw(p, rng)
        return self.validate(resolved)

    def strength(self, params: Mapping[str, Any]) -> float:
        """Normalized strength in [0, 1] of concrete parameters."""
        s = float(self.strength_fn(self.validate(params)))
        return 0.0 if not math.isfinite(s) else min(1.0, max(0.0, s))

    def apply(self, image: Image, params: Mapping[str, Any] | None = None) -> Image:
        """Apply with concrete parameters (validated); the output is checked too."""
        check_image(image)
        concrete = self.validate(params or {})
        try:
            out = self.func(image, **concrete)
        except TracemarkError:
            raise
        except (ValueError, TypeError, ArithmeticError, MemoryError, OSError) as exc:
            raise AttackError(f"{self.name} failed with {concrete}: {type(exc).__name__}: {exc}") from exc
        return check_image(out, what=f"output of attack {self.name}")


_REGISTRY: dict[str, AttackSpec] = {}


def register_attack(
    name: str,
    family: Family | str,
    *,
    params: Sequence[Param] = (),
    strength: Callable[[Mapping[str, Any]], float],
    description: str | None = None,
    identity: Mapping[str, Any] | None = None,
    slow: bool = False,
    resolver: ResolveFn | None = None,
) -> Callable[[Callable[..., Image]], Callable[..., Image]]:
    """Decorator registering a pure attack function ``func(image, **params)``.

    Every declared :class:`Param` must be a keyword of ``func``, and every keyword of
    ``func`` after the image must be declared; defaults come from the signature.
    ``resolver`` (optional) replaces the generic parameter draw, for attacks whose
    configuration nests other configurations (``compose``).
    """

    def deco(func: Callable[..., Image]) -> Callable[..., Image]:
        if name in _REGISTRY:
            raise AttackError(f"attack {name!r} is already registered")
        sig = inspect.signature(func)
        names = list(sig.parameters)[1:]
        declared = [p.name for p in params]
        if sorted(names) != sorted(declared):
            raise AttackError(
                f"attack {name!r}: declared params {declared} do not match the signature {names}"
            )
        defaults = {
            n: (REQUIRED if sig.parameters[n].default is inspect.Parameter.empty else sig.parameters[n].default)
            for n in names
        }
        doc = description if description is not None else (inspect.getdoc(func) or "").split("\n")[0]
        _REGISTRY[name] = AttackSpec(
            name=name,
            family=Family(family),
            func=func,
            params=tuple(params),
            strength_fn=strength,
            description=doc,
            identity=dict(identity) if identity is not None else None,
            slow=slow,
            defaults=defaults,
            resolver=resolver,
        )
        return func

    return deco


def get_attack(name: str) -> AttackSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownAttackError(
            f"unknown attack {name!r}; known attacks: {', '.join(sorted(_REGISTRY))}"
        ) from None


def list_attacks() -> list[AttackSpec]:
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def attack_names() -> list[str]:
    return sorted(_REGISTRY)


def apply_attack(image: Image, name: str, **params: Any) -> Image:
    """Apply the attack ``name`` with concrete parameters: the replay entry point."""
    return get_attack(name).apply(image, params)


def draw_params(
    name: str,
    rng: np.random.Generator,
    config: Mapping[str, Any] | None = None,
    context: SampleContext | None = None,
) -> dict[str, Any]:
    return get_attack(name).draw(rng, config, context)

"""The attack library: pure functional attacks, their registry, and named suites.

>>> from tracemark import attacks
>>> out = attacks.apply_attack(img, "jpeg", quality=50)      # replayable, deterministic
>>> suite = attacks.get_suite("wbench-distortions")
>>> for record, attacked in suite.run(img, seed=0): ...

Importing this package registers every built-in attack (the modules below).
"""

from tracemark.attacks import (  # noqa: F401  (imported for their registrations)
    composite,
    degradation,
    geometric,
    overlay,
    photometric,
)
from tracemark.attacks.base import (
    REQUIRED,
    AttackSpec,
    Family,
    Image,
    Param,
    SampleContext,
    apply_attack,
    attack_names,
    check_image,
    draw_params,
    get_attack,
    list_attacks,
    register_attack,
    resolve_random,
)
from tracemark.attacks.suites import (
    AttackRecord,
    Suite,
    SuiteEntry,
    derive_seed,
    get_suite,
    list_suites,
    load_suite,
    suite_from_dict,
)

__all__ = [
    "REQUIRED",
    "AttackRecord",
    "AttackSpec",
    "Family",
    "Image",
    "Param",
    "SampleContext",
    "Suite",
    "SuiteEntry",
    "apply_attack",
    "attack_names",
    "check_image",
    "derive_seed",
    "draw_params",
    "get_attack",
    "get_suite",
    "list_attacks",
    "list_suites",
    "load_suite",
    "register_attack",
    "resolve_random",
    "suite_from_dict",
]

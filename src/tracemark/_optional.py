"""Optional dependencies: import them lazily and name the extra when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from tracemark.errors import MissingExtraError

__all__ = ["require"]


def require(module: str, extra: str, *, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``tracemark[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" for {purpose}" if purpose else ""
        raise MissingExtraError(
            f"the optional dependency {module!r} is needed{what} but is not installed; "
            f"run: pip install 'tracemark[{extra}]'"
        ) from exc

"""Target registry: name -> Target class. ``shiftc targets`` lists it."""

from __future__ import annotations

from shiftc.core.errors import InputError

from .arm import Arm
from .base import Target, Tool
from .cuda import Cuda
from .vta.target import VTA
from .x86 import X86

REGISTRY: dict[str, type[Target]] = {"x86": X86, "arm": Arm, "cuda": Cuda, "vta": VTA}


def get(name: str, **options) -> Target:
    """Instantiate a target by name; unknown names and options are input errors."""
    if name not in REGISTRY:
        raise InputError(f"unknown target {name!r}; known targets: {', '.join(sorted(REGISTRY))}")
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return REGISTRY[name](**options)
    except TypeError:
        raise InputError(f"target {name!r} does not take option(s) {sorted(options)}") from None


def from_description(desc: dict) -> Target:
    """Rebuild the target recorded in an artifact's meta.json."""
    return get(desc["name"], **desc.get("options", {}))


__all__ = ["REGISTRY", "Target", "Tool", "get", "from_description"]

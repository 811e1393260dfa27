"""Target registry: name -> Target class. ``shiftc targets`` lists it.

Adding a target is one file (a ``base.Target`` subclass that declares its options, tools,
lowering, run and comparison hooks) plus one line here; the CLI, the API and the matrix read
everything else from the class (tests/test_target_plugin.py shows it).
"""

from __future__ import annotations

import importlib
from collections.abc import MutableMapping

from shiftc.core.errors import InputError

from .base import Comparison, Target, TargetOption, Tool


class _Registry(MutableMapping):
    """Name -> Target class; a built-in target's module is imported when its class is first looked
    up (``shiftc run`` on an x86 artifact imports no other target). Plugins add classes."""

    def __init__(self, entries: dict[str, str | type[Target]]):
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> type[Target]:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, cls = entry.partition(":")
            entry = self._entries[name] = getattr(importlib.import_module(module, __name__), cls)
        return entry

    def __setitem__(self, name: str, cls: type[Target]) -> None:
        self._entries[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


REGISTRY: MutableMapping[str, type[Target]] = _Registry({
    "x86": ".x86:X86",
    "arm": ".arm:Arm",
    "cuda": ".cuda:Cuda",
    "vta": ".vta.target:VTA",
})


def target_class(name: str) -> type[Target]:
    """The registered class of ``name``; an unknown name is an input error."""
    if name not in REGISTRY:
        raise InputError(f"unknown target {name!r}; known targets: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def get(name: str, **options) -> Target:
    """Instantiate a target by name; unknown names, options and option values are input errors."""
    cls = target_class(name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(cls.option_names()))
    if unknown:
        raise InputError(f"target {name!r} does not take option(s) {unknown}; its options: {cls.option_names()}")
    return cls(**options)


def from_description(desc: dict) -> Target:
    """Rebuild the target recorded in an artifact's meta.json."""
    return get(desc["name"], **desc.get("options", {}))


def option_specs() -> dict[str, list[tuple[str, TargetOption]]]:
    """Every registered option name -> the (target, spec) pairs that declare it, in registry order."""
    found: dict[str, list[tuple[str, TargetOption]]] = {}
    for name, cls in REGISTRY.items():
        for spec in cls.option_specs:
            found.setdefault(spec.name, []).append((name, spec))
    return found


def parse_options(name: str, given: dict[str, str]) -> dict:
    """Command-line values (option name -> text) for target ``name``, converted by its specs; a
    flag the target does not declare is an input error."""
    cls = target_class(name)
    specs = {spec.name: spec for spec in cls.option_specs}
    foreign = [k for k in given if k not in specs]
    if foreign:
        flags = ", ".join(TargetOption(k).flag for k in foreign)
        known = ", ".join(spec.flag for spec in cls.option_specs) or "none"
        raise InputError(f"target {name!r} does not take {flags} (its options: {known})")
    return {k: specs[k].parse(name, text) for k, text in given.items()}


def options_for(names: list[str], given: dict[str, str]) -> dict[str, dict]:
    """Command-line values for several targets (the matrix): each target takes the ones it
    declares; a flag that none of them declares is an input error."""
    declared = {n: target_class(n).option_names() for n in names}
    unused = [k for k in given if not any(k in own for own in declared.values())]
    if unused:
        flags = ", ".join(TargetOption(k).flag for k in unused)
        raise InputError(f"no target of {', '.join(names)} takes {flags}")
    return {n: parse_options(n, {k: v for k, v in given.items() if k in own}) for n, own in declared.items()}


def apt_packages(names: list[str] | None = None, missing_only: bool = False) -> list[str]:
    """The Debian packages of the named targets' tools (None: the targets ``installed_by_default``),
    sorted; ``missing_only``: only those of tools not found on PATH (nvcc from an NVIDIA install
    counts as found)."""
    chosen = names if names else [n for n, cls in REGISTRY.items() if cls.installed_by_default]
    tools = [t for n in chosen for t in get(n).apt_tools()]
    return sorted({t.package for t in tools if not (missing_only and t.path() is not None)})


__all__ = ["REGISTRY", "Comparison", "Target", "TargetOption", "Tool", "apt_packages", "from_description",
           "get", "option_specs", "options_for", "parse_options", "target_class"]

"""What every target provides: a TVM target, its tools, a build into a folder, and a runner."""

from __future__ import annotations

import json
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from shiftc.core.errors import ToolchainError


@dataclass(frozen=True)
class Tool:
    """An external program a target needs, and the Debian package that provides it."""

    program: str
    package: str
    purpose: str
    needed_for: str = "build"  # "build" (compile needs it) or "run" (only running the artifact here)

    def path(self) -> str | None:
        return shutil.which(self.program)


class Session(Protocol):
    """A loaded artifact that runs inputs to outputs (positional, in model order)."""

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class Target(ABC):
    """Base class. Subclasses set ``name``/``summary`` and implement the hooks."""

    name = "base"
    summary = ""
    tools = ()  # the Tool tuple, overridden per target
    runs_here = True

    @abstractmethod
    def tvm_target(self):
        """The ``tvm.target.Target`` (built from a JSON dict) kernels are compiled for."""

    def options(self) -> dict:
        """The options that define this target instance (round-trips through ``from_options``)."""
        return {}

    def missing_tools(self) -> list[Tool]:
        return [t for t in self.tools if t.path() is None]

    def require_tools(self, needed_for: str = "build") -> None:
        missing = [t for t in self.missing_tools() if t.needed_for == needed_for]
        if missing:
            t = missing[0]
            raise ToolchainError(
                f"target {self.name!r} needs {t.program} ({t.purpose}); install it with: apt-get install {t.package}"
            )

    def required_options(self) -> dict:
        """Pass options this target needs (e.g. ``{"integer_only": True}``); the API sets them and
        rejects a conflicting user value."""
        return {}

    def lower(self, mod, report):
        """A target-specific Relax -> Relax rewrite before the build (e.g. offloading layers to an
        accelerator); may add a stage to ``report`` (shiftc.core.report.Report)."""
        return mod

    def notes(self) -> list[str]:
        """Extra readiness facts for ``shiftc targets`` (caches, devices)."""
        return []

    def schedule(self, mod):
        """Schedule the Relax module's kernels for this target before ``tvm.compile`` (default: none).

        The pipeline calls this just before the build; targets ask ``shiftc.schedules`` for theirs.
        """
        return mod

    @abstractmethod
    def build(self, executable, out_dir: Path) -> list[str]:
        """Export a compiled Relax executable into ``out_dir``; return the file names written."""

    @abstractmethod
    def load(self, artifact_dir: Path, meta: dict) -> Session:
        """Open a verified artifact folder for running."""

    def describe(self) -> dict:
        return {"name": self.name, "options": self.options(), "tvm": json.loads(str(self.tvm_target()))}

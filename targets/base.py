"""What every target provides, and everything it declares about itself.

A target is one subclass of ``Target`` in one file plus one line in ``targets.REGISTRY``. What the
rest of shiftc asks of it:

- ``option_specs``: its options (``TargetOption``); the CLI builds ``--cpu``, ``--arch``, ... from
  them, ``targets.get`` checks them, ``options()`` records them in the artifact.
- ``tvm_target()``, ``lower(mod, report)``, ``lowering()`` / ``schedule(mod)``, ``build``, ``load``:
  compiling and running; ``loads_on_tvm_runtime``: ``shiftc run`` may skip TVM's compiler library.
- ``tools`` / ``apt_tools()`` / ``installed_by_default``: its toolchain and the Debian packages
  that provide it (``shiftc targets --apt``, ``scripts/setup.sh``).
- ``can_run_here()`` / ``emulator()`` / ``comparison()``: how ``shiftc matrix`` treats it.
"""

from __future__ import annotations

import json
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, Sequence

import numpy as np

from shiftc.core.errors import InputError, ToolchainError
from shiftc.schedules import Lowering, shift_form


@dataclass(frozen=True)
class Tool:
    """An external program a target needs, and the Debian package that provides it."""

    program: str
    package: str
    purpose: str
    needed_for: str = "build"  # "build" (compile needs it) or "run" (only running the artifact here)

    def path(self) -> str | None:
        return shutil.which(self.program)


@dataclass(frozen=True)
class TargetOption:
    """One option of a target: the keyword of ``shiftc.compile(..., name=value)`` and of the target
    class (a dataclass field of the same name), and the CLI flag ``--name`` (``_`` -> ``-``).

    ``type``: str, int or float. ``choices``: the allowed values (None: any). ``default``: the field's
    default as the help shows it (None: computed, e.g. this host's CPU; ``help`` says how).
    """

    name: str
    type: type = str
    help: str = ""
    choices: tuple | None = None
    default: object = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, target: str, text: str):
        """The value of ``--flag TEXT`` for ``target``, converted to ``type`` and checked."""
        try:
            value = self.type(text)
        except ValueError:
            raise InputError(f"target {target!r}: {self.flag} takes a value of type {self.type.__name__}, got {text!r}") from None
        self.check(target, value)
        return value

    def describe(self) -> str:
        """The help text with the choices and the default."""
        text = self.help
        if self.choices is not None:
            text += f"; one of {', '.join(map(str, self.choices))}"
        if self.default is not None:
            text += f" (default {self.default})"
        return text

    def check(self, target: str, value) -> None:
        """An ``InputError`` unless ``value`` (None: unset) has this option's type and is a choice."""
        if value is None:
            return
        if type(value) is not self.type and not (self.type is float and type(value) is int):
            raise InputError(f"target {target!r}: {self.name} must be of type {self.type.__name__}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise InputError(f"unknown {target} {self.name} {value!r}; known: {', '.join(map(str, self.choices))}")


@dataclass(frozen=True)
class Comparison:
    """What ``shiftc matrix`` compares a target's outputs with, on the same input.

    ``reference``: ``"onnxruntime"`` (the FP32 model) or a registered target name, built with
    ``options`` (target and pass options, as for ``shiftc.compile``). ``tolerance``: the largest
    error allowed (``matrix.output_error``); None takes the matrix's ``--tolerance``, 0 is bit for bit.
    """

    reference: str = "onnxruntime"
    options: dict = field(default_factory=dict)
    tolerance: float | None = None

    def describe(self) -> str:
        """E.g. ``onnxruntime FP32`` or ``x86 --integer-only --requant pow2, bit for bit``."""
        words = ["onnxruntime FP32"] if self.reference == "onnxruntime" else [self.reference]
        for key, value in self.options.items():
            flag = "--" + key.replace("_", "-")
            words += [flag] if value is True else [flag, str(value)]
        return " ".join(words) + (", bit for bit" if self.tolerance == 0 else "")


class Session(Protocol):
    """A loaded artifact that runs inputs to outputs (positional, in model order)."""

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class Target(ABC):
    """Base class. Subclasses set ``name``/``summary``/``option_specs`` (one dataclass field per
    option) and implement the abstract hooks; the other hooks have defaults for an LLVM CPU target
    that runs on this host. A subclass with its own ``__post_init__`` calls ``super().__post_init__()``
    after filling in computed defaults: it checks every option against its spec."""

    name = "base"
    summary = ""
    option_specs: ClassVar[tuple[TargetOption, ...]] = ()
    tools: ClassVar[tuple[Tool, ...]] = ()
    installed_by_default = True  # `shiftc targets --apt` (and so scripts/setup.sh) without names includes it
    load_on_open = True  # False: shiftc.load opens the session on first run (targets not every host runs)
    # True: ``load`` and running need only TVM's runtime library, so ``shiftc run`` may import TVM
    # without its compiler (TVM_USE_RUNTIME_LIB=1). Subclasses whose ``load`` needs more set it False.
    loads_on_tvm_runtime: ClassVar[bool] = False

    def __post_init__(self):
        for spec in self.option_specs:
            spec.check(self.name, getattr(self, spec.name))

    # ------------------------------------------------------------------ options
    @classmethod
    def option_names(cls) -> list[str]:
        return [spec.name for spec in cls.option_specs]

    def options(self) -> dict:
        """The options that define this target instance (round-trips through ``targets.get``)."""
        return {spec.name: getattr(self, spec.name) for spec in self.option_specs}

    def required_options(self) -> dict:
        """Pass options this target needs (e.g. ``{"integer_only": True}``); the API sets them and
        rejects a conflicting user value."""
        return {}

    # ------------------------------------------------------------------ toolchain
    def missing_tools(self) -> list[Tool]:
        return [t for t in self.tools if t.path() is None]

    def require_tools(self, needed_for: str = "build") -> None:
        missing = [t for t in self.missing_tools() if t.needed_for == needed_for]
        if missing:
            t = missing[0]
            raise ToolchainError(
                f"target {self.name!r} needs {t.program} ({t.purpose}); install it with: apt-get install {t.package}"
            )

    def apt_tools(self) -> tuple[Tool, ...]:
        """The tools ``shiftc targets --apt`` installs for this target: its ``tools``, and optional
        ones it can use (each names its Debian package)."""
        return self.tools

    def notes(self) -> list[str]:
        """Extra readiness facts for ``shiftc targets`` (caches, devices)."""
        return []

    # ------------------------------------------------------------------ compile
    @abstractmethod
    def tvm_target(self):
        """The ``tvm.target.Target`` (built from a JSON dict) kernels are compiled for."""

    def lower(self, mod, report):
        """A target-specific Relax -> Relax rewrite before the build (e.g. offloading layers to an
        accelerator); may add a stage to ``report`` (shiftc.core.report.Report)."""
        return mod

    def integer_form(self) -> str:
        """``"dot"`` or ``"shift"``: the form integer shift kernels run in here, as measured on this
        target (``schedules/shift_kernel_choice.json``, by target name; unmeasured: shift)."""
        return shift_form.int_kernel_form(self.name)

    def lowering(self) -> Lowering | None:
        """How ``shiftc.schedules`` lowers and schedules the kernels (fusion, tuning databases,
        default CPU schedules): a ``schedules.Lowering``. None: the target's own ``schedule`` hook
        does it all (cuda), and tuning databases do not apply."""
        return Lowering(cpu=True, shift_form=self.integer_form(), int8_dot=False)

    def schedule(self, mod):
        """Schedule the Relax module's kernels before ``tvm.compile``, for a target whose
        ``lowering()`` is None; it asks ``shiftc.schedules`` for its schedules."""
        return mod

    @abstractmethod
    def build(self, executable, out_dir: Path) -> list[str]:
        """Export a compiled Relax executable into ``out_dir``; return the file names written."""

    def describe(self) -> dict:
        return {"name": self.name, "options": self.options(), "tvm": json.loads(str(self.tvm_target()))}

    # ------------------------------------------------------------------ run
    @abstractmethod
    def load(self, artifact_dir: Path, meta: dict) -> Session:
        """Open a verified artifact folder for running."""

    def can_run_here(self) -> str | None:
        """Why an artifact cannot run on this machine (None when it can): a missing run tool."""
        missing = [t for t in self.missing_tools() if t.needed_for == "run"]
        if missing:
            return f"{missing[0].program} missing: apt-get install {missing[0].package}"
        return None

    def emulator(self) -> str | None:
        """The emulator artifacts run under on this machine (None: natively)."""
        return None

    def comparison(self) -> Comparison:
        """What ``shiftc matrix`` compares this target's outputs with (default: onnxruntime FP32
        within the matrix's tolerance)."""
        return Comparison()

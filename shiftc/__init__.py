"""shiftc: ONNX -> shift/add and integer-only kernels on Apache TVM.

``compile``, ``load`` and ``CompiledModel`` (``shiftc.api``) import TVM on first use, so that
``import shiftc`` and the command line's help stay fast.
"""

__version__ = "0.1.0"

from .core.errors import InputError, ShiftcError, ToolchainError, UnsupportedModelError  # noqa: E402,F401

_API = ("CompiledModel", "compile", "load")
__all__ = [*_API, "InputError", "ShiftcError", "ToolchainError", "UnsupportedModelError", "__version__"]


def __getattr__(name):
    """``compile``/``load``/``CompiledModel`` from ``shiftc.api``, and submodules (``shiftc.api``,
    ``shiftc.frontend``, ...) on first access, as an eager ``import shiftc`` used to provide."""
    import importlib

    if name in _API:
        return getattr(importlib.import_module(".api", __name__), name)
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'shiftc' has no attribute {name!r}")

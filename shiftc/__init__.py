"""shiftc: ONNX -> shift/add and integer-only kernels on Apache TVM."""

__version__ = "0.1.0"

from .api import CompiledModel, compile, load  # noqa: E402,F401
from .core.errors import InputError, ShiftcError, ToolchainError, UnsupportedModelError  # noqa: E402,F401

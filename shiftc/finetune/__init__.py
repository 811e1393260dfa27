"""Shift-aware fine-tuning: ONNX or torch in, ONNX on shiftc's shift-code grid out (docs/FINETUNE.md).

``shiftc.finetune(model, data, ...)`` calls ``shiftc.finetune.run.finetune``: the package itself
is callable, and its submodules (``shift_param``, ``convert``, ...) import as usual.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .run import finetune

        return finetune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

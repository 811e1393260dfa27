"""Float-op scan: prove that an integerized module computes in integers between its input
quantisers and its output dequantisers.

Two views, both required to be clean:

- **Lowered kernels**: the module is lowered with TVM's default Relax pipeline for the target
  (legalisation, fusion, VM lowering: what ``tvm.compile`` runs before TIR codegen); every
  PrimFunc's TIR text is searched for a float dtype (``float16/32/64``, ``bfloat16``, vectors).
  Kernels whose ``Boundary`` contract (``shiftc.core.contract``) is ``quantize`` / ``dequantize``
  are exempt; ``float_island`` kernels are not (they are float ops kept on purpose).
- **Relax graph**: every value of ``main`` that is a float tensor must be a parameter or the
  result of a boundary kernel; a float parameter may only feed input quantisers.

``float_ops(mod)`` returns the offences (empty = integer-only) of a module straight after
integerize, lowered here with TVM's default pipeline. ``build_float_ops(prepared, finished)`` checks
what a build really compiles instead (``shiftc.api.prepare``): the graph view on the fused,
scheduled module and the kernel view on every PrimFunc of the module handed to TIR codegen (after
the target's CPU lowerings: shift dot form, requantisers as Relax ops, int8 GEMM intrinsic, fusion,
schedules). Fused kernels are matched to the boundary by their ``Boundary`` attribute, never by
name (boundary kernels are ``op_pattern`` opaque, so fusion leaves them alone).
"""

from __future__ import annotations

import re

import tvm
from tvm import relax

from shiftc.core.contract import Boundary

BOUNDARY = ("quantize", "dequantize")
_FLOAT = re.compile(r"\b(b?float(16|32|64)(x\d+)?)\b")


def _boundary(func) -> str | None:
    """The ``Boundary`` kind of a kernel (quantize, dequantize, float_island), else None."""
    found = Boundary.from_func(func)
    return None if found is None else found.kind


def lower(mod: tvm.IRModule, target=None) -> tvm.IRModule:
    """What ``tvm.compile`` runs on the Relax side (default pipeline), for an llvm host target."""
    target = target or tvm.target.Target({"kind": "llvm"})
    with target, tvm.transform.PassContext(opt_level=3):
        return relax.get_pipeline("default")(mod)


def kernel_floats(lowered: tvm.IRModule, exempt=BOUNDARY) -> list[str]:
    """``name: dtypes`` for every PrimFunc that mentions a float dtype and is not exempt."""
    bad = []
    for gv, f in lowered.functions.items():
        if not isinstance(f, tvm.tirx.PrimFunc) or _boundary(f) in exempt:
            continue
        found = sorted({m.group(1) for m in _FLOAT.finditer(f.script())})
        if found:
            bad.append(f"kernel {gv.name_hint}: {', '.join(found)}")
    return bad


def graph_floats(mod: tvm.IRModule, func_name: str = "main", exempt=BOUNDARY) -> list[str]:
    """Float tensors of ``main`` that are neither parameters nor boundary-kernel results, and float
    parameters that feed anything but an input quantiser."""
    func = mod[func_name]
    params = {p for p in func.params}
    boundary = []  # float values the boundary made (and aliases of them)
    bad = []
    for block in func.body.blocks:
        for b in block.bindings:
            v = b.value
            kind = None
            if isinstance(v, relax.Call) and getattr(v.op, "name", "") == "relax.call_tir":
                kind = _boundary(mod[v.args[0]])
            parts = v.fields if isinstance(v, relax.Tuple) else [v]
            if (kind in exempt) or all(any(x.same_as(o) for o in boundary) for x in parts):
                boundary.append(b.var)
            elif _is_float(b.var.ty):
                bad.append(f"value {b.var.name} = {_describe(v)}: {b.var.ty}")
            if kind != "quantize" and isinstance(v, relax.Call):
                for a in _flat_args(v):
                    if any(a.same_as(p) for p in params) and _is_float(a.ty):
                        bad.append(f"float input {a.name} read by {_describe(v)}")
    return bad


def float_ops(mod: tvm.IRModule, target=None, func_name: str = "main") -> list[str]:
    """Every float computation outside the quantiser/dequantiser boundary (empty list: none)."""
    return graph_floats(mod, func_name) + kernel_floats(lower(mod, target))


def build_float_ops(prepared: tvm.IRModule, finished: tvm.IRModule, exempt=BOUNDARY) -> list[str]:
    """``float_ops`` of a build: ``graph_floats`` of the ``prepared`` (fused, scheduled) module and
    ``kernel_floats`` of ``finished`` (the same module after the Relax pipeline, as TIR codegen
    receives it: every kernel of the executable). ``exempt``: the ``Boundary`` kinds let through
    (add ``"float_island"`` for a --float-fallback build; the float op inside stays an offence)."""
    return graph_floats(prepared, exempt=exempt) + kernel_floats(finished, exempt=exempt)


def _is_float(ty) -> bool:
    if isinstance(ty, relax.TupleType):
        return any(_is_float(t) for t in ty.fields)
    return isinstance(ty, relax.TensorType) and str(ty.dtype).startswith(("float", "bfloat"))


def _flat_args(call):
    for a in call.args:
        if isinstance(a, relax.Tuple):
            yield from a.fields
        else:
            yield a


def _describe(v) -> str:
    if isinstance(v, relax.Call):
        op = v.op
        if getattr(op, "name", "") == "relax.call_tir":
            return f"call_tir({v.args[0].name_hint})"
        return getattr(op, "name", None) or getattr(op, "name_hint", "call")
    return type(v).__name__

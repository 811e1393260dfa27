"""Lowered TIR of the shift kernels and of the add-only attention kernels (sign, sign matmul)
holds no multiply on activation or weight data in the reduction.

The kernels are scheduled (default CPU schedule) and lowered with TVM's TIR passes up to the
packed-API boundary (flattened buffers, vectorised, unrolled, CSE).  The lowered TVMScript is
Python syntax, so it is parsed with ``ast``: inside every loop over a reduction axis, values
derived (transitively, through CSE lets and buffer aliases) from the activation, the codes or
the decoded weights must never meet a ``*``.  Index arithmetic on loop variables may multiply.
The int dot-product kernel is the positive control: the same scan must find its multiply.
"""

import ast

import pytest
import tvm
from tvm import s_tir, te, tirx

from benchmarks.dot_kernels import shift_conv2d_int_dot
from shiftc.kernels import attention as AK
from shiftc.kernels import shift as K
from shiftc.schedules.shift_schedule import schedule_cpu

REDUCE_AXES = {"t", "k", "ic", "r", "s"}  # reduce_axis names used by the kernels
DATA_BUFFERS = {"x", "w", "sgn", "val", "wdot", "shift_code", "shift_decode", "shift_decode_q", "shift_decode_m", "shift_decode_z", "shift_pad"}


def lower(func):
    passes = [
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerMatchBuffer(),
        s_tir.transform.LowerOpaqueBlock(),
        tirx.transform.FlattenBuffer(),
        tirx.transform.NarrowDataType(32),
        s_tir.transform.LoopPartition(),
        tirx.transform.VectorizeLoop(True),
        tirx.transform.StorageRewrite(),
        tirx.transform.UnrollLoop(),
        tirx.transform.StmtSimplify(),
        tirx.transform.RemoveNoOp(),
        tirx.transform.CommonSubexprElim(),
    ]
    return tvm.transform.Sequential(passes)(tvm.IRModule({"main": func}))["main"]


def names_in(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def data_multiplies(func, data=(), anywhere=False) -> tuple[int, list[str]]:
    """(number of reduction loops, multiplies of data-derived values inside them; ``anywhere``:
    outside loops too). ``data``: more buffer names holding data (e.g. a compiled kernel's params)."""
    tree = ast.parse(func.script())
    tainted = set(DATA_BUFFERS) | set(data)
    assigns = [n for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))]
    changed = True
    while changed:  # propagate through aliases and CSE lets: x_1 = decl_buffer(data=x.data), cse_v = f(x_1[...])
        changed = False
        for a in assigns:
            targets = a.targets if isinstance(a, ast.Assign) else [a.target]
            if a.value is not None and names_in(a.value) & tainted:
                for t in targets:
                    new = names_in(t) - tainted
                    if new and isinstance(t, ast.Name):
                        tainted |= new
                        changed = True
    loops = [n for n in ast.walk(tree) if isinstance(n, ast.For) and names_in(n.target) & REDUCE_AXES]  # also T.grid(...)
    found = []
    for loop in [tree] if anywhere else loops:
        for node in ast.walk(loop):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
                if (names_in(node.left) | names_in(node.right)) & tainted:
                    found.append(ast.unparse(node)[:120])
    return len(loops), found


def conv_float():
    X = te.placeholder((1, 8, 9, 9), "float32", "x")
    W = te.placeholder(((2 * 8 * 4 * 3 * 3 * 4 + 7) // 8 + 1,), "uint8", "w")
    A = te.placeholder((8,), "float32", "alpha")
    Y = K.shift_conv2d_float(X, W, A, weight_shape=(8, 4, 3, 3), terms=2, bits=4, zero_free=True, packed=True,
                             stride=(2, 1), padding=(1, 1, 1, 1), dilation=(1, 2), groups=2)
    return te.create_prim_func([X, W, A, Y])


def matmul_float():
    X = te.placeholder((2, 40), "float32", "x")
    W = te.placeholder(((24 * 40 * 5 + 7) // 8 + 1,), "uint8", "w")
    A = te.placeholder((24,), "float32", "alpha")
    Y = K.shift_matmul_float(X, W, A, out_features=24, terms=1, bits=5, zero_free=False, packed=True)
    return te.create_prim_func([X, W, A, Y])


def conv_int():
    X = te.placeholder((1, 6, 8, 8), "int8", "x")
    W = te.placeholder((1, 6, 6, 3, 3), "int8", "w")
    Y = K.shift_conv2d_int(X, W, weight_shape=(6, 6, 3, 3), P=7, padding=(1, 1, 1, 1))
    return te.create_prim_func([X, W, Y])


def matmul_int():
    X = te.placeholder((3, 50), "int8", "x")
    W = te.placeholder(((16 * 50 * 4 + 7) // 8 + 1,), "uint8", "w")
    Y = K.shift_matmul_int(X, W, out_features=16, P=7, bits=4, zero_free=True, packed=True)
    return te.create_prim_func([X, W, Y])


@pytest.mark.parametrize("make", [conv_float, matmul_float, conv_int, matmul_int])
def test_no_data_multiply_in_reduction_loops(make):
    for func in (make(), schedule_cpu(make())):
        n_loops, muls = data_multiplies(lower(func))
        assert n_loops >= 1, "no reduction loop found: the scan would be vacuous"
        assert muls == [], muls


def test_scan_finds_the_multiply_of_the_dot_form():
    X = te.placeholder((1, 6, 8, 8), "int8", "x")
    D = te.placeholder((6, 6, 3, 3), "int8", "wdot")
    Y = shift_conv2d_int_dot(X, D, P=6, padding=(1, 1, 1, 1))
    n_loops, muls = data_multiplies(lower(schedule_cpu(te.create_prim_func([X, D, Y]))))
    assert n_loops >= 1 and muls, "the control kernel multiplies x by wdot; the scan must see it"


def sign_matmul():
    S = te.placeholder((1, 4, 16, 16), "int8", "sgn")
    V = te.placeholder((1, 4, 16, 16), "int32", "val")
    return te.create_prim_func([S, V, AK.sign_matmul(S, V, 1 << 20)])


def sign():
    X = te.placeholder((1, 4, 16, 16), "int32", "x")
    return te.create_prim_func([X, AK.sign_int(X)])


def test_add_only_attention_kernels_never_multiply_data():
    """The sign matmul's reduction selects and adds; sign compares. Neither multiplies data anywhere."""
    n_loops, muls = data_multiplies(lower(sign_matmul()), anywhere=True)
    assert n_loops >= 1, "no reduction loop found: the scan would be vacuous"
    assert muls == [], muls
    assert data_multiplies(lower(sign()), anywhere=True)[1] == []


def test_scan_finds_the_multiply_of_an_int_attention_matmul():
    """Control: the same shapes as an int8 x int8 matmul (what attention is without sign) multiply."""
    S = te.placeholder((1, 4, 16, 16), "int8", "sgn")
    V = te.placeholder((1, 4, 16, 16), "int8", "val")
    k = te.reduce_axis((0, 16), name="k")
    Y = te.compute((1, 4, 16, 16), lambda b, h, i, j: te.sum(S[b, h, i, k].astype("int32") * V[b, h, k, j].astype("int32"), axis=k))
    assert data_multiplies(lower(te.create_prim_func([S, V, Y])), anywhere=True)[1]

"""cuda target: DLight scheduling, nvcc PTX of shift kernels, build without a GPU, refusal to run."""

from __future__ import annotations

import re

import numpy as np
import pytest
from tvm import relax, te

from shiftc import api
from shiftc.core.errors import ToolchainError
from shiftc.targets import cuda

from conftest import ort_run

pytestmark = pytest.mark.skipif(not cuda.Cuda().tools[0].path(), reason="needs nvcc (nvidia-cuda-toolkit)")



def relax_module(fn, *arg_types, **kwargs):
    """A Relax ``main`` that calls the TE kernel ``fn`` on fresh variables of the given types."""
    bb = relax.BlockBuilder()
    params = [relax.Var(f"a{i}", relax.TensorType(shape, dtype)) for i, (shape, dtype) in enumerate(arg_types)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(bb.call_te(fn, *params, **kwargs))
        bb.emit_func_output(out)
    return bb.get()


def build_ptx(mod, arch="sm_80"):
    import tvm

    tgt = cuda.Cuda(arch=arch)
    scheduled = tgt.schedule(mod)
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(scheduled, target=tgt.tvm_target())
    source = cuda.cuda_source(ex)
    return source, cuda.compile_ptx(source, tgt.tvm_target())


def shift_add(x):
    return te.compute(x.shape, lambda i, j: (x[i, j] << 3) + (x[i, j] >> 1), name="shift_add")


def plain_matmul(x, w):
    k = te.reduce_axis((0, x.shape[1]), name="k")
    acc = "int32" if x.dtype == "int8" else x.dtype
    return te.compute((x.shape[0], w.shape[0]), lambda i, o: te.sum(x[i, k].astype(acc) * w[o, k].astype(acc), axis=k), name="mm")


def test_dlight_schedules_every_kernel():
    mod = relax_module(shift_add, ((64, 128), "int32"))
    before = [gv.name_hint for gv, f in mod.functions.items() if not isinstance(f, relax.Function)]
    after = cuda.Cuda().schedule(mod)
    prims = {gv.name_hint: f for gv, f in after.functions.items() if not isinstance(f, relax.Function)}
    assert before == ["shift_add"] and set(prims) == {"shift_add"}
    text = prims["shift_add"].script()
    assert "blockIdx.x" in text and "threadIdx.x" in text
    assert "threadIdx" not in mod["shift_add"].script()


def test_shift_kernel_ptx_has_shifts_and_no_multiply():
    source, ptx = build_ptx(relax_module(shift_add, ((64, 128), "int32")))
    assert "<< 3" in source and ">> 1" in source
    assert ".target sm_80" in ptx
    assert re.search(r"^\s+shl\.b32", ptx, re.M) and re.search(r"^\s+shr\.s32", ptx, re.M)
    assert not cuda.data_multiplies(ptx)


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_multiply_detector_sees_a_real_matmul(dtype):
    """The check can fail: a conventional matmul's PTX multiplies data (dp4a for int8, fma for fp32)."""
    _, ptx = build_ptx(relax_module(plain_matmul, ((4, 64), dtype), ((16, 64), dtype)))
    assert cuda.data_multiplies(ptx)
    assert re.search(r"^\s+mul\.(lo|wide)", ptx, re.M), "index arithmetic multiplies exist and are not counted"


@pytest.mark.parametrize(
    "kernel, arg_types, kwargs",
    [
        ("shift_matmul_int", [((4, 64), "int8"), ((16, 64), "int8")], {"P": 6}),
        ("shift_conv2d_int", [((1, 8, 8, 8), "int8"), ((16, 8, 3, 3), "int8")], {"P": 6, "padding": 1}),
    ],
)
def test_integer_shift_kernels_ptx(kernel, arg_types, kwargs):
    """The schedules layer's integer shift kernels: shifts in the PTX, no multiply by a weight."""
    from shiftc.kernels import integer as int_kernels

    source, ptx = build_ptx(relax_module(getattr(int_kernels, kernel), *arg_types, **kwargs))
    assert "<<" in source
    assert re.search(r"^\s+shl\.b32", ptx, re.M)
    assert not cuda.data_multiplies(ptx), cuda.data_multiplies(ptx)


def test_shift_matmul_kernel_ptx():
    from shiftc.kernels import shift as sk

    source, ptx = build_ptx(relax_module(sk.shift_matmul_int, ((4, 64), "int8"), ((1, 16, 64), "int8"), out_features=16, P=6))
    assert re.search(r"^\s+shl\.b32", ptx, re.M)
    assert not cuda.data_multiplies(ptx)


@pytest.fixture(scope="module")
def small_model():
    from test_arm import mixed_dtype_model

    return mixed_dtype_model()


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_build_without_gpu(small_model, arch, tmp_path):
    cm = api.compile(small_model, "cuda", arch=arch, output=tmp_path / "a")
    assert set(cm.meta["files"]) == {"model.so", "kernels.cu", "kernels.ptx"}
    ptx = (tmp_path / "a" / "kernels.ptx").read_text()
    assert f".target {arch}" in ptx and ".entry" in ptx
    assert cm.meta["target"]["tvm"]["arch"] == arch
    from test_arm import mixed_inputs

    feeds = mixed_inputs()
    if cuda.gpu_present():
        for g, r in zip(cm.run(feeds).values(), ort_run(small_model, feeds)):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    else:
        with pytest.raises(ToolchainError, match="no CUDA device; the artifact was built and can run on a machine with an sm_"):
            cm.run(feeds)
        with pytest.raises(ToolchainError, match="no CUDA device"):
            api.load(tmp_path / "a").run(feeds)


def test_missing_nvcc(small_model, tmp_path, monkeypatch):
    from test_arm import _path_without

    monkeypatch.setenv("PATH", _path_without("nvcc", tmp_path))
    with pytest.raises(ToolchainError, match="apt-get install nvidia-cuda-toolkit"):
        api.compile(small_model, "cuda", output=tmp_path / "a")

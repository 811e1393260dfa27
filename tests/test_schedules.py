"""Default CPU schedules, MetaSchedule tuning with shiftc's builder, and database round trips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import shiftc
from shiftc import frontend
from shiftc.core.errors import InputError
from shiftc.schedules import database
from helpers import json_schema

RNG = np.random.default_rng(0)


def _x86(cpu="x86-64-v3"):
    import tvm

    return tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": cpu, "num-cores": 2})


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def matmul_model(m=16, k=32, n=24) -> onnx.ModelProto:
    """x @ W + b, then Relu: one fused matmul kernel."""
    inits = {"W": RNG.standard_normal((k, n)).astype("float32"), "b": RNG.standard_normal(n).astype("float32")}
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], inits)


def conv_model() -> onnx.ModelProto:
    """conv3x3 s2 -> relu -> depthwise 3x3 -> 1x1 conv + residual -> global mean -> dense."""
    c = 16
    inits = {
        "w0": RNG.standard_normal((c, 3, 3, 3)).astype("float32") * 0.2,
        "b0": RNG.standard_normal(c).astype("float32"),
        "wd": RNG.standard_normal((c, 1, 3, 3)).astype("float32") * 0.3,
        "w1": RNG.standard_normal((c, c, 1, 1)).astype("float32") * 0.2,
        "wf": RNG.standard_normal((c, 10)).astype("float32"),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "wd"], ["d0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=c),
        helper.make_node("Conv", ["d0", "w1"], ["p0"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["p0", "r0"], ["s0"]),
        helper.make_node("GlobalAveragePool", ["s0"], ["g0"]),
        helper.make_node("Flatten", ["g0"], ["m0"]),
        helper.make_node("MatMul", ["m0", "wf"], ["y"]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 20])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)


def rows_model() -> onnx.ModelProto:
    """Softmax then LayerNorm over rows: kernels with several reductions per row."""
    inits = {"g": RNG.standard_normal(48).astype("float32"), "b": RNG.standard_normal(48).astype("float32")}
    nodes = [helper.make_node("Softmax", ["x"], ["s"], axis=-1),
             helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1, epsilon=1e-5)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 48])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 48])], inits)


def _run_relax(executable, x):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("make", [matmul_model, conv_model, rows_model], ids=["matmul", "conv-depthwise-residual", "softmax-layernorm"])
def test_default_schedules_match_the_unscheduled_module(make):
    import tvm

    from shiftc import schedules

    model = make()
    loaded = frontend.load(model)
    mod = frontend.to_relax(loaded)
    x = RNG.standard_normal(loaded.inputs[0].shape).astype("float32")
    target = _x86()
    with target, tvm.transform.PassContext(opt_level=3):
        naive = _run_relax(tvm.compile(mod, target=target), x)

    report = schedules.ScheduleReport()
    prepared = schedules.prepare(mod, target, None, report)
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = _run_relax(tvm.compile(prepared, target=target, relax_pipeline=schedules.lowering_pipeline(target)), x)

    assert report.default["naive"] == {}
    assert report.default["reduction" if make is not rows_model else "row_reduction"] >= 1
    np.testing.assert_allclose(scheduled, naive, rtol=1e-4, atol=1e-4)


def test_default_conv_schedule_is_tiled_parallel_and_vectorised(monkeypatch):
    """Before: one naive loop nest per block. After: parallel outer loop, vectorised channels
    (kernels this small run on one thread by default: the threshold is lowered to see the rule)."""
    import tvm

    from shiftc import schedules
    from shiftc.schedules import cpu

    mod = schedules.fuse(frontend.to_relax(frontend.load(conv_model())), _x86())
    name = next(gv.name_hint for gv, f in mod.functions_items() if gv.name_hint.startswith("fused_conv2d") and isinstance(f, tvm.tirx.PrimFunc))
    before = mod[name]
    kinds_before = _loop_kinds(before)
    serial_after, _ = cpu.schedule_func(before, lanes=8)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_WORK", 0)
    after, rule = cpu.schedule_func(before, lanes=8)
    kinds_after = _loop_kinds(after)
    assert rule == "reduction"
    assert kinds_before == {"serial"}
    assert {"parallel", "vectorized"} <= kinds_after
    assert "parallel" not in _loop_kinds(serial_after) and "vectorized" in _loop_kinds(serial_after)


def _loop_kinds(func) -> set[str]:
    """Loop kinds as TVMScript prints them (T.parallel / T.vectorized / T.unroll; range/T.grid)."""
    text = func.script()
    kinds = {k for k in ("parallel", "vectorized", "unroll") if f"T.{k}(" in text}
    if " in range(" in text or "in T.grid(" in text:
        kinds.add("serial")
    return kinds


def test_vector_width_follows_the_target_cpu_not_the_host():
    from shiftc.schedules import cpu, cpu_features

    assert cpu.vector_lanes(_x86("x86-64-v3")) == 8
    assert cpu.vector_lanes(_x86("znver5")) == 16
    assert cpu_features.int8_dot_instruction(_x86("x86-64-v3")) == "avx2"
    assert cpu_features.int8_dot_instruction(_x86("znver5")) == "avx512vnni"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A 2-trial tune of a tiny matmul with shiftc's builder (the default one times out here)."""
    from shiftc.schedules import database, tune

    path = tmp_path_factory.mktemp("tune") / "mm.onnx"
    onnx.save(matmul_model(), path)
    db = path.parent / "db"
    mod = frontend.to_relax(frontend.load(path))
    result = tune.tune(mod, _x86(), 2, db)
    return path, db, result, database.record_count(db)


def test_custom_builder_tunes_a_tiny_matmul(tuned):
    _, db, result, records = tuned
    (task,) = result.tasks
    assert task.name.startswith("fused_matmul")
    assert task.trials >= 1 and task.errors == 0, "every candidate must build and run"
    assert task.default_ms is not None and task.best_ms is not None
    assert task.best_ms <= task.default_ms  # the default schedule is a record, so tuning never loses
    assert records >= 1 + task.trials  # the seeded default + the measured candidates


def test_database_round_trip_in_a_fresh_process(tuned, tmp_path):
    path, db, result, _ = tuned
    out = tmp_path / "art"
    proc = subprocess.run(
        [sys.executable, "-m", "shiftc.cli", "compile", str(path), "--cpu", "x86-64-v3", "--db", str(db), "-o", str(out), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    stage = next(s for s in json.loads(proc.stdout)["report"]["stages"] if s["name"] == "schedule")
    assert stage["summary"]["database"] == database.user_label(db) and str(db) not in stage["summary"]["database"]
    assert stage["summary"]["tuned"] == [t.name for t in result.tasks]  # looked up and applied
    cm = shiftc.load(out)
    x = RNG.standard_normal((16, 32)).astype("float32")
    proto = onnx.load(path)
    w, b = (numpy_helper.to_array(i) for i in proto.graph.initializer)
    np.testing.assert_allclose(cm.run(x)["y"], np.maximum(x @ w + b, 0), rtol=1e-4, atol=1e-4)


def test_missing_or_corrupt_database_is_an_input_error(tmp_path):
    from shiftc.schedules import database

    with pytest.raises(InputError, match="not found"):
        database.open_folder(tmp_path / "nope")
    (tmp_path / database.WORKLOAD).write_text("{not json\n")
    (tmp_path / database.RECORDS).write_text("")
    with pytest.raises(InputError, match="corrupt"):
        database.open_folder(tmp_path)


def test_compile_with_missing_db_exits_2(tmp_path):
    from click.testing import CliRunner

    from shiftc.cli import main

    path = tmp_path / "mm.onnx"
    onnx.save(matmul_model(), path)
    res = CliRunner().invoke(main, ["compile", str(path), "--db", str(tmp_path / "missing"), "-o", str(tmp_path / "a")])
    assert res.exit_code == 2, res.output
    assert "tuning database not found" in res.output
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("cpu", ["x86-64-v3", "host"])
def test_int8_dot_intrinsic_matmul_is_bit_exact(cpu):
    """Full-range int8 activations (offset to uint8 + zero-point correction), weights in [-64, 64]."""
    from shiftc.schedules import cpu_features, x86_int8
    from shiftc.targets import get

    target = get("x86").tvm_target() if cpu == "host" else _x86(cpu)
    if cpu_features.int8_dot_instruction(target) not in ("avx2", "avxvnni", "avx512vnni"):
        pytest.skip("this host has no AVX2")
    name, lanes = x86_int8.intrinsic_for(target)
    assert name == (x86_int8.VNNI_DOT_16x4_INTRIN if cpu_features.has_feature(target, "avx512vnni") else x86_int8.AVX2_DOT_8x4_INTRIN)
    x = RNG.integers(-128, 128, (12, 64)).astype(np.int8)
    w = RNG.integers(-64, 65, (32, 64)).astype(np.int8)
    x[0, :] = -128  # extremes: the largest pair sums the contract allows
    w[0, :] = 64
    w[1, :] = -64
    np.testing.assert_array_equal(x86_int8.signed_matmul(x, w, target), x86_int8.signed_matmul_reference(x, w))


def test_avx2_int8_gemm_uses_pmaddubsw_and_refuses_saturating_weights():
    import tvm

    from shiftc.schedules import x86_int8

    target = _x86("x86-64-v3")
    func, _ = x86_int8.int8_matmul(8, 16, 32, target)
    asm = tvm.compile(tvm.IRModule({"main": func}), target=target).mod.inspect_source("asm")
    assert "vpmaddubsw" in asm and "vpmaddwd" in asm and "zmm" not in asm
    w = np.full((16, 32), 65, np.int8)
    with pytest.raises(InputError, match="saturate"):
        x86_int8.signed_matmul(np.zeros((8, 32), np.int8), w, target)


def test_tune_takes_compile_pass_options_and_its_records_apply_to_any_calibration(tmp_path):
    """`shiftc tune --shift-bits 4 --integer-only` tunes the integer kernels compile builds; a later
    compile with other calibration data still finds them (requantiser constants are kernel
    parameters, not code), all but the input quantiser."""
    from click.testing import CliRunner

    from shiftc.cli import main

    path = tmp_path / "mm.onnx"
    onnx.save(matmul_model(m=16, k=32, n=32), path)
    db = tmp_path / "db"
    for i, seed in enumerate((1, 2)):
        np.savez(tmp_path / f"cal{i}.npz", x=np.random.default_rng(seed).standard_normal((16, 32)).astype("float32") * (1 + i))
    opts = ["--cpu", "x86-64-v3", "--shift-bits", "4", "--integer-only"]
    res = CliRunner().invoke(main, ["tune", str(path), "--trials", "1", "--db", str(db), "--calibrate", str(tmp_path / "cal0.npz"), *opts, "--json"])
    assert res.exit_code == 0, res.output
    tasks = [t["name"] for t in json_schema.validate("tune", json.loads(res.stdout))["tasks"]]
    assert any("int16_dot_gemm" in t for t in tasks), tasks  # 4-bit codes span 2^7: the int16 dot GEMM
    res = CliRunner().invoke(main, ["compile", str(path), "--db", str(db), "--calibrate", str(tmp_path / "cal1.npz"), *opts,
                                    "-o", str(tmp_path / "art"), "--json"])
    assert res.exit_code == 0, res.output
    stage = next(s for s in json.loads(res.stdout)["report"]["stages"] if s["name"] == "schedule")
    assert stage["summary"]["database"] == database.user_label(db) and str(db) not in stage["summary"]["database"]
    missing = set(tasks) - set(stage["summary"]["tuned"])
    assert missing <= {"quantize"}, missing  # only the input quantiser has its calibrated scale in its code
    assert any("dot_gemm" in t for t in stage["summary"]["tuned"]), stage["summary"]["tuned"]


def test_tuning_seeds_row_reductions_with_their_default_schedule(tmp_path):
    """Softmax / LayerNorm kernels get the same default schedule in tuning as in a build, measured
    and committed as the record to beat (a 1-trial search alone made them several times slower)."""
    from shiftc.schedules import tune

    path = tmp_path / "rows.onnx"
    onnx.save(rows_model(), path)
    result = tune.tune(frontend.to_relax(frontend.load(path)), _x86(), 1, tmp_path / "db")
    rows = [t for t in result.tasks if "softmax" in t.name or "layer_norm" in t.name]
    assert rows, [t.name for t in result.tasks]
    assert all(t.default_ms is not None and t.best_ms <= t.default_ms for t in rows), [t.__dict__ for t in rows]


def test_x86_builds_import_only_the_x86_tensor_intrinsics():
    """A fresh process that registers the intrinsics for an x86 target gets the VNNI ones and
    never parses the CUDA family (the slow half of TVM's package); the ARM family stays importable."""
    code = (
        "import sys, tvm\n"
        "from shiftc.schedules.intrinsics import import_tensor_intrinsics\n"
        "from tvm.s_tir import TensorIntrin\n"
        "import_tensor_intrinsics(tvm.target.Target({'kind': 'llvm', 'mcpu': 'skylake-avx512'}))\n"
        "TensorIntrin.get('dot_16x4_vnni')\n"
        "assert 'tvm.s_tir.tensor_intrin.cuda' not in sys.modules, 'cuda intrinsics were imported'\n"
        "import_tensor_intrinsics(tvm.target.Target({'kind': 'llvm', 'mtriple': 'aarch64-linux-gnu'}))\n"
        "TensorIntrin.get('dot_4x4_i8i8s32_sdot')\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_int8_gemm_register_tile_fills_the_accumulator_budget_with_dividing_sizes():
    """rows x column tiles of the micro-kernel: both divide the GEMM, at most the budget of
    accumulator vectors (16 zmm, 8 ymm), rows at most 8; 7x7 maps get 7 rows, not 1."""
    from shiftc.schedules.int8_gemm import register_tile

    assert register_tile(7, 80, 16) == (7, 2)  # MobileNetV2's 7x7 maps, N = 1280
    assert register_tile(56, 10, 16) == (8, 2)
    assert register_tile(512, 32, 16) == (8, 2)
    assert register_tile(13, 5, 16) == (1, 1)  # 13 rows exceed the 8-row cap; 5 tiles: no 2-4 divides
    assert register_tile(1, 8, 16) == (1, 4)
    assert register_tile(64, 4, 8) == (8, 1)
    for m, tiles, lanes in ((49, 80, 16), (784, 2, 16), (6, 9, 16), (12, 4, 8)):
        rows, cols = register_tile(m, tiles, lanes)
        assert m % rows == 0 and tiles % cols == 0 and rows * cols <= {16: 16, 8: 8}[lanes] and rows <= 8
    # a fused epilogue reads the int32 tile from a per-tile buffer: under 1 KiB it stays on the
    # stack, preferred while it keeps 3/4 of the accumulators
    assert register_tile(28, 12, 16) == (4, 4) and register_tile(28, 12, 16, fused=True) == (7, 2)
    assert register_tile(512, 32, 16, fused=True) == (8, 2)  # 8 accumulators would be too few
    # 8 lanes (AVX2): the stack bound (31 tiles of 8 int32) must not lift the register budget of 8
    assert register_tile(12544, 12, 8, fused=True) == (8, 1)


@pytest.mark.parametrize("lead", [(1, 7, 7), (1, 6, 10), (13,)])
def test_int8_gemm_micro_kernel_is_bit_exact_and_register_blocked(lead):
    """The host's tensorized GEMM kernel (schedule_in_place) on conv-like and odd row counts with
    full-range operands equals NumPy, and its inner K step issues rows x cols dot instructions."""
    import tvm
    from tvm import s_tir, te

    from shiftc.schedules import cpu_features, int8_gemm, x86_int8
    from shiftc.targets import get

    target = get("x86").tvm_target()
    kind = cpu_features.int8_dot_instruction(target)
    if kind == "none":
        pytest.skip("this host has no AVX2")
    name, lanes = x86_int8.intrinsic_for(target)
    k, n = 64, 6 * lanes
    x = te.placeholder((*lead, k), "uint8", name="X")
    wp = te.placeholder((n // lanes, k // 4, lanes, 4), "int8", name="Wp")
    sch = s_tir.Schedule(te.create_prim_func([x, wp, int8_gemm.gemm_te(x, wp, lanes, 4, "int8_dot_gemm")]))
    assert int8_gemm.schedule_in_place(sch, target)
    lib = tvm.compile(sch.mod, target=target)
    limit = 127 if kind == "avx512vnni" else x86_int8.WEIGHT_LIMIT
    xa = RNG.integers(0, 256, (*lead, k)).astype(np.uint8)
    w = RNG.integers(-limit, limit + 1, (n, k)).astype(np.int8)
    xa.reshape(-1, k)[0] = 255
    w[0] = -limit
    out = tvm.runtime.tensor(np.zeros((*lead, n), np.int32))
    lib["main"](tvm.runtime.tensor(xa), tvm.runtime.tensor(x86_int8.pack_weights(w, lanes)), out)
    np.testing.assert_array_equal(out.numpy(), xa.astype(np.int32) @ w.astype(np.int32).T)
    rows, cols = int8_gemm.register_tile(lead[-1], n // lanes, lanes)
    asm = lib.mod.inspect_source("asm")
    dot = "vpdpbusd" if kind == "avx512vnni" else "vpmaddubsw"
    assert asm.count(dot) >= rows * cols


def test_injective_rule_leaves_narrow_transposes_scalar_and_contiguous_copies_vectorised():
    """NCHW -> NHWC of 3 channels: a vector across the innermost axis (3) would gather from three
    planes, so the fused loop stays scalar (and the output is the same transpose); an elementwise
    kernel over a narrow innermost axis but contiguous reads is still vectorised."""
    import tvm
    from tvm import te

    from shiftc.schedules import cpu

    x = te.placeholder((1, 3, 16, 16), "int8", name="x")
    t = te.compute((1, 16, 16, 3), lambda n, h, w, c: x[n, c, h, w], name="t")
    y = te.placeholder((64, 3), "int32", name="y")
    a = te.compute((64, 3), lambda i, j: y[i, j] + 1, name="a")
    transposed, kind = cpu.schedule_func(te.create_prim_func([x, t]), 8)
    added, _ = cpu.schedule_func(te.create_prim_func([y, a]), 8)
    assert kind == "injective" and "vectorized" not in _loop_kinds(transposed)
    assert "vectorized" in _loop_kinds(added)
    lib = tvm.compile(tvm.IRModule({"main": transposed}), target="llvm")
    xs = np.arange(3 * 16 * 16, dtype=np.int64).astype(np.int8).reshape(1, 3, 16, 16)
    out = tvm.runtime.tensor(np.zeros((1, 16, 16, 3), np.int8))
    lib["main"](tvm.runtime.tensor(xs), out)
    np.testing.assert_array_equal(out.numpy(), xs.transpose(0, 2, 3, 1))

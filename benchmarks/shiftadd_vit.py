"""Fashion-MNIST ViT with ShiftAddViT add-only attention and 4-bit shift layers, compiled
``--integer-only``: 10k-test accuracy against FP32, and the attention kernels as compiled scanned
for multiplies (docs/shiftadd-attention.md).

    python benchmarks/shiftadd_vit.py MODEL.onnx [--n 10000] [--calib 64] [--json PATH]

MODEL.onnx: the output of ``python -m examples.shiftadd_vit``. FP32 reference: examples/models/vit.onnx
(onnxruntime). Calibration: the first ``--calib`` training images. The integer build is
``shiftc.api.prepare(MODEL, "x86", integer_only=True, shift_bits=4)`` (the recorded fine-tuned
codes, encoded losslessly); every PrimFunc that TIR codegen receives and that holds a ``sign`` /
``sign_matmul`` kernel is lowered and scanned (tests/test_shift_tir.py's scan, anywhere in it).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import shiftc  # noqa: E402
from examples import evaluate as ev  # noqa: E402
from examples import fashion_mnist as fm  # noqa: E402
from shiftc.passes import float_scan  # noqa: E402
from shiftc.targets.x86 import flatten_outputs  # noqa: E402
from test_shift_tir import data_multiplies, lower  # noqa: E402


def attention_kernels(finished) -> dict:
    """{kernel name: (reduction loops, data multiplies found)} for the compiled PrimFuncs holding
    the add-only kernels (their parameters count as data)."""
    out = {}
    for gv, func in finished.functions.items() if hasattr(finished, "functions") else finished.items():
        if isinstance(func, tvm.tirx.PrimFunc) and "sign" in gv.name_hint:
            lowered = lower(func)
            fdef = next(n for n in ast.walk(ast.parse(lowered.script())) if isinstance(n, ast.FunctionDef))
            out[gv.name_hint] = data_multiplies(lowered, data={a.arg for a in fdef.args.args}, anywhere=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--calib", type=int, default=64)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    xtr, _ = fm.load("train")
    xte, yte = fm.load("test")
    cal = [{"input": v[None]} for v in fm.preprocess(xtr[:args.calib])]
    x, y = fm.preprocess(xte[:args.n]), yte[:args.n]
    t0 = time.perf_counter()
    prepared = shiftc.api.prepare(args.model, "x86", calibration=cal, integer_only=True, shift_bits=4)
    finished = prepared.finished()
    stages = {s.name: s for s in prepared.report.stages}
    vm = relax.VirtualMachine(prepared.compile(), tvm.cpu())
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    logits = []
    for i in range(len(x)):
        logits.append(flatten_outputs(vm["main"](tvm.runtime.tensor(x[i:i + 1])))[0])
        if (i + 1) % 1000 == 0:
            print(f"{i + 1}: integer-only accuracy so far {ev.accuracy(np.concatenate(logits), y[:i + 1]):.4f}", file=sys.stderr, flush=True)
    logits = np.concatenate(logits)
    finetuned = ev.onnx_predict(args.model, x)
    kernels = attention_kernels(finished)
    row = {"n": len(x), "fp32": ev.accuracy(ev.onnx_predict(ROOT / "examples" / "models" / "vit.onnx", x), y),
           "finetuned_onnx": ev.accuracy(finetuned, y), "integer_only": ev.accuracy(logits, y),
           "agreement_with_finetuned": float((logits.argmax(1) == finetuned.argmax(1)).mean()),
           "float_ops": stages["integerize"].summary["float_ops"], "float_scan": float_scan.build_float_ops(prepared.module, finished),
           "integer_ops": stages["integerize"].summary["integer_ops"],
           "shift_layers": len(stages["shift"].rows) if "shift" in stages else 0,
           "attention_kernels": sorted(kernels), "attention_reduction_loops": sum(v[0] for v in kernels.values()),
           "attention_kernel_multiplies": sum(len(v[1]) for v in kernels.values()),
           "compile_s": round(compile_s, 1), "eval_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(row, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()

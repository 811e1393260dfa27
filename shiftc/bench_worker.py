"""A benchmark's child process: ``python -m shiftc.bench_worker SPEC.json OUT.json``.

SPEC holds a ``shiftc.bench.Variant`` (runtime, path, inputs .npz, batch) and ``threads``,
``calls``, ``warmup``, ``busy``, ``save_outputs``. The worker loads that one variant, times it in
this process (``shiftc.bench.measure``) and writes the result to OUT as JSON, with its PID, load
time and the thread settings the runtime used; on failure ``{"error": one line}`` and exit 1.
TVM's thread count comes from ``TVM_NUM_THREADS``, which the driver sets in this process's
environment (its other pool settings: the user's, else shiftc's defaults, ``core.thread_pool``);
onnxruntime's and OpenVINO's from ``threads`` through their session options.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from shiftc.bench import measure, peak_rss_mb
from shiftc.core import thread_pool


def shiftc_runner(spec: dict, feeds: dict):
    """A shiftc artifact through ``shiftc.load`` / ``CompiledModel.run`` (what users call)."""
    import tvm

    from shiftc import api

    model = api.load(spec["path"])
    call = lambda: list(model.run(feeds).values())  # noqa: E731
    call()  # starts TVM's thread pool, so the count below is the one the timed calls use
    settings = thread_pool.tvm_env()  # as the load left them: the user's, else shiftc's defaults
    settings["tvm_pool_threads"] = tvm.runtime.num_threads()
    return call, settings


def onnxruntime_runner(spec: dict, feeds: dict):
    """onnxruntime's CPU provider, ``threads`` intra-op threads, sequential execution, its other
    settings (idle-worker spinning included) left at their defaults."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = spec["threads"]
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(spec["path"], so, providers=["CPUExecutionProvider"])
    call = lambda: session.run(None, feeds)  # noqa: E731
    return call, {"intra_op_num_threads": spec["threads"], "inter_op_num_threads": 1, "execution_mode": "sequential"}


def openvino_runner(spec: dict, feeds: dict):
    """OpenVINO's CPU plugin on an .onnx or IR .xml, reshaped to the inputs' shapes, latency hint,
    one stream, ``threads`` inference threads, f32 precision for what is not quantised (on CPUs with
    AMX or AVX-512 BF16 the plugin's default is bf16: FP32 outputs then differ by ~1e-1)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(spec["path"])
    model.reshape({name: list(x.shape) for name, x in feeds.items()})
    config = {"INFERENCE_NUM_THREADS": spec["threads"], "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    # what the plugin chose, its default thread pinning included
    settings = {k: _ov_text(compiled.get_property(k)) for k in (*config, "ENABLE_CPU_PINNING")}

    def call():
        request.infer(feeds)
        return [request.get_output_tensor(i).data.copy() for i in range(len(request.model_outputs))]

    return call, settings


def _ov_text(value) -> str:
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)  # an element type: "f32"


RUNNERS = {"shiftc": shiftc_runner, "onnxruntime": onnxruntime_runner, "openvino": openvino_runner}


def run(spec: dict) -> dict:
    """Load the variant, time it, optionally save its outputs; the result record."""
    with np.load(spec["inputs"]) as data:
        feeds = {k: data[k] for k in data.files}
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    call, settings = RUNNERS[spec["runtime"]](spec, feeds)
    load_s = time.perf_counter() - t0
    result = measure(call, spec["batch"], spec["calls"], spec["warmup"], spec.get("busy", False))
    if spec.get("save_outputs"):
        np.savez(spec["save_outputs"], *[np.asarray(o) for o in call()])
    return {**result, "pid": os.getpid(), "load_s": load_s, "rss_before_load_mb": rss_before, "settings": settings}


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    try:
        result, code = run(json.loads(Path(spec_path).read_text())), 0
    except Exception as exc:  # noqa: BLE001 - reported to the driver as one line
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        result, code = {"error": f"{type(exc).__name__}: {first}"}, 1
    Path(out_path).write_text(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

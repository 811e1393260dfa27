"""Run models on the host to measure what a lossy pass costs: onnxruntime and host-built Relax."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .core.tensor_spec import TensorSpec


def onnxruntime_outputs(proto, samples: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """FP32 reference outputs of the original ONNX model, one list per sample."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [sess.run(None, dict(s)) for s in samples]


def relax_outputs(mod, specs: list[TensorSpec], samples: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Build ``mod`` for the host CPU and run every sample."""
    import tvm

    from .core.host import flatten_outputs, host_vm

    dev = tvm.cpu()
    vm = host_vm(mod)
    results = []
    for s in samples:
        args = [tvm.runtime.tensor(np.ascontiguousarray(s[spec.name]), dev) for spec in specs]
        results.append(flatten_outputs(vm["main"](*args)))
    return results


def compare(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> dict:
    """Error of ``got`` against ``reference`` over all samples, for the first output.

    max_abs, rel_l2 (||got-ref|| / ||ref||), mean cosine similarity of flattened rows, and top-1
    agreement of the last axis (meaningful for classifier logits).
    """
    ref = np.stack([np.asarray(r[0], dtype=np.float64) for r in reference])
    out = np.stack([np.asarray(g[0], dtype=np.float64) for g in got])
    diff = out - ref
    rows_r = ref.reshape(len(ref), -1)
    rows_o = out.reshape(len(out), -1)
    cos = np.sum(rows_r * rows_o, axis=1) / (np.linalg.norm(rows_r, axis=1) * np.linalg.norm(rows_o, axis=1) + 1e-30)
    return {
        "samples": len(ref),
        "max_abs": float(np.abs(diff).max()),
        "rel_l2": float(np.linalg.norm(diff) / (np.linalg.norm(ref) + 1e-30)),
        "cosine": float(cos.mean()),
        "top1_agreement": float(np.mean(ref.argmax(-1) == out.argmax(-1))),
    }

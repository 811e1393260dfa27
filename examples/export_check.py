"""Shared check for export CLIs: run the ONNX in onnxruntime and compare with torch."""
import time

import numpy as np
import torch

from examples.evaluate import session


def compare(model, onnx_path, feeds):
    """Max |onnxruntime - torch| over the outputs for numpy feeds (dict name -> array)."""
    sess = session(onnx_path)
    start = time.time()
    got = sess.run(None, feeds)[0]
    ort_ms = (time.time() - start) * 1e3
    with torch.no_grad():
        want = model(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
    return float(np.abs(got - want).max()), ort_ms

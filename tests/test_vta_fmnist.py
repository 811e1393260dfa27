"""Real model: the Fashion-MNIST CNN compiled with ``--target vta`` runs in the simulator bit-exact
against the x86 integer path (same quantisation, pow2 requantisers) and so keeps its test accuracy.
benchmarks/vta_fmnist.py runs more images and the shift-weight variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from examples import fashion_mnist as fm

pytestmark = pytest.mark.slow
MODEL = Path(__file__).resolve().parents[1] / "examples" / "models" / "cnn.onnx"
N_TEST = 500


def test_cnn_on_vta_is_bit_exact_with_x86_integer_path(compiled):
    train, _ = fm.load("train")
    test, labels = fm.load("test")
    cal = [{"input": fm.preprocess(train[i:i + 1])} for i in range(64)]
    # shiftc.compile, once a session for these arguments (conftest.py); each call a fresh session,
    # so the cycle counters below count this test's runs only
    vta = compiled(MODEL, "vta", calibration=cal)
    x86 = compiled(MODEL, "x86", calibration=cal, integer_only=True, requant="pow2")
    xs = fm.preprocess(test[:N_TEST])
    name = vta.outputs[0].name
    a = np.concatenate([vta.run(xs[i:i + 1])[name] for i in range(N_TEST)])
    b = np.concatenate([x86.run(xs[i:i + 1])[name] for i in range(N_TEST)])
    assert np.array_equal(a, b)
    acc = float(np.mean(a.argmax(1) == labels[:N_TEST]))
    assert acc == float(np.mean(b.argmax(1) == labels[:N_TEST])) and acc > 0.85

    st = next(s for s in vta.meta["report"]["stages"] if s["name"] == "vta")
    kinds = [row["kind"] for row in st["summary"]["layers"]]
    assert kinds == ["conv2d"] * 4 + ["dense"]
    depthwise = [r for r in st["rows"] if r["placement"] == "host" and "depthwise" in r["reason"]]
    assert len(depthwise) == 2
    assert sum(vta._session.counters.cycles.values()) == st["summary"]["total_cycles"] * N_TEST

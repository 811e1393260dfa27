"""Distributed tuning: MetaSchedule's RPCRunner through a real TVM RPC tracker and server on loopback.

A board joins the same way the server here does:
``python -m tvm.exec.rpc_server --tracker=HOST:PORT --key=KEY``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado (pip install tornado)")

KEY = "shiftc-loopback"


@pytest.fixture(scope="module")
def tracker_with_server():
    from tvm.rpc.server import Server
    from tvm.rpc.tracker import Tracker

    tracker = Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    server = Server(host="127.0.0.1", port=9300, port_end=9400, tracker_addr=("127.0.0.1", tracker.port), key=KEY, silent=True)
    try:
        yield f"127.0.0.1:{tracker.port}"
    finally:
        server.terminate()
        tracker.terminate()


def _tiny_matmul():
    from tvm import relax

    w = np.random.default_rng(0).standard_normal((32, 16)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((8, 32), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.matmul(x, relax.const(w)))
        bb.emit_func_output(y)
    return bb.get()


def _wait_for_server(tracker: str, key: str, timeout_s: float = 60.0):
    from shiftc.core.errors import InputError
    from shiftc.schedules import tune

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return tune.rpc_runner(tracker, key)
        except InputError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_tuning_measures_through_the_rpc_tracker(tracker_with_server, tmp_path):
    import tvm

    from shiftc.schedules import database, tune

    runner = _wait_for_server(tracker_with_server, KEY)
    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3", "num-cores": 2})
    result = tune.tune(_tiny_matmul(), target, 3, tmp_path / "db", runner=runner)
    assert result.runner == "RPCRunner"
    (task,) = result.tasks
    assert task.trials >= 1 and task.errors == 0, "candidates measured over RPC must come back"
    assert task.default_ms is not None and task.best_ms is not None  # both measured by the RPC runner
    assert database.record_count(tmp_path / "db") >= 1 + task.trials


def test_unknown_key_is_an_input_error(tracker_with_server):
    from shiftc.core.errors import InputError
    from shiftc.schedules import tune

    with pytest.raises(InputError, match="no device for key"):
        tune.rpc_runner(tracker_with_server, "no-such-board")


def test_bad_tracker_address_is_an_input_error():
    from shiftc.core.errors import InputError
    from shiftc.schedules import tune

    with pytest.raises(InputError, match="HOST:PORT"):
        tune.parse_tracker("localhost")

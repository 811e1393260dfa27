"""Per-kernel profile of a compiled x86 artifact: where the milliseconds go.

    python benchmarks/kernel_profile.py out/cnn                      # artifact from `shiftc compile`
    python benchmarks/kernel_profile.py out/cnn --top 15 --json prof.json

Runs the artifact's ``model.so`` in TVM's profiling VM on random inputs of the artifact's shapes
and prints the kernels by total time. Each VM call is timed by a ``VirtualMachine.set_instrument``
hook (TVM 0.27 has no profiling VM); the hook's own overhead (a few microseconds) is included.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def profile(artifact: Path, repeats: int = 5):
    """Per-call rows ``{name, ms, calls, share}`` summed over ``repeats`` runs, slowest first."""
    import tvm
    from tvm import relax

    from shiftc.artifact import read_meta
    from shiftc.frontend import TensorSpec

    meta = read_meta(artifact)
    dev = tvm.cpu()
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(artifact / "model.so")), dev)
    rng = np.random.default_rng(0)
    args = []
    for d in meta["inputs"]:
        spec = TensorSpec.from_json(d)
        x = rng.integers(0, 2, spec.shape) if spec.dtype.startswith("int") else rng.standard_normal(spec.shape)
        args.append(tvm.runtime.tensor(x.astype(spec.dtype), dev))
    vm["main"](*args)  # warm-up
    totals: dict[str, list[float]] = {}
    started: dict[str, float] = {}

    def hook(_func, symbol, before, _ret, *_args):
        if before:
            started[symbol] = time.perf_counter()
        else:
            t = totals.setdefault(symbol, [0.0, 0])
            t[0] += (time.perf_counter() - started.pop(symbol)) / repeats
            t[1] += 1 / repeats
        return 0  # VMInstrumentReturnKind.NO_OP

    vm.set_instrument(hook)
    for _ in range(repeats):
        vm["main"](*args)
    whole = sum(t[0] for t in totals.values()) or 1.0
    rows = [{"name": n, "ms": t[0] * 1e3, "calls": round(t[1]), "share": t[0] / whole} for n, t in totals.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact", type=Path, help="an x86 artifact folder (shiftc compile -o)")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write all rows here")
    args = ap.parse_args(argv)
    rows = profile(args.artifact, args.repeats)
    total = sum(r["ms"] for r in rows)
    print(f"{'kernel':60s} {'ms':>8s} {'calls':>5s} {'share':>6s}")
    for r in rows[: args.top]:
        print(f"{r['name'][:60]:60s} {r['ms']:8.3f} {r['calls']:5d} {100 * r['share']:5.1f}%")
    print(f"{'total (profiled calls)':60s} {total:8.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real-model checks of the normalisation passes (issue 4). Prints the numbers; ``--json`` saves them.

    python benchmarks/norm_checks.py minilm [--sentences 120]      # canonicalisation + LN->L1 cosine
    python benchmarks/norm_checks.py unvit  MODEL.onnx [--images N] # UN folding exactness, ops gone
    python benchmarks/norm_checks.py vit    MODEL.onnx [--images N] # LN->L1 true accuracy change
    python benchmarks/norm_checks.py kernel                         # LayerNorm vs L1-norm kernel time

Every model runs through the real passes and a host (x86) Relax build; references are onnxruntime
FP32 (and the Fashion-MNIST labels for accuracy).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shiftc import evaluate, frontend  # noqa: E402
from shiftc.passes.canonicalize import canonicalize  # noqa: E402
from shiftc.passes.fold_norm import fold_norm  # noqa: E402
from shiftc.passes.graph import op_counts  # noqa: E402
from shiftc.passes.ln_to_l1 import ln_to_l1  # noqa: E402

NORM_OPS = ("nn.layer_norm", "nn.gelu", "nn.gelu_tanh", "l2_normalize", "mean", "power", "sqrt", "erf", "tanh", "nn.batch_norm")


def session(mod, specs):
    """Build ``mod`` once for the host; returns run(feed) -> first output."""
    import tvm

    from shiftc.core.host import flatten_outputs, host_vm

    vm = host_vm(mod)

    def run(feed):
        args = [tvm.runtime.tensor(np.ascontiguousarray(feed[s.name]), tvm.cpu()) for s in specs]
        return flatten_outputs(vm["main"](*args))[0]

    return run


def ort_session(proto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)[0]


def rel_err(got, ref) -> float:
    return float(np.max(np.abs(np.float64(got) - ref) / np.maximum(1.0, np.abs(np.float64(ref)))))


def norm_counts(counts) -> dict:
    return {op: counts.get(op, 0) for op in NORM_OPS if counts.get(op, 0)}


def check_minilm(args) -> dict:
    from examples import minilm

    tmp = Path(tempfile.mkdtemp(prefix="minilm-"))
    sentences = minilm.sentences()
    feeds = minilm.feeds(sentences[: args.sentences], args.seq_len)
    out = {"sentences": len(feeds), "seq_len": args.seq_len, "source": minilm.TEXT_SOURCE}
    for opset in (14, 17):
        path = minilm.export_minilm(tmp / f"minilm{opset}.onnx", opset=opset, seq_len=args.seq_len)
        loaded = frontend.load(path)
        mod = frontend.to_relax(loaded)
        before = op_counts(mod)
        canon = canonicalize(mod)
        folded, info = fold_norm(canon)
        after = op_counts(folded)
        ort_run = ort_session(loaded.proto)
        run = session(folded, loaded.inputs)
        exact = max(rel_err(run(f), ort_run(f)) for f in feeds[: args.exact_sentences])
        out[f"opset{opset}"] = {"before": norm_counts(before), "after": norm_counts(after), "fold": info,
                                "max_rel_err_vs_ort": exact, "checked_sentences": args.exact_sentences}
        print(f"MiniLM opset {opset}: before {norm_counts(before)}")
        print(f"  after canonicalize+fold_norm {norm_counts(after)}; max rel err vs ORT {exact:.2e} "
              f"({args.exact_sentences} sentences)")
    # LN -> L1 on the opset-17 export after the exact passes (what `shiftc compile --norm l1` runs)
    l1_mod, converted = ln_to_l1(folded)
    run_l1 = session(l1_mod, loaded.inputs)
    t0 = time.perf_counter()
    ref = np.concatenate([ort_run(f) for f in feeds])
    got = np.concatenate([run_l1(f) for f in feeds])
    cos = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    # does L1 keep the retrieval structure? nearest neighbour of every sentence among the others
    sim_ref, sim_l1 = ref @ ref.T, got @ got.T
    np.fill_diagonal(sim_ref, -2)
    np.fill_diagonal(sim_l1, -2)
    nn_agree = float(np.mean(sim_ref.argmax(1) == sim_l1.argmax(1)))
    out["ln_to_l1"] = {"layer_norms_converted": converted, "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                       "nearest_neighbour_agreement": nn_agree, "seconds": time.perf_counter() - t0}
    print(f"MiniLM LN->L1: {converted} LayerNorms; embedding cosine vs FP32 over {len(feeds)} sentences: "
          f"mean {cos.mean():.5f}, min {cos.min():.5f}; nearest-neighbour agreement {nn_agree:.3f}")
    return out


def fashion_test(n: int):
    """First n Fashion-MNIST test images (normalised like the example models) and labels."""
    import gzip

    root = Path("/usr/share/datasets/fashion-mnist")
    with gzip.open(root / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 1, 28, 28)[:n]
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    x = ((images.astype(np.float32) / 255.0 - 0.2860) / 0.3530).astype(np.float32)
    return x, labels


def check_unvit(args) -> dict:
    loaded = frontend.load(args.model)
    mod = canonicalize(frontend.to_relax(loaded))
    before = op_counts(mod)
    notes: list[str] = []
    folded, info = fold_norm(mod, notes)
    after = op_counts(folded)
    x, labels = fashion_test(args.images)
    name = loaded.inputs[0].name
    ort_run, run_orig, run = ort_session(loaded.proto), session(mod, loaded.inputs), session(folded, loaded.inputs)
    errs, pred_ref, pred = [], [], []
    for img in x:
        feed = {name: img}
        ref_unfolded, got = run_orig(feed), run(feed)
        errs.append(rel_err(got, ref_unfolded))
        pred_ref.append(int(ort_run(feed).argmax()))
        pred.append(int(got.argmax()))
    res = {"model": str(args.model), "images": len(x), "fold": info, "notes": notes,
           "multiply_add_before": [before.get("multiply", 0), before.get("add", 0)],
           "multiply_add_after": [after.get("multiply", 0), after.get("add", 0)],
           "max_rel_err_folded_vs_unfolded": max(errs), "accuracy_ort": float(np.mean(np.array(pred_ref) == labels)),
           "accuracy_folded": float(np.mean(np.array(pred) == labels))}
    print(f"UN-ViT fold: {info}; multiply/add {res['multiply_add_before']} -> {res['multiply_add_after']}; "
          f"max rel err folded vs unfolded {max(errs):.2e} over {len(x)} images; accuracy ORT {res['accuracy_ort']:.4f}, "
          f"folded {res['accuracy_folded']:.4f}; notes {notes}")
    return res


def check_vit(args) -> dict:
    loaded = frontend.load(args.model)
    mod, _ = fold_norm(canonicalize(frontend.to_relax(loaded)))
    l1_mod, converted = ln_to_l1(mod)
    x, labels = fashion_test(args.images)
    name = loaded.inputs[0].name
    ort_run, run_l1 = ort_session(loaded.proto), session(l1_mod, loaded.inputs)
    ref = np.stack([ort_run({name: img})[0] for img in x])
    got = np.stack([run_l1({name: img})[0] for img in x])
    acc_ref, acc_l1 = float(np.mean(ref.argmax(1) == labels)), float(np.mean(got.argmax(1) == labels))
    res = {"model": str(args.model), "images": len(x), "layer_norms_converted": converted, "accuracy_fp32": acc_ref,
           "accuracy_l1": acc_l1, "delta_points": 100 * (acc_l1 - acc_ref), "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
           "logit_rel_l2": float(np.linalg.norm(got - ref) / np.linalg.norm(ref))}
    print(f"ViT LN->L1 ({converted} LayerNorms): accuracy FP32 {acc_ref:.4f} -> L1 {acc_l1:.4f} "
          f"({res['delta_points']:+.2f} points) on {len(x)} test images; top-1 agreement {res['top1_agreement']:.4f}")
    return res


def check_kernel(args) -> dict:
    """Time Relax's layer_norm against the L1-norm TE kernel on MiniLM-sized rows (same default build)."""
    import tvm
    from tvm import relax

    from shiftc.kernels.norm import l1_norm
    from shiftc.targets.x86 import host_cpu

    rows, c = args.rows, args.channels
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, c)).astype(np.float32)
    g, b = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu()})
    times = {}
    for kind in ("layer_norm", "l1_norm"):
        bb = relax.BlockBuilder()
        xv = relax.Var("x", relax.TensorType((rows, c), "float32"))
        with bb.function("main", [xv]):
            with bb.dataflow():
                if kind == "layer_norm":
                    y = bb.emit_output(relax.op.nn.layer_norm(xv, relax.const(g), relax.const(b), [-1]))
                else:
                    y = bb.emit_output(bb.call_te(l1_norm, xv, relax.const(g), relax.const(b), eps=1e-5))
            bb.emit_func_output(y)
        with tvm.transform.PassContext(opt_level=3):
            vm = relax.VirtualMachine(tvm.compile(bb.get(), target=target), tvm.cpu())
        xt = tvm.runtime.tensor(x, tvm.cpu())
        timer = vm.time_evaluator("main", tvm.cpu(), number=50, repeat=5)
        times[kind] = float(np.median(timer(xt).results)) * 1e6
    res = {"rows": rows, "channels": c, "layer_norm_us": times["layer_norm"], "l1_norm_us": times["l1_norm"],
           "l1_speedup": times["layer_norm"] / times["l1_norm"]}
    print(f"kernel {rows}x{c}: layer_norm {times['layer_norm']:.1f} us, l1_norm {times['l1_norm']:.1f} us "
          f"(untuned default x86 builds; ratio {res['l1_speedup']:.2f}x)")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="check", required=True)
    m = sub.add_parser("minilm")
    m.add_argument("--sentences", type=int, default=120)
    m.add_argument("--exact-sentences", type=int, default=3)
    m.add_argument("--seq-len", type=int, default=128)
    for name in ("unvit", "vit"):
        p = sub.add_parser(name)
        p.add_argument("model", type=Path)
        p.add_argument("--images", type=int, default=10000 if name == "vit" else 200)
    k = sub.add_parser("kernel")
    k.add_argument("--rows", type=int, default=128)
    k.add_argument("--channels", type=int, default=384)
    ap.add_argument("--json", type=Path, help="Also write the numbers to this file.")
    args = ap.parse_args(argv)
    res = {"minilm": check_minilm, "unvit": check_unvit, "vit": check_vit, "kernel": check_kernel}[args.check](args)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()

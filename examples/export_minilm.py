"""CLI: write all-MiniLM-L6-v2 (pooled, normalised embedding) as ONNX and check it vs torch.

Usage: python -m examples.export_minilm OUT.onnx
"""
import argparse
import time

from examples.export_check import compare
from examples.minilm import export_minilm, load_model, sentences, tokenize


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    args = parser.parse_args(argv)
    start = time.time()
    model = load_model()
    export_minilm(args.path, model)
    print(f"loaded and exported {args.path} in {time.time() - start:.1f}s")
    feeds = tokenize(sentences()[1:2])
    err, ms = compare(model, args.path, feeds)
    print(f"onnxruntime vs torch on a GPL-3 sentence: max abs diff {err:.2e} ({ms:.0f} ms)")
    if err > 1e-4:
        raise SystemExit(f"export mismatch: {err:.2e} > 1e-4")


if __name__ == "__main__":
    main()

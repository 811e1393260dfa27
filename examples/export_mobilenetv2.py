"""CLI: write the ImageNet MobileNetV2 as ONNX and check it against torch on a real photo.

Usage: python -m examples.export_mobilenetv2 OUT.onnx [--batch 1]
"""
import argparse
import time

from examples.export_check import compare
from examples.mobilenetv2 import export_mobilenetv2, pretrained, real_photos


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    start = time.time()
    export_mobilenetv2(args.path, batch=args.batch)
    print(f"loaded and exported {args.path} in {time.time() - start:.1f}s")
    x = real_photos(args.batch, seed=0)
    err, ms = compare(pretrained(), args.path, {"input": x})
    print(f"onnxruntime vs torch on chelsea: max abs diff {err:.2e} ({ms:.0f} ms)")
    if err > 1e-4:
        raise SystemExit(f"export mismatch: {err:.2e} > 1e-4")


if __name__ == "__main__":
    main()

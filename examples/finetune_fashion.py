"""Fine-tune the Fashion-MNIST CNN to single-term 4-bit PoT shift codes and measure it.

    python -m examples.finetune_fashion [--epochs 2] [--minutes M] [--threads T] [--out DIR] [--integer-only]

Training: the 60k training images with their labels (distillation from the FP32 CNN + cross-
entropy). Measured on the 10k test images: FP32 (onnxruntime), the fine-tuned ONNX (onnxruntime),
and ``shiftc compile --shift-bits 4`` of it (the float shift build, which must reproduce it).
``--integer-only``: integer-only QAT; measured instead: ``shiftc compile --shift-bits 4
--integer-only`` of the fine-tuned model (which must equal its fake-quant forward) and of the
FP32 CNN post-training (calibrated on the same first 256 training images QAT calibrated on).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import shiftc
from examples import fashion_mnist as fm
from examples.evaluate import accuracy, onnx_predict

CNN = Path(__file__).parent / "models" / "cnn.onnx"


def compiled_predict(path, x):
    return np.concatenate([next(iter(path.run(x[i:i + 1]).values())) for i in range(len(x))])


def integer_only(res, calib_x, test_x, test_y, out) -> dict:
    """Top-1 of the integer-only QAT model (compiled, and its torch fake-quant forward: they must be
    equal) and of the FP32 CNN compiled integer-only post-training with the same shift bits."""
    cm = shiftc.compile(res.path, target="x86", shift_bits=4, integer_only=True, output=out / "compiled_qat")
    got = compiled_predict(cm, test_x)
    with torch.no_grad():
        fake = np.concatenate([res.program(torch.from_numpy(test_x[i:i + 500])).numpy() for i in range(0, len(test_x), 500)])
    ptq = shiftc.compile(CNN, target="x86", shift_bits=4, integer_only=True, output=out / "compiled_ptq",
                         calibration=[{"input": calib_x[i:i + 1]} for i in range(len(calib_x))])
    return {"fp32_top1": accuracy(onnx_predict(CNN, test_x), test_y),
            "qat_compiled_integer_only_top1": accuracy(got, test_y), "qat_fake_quant_top1": accuracy(fake, test_y),
            "compiled_equals_fake_quant": bool(np.array_equal(got, fake)),
            "ptq_compiled_integer_only_top1": accuracy(compiled_predict(ptq, test_x), test_y)}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--train", type=int, default=60000, help="first N training images (the machine's budget)")
    ap.add_argument("--minutes", type=float, default=None, help="training time bound (lr schedule ends on time)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default="/tmp/finetune-fashion")
    ap.add_argument("--integer-only", action="store_true", help="integer-only QAT (shiftc finetune --integer-only)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = fm.load("train")
    images, labels = images[:args.train], labels[:args.train]
    test_x, test_y = fm.load("test")
    test_x = fm.preprocess(test_x)
    t0 = time.time()

    def progress(e):
        if e["step"] % 50 == 0 or e["step"] == e["total"]:
            print(f"step {e['step']}/{e['total']} loss {e['loss']:.4f} ({time.time() - t0:.0f} s)", flush=True)

    res = shiftc.finetune(CNN, fm.preprocess(images), labels, out / "cnn_pot4.onnx", bits=4, terms=1,
                          epochs=args.epochs, batch_size=args.batch, lr=args.lr,
                          max_seconds=args.minutes * 60 if args.minutes else None,
                          checkpoint=out / "cnn_pot4.ckpt", integer_only=args.integer_only, callback=progress)
    train_s = time.time() - t0
    if args.integer_only:
        result = integer_only(res, fm.preprocess(images[:256]), test_x, test_y, out)
        result.update(train_seconds=round(train_s, 1), steps=len(res.history.loss), threads=torch.get_num_threads(),
                      train_images=len(images), lr=args.lr, batch=args.batch, epochs=args.epochs, max_minutes=args.minutes)
        print(json.dumps(result, indent=1))
        (out / "result_integer_only.json").write_text(json.dumps(result, indent=1))
        return
    fp32 = accuracy(onnx_predict(CNN, test_x), test_y)
    tuned_logits = onnx_predict(res.path, test_x)
    tuned = accuracy(tuned_logits, test_y)
    cm = shiftc.compile(res.path, target="x86", shift_bits=4, output=out / "compiled")
    got = compiled_predict(cm, test_x)
    result = {"fp32_top1": fp32, "finetuned_top1_onnxruntime": tuned, "compiled_shift4_top1": accuracy(got, test_y),
              "compiled_vs_finetuned_max_abs": float(np.abs(got - tuned_logits).max()),
              "train_seconds": round(train_s, 1), "steps": len(res.history.loss), "device": res.device,
              "epochs": args.epochs, "max_minutes": args.minutes, "threads": torch.get_num_threads(),
              "train_images": len(images), "lr": args.lr, "batch": args.batch}
    print(json.dumps(result, indent=1))
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

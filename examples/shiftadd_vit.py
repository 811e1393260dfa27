"""Fine-tune the Fashion-MNIST ViT to ShiftAddViT add-only attention and 4-bit shift linear layers.

Usage: python -m examples.shiftadd_vit --steps 1200 [--max-minutes M] [--train N] -o /tmp/vit_shiftadd.onnx

Teacher: the FP32 FashionViT of examples/models.py (examples/weights/vit.pt, examples/models/vit.onnx).
Student: the same weights, every attention replaced by ``ShiftAddAttention`` and every conv /
linear layer re-parameterised as ``--shift-bits`` power-of-two shift codes (``shiftc.finetune``
with ``attention="shiftadd"``). Loss: KL to the teacher's logits + cross-entropy on the
Fashion-MNIST training labels. Writes the ONNX (codes recorded) and prints the fine-tuned ONNX's
10k-test accuracy (onnxruntime) next to the FP32 one.
"""
import argparse
import json
import os
import time

import numpy as np
import torch

import shiftc
from examples import evaluate, fashion_mnist as fm
from examples.models import FashionViT

HERE = os.path.dirname(os.path.abspath(__file__))


def fp32_vit():
    model = FashionViT()
    model.load_state_dict(torch.load(os.path.join(HERE, "weights", "vit.pt")))
    return model.eval()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--shift-bits", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids spin-wait slowdowns on a shared machine)")
    p.add_argument("--train", type=int, default=60000, help="training images used (the first N)")
    p.add_argument("--max-minutes", type=float, default=None, help="bound the training time (cosine schedule ends on time)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    xtr, ytr = fm.load("train")
    xtr, ytr = xtr[:args.train], ytr[:args.train]
    start = time.time()

    def progress(info):
        if info["step"] % 50 == 0 or info["progress"] >= 1.0:
            print(f"step {info['step']}/{info['total']} loss {info['loss']:.4f} ({time.time() - start:.0f}s)", flush=True)

    res = shiftc.finetune(fp32_vit(), fm.preprocess(xtr), ytr, args.output, bits=args.shift_bits, steps=args.steps,
                          batch_size=args.batch, lr=args.lr, attention="shiftadd", checkpoint=args.checkpoint,
                          max_seconds=args.max_minutes * 60 if args.max_minutes else None, callback=progress)
    xte, yte = fm.load("test")
    x = fm.preprocess(xte)
    result = dict(steps=len(res.history.loss), train_images=len(xtr), batch=args.batch, lr=args.lr, shift_bits=args.shift_bits,
                  train_seconds=round(res.seconds, 1), shifted_layers=len(res.shifted),
                  fp32=evaluate.onnx_accuracy(os.path.join(HERE, "models", "vit.onnx"), x, yte),
                  finetuned=evaluate.onnx_accuracy(args.output, x, yte), onnx=args.output)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

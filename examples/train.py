"""Train a Fashion-MNIST example model, export it to ONNX and measure it with onnxruntime.

Usage: python -m examples.train --model cnn|vit|unvit|segmenter

Writes examples/weights/<name>.pt (state_dict), examples/models/<name>.onnx (opset 17, batch 1,
static shapes, weights embedded), examples/models/<name>_sample.npz (a few real test inputs and
labels) and examples/models/<name>_metrics.json.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from examples import evaluate, fashion_mnist as fm
from examples.models import FashionCNN, FashionUNViT, FashionViT, Segmenter, count_params

HERE = os.path.dirname(os.path.abspath(__file__))
SEG_TRAIN_PER_EPOCH, SEG_TEST = 20000, 2000
SEG_TEST_SEED = 1

CONFIGS = {
    "cnn": dict(cls=FashionCNN, epochs=6, lr=3e-3, wd=1e-4, shift=0),
    "vit": dict(cls=FashionViT, epochs=6, lr=2e-3, wd=0.05, shift=0),
    "unvit": dict(cls=FashionUNViT, epochs=6, lr=2e-3, wd=0.05, shift=0),
    "segmenter": dict(cls=Segmenter, epochs=10, lr=2e-3, wd=0.05, shift=0),
}


def seg_test_set():
    """The fixed mosaic test set: 2000 mosaics of t10k items (seed 1)."""
    return fm.mosaics(*fm.load("test"), SEG_TEST, seed=SEG_TEST_SEED)


def random_shift(x, pixels, gen):
    """Translate each image by up to +-pixels (zero-padded in normalised units)."""
    if not pixels:
        return x
    n, _, h, w = x.shape
    pad = F.pad(x, (pixels,) * 4, value=-fm.MEAN / fm.STD)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2,), generator=gen).tolist()
    return pad[:, :, dy:dy + h, dx:dx + w]


def epoch_data(name, epoch, train):
    """(inputs float32 tensor, targets int64 tensor) for one training epoch."""
    if name == "segmenter":
        images, masks = fm.mosaics(*train, SEG_TRAIN_PER_EPOCH, seed=100 + epoch)
        return torch.from_numpy(fm.preprocess(images)), torch.from_numpy(masks)
    return torch.from_numpy(fm.preprocess(train[0])), torch.from_numpy(train[1])


def train(name, batch=128):
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(0)
    model = cfg["cls"]()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wd"])
    train_set = fm.load("train")
    n = SEG_TRAIN_PER_EPOCH if name == "segmenter" else len(train_set[0])
    steps, warmup = cfg["epochs"] * math.ceil(n / batch), math.ceil(n / batch) // 2
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(s, steps) / steps))))
    start = time.time()
    for epoch in range(cfg["epochs"]):
        model.train()
        x, y = epoch_data(name, epoch, train_set)
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(random_shift(x[idx], cfg["shift"], gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{cfg['epochs']} loss {total / len(x):.4f} "
              f"({time.time() - start:.0f}s)", flush=True)
    return model.eval(), cfg["epochs"], time.time() - start


def export(model, name, example):
    """Export a batch-1, static-shape, opset-17 ONNX with embedded weights."""
    path = os.path.join(HERE, "models", f"{name}.onnx")
    torch.onnx.export(model, (torch.from_numpy(example),), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], do_constant_folding=True)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), required=True)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 avoids spin-wait slowdowns on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    name = args.model
    model, epochs, seconds = train(name)
    os.makedirs(os.path.join(HERE, "weights"), exist_ok=True)
    os.makedirs(os.path.join(HERE, "models"), exist_ok=True)
    torch.save(model.state_dict(), os.path.join(HERE, "weights", f"{name}.pt"))
    if name == "segmenter":
        images, targets = seg_test_set()
    else:
        images, targets = fm.load("test")
    x = fm.preprocess(images)
    path = export(model, name, x[:1])
    np.savez_compressed(os.path.join(HERE, "models", f"{name}_sample.npz"),
                        x=x[:8], y=targets[:8], images=images[:8])
    if name == "segmenter":
        metric, value = "miou", evaluate.onnx_miou(path, x, targets, fm.NUM_SEG_CLASSES)
    else:
        metric, value = "accuracy", evaluate.onnx_accuracy(path, x, targets)
    result = dict(model=name, params=count_params(model), epochs=epochs,
                  train_seconds=round(seconds, 1), metric=metric, value=round(value, 4),
                  test_items=len(x))
    with open(os.path.join(HERE, "models", f"{name}_metrics.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

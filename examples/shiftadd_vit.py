"""Fine-tune the Fashion-MNIST ViT with ShiftAddViT add-only attention (and shift linear layers).

Usage: python -m examples.shiftadd_vit --steps 1500 -o /tmp/vit_shiftadd.onnx [--shift-bits 4]

Student: examples/weights/vit.pt (the FashionViT of examples/models.py) with every attention
replaced by ``shiftc.finetune.attention.ShiftAddAttention``; with ``--shift-bits`` its linear
layers (embedding conv included) are also re-parameterised as power-of-two shift codes.
Loss: KL(student || FP32 teacher) on logits + cross-entropy on the Fashion-MNIST training labels.
Prints the 10k test accuracy of teacher and student (torch) and writes the ONNX.
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from examples import fashion_mnist as fm
from examples.models import FashionViT
from shiftc.finetune.attention import use_shiftadd_attention

HERE = os.path.dirname(os.path.abspath(__file__))


def teacher():
    model = FashionViT()
    model.load_state_dict(torch.load(os.path.join(HERE, "weights", "vit.pt")))
    return model.eval()


@torch.no_grad()
def accuracy(model, x, y, batch=1000):
    model.eval()
    hits = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / len(x)


def distill(student, fp32, x, y, steps, batch, lr, seed=0):
    """``steps`` AdamW steps of KL(teacher || student) + CE, cosine learning rate; returns losses."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    losses = []
    student.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        with torch.no_grad():
            t = F.log_softmax(fp32(x[idx]), dim=1)
        s = student(x[idx])
        loss = F.kl_div(F.log_softmax(s, dim=1), t, log_target=True, reduction="batchmean") + F.cross_entropy(s, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss))
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}/{steps} loss {sum(losses[-100:]) / len(losses[-100:]):.4f}", flush=True)
    return losses


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fp32, student = teacher(), teacher()
    use_shiftadd_attention(student, tokens=16)
    xtr, ytr = fm.load("train")
    xte, yte = fm.load("test")
    xtr, ytr = torch.from_numpy(fm.preprocess(xtr)), torch.from_numpy(ytr)
    xte, yte = torch.from_numpy(fm.preprocess(xte)), torch.from_numpy(yte)
    start = time.time()
    distill(student, fp32, xtr, ytr, args.steps, args.batch, args.lr)
    seconds = time.time() - start
    student.eval()
    torch.onnx.export(student, (xte[:1],), args.output, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], do_constant_folding=True)
    result = dict(steps=args.steps, train_seconds=round(seconds, 1), fp32=accuracy(fp32, xte, yte),
                  student=accuracy(student, xte, yte), onnx=args.output)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

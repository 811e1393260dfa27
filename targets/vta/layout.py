"""Data layouts between host tensors and the accelerator's DRAM image.

* activations: NCHW  <->  blocked ``N, C/BLOCK_IN, H, W, BLOCK_IN`` (NCHW16c for 16);
  one inp DRAM element is one pixel's BLOCK_IN channels;
* weights: OIHW  ->  ``O/BLOCK_OUT, I/BLOCK_IN, KH, KW, BLOCK_OUT, BLOCK_IN`` blocks;
  one wgt DRAM element is one BLOCK_OUT x BLOCK_IN block;
* bias: (O,) int32 -> ``O/BLOCK_OUT, BLOCK_OUT`` (one acc element per block);
* outputs: blocked ``N, O/BLOCK_OUT, OH, OW, BLOCK_OUT`` int8 -> NCHW.

Channel counts that are not a multiple of the block are zero-padded (a zero weight or
shift code 0 contributes nothing; padded output channels are dropped on unpacking).
"""
from __future__ import annotations

import numpy as np


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def pack_activations(x: np.ndarray, block: int) -> np.ndarray:
    """NCHW -> (N, CB, H, W, block), zero-padded channels."""
    N, C, H, W = x.shape
    CB = ceil_div(C, block)
    xp = np.zeros((N, CB * block, H, W), dtype=x.dtype)
    xp[:, :C] = x
    return np.ascontiguousarray(xp.reshape(N, CB, block, H, W).transpose(0, 1, 3, 4, 2))


def unpack_activations(y: np.ndarray, channels: int) -> np.ndarray:
    """(N, CB, H, W, block) -> NCHW with the first ``channels`` channels."""
    N, CB, H, W, block = y.shape
    return np.ascontiguousarray(y.transpose(0, 1, 4, 2, 3).reshape(N, CB * block, H, W)
                                [:, :channels])


def pack_weights(w: np.ndarray, block_out: int, block_in: int) -> np.ndarray:
    """OIHW -> (OB, IB, KH, KW, block_out, block_in), zero-padded."""
    O, I, KH, KW = w.shape
    OB, IB = ceil_div(O, block_out), ceil_div(I, block_in)
    wp = np.zeros((OB * block_out, IB * block_in, KH, KW), dtype=w.dtype)
    wp[:O, :I] = w
    return np.ascontiguousarray(
        wp.reshape(OB, block_out, IB, block_in, KH, KW).transpose(0, 2, 4, 5, 1, 3))


def pack_bias(b: np.ndarray, block_out: int) -> np.ndarray:
    """(O,) -> (OB, block_out) int32, zero-padded."""
    O = b.shape[0]
    bp = np.zeros(ceil_div(O, block_out) * block_out, dtype=np.int32)
    bp[:O] = b
    return bp.reshape(-1, block_out)

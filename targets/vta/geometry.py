"""The shape of one layer as the code generator sees it: a convolution run as a GEMM over
(kh, kw, cin-block) uops.  A dense layer ``x (N, K)`` is the 1x1 convolution of the image
``(1, K, N, 1)``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConvGeom:
    """Input ``(N, C, H, W)``, ``O`` outputs, a ``KH x KW`` kernel, strides and zero padding."""

    N: int
    C: int
    H: int
    W: int
    O: int
    KH: int
    KW: int
    sh: int
    sw: int
    pt: int
    pl: int
    pb: int
    pr: int

    @property
    def OH(self):
        return (self.H + self.pt + self.pb - self.KH) // self.sh + 1

    @property
    def OW(self):
        return (self.W + self.pl + self.pr - self.KW) // self.sw + 1

    @property
    def xr(self):
        """Right padding actually read by the last output column."""
        return max(0, (self.OW - 1) * self.sw + self.KW - self.pl - self.W)

    @property
    def Wp(self):
        """Width of a padded input row in the inp buffer."""
        return self.pl + self.W + self.xr

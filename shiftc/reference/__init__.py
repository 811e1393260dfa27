"""shiftc.reference: the NumPy numerical truth of shiftc (one module per concept).

* :mod:`.shift`     PoT shift weight codes, shift matmul / conv2d (int and float paths)
* :mod:`.shift_uniform` uniform-grid codes run as canonical-signed-digit shift terms
* :mod:`.rounding`  round-half-up shift, saturation, dyadic scales, requantize
* :mod:`.requant`   requantisation helpers (dyadic, power-of-two), integer residual add
* :mod:`.quant`     float <-> integer codes: quantiser, bias codes, power-of-two scales
* :mod:`.nonlinear` int exp, Shiftmax, ShiftGELU, lambda-ShiftGELU, isqrt, I-LayerNorm,
  integer L1 norm, mean / avg pool, nearest upsample
* :mod:`.igelu`     i-GELU (I-BERT's erf polynomial on integers)
* :mod:`.activation` lookup tables (sigmoid, tanh, erf), leaky ReLU / PReLU
* :mod:`.linear`    int8 / uint8 x int8 matmul and conv2d, exact
* :mod:`.resize`    integer bilinear resize (Q0.15 weights) and its float yardstick
* :mod:`.overflow`  static int32 accumulator bounds, K-split planning and its int64 truth
* :mod:`.accelerator` the accelerator's int8 dense / conv2d with shift-only requantisation
* :mod:`.sign_attention` add-only attention: sign and the select-and-add matmul of a sign tensor

Every integer kernel shiftc emits must match these functions bit for bit.
"""

from . import accelerator, activation, igelu, linear, nonlinear, overflow, quant, requant, resize, rounding, shift, shift_uniform, sign_attention  # noqa: F401
from .accelerator import *  # noqa: F401,F403
from .activation import *  # noqa: F401,F403
from .igelu import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .nonlinear import *  # noqa: F401,F403
from .overflow import *  # noqa: F401,F403
from .quant import *  # noqa: F401,F403
from .requant import *  # noqa: F401,F403
from .resize import *  # noqa: F401,F403
from .rounding import *  # noqa: F401,F403
from .shift import *  # noqa: F401,F403
from .shift_uniform import *  # noqa: F401,F403
from .sign_attention import *  # noqa: F401,F403

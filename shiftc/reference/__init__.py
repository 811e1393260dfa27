"""shiftc.reference: the NumPy numerical truth of shiftc (one module per concept).

Every integer kernel shiftc emits must match these functions bit for bit.
"""

from .shift import *  # noqa: F401,F403
from . import shift  # noqa: F401

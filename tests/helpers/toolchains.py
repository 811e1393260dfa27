"""Which cross toolchains this machine has, for tests that cross-compile (scripts/setup.sh installs them)."""

import pytest

from shiftc.targets import arm


def has_arm() -> bool:
    """g++-aarch64-linux-gnu and qemu-user are both installed."""
    tools = arm.Arm().tools
    return bool(tools[0].path() and tools[1].path())


ARM_MISSING = "needs g++-aarch64-linux-gnu and qemu-user (scripts/install-toolchains.sh)"
needs_arm = pytest.mark.skipif(not has_arm(), reason=ARM_MISSING)

"""Relax -> Relax passes. Importing this package registers their pipeline stages in order."""

from . import shift_stage  # noqa: E402,F401  (registers the "shift" stage)

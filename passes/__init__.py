"""Relax -> Relax passes. Importing this package registers their pipeline stages in order."""

from . import integerize_stage  # noqa: E402,F401  (registers the "integerize" stage)

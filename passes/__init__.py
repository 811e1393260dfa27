"""Relax -> Relax passes. Importing this package registers their pipeline stages in order."""

from shiftc.errors import InputError
from shiftc.pipeline import Stage, register

from . import canonicalize, fold_norm, ln_to_l1


def _norm_is_l1(options) -> bool:
    if options.norm not in ("ln", "l1"):
        raise InputError(f"norm must be 'ln' or 'l1', got {options.norm!r}")
    return options.norm == "l1"


register(Stage("canonicalize", lambda o: o.canonicalize, canonicalize.apply))
register(Stage("fold_norm", lambda o: o.fold_norm, fold_norm.apply))
register(Stage("ln_to_l1", _norm_is_l1, ln_to_l1.apply, lossy=True))

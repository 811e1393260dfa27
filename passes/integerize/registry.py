"""The op-rule registry: one integer rewrite rule per Relax op.

A rule is ``rule(ctx, var, call, args) -> Q | list | None``: ``args`` are the rewritten arguments
(``Q`` for integer values, NumPy arrays for constants). It emits the integer form into
``ctx.bb`` and returns the new value, or returns None to decline this particular call (e.g.
a multiply by a constant that varies along two axes). Rules register with ``@int_rule("relax.nn.softmax")``; the rule
modules (``rules_*.py``, one per op family) are imported by the package.

The default, for an op without a rule or a call its rule declines, is the float island
(boundary.py): kept in float with ``float_fallback``, otherwise listed as unsupported.
"""

from __future__ import annotations

from typing import Callable

from .boundary import float_island

Rule = Callable  # (ctx, var, call, args) -> Q | list | None

RULES: dict[str, Rule] = {}
DEFAULT_RULE = float_island


def int_rule(*ops: str):
    """Register the decorated function as the integer rule of each Relax op in ``ops``."""

    def register(rule: Rule) -> Rule:
        for op in ops:
            if op in RULES:
                raise ValueError(f"integerize: {op} already has an integer rule ({RULES[op].__name__})")
            RULES[op] = rule
        return rule

    return register


def has_integer_form(op: str) -> bool:
    """Whether Relax op ``op`` has an integer rule (which may still decline a particular call)."""
    return op in RULES


def rewrite(ctx, var, call, args, op: str):
    """``call`` by ``op``'s rule, or by the default (float island) when there is none or it declines."""
    rule = RULES.get(op)
    out = rule(ctx, var, call, args) if rule is not None else None
    return out if out is not None else DEFAULT_RULE(ctx, var, call, args, op)

"""The JSON record of a benchmark run: schema, time, machine (``machine.describe``), settings,
notes (what was skipped and why) and one result row per variant and setting."""

from __future__ import annotations

import datetime

from .machine import describe

SCHEMA = "shiftc-bench/1"


def document(results: list[dict], settings: dict, notes: list[str]) -> dict:
    """The record a benchmark writes (``shiftc bench --json``, benchmarks/run.py)."""
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": describe(),
        "settings": settings,
        "notes": notes,
        "results": results,
    }

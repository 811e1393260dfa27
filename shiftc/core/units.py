"""Numbers as people read them: bytes, seconds, fractions and counts (CLI and HTML report)."""

from __future__ import annotations


def _three_digits(x: float) -> str:
    """About three significant digits without an exponent: 1.23, 12.3, 123."""
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}"


def human_bytes(n) -> str:
    """``34719`` -> ``34.7 KB`` (decimal units, as file sizes are shown); ``None`` -> ``-``."""
    if n is None:
        return "-"
    n = float(n)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{_three_digits(n / size)} {unit}"
    return f"{int(n)} B"


def human_seconds(s) -> str:
    """``0.0123`` -> ``12.3 ms``, ``69.8`` -> ``69.8 s``, ``125`` -> ``2 min 5 s``; ``None`` -> ``-``."""
    if s is None:
        return "-"
    s = float(s)
    if abs(s) < 1e-3:
        return f"{_three_digits(s * 1e6)} us"
    if abs(s) < 1:
        return f"{_three_digits(s * 1e3)} ms"
    if abs(s) < 60:
        return f"{_three_digits(s)} s"
    whole = round(s)
    return f"{whole // 60} min {whole % 60} s"


def percent(fraction, digits: int = 1) -> str:
    """``0.3941`` -> ``39.4%``; ``None`` -> ``-``."""
    return "-" if fraction is None else f"{100 * float(fraction):.{digits}f}%"


def human_count(n) -> str:
    """``5932736`` -> ``5.93M``, ``22579`` -> ``22.6K``, ``512`` -> ``512``; ``None`` -> ``-``."""
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{_three_digits(n / size)}{unit}"
    return str(int(n))

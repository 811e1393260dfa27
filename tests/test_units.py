"""shiftc.core.units: the one formatter of bytes, seconds, fractions and counts (CLI and HTML report)."""

from __future__ import annotations

from shiftc import html_report
from shiftc.core.units import human_bytes, human_count, human_seconds, percent


def test_bytes_in_decimal_units_with_three_digits():
    assert [human_bytes(n) for n in (None, 273, 34_719, 255_872, 2_500_000, 4.72e9)] == [
        "-", "273 B", "34.7 KB", "256 KB", "2.50 MB", "4.72 GB"]
    assert html_report.human_bytes is human_bytes  # the HTML report has no formatter of its own


def test_seconds_fractions_and_counts():
    assert [human_seconds(s) for s in (None, 3e-5, 0.004, 12.5, 69.83, 119.7, 125.4)] == [
        "-", "30.0 us", "4.00 ms", "12.5 s", "1 min 10 s", "2 min 0 s", "2 min 5 s"]
    assert [percent(x) for x in (None, 0.3941, 1.0)] == ["-", "39.4%", "100.0%"]
    assert [human_count(n) for n in (None, 512, 22_579, 5_932_736)] == ["-", "512", "22.6K", "5.93M"]

"""benchmarks/vnni_peak.py: features from /proc/cpuinfo, its C timing loops build and count right."""

from __future__ import annotations

import os
import shutil

import pytest

from benchmarks import vnni_peak


def test_modes_follow_the_cpu_flags_never_assumed():
    assert vnni_peak.modes_for(["avx2", "avx512f", "avx512vl", "avx512_vnni"]) == ["zmm", "ymm", "avx2"]
    assert vnni_peak.modes_for(["avx2", "avx512f", "avx512vl"]) == ["avx2"]  # AVX-512 without VNNI
    assert vnni_peak.modes_for(["sse4_2"]) == []


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")
def test_timing_loops_build_for_this_cpu_and_run(tmp_path, monkeypatch):
    """Each mode this CPU runs (and the clock chains) runs and checks itself; the clock
    comes out between 0.5 and 7 GHz."""
    cpu = vnni_peak.cpu_info()
    exe = vnni_peak.build(cpu["flags"], tmp_path)
    monkeypatch.setattr(vnni_peak, "ITERATIONS", {m: 20_000 for m in vnni_peak.ITERATIONS})
    for mode in ("add", "imul", *vnni_peak.modes_for(cpu["flags"])):
        [row] = vnni_peak.run_pinned(exe, mode, [min(os.sched_getaffinity(0))])
        assert row["per_cpu_s"] > 0 and row["per_wall_s"] > 0
    per_s = max(vnni_peak.run_pinned(exe, "add", [min(os.sched_getaffinity(0))])[0]["per_cpu_s"] for _ in range(3))
    assert 0.5e9 < per_s < 7e9

"""Benchmarks of compiled models against other runtimes, one process per variant.

``measure`` times one runtime variant in the current process (warm-up, timed calls, median / p90 /
min, throughput, peak RSS); ``driver.run_rounds`` runs each variant in its own child process
(``python -m shiftc.bench_worker``), alternating the order of the variants from round to round,
and pools the rounds; ``machine.describe`` records where and with what a benchmark ran;
``variants`` turns artifacts (and their source ONNX) into the variants ``shiftc bench`` times.

Why one process per variant: runtimes' thread pools spin while idle (TVM's workers yield up to
``TVM_THREAD_POOL_SPIN_COUNT`` times before sleeping, onnxruntime's spin by default), so two
runtimes timed in one process steal each other's cores (onnxruntime FP32 measured 21 ms beside
TVM, 4.9 ms alone). docs/BENCHMARKS.md describes the method and the thread settings.
"""

from .driver import Variant, run_rounds
from .machine import describe
from .measure import busy_core, measure, peak_rss_mb, summarise
from .record import SCHEMA, document

__all__ = ["SCHEMA", "Variant", "busy_core", "describe", "document", "measure", "peak_rss_mb", "run_rounds", "summarise"]

"""Shared benchmark plumbing: peak-memory sampling, repeated timing, printing and JSON output.

Benchmarks are not tests: each script measures, prints a table and writes its figures as
JSON under ``bench/results/`` (git-ignored). Quote medians and compare against a baseline
measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

RESULTS_DIR = Path(__file__).resolve().parent / "results"


class PeakRSS:
    """Samples the resident memory of this process and all its children (e.g. a JVM)."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        return int(process_tree_sum(lambda proc: proc.memory_info().rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self.peak_bytes = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._sample())

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["wall_s"]``."""
    result: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["wall_s"] = time.perf_counter() - start


def repeat_median(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Median wall time of ``repeats`` calls, and every sample."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def write_result(name: str, figures: dict[str, Any], path: Path | None = None) -> Path:
    """Print ``figures`` as a table and write them (plus machine facts) as JSON."""
    path = path or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **figures}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    width = max(len(key) for key in figures)
    print(f"== {name}")
    for key, value in figures.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {shown}")
    print(f"  -> {path}")
    return path


def jvm_counters(spark: Any) -> dict[str, float]:
    """Cumulative counters of the driver JVM: JIT compilation ms (summed over the compiler
    threads), GC ms and collections, the CPU seconds of this process and its children (the JVM),
    Spark jobs started and generated classes compiled (Janino, whole-stage codegen). Subtract two
    snapshots to attribute a step's cost (:func:`counter_delta`)."""
    jvm = spark.sparkContext._jvm
    management = jvm.java.lang.management.ManagementFactory
    collectors = management.getGarbageCollectorMXBeans()
    codegen = jvm.org.apache.spark.metrics.source.CodegenMetrics
    return {
        "jit_ms": float(management.getCompilationMXBean().getTotalCompilationTime()),
        "gc_ms": float(sum(c.getCollectionTime() for c in collectors)),
        "gc_count": float(sum(c.getCollectionCount() for c in collectors)),
        "cpu_s": process_tree_sum(_cpu_seconds),
        "spark_jobs": float(spark.sparkContext._jsc.sc().dagScheduler().nextJobId()),
        "codegen_compilations": float(codegen.METRIC_COMPILATION_TIME().getCount()),
    }


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def process_tree_sum(measure: Callable[[psutil.Process], float]) -> float:
    """``measure`` summed over this process and all its children (a process gone meanwhile counts 0)."""
    root = psutil.Process(os.getpid())
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += measure(proc)
        except psutil.Error:
            continue
    return total


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: round(after[key] - before[key], 3) for key in before}

"""Benchmark: the whole Spark ratings chain against the I/O floor, on one ratings.csv, in one process.

1. floor: ``spark.read.csv`` (typed schema, header) -> Parquet, the least any job that reads
   the file and writes it as a table must do;
2. chain: ingest -> ratings gate -> silver -> sessions -> sequences -> sequences gate
   (:func:`spark_jobs.pipeline.run_pipeline`) into a temporary lake.

Both run in the same SparkSession after a warm-up query, with the file already in the page
cache. Peak memory is the resident set of this process plus its children (the JVM), sampled
every 0.2 s. Prints a table and writes JSON (wall seconds, ratio, peak RSS, rows, stage seconds).

    python bench/bench_pipeline.py --input data/raw/synthetic/ratings.csv
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys.cli import configure_logging
from recsys.config import PROJECT_ROOT, load_config

log = logging.getLogger("bench_pipeline")

RUN_DATE = dt.date(2024, 1, 1)
CSV_SCHEMA = "userId long, movieId long, rating double, timestamp long"


class PeakRss:
    """Peak resident memory of this process and all its descendants, sampled in a thread."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        root = psutil.Process()
        total = 0
        for process in [root, *root.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self.interval_s)

    def reset(self) -> None:
        self.peak_bytes = self._sample()

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def warm_page_cache(path: Path) -> None:
    with path.open("rb") as handle:
        while handle.read(1 << 24):
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="a MovieLens ratings.csv")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "bench" / "results" / "pipeline.json")
    parser.add_argument("--dataset", default="synthetic", help="data.dataset (its rating scale applies)")
    parser.add_argument("--driver-memory", default="10g")
    parser.add_argument("--shuffle-partitions", type=int, default=16)
    parser.add_argument("--work-dir", type=Path, default=None, help="where the temporary lake goes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    configure_logging()

    from recsys.spark import build_spark
    from spark_jobs.common import RunContext
    from spark_jobs.pipeline import run_pipeline

    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.work_dir))
    config = load_config(
        profile="local",
        overrides=(
            f"lake.root={work / 'lake'}",
            f"data.dataset={args.dataset}",
            *args.overrides,
        ),
    )
    load_before = os.getloadavg()
    with PeakRss() as memory:
        spark = build_spark(
            config,
            app_name="bench-pipeline",
            extra_conf={
                "spark.driver.memory": args.driver_memory,
                "spark.sql.shuffle.partitions": str(args.shuffle_partitions),
            },
        )
        spark.range(1000).selectExpr("sum(id)").collect()
        warm_page_cache(args.input)

        memory.reset()
        start = time.perf_counter()
        floor = spark.read.csv(str(args.input), header=True, schema=CSV_SCHEMA)
        floor.write.mode("overwrite").parquet(str(work / "floor.parquet"))
        floor_s = time.perf_counter() - start
        floor_peak = memory.peak_bytes
        rows = spark.read.parquet(str(work / "floor.parquet")).count()
        log.info("floor: %d rows in %.1fs", rows, floor_s)

        memory.reset()
        start = time.perf_counter()
        ctx = RunContext.for_date(config, RUN_DATE, run_id="bench")
        result = run_pipeline(spark, ctx, [str(args.input)], "ratings.csv")
        chain_s = time.perf_counter() - start
        chain_peak = memory.peak_bytes
        spark.stop()
    load_after = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)

    figures = {
        "input": str(args.input),
        "rows": rows,
        "floor_wall_s": round(floor_s, 2),
        "chain_wall_s": round(chain_s, 2),
        "ratio": round(chain_s / floor_s, 2),
        "target_ratio": 3.0,
        "peak_rss_mb": round(max(floor_peak, chain_peak) / 2**20, 1),
        "floor_peak_rss_mb": round(floor_peak / 2**20, 1),
        "chain_peak_rss_mb": round(chain_peak / 2**20, 1),
        "stage_s": result.seconds,
        "accounting": asdict(result.stats),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
        },
        "spark": {"driver_memory": args.driver_memory, "shuffle_partitions": args.shuffle_partitions},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{'':<28}{'wall s':>10}{'peak RSS MB':>14}")
    print(f"{'floor (CSV -> Parquet)':<28}{floor_s:>10.1f}{figures['floor_peak_rss_mb']:>14.0f}")
    print(f"{'chain (ingest..sequences)':<28}{chain_s:>10.1f}{figures['chain_peak_rss_mb']:>14.0f}")
    for stage, seconds in result.seconds.items():
        print(f"  {stage:<26}{seconds:>10.1f}")
    print(f"{'ratio chain / floor':<28}{figures['ratio']:>10.2f}   (target <= 3)")
    print(f"rows {rows:,}; load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

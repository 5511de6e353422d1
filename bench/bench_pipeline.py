"""Benchmark: the whole Spark ratings chain against the I/O floor, on one ratings.csv, in one process.

1. floor: ``spark.read.csv`` (typed schema, header) -> Parquet, the least any job that reads
   the file and writes it as a table must do;
2. chain: ingest -> ratings gate -> silver -> sessions -> sequences -> sequences gate
   (:func:`spark_jobs.pipeline.run_pipeline`) into a temporary lake;
3. output copies: each of the four large tables the chain must write (bronze, silver,
   sessions, sequences), read back and copied as plain Parquet, timed one by one. Their sum
   is about the write cost the tables' contract alone demands, with no parsing, validation,
   sort or window (the columnar read back is small next to the write): in effect a lower
   bound for any implementation of the chain on this machine.

All three run in the same SparkSession after a warm-up query, with the file already in the page
cache, alternating floor and chain ``--repeats`` times; the medians are compared. Peak memory
is the resident set of this process plus its children (the JVM), sampled every 50 ms. Prints
a table and writes JSON (every sample, medians, ratio, peak RSS, rows, stage seconds).

    python bench/bench_pipeline.py --input data/raw/synthetic/ratings.csv --repeats 3

Without ``--input`` it uses data/raw/synthetic/ratings.csv, generating it first (ML-25M-sized,
about 30 s) when it is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from common import RESULTS_DIR, PeakRSS, write_result

from recsys.cli import configure_logging
from recsys.config import PROJECT_ROOT, Config, load_config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("bench_pipeline")

RUN_DATE = dt.date(2024, 1, 1)
CSV_SCHEMA = "userId long, movieId long, rating double, timestamp long"
# The chain's outputs whose size grows with the input (the others hold a few rows per run).
COPIED_TABLES = ("ratings_bronze", "ratings_silver", "sessions", "sequences")
DEFAULT_INPUT = PROJECT_ROOT / "data" / "raw" / "synthetic" / "ratings.csv"


def bench_spark(
    config: Config, app_name: str, driver_memory: str, shuffle_partitions: int, java_options: str = ""
) -> SparkSession:
    """The benchmark's SparkSession (driver memory, shuffle partitions and extra driver JVM options
    as given), warmed up."""
    from recsys.spark import DRIVER_JAVA_OPTIONS, build_spark

    extra = {"spark.driver.memory": driver_memory, "spark.sql.shuffle.partitions": str(shuffle_partitions)}
    if java_options:
        extra[DRIVER_JAVA_OPTIONS] = java_options
    spark = build_spark(config, app_name=app_name, extra_conf=extra)
    spark.range(1000).selectExpr("sum(id)").collect()
    return spark


def warm_page_cache(path: Path) -> None:
    with path.open("rb") as handle:
        while handle.read(1 << 24):
            pass


def copy_table(spark: SparkSession, table: str, target: Path) -> float:
    """Seconds to read the Delta table at ``table`` and write its rows as plain Parquet at ``target``."""
    start = time.perf_counter()
    spark.read.format("delta").load(table).write.mode("overwrite").parquet(str(target))
    seconds = time.perf_counter() - start
    shutil.rmtree(target, ignore_errors=True)
    return seconds


def ensure_input(path: Path) -> Path:
    """The default input is generated on first use: ML-25M-sized synthetic ratings."""
    if not path.exists():
        if path != DEFAULT_INPUT:
            raise SystemExit(f"{path}: no such file")
        from recsys.datasets.synthetic import generate_synthetic

        log.info("generating %s (scale 1.0)", path)
        generate_synthetic(path, scale=1.0)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="a MovieLens-format ratings.csv")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "pipeline.json")
    parser.add_argument("--repeats", type=int, default=1, help="floor/chain pairs; medians are reported")
    parser.add_argument("--dataset", default="synthetic", help="data.dataset (its rating scale applies)")
    parser.add_argument("--driver-memory", default="10g")
    parser.add_argument("--shuffle-partitions", type=int, default=16)
    parser.add_argument("--work-dir", type=Path, default=None, help="where the temporary lakes go")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    configure_logging()
    source = ensure_input(args.input)

    from spark_jobs.common import RunContext
    from spark_jobs.pipeline import run_pipeline

    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.work_dir))
    load_before = os.getloadavg()
    floor_s: list[float] = []
    chain_s: list[float] = []
    floor_peak: list[float] = []
    chain_peak: list[float] = []
    stage_s: dict[str, list[float]] = {}
    copy_s: dict[str, list[float]] = {}
    try:

        def config_for(lake: Path) -> Config:
            return load_config(
                profile="local",
                overrides=(f"lake.root={lake}", f"data.dataset={args.dataset}", *args.overrides),
            )

        config = config_for(work / "lake")
        spark = bench_spark(config, "bench-pipeline", args.driver_memory, args.shuffle_partitions)
        warm_page_cache(source)
        for repeat in range(args.repeats):
            floor_path = work / "floor.parquet"
            with PeakRSS() as memory:
                start = time.perf_counter()
                floor = spark.read.csv(str(source), header=True, schema=CSV_SCHEMA)
                floor.write.mode("overwrite").parquet(str(floor_path))
                floor_s.append(time.perf_counter() - start)
            floor_peak.append(memory.peak_mb)
            rows = spark.read.parquet(str(floor_path)).count()
            log.info("repeat %d floor: %d rows in %.1fs", repeat + 1, rows, floor_s[-1])

            lake = work / f"lake-{repeat}"
            ctx = RunContext.for_date(config_for(lake), RUN_DATE, run_id="bench")
            with PeakRSS() as memory:
                start = time.perf_counter()
                result = run_pipeline(spark, ctx, [str(source)], "ratings.csv")
                chain_s.append(time.perf_counter() - start)
            chain_peak.append(memory.peak_mb)
            for stage, seconds in result.seconds.items():
                stage_s.setdefault(stage, []).append(seconds)
            log.info("repeat %d chain: %.1fs %s", repeat + 1, chain_s[-1], result.seconds)
            for table in COPIED_TABLES:
                copy_s.setdefault(table, []).append(copy_table(spark, ctx.table(table), work / "copy"))
            copies = {table: round(seconds[-1], 1) for table, seconds in copy_s.items()}
            log.info("repeat %d output copies: %s", repeat + 1, copies)
            shutil.rmtree(lake, ignore_errors=True)
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    floor_median = statistics.median(floor_s)
    chain_median = statistics.median(chain_s)
    copy_median = statistics.median(sum(run) for run in zip(*copy_s.values(), strict=True))
    figures = {
        "input": str(source),
        "rows": rows,
        "repeats": args.repeats,
        "floor_wall_s_median": floor_median,
        "chain_wall_s_median": chain_median,
        "ratio_chain_over_floor": chain_median / floor_median,
        "target_ratio": 3.0,
        "output_copy_s_median": copy_median,
        "ratio_output_copy_over_floor": copy_median / floor_median,
        "ratio_chain_over_output_copy": chain_median / copy_median,
        "output_copy_s_median_by_table": {t: round(statistics.median(v), 2) for t, v in copy_s.items()},
        "floor_wall_s": [round(x, 2) for x in floor_s],
        "chain_wall_s": [round(x, 2) for x in chain_s],
        "floor_peak_rss_mb": round(max(floor_peak), 1),
        "chain_peak_rss_mb": round(max(chain_peak), 1),
        "stage_s_median": {stage: round(statistics.median(v), 2) for stage, v in stage_s.items()},
        "accounting": asdict(result.stats),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "driver_memory": args.driver_memory,
        "shuffle_partitions": args.shuffle_partitions,
    }
    write_result("pipeline", figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: nights on ML-25M-shaped data: the first full load, then a 0.1% night and a 1% night.

The synthetic ratings.csv (25,000,095 ratings, 1995-01-09 .. 2019-11-21) is replayed into a
temporary landing zone as daily drops (``recsys.datasets.replay``). The day boundaries are
chosen from the timestamps so that the last ~1% of events form night 2's drops and the ~0.1%
before them night 1's; everything earlier is the history drop. In one SparkSession, after a
warm-up query:

1. floor: ``spark.read.csv`` (typed schema, header) -> Parquet of the whole file, the least any
   job that reads the ratings and writes them as a table must do;
2. the full load: the night whose only drop is the history (98.9% of the ratings);
3. night 1, then night 2: each the whole ETL (ingest -> gate -> silver -> sessions -> sequences
   -> gate -> items) of its drops, beside the CSV -> Parquet floor of the same drop files.

Each night (the full load too) runs ``--repeats`` times, every time from the lake the night
before left (a copy restored at the same path), and the medians are reported: on two cores one
run of a 20 s night varies by 10-20%.

Target: night 2 (1% new events) under 10% of the full load's wall time. Prints a table and
writes JSON (wall times, stage seconds, accounting, peak RSS, and the driver JVM's JIT, GC and
CPU seconds, Spark jobs and generated classes per night).

    python bench/bench_nights.py [--input data/raw/synthetic/ratings.csv] [--driver-java-options="-XX:..."]
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

import numpy as np
import pyarrow.csv as pacsv
from bench_pipeline import CSV_SCHEMA, DEFAULT_INPUT, bench_spark, ensure_input, warm_page_cache
from common import RESULTS_DIR, PeakRSS, counter_delta, jvm_counters, write_result

from recsys.cli import configure_logging
from recsys.config import load_config

log = logging.getLogger("bench_nights")


def day_of(seconds: int) -> dt.date:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).date()


def plan_nights(path: Path, night1_share: float, night2_share: float) -> tuple[dt.date, dt.date, dt.date]:
    """(first day of night 1's drops, first day of night 2's, the last day) from the file's timestamps."""
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=["timestamp"]))
    stamps = np.sort(table.column("timestamp").to_numpy())
    n = stamps.size
    night2 = day_of(stamps[int(n * (1 - night2_share))])
    night1 = day_of(stamps[int(n * (1 - night2_share - night1_share))])
    return night1, night2, day_of(stamps[-1])


def floor_seconds(spark, files: list[str], target: Path) -> float:
    start = time.perf_counter()
    spark.read.csv(files, header=True, schema=CSV_SCHEMA).write.mode("overwrite").parquet(str(target))
    seconds = time.perf_counter() - start
    shutil.rmtree(target, ignore_errors=True)
    return seconds


def drop_files(landing: Path, first: dt.date, last: dt.date) -> list[str]:
    return sorted(
        str(f)
        for d in landing.iterdir()
        if first <= dt.date.fromisoformat(d.name) <= last
        for f in d.iterdir()
        if not f.name.startswith(".")
    )


def run_night(spark, config, name: str, run_date: dt.date, floor: float) -> dict:
    """One timed run of the night of ``run_date`` (the whole ETL), with its JVM counters and accounting."""
    from spark_jobs.common import RunContext
    from spark_jobs.pipeline import run_pipeline

    ctx = RunContext.for_date(config, run_date, run_id=f"bench-{name}")
    counters = jvm_counters(spark)
    with PeakRSS() as memory:
        start = time.perf_counter()
        result = run_pipeline(spark, ctx)
        wall = time.perf_counter() - start
    jvm = counter_delta(counters, jvm_counters(spark))
    stats = asdict(result.stats)
    drops = stats.pop("drops")
    stats["drops"] = f"{drops[0]}..{drops[-1]} ({len(drops)})" if drops else "none"
    log.info(
        "%s: %d rows in %d drops, %.1fs (floor %.1fs) %s; driver JVM %s",
        name,
        stats["rows_read"],
        len(result.drops),
        wall,
        floor,
        result.seconds,
        jvm,
    )
    return {
        "run_date": run_date.isoformat(),
        "drops": len(result.drops),
        "rows": stats["rows_read"],
        "wall_s": round(wall, 2),
        "floor_s": round(floor, 2),
        "stage_s": result.seconds,
        "peak_rss_mb": round(memory.peak_mb, 1),
        "jvm": jvm,
        "accounting": stats,
    }


def summarise(samples: list[dict]) -> dict:
    """The median repeat's figures (by wall time), with every repeat's wall time and the median
    of each stage's seconds; the repeats must agree on the accounting."""
    if any(s["accounting"] != samples[0]["accounting"] for s in samples):
        raise RuntimeError(f"repeats of {samples[0]['run_date']} disagree on the accounting")
    middle = sorted(samples, key=lambda s: s["wall_s"])[(len(samples) - 1) // 2]
    stages = samples[0]["stage_s"]
    return {
        **middle,
        "wall_s": round(statistics.median(s["wall_s"] for s in samples), 2),
        "wall_s_repeats": [s["wall_s"] for s in samples],
        "stage_s": {k: round(statistics.median(s["stage_s"][k] for s in samples), 3) for k in stages},
        "ratio_over_floor": round(statistics.median(s["wall_s"] for s in samples) / middle["floor_s"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="a MovieLens-format ratings.csv")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "nights.json")
    parser.add_argument("--night1-share", type=float, default=0.001)
    parser.add_argument("--night2-share", type=float, default=0.01)
    parser.add_argument("--driver-memory", default="10g")
    parser.add_argument("--shuffle-partitions", type=int, default=16)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each night from the same lake; medians are reported"
    )
    parser.add_argument(
        "--driver-java-options", default="", help="extra JVM options of the driver (JIT flags)"
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="where the temporary lake goes")
    args = parser.parse_args(argv)
    configure_logging()
    source = ensure_input(args.input)

    from recsys.datasets.replay import replay

    night1_start, night2_start, last = plan_nights(source, args.night1_share, args.night2_share)
    history_date = night1_start - dt.timedelta(days=1)
    night1_date = night2_start - dt.timedelta(days=1)
    log.info(
        "history drop %s; night 1 %s..%s; night 2 %s..%s",
        history_date,
        night1_start,
        night1_date,
        night2_start,
        last,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-nights-", dir=args.work_dir))
    load_before = os.getloadavg()
    nights: dict[str, dict] = {}
    try:
        lake = work / "lake"
        landing = lake / "landing" / "ratings"
        start = time.perf_counter()
        replayed = replay(source, "ratings.csv", landing, start=night1_start, until=last)
        replay_s = time.perf_counter() - start
        log.info("replay: %s in %.1fs", replayed, replay_s)
        config = load_config(profile="local", overrides=(f"lake.root={lake}", "data.dataset=synthetic"))
        spark = bench_spark(
            config, "bench-nights", args.driver_memory, args.shuffle_partitions, args.driver_java_options
        )
        warm_page_cache(source)
        full_floor = floor_seconds(spark, [str(source)], work / "floor.parquet")
        log.info("floor (whole file): %.1fs", full_floor)
        snapshot = work / "snapshot"
        for name, run_date, first in (
            ("full_load", history_date, history_date),
            ("night_1", night1_date, night1_start),
            ("night_2", last, night2_start),
        ):
            files = drop_files(landing, first, run_date)
            floor = floor_seconds(spark, files, work / "floor.parquet")
            # Each repeat starts from the lake as the night before left it (copied aside once,
            # restored at the same path before every repeat: the ledger names files by path).
            shutil.rmtree(snapshot, ignore_errors=True)
            shutil.copytree(lake, snapshot, symlinks=True)
            samples = []
            for repeat in range(args.repeats):
                if repeat:
                    shutil.rmtree(lake)
                    shutil.copytree(snapshot, lake, symlinks=True)
                samples.append(run_night(spark, config, name, run_date, floor))
            nights[name] = summarise(samples)
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    full = nights["full_load"]["wall_s"]
    total_rows = sum(n["rows"] for n in nights.values())
    figures = {
        "input": str(source),
        "rows": total_rows,
        "replay_s": round(replay_s, 2),
        "replay_drops": len(replayed.drops),
        "floor_whole_file_s": round(full_floor, 2),
        "nights": nights,
        "share_of_rows": {name: round(n["rows"] / total_rows, 5) for name, n in nights.items()},
        "ratio_over_full_load": {name: round(n["wall_s"] / full, 4) for name, n in nights.items()},
        "target_night_2_over_full_load": 0.10,
        "full_load_over_whole_file_floor": round(full / full_floor, 2),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "driver_memory": args.driver_memory,
        "shuffle_partitions": args.shuffle_partitions,
        "driver_java_options": args.driver_java_options,
        "repeats": args.repeats,
    }
    write_result("nights", figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

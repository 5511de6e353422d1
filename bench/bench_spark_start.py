"""Benchmark: a short spark-submit job with and without the driver's class archive.

The nightly DAG starts a fresh driver JVM for every Spark stage, and on a night's small data a
stage is mostly start-up: the JVM, the SparkSession with Delta, and the first Delta read. This
bench times that cost alone: ``spark-submit`` of a job that opens a session, reads a small
partitioned Delta table with a filter and counts it, alternately with the class-data sharing
archive of ``spark.class_archive`` (built by ``make jars``) and without it. Medians of
``--repeats`` runs each; one more run with ``-Xlog:class+load`` counts the classes the JVM mapped
from the archive, so a figure is never quoted for an archive that was not used.

    python bench/bench_spark_start.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_result

from recsys.cli import configure_logging
from recsys.config import PROJECT_ROOT, load_config
from recsys.spark import class_archive, submit_args

log = logging.getLogger("bench_spark_start")


def job(table: str) -> None:
    """The timed job: a session, one filtered read of a Delta table, a count."""
    from recsys.spark import build_spark

    spark = build_spark(load_config(profile="local"), app_name="bench-spark-start")
    rows = spark.read.format("delta").load(table).where("valid_from = DATE'2020-01-02'").count()
    print(f"rows={rows}")
    spark.stop()


def submit(args: list[str], table: str, java_options: str | None = None) -> float:
    command = [str(Path(sys.executable).parent / "spark-submit"), *args, "--master", "local[2]"]
    if java_options:
        command += ["--conf", f"spark.driver.extraJavaOptions={java_options}"]
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_SUBMIT_ARGS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    start = time.perf_counter()
    done = subprocess.run(
        [*command, __file__, "--job", table], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0 or "rows=" not in done.stdout:
        raise RuntimeError(f"spark-submit failed ({done.returncode}): {done.stderr[-3000:]}")
    return seconds


def make_table(path: str) -> None:
    from recsys.spark import build_spark

    spark = build_spark(load_config(profile="local"), app_name="bench-spark-start-setup")
    frame = spark.range(5000).selectExpr(
        "id % 97 AS user_id", "id AS item_id", "date_add(DATE'2020-01-01', CAST(id % 3 AS INT)) AS valid_from"
    )
    frame.write.format("delta").partitionBy("valid_from").save(path)
    spark.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--make-table", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        job(args.job)
        return
    if args.make_table:
        make_table(args.make_table)
        return
    configure_logging()
    config = load_config(profile="local")
    archive = class_archive(config)
    if archive is None:
        raise SystemExit(f"no class archive at {config.spark.class_archive}: run `make jars` first")
    with_archive = submit_args(config)
    without = submit_args(load_config(profile="local", overrides=("spark.class_archive=null",)))
    with tempfile.TemporaryDirectory(prefix="bench-spark-start-") as tmp:
        table = str(Path(tmp, "table"))
        # The setup session runs in a subprocess: this process starts no JVM of its own.
        subprocess.run([sys.executable, __file__, "--make-table", table], cwd=PROJECT_ROOT, check=True)
        submit(without, table)  # page cache warm for both modes
        samples: dict[str, list[float]] = {"with_archive": [], "without_archive": []}
        for _ in range(args.repeats):
            samples["without_archive"].append(submit(without, table))
            samples["with_archive"].append(submit(with_archive, table))
            log.info(
                "without %.1f s, with %.1f s", samples["without_archive"][-1], samples["with_archive"][-1]
            )
        classes = Path(tmp, "classes.log")
        submit(
            without,
            table,
            f"-XX:SharedArchiveFile={archive} -Xshare:auto -Xlog:class+load=info:file={classes}",
        )
        loaded = classes.read_text().splitlines()
    mapped = sum("shared objects file (top)" in line for line in loaded)
    medians = {mode: statistics.median(values) for mode, values in samples.items()}
    write_result(
        "bench_spark_start",
        {
            "median_s_without_archive": medians["without_archive"],
            "median_s_with_archive": medians["with_archive"],
            "saved_share": 1 - medians["with_archive"] / medians["without_archive"],
            "runs_s_without_archive": [round(s, 2) for s in samples["without_archive"]],
            "runs_s_with_archive": [round(s, 2) for s in samples["with_archive"]],
            "classes_loaded": len(loaded),
            "classes_from_the_archive": mapped,
            "archive_mb": round(archive.stat().st_size / 2**20, 1),
        },
    )


if __name__ == "__main__":
    main()

"""SparkSession factory with Delta Lake enabled.

The master is never set here: ``spark-submit --master ...`` (or a cluster launcher)
decides where the job runs, and a plain ``python`` process gets PySpark's default
(``local[*]``). The Delta jar resolves from Maven Central through Ivy into a cache inside
the project (``spark.jars_cache``); once resolved, the cached jars are passed directly as
``spark.jars`` so later sessions need no network at all.

A short Spark job spends much of its time starting: the driver JVM loads and verifies some
twenty thousand classes of Spark, Scala and Delta before the first query runs, and the nightly
DAG starts one such JVM per stage. :func:`build_class_archive` records those classes once in a
class-data sharing archive (JDK AppCDS, ``spark.class_archive``); every later driver maps them
from it (:func:`driver_conf`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.config import Config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"


def _artifact_jar_name(coordinate: str) -> str:
    """Ivy's file name for a resolved artifact: ``group_artifact-version.jar``."""
    group, artifact, version = coordinate.split(":")
    return f"{group}_{artifact}-{version}.jar"


def cached_jars(config: Config) -> list[Path] | None:
    """Jars already resolved into the project cache, or None when resolution is needed."""
    jar_dir = Path(config.project_path(config.spark.jars_cache)) / "jars"
    if not (jar_dir / _artifact_jar_name(config.spark.delta_package)).is_file():
        return None
    return sorted(jar_dir.glob("*.jar"))


def class_archive(config: Config) -> Path | None:
    """The driver's class-data sharing archive, when one is configured and built."""
    if not config.spark.class_archive:
        return None
    path = Path(config.project_path(config.spark.class_archive))
    return path if path.is_file() else None


def driver_conf(config: Config, conf: dict[str, str] | None = None) -> dict[str, str]:
    """``conf`` (default: the profile's Spark conf) with the class archive on the driver's JVM options.

    ``-Xshare:auto``: a JVM that cannot use the archive (another JDK, changed jars) starts
    without it, with a warning, as it would with no archive at all.
    """
    merged = {
        key: str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in (config.spark.conf if conf is None else conf).items()
    }
    archive = class_archive(config)
    if archive is not None:
        options = merged.get(DRIVER_JAVA_OPTIONS, "")
        merged[DRIVER_JAVA_OPTIONS] = f"{options} {_use_archive(archive)}".strip()
    return merged


def _use_archive(archive: Path) -> str:
    return f"-XX:SharedArchiveFile={archive} -Xshare:auto"


def build_spark(
    config: Config, app_name: str | None = None, extra_conf: dict[str, str] | None = None
) -> SparkSession:
    """Get or create the SparkSession for this configuration, Delta enabled.

    A new driver JVM (a plain ``python`` process) starts with the class archive when there is one.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name or config.spark.app_name)
    builder = builder.config("spark.sql.extensions", DELTA_EXTENSION).config(
        "spark.sql.catalog.spark_catalog", DELTA_CATALOG
    )
    jars = cached_jars(config)
    if jars is None:
        ivy_dir = config.project_path(config.spark.jars_cache)
        log.info("resolving %s from Maven Central into %s", config.spark.delta_package, ivy_dir)
        builder = builder.config("spark.jars.packages", config.spark.delta_package).config(
            "spark.jars.ivy", ivy_dir
        )
    else:
        builder = builder.config("spark.jars", ",".join(str(jar) for jar in jars))
    for key, value in driver_conf(config, {**config.spark.conf, **(extra_conf or {})}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def submit_args(config: Config) -> list[str]:
    """spark-submit flags that put the cached Delta jars on the driver and executor classpath.

    Under spark-submit the JVM starts before any Python runs, so jars must be given at
    submit time: ``spark-submit $(python -m recsys.spark --submit-args) job.py ...``.
    """
    archive = class_archive(config)
    options = [] if archive is None else ["--driver-java-options", _use_archive(archive)]
    jars = cached_jars(config)
    if jars is None:
        return [
            "--packages",
            config.spark.delta_package,
            "--conf",
            f"spark.jars.ivy={config.project_path(config.spark.jars_cache)}",
            *options,
        ]
    return ["--jars", ",".join(str(jar) for jar in jars), *options]


def _archive_workload(config: Config, archive: Path) -> None:
    """Run the operations the pipeline's jobs use, in a driver that writes ``archive`` at its exit."""
    from delta.tables import DeltaTable
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = build_spark(
        config,
        app_name="class-archive",
        extra_conf={DRIVER_JAVA_OPTIONS: f"-XX:ArchiveClassesAtExit={archive}", "spark.ui.enabled": "false"},
    )
    with tempfile.TemporaryDirectory(prefix="class-archive-") as tmp:
        text = Path(tmp, "ratings.csv")
        lines = "".join(f"{i % 7},{i},4.0,{i}\n" for i in range(500))
        text.write_text("user_id,item_id,rating,timestamp\n" + lines)
        day = F.lit("2020-01-02").cast("date")
        rows = (
            spark.read.option("header", True)
            .csv(str(text))
            .select(
                F.col("user_id").cast("long").alias("user_id"),
                F.col("item_id").cast("long").alias("item_id"),
                F.col("rating").cast("double").alias("rating"),
                F.col("timestamp").cast("long").alias("timestamp"),
                F.date_add(day, (F.col("item_id") % 3).cast("int") - 1).alias("valid_from"),
            )
        )
        table = str(Path(tmp, "table"))
        rows.write.format("delta").partitionBy("valid_from").save(table)
        (
            rows.where(F.col("valid_from") == day)
            .write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", "valid_from = DATE'2020-01-02'")
            .save(table)
        )
        read = spark.read.format("delta").load(table).where(F.col("valid_from") <= day).persist()
        order = Window.partitionBy("user_id").orderBy("timestamp")
        (
            read.repartition("user_id")
            .select("*", F.lag("timestamp").over(order).alias("gap"), F.row_number().over(order).alias("n"))
            .groupBy("user_id")
            .agg(F.sort_array(F.collect_list(F.struct("timestamp", "item_id"))).alias("seq"), F.max("n"))
            .join(read.select("user_id").distinct(), "user_id", "left_semi")
            .collect()
        )
        read.unpersist()
        spark.createDataFrame([(1, "a")], "id long, name string").unionByName(
            spark.createDataFrame([(2, "b")], "id long, name string")
        ).count()
        DeltaTable.forPath(spark, table).detail().first()
        DeltaTable.forPath(spark, table).history().collect()
        spark.read.text(str(text)).count()
    spark.stop()


def build_class_archive(config: Config) -> Path | None:
    """Build the driver's class archive (``spark.class_archive``) from a short Spark + Delta workload.

    The archive is written by a child JVM when it exits, then moved into place; a JDK that
    cannot write one leaves none (jobs then start without it). Returns the archive or None.
    """
    if not config.spark.class_archive:
        return None
    target = Path(config.project_path(config.spark.class_archive))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    # The workload's driver runs without an archive (it records one); its profile comes from
    # the inherited environment, as this process's did.
    workload = ["--archive-workload", str(partial), "--set", "spark.class_archive=null"]
    done = subprocess.run(
        [sys.executable, "-m", "recsys.spark", *workload],
        env={k: v for k, v in os.environ.items() if k != "PYSPARK_SUBMIT_ARGS"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        log.warning("no class archive was written (rc %d): %s", done.returncode, done.stderr[-2000:])
        return None
    partial.replace(target)
    log.info("class archive of the Spark driver: %s (%.0f MB)", target, target.stat().st_size / 2**20)
    return target


def main(argv: list[str] | None = None) -> None:
    """Fetch the Delta jars into the project cache once, or print spark-submit flags for them."""
    import argparse

    from recsys.cli import configure_logging
    from recsys.config import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="python -m recsys.spark", description=main.__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--resolve-jars", action="store_true", help="resolve the Delta jars into the cache")
    action.add_argument("--submit-args", action="store_true", help="print spark-submit flags for the jars")
    action.add_argument(
        "--build-class-archive", action="store_true", help="build the driver JVM's class archive"
    )
    action.add_argument("--archive-workload", metavar="ARCHIVE", help=argparse.SUPPRESS)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    config = config_from_args(args)
    if args.submit_args:
        print(" ".join(submit_args(config)))
        return
    if args.archive_workload:
        _archive_workload(config, Path(args.archive_workload))
        return
    if args.build_class_archive:
        build_class_archive(config)
        return
    spark = build_spark(config, app_name="resolve-delta-jars")
    spark.stop()
    jars = cached_jars(config)
    if jars is None:
        raise SystemExit(f"Delta jars were not found in {config.spark.jars_cache} after resolution")
    log.info("%d jars cached in %s", len(jars), config.project_path(config.spark.jars_cache))


if __name__ == "__main__":
    main()

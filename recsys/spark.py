"""SparkSession factory with Delta Lake enabled.

The master is never set here: ``spark-submit --master ...`` (or a cluster launcher)
decides where the job runs, and a plain ``python`` process gets PySpark's default
(``local[*]``). The Delta jar resolves from Maven Central through Ivy into a cache inside
the project (``spark.jars_cache``); once resolved, the cached jars are passed directly as
``spark.jars`` so later sessions need no network at all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.config import Config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


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


def build_spark(
    config: Config, app_name: str | None = None, extra_conf: dict[str, str] | None = None
) -> SparkSession:
    """Get or create the SparkSession for this configuration, Delta enabled."""
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
    for key, value in {**config.spark.conf, **(extra_conf or {})}.items():
        builder = builder.config(key, str(value).lower() if isinstance(value, bool) else str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def submit_args(config: Config) -> list[str]:
    """spark-submit flags that put the cached Delta jars on the driver and executor classpath.

    Under spark-submit the JVM starts before any Python runs, so jars must be given at
    submit time: ``spark-submit $(python -m recsys.spark --submit-args) job.py ...``.
    """
    jars = cached_jars(config)
    if jars is None:
        return [
            "--packages",
            config.spark.delta_package,
            "--conf",
            f"spark.jars.ivy={config.project_path(config.spark.jars_cache)}",
        ]
    return ["--jars", ",".join(str(jar) for jar in jars)]


def main(argv: list[str] | None = None) -> None:
    """Fetch the Delta jars into the project cache once, or print spark-submit flags for them."""
    import argparse

    from recsys.cli import configure_logging
    from recsys.config import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="python -m recsys.spark", description=main.__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--resolve-jars", action="store_true", help="resolve the Delta jars into the cache")
    action.add_argument("--submit-args", action="store_true", help="print spark-submit flags for the jars")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    config = config_from_args(args)
    if args.submit_args:
        print(" ".join(submit_args(config)))
        return
    spark = build_spark(config, app_name="resolve-delta-jars")
    spark.stop()
    jars = cached_jars(config)
    if jars is None:
        raise SystemExit(f"Delta jars were not found in {config.spark.jars_cache} after resolution")
    log.info("%d jars cached in %s", len(jars), config.project_path(config.spark.jars_cache))


if __name__ == "__main__":
    main()

"""Spark + Delta foundation: the session factory, per-date publishing, spark-submit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from recsys.delta import read_partition, with_run_date
from recsys.spark import DELTA_CATALOG, DELTA_EXTENSION, cached_jars
from spark_jobs.common import publish_slice
from tests.conftest import config_with_lake, spark_submit

pytestmark = pytest.mark.spark

DAY = dt.date(2026, 11, 24)


def test_session_has_delta_and_cached_jars(spark, base_config):
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.sql.extensions") == DELTA_EXTENSION
    assert conf.get("spark.sql.catalog.spark_catalog") == DELTA_CATALOG
    jars = cached_jars(base_config)
    assert jars, "the Delta jars should be in the project cache after `make jars`"
    assert any(jar.name.startswith("io.delta_delta-spark") for jar in jars)
    assert str(jars[0]) in conf.get("spark.jars")


def test_publish_partition_is_idempotent_and_isolated(spark, tmp_path: Path):
    path = str(tmp_path / "t")
    rows = [(1, 10), (2, 20)]
    first = with_run_date(spark.createDataFrame(rows, "user_id long, item_id long"), DAY)
    other = with_run_date(
        spark.createDataFrame([(9, 90)], "user_id long, item_id long"), DAY - dt.timedelta(1)
    )
    publish_slice(other, path, {"run_date": DAY - dt.timedelta(1)}, "run-a")
    publish_slice(first, path, {"run_date": DAY}, "run-b")
    publish_slice(first, path, {"run_date": DAY}, "run-c")  # rerun of the same date
    assert (
        sorted(tuple(r) for r in read_partition(spark, path, DAY).select("user_id", "item_id").collect())
        == rows
    )
    assert read_partition(spark, path, DAY - dt.timedelta(1)).count() == 1
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    assert [h.userMetadata for h in history] == ["run-a", "run-b", "run-c"]


def test_publish_requires_run_date_column(spark, tmp_path: Path):
    frame = spark.createDataFrame([(1,)], "user_id long")
    with pytest.raises(ValueError, match="no run_date column"):
        publish_slice(frame, str(tmp_path / "t"), {"run_date": DAY}, "run")


def test_job_runs_under_spark_submit_with_its_master(tmp_path: Path):
    """The same entry point runs under spark-submit, which alone decides the master."""
    lake = tmp_path / "lake"
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from recsys.config import load_config\n"
        "from recsys.spark import build_spark\n"
        f"spark = build_spark(load_config(overrides=['lake.root={lake}']))\n"
        "print('MASTER=' + spark.sparkContext.master)\n"
        "spark.range(3).write.format('delta').save(load_config(overrides=['lake.root="
        f"{lake}']).table_path('items'))\n"
        "spark.stop()\n"
    )
    done = spark_submit(lake, "local[1]", probe)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MASTER=local[1]" in done.stdout
    assert (lake / "items" / "_delta_log").is_dir()


def test_spark_submit_drivers_map_the_class_archive(tmp_path: Path, base_config):
    """``make jars`` built the driver's class archive, and a spark-submit driver maps it.

    ``-Xshare:on`` makes the JVM refuse to start when it cannot use the archive (another JDK,
    changed jars, a classpath the archive does not match), where ``-Xshare:auto`` (what the
    jobs use) would start without it.
    """
    from recsys.spark import class_archive, submit_args

    archive = class_archive(base_config)
    assert archive is not None, (
        f"no class archive at {base_config.spark.class_archive}: `make jars` builds it"
    )
    flags = submit_args(config_with_lake(tmp_path / "lake"))
    assert flags[flags.index("--driver-java-options") + 1] == f"-XX:SharedArchiveFile={archive} -Xshare:auto"
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from recsys.config import load_config\n"
        "from recsys.spark import build_spark\n"
        "spark = build_spark(load_config())\n"
        "jvm = spark.sparkContext._jvm\n"
        "args = jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()\n"
        "print('ARGS=' + ' '.join(str(a) for a in args))\n"
        "spark.stop()\n"
    )
    done = spark_submit(
        tmp_path / "lake", "local[1]", probe, java_options=f"-XX:SharedArchiveFile={archive} -Xshare:on"
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "-Xshare:on" in done.stdout and f"-XX:SharedArchiveFile={archive}" in done.stdout

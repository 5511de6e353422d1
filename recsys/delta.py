"""Run-date partitions of Delta tables: the column, the run id, and reading one date.

Every table is partitioned by ``run_date`` and each job replaces exactly its date's rows
(``spark_jobs.common.publish``, ``replaceWhere``), so a rerun or a backfill of the same date
yields the same table, and a reader sees either the old or the new partition, never a mix
(Delta commits are atomic). Each commit carries the run id in ``userMetadata`` so the table
history says which run wrote what.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

RUN_DATE_COL = "run_date"


def run_id_for(run_date: dt.date) -> str:
    """Airflow's run id when running inside a task, else a deterministic manual id."""
    return os.environ.get("AIRFLOW_CTX_DAG_RUN_ID") or f"manual__{run_date.isoformat()}"


def with_run_date(df: DataFrame, run_date: dt.date, column: str = RUN_DATE_COL) -> DataFrame:
    """``df`` with a date column (``run_date``, or e.g. ``valid_from``) set to ``run_date``."""
    from pyspark.sql import functions as F

    return df.withColumn(column, F.lit(run_date).cast("date"))


def read_partition(spark: SparkSession, path: str, run_date: dt.date) -> DataFrame:
    from pyspark.sql import functions as F

    return spark.read.format("delta").load(path).where(F.col(RUN_DATE_COL) == F.lit(run_date).cast("date"))

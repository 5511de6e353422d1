"""Publishing DataFrames to Delta: one run_date partition at a time, atomically.

A write replaces exactly the rows of its run_date (``replaceWhere``), so a rerun or a
backfill of the same date yields the same table, and a reader sees either the old or the
new partition, never a mix (Delta commits are atomic). Each commit carries the run id in
``userMetadata`` so the table history says which run wrote what.
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


def with_run_date(df: DataFrame, run_date: dt.date) -> DataFrame:
    from pyspark.sql import functions as F

    return df.withColumn(RUN_DATE_COL, F.lit(run_date).cast("date"))


def publish_partition(df: DataFrame, path: str, run_date: dt.date, run_id: str) -> None:
    """Overwrite the ``run_date`` partition of the Delta table at ``path`` with ``df``."""
    if RUN_DATE_COL not in df.columns:
        raise ValueError(f"cannot publish to {path}: the frame has no {RUN_DATE_COL} column")
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"{RUN_DATE_COL} = DATE'{run_date.isoformat()}'")
        .option("userMetadata", run_id)
        .partitionBy(RUN_DATE_COL)
        .save(path)
    )


def read_partition(spark: SparkSession, path: str, run_date: dt.date) -> DataFrame:
    from pyspark.sql import functions as F

    return spark.read.format("delta").load(path).where(F.col(RUN_DATE_COL) == F.lit(run_date).cast("date"))

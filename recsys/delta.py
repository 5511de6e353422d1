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
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow
    import pyarrow.dataset
    from deltalake import DeltaTable
    from pyspark.sql import DataFrame, SparkSession

RUN_DATE_COL = "run_date"


#: This process's attempt, in the manual run ids it stamps (:func:`run_id_for`).
_ATTEMPT = uuid.uuid4().hex[:8]
#: A run id to stamp instead, for a driver that runs one attempt as several processes.
RUN_ID_ENV = "RECSYS_RUN_ID"


def run_id_for(run_date: dt.date) -> str:
    """The id of this attempt at ``run_date``, stamped on every commit (and run-stats row).

    Inside an Airflow task: the DAG run's id and the task's try number (``<run id>__try<n>``), so
    a retry is told from the first try. Else ``$RECSYS_RUN_ID`` when set, else
    ``manual__<date>__<8 hex digits>``, drawn once per process: two manual runs of a date are two
    attempts in the Delta history. Ids are metadata: no table's content depends on them but the
    columns that record them.
    """
    airflow = os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")
    if airflow:
        tries = os.environ.get("AIRFLOW_CTX_TRY_NUMBER")
        return f"{airflow}__try{tries}" if tries else airflow
    return os.environ.get(RUN_ID_ENV) or f"manual__{run_date.isoformat()}__{_ATTEMPT}"


def with_run_date(df: DataFrame, run_date: dt.date, column: str = RUN_DATE_COL) -> DataFrame:
    """``df`` with a date column (``run_date``, or e.g. ``valid_from``) set to ``run_date``."""
    from pyspark.sql import functions as F

    return df.withColumn(column, F.lit(run_date).cast("date"))


def read_partition(spark: SparkSession, path: str, run_date: dt.date) -> DataFrame:
    from pyspark.sql import functions as F

    return spark.read.format("delta").load(path).where(F.col(RUN_DATE_COL) == F.lit(run_date).cast("date"))


# ------------------------------------------------------------------ delta-rs reads (no JVM)


def open_delta(path: str, version: int | None = None) -> DeltaTable | None:
    """The delta-rs handle of the table at ``path`` (a path or URI), or None when there is none."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(path, version=version)
    except TableNotFoundError:
        return None


def partition_dates(path: str, column: str) -> list[dt.date]:
    """The values of the date partition ``column`` in the table's current snapshot, sorted.

    From Delta's log (delta-rs), reading no data; an absent table has none.
    """
    table = open_delta(path)
    return [] if table is None else snapshot_partition_dates(table, column)


def snapshot_partition_dates(table: DeltaTable, column: str) -> list[dt.date]:
    """:func:`partition_dates` of a delta-rs handle already open (at its version)."""
    return sorted({dt.date.fromisoformat(p[column]) for p in table.partitions() if p.get(column)})


def arrow_dataset(table: DeltaTable, file_pruning_predicate: Any = None) -> pyarrow.dataset.Dataset:
    """The active files of a delta-rs ``table`` as a pyarrow dataset read by pyarrow's own filesystem.

    delta-rs's default dataset reads through its Rust object store from Arrow's I/O threads, and
    a process that exits soon after such a read aborts now and then ("terminate called without
    an active exception", exit status 134: the Rust runtime is torn down under a live I/O
    thread; 4 of 6 runs that read a small table, here). Reading with pyarrow's filesystem for the
    table's URI, as delta-rs documents for custom filesystems, keeps Rust out of the scan.
    ``file_pruning_predicate``: delta-rs's file filter (partition values, file statistics).
    """
    import pyarrow.fs as pafs

    from recsys.config import arrow_uri

    raw, root = pafs.FileSystem.from_uri(arrow_uri(table.table_uri))
    return table.to_pyarrow_dataset(
        filesystem=pafs.SubTreeFileSystem(root, raw), file_pruning_predicate=file_pruning_predicate
    )


def read_arrow(table: DeltaTable, columns: Sequence[str] | None = None, filters: Any = None) -> pyarrow.Table:
    """The rows of a delta-rs ``table`` (``filters``: DNF tuples; they prune files and filter rows)."""
    from pyarrow.parquet import filters_to_expression

    dataset = arrow_dataset(table, file_pruning_predicate=filters)
    expression = None if filters is None else filters_to_expression(filters)
    return dataset.to_table(columns=None if columns is None else list(columns), filter=expression)


# ------------------------------------------------------------------ delta-rs writes (small tables)


def arrow_schema(ddl: str) -> pyarrow.Schema:
    """A pyarrow schema from a Spark DDL string (``"a date, b map<string,bigint>, c array<string>"``).

    The types of the bookkeeping tables: date, string, boolean, int, long/bigint, double, and
    arrays and maps of those.
    """
    import pyarrow as pa

    scalars = {
        "date": pa.date32(),
        "string": pa.string(),
        "boolean": pa.bool_(),
        "int": pa.int32(),
        "long": pa.int64(),
        "bigint": pa.int64(),
        "double": pa.float64(),
    }

    def split_top(text: str) -> list[str]:
        parts, depth, start = [], 0, 0
        for i, char in enumerate(text):
            depth += {"<": 1, ">": -1}.get(char, 0)
            if char == "," and depth == 0:
                parts.append(text[start:i])
                start = i + 1
        return [p.strip() for p in [*parts, text[start:]] if p.strip()]

    def parse(type_name: str) -> pyarrow.DataType:
        type_name = type_name.strip().lower()
        if type_name.startswith("array<"):
            return pa.list_(parse(type_name[len("array<") : -1]))
        if type_name.startswith("map<"):
            key, value = split_top(type_name[len("map<") : -1])
            return pa.map_(parse(key), parse(value))
        if type_name not in scalars:
            raise ValueError(f"unsupported type {type_name!r} in {ddl!r}")
        return scalars[type_name]

    return pa.schema([(name, parse(rest)) for name, rest in (f.split(None, 1) for f in split_top(ddl))])


def replace_where(
    path: str, rows: pyarrow.Table, predicate: str, run_id: str, partition_by: Sequence[str] = ()
) -> None:
    """Replace the rows of the Delta table at ``path`` that match ``predicate`` with ``rows``: one commit.

    For the small bookkeeping tables (the ingest ledger, drop and run stats, items), written by
    delta-rs in this process: a Spark write of a few rows costs 1-3 s of jobs (finding and
    rewriting the matching files, collecting statistics), against about 50 ms here. Like Spark's
    replaceWhere, delta-rs refuses rows outside ``predicate`` and writes the run id as the
    commit's ``userMetadata``. A missing table is created by this commit (partitioned by
    ``partition_by``). On S3, delta-rs commits with S3's conditional writes.
    """
    from deltalake import CommitProperties, write_deltalake

    properties = CommitProperties(custom_metadata={"userMetadata": run_id})
    if open_delta(path) is None:
        write_deltalake(
            path, rows, mode="append", partition_by=list(partition_by) or None, commit_properties=properties
        )
    else:
        write_deltalake(path, rows, mode="overwrite", predicate=predicate, commit_properties=properties)

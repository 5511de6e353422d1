"""Maintenance of the lake for a run date: retention of derived tables, then OPTIMIZE and VACUUM.

Retention keeps every date from the horizon ``D - pipeline.retention_days`` on exactly
reproducible and lets older detail go:

* versioned tables (``ratings_silver``, ``sessions``, ``sequences``, ``user_states``, see
  :mod:`recsys.asof`): a version dated at or before the horizon that a later version at or
  before the horizon supersedes can serve no read as of a date >= the horizon, and is deleted
  (one MERGE per table).
  The horizon becomes the table property ``recsys.asOfHorizon``, and as-of reads of earlier
  dates then fail with a clear error instead of returning a state with holes;
* per-night copies (``recommendations``, ``items``) and staged scoring output: partitions and
  folders dated before the horizon are deleted.

``ratings_bronze`` and ``ratings_quarantine`` are the record of what arrived and why rows were
refused; they, the ingest ledger, the drop and run stats, ``drift_reports`` and ``model_runs`` are
never pruned.

Every table is then compacted (``OPTIMIZE``) and vacuumed: files no longer referenced and older
than ``pipeline.vacuum_retention_hours`` are removed (time travel further back than that goes).
The summary is kept in ``<validation_dir>/<run_date>/maintenance.json``.

    python -m spark_jobs.maintenance --run-date 2026-11-24      (make maintain RUN_DATE=...)
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from recsys.asof import AS_OF_KEYS, HORIZON_PROPERTY, VALID_FROM_COL
from spark_jobs.common import (
    RunContext,
    context_from_args,
    dated_folders,
    hadoop_path,
    run_date_literal,
    table_exists,
    write_json,
)
from spark_jobs.pipeline import OUTPUT_TABLES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: Tables holding one full copy per night (run_date partitions), pruned before the horizon.
PER_NIGHT_TABLES = ("recommendations", "items")
#: Every table maintenance compacts and vacuums.
ALL_TABLES = tuple(
    dict.fromkeys([*OUTPUT_TABLES, "recommendations", "model_runs", "drift_reports", "user_states"])
)
#: Delta refuses VACUUM below this retention unless its safety check is turned off.
DELTA_MIN_RETENTION_HOURS = 168


def horizon_for(ctx: RunContext) -> dt.date:
    return ctx.run_date - dt.timedelta(days=ctx.config.pipeline.retention_days)


def prune_versions(spark: SparkSession, ctx: RunContext, table: str, horizon: dt.date) -> int:
    """Delete the versions of ``table`` superseded at or before ``horizon``; returns the rows deleted."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    path = ctx.table(table)
    keys = list(AS_OF_KEYS[table])
    old = (
        spark.read.format("delta")
        .load(path)
        .where(F.col(VALID_FROM_COL) <= F.lit(horizon).cast("date"))
        .select(*keys, VALID_FROM_COL)
    )
    latest = old.groupBy(*keys).agg(F.max(VALID_FROM_COL).alias("_kept"))
    doomed = (
        old.join(latest, keys).where(F.col(VALID_FROM_COL) < F.col("_kept")).select(*keys, VALID_FROM_COL)
    ).distinct()
    deleted = 0
    if doomed.limit(1).count():
        condition = " AND ".join(f"t.{c} = d.{c}" for c in [*keys, VALID_FROM_COL])
        target = DeltaTable.forPath(spark, path)
        target.alias("t").merge(doomed.alias("d"), condition).whenMatchedDelete().execute()
        metrics = target.history(1).select("operationMetrics").first()["operationMetrics"] or {}
        deleted = int(metrics.get("numTargetRowsDeleted", 0))
    spark.sql(
        f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('{HORIZON_PROPERTY}' = '{horizon.isoformat()}')"
    )
    log.info("%s: %s superseded version rows deleted up to %s", table, f"{deleted:,}", horizon)
    return deleted


def prune_nights(spark: SparkSession, ctx: RunContext, table: str, horizon: dt.date) -> int:
    """Delete the run_date partitions of ``table`` before ``horizon``; returns the rows deleted."""
    from delta.tables import DeltaTable

    target = DeltaTable.forPath(spark, ctx.table(table))
    target.delete(f"run_date < {run_date_literal(horizon)}")
    metrics = target.history(1).select("operation", "operationMetrics").first()
    deleted = (
        int((metrics["operationMetrics"] or {}).get("numDeletedRows", 0))
        if metrics["operation"] == "DELETE"
        else 0
    )
    log.info("%s: %s rows of nights before %s deleted", table, f"{deleted:,}", horizon)
    return deleted


def prune_staging(spark: SparkSession, ctx: RunContext, horizon: dt.date) -> list[str]:
    """Delete staged scoring folders dated before ``horizon``."""
    uri = ctx.lake_uri(ctx.config.scoring.staging_dir, "recommendations")
    fs, _ = hadoop_path(spark, uri)
    removed = []
    for dated, status in dated_folders(spark, uri):
        if dated < horizon:
            fs.delete(status.getPath(), True)
            removed.append(dated.isoformat())
    return removed


def optimize_and_vacuum(spark: SparkSession, ctx: RunContext, table: str) -> dict[str, Any]:
    from delta.tables import DeltaTable

    target = DeltaTable.forPath(spark, ctx.table(table))
    compaction = target.optimize().executeCompaction().select("metrics").first()["metrics"]
    hours = ctx.config.pipeline.vacuum_retention_hours
    check_key = "spark.databricks.delta.retentionDurationCheck.enabled"
    previous = spark.conf.get(check_key, "true")
    if hours < DELTA_MIN_RETENTION_HOURS:
        spark.conf.set(check_key, "false")
    try:
        target.vacuum(float(hours))
    finally:
        spark.conf.set(check_key, previous)
    return {
        "files_added": int(compaction["numFilesAdded"]),
        "files_removed": int(compaction["numFilesRemoved"]),
    }


def run(spark: SparkSession, ctx: RunContext) -> dict[str, Any]:
    """Retention, OPTIMIZE and VACUUM for ``ctx.run_date``; returns (and keeps) the summary."""
    horizon = horizon_for(ctx)
    summary: dict[str, Any] = {"run_date": ctx.run_date.isoformat(), "horizon": horizon.isoformat()}
    pruned: dict[str, int] = {}
    for table in AS_OF_KEYS:
        if table_exists(spark, ctx.table(table)):
            pruned[table] = prune_versions(spark, ctx, table, horizon)
    for table in PER_NIGHT_TABLES:
        if table_exists(spark, ctx.table(table)):
            pruned[table] = prune_nights(spark, ctx, table, horizon)
    summary["rows_deleted"] = pruned
    summary["staging_removed"] = prune_staging(spark, ctx, horizon)
    summary["compaction"] = {
        table: optimize_and_vacuum(spark, ctx, table)
        for table in ALL_TABLES
        if table_exists(spark, ctx.table(table))
    }
    write_json(spark, ctx.validation_uri("maintenance") + ".json", summary)
    log.info("maintenance %s: horizon %s, deleted %s", ctx.run_date, horizon, pruned)
    return summary


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark
    from spark_jobs.common import job_parser

    args = job_parser("retention, OPTIMIZE and VACUUM of the lake for one run date").parse_args(argv)
    ctx = context_from_args(args)
    run(build_spark(ctx.config, app_name="maintenance"), ctx)


if __name__ == "__main__":
    main()

"""What one night produced, read back after the DAG ran it (``make run`` prints this).

``make run`` replays the embedded ML-100K into the landing zone and runs the ``recsys_nightly``
DAG once for the run date (``airflow dags test``); then ``python -m orchestration.nightly
--run-date D`` prints, from the lake only:

1. the tables and the night's accounting (``ratings_run_stats`` of D);
2. the night's drift findings (``drift_reports``: input and output, by measure);
3. the model decisions of the night (``orchestration.model_tasks``' records: the refresh plan,
   champion and challenger on tonight's split, who scored);
4. a sample: one user's top 10 with titles, and the run's catalogue coverage, from the
   documented queries in ``docs/sql/`` (DuckDB and delta-rs: no JVM to start);
5. where the night's HTML report is (:mod:`orchestration.night_report`) and the registry's champion.

:func:`run_pipeline_stages` runs the Spark stages in one process (the experiments' path).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from types import SimpleNamespace
from typing import Any

from recsys.cli import add_run_date_argument, configure_logging
from recsys.config import Config, add_config_arguments, config_from_args

log = logging.getLogger(__name__)


def run_pipeline_stages(config: Config, run_date: dt.date, inputs: tuple[list[str], str] | None = None):
    """The Spark ratings pipeline for ``run_date`` on the landing zone's drops up to that date.

    ``inputs`` (paths, format name) are landed as the run date's drop first.
    """
    from recsys.spark import build_spark
    from spark_jobs.common import RunContext
    from spark_jobs.pipeline import run_pipeline

    return run_pipeline(build_spark(config), RunContext.for_date(config, run_date), *(inputs or (None, None)))


def _rows_of(config: Config, table: str, run_date: dt.date, columns: list[str] | None = None):
    """The run date's rows of a run_date-partitioned Delta table (delta-rs, no JVM)."""
    from deltalake import DeltaTable

    from recsys.delta import read_arrow

    return read_arrow(DeltaTable(config.table_path(table)), columns, [("run_date", "=", run_date)])


def sample(config: Config, run_date: dt.date) -> tuple[int, Any, Any]:
    """(a user, their top 10 with titles, the run's coverage) from the documented queries (DuckDB)."""
    import pyarrow.compute as pc

    from recsys.sql import duckdb_query

    tables = {name: config.table_path(name) for name in ("recommendations", "items", "model_runs")}
    scored = _rows_of(config, "recommendations", run_date, ["user_id", "is_fallback"])
    user = int(pc.min(scored.filter(pc.invert(scored["is_fallback"]))["user_id"]).as_py())
    top10 = duckdb_query(tables, "user_top10", user_id=user)
    coverage = duckdb_query(tables, "coverage", run_date=run_date)
    return user, top10, coverage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="what the night of a run date produced (after the DAG ran it)"
    )
    add_run_date_argument(parser)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    config = config_from_args(args)
    from orchestration.model_tasks import read_step
    from spark_jobs.pipeline import OUTPUT_TABLES

    root = config.project_path(config.lake.root)
    print(f"\nTables (Delta) under {root}:")
    for name in (*OUTPUT_TABLES, "recommendations", "model_runs", "drift_reports"):
        print(f"  {name:<20} {config.table_path(name)}")
    validation = f"{root.rstrip('/')}/{config.pipeline.validation_dir}/{args.run_date.isoformat()}"
    print(f"  {'validation results':<20} {validation}/*.json, *.html")
    stats = SimpleNamespace(**_rows_of(config, "ratings_run_stats", args.run_date).to_pylist()[0])
    drops = f"{stats.drops[0]}..{stats.drops[-1]} ({len(stats.drops)})" if stats.drops else "none"
    print(
        f"\nTonight's drops {drops}: {stats.rows_read:,} rows read, {stats.rows_quarantined:,} quarantined, "
        f"{stats.duplicates_removed:,} duplicates, {stats.late:,} late, "
        f"{stats.users_with_new_events:,} users with new events; as of {args.run_date}: "
        f"{stats.total_rows_silver:,} ratings"
    )
    from spark_jobs.drift import report

    findings = report(config, args.run_date)
    print(f"\nDrift ({config.table_path('drift_reports')}):")
    for row in sorted(findings, key=lambda r: (r["stage"], r["measure"], r["statistic"])):
        value = "-" if row["value"] is None else f"{row['value']:.4f}"
        print(f"  {row['stage']:<6} {row['measure']:<18} {row['statistic']:<12} {value:>8}  {row['status']}")
    planned = read_step(config, args.run_date, "train")
    decided = read_step(config, args.run_date, "decide")
    scored = read_step(config, args.run_date, "score")
    print(
        f"\nTraining: {planned['plan']['mode']} ({planned['plan']['reason']}); "
        f"challenger {planned['challenger']}"
    )
    print(f"Champion/challenger: {decided['champion']} scores tonight ({decided['reason']})")
    print(
        f"Scored {scored['users']:,} users ({scored['fallback_users']:,} by popularity fallback): "
        f"{scored['rows']:,} recommendations, top {scored['top_k']} each"
    )
    user, top10, coverage = sample(config, args.run_date)
    print(f"\nUser {user}'s top 10 (docs/sql/user_top10.sql):")
    print(top10.to_string(index=False))
    print(f"\nCoverage of {args.run_date} (docs/sql/coverage.sql):")
    print(coverage.to_string(index=False))
    from orchestration.night_report import report_path

    page = report_path(config, args.run_date)
    print(f"\nThe night's report (open it in a browser): {page if page.is_file() else 'not written'}")
    print(f"Model registry (MLflow): {config.mlflow_tracking_uri()}, champion {scored['model_uri']}")


if __name__ == "__main__":
    main()

"""One nightly run, end to end, without Airflow (``make run``).

Runs every stage that exists, in order, for one run date, then prints where the tables
are and the result of a sample SQL query over them. Stages today: the Spark ratings
pipeline (:mod:`spark_jobs.pipeline`) on the configured raw ratings (the embedded ML-100K by
default): ingest -> ratings gate -> silver -> sessions -> sequences -> sequences gate.

:func:`load_raw_ratings` (the pandas reader straight into ``ratings_raw``) is kept for
comparisons with the pipeline's bronze table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging

from recsys.cli import add_run_date_argument, configure_logging
from recsys.config import Config, add_config_arguments, config_from_args

log = logging.getLogger(__name__)

SAMPLE_SQL = """
SELECT COUNT(*)                AS ratings,
       COUNT(DISTINCT user_id) AS users,
       COUNT(DISTINCT item_id) AS items,
       ROUND(AVG(rating), 4)   AS mean_rating,
       MIN(timestamp)          AS first_ts,
       MAX(timestamp)          AS last_ts
FROM ratings_raw
WHERE run_date = DATE'{run_date}'
"""


def load_raw_ratings(config: Config, run_date: dt.date) -> str:
    """Read the configured raw ratings and publish them as this date's ratings_raw partition."""
    from recsys.datasets import raw_source
    from recsys.datasets.formats import read_ratings
    from recsys.delta import publish_partition, run_id_for, with_run_date
    from recsys.spark import build_spark

    source = raw_source(config)
    log.info("reading %s (%s)", source.path, source.format_name)
    frame = read_ratings(source.path, source.format_name)
    spark = build_spark(config)
    df = with_run_date(spark.createDataFrame(frame), run_date)
    path = config.table_path("ratings_raw")
    publish_partition(df, path, run_date, run_id_for(run_date))
    log.info("published %d rows to %s", len(frame), path)
    return path


PIPELINE_SQL = """
SELECT st.rows_read,
       st.rows_quarantined                        AS quarantined,
       st.duplicates_removed                      AS duplicates,
       st.rows_silver                             AS silver,
       COUNT(DISTINCT se.user_id)                 AS users,
       COUNT(DISTINCT se.item_id)                 AS items,
       COUNT(DISTINCT se.user_id, se.session_id)  AS sessions,
       ROUND(COUNT(*) / COUNT(DISTINCT se.user_id, se.session_id), 2) AS events_per_session
FROM sessions se JOIN ratings_run_stats st ON se.run_date = st.run_date
WHERE se.run_date = DATE'{run_date}'
GROUP BY st.rows_read, st.rows_quarantined, st.duplicates_removed, st.rows_silver
"""


def run_pipeline_stages(config: Config, run_date: dt.date):
    """The Spark ratings pipeline for ``run_date`` on the configured raw file."""
    from recsys.datasets import raw_source
    from recsys.spark import build_spark
    from spark_jobs.common import RunContext
    from spark_jobs.pipeline import run_pipeline

    source = raw_source(config)
    log.info("pipeline on %s (%s)", source.path, source.format_name)
    spark = build_spark(config)
    return run_pipeline(spark, RunContext.for_date(config, run_date), [str(source.path)], source.format_name)


def pipeline_query(config: Config, run_date: dt.date):
    from recsys.spark import build_spark

    spark = build_spark(config)
    for table in ("sessions", "ratings_run_stats"):
        spark.read.format("delta").load(config.table_path(table)).createOrReplaceTempView(table)
    return spark.sql(PIPELINE_SQL.format(run_date=run_date.isoformat())).toPandas()


def sample_query(config: Config, run_date: dt.date):
    from recsys.spark import build_spark

    spark = build_spark(config)
    spark.read.format("delta").load(config.table_path("ratings_raw")).createOrReplaceTempView("ratings_raw")
    return spark.sql(SAMPLE_SQL.format(run_date=run_date.isoformat())).toPandas()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one nightly run on the configured data")
    add_run_date_argument(parser)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    config = config_from_args(args)
    outcome = run_pipeline_stages(config, args.run_date)
    result = pipeline_query(config, args.run_date)
    root = config.project_path(config.lake.root)
    print(f"\nTables (Delta) under {root}:")
    for name, path in outcome.tables.items():
        print(f"  {name:<20} {path}")
    validation = f"{root.rstrip('/')}/{config.pipeline.validation_dir}/{args.run_date.isoformat()}"
    print(f"  {'validation results':<20} {validation}/*.json, *.html")
    print(f"\nStage seconds: {outcome.seconds}")
    print(f"\nSample SQL:{PIPELINE_SQL.format(run_date=args.run_date.isoformat())}")
    print(result.to_string(index=False))


if __name__ == "__main__":
    main()

"""One nightly run, end to end, without Airflow (``make run``).

For one run date, in order:

1. the Spark ratings pipeline (:mod:`spark_jobs.pipeline`) on the landing zone's drops up to the
   run date (``make run`` first replays the embedded ML-100K there, ``python -m recsys.datasets
   replay``): ingest -> ratings gate -> silver -> sessions -> sequences -> sequences gate -> items;
2. the model: the version for tonight's sequences snapshot and training settings
   (:func:`model.registry.model_version`) is reused when it exists, i.e. when the snapshot did
   not change, and trained otherwise (:func:`model.train.train_and_evaluate`);
3. scoring (:func:`model.score.score_run`): every user's top-K, staged as Parquet;
4. publishing (:mod:`spark_jobs.publish_recommendations`): the recommendations gate, then the
   ``recommendations`` and ``model_runs`` partitions of the date;
5. a sample: one user's top 10 with titles, and the table's catalogue coverage, from the
   documented queries in ``docs/sql/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from recsys.cli import add_run_date_argument, configure_logging
from recsys.config import Config, add_config_arguments, config_from_args

log = logging.getLogger(__name__)


@dataclass
class NightResult:
    """What one night produced: table locations, the model used, seconds per stage."""

    tables: dict[str, str]
    model_version: str
    trained: bool
    scoring: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    pipeline_stats: Any = None


def run_pipeline_stages(config: Config, run_date: dt.date, inputs: tuple[list[str], str] | None = None):
    """The Spark ratings pipeline for ``run_date`` on the landing zone's drops up to that date.

    ``inputs`` (paths, format name) are landed as the run date's drop first.
    """
    from recsys.spark import build_spark
    from spark_jobs.common import RunContext
    from spark_jobs.pipeline import run_pipeline

    return run_pipeline(build_spark(config), RunContext.for_date(config, run_date), *(inputs or (None, None)))


def train_or_reuse(config: Config, run_date: dt.date, device: Any) -> tuple[str, bool]:
    """(model version for tonight's sequences, whether it was trained now).

    The version is keyed by the training settings and the sequences snapshot's content, so an
    unchanged snapshot reuses the model it trained before.
    """
    from model.data import SequenceData, read_sequences
    from model.registry import ModelRegistry, model_version
    from model.train import save_trained, train_and_evaluate

    data = SequenceData.from_arrow(read_sequences(config.table_path("sequences"), run_date))
    version = model_version(config, data.fingerprint())
    registry = ModelRegistry.from_config(config)
    if registry.has(version):
        log.info("sequences unchanged since %s was trained: reusing it", version)
        return version, False
    log.info("training %s on %d users, %d items (%s)", version, data.n_users, data.n_items, device)
    work_dir = registry.work_dir(version)
    trained = train_and_evaluate(config, data, work_dir / "checkpoint", run_date, device)
    save_trained(work_dir, config, trained)
    registry.publish(version)
    return version, True


def run_night(config: Config, run_date: dt.date) -> NightResult:
    """Every stage of one night for ``run_date`` (see the module docstring)."""
    from model.score import score_run
    from model.train import resolve_device
    from recsys.spark import build_spark
    from spark_jobs import publish_recommendations
    from spark_jobs.common import RunContext

    seconds: dict[str, float] = {}

    def timed(name: str, started: float) -> None:
        seconds[name] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    pipeline = run_pipeline_stages(config, run_date)
    timed("pipeline", started)
    device = resolve_device(config.device)
    started = time.perf_counter()
    version, trained = train_or_reuse(config, run_date, device)
    timed("train" if trained else "reuse model", started)
    ctx = RunContext.for_date(config, run_date)
    started = time.perf_counter()
    scoring = score_run(config, run_date, version, device, run_id=ctx.run_id)
    timed("score", started)
    started = time.perf_counter()
    publish_recommendations.run(build_spark(config), ctx)
    timed("publish", started)
    tables = {
        **pipeline.tables,
        **{name: config.table_path(name) for name in ("recommendations", "model_runs")},
    }
    return NightResult(
        tables, version, trained, scoring.manifest, {**pipeline.seconds, **seconds}, pipeline.stats
    )


def sample(config: Config, run_date: dt.date) -> tuple[int, Any, Any]:
    """(a user, their top 10 with titles, the run's coverage) from the documented queries."""
    from recsys.spark import build_spark
    from recsys.sql import spark_query

    spark = build_spark(config)
    tables = {name: config.table_path(name) for name in ("recommendations", "items", "model_runs")}
    user = (
        spark.read.format("delta")
        .load(tables["recommendations"])
        .where(f"run_date = DATE'{run_date.isoformat()}' AND NOT is_fallback")
        .agg({"user_id": "min"})
        .first()[0]
    )
    top10 = spark_query(spark, tables, "user_top10", user_id=int(user))
    coverage = spark_query(spark, tables, "coverage", run_date=run_date)
    return int(user), top10, coverage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one nightly run on the configured data")
    add_run_date_argument(parser)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    config = config_from_args(args)
    night = run_night(config, args.run_date)
    root = config.project_path(config.lake.root)
    print(f"\nTables (Delta) under {root}:")
    for name, path in night.tables.items():
        print(f"  {name:<20} {path}")
    validation = f"{root.rstrip('/')}/{config.pipeline.validation_dir}/{args.run_date.isoformat()}"
    print(f"  {'validation results':<20} {validation}/*.json, *.html")
    print(f"\nStage seconds: {night.seconds}")
    stats = night.pipeline_stats
    if stats is not None:
        drops = f"{stats.drops[0]}..{stats.drops[-1]} ({len(stats.drops)})" if stats.drops else "none"
        print(
            f"\nTonight's drops {drops}: {stats.rows_read:,} rows read, "
            f"{stats.rows_quarantined:,} quarantined, "
            f"{stats.duplicates_removed:,} duplicates, {stats.late:,} late, "
            f"{stats.users_with_new_events:,} users with new events; as of {args.run_date}: "
            f"{stats.total_rows_silver:,} ratings"
        )
    action = "trained tonight" if night.trained else "reused (sequences unchanged)"
    manifest = night.scoring
    print(
        f"\nModel {night.model_version} ({action}) scored {manifest['users']:,} users "
        f"({manifest['fallback_users']:,} by popularity fallback): {manifest['rows']:,} recommendations, "
        f"top {manifest['top_k']} each"
    )
    user, top10, coverage = sample(config, args.run_date)
    print(f"\nUser {user}'s top 10 (docs/sql/user_top10.sql):")
    print(top10.to_string(index=False))
    print(f"\nCoverage of {args.run_date} (docs/sql/coverage.sql):")
    print(coverage.to_string(index=False))


if __name__ == "__main__":
    main()

"""Publish: gate the staged recommendations of a run date, then replace that date in Delta.

    spark-submit ... spark_jobs/publish_recommendations.py --run-date 2026-11-24 --config local

Input: what :mod:`model.score` staged under ``<lake>/<scoring.staging_dir>/recommendations/<date>/``
(the rows, the model's catalogue, and a manifest naming the model version and the versions of
``sequences`` and ``ratings_silver`` that scoring read).

Gate (``expectations/recommendations.json``): one row of checks per user, derived in Spark
from the staged rows, silver and the sequences snapshot at exactly the versions scoring read,
and the catalogue. Every user of the snapshot exactly once, with ranks 1..n, n = min(K,
catalogue items the user never rated), no item twice, no item the user has rated anywhere in
their history, only catalogue items, scores non-increasing with rank, run_date / model_version
/ generated_at stamped. Results are kept like every gate's (JSON, Data Docs HTML, summary).

A failed gate raises :class:`expectations.gate.GateError` and publishes nothing: the table keeps
the date's previous partition. A passing gate overwrites the date in ``recommendations``
(replaceWhere), then the night's rows of ``model_runs``; rerunning the job, or scoring and the
job, gives the same tables.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from expectations.gate import check, load_suite, validate
from recsys.staging import CATALOGUE_FILE, RECOMMENDATIONS_FILE, read_manifest, staging_dir
from spark_jobs.common import RunContext, context_from_args, job_parser, publish
from spark_jobs.validate import save_results

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SUITE = "recommendations"
RECOMMENDATION_COLUMNS = (
    "run_date",
    "model_version",
    "user_id",
    "rank",
    "item_id",
    "score",
    "is_fallback",
    "generated_at",
)
MODEL_RUNS_SCHEMA = (
    "run_date date, model_version string, model_name string, config_hash string, "
    "sequences_fingerprint string, input_versions map<string,bigint>, metrics map<string,double>, "
    "training_seconds double, trained_tonight boolean, scored boolean, role string, "
    "training_mode string, promoted boolean, decision string, registry_version string, alias string"
)


def read_version(spark: SparkSession, ctx: RunContext, table: str, version: int) -> DataFrame:
    """The versioned ``table`` as of the run date, at Delta ``version`` (what scoring read)."""
    from recsys.asof import AS_OF_KEYS, as_of_spark

    return as_of_spark(spark, ctx.table(table), ctx.run_date, AS_OF_KEYS[table], version=version)


def recommendation_checks(
    recommendations: DataFrame,
    sequence_users: DataFrame,
    seen: DataFrame,
    catalogue: DataFrame,
    top_k: int,
    run_date: Any,
    model_version: str,
) -> DataFrame:
    """One row per user (of the staged rows or the snapshot) with the suite's check columns.

    ``seen`` holds (user_id, item_id) of every rating in silver, ``catalogue`` the item ids the
    model scores, ``sequence_users`` the snapshot's user ids.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    catalogue = catalogue.select("item_id", F.lit(True).alias("_in_catalogue"))
    seen_pairs = seen.select("user_id", "item_id").distinct()
    previous_score = F.lag("score").over(Window.partitionBy("user_id").orderBy("rank"))
    rows = (
        recommendations.join(F.broadcast(catalogue), "item_id", "left")
        .join(seen_pairs.withColumn("_seen", F.lit(True)), ["user_id", "item_id"], "left")
        .withColumn("_step_ok", previous_score.isNull() | (F.col("score") <= previous_score))
    )
    stamped = (
        (F.col("run_date") == F.lit(run_date).cast("date"))
        & (F.col("model_version") == F.lit(model_version))
        & F.col("generated_at").isNotNull()
    )
    per_user = rows.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct("rank").alias("ranks"),
        F.min("rank").alias("min_rank"),
        F.max("rank").alias("max_rank"),
        F.countDistinct("item_id").alias("items"),
        F.sum(F.col("_seen").isNotNull().cast("int")).alias("seen_items"),
        F.bool_and(F.col("_in_catalogue").isNotNull()).alias("in_catalogue"),
        F.bool_and(F.col("_step_ok") & F.col("score").isNotNull() & ~F.isnan("score")).alias("scores_ok"),
        F.bool_and(F.coalesce(stamped, F.lit(False))).alias("stamped"),
    )
    unseen = (
        seen_pairs.join(F.broadcast(catalogue), "item_id")
        .groupBy("user_id")
        .agg(F.count(F.lit(1)).alias("_seen_in_catalogue"))
    )
    n_catalogue = catalogue.count()
    expected = F.least(F.lit(top_k), F.lit(n_catalogue) - F.coalesce(F.col("_seen_in_catalogue"), F.lit(0)))
    # A user of the snapshot without rows fails "scored" alone; the per-row checks hold vacuously.
    unscored = F.col("rows").isNull()
    per_row_checks = {
        "ranks_complete": (F.col("ranks") == F.col("rows"))
        & (F.col("min_rank") == 1)
        & (F.col("max_rank") == F.col("rows")),
        "expected_count": F.col("rows") == expected,
        "items_distinct": F.col("items") == F.col("rows"),
        "no_seen_item": F.col("seen_items") == 0,
        "in_catalogue": F.col("in_catalogue"),
        "scores_non_increasing": F.col("scores_ok"),
        "stamped": F.col("stamped"),
    }
    return (
        sequence_users.select("user_id", F.lit(True).alias("in_sequences"))
        .join(per_user.withColumn("scored", F.lit(True)), "user_id", "full")
        .join(unseen, "user_id", "left")
        .select(
            "user_id",
            F.coalesce(F.col("in_sequences"), F.lit(False)).alias("in_sequences"),
            F.coalesce(F.col("scored"), F.lit(False)).alias("scored"),
            *[F.coalesce(check, unscored).alias(name) for name, check in per_row_checks.items()],
        )
    )


def run(spark: SparkSession, ctx: RunContext) -> dict[str, Any]:
    """Gate the staged recommendations of ``ctx.run_date`` and publish them; returns the gate summary."""
    from pyspark.sql import functions as F

    manifest = read_manifest(ctx.config, ctx.run_date)
    staged = staging_dir(ctx.config, ctx.run_date)
    versions = manifest["input_versions"]
    recommendations = spark.read.parquet(f"{staged}/{RECOMMENDATIONS_FILE}").select(*RECOMMENDATION_COLUMNS)
    catalogue = spark.read.parquet(f"{staged}/{CATALOGUE_FILE}")
    sequence_users = read_version(spark, ctx, "sequences", versions["sequences"]).select("user_id")
    seen = read_version(spark, ctx, "ratings_silver", versions["ratings_silver"]).select("user_id", "item_id")
    suite = load_suite(SUITE)
    parameters = {"users": sequence_users.count()}
    checks = recommendation_checks(
        recommendations,
        sequence_users,
        seen,
        catalogue,
        int(manifest["top_k"]),
        ctx.run_date,
        manifest["model_version"],
    ).persist()
    try:
        result = validate(checks, suite, parameters)
        checked = [column for column in checks.columns if column != "user_id"]
        failing = {} if result.success else {c: checks.where(~F.col(c)).count() for c in checked}
    finally:
        checks.unpersist()
    summary = {
        "parameters": parameters,
        "model_version": manifest["model_version"],
        "rows": manifest["rows"],
        "failing_users_by_check": failing,
        "input_versions": versions,
    }
    save_results(spark, ctx, suite, result, summary)
    check(
        result,
        suite,
        f"run_date {ctx.run_date} ({manifest['model_version']})",
        f"  failing users by check: {failing}; staged: {staged}; "
        f"results: {ctx.validation_uri(suite.name)}.json",
    )
    publish(recommendations, ctx, "recommendations")
    model_runs = spark.createDataFrame([_model_run(row) for row in manifest["model_runs"]], MODEL_RUNS_SCHEMA)
    publish(model_runs, ctx, "model_runs")
    log.info("published %s recommendations for %s", f"{manifest['rows']:,}", ctx.run_date)
    return summary


def _model_run(row: dict[str, Any]) -> dict[str, Any]:
    import datetime as dt

    return {**row, "run_date": dt.date.fromisoformat(row["run_date"])}


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    parser = job_parser("gate the staged recommendations of a run date and publish them to Delta")
    args = parser.parse_args(argv)
    ctx = context_from_args(args)
    run(build_spark(ctx.config, app_name="publish-recommendations"), ctx)


if __name__ == "__main__":
    main()

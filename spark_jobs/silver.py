"""Silver: this run's gated bronze -> ``ratings_silver`` (typed, deduplicated), with exact row accounting.

Rows kept are those the ratings gate did not quarantine: the same predicates, derived from
``expectations/ratings.json`` with the same parameters, so silver and quarantine partition the
batch. The silver job refuses to run when the gate has not passed for this run date.

Dedup policy (one rating per user and item):

* a user who rated the same item more than once (a re-rating) keeps the rating with the latest
  ``timestamp``;
* on equal timestamps the rating from the later line wins, ordered by (``source_file``,
  ``line_number``) — a later line of the export records the later write;
* exact duplicates (same user, item, rating and timestamp) are the special case where every
  copy is equal: one is kept (the last line, by the rule above).

Silver keeps the lineage of each rating: ``source_file`` and ``line_number`` of the line kept,
and ``copies``, the number of clean lines it stands for (1 + the duplicates removed).

Row accounting is exact and recorded in ``ratings_run_stats`` (one row per run_date)::

    rows_read (bronze) = rows_silver + rows_quarantined (ingest + gate) + duplicates_removed

Each term is counted on its own (rows of the bronze partition, as the gate counted them;
silver rows; rows of the quarantine table; the sum of ``copies - 1``); if they do not add up
the job fails before it publishes. The silver frame is
validated with ``expectations/ratings_silver.json`` (types, completeness, no key twice) before
it is published.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from expectations.gate import check, load_suite, validate
from spark_jobs.columns import (
    ITEM_COL,
    LINE_NUMBER_COL,
    PARSE_ERROR_COL,
    RATING_COL,
    RATINGS_COLUMNS,
    REASON_COL,
    RUN_DATE_COL,
    SOURCE_FILE_COL,
    TIMESTAMP_COL,
    USER_COL,
)
from spark_jobs.common import RunContext, context_from_args, job_parser, publish, read_json, read_run
from spark_jobs.ingest import MANIFEST
from spark_jobs.validate import (
    RATINGS_SUITE,
    gate_summary,
    ratings_parameters,
    require_gate_passed,
    save_results,
    tag_bronze,
)

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SILVER_SUITE = "ratings_silver"
COPIES_COL = "copies"
SILVER_COLUMNS = (
    USER_COL,
    ITEM_COL,
    RATING_COL,
    TIMESTAMP_COL,
    SOURCE_FILE_COL,
    LINE_NUMBER_COL,
    COPIES_COL,
    RUN_DATE_COL,
)
# True where a row has the (user_id, item_id) of the row before it: the silver suite's duplicates check.
REPEATED_KEY_COL = "repeats_previous_key"
_RANK = "_rank"


class AccountingError(RuntimeError):
    """rows read != silver + quarantined + duplicates: rows were lost or invented."""


@dataclass(frozen=True)
class RunStats:
    """The accounting row of one run_date in ``ratings_run_stats``."""

    rows_read: int
    rows_quarantined: int
    rows_quarantined_ingest: int
    rows_quarantined_gate: int
    duplicates_removed: int
    rows_silver: int

    def check(self) -> None:
        if self.rows_read != self.rows_silver + self.rows_quarantined + self.duplicates_removed:
            raise AccountingError(
                f"row accounting does not add up: read {self.rows_read:,} != silver {self.rows_silver:,}"
                f" + quarantined {self.rows_quarantined:,} + duplicates removed {self.duplicates_removed:,}"
            )


def rank_duplicates(ratings: DataFrame) -> DataFrame:
    """Add ``_rank`` (1 = the rating the dedup policy keeps) and ``copies`` per (user_id, item_id).

    The frame is hash-partitioned by user first: that satisfies the (user, item) windows, and
    the partitioning survives into silver, so sessions and sequences built from this frame in
    the same process need no further shuffle.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    latest_first = Window.partitionBy(USER_COL, ITEM_COL).orderBy(
        F.col(TIMESTAMP_COL).desc(), F.col(SOURCE_FILE_COL).desc(), F.col(LINE_NUMBER_COL).desc()
    )
    # One window operator: the whole-group count shares the rank's partitioning and order.
    whole_group = latest_first.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    return ratings.repartition(USER_COL).select(
        "*",
        F.row_number().over(latest_first).alias(_RANK),
        F.count(F.lit(1)).over(whole_group).cast("int").alias(COPIES_COL),
    )


def deduplicate(ratings: DataFrame) -> DataFrame:
    """One row per (user_id, item_id), chosen by the dedup policy, with ``copies`` (rows it stands for).

    Also adds ``repeats_previous_key``, which the silver suite expects to be false everywhere;
    it reuses the dedup's sort (by user, then item), so it costs no shuffle and no sort.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    kept = rank_duplicates(ratings).where(F.col(_RANK) == 1).drop(_RANK)
    previous_item = F.lag(ITEM_COL).over(Window.partitionBy(USER_COL).orderBy(ITEM_COL))
    return kept.withColumn(REPEATED_KEY_COL, F.coalesce(previous_item == F.col(ITEM_COL), F.lit(False)))


def clean_rows(tagged: DataFrame) -> DataFrame:
    """The rows the gate did not quarantine, typed."""
    from pyspark.sql import functions as F

    return tagged.where(F.col(REASON_COL).isNull())


def quarantined_rows(spark: SparkSession, ctx: RunContext) -> tuple[int, int]:
    """Rows of this run in ratings_quarantine, (ingest, gate)."""
    from pyspark.sql import functions as F

    counts = dict(
        read_run(spark, ctx, "ratings_quarantine").groupBy("stage").agg(F.count(F.lit(1))).collect()
    )
    return int(counts.get("ingest", 0)), int(counts.get("gate", 0))


def validate_silver(silver: DataFrame) -> ExpectationSuiteValidationResult:
    """``expectations/ratings_silver.json`` on the (deduplicated, persisted) silver frame."""
    return validate(silver, load_suite(SILVER_SUITE), {})


@dataclass
class SilverOutput:
    stats: RunStats
    # The published silver partition (plus repeats_previous_key), persisted, partitioned by user,
    # when run(keep=True); the caller unpersists it.
    frame: DataFrame | None


def run(spark: SparkSession, ctx: RunContext, keep: bool = False) -> SilverOutput:
    """Publish this run's silver partition and its accounting row."""
    from pyspark.sql import functions as F

    from recsys.delta import with_run_date

    require_gate_passed(spark, ctx, RATINGS_SUITE)
    manifest = read_json(spark, f"{ctx.validation_uri(MANIFEST)}.json")
    parameters = ratings_parameters(ctx.config, ctx.run_date, manifest["format"])
    bronze = read_run(spark, ctx, "ratings_bronze")
    needed = bronze.select(*RATINGS_COLUMNS, SOURCE_FILE_COL, LINE_NUMBER_COL, PARSE_ERROR_COL, RUN_DATE_COL)
    tagged = tag_bronze(needed, load_suite(RATINGS_SUITE), parameters)
    silver = deduplicate(clean_rows(tagged)).select(*SILVER_COLUMNS, REPEATED_KEY_COL).persist()
    try:
        totals = silver.agg(
            F.count(F.lit(1)).alias("rows"), F.sum(F.col(COPIES_COL) - 1).alias("dups")
        ).first()
        ingest_q, gate_q = quarantined_rows(spark, ctx)
        stats = RunStats(
            rows_read=int(gate_summary(spark, ctx, RATINGS_SUITE)["rows_read"]),
            rows_quarantined=ingest_q + gate_q,
            rows_quarantined_ingest=ingest_q,
            rows_quarantined_gate=gate_q,
            duplicates_removed=int(totals["dups"] or 0),
            rows_silver=int(totals["rows"]),
        )
        stats.check()
        suite = load_suite(SILVER_SUITE)
        result = validate_silver(silver)
        save_results(spark, ctx, suite, result, {"accounting": asdict(stats)})
        check(result, suite, f"run_date {ctx.run_date}")
        publish(silver.select(*SILVER_COLUMNS), ctx, "ratings_silver")
    except BaseException:
        silver.unpersist()
        raise
    stats_row = spark.createDataFrame([(ctx.run_id, *asdict(stats).values())], _STATS_SCHEMA)
    publish(with_run_date(stats_row, ctx.run_date), ctx, "ratings_run_stats")
    log.info("silver %s: %s", ctx.run_date, stats)
    if not keep:
        silver.unpersist()
    return SilverOutput(stats, silver if keep else None)


_STATS_SCHEMA = (
    "run_id string, rows_read long, rows_quarantined long, rows_quarantined_ingest long, "
    "rows_quarantined_gate long, duplicates_removed long, rows_silver long"
)


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    args = job_parser("gated bronze -> deduplicated ratings_silver for one run date").parse_args(argv)
    ctx = context_from_args(args)
    run(build_spark(ctx.config, app_name="silver"), ctx)


if __name__ == "__main__":
    main()

"""Drift: tonight's new ratings against a trailing window, tonight's lists against the last run's.

    spark-submit ... spark_jobs/drift.py --run-date 2024-03-05 --stage input    # after silver
    spark-submit ... spark_jobs/drift.py --run-date 2024-03-05 --stage output   # after publish

**Input** (stage ``input``): the *current* window is the silver versions of the night's drops
(``ratings_run_stats.drops`` of the run date: what the night applied), the *reference* window the
versions of earlier drops whose ratings are dated in the ``drift.reference_days`` days before the
night's first drop. Both are fixed by the drops, not by what ran since, so a rerun or a backfill
of a date gives the same report. Measures:

- ``rating``: the rating values (one bin per value); PSI and KS;
- ``user_activity``: ratings per active user per UTC day; PSI and KS;
- ``inter_event_gap``: log10(1 + seconds since the user's previous rating), looking back
  ``reference_days`` from each rating of either window (so both see the same look-back; none in
  it counts as the cap); PSI and KS;
- ``item_popularity``: the items bucketed by their rating count over every earlier drop into
  buckets of equal reference mass (tail to head), new items apart; PSI of the ratings over the
  buckets;
- ``new_users`` / ``new_items``: the share of tonight's ratings from users / on items with no
  rating in any earlier drop.

**Output** (stage ``output``): the run date's ``recommendations`` against the previous run
date's: the scores in the top 10 (PSI and KS), the mean overlap@10 of a user's two lists (users
in both runs; ``docs/sql/run_vs_previous_summary.sql``), and the catalogue coverage at 10 (with
its Gini; ``docs/sql/coverage.sql``).

The math, in Spark: continuous measures are binned at the reference's quantiles
(``approxQuantile`` at i / ``drift.bins``, equal edges merged, open at both ends; ``Bucketizer``),
so every bin holds about the same reference mass; with shares ``r_i`` and ``c_i`` (floored at
:data:`SHARE_FLOOR` so that an empty bin stays finite)

    PSI = sum_i (c_i - r_i) * ln(c_i / r_i)        KS = max_k |sum_{i<=k} r_i - sum_{i<=k} c_i|

KS is the two-sample Kolmogorov-Smirnov distance of the binned CDFs (Spark's own KS test is
one-sample). At these row counts any difference is "significant", so measures are judged by
effect size: PSI against ``psi_warn`` / ``psi_breach`` (the usual 0.1 / 0.25), KS against
``ks_warn`` / ``ks_breach``, and only when both windows hold ``drift.min_rows`` values
(``not_judged`` otherwise; the first night has no reference at all).

Results: one row per (measure, statistic) in ``drift_reports`` (slice run_date, stage; a rerun
replaces it). An input ``breach`` makes the night's train step a full retrain when
``drift.retrain_on_breach`` (:func:`input_breaches`, read by ``orchestration.model_tasks``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recsys.config import Config, DriftConfig
from recsys.delta import partition_dates
from spark_jobs.columns import (
    ITEM_COL,
    RATING_COL,
    RUN_DATE_COL,
    TIMESTAMP_COL,
    USER_COL,
    VALID_FROM_COL,
)
from spark_jobs.common import (
    RunContext,
    context_from_args,
    job_parser,
    publish_rows,
    read_small_table,
    table_exists,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

INPUT, OUTPUT = "input", "output"
#: Shares below this count as this in PSI (an empty bin would make it infinite).
SHARE_FLOOR = 1e-4
DAY_SECONDS = 86_400
TOP = 10
BIN_COL, VALUE_COL = "bin", "value"
OK, WARN, BREACH, NOT_JUDGED, REPORTED = "ok", "warn", "breach", "not_judged", "reported"

DRIFT_SCHEMA = (
    "stage string, measure string, statistic string, value double, warn double, breach double, "
    "status string, current_rows long, reference_rows long, reference_from date, reference_to date, "
    "detail string, run_id string, run_date date"
)


@dataclass
class Finding:
    """One statistic of one measure, judged (a row of ``drift_reports``)."""

    measure: str
    statistic: str
    value: float | None
    status: str
    current_rows: int
    reference_rows: int
    warn: float | None = None
    breach: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- the math


def quantile_edges(reference: DataFrame, column: str, bins: int, relative_error: float) -> list[float]:
    """Bucketizer splits at the reference's quantiles 1/bins .. (bins-1)/bins, open at both ends.

    Equal quantiles (a heavy value) merge, so a bin is never empty by construction.
    """
    probabilities = [i / bins for i in range(1, bins)]
    inner = reference.approxQuantile(column, probabilities, relative_error)
    return [-math.inf, *sorted(set(inner)), math.inf]


def bucketize(frame: DataFrame, column: str, edges: Sequence[float]) -> DataFrame:
    """``frame`` with ``bin``: the index of the ``edges`` interval that holds ``column`` (nulls dropped)."""
    from pyspark.ml.feature import Bucketizer

    present = frame.where(frame[column].isNotNull())
    return Bucketizer(splits=list(edges), inputCol=column, outputCol=BIN_COL).transform(present)


def compare(reference: DataFrame, current: DataFrame) -> tuple[float, float, int, int]:
    """(PSI, KS, reference rows, current rows) of two frames with an ordered ``bin`` column.

    One small Spark job: the counts per bin of both sides (outer-joined) as shares, floored at
    :data:`SHARE_FLOOR` for PSI; for KS the running sums of the shares in bin order, by a join of
    the (few) bins with the bins up to them.
    """
    from pyspark.sql import functions as F

    counts = (
        reference.groupBy(BIN_COL)
        .agg(F.count(F.lit(1)).alias("r"))
        .join(current.groupBy(BIN_COL).agg(F.count(F.lit(1)).alias("c")), BIN_COL, "full_outer")
        .fillna(0, ["r", "c"])
    )
    totals = counts.agg(F.sum("r").alias("n_r"), F.sum("c").alias("n_c"))
    shares = counts.crossJoin(totals).select(
        BIN_COL, "r", "c", (F.col("r") / F.col("n_r")).alias("pr"), (F.col("c") / F.col("n_c")).alias("pc")
    )
    upto = shares.select(F.col(BIN_COL).alias("_upto"), F.col("pr").alias("_pr"), F.col("pc").alias("_pc"))
    cumulative = (
        shares.join(upto, F.col("_upto") <= F.col(BIN_COL))
        .groupBy(BIN_COL, "r", "c", "pr", "pc")
        .agg(F.sum("_pr").alias("cr"), F.sum("_pc").alias("cc"))
    )
    floored_r = F.greatest(F.col("pr"), F.lit(SHARE_FLOOR))
    floored_c = F.greatest(F.col("pc"), F.lit(SHARE_FLOOR))
    row = cumulative.agg(
        F.sum((floored_c - floored_r) * F.log(floored_c / floored_r)).alias("psi"),
        F.max(F.abs(F.col("cr") - F.col("cc"))).alias("ks"),
        F.sum("r").alias("r"),
        F.sum("c").alias("c"),
    ).collect()[0]
    return float(row["psi"] or 0.0), float(row["ks"] or 0.0), int(row["r"] or 0), int(row["c"] or 0)


def judge(value: float | None, warn: float | None, breach: float | None, below: bool = False) -> str:
    """``ok`` / ``warn`` / ``breach`` of a value against its bands (``below``: low values are bad)."""
    if value is None:
        return NOT_JUDGED
    if warn is None and breach is None:
        return REPORTED

    def beyond(limit: float | None) -> bool:
        return limit is not None and (value < limit if below else value > limit)

    if beyond(breach):
        return BREACH
    return WARN if beyond(warn) else OK


def distribution(
    name: str,
    reference: DataFrame,
    current: DataFrame,
    column: str,
    drift: DriftConfig,
    binned: bool = True,
    statistics: Sequence[str] = ("psi", "ks"),
    extra_edges: Sequence[float] = (),
) -> list[Finding]:
    """PSI (and KS) of ``column``, at the reference's quantile bins (one bin per value if not ``binned``).

    ``extra_edges``: bin edges added to the quantiles (a value class kept apart, e.g. 0 below 0.5).
    """
    from pyspark.sql import functions as F

    reference = reference.select(F.col(column).cast("double").alias(VALUE_COL)).persist()
    try:
        n_reference = reference.count()
        detail: dict[str, Any] = {}
        if n_reference < drift.min_rows:
            return _not_judged(name, statistics, current.count(), n_reference, "too few reference values")
        current = current.select(F.col(column).cast("double").alias(VALUE_COL))
        if binned:
            edges = quantile_edges(reference, VALUE_COL, drift.bins, drift.relative_error)
            edges = sorted({*edges, *extra_edges})
            detail["edges"] = [e for e in edges if math.isfinite(e)]
            ref_bins, cur_bins = bucketize(reference, VALUE_COL, edges), bucketize(current, VALUE_COL, edges)
        else:
            ref_bins = reference.withColumnRenamed(VALUE_COL, BIN_COL)
            cur_bins = current.withColumnRenamed(VALUE_COL, BIN_COL)
        psi, ks, n_reference, n_current = compare(ref_bins, cur_bins)
    finally:
        reference.unpersist()
    if n_current < drift.min_rows:
        return _not_judged(name, statistics, n_current, n_reference, "too few current values")
    bands = {"psi": (psi, drift.psi_warn, drift.psi_breach), "ks": (ks, drift.ks_warn, drift.ks_breach)}
    return [
        Finding(
            name, s, bands[s][0], judge(*bands[s]), n_current, n_reference, bands[s][1], bands[s][2], detail
        )
        for s in statistics
    ]


def _not_judged(
    name: str, statistics: Sequence[str], n_current: int, n_reference: int, why: str
) -> list[Finding]:
    return [
        Finding(name, s, None, NOT_JUDGED, n_current, n_reference, detail={"why": why}) for s in statistics
    ]


# ---------------------------------------------------------------------------------- input


def night_drops(ctx: RunContext) -> list[dt.date]:
    """The drops the night of the run date applied (its ``ratings_run_stats`` row)."""
    rows = [r for r in read_small_table(ctx.table("ratings_run_stats")) if r[RUN_DATE_COL] == ctx.run_date]
    if not rows:
        raise FileNotFoundError(
            f"{ctx.table('ratings_run_stats')}: no row for {ctx.run_date}; "
            "run the silver job for that date first"
        )
    return sorted(dt.date.fromisoformat(d) for d in rows[0]["drops"])


def day_start_seconds(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())


def input_findings(
    spark: SparkSession, ctx: RunContext, drops: Sequence[dt.date]
) -> tuple[list[Finding], dict]:
    """The input measures of the night's ``drops`` (see the module docstring) and the windows used."""
    from pyspark.sql import functions as F

    drift = ctx.config.drift
    first = min(drops)
    reference_from = first - dt.timedelta(days=drift.reference_days)
    windows = {"reference_from": reference_from, "reference_to": first - dt.timedelta(days=1)}
    silver = spark.read.format("delta").load(ctx.table("ratings_silver"))
    columns = [USER_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL]
    current = silver.where(F.col(VALID_FROM_COL).isin(list(drops))).select(*columns).persist()
    earlier = silver.where(F.col(VALID_FROM_COL) < F.lit(first))
    reference = (
        earlier.where(
            (F.col(TIMESTAMP_COL) >= day_start_seconds(reference_from))
            & (F.col(TIMESTAMP_COL) < day_start_seconds(first))
        )
        .select(*columns)
        .persist()
    )
    try:
        findings = distribution("rating", reference, current, RATING_COL, drift, binned=False)

        def per_user_day(frame: DataFrame) -> DataFrame:
            day = F.floor(F.col(TIMESTAMP_COL) / DAY_SECONDS)
            return frame.groupBy(USER_COL, day.alias("_day")).agg(F.count(F.lit(1)).alias("n"))

        findings += distribution("user_activity", per_user_day(reference), per_user_day(current), "n", drift)
        findings += gap_drift(earlier, reference, current, first, drift)
        counts = (
            earlier.groupBy(ITEM_COL).agg(F.count(F.lit(1)).cast("double").alias("_popularity")).persist()
        )
        try:
            findings += popularity(reference, current, counts, drift)
            n_current = current.count()
            known = {USER_COL: earlier.select(USER_COL).distinct(), ITEM_COL: counts.select(ITEM_COL)}
            for name, column in (("new_users", USER_COL), ("new_items", ITEM_COL)):
                new = current.join(known[column], column, "left_anti").count()
                share = new / n_current if n_current else None
                limit = drift.new_users_share_breach if column == USER_COL else drift.new_items_share_breach
                status = NOT_JUDGED if share is None else judge(share, None, limit)
                findings.append(
                    Finding(name, "share", share, status, n_current, 0, None, limit, {"new_rows": new})
                )
        finally:
            counts.unpersist()
    finally:
        current.unpersist()
        reference.unpersist()
    return findings, windows


def gap_drift(
    earlier: DataFrame, reference: DataFrame, current: DataFrame, first: dt.date, drift: DriftConfig
) -> list[Finding]:
    """PSI and KS of log10(1 + seconds since the user's previous rating), looking back at most
    ``reference_days`` from every rating of either window (earlier drops' ratings included), so
    both windows see the same look-back; a rating with none in it counts as the cap, its own bin.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    window_seconds = drift.reference_days * DAY_SECONDS
    start = day_start_seconds(first)
    older = earlier.where(
        (F.col(TIMESTAMP_COL) >= start - 2 * window_seconds) & (F.col(TIMESTAMP_COL) < start - window_seconds)
    ).select(USER_COL, TIMESTAMP_COL, F.lit(None).cast("boolean").alias("_tonight"))
    in_window = reference.select(USER_COL, TIMESTAMP_COL, F.lit(False).alias("_tonight"))
    rows = older.unionByName(in_window).unionByName(
        current.select(USER_COL, TIMESTAMP_COL, F.lit(True).alias("_tonight"))
    )
    previous = F.lag(TIMESTAMP_COL).over(
        Window.partitionBy(USER_COL).orderBy(TIMESTAMP_COL, F.col("_tonight").asc_nulls_first())
    )
    gap = F.col(TIMESTAMP_COL) - previous
    cap = math.log10(1 + window_seconds)
    gaps = (
        rows.select("_tonight", gap.alias("_gap"))
        .where(F.col("_tonight").isNotNull())
        .select(
            "_tonight",
            F.when(F.col("_gap").isNull() | (F.col("_gap") > window_seconds), F.lit(cap))
            .otherwise(F.log10(F.greatest(F.col("_gap"), F.lit(0)) + 1))
            .alias("log_gap"),
        )
        .persist()
    )
    try:
        return distribution(
            "inter_event_gap", gaps.where(~F.col("_tonight")), gaps.where(F.col("_tonight")), "log_gap", drift
        )
    finally:
        gaps.unpersist()


def popularity(
    reference: DataFrame, current: DataFrame, counts: DataFrame, drift: DriftConfig
) -> list[Finding]:
    """PSI of the ratings over popularity buckets of equal reference mass, new items apart.

    ``counts``: (item_id, ``_popularity``) the items' rating counts over every earlier drop.
    Each rating of either window carries its item's count (0 for an item no earlier drop has);
    the buckets are the reference's quantiles of that count, so each holds about the same share
    of the reference's ratings, from the tail to the head, and bucket 0 the new items. The
    counts come from the whole history rather than from the reference itself: ranked by its own
    counts, a window's tail items are the ones it happened to see (most of a long catalogue has
    0-2 ratings in a month), and any other window looks drifted against it.
    """
    from pyspark.sql import functions as F

    def with_popularity(frame: DataFrame) -> DataFrame:
        return frame.join(counts, ITEM_COL, "left").select(
            F.coalesce(F.col("_popularity"), F.lit(0.0)).alias("_popularity")
        )

    return distribution(
        "item_popularity",
        with_popularity(reference),
        with_popularity(current),
        "_popularity",
        drift,
        statistics=("psi",),
        extra_edges=(0.5,),
    )


# ---------------------------------------------------------------------------------- output


def _at_least(
    measure: str, statistic: str, value: float | None, warn: float, rows: tuple[int, int], detail: dict
) -> Finding:
    """An output finding that warns when ``value`` falls below ``warn`` (no breach band);
    ``rows``: (current, reference)."""
    status = judge(value, warn, None, below=True)
    return Finding(measure, statistic, value, status, rows[0], rows[1], warn, None, detail)


def output_findings(spark: SparkSession, ctx: RunContext) -> tuple[list[Finding], dict]:
    """The output measures of the run date's recommendations against the previous run date's.

    Coverage and overlap are the documented queries analysts run (``docs/sql/coverage.sql``,
    ``run_vs_previous_summary.sql``), here in Spark SQL; the score distribution is binned here.
    """
    import pandas as pd
    from pyspark.sql import functions as F

    from recsys.sql import spark_query

    drift = ctx.config.drift
    path = ctx.table("recommendations")
    if ctx.run_date not in partition_dates(path, RUN_DATE_COL):
        raise FileNotFoundError(f"{path}: no partition for {ctx.run_date}; run the publish job first")
    tables = {name: ctx.table(name) for name in ("recommendations", "items")}
    (coverage,) = spark_query(spark, tables, "coverage", run_date=ctx.run_date).to_dict("records")
    (churn,) = spark_query(spark, tables, "run_vs_previous_summary", run_date=ctx.run_date).to_dict("records")

    def number(value: Any) -> float | None:
        return None if pd.isna(value) else float(value)

    findings = [
        _at_least(
            "catalogue_coverage",
            f"share_top{TOP}",
            number(coverage["coverage_at_10"]),
            drift.coverage_warn,
            (int(coverage["users"]), 0),
            {
                "items_at_10": int(coverage["items_at_10"]),
                "catalogue_items": int(coverage["catalogue_items"]),
                "gini_at_10": number(coverage["gini_at_10"]),
            },
        )
    ]
    previous = churn["previous_run_date"]
    if previous is None or pd.isna(previous):
        findings += _not_judged("score", ("psi", "ks"), int(coverage["users"]), 0, "no earlier run")
        findings += _not_judged(
            "overlap", (f"mean_at_{TOP}",), int(churn["users_tonight"]), 0, "no earlier run"
        )
        return findings, {"reference_from": None, "reference_to": None}
    previous = pd.Timestamp(previous).date()
    findings.append(
        _at_least(
            "overlap",
            f"mean_at_{TOP}",
            number(churn["mean_overlap_at_10"]),
            drift.overlap_warn,
            (int(churn["users_compared"]), int(churn["users_compared"])),
            {
                "users_new_tonight": int(churn["users_new_tonight"]),
                "users_dropped": int(churn["users_dropped"]),
            },
        )
    )
    recommendations = spark.read.format("delta").load(path).where(F.col("rank") <= TOP)
    findings += distribution(
        "score",
        recommendations.where(F.col(RUN_DATE_COL) == F.lit(previous)),
        recommendations.where(F.col(RUN_DATE_COL) == F.lit(ctx.run_date)),
        "score",
        drift,
    )
    return findings, {"reference_from": previous, "reference_to": previous}


# ---------------------------------------------------------------------------------- the job


def publish_findings(ctx: RunContext, stage: str, findings: Sequence[Finding], windows: dict) -> None:
    rows = [
        {
            "stage": stage,
            "measure": f.measure,
            "statistic": f.statistic,
            "value": f.value,
            "warn": f.warn,
            "breach": f.breach,
            "status": f.status,
            "current_rows": f.current_rows,
            "reference_rows": f.reference_rows,
            "reference_from": windows.get("reference_from"),
            "reference_to": windows.get("reference_to"),
            "detail": json.dumps(f.detail, sort_keys=True),
            "run_id": ctx.run_id,
            RUN_DATE_COL: ctx.run_date,
        }
        for f in findings
    ]
    publish_rows(ctx, "drift_reports", rows, DRIFT_SCHEMA, {RUN_DATE_COL: ctx.run_date, "stage": stage})


def run(spark: SparkSession, ctx: RunContext, stage: str = INPUT) -> list[Finding]:
    """Measure the run date's drift of ``stage`` and replace its slice of ``drift_reports``."""
    if stage == INPUT:
        if not table_exists(spark, ctx.table("ratings_silver")):
            raise FileNotFoundError(f"{ctx.table('ratings_silver')}: run the silver job first")
        drops = night_drops(ctx)
        if drops:
            findings, windows = input_findings(spark, ctx, drops)
        else:
            findings, windows = _not_judged("night", ("drops",), 0, 0, "no new drops tonight"), {}
    elif stage == OUTPUT:
        findings, windows = output_findings(spark, ctx)
    else:
        raise ValueError(f"unknown drift stage {stage!r} (expected {INPUT} or {OUTPUT})")
    publish_findings(ctx, stage, findings, windows)
    for f in findings:
        value = "-" if f.value is None else f"{f.value:.4f}"
        log.info("drift %s %s: %s %s = %s (%s)", ctx.run_date, stage, f.measure, f.statistic, value, f.status)
    breached = [f"{f.measure} {f.statistic}" for f in findings if f.status == BREACH]
    if breached:
        log.warning("drift %s %s: breach of %s", ctx.run_date, stage, ", ".join(breached))
    return findings


def report(config: Config, run_date: dt.date, stage: str | None = None) -> list[dict[str, Any]]:
    """The ``drift_reports`` rows of a run date (and stage), through delta-rs; [] when none."""
    return [
        r
        for r in read_small_table(config.table_path("drift_reports"))
        if r[RUN_DATE_COL] == run_date and (stage is None or r["stage"] == stage)
    ]


def input_breaches(config: Config, run_date: dt.date) -> list[str]:
    """The input measures in breach on the run date ("measure statistic"); what retrains the model."""
    return sorted(
        f"{r['measure']} {r['statistic']}" for r in report(config, run_date, INPUT) if r["status"] == BREACH
    )


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    parser = job_parser("drift of one run date: input (new ratings vs a trailing window) or output")
    parser.add_argument("--stage", choices=(INPUT, OUTPUT), default=INPUT)
    args = parser.parse_args(argv)
    ctx = context_from_args(args)
    run(build_spark(ctx.config, app_name=f"drift-{args.stage}"), ctx, args.stage)


if __name__ == "__main__":
    main()

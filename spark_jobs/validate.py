"""Gates: the ratings suite on this run's bronze, and the sequences suite on this run's sequences.

Ratings gate (after ingest, before silver):

1. tag every bronze row in one pass: its parse error, else the first row expectation of
   ``expectations/ratings.json`` it fails (predicates derived from the suite);
2. validate the tagged frame with GE: schema and header (drift), each row expectation within
   the allowed share, the quarantine ratio, the row count versus the previous run;
3. check that GE and the derived predicates flag the same number of rows per expectation;
4. publish the rows the expectations rejected to ``ratings_quarantine`` (stage ``gate``);
5. keep the results (JSON, Data Docs HTML, and a summary with the counts), then raise
   :class:`expectations.gate.GateError` if the batch failed — before silver is touched.

Sequences gate (after sequences, before training): ``expectations/sequences.json`` on the
published partition plus derived check columns.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from expectations.gate import (
    GateError,
    Suite,
    check,
    failures,
    load_suite,
    render_html,
    result_json,
    row_predicates,
    tag_rows,
    unexpected_counts,
    validate,
)
from recsys.config import Config
from recsys.datasets.formats import FORMATS
from spark_jobs.columns import (
    ITEMS_COL,
    N_EVENTS_COL,
    PARSE_ERROR_COL,
    QUARANTINED_COL,
    RATINGS_COLUMNS,
    REASON_COL,
    SESSION_IDS_COL,
    SOURCE_HEADER_COL,
    SPLIT_COL,
    TIME_GAPS_COL,
    TIMESTAMPS_COL,
    USER_COL,
)
from spark_jobs.common import (
    RunContext,
    context_from_args,
    job_parser,
    previous_run_date,
    read_json,
    read_run,
    table_exists,
    write_json,
    write_text,
)
from spark_jobs.ingest import (
    MANIFEST,
    PARSE_ERRORS,
    expected_header,
    publish_quarantine,
    quarantine_rows,
)

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

RATINGS_SUITE = "ratings"
SEQUENCES_SUITE = "sequences"
STAGE = "gate"
NO_HEADER = "<no header>"


def end_of_day(run_date: dt.date) -> int:
    """The last second of ``run_date`` (UTC), in epoch seconds."""
    return calendar.timegm((run_date + dt.timedelta(days=1)).timetuple()) - 1


def rating_scale(config: Config) -> tuple[float, float]:
    scales = config.pipeline.rating_scales
    if config.data.dataset not in scales:
        raise KeyError(
            f"pipeline.rating_scales has no entry for data.dataset={config.data.dataset!r}; "
            "add its [min, max]"
        )
    return scales[config.data.dataset]


def ratings_parameters(
    config: Config, run_date: dt.date, format_name: str, previous_rows: int | None = None
) -> dict[str, Any]:
    """Values of the ``$PARAMETER``s of ``expectations/ratings.json`` for one run."""
    low, high = rating_scale(config)
    ratio = config.pipeline.quarantine_max_ratio
    min_rows = (
        1
        if not previous_rows
        else max(1, math.ceil(previous_rows * config.pipeline.min_row_ratio_vs_previous))
    )
    return {
        "rating_min": low,
        "rating_max": high,
        "timestamp_min": config.pipeline.min_timestamp,
        "timestamp_max": end_of_day(run_date),
        "row_mostly": 1.0 - ratio,
        "quarantine_max_ratio": ratio,
        "min_row_count": min_rows,
        "expected_header": [expected_header(FORMATS[format_name]) or NO_HEADER],
    }


def tag_bronze(bronze: DataFrame, suite: Suite, parameters: Mapping[str, Any]) -> DataFrame:
    """Bronze rows + ``reason`` (parse error, else the first failed row expectation) + ``is_quarantined``."""
    return tag_rows(bronze, suite, parameters, REASON_COL, QUARANTINED_COL, prior_reason_col=PARSE_ERROR_COL)


def save_results(
    spark: SparkSession,
    ctx: RunContext,
    suite: Suite,
    result: ExpectationSuiteValidationResult,
    summary: Mapping[str, Any],
) -> str:
    """Keep this run's results of ``suite``: GE JSON, Data Docs HTML, and a summary JSON."""
    base = ctx.validation_uri(suite.name)
    write_json(spark, f"{base}.json", result_json(result))
    write_text(spark, f"{base}.html", render_html(result))
    write_json(
        spark,
        f"{base}.summary.json",
        {
            "suite": suite.name,
            "run_date": ctx.run_date.isoformat(),
            "run_id": ctx.run_id,
            "success": bool(result.success),
            "failed": [f.name for f in failures(result)],
            **summary,
        },
    )
    log.info("%s validation for %s: %s (%s.json, .html)", suite.name, ctx.run_date, result.success, base)
    return f"{base}.json"


def gate_summary(spark: SparkSession, ctx: RunContext, suite_name: str) -> dict[str, Any] | None:
    return read_json(spark, f"{ctx.validation_uri(suite_name)}.summary.json")


def require_gate_passed(spark: SparkSession, ctx: RunContext, suite_name: str) -> None:
    """Refuse to build on a batch whose gate has not run, or failed, for this run date."""
    summary = gate_summary(spark, ctx, suite_name)
    if summary is None:
        raise GateError(suite_name, f"the {suite_name} gate has not run for {ctx.run_date}; run it first", [])
    if not summary.get("success"):
        raise GateError(
            suite_name,
            f"the {suite_name} gate failed for {ctx.run_date} ({', '.join(summary.get('failed', []))}); "
            f"see {ctx.validation_uri(suite_name)}.json",
            [],
        )


def previous_rows_read(spark: SparkSession, ctx: RunContext) -> int | None:
    """Rows read by the latest earlier run that completed (its accounting row in ratings_run_stats)."""
    from pyspark.sql import functions as F

    path = ctx.table("ratings_run_stats")
    previous = previous_run_date(spark, path, ctx.run_date)
    if previous is None:
        return None
    row = (
        spark.read.format("delta")
        .load(path)
        .where(F.col("run_date") == F.lit(previous))
        .select("rows_read")
        .first()
    )
    return None if row is None else int(row["rows_read"])


def reason_counts(
    tagged: DataFrame, suite: Suite, parameters: Mapping[str, Any]
) -> tuple[dict[str, int], dict[str, int]]:
    """One pass: rows per quarantine reason, and rows each row expectation rejects (overlaps included)."""
    from pyspark.sql import functions as F

    predicates = row_predicates(suite, parameters)
    grouped = (
        tagged.groupBy(REASON_COL)
        .agg(
            F.count(F.lit(1)).alias("_rows"),
            *[F.sum(predicate.cast("long")).alias(f"_p{i}") for i, (_, predicate) in enumerate(predicates)],
        )
        .collect()
    )
    by_reason = {row[REASON_COL]: int(row["_rows"]) for row in grouped}
    by_expectation = {
        name: sum(int(row[f"_p{i}"] or 0) for row in grouped) for i, (name, _) in enumerate(predicates)
    }
    return by_reason, by_expectation


def run_ratings_gate(spark: SparkSession, ctx: RunContext) -> dict[str, Any]:
    """Gate this run's bronze partition; return the summary, or raise GateError."""
    from pyspark.sql import functions as F

    manifest = read_json(spark, f"{ctx.validation_uri(MANIFEST)}.json")
    if manifest is None:
        raise FileNotFoundError(
            f"no ingest manifest for {ctx.run_date} ({ctx.validation_uri(MANIFEST)}.json); run ingest first"
        )
    suite = load_suite(RATINGS_SUITE)
    previous_rows = previous_rows_read(spark, ctx)
    parameters = ratings_parameters(ctx.config, ctx.run_date, manifest["format"], previous_rows)
    bronze = read_run(spark, ctx, "ratings_bronze")
    # GE and the counts read the few columns the suite checks, from memory, several times.
    tagged = tag_bronze(
        bronze.select(SOURCE_HEADER_COL, *RATINGS_COLUMNS, PARSE_ERROR_COL), suite, parameters
    )
    tagged = tagged.persist()
    try:
        result = validate(tagged, suite, parameters)
        by_reason, by_expectation = reason_counts(tagged, suite, parameters)
    finally:
        tagged.unpersist()
    rows = sum(by_reason.values())
    quarantined = sum(n for reason, n in by_reason.items() if reason is not None)
    ge_counts = unexpected_counts(result)
    disagree = {
        name: (n, ge_counts.get(name)) for name, n in by_expectation.items() if ge_counts.get(name) != n
    }
    if disagree:
        raise GateError(
            suite.name,
            f"gate predicates and GE disagree for {ctx.run_date} (predicate rows, GE unexpected): {disagree}",
            [],
        )
    # The rejected rows' text is read from bronze only when there are some; an empty slice
    # still replaces the rows an earlier run of this date may have left.
    rejected = quarantine_rows(
        tag_bronze(bronze, suite, parameters).where(F.col(PARSE_ERROR_COL).isNull()), F.col(REASON_COL), STAGE
    )
    if not any(reason not in PARSE_ERRORS for reason in by_reason if reason is not None):
        rejected = rejected.limit(0)
    publish_quarantine(rejected, ctx, STAGE)
    summary = {
        "rows_read": rows,
        "rows_quarantined": quarantined,
        "quarantine_ratio": quarantined / rows if rows else None,
        "quarantined_by_reason": {str(k): v for k, v in sorted(by_reason.items(), key=str) if k is not None},
        "previous_rows_read": previous_rows,
        "parameters": parameters,
    }
    save_results(spark, ctx, suite, result, summary)
    reasons = ", ".join(f"{k} {v:,}" for k, v in summary["quarantined_by_reason"].items()) or "none"
    check(
        result,
        suite,
        f"run_date {ctx.run_date}",
        f"  rows read {rows:,}; quarantined {quarantined:,} ({reasons}); "
        f"previous run read {previous_rows if previous_rows is not None else 'n/a'}; "
        f"results: {ctx.validation_uri(suite.name)}.json",
    )
    return summary


# ------------------------------------------------------------------------ sequences gate


def sequence_checks(sequences: DataFrame, max_seq_len: int) -> DataFrame:
    """One row per user with the columns ``expectations/sequences.json`` checks, derived from the arrays.

    Plain array functions only (no lambdas, which Spark evaluates without code generation).
    """
    from pyspark.sql import functions as F

    seq_len = F.size(ITEMS_COL)
    n = F.col(N_EVENTS_COL)
    split = F.col(SPLIT_COL)
    earlier = F.slice(split, 1, F.greatest(seq_len - 2, F.lit(0)))
    markers_ok = (
        (F.try_element_at(split, F.lit(-1)) == F.when(n >= 2, 2).otherwise(0))
        & ((seq_len < 2) | (F.try_element_at(split, F.lit(-2)) == F.when(n >= 3, 1).otherwise(0)))
        & (F.coalesce(F.array_max(earlier), F.lit(0)) == 0)
        & (F.coalesce(F.array_min(earlier), F.lit(0)) == 0)
    )
    return sequences.select(
        USER_COL,
        N_EVENTS_COL,
        seq_len.alias("seq_len"),
        (seq_len == F.least(n, F.lit(max_seq_len))).alias("keeps_most_recent"),
        (
            (F.size(TIMESTAMPS_COL) == seq_len)
            & (F.size(TIME_GAPS_COL) == seq_len)
            & (F.size(SESSION_IDS_COL) == seq_len)
            & (F.size(SPLIT_COL) == seq_len)
        ).alias("arrays_aligned"),
        (
            (F.col(TIMESTAMPS_COL) == F.array_sort(TIMESTAMPS_COL))
            & (F.coalesce(F.array_min(TIME_GAPS_COL), F.lit(0)) >= 0)
        ).alias("chronological"),
        markers_ok.alias("split_markers_ok"),
    )


def run_sequences_gate(spark: SparkSession, ctx: RunContext) -> dict[str, Any]:
    """Gate this run's published sequences; return the summary, or raise GateError."""
    suite = load_suite(SEQUENCES_SUITE)
    parameters = {"max_seq_len": ctx.config.pipeline.max_seq_len}
    # One row of checks per user, computed once from the arrays and validated from memory.
    checks = sequence_checks(read_run(spark, ctx, "sequences"), ctx.config.pipeline.max_seq_len).persist()
    try:
        result = validate(checks, suite, parameters)
    finally:
        checks.unpersist()
    summary = {"parameters": parameters}
    save_results(spark, ctx, suite, result, summary)
    check(result, suite, f"run_date {ctx.run_date}", f"  results: {ctx.validation_uri(suite.name)}.json")
    return summary


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    parser = job_parser("run a gate (expectations/<suite>.json) on one run date's data; fail if it fails")
    parser.add_argument("--suite", choices=(RATINGS_SUITE, SEQUENCES_SUITE), default=RATINGS_SUITE)
    args = parser.parse_args(argv)
    ctx = context_from_args(args)
    spark = build_spark(ctx.config, app_name=f"gate-{args.suite}")
    if args.suite == RATINGS_SUITE:
        run_ratings_gate(spark, ctx)
    else:
        if not table_exists(spark, ctx.table("sequences")):
            raise FileNotFoundError(f"{ctx.table('sequences')}: run the sequences job first")
        run_sequences_gate(spark, ctx)


if __name__ == "__main__":
    main()

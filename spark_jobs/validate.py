"""Gates: the ratings suite on this run's bronze, and the sequences suite on this run's sequences.

Ratings gate (after ingest, before silver), on the drops the ledger says are ``ingested``:

1. tag every bronze row of those drops in one pass: its parse error, else the first row
   expectation of ``expectations/ratings.json`` it fails (predicates derived from the suite);
   a rating dated after the end of its drop's day (UTC) by more than
   ``pipeline.clock_skew_seconds`` is ``future``;
2. validate the tagged frame with GE (schema, each row expectation within the allowed share)
   and check that GE and the derived predicates flag the same number of rows per expectation;
3. validate one row of checks per drop with ``expectations/ratings_drops.json``: the quarantine
   ratio of each drop, its volume against the median of the trailing drops (a collapse or a
   spike), and header drift of each of its files;
4. keep the results (JSON, Data Docs HTML, and a summary with the counts); on a failure raise
   :class:`expectations.gate.GateError` naming the failing drops — before any as-of state
   (silver, sessions, sequences) changes;
5. on a pass, publish the rows the expectations rejected to ``ratings_quarantine`` (stage
   ``gate``) and mark the drops ``gated`` in the ledger, with the version of bronze it judged
   (``gated_version``): silver reads each drop as of that version (:func:`read_gated`), so it
   builds on nothing the gate did not see.

Sequences gate (inside the sequences job, before it publishes): ``expectations/sequences.json``
on the sequence versions the night built, plus derived check columns. A failure publishes
nothing; a pass is followed by the publish and then by the published table version in the
summary, which the model steps read the sequences at (:mod:`recsys.gates`).
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from expectations.gate import (
    GateError,
    Suite,
    check,
    collect_small,
    failure_message,
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
    DROP_DATE_COL,
    ITEMS_COL,
    N_EVENTS_COL,
    PARSE_ERROR_COL,
    QUARANTINED_COL,
    RATINGS_COLUMNS,
    REASON_COL,
    SESSION_IDS_COL,
    SPLIT_COL,
    TIME_GAPS_COL,
    TIMESTAMP_COL,
    TIMESTAMPS_COL,
    USER_COL,
    VALID_FROM_COL,
)
from spark_jobs.common import (
    RunContext,
    context_from_args,
    job_parser,
    read_json,
    read_small_table,
    table_exists,
    write_json,
    write_text,
)
from spark_jobs.ingest import (
    GATED,
    INGESTED,
    PARSE_ERRORS,
    drops_with_status,
    expected_header,
    ledger_rows,
    publish_quarantine,
    quarantine_rows,
    read_bronze,
    read_ledger,
    set_status,
)

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationSuiteValidationResult
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

RATINGS_SUITE = "ratings"
DROPS_SUITE = "ratings_drops"
SEQUENCES_SUITE = "sequences"
STAGE = "gate"
# The tagged frame's timestamp relative to the end of its drop's day (the "future" check).
SECONDS_AFTER_DROP_COL = "seconds_after_drop_day"


def end_of_day(day: dt.date) -> int:
    """The last second of ``day`` (UTC), in epoch seconds."""
    return calendar.timegm((day + dt.timedelta(days=1)).timetuple()) - 1


def rating_scale(config: Config) -> tuple[float, float]:
    scales = config.pipeline.rating_scales
    if config.data.dataset not in scales:
        raise KeyError(
            f"pipeline.rating_scales has no entry for data.dataset={config.data.dataset!r}; "
            "add its [min, max]"
        )
    return scales[config.data.dataset]


def ratings_parameters(config: Config) -> dict[str, Any]:
    """Values of the ``$PARAMETER``s of ``expectations/ratings.json``: the same for every drop and night."""
    low, high = rating_scale(config)
    return {
        "rating_min": low,
        "rating_max": high,
        "timestamp_min": config.pipeline.min_timestamp,
        "clock_skew_seconds": config.pipeline.clock_skew_seconds,
        "row_mostly": 1.0 - config.pipeline.quarantine_max_ratio,
    }


def seconds_after_drop_day() -> Column:
    """``timestamp`` minus the last second (UTC) of the row's ``drop_date``: > 0 is after its drop's day."""
    from pyspark.sql import functions as F

    day_end = (
        F.datediff(F.col(DROP_DATE_COL), F.lit("1970-01-01").cast("date")).cast("long") + 1
    ) * 86400 - 1
    return F.col(TIMESTAMP_COL) - day_end


def day_start(column: str) -> Column:
    """The first second (UTC) of a date column, in epoch seconds."""
    from pyspark.sql import functions as F

    return F.datediff(F.col(column), F.lit("1970-01-01").cast("date")).cast("long") * 86400


def tag_bronze(bronze: DataFrame, suite: Suite, parameters: Mapping[str, Any]) -> DataFrame:
    """Bronze rows + ``seconds_after_drop_day`` + ``reason`` (parse error, else the first failed row
    expectation) + ``is_quarantined``."""
    tagged = bronze.withColumn(SECONDS_AFTER_DROP_COL, seconds_after_drop_day())
    return tag_rows(tagged, suite, parameters, REASON_COL, QUARANTINED_COL, prior_reason_col=PARSE_ERROR_COL)


def save_results(
    spark: SparkSession,
    ctx: RunContext,
    suite: Suite,
    result: ExpectationSuiteValidationResult,
    summary: Mapping[str, Any],
    also: Sequence[ExpectationSuiteValidationResult] = (),
) -> str:
    """Keep this run's results of ``suite``: GE JSON, Data Docs HTML, and a summary JSON.

    The summary's ``success`` and ``failed`` (what :func:`require_gate_passed` reads) cover
    ``result`` and the results in ``also`` (a gate made of several suites).
    """
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
            "success": all(bool(r.success) for r in (result, *also)),
            "failed": [f.name for r in (result, *also) for f in failures(r)],
            **summary,
        },
    )
    log.info("%s validation for %s: %s (%s.json, .html)", suite.name, ctx.run_date, result.success, base)
    return f"{base}.json"


def gate_summary(spark: SparkSession, ctx: RunContext, suite_name: str) -> dict[str, Any] | None:
    return read_json(spark, f"{ctx.validation_uri(suite_name)}.summary.json")


def require_gate_passed(spark: SparkSession, ctx: RunContext, suite_name: str) -> None:
    """Refuse to build on a batch whose gate has not run, or failed, for this run date."""
    from recsys.gates import GateNotPassedError, check_summary

    try:
        check_summary(
            gate_summary(spark, ctx, suite_name),
            suite_name,
            ctx.run_date,
            f"{ctx.validation_uri(suite_name)}.summary.json",
        )
    except GateNotPassedError as exc:
        raise GateError(suite_name, str(exc), []) from None


def record_table_version(spark: SparkSession, ctx: RunContext, suite_name: str, version: int) -> None:
    """Add to this night's passing summary of ``suite_name`` the version of the table it published
    (what later stages read: :func:`recsys.gates.gated_version`)."""
    summary = gate_summary(spark, ctx, suite_name)
    if summary is None or not summary.get("success"):
        raise GateError(
            suite_name, f"no passing {suite_name} gate for {ctx.run_date} to record a version on", []
        )
    write_json(spark, f"{ctx.validation_uri(suite_name)}.summary.json", {**summary, "table_version": version})


@dataclass(frozen=True)
class ReasonCounts:
    by_drop_reason: dict[tuple[dt.date, str | None], int]
    by_expectation: dict[str, int]


def flag_columns(suite: Suite) -> list[str]:
    """The columns of :func:`flag_rows`, one per row expectation in suite order."""
    return [f"_rejected_by_{i}" for i in range(len(suite.row_expectations))]


def flag_rows(tagged: DataFrame, suite: Suite, parameters: Mapping[str, Any]) -> DataFrame:
    """``tagged`` with a 0/1 column per row expectation (:func:`flag_columns`; 1: it rejects the row)."""
    flags = zip(row_predicates(suite, parameters), flag_columns(suite), strict=True)
    return tagged.select("*", *[predicate.cast("long").alias(flag) for (_, predicate), flag in flags])


def reason_counts(tagged: DataFrame, suite: Suite, parameters: Mapping[str, Any]) -> ReasonCounts:
    """One pass: rows per (drop, quarantine reason), and rows each row expectation rejects (with
    overlaps) among the rows that parsed: GE judges those (:func:`parsed_rows`)."""
    from pyspark.sql import functions as F

    flags = flag_columns(suite)
    grouped = (
        flag_rows(tagged, suite, parameters)
        .groupBy(DROP_DATE_COL, REASON_COL)
        .agg(F.count(F.lit(1)).alias("_rows"), *[F.sum(flag).alias(flag) for flag in flags])
        .collect()
    )
    by_drop_reason = {(row[DROP_DATE_COL], row[REASON_COL]): int(row["_rows"]) for row in grouped}
    parsed = [row for row in grouped if row[REASON_COL] not in PARSE_ERRORS]
    by_expectation = {
        e.name: sum(int(row[flag] or 0) for row in parsed)
        for e, flag in zip(suite.row_expectations, flags, strict=True)
    }
    return ReasonCounts(by_drop_reason, by_expectation)


def collected_reason_counts(frame: pd.DataFrame, suite: Suite) -> ReasonCounts:
    """:func:`reason_counts` of :func:`flag_rows`' frame, collected (no Spark job)."""
    import pandas as pd

    sizes = frame.groupby([DROP_DATE_COL, REASON_COL], dropna=False).size()
    by_drop_reason = {
        (drop, None if pd.isna(reason) else reason): int(n) for (drop, reason), n in sizes.items()
    }
    flags = zip(suite.row_expectations, flag_columns(suite), strict=True)
    parsed = parsed_rows(frame)
    by_expectation = {e.name: int(parsed[flag].sum()) for e, flag in flags}
    return ReasonCounts(by_drop_reason, by_expectation)


def parsed_rows(tagged: DataFrame | pd.DataFrame) -> DataFrame | pd.DataFrame:
    """The rows of a tagged frame (Spark, or collected) whose line parsed: what GE judges.

    A line that did not parse has every field null and is quarantined with its parse error
    whatever the expectations say; judged by GE it would also count under each not-null
    expectation, once per field. Its weight in the night is the drops suite's quarantine ratio.
    """
    from pyspark.sql import DataFrame as SparkFrame
    from pyspark.sql import functions as F

    if isinstance(tagged, SparkFrame):
        return tagged.where(~F.col(REASON_COL).isin(list(PARSE_ERRORS)) | F.col(REASON_COL).isNull())
    return tagged[~tagged[REASON_COL].isin(PARSE_ERRORS)]


def trailing_volumes(
    ctx: RunContext, drops: Sequence[dt.date], rows: Mapping[dt.date, int]
) -> dict[dt.date, list[int]]:
    """For each of ``drops``: the rows of the (up to ``volume_trailing_drops``) drops before it.

    Earlier drops are the accepted ones (``ratings_drop_stats``) and the ones gated with it
    (``rows``); the lake's first drop (the history load) is never a reference.
    """
    known = {
        row[DROP_DATE_COL]: int(row["rows_read"])
        for row in read_small_table(ctx.table("ratings_drop_stats"))
        if row[DROP_DATE_COL] < max(drops)
    }
    held = [d for d in read_ledger(ctx)] + list(drops)
    first = min(held) if held else None
    known.update(rows)
    depth = ctx.config.pipeline.volume_trailing_drops
    return {
        drop: [known[d] for d in sorted(d for d in known if d < drop and d != first)][-depth:]
        for drop in drops
    }


def drop_checks(
    ctx: RunContext,
    by_drop: Mapping[dt.date, tuple[int, int]],
    bad_headers: Mapping[dt.date, list[str]],
) -> list[dict[str, Any]]:
    """One row of checks per drop (``expectations/ratings_drops.json``): rows, quarantine, volume, header."""
    pipeline = ctx.config.pipeline
    drops = sorted(by_drop)
    trailing = trailing_volumes(ctx, drops, {d: n for d, (n, _) in by_drop.items()})
    checks = []
    for drop in drops:
        rows, quarantined = by_drop[drop]
        reference = trailing[drop]
        median = (
            float(statistics.median(reference))
            if len(reference) >= pipeline.volume_min_trailing_drops
            else None
        )
        ratio = rows / median if median else None
        checks.append(
            {
                DROP_DATE_COL: drop,
                "rows": rows,
                "quarantined": quarantined,
                "quarantine_ratio": quarantined / rows if rows else 0.0,
                "trailing_drops": len(reference),
                "trailing_median": median,
                "volume_ratio": ratio,
                "volume_ok": ratio is None or pipeline.volume_min_ratio <= ratio <= pipeline.volume_max_ratio,
                "bad_header_files": len(bad_headers.get(drop, [])),
            }
        )
    return checks


_DROP_CHECK_COLUMNS = (
    DROP_DATE_COL,
    "rows",
    "quarantined",
    "quarantine_ratio",
    "trailing_drops",
    "trailing_median",
    "volume_ratio",
    "volume_ok",
    "bad_header_files",
)


def header_drift(spark: SparkSession, ctx: RunContext, drops: Sequence[dt.date]) -> dict[dt.date, list[str]]:
    """Files of ``drops`` whose header is not their format's (from the ledger), by drop."""
    drift: dict[dt.date, list[str]] = {}
    for drop, rows in read_ledger(ctx).items():
        if drop not in drops:
            continue
        for row in rows:
            expected = expected_header(FORMATS[row["format"]])
            if expected is not None and row["header"] != expected:
                found = "an empty file" if row["header"] is None else f"header {row['header']!r}"
                drift.setdefault(drop, []).append(f"{row['file']} ({found}, expected {expected!r})")
    return drift


def files_without_rows(ctx: RunContext, drops: Sequence[dt.date]) -> dict[dt.date, list[str]]:
    """Files of ``drops`` that hold no data line (empty, or a header only), by drop (the ledger)."""
    empty: dict[dt.date, list[str]] = {}
    for drop, rows in read_ledger(ctx).items():
        if drop in drops:
            for row in rows:
                if not int(row["rows"] or 0):
                    what = "empty" if row["size"] == 0 else "no data lines"
                    empty.setdefault(drop, []).append(f"{row['file']} ({what})")
    return empty


def run_ratings_gate(spark: SparkSession, ctx: RunContext) -> dict[str, Any]:
    """Gate the drops ingested for this night; return the summary, or raise GateError.

    Row level: ``expectations/ratings.json`` on the tagged rows of all the night's new drops.
    Drop level: ``expectations/ratings_drops.json`` on one row of checks per drop. On a pass the
    rows the expectations rejected go to quarantine (stage ``gate``) and the drops become
    ``gated`` in the ledger; on a failure nothing changes but the results written.
    """
    import pandas as pd
    from pyspark.sql import functions as F

    drops = drops_with_status(ctx, INGESTED)
    if not drops:
        summary = {"drops": [], "rows_read": 0, "rows_quarantined": 0, "quarantined_by_reason": {}}
        write_json(spark, f"{ctx.validation_uri(RATINGS_SUITE)}.summary.json", _stamp(ctx, True, [], summary))
        log.info("ratings gate %s: no new drops", ctx.run_date)
        return summary
    suite = load_suite(RATINGS_SUITE)
    parameters = ratings_parameters(ctx.config)
    # The gate judges one version of bronze and records it: silver reads the drops as of it.
    version = bronze_version(ctx)
    bronze = read_bronze(spark, ctx, drops, version)
    tagged = tag_bronze(bronze.select(DROP_DATE_COL, *RATINGS_COLUMNS, PARSE_ERROR_COL), suite, parameters)
    # A night's few drops are collected once (their rows are in the ledger): GE's pandas engine
    # and the counts read the same frame. Else GE and the counts read the few columns the suite
    # checks from memory, on Spark.
    landed = ledger_rows(ctx, drops)
    rows_landed = sum(landed.values())
    flagged = flag_rows(tagged, suite, parameters)
    small = collect_small(
        flagged,
        suite,
        [DROP_DATE_COL, REASON_COL, *flag_columns(suite)],
        rows_landed,
    )
    if small is not None:
        result = validate(parsed_rows(small), suite, parameters, collected=True)
        counts = collected_reason_counts(small, suite)
    else:
        tagged = tagged.persist()
        try:
            result = validate(parsed_rows(tagged), suite, parameters, rows=rows_landed)
            counts = reason_counts(tagged, suite, parameters)
        finally:
            tagged.unpersist()
    by_reason: dict[str | None, int] = {}
    by_drop: dict[dt.date, tuple[int, int]] = {}
    for (drop, reason), n in counts.by_drop_reason.items():
        by_reason[reason] = by_reason.get(reason, 0) + n
        rows, quarantined = by_drop.get(drop, (0, 0))
        by_drop[drop] = (rows + n, quarantined + (n if reason is not None else 0))
    for drop in drops:
        by_drop.setdefault(drop, (0, 0))
    # What bronze holds against what ingest counted on the files (the drop stats' rows read).
    lost = {d: (by_drop[d][0], landed[d]) for d in drops if by_drop[d][0] != landed[d]}
    if lost:
        raise GateError(
            suite.name,
            f"bronze and the ingest ledger disagree for {ctx.run_date} (drop: bronze rows, ledger rows): "
            f"{lost}; re-ingest these drops",
            [],
        )
    rows = sum(by_reason.values())
    quarantined = sum(n for reason, n in by_reason.items() if reason is not None)
    ge_counts = unexpected_counts(result)
    disagree = {
        name: (n, ge_counts.get(name))
        for name, n in counts.by_expectation.items()
        if ge_counts.get(name) != n
    }
    if disagree:
        raise GateError(
            suite.name,
            f"gate predicates and GE disagree for {ctx.run_date} (predicate rows, GE unexpected): {disagree}",
            [],
        )
    drops_suite = load_suite(DROPS_SUITE)
    drops_parameters = {"quarantine_max_ratio": ctx.config.pipeline.quarantine_max_ratio}
    bad_headers = header_drift(spark, ctx, drops)
    checks = drop_checks(ctx, by_drop, bad_headers)
    # A row per drop: validated as a pandas frame (GE's pandas engine), not as a Spark job.
    drops_result = validate(pd.DataFrame(checks, columns=_DROP_CHECK_COLUMNS), drops_suite, drops_parameters)
    summary = {
        "drops": [d.isoformat() for d in drops],
        "rows_read": rows,
        "rows_quarantined": quarantined,
        "quarantine_ratio": quarantined / rows if rows else None,
        "quarantined_by_reason": {str(k): v for k, v in sorted(by_reason.items(), key=str) if k is not None},
        "drop_checks": checks,
        "bad_headers": {d.isoformat(): files for d, files in bad_headers.items()},
        "parameters": parameters,
    }
    save_results(
        spark, ctx, drops_suite, drops_result, {"drop_checks": checks, "parameters": drops_parameters}
    )
    save_results(spark, ctx, suite, result, summary, also=[drops_result])
    reasons = ", ".join(f"{k} {v:,}" for k, v in summary["quarantined_by_reason"].items()) or "none"
    context = (
        f"  drops {drops[0]}..{drops[-1]} ({len(drops)}); rows read {rows:,}; quarantined {quarantined:,} "
        f"({reasons}); results: {ctx.validation_uri(suite.name)}.json"
    )
    found = failures(result) + failures(drops_result)
    if found:
        where = f"run_date {ctx.run_date}"
        parts = [
            failure_message(s, where, failures(r))
            for s, r in ((suite, result), (drops_suite, drops_result))
            if not r.success
        ]
        empty = files_without_rows(ctx, drops)
        failing = "\n".join(
            _describe_drop(c, bad_headers, empty) for c in checks if not _drop_ok(c, ctx.config)
        )
        raise GateError(
            suite.name, "\n".join([*parts, f"  failing drops:\n{failing}" if failing else "", context]), found
        )
    # The rejected rows' text is read from bronze only when there are some; an empty slice
    # still replaces the rows an earlier attempt may have left (and is skipped when none did).
    rejected = quarantine_rows(
        tag_bronze(bronze, suite, parameters).where(F.col(PARSE_ERROR_COL).isNull()), F.col(REASON_COL), STAGE
    )
    empty = not any(reason not in PARSE_ERRORS for reason in by_reason if reason is not None)
    publish_quarantine(rejected.limit(0) if empty else rejected, ctx, STAGE, drops, empty)
    set_status(ctx, drops, GATED, gated_version=version)
    return summary


def bronze_version(ctx: RunContext) -> int:
    """The current version of ``ratings_bronze`` (its Delta log, no Spark job)."""
    from recsys.delta import open_delta

    table = open_delta(ctx.table("ratings_bronze"))
    if table is None:
        raise FileNotFoundError(f"{ctx.table('ratings_bronze')}: no bronze table; run ingest first")
    return table.version()


def read_gated(spark: SparkSession, ctx: RunContext, drops: Sequence[dt.date]) -> DataFrame:
    """The bronze rows of ``drops`` exactly as the gate validated them: each drop as of the bronze
    version its gate recorded in the ledger, whatever was written to bronze since (a re-ingest
    that has not been gated, a crash between bronze and the ledger). Refuses a drop without one."""
    ledger = read_ledger(ctx)
    by_version: dict[int, list[dt.date]] = {}
    missing = []
    for drop in drops:
        versions = {row["gated_version"] for row in ledger.get(drop, [])}
        if len(versions) != 1 or None in versions:
            missing.append(drop)
        else:
            by_version.setdefault(versions.pop(), []).append(drop)
    if missing:
        raise GateError(
            RATINGS_SUITE,
            f"no gated bronze version in the ingest ledger for drop(s) {[d.isoformat() for d in missing]}: "
            f"rerun the ratings gate for {ctx.run_date} (python -m spark_jobs.validate --run-date "
            f"{ctx.run_date})",
            [],
        )
    frames = [read_bronze(spark, ctx, group, version) for version, group in sorted(by_version.items())]
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def _drop_ok(checks: Mapping[str, Any], config: Config) -> bool:
    return (
        checks["rows"] >= 1
        and checks["quarantine_ratio"] <= config.pipeline.quarantine_max_ratio
        and checks["volume_ok"]
        and checks["bad_header_files"] == 0
    )


def _describe_drop(
    checks: Mapping[str, Any],
    bad_headers: Mapping[dt.date, list[str]],
    empty_files: Mapping[dt.date, list[str]],
) -> str:
    drop = checks[DROP_DATE_COL]
    volume = (
        f"{checks['volume_ratio']:.3f} x the median {checks['trailing_median']:,.0f} "
        f"of {checks['trailing_drops']} drops"
        if checks["volume_ratio"] is not None
        else "volume not judged"
    )
    headers = "; ".join(bad_headers.get(drop, [])) or "headers ok"
    empty = empty_files.get(drop)
    return (
        f"    drop {drop}: rows {checks['rows']:,}, quarantine ratio {checks['quarantine_ratio']:.4f}, "
        f"volume {volume}; {headers}" + (f"; files without data rows: {'; '.join(empty)}" if empty else "")
    )


def _stamp(ctx: RunContext, success: bool, failed: list[str], summary: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_date": ctx.run_date.isoformat(),
        "run_id": ctx.run_id,
        "success": success,
        "failed": failed,
        **summary,
    }


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


def run_sequences_gate(
    spark: SparkSession, ctx: RunContext, tonight: DataFrame | None = None
) -> dict[str, Any]:
    """Gate the sequence versions of this night (``valid_from`` = the run date); return the summary.

    The rows of other users are versions earlier nights wrote and gated. A night without new
    events has none: nothing to check, and the summary says so. ``tonight``: those versions
    before they are published (the sequences job); else the published ones, read from the table
    (a manual re-check: ``python -m spark_jobs.validate --suite sequences``).
    """
    from pyspark.sql import functions as F

    suite = load_suite(SEQUENCES_SUITE)
    parameters = {"max_seq_len": ctx.config.pipeline.max_seq_len}
    path = ctx.table("sequences")
    # A re-check of the published table judges one version of it and records it, as the job does.
    published: dict[str, int] = {}
    if tonight is None:
        if not table_exists(spark, path):
            raise FileNotFoundError(f"{path}: run the sequences job first")
        from recsys.delta import open_delta

        published["table_version"] = open_delta(path).version()
        tonight = (
            spark.read.format("delta")
            .option("versionAsOf", published["table_version"])
            .load(path)
            .where(F.col(VALID_FROM_COL) == F.lit(ctx.run_date).cast("date"))
        )
    # One row of checks per user, computed once from the arrays and validated from memory.
    checks = sequence_checks(tonight, ctx.config.pipeline.max_seq_len).persist()
    try:
        users = checks.count()
        if users == 0:
            summary = {"users": 0, "parameters": parameters, **published}
            write_json(
                spark, f"{ctx.validation_uri(suite.name)}.summary.json", _stamp(ctx, True, [], summary)
            )
            log.info("sequences gate %s: no sequence changed tonight", ctx.run_date)
            return summary
        result = validate(checks, suite, parameters, rows=users)
    finally:
        checks.unpersist()
    summary = {"users": users, "parameters": parameters, **published}
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
        run_sequences_gate(spark, ctx)


if __name__ == "__main__":
    main()

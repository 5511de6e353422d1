"""Silver: the night's gated drops -> versions of ``ratings_silver`` (typed, deduplicated), exact accounting.

Silver is versioned (:mod:`recsys.asof`): a row is the state of one (user_id, item_id) after
every drop up to its ``valid_from``, the date of the drop that changed it. A night writes one
version for each key its drops hold a clean row of, and nothing else, so it costs what its drops
cost; the state as of D is the latest version of each key with ``valid_from <= D``.

Rows kept are those the ratings gate did not quarantine: the same predicates, derived from
``expectations/ratings.json`` with the same parameters, so silver and quarantine partition every
drop. The job refuses to run when tonight's gate has not passed.

Dedup policy (one rating per user and item), over all drops up to the version's date:

* a user who rated the same item more than once (a re-rating) keeps the rating with the latest
  ``timestamp``;
* on equal timestamps the rating from the later line wins, ordered by (``source_file``,
  ``line_number``): a later drop (its folder is dated) or a later line of the same file records
  the later write;
* exact duplicates (same user, item, rating and timestamp) are the special case where every
  copy is equal: one is kept (the last line, by the rule above).

The policy is a maximum, so a key's version after drop d is the maximum of its version before d
and d's own rows: a night reads the earlier versions of the users its drops touch (one scan,
which also gives the sessions stage those users' state), never the whole history. ``copies``
is the number of clean lines the version stands for (all drops up to its date) and
``previous_copies`` that number before its drop (0 for a new key).

A drop that changed after it was applied (re-ingested by the ledger) is a correction: its keys
and those of every later applied drop up to the run date are rebuilt from the previous state of
those keys, and the versions of later nights' sessions and sequences are recomputed tonight
for the users concerned (nights between the corrected drop and tonight must be re-run to see it).

Row accounting is exact, per drop (``ratings_drop_stats``) and per night (``ratings_run_stats``)::

    rows read (bronze) = rows quarantined (ingest + gate) + new keys + duplicates

where new keys are the versions with ``previous_copies = 0`` and duplicates the clean lines that
did not add a key (``copies - previous_copies`` summed, minus new keys). Each side is counted on
its own (rows read: the ingest ledger's rows per file, counted on the files' lines, which the
ratings gate holds equal to the rows bronze holds; quarantine rows; the published versions); if
they do not add up the job fails. Totals as of D (rows read, in silver, quarantined, duplicates)
are sums over drops <= D.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from expectations.gate import check, collect_small, load_suite, validate
from recsys.asof import AS_OF_KEYS, as_of_spark, latest_versions
from recsys.delta import partition_dates
from spark_jobs.columns import (
    DROP_DATE_COL,
    ITEM_COL,
    LINE_NUMBER_COL,
    PARSE_ERROR_COL,
    RATING_COL,
    RATINGS_COLUMNS,
    REASON_COL,
    RUN_DATE_COL,
    SOURCE_FILE_COL,
    STAGE_COL,
    TIMESTAMP_COL,
    USER_COL,
    VALID_FROM_COL,
)
from spark_jobs.common import (
    RunContext,
    context_from_args,
    holds_slice,
    job_parser,
    publish,
    publish_rows,
    read_small_table,
    table_exists,
)
from spark_jobs.ingest import (
    APPLIED,
    GATED,
    drops_with_status,
    ledger_rows,
    read_bronze,
    read_ledger,
    set_status,
)
from spark_jobs.validate import (
    RATINGS_SUITE,
    day_start,
    ratings_parameters,
    read_gated,
    require_gate_passed,
    save_results,
    tag_bronze,
)

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationSuiteValidationResult
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SILVER_SUITE = "ratings_silver"
COPIES_COL = "copies"
PREVIOUS_COPIES_COL = "previous_copies"
SILVER_COLUMNS = (
    USER_COL,
    ITEM_COL,
    RATING_COL,
    TIMESTAMP_COL,
    SOURCE_FILE_COL,
    LINE_NUMBER_COL,
    COPIES_COL,
    PREVIOUS_COPIES_COL,
    VALID_FROM_COL,
)
KEY = AS_OF_KEYS["ratings_silver"]
# True where a row has the (user_id, item_id, valid_from) of the row before it (the silver suite's
# duplicates check).
REPEATED_KEY_COL = "repeats_previous_key"
# The previous state of a key enters the running maximum as a drop dated before any real one.
_BEFORE_ANY_DROP = "0001-01-01"
# True where a version stands for at least one clean line of its own drop (the silver suite checks it).
ADDS_LINES_COL = "adds_lines"
_WINNER = "_winner"
_LINES = "_lines"
# Lines of the version's drop dated before the drop's day (late), carried for the drop stats.
_LATE = "_late_lines"


class AccountingError(RuntimeError):
    """rows read != quarantined + new keys + duplicates: rows were lost or invented."""


@dataclass(frozen=True)
class DropStats:
    """The accounting row of one drop in ``ratings_drop_stats``."""

    drop_date: dt.date
    rows_read: int
    rows_quarantined_ingest: int
    rows_quarantined_gate: int
    quarantined_by_reason: dict[str, int]
    new_keys: int
    duplicates: int
    late: int
    users: int

    @property
    def rows_quarantined(self) -> int:
        return self.rows_quarantined_ingest + self.rows_quarantined_gate

    def check(self) -> None:
        if self.rows_read != self.rows_quarantined + self.new_keys + self.duplicates:
            raise AccountingError(
                f"drop {self.drop_date}: row accounting does not add up: read {self.rows_read:,} != "
                f"quarantined {self.rows_quarantined:,} + new keys {self.new_keys:,} "
                f"+ duplicates {self.duplicates:,}"
            )


@dataclass(frozen=True)
class RunStats:
    """The accounting row of one night in ``ratings_run_stats``: its drops, and the totals as of the date.

    The night's drops are those dated after the previous night (the latest earlier row of
    ``ratings_run_stats``) up to the run date, so a rerun or a backfill of a date reports the same.
    """

    drops: list[str]
    rows_read: int
    rows_quarantined: int
    rows_quarantined_ingest: int
    rows_quarantined_gate: int
    quarantined_by_reason: dict[str, int]
    duplicates_removed: int
    rows_silver: int
    late: int
    users_with_new_events: int
    total_rows_read: int
    total_rows_quarantined: int
    total_duplicates_removed: int
    total_rows_silver: int

    def check(self) -> None:
        for label, read, silver, quarantined, duplicates in (
            ("tonight", self.rows_read, self.rows_silver, self.rows_quarantined, self.duplicates_removed),
            (
                "as of the date",
                self.total_rows_read,
                self.total_rows_silver,
                self.total_rows_quarantined,
                self.total_duplicates_removed,
            ),
        ):
            if read != silver + quarantined + duplicates:
                raise AccountingError(
                    f"row accounting ({label}) does not add up: read {read:,} != silver {silver:,}"
                    f" + quarantined {quarantined:,} + duplicates removed {duplicates:,}"
                )


def versions(clean: DataFrame, previous: DataFrame | None, single_drop: bool = False) -> DataFrame:
    """Silver versions (plus the suite's check columns) for every (key, drop) of ``clean``.

    ``clean``: the clean rows (key, rating, timestamp, source_file, line_number, drop_date) of
    the drops being applied; ``previous``: the versions of their keys before the first of them
    (as of the day before), or None; ``single_drop``: the caller knows ``clean`` holds one drop.

    One shuffle by user and one sort, by (key, drop, the dedup order, latest first):

    1. per (key, drop), the row the dedup policy keeps, the drop's clean lines and its late lines
       (one window operator; the previous state enters as a row dated before any drop, standing
       for its ``copies`` lines);
    2. per key, in drop order over those rows: the running maximum (the policy is a maximum, so a
       key's version after a drop is the maximum of its previous version and the drop's own
       winner) and the running sum of lines. The rows are already in this order. A single drop
       with no previous state needs no step 2: its winners are the versions.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    weight = "_weight"
    rows = clean.select(
        *KEY,
        DROP_DATE_COL,
        RATING_COL,
        TIMESTAMP_COL,
        SOURCE_FILE_COL,
        LINE_NUMBER_COL,
        F.lit(1).cast("long").alias(weight),
        (F.col(TIMESTAMP_COL) < day_start(DROP_DATE_COL)).cast("long").alias(_LATE),
    )
    before_any = F.lit(_BEFORE_ANY_DROP).cast("date")
    if previous is not None:
        rows = rows.unionByName(
            previous.select(
                *KEY,
                before_any.alias(DROP_DATE_COL),
                RATING_COL,
                TIMESTAMP_COL,
                SOURCE_FILE_COL,
                LINE_NUMBER_COL,
                F.col(COPIES_COL).cast("long").alias(weight),
                F.lit(0).cast("long").alias(_LATE),
            )
        )
    # Hash-partitioned by user: the windows need no further shuffle, and sessions built from
    # these rows in the same process none either.
    latest_first = Window.partitionBy(*KEY, DROP_DATE_COL).orderBy(
        *(F.col(c).desc() for c in (TIMESTAMP_COL, SOURCE_FILE_COL, LINE_NUMBER_COL))
    )
    whole_drop = latest_first.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    winners = (
        rows.repartition(USER_COL)
        .select(
            *KEY,
            DROP_DATE_COL,
            F.struct(TIMESTAMP_COL, SOURCE_FILE_COL, LINE_NUMBER_COL, RATING_COL).alias(_WINNER),
            F.row_number().over(latest_first).alias("_rank"),
            F.sum(weight).over(whole_drop).alias(_LINES),
            F.sum(_LATE).over(whole_drop).alias(_LATE),
        )
        .where(F.col("_rank") == 1)
    )
    in_order = Window.partitionBy(*KEY).orderBy(DROP_DATE_COL)
    if single_drop and previous is None:
        running = winners.select(*KEY, DROP_DATE_COL, _WINNER, F.col(_LINES).alias(COPIES_COL), _LINES, _LATE)
    else:
        so_far = in_order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
        running = winners.select(
            *KEY,
            DROP_DATE_COL,
            F.max(_WINNER).over(so_far).alias(_WINNER),
            F.sum(_LINES).over(so_far).alias(COPIES_COL),
            _LINES,
            _LATE,
        ).where(F.col(DROP_DATE_COL) != before_any)
    # The suite's duplicates check, on the versions themselves (their order needs no new sort).
    previous_drop = F.lag(DROP_DATE_COL).over(in_order)
    best = F.col(_WINNER)
    return running.select(
        F.col(USER_COL).cast("long").alias(USER_COL),
        F.col(ITEM_COL).cast("long").alias(ITEM_COL),
        best[RATING_COL].alias(RATING_COL),
        best[TIMESTAMP_COL].alias(TIMESTAMP_COL),
        best[SOURCE_FILE_COL].alias(SOURCE_FILE_COL),
        best[LINE_NUMBER_COL].alias(LINE_NUMBER_COL),
        F.col(COPIES_COL).cast("int").alias(COPIES_COL),
        (F.col(COPIES_COL) - F.col(_LINES)).cast("int").alias(PREVIOUS_COPIES_COL),
        F.col(DROP_DATE_COL).alias(VALID_FROM_COL),
        F.coalesce(previous_drop == F.col(DROP_DATE_COL), F.lit(False)).alias(REPEATED_KEY_COL),
        (F.col(_LINES) > 0).alias(ADDS_LINES_COL),
        F.col(_LATE),
    )


def validate_silver(frame: DataFrame) -> tuple[ExpectationSuiteValidationResult, pd.DataFrame | None]:
    """``expectations/ratings_silver.json`` on the (persisted) versions frame, and the frame as
    collected for GE's pandas engine with the columns :func:`collected_version_counts` reads
    (None when it is validated on Spark)."""
    suite = load_suite(SILVER_SUITE)
    rows = frame.count()
    small = collect_small(
        frame, suite, [VALID_FROM_COL, USER_COL, COPIES_COL, PREVIOUS_COPIES_COL, _LATE], rows
    )
    if small is None:
        return validate(frame, suite, {}, rows=rows), None
    return validate(small, suite, {}, collected=True), small


def clean_rows(spark: SparkSession, ctx: RunContext, drops: Sequence[dt.date]) -> DataFrame:
    """The rows of ``drops`` the gate did not quarantine: key, rating, timestamp, lineage, drop_date.

    A drop the ledger says is ``gated`` (not applied yet) is read as of the bronze version its gate
    validated (:func:`spark_jobs.validate.read_gated`). An ``applied`` one (rebuilt after a
    correction of an earlier drop) is read as bronze holds it: a rewrite of its rows would have
    re-ingested it (it would be pending again), and its gated version may be vacuumed since.
    """
    from pyspark.sql import functions as F

    ledger = read_ledger(ctx)
    applied = [d for d in drops if ledger.get(d) and all(r["status"] == APPLIED for r in ledger[d])]
    pending = [d for d in drops if d not in applied]
    parts = ([read_gated(spark, ctx, pending)] if pending else []) + (
        [read_bronze(spark, ctx, applied)] if applied else []
    )
    rows = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    needed = rows.select(*RATINGS_COLUMNS, SOURCE_FILE_COL, LINE_NUMBER_COL, PARSE_ERROR_COL, DROP_DATE_COL)
    tagged = tag_bronze(needed, load_suite(RATINGS_SUITE), ratings_parameters(ctx.config))
    return tagged.where(F.col(REASON_COL).isNull()).select(
        *KEY, RATING_COL, TIMESTAMP_COL, SOURCE_FILE_COL, LINE_NUMBER_COL, DROP_DATE_COL
    )


@dataclass
class Applied:
    """What :func:`apply_drops` wrote: the drop dates rewritten, the versions' counts per drop
    (None when a correction kept earlier versions), and, with ``keep``, the state as of the date
    (persisted, partitioned by user; the caller unpersists it) of the users ``state_of`` names:
    every user (None) on a first load, else the users of the drops in the list."""

    drops: list[dt.date]
    counted: dict[dt.date, dict[str, int]] | None
    state: DataFrame | None = None
    state_of: list[dt.date] | None = None


def apply_drops(
    spark: SparkSession, ctx: RunContext, pending: Sequence[dt.date], keep: bool = False
) -> Applied:
    """Write the silver versions of ``pending`` (and, for a correction, of the applied drops after it)."""
    from pyspark.sql import functions as F

    path = ctx.table("ratings_silver")
    first = min(pending)
    later = [d for d in drops_with_status(ctx, APPLIED) if d >= first]
    rebuilt = sorted(set(pending) | set(later))
    exists = table_exists(spark, path)
    silver = spark.read.format("delta").load(path) if exists else None
    clean = clean_rows(spark, ctx, rebuilt)
    kept = None
    if later:
        # A correction: the keys of the pending drops, as they are now and as silver had them.
        keys = clean.where(F.col(DROP_DATE_COL).isin(list(pending))).select(*KEY)
        if silver is not None:
            keys = keys.unionByName(silver.where(F.col(VALID_FROM_COL).isin(list(pending))).select(*KEY))
        keys = keys.distinct().persist()
        clean = clean.join(keys, list(KEY), "left_semi")
        kept = silver.where(F.col(VALID_FROM_COL).isin(later)).join(keys, list(KEY), "left_anti")
        log.warning(
            "silver %s: drop(s) %s corrected; rebuilding the versions of %s", ctx.run_date, pending, rebuilt
        )
    previous = history = None
    if exists:
        clean = clean.persist()
        # The touched users' state before the first drop, in one scan of silver (every column):
        # the previous versions of tonight's keys come from it, and so does (with tonight's
        # versions) the state that sessions read for these users. Checkpointed, not cached: a
        # write to silver invalidates every cached plan that reads silver, and everything
        # below would be computed again after tonight's publish.
        users = clean.select(USER_COL).distinct()
        history = as_of_spark(spark, path, first - dt.timedelta(days=1), KEY, within=users).localCheckpoint()
        previous = history.join(clean.select(*KEY).distinct(), list(KEY), "left_semi")
    frame = versions(clean, previous, single_drop=len(rebuilt) == 1).persist()
    state = None
    try:
        suite = load_suite(SILVER_SUITE)
        result, small = validate_silver(frame)
        save_results(spark, ctx, suite, result, {"drops": [d.isoformat() for d in rebuilt]})
        check(result, suite, f"run_date {ctx.run_date}")
        out = frame.select(*SILVER_COLUMNS)
        if kept is not None:
            out = out.unionByName(kept.select(*SILVER_COLUMNS))
        publish(out, ctx, "ratings_silver", {VALID_FROM_COL: rebuilt})
        if kept is not None:
            counted = None
        else:
            counted = version_counts(frame) if small is None else collected_version_counts(small)
        if keep and kept is None:
            single = history is None and len(rebuilt) == 1  # a first load's versions are its state
            state = frame if single else touched_state(history, frame)
    except BaseException:
        frame.unpersist()
        raise
    finally:
        # (the checkpoint's blocks go when ``history`` is garbage-collected: Spark's ContextCleaner)
        clean.unpersist()
    if state is not frame:
        frame.unpersist()
    if state is None:
        return Applied(rebuilt, counted)
    return Applied(rebuilt, counted, state, None if history is None else rebuilt)


def touched_state(history: DataFrame | None, frame: DataFrame) -> DataFrame:
    """The touched users' state as of the run date: the latest of their versions before tonight
    (``history``, None on a first load) and tonight's (``frame``), per key; persisted (and
    computed) here, partitioned by user."""
    rows = frame.select(*SILVER_COLUMNS)
    if history is not None:
        rows = history.select(*SILVER_COLUMNS).unionByName(rows)
    state = latest_versions(rows.repartition(USER_COL), KEY)
    state = state.persist()
    log.info("silver: the state of tonight's users as of the date: %s ratings", f"{state.count():,}")
    return state


def version_counts(frame: DataFrame) -> dict[dt.date, dict[str, int]]:
    """Per drop date of a frame of versions: new keys, clean lines, users (and late lines, if it has them)."""
    from pyspark.sql import functions as F

    counts = {
        "new_keys": F.sum((F.col(PREVIOUS_COPIES_COL) == 0).cast("long")),
        "clean": F.sum(F.col(COPIES_COL) - F.col(PREVIOUS_COPIES_COL)),
        "users": F.countDistinct(USER_COL),
    }
    if _LATE in frame.columns:
        counts["late"] = F.sum(_LATE)
    rows = frame.groupBy(VALID_FROM_COL).agg(*[c.alias(name) for name, c in counts.items()]).collect()
    return {row[VALID_FROM_COL]: {name: int(row[name] or 0) for name in counts} for row in rows}


def collected_version_counts(frame: pd.DataFrame) -> dict[dt.date, dict[str, int]]:
    """:func:`version_counts` of a collected frame of versions (with ``_late_lines``; no Spark job)."""
    per_drop = frame.assign(
        new_keys=(frame[PREVIOUS_COPIES_COL] == 0).astype("int64"),
        clean=frame[COPIES_COL].astype("int64") - frame[PREVIOUS_COPIES_COL].astype("int64"),
    ).groupby(VALID_FROM_COL)
    counts = per_drop.agg(
        new_keys=("new_keys", "sum"), clean=("clean", "sum"), users=(USER_COL, "nunique"), late=(_LATE, "sum")
    )
    return {drop: {name: int(value) for name, value in row.items()} for drop, row in counts.iterrows()}


def drop_stats(
    spark: SparkSession,
    ctx: RunContext,
    drops: Sequence[dt.date],
    counted: dict[dt.date, dict[str, int]] | None = None,
) -> list[DropStats]:
    """The accounting of ``drops``, each term counted on its own (ledger, quarantine, versions); checked.

    ``counted``: the versions' counts per drop as :func:`apply_drops` returns them (else they are
    counted on the published table).
    """
    from pyspark.sql import functions as F

    drops = list(drops)
    # Rows read per drop from the ledger (its files' lines, which the gate checked against the
    # rows bronze holds; no data read), quarantine rows from the table (none read when it holds
    # no file of these drops).
    read = ledger_rows(ctx, drops)
    quarantine = []
    if holds_slice(ctx.table("ratings_quarantine"), {DROP_DATE_COL: drops}):
        quarantine = (
            spark.read.format("delta")
            .load(ctx.table("ratings_quarantine"))
            .where(F.col(DROP_DATE_COL).isin(drops))
            .groupBy(DROP_DATE_COL, STAGE_COL, REASON_COL)
            .count()
            .collect()
        )
    if counted is None:
        # Counted again from the published versions, and late lines from bronze.
        silver = spark.read.format("delta").load(ctx.table("ratings_silver"))
        counted = version_counts(silver.where(F.col(VALID_FROM_COL).isin(drops)))
        late = dict(
            clean_rows(spark, ctx, drops)
            .where(F.col(TIMESTAMP_COL) < day_start(DROP_DATE_COL))
            .groupBy(DROP_DATE_COL)
            .count()
            .collect()
        )
        for drop, values in counted.items():
            values["late"] = int(late.get(drop, 0))
    stats = []
    for drop in drops:
        stages = {"ingest": 0, "gate": 0}
        reasons: dict[str, int] = {}
        for row in quarantine:
            if row[DROP_DATE_COL] == drop:
                stages[row[STAGE_COL]] = stages.get(row[STAGE_COL], 0) + int(row["count"])
                reasons[row[REASON_COL]] = reasons.get(row[REASON_COL], 0) + int(row["count"])
        version = counted.get(drop, {})
        new_keys, clean = version.get("new_keys", 0), version.get("clean", 0)
        one = DropStats(
            drop_date=drop,
            rows_read=int(read.get(drop, 0)),
            rows_quarantined_ingest=stages["ingest"],
            rows_quarantined_gate=stages["gate"],
            quarantined_by_reason=dict(sorted(reasons.items())),
            new_keys=new_keys,
            duplicates=clean - new_keys,
            late=version.get("late", 0),
            users=version.get("users", 0),
        )
        one.check()
        stats.append(one)
    return stats


_DROP_STATS_SCHEMA = (
    "drop_date date, night date, run_id string, rows_read long, rows_quarantined long, "
    "rows_quarantined_ingest long, rows_quarantined_gate long, quarantined_by_reason map<string,bigint>, "
    "new_keys long, duplicates long, late long, users long"
)


def publish_drop_stats(ctx: RunContext, stats: Sequence[DropStats]) -> None:
    rows = [
        {**asdict(s), "rows_quarantined": s.rows_quarantined, "night": ctx.run_date, "run_id": ctx.run_id}
        for s in stats
    ]
    publish_rows(
        ctx, "ratings_drop_stats", rows, _DROP_STATS_SCHEMA, {DROP_DATE_COL: [s.drop_date for s in stats]}
    )


def previous_night(ctx: RunContext) -> dt.date | None:
    """The latest night before the run date in ``ratings_run_stats`` (None for the first night)."""
    earlier = [d for d in partition_dates(ctx.table("ratings_run_stats"), RUN_DATE_COL) if d < ctx.run_date]
    return earlier[-1] if earlier else None


def run_stats(ctx: RunContext) -> RunStats:
    """Tonight's accounting from the drop stats: drops after the previous night, and totals up to the date."""
    import pyarrow.compute as pc

    from recsys.delta import open_delta, read_arrow

    since = previous_night(ctx)
    rows = [r for r in read_small_table(ctx.table("ratings_drop_stats")) if r[DROP_DATE_COL] <= ctx.run_date]
    tonight = [r for r in rows if since is None or r[DROP_DATE_COL] > since]
    reasons: dict[str, int] = {}
    for row in tonight:
        for reason, n in (row["quarantined_by_reason"] or {}).items():
            reasons[reason] = reasons.get(reason, 0) + int(n)
    users = int(tonight[0]["users"]) if len(tonight) == 1 else 0
    silver = open_delta(ctx.table("ratings_silver")) if len(tonight) > 1 else None
    if silver is not None:
        # One column of tonight's partitions, through delta-rs (no Spark job).
        dates = [r[DROP_DATE_COL] for r in tonight]
        column = read_arrow(silver, [USER_COL], [(VALID_FROM_COL, "in", dates)])
        users = pc.count_distinct(column[USER_COL]).as_py()

    def total(column: str, of: Sequence[Any]) -> int:
        return sum(int(r[column]) for r in of)

    stats = RunStats(
        drops=sorted(r[DROP_DATE_COL].isoformat() for r in tonight),
        rows_read=total("rows_read", tonight),
        rows_quarantined=total("rows_quarantined", tonight),
        rows_quarantined_ingest=total("rows_quarantined_ingest", tonight),
        rows_quarantined_gate=total("rows_quarantined_gate", tonight),
        quarantined_by_reason=dict(sorted(reasons.items())),
        duplicates_removed=total("duplicates", tonight),
        rows_silver=total("new_keys", tonight),
        late=total("late", tonight),
        users_with_new_events=int(users),
        total_rows_read=total("rows_read", rows),
        total_rows_quarantined=total("rows_quarantined", rows),
        total_duplicates_removed=total("duplicates", rows),
        total_rows_silver=total("new_keys", rows),
    )
    stats.check()
    return stats


_RUN_STATS_SCHEMA = (
    "run_id string, drops array<string>, rows_read long, rows_quarantined long, "
    "rows_quarantined_ingest long, "
    "rows_quarantined_gate long, quarantined_by_reason map<string,bigint>, duplicates_removed long, "
    "rows_silver long, late long, users_with_new_events long, total_rows_read long, "
    "total_rows_quarantined long, total_duplicates_removed long, total_rows_silver long"
)


def publish_run_stats(ctx: RunContext, stats: RunStats) -> None:
    row = {**asdict(stats), "run_id": ctx.run_id, RUN_DATE_COL: ctx.run_date}
    publish_rows(ctx, "ratings_run_stats", [row], f"{_RUN_STATS_SCHEMA}, {RUN_DATE_COL} date")


@dataclass
class SilverOutput:
    stats: RunStats
    # Drop dates whose silver versions this night (re)wrote.
    applied: list[dt.date]
    # With run(keep=True): the silver state as of the date of the users ``state_of`` names
    # (None: every user, on a first load; else the users of those drops), persisted and
    # partitioned by user, so sessions need neither a read of silver nor a shuffle; the caller
    # unpersists it. None after a correction.
    state: DataFrame | None = None
    state_of: list[dt.date] | None = None


def run(spark: SparkSession, ctx: RunContext, keep: bool = False) -> SilverOutput:
    """Apply tonight's gated drops to silver; publish their drop stats and the night's run stats."""
    require_gate_passed(spark, ctx, RATINGS_SUITE)
    pending = drops_with_status(ctx, GATED)
    applied = Applied([], None)
    if pending:
        applied = apply_drops(spark, ctx, pending, keep=keep)
        try:
            publish_drop_stats(ctx, drop_stats(spark, ctx, applied.drops, applied.counted))
            set_status(ctx, applied.drops, APPLIED)
        except BaseException:
            if applied.state is not None:
                applied.state.unpersist()
            raise
    stats = run_stats(ctx)
    publish_run_stats(ctx, stats)
    log.info(
        "silver %s: %d drops applied; tonight read %s, quarantined %s, duplicates %s, new keys %s, late %s; "
        "as of %s: %s ratings",
        ctx.run_date,
        len(applied.drops),
        f"{stats.rows_read:,}",
        f"{stats.rows_quarantined:,}",
        f"{stats.duplicates_removed:,}",
        f"{stats.rows_silver:,}",
        f"{stats.late:,}",
        ctx.run_date,
        f"{stats.total_rows_silver:,}",
    )
    return SilverOutput(stats, applied.drops, applied.state, applied.state_of)


def nights_applying(ctx: RunContext) -> list[dt.date]:
    """Drops the ledger says this night (re)applied: the sessions stage recomputes their users."""
    return sorted(
        drop
        for drop, rows in read_ledger(ctx).items()
        if drop <= ctx.run_date
        and any(row["night"] == ctx.run_date and row["status"] == APPLIED for row in rows)
    )


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    args = job_parser("gated drops -> ratings_silver versions for one run date").parse_args(argv)
    ctx = context_from_args(args)
    run(build_spark(ctx.config, app_name="silver"), ctx)


if __name__ == "__main__":
    main()

"""Sessionize: ``ratings_silver`` -> ``sessions`` (one row per event, with its session).

A user's events are ordered by :data:`spark_jobs.columns.EVENT_ORDER`: by ``timestamp``, and
equal timestamps (common in MovieLens: several ratings submitted in the same second) in file
order (``source_file``, ``line_number``), as RecBole orders them. Silver holds one rating per
user and item with the line it came from, so the order is total.
A new session starts at a user's first event and whenever the gap to the previous event is
strictly greater than ``pipeline.session_gap_seconds``.

Per event:

* ``session_id``: the user's session number, 0-based in time order ((user_id, session_id) is
  the session key);
* ``position``: the event's 0-based index in the user's history;
* ``session_position``: its 0-based index in its session;
* ``gap_seconds``: seconds since the user's previous event (0 for the first).
* ``source_file``, ``line_number``: the raw line it came from (carried from silver: lineage,
  and the order of equal timestamps downstream).

Sessions are versioned per user (:mod:`recsys.asof`): the night of D writes, under
``valid_from = D``, the whole sessionized history (as of D) of every user whose events changed
since the previous night — the users with silver versions dated after the latest earlier
``sequences`` partition (the last night that finished), plus those of drops this night
re-applied (a correction). Everyone else keeps their earlier version. In the one-process
pipeline, silver hands over those users' state as of D (it read their earlier versions anyway),
so this stage reads nothing; run alone, it reads the users' rows of silver as of D. The first night, and every
night with ``pipeline.kcore > 0`` (the k-core is a global filter), recompute every user.

Window functions only (one shuffle by user, one sort); no Python UDFs.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from recsys.asof import AS_OF_KEYS, as_of_spark
from recsys.delta import partition_dates
from spark_jobs.columns import (
    EVENT_ORDER,
    GAP_COL,
    ITEM_COL,
    LINE_NUMBER_COL,
    POSITION_COL,
    RATING_COL,
    SESSION_ID_COL,
    SESSION_POSITION_COL,
    SOURCE_FILE_COL,
    TIMESTAMP_COL,
    USER_COL,
    VALID_FROM_COL,
)
from spark_jobs.common import RunContext, context_from_args, job_parser, publish_kept

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SESSION_COLUMNS = (
    USER_COL,
    ITEM_COL,
    RATING_COL,
    TIMESTAMP_COL,
    SOURCE_FILE_COL,
    LINE_NUMBER_COL,
    SESSION_ID_COL,
    POSITION_COL,
    SESSION_POSITION_COL,
    GAP_COL,
    VALID_FROM_COL,
)
_NEW_SESSION = "_new_session"


def sessionize(
    events: DataFrame,
    gap_seconds: int,
    user_col: str = USER_COL,
    order: tuple[str, ...] = EVENT_ORDER,
) -> DataFrame:
    """Add ``session_id``, ``position``, ``session_position`` and ``gap_seconds`` to every event.

    Events are ordered per user by ``order``, whose first column is the time in seconds.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    time_col = order[0]
    history = Window.partitionBy(user_col).orderBy(*order)
    so_far = history.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    with_previous = events.select(
        "*",
        (F.row_number().over(history) - 1).alias(POSITION_COL),
        F.lag(time_col).over(history).alias("_previous"),
    )
    gap = F.col(time_col) - F.col("_previous")
    with_gaps = with_previous.select(
        *events.columns,
        POSITION_COL,
        F.coalesce(gap, F.lit(0)).alias(GAP_COL),
        (F.col("_previous").isNull() | (gap > gap_seconds)).alias(_NEW_SESSION),
    )
    session_start = F.max(F.when(F.col(_NEW_SESSION), F.col(POSITION_COL))).over(so_far)
    return with_gaps.select(
        *[c for c in events.columns],
        (F.sum(F.col(_NEW_SESSION).cast("int")).over(so_far) - 1).cast("int").alias(SESSION_ID_COL),
        F.col(POSITION_COL).cast("int").alias(POSITION_COL),
        (F.col(POSITION_COL) - session_start).cast("int").alias(SESSION_POSITION_COL),
        F.col(GAP_COL),
    )


def touched_drops(ctx: RunContext) -> list[dt.date] | None:
    """The silver drop dates whose users changed since the last finished night (None: every user)."""
    from spark_jobs.silver import nights_applying

    if ctx.config.pipeline.kcore > 0:
        return None
    finished = [d for d in partition_dates(ctx.table("sequences"), VALID_FROM_COL) if d < ctx.run_date]
    if not finished:
        return None
    since = finished[-1]
    dates = [
        d for d in partition_dates(ctx.table("ratings_silver"), VALID_FROM_COL) if since < d <= ctx.run_date
    ]
    return sorted(set(dates) | set(nights_applying(ctx)))


def run(
    spark: SparkSession,
    ctx: RunContext,
    keep: bool = False,
    silver: DataFrame | None = None,
    silver_of: Sequence[dt.date] | None = None,
) -> DataFrame | None:
    """Publish tonight's session versions (every changed user's history as of the run date).

    ``silver``: the silver state as of the run date of the users of the drops ``silver_of``
    (None: of every user) when the caller has it in hand (the pipeline, partitioned by user);
    it is used when those are the users this night must rewrite, else silver is read
    (:mod:`recsys.asof`). With ``keep`` the published frame is returned persisted (partitioned
    by user, so the sequences stage needs no shuffle); the caller unpersists it.
    """
    from pyspark.sql import functions as F

    from recsys.delta import with_run_date

    drops = touched_drops(ctx)
    users = None
    in_hand = silver is not None and silver_of is None and drops is None
    if silver is not None and silver_of is not None and drops is not None:
        # (a drop wholly quarantined has no silver versions, hence no users)
        present = set(partition_dates(ctx.table("ratings_silver"), VALID_FROM_COL))
        in_hand = set(drops) == set(silver_of) & present
    if in_hand:
        log.info(
            "sessions %s: the users of drops %s, from silver's state in hand", ctx.run_date, _dates(drops)
        )
    else:
        if drops is not None:
            silver_table = spark.read.format("delta").load(ctx.table("ratings_silver"))
            users = (
                silver_table.where(F.col(VALID_FROM_COL).isin(drops)).select(USER_COL).distinct().persist()
            )
            log.info("sessions %s: %s users with new events", ctx.run_date, f"{users.count():,}")
        silver = as_of_spark(
            spark, ctx.table("ratings_silver"), ctx.run_date, AS_OF_KEYS["ratings_silver"], within=users
        )
    events = silver.select(USER_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL, SOURCE_FILE_COL, LINE_NUMBER_COL)
    sessions = sessionize(events, ctx.config.pipeline.session_gap_seconds)
    sessions = with_run_date(sessions, ctx.run_date, VALID_FROM_COL).select(*SESSION_COLUMNS)
    try:
        return publish_kept(sessions, ctx, "sessions", {VALID_FROM_COL: ctx.run_date}, keep)
    finally:
        if users is not None:
            users.unpersist()


def _dates(dates: Sequence[dt.date] | None) -> str:
    if not dates:
        return "(all)"
    return f"{dates[0]}..{dates[-1]} ({len(dates)})" if len(dates) > 1 else str(dates[0])


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    args = job_parser("ratings_silver -> session versions (gap-based) for one run date").parse_args(argv)
    ctx = context_from_args(args)
    run(build_spark(ctx.config, app_name="sessionize"), ctx)


if __name__ == "__main__":
    main()

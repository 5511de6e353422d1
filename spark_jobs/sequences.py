"""Sequences: ``sessions`` -> ``sequences`` (one row per user), the table the model trains on.

Contract (the model team depends on it)::

    run_date     date
    user_id      long
    item_ids     array<long>     raw MovieLens item ids, chronological
    timestamps   array<long>     seconds since the epoch
    time_gaps    array<long>     seconds since the previous event of the user's history (0 for the first)
    session_ids  array<int>      the event's session (spark_jobs.sessionize)
    split        array<tinyint>  0 train, 1 valid, 2 test
    n_events     int             events in the user's history, before truncation

Order: (timestamp, item_id), the order of :mod:`spark_jobs.sessionize`. Leave-one-out is
decided on the FULL history: n >= 3 -> last test, second-to-last valid; n == 2 -> [train, test];
n == 1 -> [train]. Truncation keeps the MOST RECENT ``pipeline.max_seq_len`` events, so the
markers survive it (max_seq_len >= 2), and ``time_gaps`` of the first kept event still measures
from its real predecessor.

With ``pipeline.kcore = k > 0`` the events are first reduced to the k-core: users and items are
removed, repeatedly, until every remaining user and item has at least k events (SS4Rec's ML-1M
setting is 5). Session ids stay those of the full history (a session is the user's activity);
gaps and n_events count the kept events only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from spark_jobs.columns import (
    ITEM_COL,
    ITEMS_COL,
    N_EVENTS_COL,
    RUN_DATE_COL,
    SESSION_ID_COL,
    SESSION_IDS_COL,
    SPLIT_COL,
    TIME_GAPS_COL,
    TIMESTAMP_COL,
    TIMESTAMPS_COL,
    USER_COL,
)
from spark_jobs.common import RunContext, context_from_args, job_parser, publish, read_run

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

TRAIN, VALID, TEST = 0, 1, 2
SEQUENCE_COLUMNS = (
    RUN_DATE_COL,
    USER_COL,
    ITEMS_COL,
    TIMESTAMPS_COL,
    TIME_GAPS_COL,
    SESSION_IDS_COL,
    SPLIT_COL,
    N_EVENTS_COL,
)
_EVENTS = "_events"
MAX_KCORE_ITERATIONS = 100


def kcore(ratings: DataFrame, k: int, user_col: str = USER_COL, item_col: str = ITEM_COL) -> DataFrame:
    """The k-core of a user-item frame: every user and every item with at least ``k`` rows.

    Removing every user and item below ``k`` at once, and repeating until nothing changes,
    reaches the (unique) k-core. Each round is checkpointed locally to keep the plan short.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if k <= 0:
        return ratings
    current = ratings.localCheckpoint()
    rows = current.count()
    for iteration in range(1, MAX_KCORE_ITERATIONS + 1):
        kept = (
            current.withColumn("_user_n", F.count(F.lit(1)).over(Window.partitionBy(user_col)))
            .withColumn("_item_n", F.count(F.lit(1)).over(Window.partitionBy(item_col)))
            .where((F.col("_user_n") >= k) & (F.col("_item_n") >= k))
            .drop("_user_n", "_item_n")
            .localCheckpoint()
        )
        kept_rows = kept.count()
        log.info("k-core %d, round %d: %d -> %d rows", k, iteration, rows, kept_rows)
        if kept_rows == rows:
            return kept
        current, rows = kept, kept_rows
    raise RuntimeError(f"k-core {k} did not converge in {MAX_KCORE_ITERATIONS} rounds")


def build_sequences(
    events: DataFrame,
    max_seq_len: int,
    user_col: str = USER_COL,
    item_col: str = ITEM_COL,
    time_col: str = TIMESTAMP_COL,
    session_col: str = SESSION_ID_COL,
) -> DataFrame:
    """Events (user, item, timestamp, session_id) -> one sequence row per user (without run_date)."""
    from pyspark.sql import functions as F

    if max_seq_len < 2:
        raise ValueError(f"max_seq_len must be >= 2 to keep the valid/test markers, got {max_seq_len}")
    event = F.struct(F.col(time_col).alias("t"), F.col(item_col).alias("i"), F.col(session_col).alias("s"))
    per_user = events.groupBy(user_col).agg(F.sort_array(F.collect_list(event)).alias(_EVENTS))
    history = F.col(_EVENTS)
    n = F.size(history)
    first = F.greatest(n - max_seq_len, F.lit(0))  # 0-based index of the first event kept
    kept = F.slice(history, first + 1, max_seq_len)

    def gap(e, j):
        index = first + j  # 0-based in the full history; element_at is 1-based, so this is the previous
        return F.when(index == 0, F.lit(0).cast("long")).otherwise(e["t"] - F.element_at(history, index)["t"])

    def marker(_, j):
        index = first + j
        return (
            F.when((index == n - 1) & (n >= 2), TEST)
            .when((index == n - 2) & (n >= 3), VALID)
            .otherwise(TRAIN)
        ).cast("tinyint")

    return per_user.select(
        F.col(user_col).cast("long").alias(USER_COL),
        F.transform(kept, lambda e: e["i"]).cast("array<long>").alias(ITEMS_COL),
        F.transform(kept, lambda e: e["t"]).cast("array<long>").alias(TIMESTAMPS_COL),
        F.transform(kept, gap).cast("array<long>").alias(TIME_GAPS_COL),
        F.transform(kept, lambda e: e["s"]).cast("array<int>").alias(SESSION_IDS_COL),
        F.transform(kept, marker).alias(SPLIT_COL),
        n.cast("int").alias(N_EVENTS_COL),
    )


def run(spark: SparkSession, ctx: RunContext, sessions: DataFrame | None = None) -> str:
    """Publish this run's sequences partition.

    ``sessions`` is this run's published sessions partition when the caller has it in hand (the
    pipeline, whose frame is already partitioned by user); by default it is read from the table.
    """
    from recsys.delta import with_run_date

    if sessions is None:
        sessions = read_run(spark, ctx, "sessions")
    events = kcore(
        sessions.select(USER_COL, ITEM_COL, TIMESTAMP_COL, SESSION_ID_COL), ctx.config.pipeline.kcore
    )
    sequences = with_run_date(build_sequences(events, ctx.config.pipeline.max_seq_len), ctx.run_date)
    return publish(sequences.select(*SEQUENCE_COLUMNS), ctx, "sequences")


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    args = job_parser("sessions -> per-user sequences (leave-one-out markers) for one run date").parse_args(
        argv
    )
    ctx = context_from_args(args)
    run(build_spark(ctx.config, app_name="sequences"), ctx)


if __name__ == "__main__":
    main()

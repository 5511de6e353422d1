"""Sequences: ``sessions`` -> ``sequences`` (one row per user), the table the model trains on.

Contract (the model team depends on it)::

    valid_from   date            the night that wrote this version of the user's sequence
    user_id      long
    item_ids     array<long>     raw MovieLens item ids, chronological
    timestamps   array<long>     seconds since the epoch
    time_gaps    array<long>     seconds since the previous event of the user's history (0 for the first)
    session_ids  array<int>      the event's session (spark_jobs.sessionize)
    split        array<tinyint>  0 train, 1 valid, 2 test
    n_events     int             events in the user's history, before truncation

Order: :data:`spark_jobs.columns.EVENT_ORDER` (time, then file order), as in
:mod:`spark_jobs.sessionize`. Leave-one-out is
decided on the FULL history: n >= 3 -> last test, second-to-last valid; n == 2 -> [train, test];
n == 1 -> [train]. Like sessions, sequences are versioned per user (:mod:`recsys.asof`): a night
writes the sequences of the users whose history changed, built from their session versions of
that night; read a date's sequences with ``recsys.asof`` (``model.data.read_sequences``).
Truncation keeps the MOST RECENT ``pipeline.max_seq_len`` events, so the
markers survive it (max_seq_len >= 2), and ``time_gaps`` of the first kept event still measures
from its real predecessor.

With ``pipeline.kcore = k > 0`` the events are first reduced to the k-core: users and items are
removed, repeatedly, until every remaining user and item has at least k events (SS4Rec's ML-1M
setting is 5). Session ids stay those of the full history (a session is the user's activity);
gaps and n_events count the kept events only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spark_jobs.columns import (
    EVENT_ORDER,
    GAP_COL,
    ITEM_COL,
    ITEMS_COL,
    LINE_NUMBER_COL,
    N_EVENTS_COL,
    POSITION_COL,
    SESSION_ID_COL,
    SESSION_IDS_COL,
    SOURCE_FILE_COL,
    SPLIT_COL,
    TIME_GAPS_COL,
    TIMESTAMP_COL,
    TIMESTAMPS_COL,
    USER_COL,
    VALID_FROM_COL,
)
from spark_jobs.common import RunContext, context_from_args, job_parser, publish
from spark_jobs.validate import SEQUENCES_SUITE, record_table_version, run_sequences_gate

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

TRAIN, VALID, TEST = 0, 1, 2
SEQUENCE_COLUMNS = (
    VALID_FROM_COL,
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
    session_col: str = SESSION_ID_COL,
    order: tuple[str, ...] = EVENT_ORDER,
) -> DataFrame:
    """Events (user, item, session_id and the ``order`` columns, time first) -> one sequence row
    per user (without run_date).

    Each event's position and gap in its user's history come from two window functions over
    ``order`` (over a frame already sorted by (user, *order) they add no sort); then
    :func:`collect_sequences`.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    time_col = order[0]
    history = Window.partitionBy(user_col).orderBy(*order)
    numbered = events.select(
        F.col(user_col),
        F.col(item_col),
        F.col(time_col),
        F.col(session_col),
        (F.row_number().over(history) - 1).alias(POSITION_COL),
        F.coalesce(F.col(time_col) - F.lag(time_col).over(history), F.lit(0)).alias(GAP_COL),
    )
    return collect_sequences(numbered, max_seq_len, user_col, item_col, session_col, time_col)


def collect_sequences(
    events: DataFrame,
    max_seq_len: int,
    user_col: str = USER_COL,
    item_col: str = ITEM_COL,
    session_col: str = SESSION_ID_COL,
    time_col: str = TIMESTAMP_COL,
) -> DataFrame:
    """Numbered events (user, item, time, session, ``position`` and ``gap_seconds`` over the
    user's whole history) -> one sequence row per user (without run_date).

    One aggregate per user and no window: the events sorted by position, the last
    ``max_seq_len`` kept, the split markers from the history's length alone. The sessions
    stage numbers its events this way, so without a k-core the sequences are collected from its
    rows. A user's whole history is collected before the slice (a row of one struct per event:
    about 56 MB for a user with a million ratings). No lambdas: Spark evaluates higher-order
    functions without code generation.
    """
    from pyspark.sql import functions as F

    if max_seq_len < 2:
        raise ValueError(f"max_seq_len must be >= 2 to keep the valid/test markers, got {max_seq_len}")
    event = F.struct(
        F.col(POSITION_COL).cast("long").alias("p"),
        F.col(item_col).cast("long").alias("i"),
        F.col(time_col).cast("long").alias("t"),
        F.col(GAP_COL).cast("long").alias("g"),
        F.col(session_col).cast("int").alias("s"),
    )
    per_user = events.groupBy(user_col).agg(
        F.sort_array(F.collect_list(event)).alias(_EVENTS), F.count(F.lit(1)).alias("_n")
    )
    every, n = F.col(_EVENTS), F.col("_n")
    kept = F.slice(every, F.greatest(F.size(every) - max_seq_len + 1, F.lit(1)), max_seq_len)
    tiny = "tinyint"
    # n >= 3: [train..., valid, test]; n == 2: [train, test]; n == 1: [train]
    tail = (
        F.when(n >= 3, F.array(F.lit(VALID).cast(tiny), F.lit(TEST).cast(tiny)))
        .when(n == 2, F.array(F.lit(TEST).cast(tiny)))
        .otherwise(F.array().cast(f"array<{tiny}>"))
    )
    split = F.concat(
        F.array_repeat(F.lit(TRAIN).cast(tiny), (F.least(n, F.lit(max_seq_len)) - F.size(tail)).cast("int")),
        tail,
    )
    return per_user.select(
        F.col(user_col).cast("long").alias(USER_COL),
        kept["i"].alias(ITEMS_COL),
        kept["t"].alias(TIMESTAMPS_COL),
        kept["g"].alias(TIME_GAPS_COL),
        kept["s"].alias(SESSION_IDS_COL),
        split.alias(SPLIT_COL),
        n.cast("int").alias(N_EVENTS_COL),
    )


@dataclass
class SequencesOutput:
    """What :func:`run` did: the sequences gate's summary, and the table version it published."""

    gate: dict[str, Any]
    version: int


def run(spark: SparkSession, ctx: RunContext, sessions: DataFrame | None = None) -> SequencesOutput:
    """Gate, then publish, tonight's sequence versions: one per user whose sessions tonight rewrote.

    ``sessions`` is tonight's session versions when the caller has them in hand (the pipeline,
    whose frame is already partitioned by user); by default they are read from the table. The
    versions are built once (persisted), judged by the sequences gate (a failure raises
    :class:`expectations.gate.GateError` and publishes nothing), published, and the published
    table version is recorded in the gate's summary: the model steps read that version.
    """
    from pyspark.sql import functions as F

    from recsys.delta import open_delta, with_run_date

    if sessions is None:
        sessions = (
            spark.read.format("delta")
            .load(ctx.table("sessions"))
            .where(F.col(VALID_FROM_COL) == F.lit(ctx.run_date).cast("date"))
        )
    max_seq_len, k = ctx.config.pipeline.max_seq_len, ctx.config.pipeline.kcore
    if k > 0:
        # The k-core removes events: positions and gaps are recomputed over the kept ones.
        events = kcore(
            sessions.select(
                USER_COL, ITEM_COL, TIMESTAMP_COL, SOURCE_FILE_COL, LINE_NUMBER_COL, SESSION_ID_COL
            ),
            k,
        )
        built = build_sequences(events, max_seq_len)
    else:
        built = collect_sequences(sessions, max_seq_len)
    sequences = with_run_date(built, ctx.run_date, VALID_FROM_COL).select(*SEQUENCE_COLUMNS).persist()
    try:
        gate = run_sequences_gate(spark, ctx, sequences)
        path = publish(sequences, ctx, "sequences", {VALID_FROM_COL: ctx.run_date})
    finally:
        sequences.unpersist()
    version = open_delta(path).version()
    record_table_version(spark, ctx, SEQUENCES_SUITE, version)
    return SequencesOutput(gate, version)


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    args = job_parser("sessions -> per-user sequences (leave-one-out markers) for one run date").parse_args(
        argv
    )
    ctx = context_from_args(args)
    run(build_spark(ctx.config, app_name="sequences"), ctx)


if __name__ == "__main__":
    main()

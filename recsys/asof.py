"""As-of reads of the versioned tables on a date: silver, sessions, sequences and user states.

These tables are not copied every night. Each row is a *version* of one key, partitioned by
``valid_from``, the date from which it holds:

=================  ================  ==========================================================
table              key               a version is written
=================  ================  ==========================================================
ratings_silver     user_id, item_id  for every drop date whose drop has a clean row of the key
                                     (the key's rating after all drops up to that date)
sessions           user_id           by the night that saw new events of the user (the user's
                                     whole sessionized history as of that night, one row per event)
sequences          user_id           likewise (the user's one sequence row)
user_states        user_id           by the scoring night that advanced or re-encoded the user's
                                     SS4Rec state (model/user_state.py)
=================  ================  ==========================================================

The state as of ``D`` is, for every key, the rows of its latest version with ``valid_from <= D``.
Every version is complete for its key, so this read depends only on what the versions say, not
on which nights happened to write them: a backfill of a past date reads exactly what the first
run of that date read. ``docs/sql/ratings_as_of.sql`` is the same rule in SQL, for analysts.

Both readers refuse a date before the table's retention horizon (table property
:data:`HORIZON_PROPERTY`, set by ``spark_jobs/maintenance.py``), where superseded versions may
be gone and the state can no longer be rebuilt.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

VALID_FROM_COL = "valid_from"
HORIZON_PROPERTY = "recsys.asOfHorizon"
#: The key of each versioned table.
AS_OF_KEYS: dict[str, tuple[str, ...]] = {
    "ratings_silver": ("user_id", "item_id"),
    "sessions": ("user_id",),
    "sequences": ("user_id",),
    "user_states": ("user_id",),
}


class BeforeHorizonError(ValueError):
    """An as-of read asked for a date whose superseded versions retention has removed."""


def check_horizon(path: str, as_of: dt.date, horizon: str | None) -> None:
    if horizon and as_of < dt.date.fromisoformat(horizon):
        raise BeforeHorizonError(
            f"{path}: cannot read the state as of {as_of.isoformat()}: retention keeps dates from "
            f"{horizon} on ({HORIZON_PROPERTY}); raise pipeline.retention_days to keep older dates"
        )


def as_of_spark(
    spark: SparkSession,
    path: str,
    as_of: dt.date,
    keys: Sequence[str],
    version: int | None = None,
    within: DataFrame | None = None,
) -> DataFrame:
    """The Delta table at ``path`` as of ``as_of`` (at table ``version``, default the latest).

    ``within``: a frame of key values (any subset of the key columns, e.g. ``user_id``); only
    rows matching one are read, before the latest version of each key is chosen, so a read of
    a few users costs one scan (the latest version is picked by a window over those rows), not
    a shuffle of the whole table.
    """
    from pyspark.sql import functions as F

    from recsys.delta import open_delta, snapshot_partition_dates

    # The table property and the version dates from the log through delta-rs (no Spark job),
    # and Spark pinned to the same version.
    meta = open_delta(path, version)
    if version is None and meta is not None:
        version = meta.version()
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    table = reader.load(path)
    check_horizon(path, as_of, meta.metadata().configuration.get(HORIZON_PROPERTY) if meta else None)
    rows = table.where(F.col(VALID_FROM_COL) <= F.lit(as_of).cast("date"))
    if within is not None:
        rows = rows.join(F.broadcast(within), list(within.columns), "left_semi")
    dates = snapshot_partition_dates(meta, VALID_FROM_COL) if meta is not None else None
    if dates is not None and len([d for d in dates if d <= as_of]) <= 1:
        return rows  # one version date: every key has one version, nothing to choose
    if within is not None:
        return latest_versions(rows, keys)
    latest = rows.groupBy(*keys).agg(F.max(VALID_FROM_COL).alias(VALID_FROM_COL))
    return rows.join(latest, [*keys, VALID_FROM_COL], "left_semi")


def latest_versions(rows: DataFrame, keys: Sequence[str]) -> DataFrame:
    """The rows of each key's latest ``valid_from`` among ``rows``: one window (a shuffle by the
    keys unless ``rows`` are already clustered by some of them, e.g. partitioned by user)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    latest = F.max(VALID_FROM_COL).over(Window.partitionBy(*keys))
    return rows.withColumn("_latest", latest).where(F.col(VALID_FROM_COL) == F.col("_latest")).drop("_latest")


def as_of_arrow(
    path: str,
    as_of: dt.date,
    keys: Sequence[str],
    columns: Sequence[str] | None = None,
    version: int | None = None,
    filters: Sequence[tuple] = (),
) -> tuple[pa.Table, int]:
    """(the Delta table at ``path`` as of ``as_of``, the table version read), via delta-rs, no JVM.

    ``columns``: the columns to return (the keys and ``valid_from`` are read in any case).
    ``filters``: more DNF conjuncts, applied to the versions *before* each key's latest is taken
    (the latest version among those that match).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from recsys.delta import read_arrow

    table = DeltaTable(path, version=version)  # a missing table is an error here
    check_horizon(path, as_of, table.metadata().configuration.get(HORIZON_PROPERTY))
    wanted = None if columns is None else list(dict.fromkeys([*keys, VALID_FROM_COL, *columns]))
    rows = read_arrow(table, wanted, [(VALID_FROM_COL, "<=", as_of), *filters])
    if rows.num_rows and pc.count_distinct(rows[VALID_FROM_COL]).as_py() > 1:
        rows = latest_rows(rows, list(keys))
    if columns is not None:
        rows = rows.select(list(dict.fromkeys([*keys, *columns])))
    return pa.table(rows), int(table.version())


def latest_rows(rows: pa.Table, keys: list[str]) -> pa.Table:
    """The rows of each key's latest ``valid_from`` among ``rows``, in their original order.

    Dates from the newest down: a row is superseded when a newer date holds its key (a semi-join
    of the date's keys against the newer dates' keys). The hash table is built on the newer
    side, which on a lake of nightly versions is a few nights' keys, not the history's (a
    group-by over every key of 25M rows and a join back cost seconds more per read).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    day_type = rows.schema.field(VALID_FROM_COL).type
    days = sorted(pc.unique(rows[VALID_FROM_COL]).to_pylist(), reverse=True)
    keyed = rows.select(keys).append_column("_row", pa.array(np.arange(rows.num_rows)))
    keep = np.ones(rows.num_rows, dtype=bool)
    newer: list[pa.Table] = []
    for day in days:
        version = keyed.filter(pc.equal(rows[VALID_FROM_COL], pa.scalar(day, day_type)))
        if newer:
            superseded = version.join(pa.concat_tables(newer), keys, join_type="left semi")
            keep[superseded["_row"].to_numpy()] = False
        if day != days[-1]:
            newer.append(version.select(keys))
    return rows.filter(pa.array(keep))

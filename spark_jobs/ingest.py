"""Ingest: the landing zone's new drops -> ``ratings_bronze`` (every line), parse errors to quarantine.

A feed drops each day's files in ``<lake>/<pipeline.landing_dir>/<YYYY-MM-DD>/`` (``python -m
recsys.datasets replay`` plays a MovieLens file as such drops; ``--input FILE`` lands a file as
the drop of the run date). The night of run date D ingests every drop dated <= D that the
``ingest_ledger`` does not hold, whose files changed since (size or modification time differ and
the SHA-256 confirms it), or whose gate has not passed yet; each replaces the rows of its
``drop_date`` in bronze (replaceWhere), so the night costs what its new drops cost. The ledger has
one row per landed file: drop date, format, size, modification time, checksum, header, data
rows, status (``ingested`` -> ``gated`` -> ``applied``), whether it changed since a previous
ingest (with the previous checksum), the night, the run id, and the version of bronze the gate
validated (``gated_version``: silver reads the drop as of that version, never a later rewrite).

Every data line of a drop becomes one bronze row with its source file, its exact 1-based
line number, its text, the typed fields (null when the line cannot be parsed) and, for lines
that cannot be parsed, the kind of error. Bronze is partitioned by the drop's month
(``drop_month``), ``drop_date`` a column with statistics: a night of many daily drops writes a
file per month, and a drop is read (:func:`read_bronze`) and replaced by its date. Lines are
never dropped: the unparseable ones are also copied to ``ratings_quarantine`` (stage
``ingest``) with their text and the reason.

Line numbers are computed in the JVM without a Python pass: the file scan numbers rows with
``monotonically_increasing_id`` (partition id + offset within the partition), and a small
aggregate of the same scan gives each file split its row count, from which the number of lines
before every split follows. Hadoop's line reader assigns every line to exactly one split, in
file order, so ``line = lines before the split + offset within the split + 1``.

Parse-error kinds (the quarantine ``reason``), checked in this order:

=====================  ==========================================================
``bad_encoding``       not valid UTF-8 (or already holds U+FFFD from a lossy decode)
``empty_line``         nothing but whitespace
``wrong_field_count``  not exactly 4 fields between the format's separators
``missing_<field>``    the field is empty (or blank): ``missing_user_id``, ``missing_item_id``,
                       ``missing_rating``, ``missing_timestamp``, the first empty one
``non_integer_<id>``   ``non_integer_user_id`` / ``non_integer_item_id``: not an integer
                       (text, a fraction, an exponent)
``<id>_out_of_range``  ``user_id_out_of_range`` / ``item_id_out_of_range``: an integer that does
                       not fit a signed 64-bit id
``unparseable_rating``   rating is not a finite number
``unparseable_timestamp``  timestamp is not a whole number of seconds
=====================  ==========================================================

Each reason names its field, so a quarantined line says what to fix without reading the text.

For formats with a header (``ratings.csv``, ``recbole-inter``) the first line of each file is
the header, not data: it is kept on every row of its file as ``source_header`` so the gate can
stop the run when the columns drift (renamed, reordered, added).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recsys.datasets.formats import FORMATS, MAX_ABS_SECONDS, RatingsFormat
from spark_jobs.columns import (
    DROP_DATE_COL,
    DROP_MONTH_COL,
    ITEM_COL,
    LINE_NUMBER_COL,
    PARSE_ERROR_COL,
    RATING_COL,
    RATINGS_COLUMNS,
    RAW_COL,
    REASON_COL,
    SOURCE_FILE_COL,
    SOURCE_HEADER_COL,
    STAGE_COL,
    TIMESTAMP_COL,
    USER_COL,
)
from spark_jobs.common import (
    RunContext,
    add_input_arguments,
    context_from_args,
    holds_slice,
    inputs_from_args,
    job_parser,
    publish,
    publish_rows,
    read_small_table,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

STAGE = "ingest"
# A drop's status in the ingest ledger: bronze written -> gate passed -> applied to silver.
INGESTED, GATED, APPLIED = "ingested", "gated", "applied"
BAD_ENCODING = "bad_encoding"
EMPTY_LINE = "empty_line"
WRONG_FIELD_COUNT = "wrong_field_count"
UNPARSEABLE_RATING = "unparseable_rating"
UNPARSEABLE_TIMESTAMP = "unparseable_timestamp"
_ID_COLUMNS = (USER_COL, ITEM_COL)


def missing(column: str) -> str:
    """The parse error of a line whose ``column`` field is empty."""
    return f"missing_{column}"


def non_integer(column: str) -> str:
    """The parse error of an id field that is not an integer."""
    return f"non_integer_{column}"


def out_of_range(column: str) -> str:
    """The parse error of an id field that is an integer beyond a signed 64-bit id."""
    return f"{column}_out_of_range"


PARSE_ERRORS = (
    BAD_ENCODING,
    EMPTY_LINE,
    WRONG_FIELD_COUNT,
    *[missing(c) for c in RATINGS_COLUMNS],
    *[reason(c) for c in _ID_COLUMNS for reason in (non_integer, out_of_range)],
    UNPARSEABLE_RATING,
    UNPARSEABLE_TIMESTAMP,
)

BRONZE_COLUMNS = (
    SOURCE_FILE_COL,
    LINE_NUMBER_COL,
    RAW_COL,
    SOURCE_HEADER_COL,
    *RATINGS_COLUMNS,
    PARSE_ERROR_COL,
    DROP_DATE_COL,
    DROP_MONTH_COL,
)
QUARANTINE_COLUMNS = (SOURCE_FILE_COL, LINE_NUMBER_COL, RAW_COL, REASON_COL, DROP_DATE_COL, STAGE_COL)
LEDGER_SCHEMA = (
    "drop_date date, file string, format string, size long, modified_ms long, sha256 string, "
    "header string, rows long, status string, changed boolean, previous_sha256 string, "
    "night date, run_id string, gated_version long"
)

_LEDGER_NULLS = {column.split()[0]: None for column in LEDGER_SCHEMA.split(", ")}

_TEXT = "value"
_BLOCK = "_block_start"
_ROW_ID = "_row_id"
_SPLIT_ROWS = "_split_rows"
_FIRST_ROW_ID = "_first_row_id"


def read_lines(
    spark: SparkSession,
    paths: Sequence[str],
    counts: dict[str, int] | None = None,
    first_lines: dict[str, str] | None = None,
) -> DataFrame:
    """Every line of ``paths``: ``source_file``, exact 1-based ``line_number``, ``value`` (the text).

    Two scans of the files, both in the JVM. The first counts the rows of each file split
    (a few rows reach the driver); the second numbers every row with an offset looked up by
    its row id in a balanced tree of comparisons over the splits' first row ids. ``counts``, if
    given, is filled with each file's number of lines (by ``source_file``) from the first scan,
    and ``first_lines`` with each non-empty file's first line (its header, for a format with
    one): the first row of the file's first split, so no file is opened one by one.
    """
    from pyspark.sql import functions as F

    scan = spark.read.text(list(paths)).select(
        F.col(_TEXT),
        F.col("_metadata.file_path").alias(SOURCE_FILE_COL),
        F.col("_metadata.file_block_start").alias(_BLOCK),
        F.monotonically_increasing_id().alias(_ROW_ID),
    )
    aggregates = [F.count(F.lit(1)).alias(_SPLIT_ROWS), F.min(_ROW_ID).alias(_FIRST_ROW_ID)]
    if first_lines is not None:
        aggregates.append(F.min_by(_TEXT, _ROW_ID).alias(_TEXT))
    splits = scan.groupBy(SOURCE_FILE_COL, _BLOCK).agg(*aggregates).collect()
    # line = lines in the file's earlier splits + (row id - the split's first row id) + 1
    offsets: list[tuple[int, int]] = []
    lines_before: dict[str, int] = {}
    for split in sorted(splits, key=lambda s: (s[SOURCE_FILE_COL], s[_BLOCK])):
        before = lines_before.get(split[SOURCE_FILE_COL], 0)
        offsets.append((split[_FIRST_ROW_ID], before - split[_FIRST_ROW_ID] + 1))
        lines_before[split[SOURCE_FILE_COL]] = before + split[_SPLIT_ROWS]
        if first_lines is not None and before == 0:
            first_lines[split[SOURCE_FILE_COL]] = split[_TEXT]
    offsets.sort()
    if counts is not None:
        counts.update(lines_before)
    return scan.select(
        SOURCE_FILE_COL,
        (F.col(_ROW_ID) + F.expr(_offset_lookup(_ROW_ID, offsets))).alias(LINE_NUMBER_COL),
        F.col(_TEXT),
    )


def _offset_lookup(row_id: str, offsets: Sequence[tuple[int, int]]) -> str:
    """SQL: the offset of the split whose first row id is the greatest <= ``row_id`` (splits sorted).

    One nested CASE built as text and parsed once (a Column per node would cost a JVM call
    each: seconds for a night of a hundred small drops).
    """
    if not offsets:
        return "CAST(0 AS BIGINT)"
    if len(offsets) == 1:
        return f"CAST({offsets[0][1]} AS BIGINT)"
    middle = len(offsets) // 2
    return (
        f"CASE WHEN {row_id} < {offsets[middle][0]} THEN {_offset_lookup(row_id, offsets[:middle])} "
        f"ELSE {_offset_lookup(row_id, offsets[middle:])} END"
    )


def normalise_header(text: str) -> str:
    """A header line as compared with the format's: no byte-order mark, no surrounding blanks."""
    return text.removeprefix("\ufeff").strip()


def _integer(field: Column) -> Column:
    return field.try_cast("bigint")


def _finite(value: Column) -> Column:
    from pyspark.sql import functions as F

    return value.isNotNull() & ~F.isnan(value) & (F.abs(value) < F.lit(float("inf")))


def _whole_seconds(field: Column) -> Column:
    """Integral seconds: ``881250949`` or ``881250949.0`` (RecBole writes timestamps as floats)."""
    from pyspark.sql import functions as F

    as_double = field.try_cast("double")
    integral = (
        _finite(as_double) & (as_double == F.floor(as_double)) & (F.abs(as_double) < float(MAX_ABS_SECONDS))
    )
    return F.coalesce(_integer(field), F.when(integral, as_double.cast("bigint")))


def parse_lines(lines: DataFrame, fmt: RatingsFormat, headers: dict[str, str] | None = None) -> DataFrame:
    """Lines (``source_file``, ``line_number``, ``value``) -> bronze rows (without run_date).

    For a format with a header, line 1 of each file is dropped from the data and its text
    (normalised) becomes ``source_header`` on that file's rows; ``headers`` maps file -> first
    line, as :func:`read_lines` gives it (``first_lines``).
    """
    from pyspark.sql import functions as F

    texts = {file: normalise_header(text) for file, text in (headers or {}).items()}
    lines = with_file_values(lines, "_header", "string", texts if fmt.header is not None else {})
    if fmt.header is not None:
        lines = lines.where(F.col(LINE_NUMBER_COL) > fmt.n_header_lines)
    # Staged projections: each intermediate (the split, each field, each cast) is computed
    # once per line, not once per use.
    kept = (SOURCE_FILE_COL, LINE_NUMBER_COL, _TEXT, "_header")
    split = lines.select(*kept, F.split(_TEXT, re.escape(fmt.separator), -1).alias("_fields"))
    raw_fields = [f"_f{i}" for i in range(len(RATINGS_COLUMNS))]
    fields = split.select(
        *kept,
        F.size("_fields").alias("_n_fields"),
        # no trim: casts from strings ignore surrounding blanks themselves
        *[F.get(F.col("_fields"), i).alias(name) for i, name in enumerate(raw_fields)],
    )
    typed = fields.select(
        *kept,
        "_n_fields",
        *raw_fields,  # for the reasons of lines that fail
        _integer(F.col("_f0")).alias(USER_COL),
        _integer(F.col("_f1")).alias(ITEM_COL),
        F.col("_f2").try_cast("double").alias(RATING_COL),
        _whole_seconds(F.col("_f3")).alias(TIMESTAMP_COL),
    )
    text = F.col(_TEXT)
    parsed_ok = (
        (F.col("_n_fields") == len(RATINGS_COLUMNS))
        & F.col(USER_COL).isNotNull()
        & F.col(ITEM_COL).isNotNull()
        & _finite(F.col(RATING_COL))
        & F.col(TIMESTAMP_COL).isNotNull()
    )
    # Cheapest tests first for the common, valid line; the rest run only on lines that failed,
    # field by field in file order, so the reason names the first field at fault.
    error = (
        F.when(~F.is_valid_utf8(text) | text.contains("\ufffd"), F.lit(BAD_ENCODING))
        .when(parsed_ok, F.lit(None))
        .when(text.rlike(r"^\s*$"), F.lit(EMPTY_LINE))
        .when(F.col("_n_fields") != len(RATINGS_COLUMNS), F.lit(WRONG_FIELD_COUNT))
    )
    for i, column in enumerate(RATINGS_COLUMNS):
        error = error.when(F.col(raw_fields[i]).rlike(r"^\s*$"), F.lit(missing(column)))
    for i, column in enumerate(_ID_COLUMNS):
        integral = F.col(raw_fields[i]).rlike(r"^\s*[+-]?[0-9]+\s*$")
        error = error.when(F.col(column).isNull() & integral, F.lit(out_of_range(column))).when(
            F.col(column).isNull(), F.lit(non_integer(column))
        )
    error = error.when(~_finite(F.col(RATING_COL)), F.lit(UNPARSEABLE_RATING)).otherwise(
        F.lit(UNPARSEABLE_TIMESTAMP)
    )
    checked = typed.select(
        SOURCE_FILE_COL,
        LINE_NUMBER_COL,
        F.make_valid_utf8(text).alias(RAW_COL),
        F.col("_header").alias(SOURCE_HEADER_COL),
        *RATINGS_COLUMNS,
        error.cast("string").alias(PARSE_ERROR_COL),
    )
    failed = F.col(PARSE_ERROR_COL).isNotNull()
    return checked.select(
        SOURCE_FILE_COL,
        LINE_NUMBER_COL,
        RAW_COL,
        SOURCE_HEADER_COL,
        *[F.when(~failed, F.col(c)).alias(c) for c in RATINGS_COLUMNS],
        PARSE_ERROR_COL,
    )


def with_file_values(frame: DataFrame, column: str, type_name: str, values: dict[str, Any]) -> DataFrame:
    """``frame`` with ``column``: the value of its row's ``source_file`` in ``values`` (null if absent).

    A literal when every file has the same value, else one broadcast hash lookup per row (a
    literal map, or a regex on the path, costs a scan or a match per row: minutes on 25M lines).
    """
    from pyspark.sql import functions as F

    distinct = set(values.values())
    if len(distinct) <= 1:
        value = next(iter(distinct)) if distinct else None
        return frame.withColumn(column, F.lit(value).cast(type_name))
    lookup = frame.sparkSession.createDataFrame(
        sorted(values.items()), f"{SOURCE_FILE_COL} string, {column} {type_name}"
    )
    return frame.join(F.broadcast(lookup), SOURCE_FILE_COL, "left")


def expected_header(fmt: RatingsFormat) -> str | None:
    """The header line a file of ``fmt`` must start with, as :func:`normalise_header` leaves it."""
    return None if fmt.header is None else fmt.separator.join(fmt.header)


def quarantine_rows(bronze: DataFrame, reason: Column, stage: str) -> DataFrame:
    """Bronze rows -> quarantine rows with ``reason`` (rows where it is null are not quarantined)."""
    from pyspark.sql import functions as F

    return (
        bronze.withColumn(REASON_COL, reason)
        .where(F.col(REASON_COL).isNotNull())
        .withColumn(STAGE_COL, F.lit(stage))
        .select(*QUARANTINE_COLUMNS)
    )


def publish_quarantine(
    quarantine: DataFrame, ctx: RunContext, stage: str, drops: Sequence[dt.date], empty: bool = False
) -> None:
    """Replace the ``stage`` slice of ``drops`` in ratings_quarantine with ``quarantine``.

    ``empty``: the caller knows ``quarantine`` has no rows; then nothing is written when the
    table exists and no earlier attempt left rows in the slice (the usual night: no commit, no
    Spark job).
    """
    from recsys.delta import open_delta

    where = {DROP_DATE_COL: list(drops), STAGE_COL: stage}
    path = ctx.table("ratings_quarantine")
    if empty and open_delta(path) is not None and not holds_slice(path, where):
        log.info("quarantine: nothing for stage %s of %d drop(s), none held before", stage, len(drops))
        return
    publish(quarantine.select(*QUARANTINE_COLUMNS), ctx, "ratings_quarantine", where)


def drop_month(day: dt.date) -> dt.date:
    """The ``drop_month`` partition of a drop date: the first day of its month."""
    return day.replace(day=1)


def drop_slice(drops: Sequence[dt.date]) -> dict[str, list[dt.date]]:
    """The bronze slice of ``drops``: their months (partition pruning) and their dates."""
    return {DROP_MONTH_COL: sorted({drop_month(d) for d in drops}), DROP_DATE_COL: sorted(drops)}


def read_bronze(
    spark: SparkSession, ctx: RunContext, drops: Sequence[dt.date], version: int | None = None
) -> DataFrame:
    """The bronze rows of ``drops``: their month partitions, then their dates (files skipped by
    their ``drop_date`` statistics); as of the table's ``version`` when given (time travel)."""
    from pyspark.sql import functions as F

    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    bronze = reader.load(ctx.table("ratings_bronze"))
    for column, values in drop_slice(drops).items():
        bronze = bronze.where(F.col(column).isin(values))
    return bronze


def parse_errors(path: str, drops: Sequence[dt.date]) -> int | None:
    """At least the bronze rows of ``drops`` with a parse error, from the files' statistics in the
    Delta log (no data read): the parse errors of every file of their months whose ``drop_date``
    range meets one of them. A file shared with other drops of the month counts theirs too, so 0
    means none; None when a file lacks the statistics."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from recsys.delta import open_delta

    table = open_delta(path)
    if table is None or not drops:
        return 0
    files = pa.table(table.get_add_actions(flatten=True))
    needed = ["num_records", f"null_count.{PARSE_ERROR_COL}", f"min.{DROP_DATE_COL}", f"max.{DROP_DATE_COL}"]
    if files.num_rows == 0:
        return 0
    if any(name not in files.column_names for name in needed):
        return None
    months = pa.array(drop_slice(drops)[DROP_MONTH_COL], pa.date32())
    files = files.filter(pc.is_in(files[f"partition.{DROP_MONTH_COL}"], months))
    if any(files[name].null_count for name in needed):
        return None
    errors = 0
    for row in files.select(needed).to_pylist():
        low, high = row[f"min.{DROP_DATE_COL}"], row[f"max.{DROP_DATE_COL}"]
        if any(low <= d <= high for d in drops):
            errors += row["num_records"] - row[f"null_count.{PARSE_ERROR_COL}"]
    return errors


# ------------------------------------------------------------------ landing zone and ledger


@dataclass(frozen=True)
class LandedFile:
    """One file in the landing zone, as listed."""

    drop_date: dt.date
    uri: str
    size: int
    modified_ms: int

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class DropPlan:
    """A drop this night ingests: its files, why (new, changed, retry), and its files' checksums."""

    drop_date: dt.date
    files: list[LandedFile]
    reason: str
    checksums: dict[str, str] = field(default_factory=dict)
    previous: dict[str, str] = field(default_factory=dict)


def landing_uri(ctx: RunContext) -> str:
    return ctx.lake_uri(ctx.config.pipeline.landing_dir)


def list_landing(spark: SparkSession, ctx: RunContext) -> dict[dt.date, list[LandedFile]]:
    """The files of every drop dated <= the run date, by drop date (names starting '.' or '_' skipped)."""
    from spark_jobs.common import dated_folders, hadoop_path

    fs, _ = hadoop_path(spark, landing_uri(ctx))
    drops: dict[dt.date, list[LandedFile]] = {}
    for drop_date, folder in dated_folders(spark, landing_uri(ctx)):
        if drop_date > ctx.run_date:
            continue
        files = [
            LandedFile(
                drop_date,
                status.getPath().toString(),
                int(status.getLen()),
                int(status.getModificationTime()),
            )
            for status in fs.listStatus(folder.getPath())
            if status.isFile() and not status.getPath().getName().startswith((".", "_"))
        ]
        if files:
            drops[drop_date] = sorted(files, key=lambda f: f.uri)
    return dict(sorted(drops.items()))


def sha256(spark: SparkSession, uri: str) -> str:
    """Hex SHA-256 of the file at ``uri``, streamed in the JVM (commons-codec ships with Spark)."""
    from spark_jobs.common import hadoop_path

    fs, path = hadoop_path(spark, uri)
    stream = fs.open(path)
    try:
        return spark.sparkContext._jvm.org.apache.commons.codec.digest.DigestUtils.sha256Hex(stream)
    finally:
        stream.close()


def checksums(spark: SparkSession, uris: Sequence[str]) -> dict[str, str]:
    """:func:`sha256` of each file, several at a time (each is JVM calls and a read: a night of a
    hundred small drops would otherwise wait on them one by one)."""
    from concurrent.futures import ThreadPoolExecutor

    if len(uris) <= 1:
        return {uri: sha256(spark, uri) for uri in uris}
    with ThreadPoolExecutor(max_workers=min(8, len(uris)), thread_name_prefix="sha256") as pool:
        return dict(zip(uris, pool.map(lambda uri: sha256(spark, uri), uris), strict=True))


def read_ledger(ctx: RunContext) -> dict[dt.date, list[dict]]:
    """The ingest ledger's rows by drop date (empty when the lake has none yet)."""
    ledger: dict[dt.date, list[dict]] = {}
    for row in read_small_table(ctx.table("ingest_ledger")):
        # a ledger written before a column was added reads it as null
        ledger.setdefault(row[DROP_DATE_COL], []).append({**_LEDGER_NULLS, **row})
    return ledger


def write_ledger(ctx: RunContext, rows: Sequence[dict]) -> None:
    """Replace the ledger rows of every drop that ``rows`` mention (one Delta commit, no Spark job)."""
    if not rows:
        return
    publish_rows(
        ctx, "ingest_ledger", rows, LEDGER_SCHEMA, {DROP_DATE_COL: sorted({r[DROP_DATE_COL] for r in rows})}
    )


def set_status(ctx: RunContext, drops: Sequence[dt.date], status: str, **fields: Any) -> None:
    """Move ``drops`` to ``status`` in the ledger, stamped with this night and run id (and ``fields``)."""
    ledger = read_ledger(ctx)
    rows = [
        {**row, "status": status, "night": ctx.run_date, "run_id": ctx.run_id, **fields}
        for drop in drops
        for row in ledger.get(drop, [])
    ]
    write_ledger(ctx, rows)


def ledger_rows(ctx: RunContext, drops: Sequence[dt.date]) -> dict[dt.date, int]:
    """Data rows per drop as ingest counted them on the landed files' lines (the ledger)."""
    ledger = read_ledger(ctx)
    return {drop: sum(int(row["rows"]) for row in ledger.get(drop, [])) for drop in drops}


def drops_with_status(ctx: RunContext, status: str) -> list[dt.date]:
    """Drops dated <= the run date whose ledger status is ``status``, in date order."""
    return sorted(
        drop
        for drop, rows in read_ledger(ctx).items()
        if drop <= ctx.run_date and all(row["status"] == status for row in rows)
    )


def plan_drops(spark: SparkSession, ctx: RunContext) -> list[DropPlan]:
    """Which landed drops this night must ingest, and why; refreshes the ledger of touched-but-equal files.

    A drop is ingested when the ledger does not hold it (``new``), when its gate has not passed
    (``retry``: its files may have been fixed), or when its files differ from the ledger's
    (``changed``). Size and modification time decide whether to look closer; the checksum decides.
    """
    landed = list_landing(spark, ctx)
    ledger = read_ledger(ctx)
    plans, refreshed = [], []
    for drop_date, files in landed.items():
        held = {row["file"]: row for row in ledger.get(drop_date, [])}
        if not held:
            plans.append(DropPlan(drop_date, files, "new"))
            continue
        if any(row["status"] == INGESTED for row in held.values()):
            plans.append(
                DropPlan(drop_date, files, "retry", previous={u: r["sha256"] for u, r in held.items()})
            )
            continue
        same_listing = set(held) == {f.uri for f in files} and all(
            held[f.uri]["size"] == f.size and held[f.uri]["modified_ms"] == f.modified_ms for f in files
        )
        if same_listing:
            continue
        now = checksums(spark, [f.uri for f in files])
        previous = {uri: row["sha256"] for uri, row in held.items()}
        if now == previous:
            # touched, not changed: remember the new times so tomorrow needs no checksum
            by_uri = {f.uri: f for f in files}
            refreshed += [{**row, "modified_ms": by_uri[uri].modified_ms} for uri, row in held.items()]
            continue
        log.warning(
            "drop %s changed since it was ingested (files %s): re-ingesting it",
            drop_date,
            sorted(uri for uri in set(now) | set(previous) if now.get(uri) != previous.get(uri)),
        )
        plans.append(DropPlan(drop_date, files, "changed", now, previous))
    write_ledger(ctx, refreshed)
    return plans


def land_input(spark: SparkSession, ctx: RunContext, paths: Sequence[str], format_name: str) -> list[str]:
    """Copy ``paths`` into the landing zone as (part of) the drop of the run date; idempotent.

    A file keeps its name when that name tells its format (``format_for``), else it is named
    after the format. Each copy goes to a hidden temporary name and is renamed into place; a
    landed file with the same checksum is left as it is.
    """
    from recsys.datasets.formats import format_for
    from spark_jobs.common import hadoop_path

    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    drop_dir = f"{landing_uri(ctx).rstrip('/')}/{ctx.run_date.isoformat()}"
    landed = []
    for source in paths:
        name = source.rstrip("/").rsplit("/", 1)[-1]
        try:
            keeps_name = format_for(name).name == format_name
        except ValueError:
            keeps_name = False
        target = f"{drop_dir}/{name if keeps_name else CANONICAL_NAMES[format_name]}"
        fs, target_path = hadoop_path(spark, target)
        source_fs, source_path = hadoop_path(spark, source)
        if fs.exists(target_path) and sha256(spark, target) == sha256(spark, source):
            landed.append(target)
            continue
        temporary = jvm.org.apache.hadoop.fs.Path(f"{drop_dir}/.{target.rsplit('/', 1)[-1]}.landing")
        jvm.org.apache.hadoop.fs.FileUtil.copy(source_fs, source_path, fs, temporary, False, True, conf)
        fs.delete(target_path, False)
        if not fs.rename(temporary, target_path):
            raise OSError(f"could not move {temporary} to {target}")
        log.info("landed %s as %s", source, target)
        landed.append(target)
    return landed


#: The file name a landed file of each format gets when its own name does not tell the format.
CANONICAL_NAMES = {
    "u.data": "u.data",
    "ratings.dat": "ratings.dat",
    "ratings.csv": "ratings.csv",
    "recbole-inter": "ratings.inter",
}


@dataclass
class IngestResult:
    """What one night ingested: the drops (date -> new | changed | retry) and the bronze table."""

    path: str
    drops: dict[dt.date, str]


def ingest_drops(spark: SparkSession, ctx: RunContext, plans: Sequence[DropPlan]) -> None:
    """Parse every file of ``plans`` in one pass and replace those drops in bronze and quarantine."""
    from pyspark.sql import functions as F

    from recsys.datasets.formats import format_for

    drops = [plan.drop_date for plan in plans]
    formats: dict[str, str] = {}  # file URI -> format name
    for plan in plans:
        for file in plan.files:
            try:
                formats[file.uri] = format_for(file.name).name
            except ValueError as exc:
                raise ValueError(f"{file.uri}: {exc}; landed files are named like their format") from None
    check_landed(spark, ctx, formats)
    scanned = scanned_uris(spark, list(formats))
    # First lines by scanned URI (the key of parse_lines and of the scan's source_file column),
    # of the files whose format has a header.
    headers: dict[str, str] = {}
    parts = []
    # Bronze rows per file: its lines less the header lines parse_lines drops (exact, from the
    # line-numbering scan, so no scan of the published rows is needed).
    rows: dict[str, int] = {}
    for name in sorted(set(formats.values())):
        uris = [uri for uri, fmt in formats.items() if fmt == name]
        lines: dict[str, int] = {}
        own: dict[str, str] = {}
        read = read_lines(spark, uris, lines, own if FORMATS[name].header is not None else None)
        headers.update(own)
        parts.append(parse_lines(read, FORMATS[name], own))
        rows.update({file: max(n - FORMATS[name].n_header_lines, 0) for file, n in lines.items()})
    bronze = parts[0]
    for part in parts[1:]:
        bronze = bronze.unionByName(part)
    dates = {scanned[file.uri]: plan.drop_date for plan in plans for file in plan.files}
    bronze = with_file_values(bronze, DROP_DATE_COL, "date", dates)
    bronze = bronze.withColumn(DROP_MONTH_COL, F.trunc(DROP_DATE_COL, "month")).select(*BRONZE_COLUMNS)
    path = publish(bronze, ctx, "ratings_bronze", drop_slice(drops))
    # Read back (row groups without parse errors are skipped by their null counts) rather
    # than parse the text a second time; not even that when the files' statistics say no line
    # failed to parse.
    published = read_bronze(spark, ctx, drops)
    empty = parse_errors(path, drops) == 0
    publish_quarantine(quarantine_rows(published, F.col(PARSE_ERROR_COL), STAGE), ctx, STAGE, drops, empty)
    known = {uri: digest for plan in plans for uri, digest in plan.checksums.items()}
    known.update(checksums(spark, [uri for uri in formats if uri not in known]))
    ledger = []
    for plan in plans:
        for file in plan.files:
            header = headers.get(scanned[file.uri])
            ledger.append(
                {
                    DROP_DATE_COL: plan.drop_date,
                    "file": file.uri,
                    "format": formats[file.uri],
                    "size": file.size,
                    "modified_ms": file.modified_ms,
                    "sha256": known[file.uri],
                    "header": None if header is None else normalise_header(header),
                    "rows": int(rows.get(scanned[file.uri], 0)),
                    "status": INGESTED,
                    "changed": plan.reason == "changed",
                    "previous_sha256": plan.previous.get(file.uri),
                    "night": ctx.run_date,
                    "run_id": ctx.run_id,
                    "gated_version": None,
                }
            )
    write_ledger(ctx, ledger)


def head_bytes(spark: SparkSession, uri: str, n: int) -> bytes:
    """The first ``n`` bytes (fewer for a shorter file) of the file at ``uri``."""
    from spark_jobs.common import hadoop_path

    fs, path = hadoop_path(spark, uri)
    stream = fs.open(path)
    try:
        return bytes(stream.readNBytes(n))  # one JVM call; py4j hands a byte[] back as bytes
    finally:
        stream.close()


def check_landed(spark: SparkSession, ctx: RunContext, formats: dict[str, str]) -> None:
    """Refuse, before anything is written, a landed file that is compressed under a text name or
    whose format only datasets of another rating scale come in (:func:`recsys.datasets.check_format`)."""
    from recsys.datasets import check_format
    from recsys.datasets.formats import MAGIC_BYTES, compressed_file_error

    for uri, format_name in formats.items():
        problem = compressed_file_error(uri, head_bytes(spark, uri, MAGIC_BYTES))
        if problem is not None:
            raise ValueError(problem)
        check_format(ctx.config, format_name, uri)


def scanned_uris(spark: SparkSession, uris: Sequence[str]) -> dict[str, str]:
    """Each file URI as Spark's scan names it (``_metadata.file_path``: qualified, e.g. ``file:/...``).

    The files are on one file system (the landing zone's), looked up once.
    """
    from spark_jobs.common import hadoop_path

    if not uris:
        return {}
    fs, _ = hadoop_path(spark, uris[0])
    path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path
    return {uri: fs.makeQualified(path(uri)).toUri().toString() for uri in uris}


def run(
    spark: SparkSession, ctx: RunContext, paths: Sequence[str] | None = None, format_name: str | None = None
) -> IngestResult:
    """Ingest this night's drops (see the module docstring); ``paths`` land first, as the run date's drop."""
    if paths:
        if format_name is None:
            raise ValueError("format_name is required with paths")
        land_input(spark, ctx, paths, format_name)
    plans = plan_drops(spark, ctx)
    if plans:
        ingest_drops(spark, ctx, plans)
        log.info(
            "ingested %d drops for %s: %s",
            len(plans),
            ctx.run_date,
            ", ".join(f"{p.drop_date} ({p.reason})" for p in plans[:10])
            + (" ..." if len(plans) > 10 else ""),
        )
    else:
        log.info("no new drops up to %s in %s", ctx.run_date, landing_uri(ctx))
    return IngestResult(ctx.table("ratings_bronze"), {plan.drop_date: plan.reason for plan in plans})


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    parser = job_parser("ingest the landing zone's new drops (up to the run date) into ratings_bronze")
    add_input_arguments(parser)
    args = parser.parse_args(argv)
    ctx = context_from_args(args)
    inputs = inputs_from_args(parser, args, ctx.config)
    run(build_spark(ctx.config, app_name="ingest"), ctx, *(inputs or (None, None)))


if __name__ == "__main__":
    main()

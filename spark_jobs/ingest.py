"""Ingest: raw ratings files -> ``ratings_bronze`` (every line as read) + parse errors to quarantine.

Every data line of the input becomes one bronze row with its source file, its exact 1-based
line number, its text, the typed fields (null when the line cannot be parsed) and, for lines
that cannot be parsed, the kind of error. Lines are never dropped: the unparseable ones are
also copied to ``ratings_quarantine`` (stage ``ingest``) with their text and the reason.

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
``non_numeric_id``     user_id or item_id is not an integer
``unparseable_rating``   rating is not a finite number
``unparseable_timestamp``  timestamp is not a whole number of seconds
=====================  ==========================================================

For formats with a header (``ratings.csv``, ``recbole-inter``) the first line of each file is
the header, not data: it is kept on every row of its file as ``source_header`` so the gate can
stop the run when the columns drift (renamed, reordered, added).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from recsys.datasets.formats import FORMATS, RatingsFormat
from recsys.delta import with_run_date
from spark_jobs.columns import (
    ITEM_COL,
    LINE_NUMBER_COL,
    PARSE_ERROR_COL,
    RATING_COL,
    RATINGS_COLUMNS,
    RAW_COL,
    REASON_COL,
    RUN_DATE_COL,
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
    inputs_from_args,
    job_parser,
    publish,
    write_json,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

STAGE = "ingest"
# What the run ingested (format, files, headers): <validation_dir>/<run_date>/ingest_manifest.json
MANIFEST = "ingest_manifest"
BAD_ENCODING = "bad_encoding"
EMPTY_LINE = "empty_line"
WRONG_FIELD_COUNT = "wrong_field_count"
NON_NUMERIC_ID = "non_numeric_id"
UNPARSEABLE_RATING = "unparseable_rating"
UNPARSEABLE_TIMESTAMP = "unparseable_timestamp"
PARSE_ERRORS = (
    BAD_ENCODING,
    EMPTY_LINE,
    WRONG_FIELD_COUNT,
    NON_NUMERIC_ID,
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
    RUN_DATE_COL,
)
QUARANTINE_COLUMNS = (SOURCE_FILE_COL, LINE_NUMBER_COL, RAW_COL, REASON_COL, RUN_DATE_COL, STAGE_COL)

_TEXT = "value"
_BLOCK = "_block_start"
_ROW_ID = "_row_id"
_SPLIT_ROWS = "_split_rows"
_FIRST_ROW_ID = "_first_row_id"
# Whole seconds beyond this are not timestamps (and would overflow a long).
_MAX_ABS_SECONDS = float(2**53)


def read_lines(spark: SparkSession, paths: Sequence[str]) -> DataFrame:
    """Every line of ``paths``: ``source_file``, exact 1-based ``line_number``, ``value`` (the text).

    Two scans of the files, both in the JVM. The first counts the rows of each file split
    (a few rows reach the driver); the second numbers every row with an offset looked up by
    its row id in a balanced tree of comparisons over the splits' first row ids.
    """
    from pyspark.sql import functions as F

    scan = spark.read.text(list(paths)).select(
        F.col(_TEXT),
        F.col("_metadata.file_path").alias(SOURCE_FILE_COL),
        F.col("_metadata.file_block_start").alias(_BLOCK),
        F.monotonically_increasing_id().alias(_ROW_ID),
    )
    splits = (
        scan.groupBy(SOURCE_FILE_COL, _BLOCK)
        .agg(F.count(F.lit(1)).alias(_SPLIT_ROWS), F.min(_ROW_ID).alias(_FIRST_ROW_ID))
        .collect()
    )
    # line = lines in the file's earlier splits + (row id - the split's first row id) + 1
    offsets: list[tuple[int, int]] = []
    lines_before: dict[str, int] = {}
    for split in sorted(splits, key=lambda s: (s[SOURCE_FILE_COL], s[_BLOCK])):
        before = lines_before.get(split[SOURCE_FILE_COL], 0)
        offsets.append((split[_FIRST_ROW_ID], before - split[_FIRST_ROW_ID] + 1))
        lines_before[split[SOURCE_FILE_COL]] = before + split[_SPLIT_ROWS]
    offsets.sort()
    return scan.select(
        SOURCE_FILE_COL,
        (F.col(_ROW_ID) + _offset_lookup(F.col(_ROW_ID), offsets)).alias(LINE_NUMBER_COL),
        F.col(_TEXT),
    )


def _offset_lookup(row_id: Column, offsets: Sequence[tuple[int, int]]) -> Column:
    """The offset of the split whose first row id is the greatest <= ``row_id`` (splits sorted)."""
    from pyspark.sql import functions as F

    if not offsets:
        return F.lit(0).cast("long")
    if len(offsets) == 1:
        return F.lit(offsets[0][1]).cast("long")
    middle = len(offsets) // 2
    return F.when(row_id < offsets[middle][0], _offset_lookup(row_id, offsets[:middle])).otherwise(
        _offset_lookup(row_id, offsets[middle:])
    )


def file_headers(spark: SparkSession, paths: Sequence[str]) -> dict[str, str]:
    """The first line of every file under ``paths``, by file URI (one tiny job per file)."""
    from pyspark.sql import functions as F

    headers = {}
    for file in spark.read.text(list(paths)).inputFiles():
        row = (
            spark.read.text(file)
            .where(F.col("_metadata.file_block_start") == 0)
            .select(F.col(_TEXT), F.col("_metadata.file_path").alias(SOURCE_FILE_COL))
            .limit(1)
            .first()
        )
        if row is not None:
            headers[row[SOURCE_FILE_COL]] = row[_TEXT]
    return headers


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
    integral = _finite(as_double) & (as_double == F.floor(as_double)) & (F.abs(as_double) < _MAX_ABS_SECONDS)
    return F.coalesce(_integer(field), F.when(integral, as_double.cast("bigint")))


def parse_lines(lines: DataFrame, fmt: RatingsFormat, headers: dict[str, str] | None = None) -> DataFrame:
    """Lines (``source_file``, ``line_number``, ``value``) -> bronze rows (without run_date).

    For a format with a header, line 1 of each file is dropped from the data and its text
    (normalised) becomes ``source_header`` on that file's rows; ``headers`` maps file -> first
    line, as :func:`file_headers` returns it.
    """
    from pyspark.sql import functions as F

    if fmt.header is None or not headers:
        header = F.lit(None).cast("string")
    elif len(headers) == 1:
        header = F.lit(normalise_header(next(iter(headers.values()))))
    else:
        by_file = sorted((file, normalise_header(text)) for file, text in headers.items())
        header = F.try_element_at(
            F.create_map(*[F.lit(x) for pair in by_file for x in pair]), F.col(SOURCE_FILE_COL)
        )
    if fmt.header is not None:
        lines = lines.where(F.col(LINE_NUMBER_COL) > fmt.n_header_lines)
    # Staged projections: each intermediate (the split, each field, each cast) is computed
    # once per line, not once per use.
    kept = (SOURCE_FILE_COL, LINE_NUMBER_COL, _TEXT)
    split = lines.select(*kept, F.split(_TEXT, re.escape(fmt.separator), -1).alias("_fields"))
    fields = split.select(
        *kept,
        F.size("_fields").alias("_n_fields"),
        # no trim: casts from strings ignore surrounding blanks themselves
        *[F.get(F.col("_fields"), i).alias(f"_f{i}") for i in range(len(RATINGS_COLUMNS))],
    )
    typed = fields.select(
        *kept,
        "_n_fields",
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
    # Cheapest tests first for the common, valid line; the rest run only on lines that failed.
    error = (
        F.when(~F.is_valid_utf8(text) | text.contains("\ufffd"), F.lit(BAD_ENCODING))
        .when(parsed_ok, F.lit(None))
        .when(text.rlike(r"^\s*$"), F.lit(EMPTY_LINE))
        .when(F.col("_n_fields") != len(RATINGS_COLUMNS), F.lit(WRONG_FIELD_COUNT))
        .when(F.col(USER_COL).isNull() | F.col(ITEM_COL).isNull(), F.lit(NON_NUMERIC_ID))
        .when(~_finite(F.col(RATING_COL)), F.lit(UNPARSEABLE_RATING))
        .otherwise(F.lit(UNPARSEABLE_TIMESTAMP))
    )
    checked = typed.select(
        SOURCE_FILE_COL,
        LINE_NUMBER_COL,
        F.make_valid_utf8(text).alias(RAW_COL),
        header.cast("string").alias(SOURCE_HEADER_COL),
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


def publish_quarantine(quarantine: DataFrame, ctx: RunContext, stage: str) -> None:
    publish(quarantine.select(*QUARANTINE_COLUMNS), ctx, "ratings_quarantine", {STAGE_COL: stage})


def run(spark: SparkSession, ctx: RunContext, paths: Sequence[str], format_name: str) -> str:
    """Publish this run's bronze partition from ``paths`` and quarantine its unparseable lines."""
    from pyspark.sql import functions as F

    from recsys.delta import read_partition

    fmt = FORMATS[format_name]
    headers = file_headers(spark, paths) if fmt.header is not None else None
    bronze = with_run_date(parse_lines(read_lines(spark, paths), fmt, headers), ctx.run_date)
    path = publish(bronze.select(*BRONZE_COLUMNS), ctx, "ratings_bronze")
    # Read back (row groups without parse errors are skipped by their null counts) rather
    # than parse the text a second time.
    published = read_partition(spark, path, ctx.run_date)
    publish_quarantine(quarantine_rows(published, F.col(PARSE_ERROR_COL), STAGE), ctx, STAGE)
    write_json(
        spark,
        f"{ctx.validation_uri(MANIFEST)}.json",
        {
            "run_date": ctx.run_date.isoformat(),
            "run_id": ctx.run_id,
            "format": format_name,
            "paths": [str(p) for p in paths],
            "headers": headers,
            "expected_header": expected_header(fmt),
        },
    )
    return path


def main(argv: list[str] | None = None) -> None:
    from recsys.spark import build_spark

    parser = job_parser("ingest raw ratings files into ratings_bronze for one run date")
    add_input_arguments(parser)
    args = parser.parse_args(argv)
    ctx = context_from_args(args)
    paths, format_name = inputs_from_args(parser, args, ctx)
    run(build_spark(ctx.config, app_name="ingest"), ctx, paths, format_name)


if __name__ == "__main__":
    main()

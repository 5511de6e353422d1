"""The gate: run a Great Expectations suite on a Spark DataFrame, and derive quarantine predicates from it.

One definition of valid. The suites in this folder are the source of truth. An expectation
whose ``meta.level`` is ``row`` also defines which rows are quarantined: :func:`row_predicates`
turns its configuration into a Spark column predicate that is true for exactly the rows GE
counts as unexpected (nulls are "missing", not unexpected, for every type but not-null, as in
GE). :func:`tag_rows` applies all of them in one pass of column expressions and names each
quarantined row after the first expectation it fails. GE then validates the tagged frame: row
expectations with a ``mostly`` that allows the configured quarantine share, batch expectations
(schema, quarantine ratio, row count) that must hold. A failed validation raises
:class:`GateError`, which names the failing expectations and their counts.

Engines. A large frame is validated by GE's Spark engine on the executors, never collected to
the driver. A frame of at most :data:`PANDAS_MAX_ROWS` rows (a night's few drops, or its changed
users' sequences) is collected through Arrow, only the columns the suite names, and validated
by GE's pandas engine: the Spark engine's cost is mostly per expectation and per metric (about
1.5-2 s of driver work per validation, whatever the rows), which a night's small batches would
otherwise pay three times. The suites name Spark types; on pandas each is the NumPy dtype that
Arrow gives it (``LongType`` -> int64, ...), with integer columns kept nullable, so both engines
judge the same values; a suite the pandas engine cannot judge alike (a type outside that map, a
check of the table's set of columns) stays on Spark. One difference remains: a floating-point NaN,
which Spark tells from a null, is a null on pandas (the gated frames hold none: ingest turns
non-finite values into parse errors). The ratings gate checks GE's counts against its own
predicates' either way.

Results of every validation are kept as JSON and as a Data Docs HTML page
(``<lake>/<pipeline.validation_dir>/<run_date>/<suite>.json|.html``).
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas
    from great_expectations.core import ExpectationSuiteValidationResult
    from pyspark.sql import Column, DataFrame

log = logging.getLogger(__name__)

SUITE_DIR = Path(__file__).resolve().parent
ROW = "row"
BATCH = "batch"
PARAMETER = "$PARAMETER"
DEFAULT_RESULT_FORMAT = "BASIC"
#: Spark frames of at most this many rows are validated on GE's pandas engine (see the module docstring).
PANDAS_MAX_ROWS = 500_000
#: A suite's Spark type names as the dtypes of :func:`to_pandas`'s columns (GE's pandas engine).
PANDAS_TYPES = {
    "LongType": "int64",
    "IntegerType": "int32",
    "ShortType": "int16",
    "ByteType": "int8",
    "DoubleType": "float64",
    "FloatType": "float32",
    "BooleanType": "bool",
    "StringType": "object",
}


class GateError(RuntimeError):
    """A batch failed its suite: the run stops before anything downstream is written."""

    def __init__(self, suite: str, message: str, failures: Sequence[Failure]) -> None:
        self.suite = suite
        self.failures = list(failures)
        super().__init__(message)


@dataclass(frozen=True)
class Expectation:
    """One expectation of a suite as configured in its JSON."""

    type: str
    kwargs: Mapping[str, Any]
    meta: Mapping[str, Any]

    @property
    def level(self) -> str:
        return self.meta.get("level", BATCH)

    @property
    def name(self) -> str:
        """``type(column)``, or ``meta.reason`` when set: the quarantine reason of a row expectation,
        and how errors name it."""
        if self.meta.get("reason"):
            return str(self.meta["reason"])
        columns = self.kwargs.get("column") or ",".join(self.kwargs.get("column_list", ()))
        return f"{self.type}({columns})" if columns else self.type


@dataclass(frozen=True)
class Suite:
    """A suite loaded from ``expectations/<name>.json``."""

    name: str
    config: Mapping[str, Any]

    @property
    def expectations(self) -> list[Expectation]:
        return [
            Expectation(e["type"], e.get("kwargs", {}), e.get("meta", {}))
            for e in self.config["expectations"]
        ]

    @property
    def row_expectations(self) -> list[Expectation]:
        return [e for e in self.expectations if e.level == ROW]


@dataclass(frozen=True)
class Failure:
    """A failed expectation, with what GE observed."""

    name: str
    level: str
    check: str
    observed: str
    unexpected_count: int | None


def load_suite(name: str, suite_dir: Path = SUITE_DIR) -> Suite:
    """Read ``<suite_dir>/<name>.json``; row-level expectations must be derivable to predicates."""
    path = suite_dir / f"{name}.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: no such expectation suite") from exc
    suite = Suite(config.get("name", name), config)
    for expectation in suite.expectations:
        if expectation.level not in (ROW, BATCH):
            raise ValueError(f"{path}: {expectation.name}: meta.level must be 'row' or 'batch'")
        if expectation.level == ROW and expectation.type not in _PREDICATES:
            raise ValueError(
                f"{path}: {expectation.name}: no row predicate for {expectation.type}; "
                f"row-level expectations may be {sorted(_PREDICATES)}"
            )
    return suite


# ---------------------------------------------------------------------- row predicates


def resolve(value: Any, parameters: Mapping[str, Any]) -> Any:
    """A kwarg with ``{"$PARAMETER": name}`` replaced by its value, as GE resolves it."""
    if isinstance(value, Mapping) and PARAMETER in value:
        name = value[PARAMETER]
        if name not in parameters:
            raise KeyError(f"suite parameter {name!r} has no value (given: {sorted(parameters)})")
        return parameters[name]
    return value


def _not_null(kwargs: Mapping[str, Any], parameters: Mapping[str, Any]) -> Column:
    from pyspark.sql import functions as F

    return F.col(kwargs["column"]).isNull()


def _between(kwargs: Mapping[str, Any], parameters: Mapping[str, Any]) -> Column:
    from pyspark.sql import functions as F

    column = F.col(kwargs["column"])
    low, high = resolve(kwargs.get("min_value"), parameters), resolve(kwargs.get("max_value"), parameters)
    inside = F.lit(True)
    if low is not None:
        inside = inside & (column > low if kwargs.get("strict_min") else column >= low)
    if high is not None:
        inside = inside & (column < high if kwargs.get("strict_max") else column <= high)
    return column.isNotNull() & ~inside


def _in_set(kwargs: Mapping[str, Any], parameters: Mapping[str, Any]) -> Column:
    from pyspark.sql import functions as F

    column = F.col(kwargs["column"])
    return column.isNotNull() & ~column.isin(list(resolve(kwargs["value_set"], parameters)))


_PREDICATES: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], Column]] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_between": _between,
    "expect_column_values_to_be_in_set": _in_set,
}


def row_predicates(suite: Suite, parameters: Mapping[str, Any]) -> list[tuple[str, Column]]:
    """(name, predicate true for the rows the expectation rejects), for every row expectation."""
    return [(e.name, _PREDICATES[e.type](e.kwargs, parameters)) for e in suite.row_expectations]


def tag_rows(
    df: DataFrame,
    suite: Suite,
    parameters: Mapping[str, Any],
    reason_col: str,
    quarantined_col: str,
    prior_reason_col: str | None = None,
) -> DataFrame:
    """Add the quarantine ``reason_col`` (null = clean) and a 0/1 ``quarantined_col``, in one pass.

    The reason is ``prior_reason_col`` when set (e.g. a parse error), else the name of the first
    row expectation, in suite order, that the row fails.
    """
    from pyspark.sql import functions as F

    reason = F.lit(None).cast("string")
    for name, predicate in reversed(row_predicates(suite, parameters)):
        reason = F.when(predicate, F.lit(name)).otherwise(reason)
    if prior_reason_col is not None:
        reason = F.coalesce(F.col(prior_reason_col), reason)
    return df.withColumn(reason_col, reason).withColumn(
        quarantined_col, F.col(reason_col).isNotNull().cast("int")
    )


# ---------------------------------------------------------------------------- validation


@functools.cache
def _context() -> Any:
    """One ephemeral GE context per process (each validation adds its own uniquely named parts)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    # Per-metric progress bars would interleave with the job's logs; the stage is timed instead.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def suite_columns(suite: Suite) -> list[str]:
    """The columns the suite's expectations name, in order of first mention."""
    names: list[str] = []
    for expectation in suite.expectations:
        kwargs = expectation.kwargs
        named = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
        for column in [*named, *kwargs.get("column_list", ())]:
            if column not in names:
                names.append(column)
    return names


def pandas_can_judge(suite: Suite) -> bool:
    """Whether GE's pandas engine judges ``suite`` as the Spark engine would on :func:`to_pandas`'s
    frame: no expectation on the table's set of columns (the frame holds only the named ones), and
    every type expectation names a type of :data:`PANDAS_TYPES`."""
    for expectation in suite.expectations:
        if expectation.type.startswith("expect_table_column"):
            return False
        if expectation.type == "expect_column_values_to_be_of_type" and (
            expectation.kwargs.get("type_") not in PANDAS_TYPES
        ):
            return False
    return True


def to_pandas(df: DataFrame, columns: Sequence[str]) -> pandas.DataFrame:
    """``df``'s ``columns`` collected through Arrow; integer columns as pandas' nullable integers
    (a null stays a null of an int64 column, as in Spark, not a NaN of a float64 one)."""
    import pandas as pd
    import pyarrow as pa

    nullable = {
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
    }
    # A column the frame lacks is left out: GE then fails its expectation, as on Spark.
    present = [c for c in columns if c in df.columns] or df.columns[:1]
    table = df.select(*present).toArrow()
    return table.to_pandas(types_mapper=nullable.get)


def collect_small(
    df: DataFrame, suite: Suite, extra: Sequence[str] = (), rows: int | None = None
) -> pandas.DataFrame | None:
    """``df`` as GE's pandas engine would judge it (:func:`to_pandas` of the suite's columns, and
    ``extra`` ones a caller counts on) when it holds at most :data:`PANDAS_MAX_ROWS` rows
    (``rows``, when known; else counted) and :func:`pandas_can_judge` the suite; else None.

    A caller that needs more than the validation from a small frame collects it once with this
    and hands the result to :func:`validate` with ``collected=True``.
    """
    if not pandas_can_judge(suite):
        return None
    rows = df.count() if rows is None else rows
    if rows > PANDAS_MAX_ROWS:
        return None
    log.debug("suite %s: %s rows, validated on GE's pandas engine", suite.name, f"{rows:,}")
    columns = suite_columns(suite)
    return to_pandas(df, [*columns, *(c for c in extra if c not in columns)])


def _on_pandas(expectations: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The suite's expectations with Spark type names replaced by :data:`PANDAS_TYPES`' dtypes."""
    out = []
    for expectation in expectations:
        expectation = dict(expectation)
        kwargs = expectation.get("kwargs", {})
        spark_type = kwargs.get("type_")
        if expectation["type"] == "expect_column_values_to_be_of_type" and spark_type in PANDAS_TYPES:
            expectation["kwargs"] = {**kwargs, "type_": PANDAS_TYPES[spark_type]}
        out.append(expectation)
    return out


def validate(
    df: DataFrame | pandas.DataFrame,
    suite: Suite,
    parameters: Mapping[str, Any],
    result_format: str | Mapping[str, Any] = DEFAULT_RESULT_FORMAT,
    rows: int | None = None,
    collected: bool = False,
) -> ExpectationSuiteValidationResult:
    """Validate ``df`` with GE 1.x (ephemeral context, whole-frame batch of a dataframe asset).

    ``df``: a Spark DataFrame, or a pandas one (for results that are small by construction, one
    row per drop). A Spark frame of at most :data:`PANDAS_MAX_ROWS` rows (``rows``, when the
    caller has counted them; else counted here, which materialises a persisted frame's cache)
    is validated on GE's pandas engine, the columns the suite names collected through Arrow,
    when :func:`pandas_can_judge` the suite (:func:`collect_small`). ``collected``: ``df`` is
    a pandas frame that :func:`collect_small` returned (its suite's Spark types are mapped).

    On a Spark frame, the examples of unexpected values (``partial_unexpected_list``) cost one
    Spark job per expectation. They are fetched only when some expectation found unexpected
    rows: a first run asks for none (Spark plans a zero-row limit as an empty relation, no job),
    and only if it reports unexpected rows or a failure does a second run ask for
    ``result_format``. A clean batch's result is then the same, at a fraction of the jobs.
    """
    import great_expectations as gx
    import pandas as pd

    context = _context()
    label = f"{suite.name}-{uuid.uuid4().hex[:8]}"
    expectations = [dict(e) for e in suite.config["expectations"]]
    if collected and not isinstance(df, pd.DataFrame):
        raise TypeError("collected=True takes the pandas frame collect_small returned, not a Spark frame")
    if not isinstance(df, pd.DataFrame):
        extra = (
            result_format.get("unexpected_index_column_names", ())
            if isinstance(result_format, Mapping)
            else ()
        )
        small = collect_small(df, suite, extra, rows)
        if small is not None:
            df, collected = small, True
    if collected:
        expectations = _on_pandas(expectations)
    if isinstance(df, pd.DataFrame):
        source = context.data_sources.add_pandas(name=label)
    else:
        # persist=False: callers hand in frames they have cached (or that are cheap to rescan);
        # GE's own cache would hold every column of the frame once more.
        source = context.data_sources.add_spark(name=label, persist=False)
    batch_definition = source.add_dataframe_asset(name=suite.name).add_batch_definition_whole_dataframe(
        suite.name
    )
    gx_suite = context.suites.add(
        gx.ExpectationSuite(
            name=label,
            expectations=expectations,
            meta=dict(suite.config.get("meta", {})),
        )
    )
    if len(gx_suite.expectations) != len(suite.config["expectations"]):
        known = {e.expectation_type for e in gx_suite.expectations}
        dropped = sorted({e["type"] for e in suite.config["expectations"]} - known)
        raise ValueError(f"suite {suite.name}: GE rejected expectation(s) {dropped or '(see log)'}")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=label, data=batch_definition, suite=gx_suite)
    )

    def run(fmt: str | Mapping[str, Any]) -> ExpectationSuiteValidationResult:
        return definition.run(
            batch_parameters={"dataframe": df}, expectation_parameters=dict(parameters), result_format=fmt
        )

    if isinstance(df, pd.DataFrame) or result_format != DEFAULT_RESULT_FORMAT:
        return run(result_format)
    counts_only = run({"result_format": DEFAULT_RESULT_FORMAT, "partial_unexpected_count": 0})
    if counts_only.success and not any(unexpected_counts(counts_only).values()):
        return counts_only
    return run(result_format)


def _describe_observed(result: Mapping[str, Any]) -> tuple[str, int | None]:
    if "unexpected_count" in result:
        count, total = result["unexpected_count"], result.get("element_count")
        sample = result.get("partial_unexpected_list") or []
        text = f"{count:,} of {total:,} rows unexpected" if total is not None else f"{count:,} unexpected"
        if sample:
            text += f", e.g. {sample[:5]!r}"
        return text, count
    return f"observed {result.get('observed_value')!r}", None


def failures(result: ExpectationSuiteValidationResult) -> list[Failure]:
    """The failed expectations of a validation, described."""
    found = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        expectation = Expectation(config.type, config.kwargs, config.meta or {})
        if item.exception_info and item.exception_info.get("raised_exception"):
            observed, count = f"raised {item.exception_info.get('exception_message')}", None
        else:
            observed, count = _describe_observed(item.result or {})
        bounds = {
            k: v for k, v in config.kwargs.items() if k in ("min_value", "max_value", "value_set", "mostly")
        }
        found.append(
            Failure(
                expectation.name,
                expectation.level,
                str(expectation.meta.get("check", "")),
                f"{observed}; expected {bounds}" if bounds else observed,
                count,
            )
        )
    return found


def failure_message(suite: Suite, where: str, found: Sequence[Failure], context: str = "") -> str:
    lines = [f"{suite.name} gate failed for {where}: {len(found)} expectation(s) failed"]
    for failure in found:
        check = f" [{failure.check}]" if failure.check else ""
        lines.append(f"  - {failure.name}{check}: {failure.observed}")
    if context:
        lines.append(context)
    return "\n".join(lines)


def check(result: ExpectationSuiteValidationResult, suite: Suite, where: str, context: str = "") -> None:
    """Raise :class:`GateError` naming every failing expectation and its counts."""
    if result.success:
        return
    found = failures(result)
    raise GateError(suite.name, failure_message(suite, where, found, context), found)


def unexpected_counts(result: ExpectationSuiteValidationResult) -> dict[str, int]:
    """GE's unexpected row count of every column-map expectation, by expectation name.

    On a batch of no rows GE may report the count as None: that is 0 rows unexpected. A None
    beside a positive row count is an error, not a zero.
    """
    counts = {}
    for item in result.results:
        config = item.expectation_config
        if item.result and "unexpected_count" in item.result:
            name = Expectation(config.type, config.kwargs, config.meta or {}).name
            count = item.result["unexpected_count"]
            if count is None and item.result.get("element_count"):
                raise ValueError(
                    f"{name}: GE reported no unexpected count on {item.result['element_count']:,} rows"
                )
            counts[name] = int(count or 0)
    return counts


def render_html(result: ExpectationSuiteValidationResult) -> str:
    """The Data Docs page of one validation result."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))


def result_json(result: ExpectationSuiteValidationResult) -> dict[str, Any]:
    return result.to_json_dict()

"""delta-rs writes of the small tables: one commit per slice, the run id in the history, slices by the log."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from recsys.config import load_config
from recsys.delta import arrow_schema, read_arrow, replace_where
from spark_jobs.common import RunContext, holds_slice, publish_rows, require_partitioning
from spark_jobs.ingest import parse_errors

D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
SCHEMA = "drop_date date, stage string, n long, reasons map<string,bigint>, drops array<string>, ok boolean"


def test_arrow_schema_reads_spark_ddl():
    schema = arrow_schema(SCHEMA + ", year int, score double")
    assert schema == pa.schema(
        [
            ("drop_date", pa.date32()),
            ("stage", pa.string()),
            ("n", pa.int64()),
            ("reasons", pa.map_(pa.string(), pa.int64())),
            ("drops", pa.list_(pa.string())),
            ("ok", pa.bool_()),
            ("year", pa.int32()),
            ("score", pa.float64()),
        ]
    )
    with pytest.raises(ValueError, match="unsupported type 'decimal'"):
        arrow_schema("x decimal")


def _rows(drop, stage, n):
    return {
        "drop_date": drop,
        "stage": stage,
        "n": n,
        "reasons": {"late": n},
        "drops": [str(drop)],
        "ok": True,
    }


def _ctx(tmp_path, run_id):
    config = load_config(profile="local", overrides=(f"lake.root={tmp_path / 'lake'}",))
    return RunContext.for_date(config, D2, run_id=run_id)


def test_publish_rows_replaces_its_slice_only_in_one_commit_per_run(tmp_path):
    first = _ctx(tmp_path, "run-1")
    where = lambda drops, stage: {"drop_date": drops, "stage": stage}  # noqa: E731
    path = publish_rows(
        first,
        "ratings_quarantine",
        [_rows(D1, "ingest", 1), _rows(D2, "ingest", 2)],
        SCHEMA,
        where([D1, D2], "ingest"),
    )
    publish_rows(first, "ratings_quarantine", [_rows(D2, "gate", 3)], SCHEMA, where([D2], "gate"))
    # a rerun of one slice replaces it, and nothing else
    publish_rows(
        _ctx(tmp_path, "run-2"),
        "ratings_quarantine",
        [_rows(D2, "ingest", 20)],
        SCHEMA,
        where([D2], "ingest"),
    )
    table = DeltaTable(path)
    rows = sorted((r["drop_date"], r["stage"], r["n"]) for r in read_arrow(table).to_pylist())
    assert rows == [(D1, "ingest", 1), (D2, "gate", 3), (D2, "ingest", 20)]
    assert table.metadata().partition_columns == ["drop_date", "stage"]
    history = sorted(table.history(), key=lambda h: h["version"])
    assert [h.get("userMetadata") for h in history] == ["run-1", "run-1", "run-2"]
    assert all(dict(r["reasons"]) == {"late": r["n"]} for r in read_arrow(table).to_pylist())

    assert holds_slice(path, {"drop_date": [D2], "stage": "gate"})
    assert not holds_slice(path, {"drop_date": [D1], "stage": "gate"})
    assert not holds_slice(str(tmp_path / "absent"), {"drop_date": [D1]})
    # rows outside the slice are refused, and the table is left as it was
    with pytest.raises(Exception, match=r"(?i)invalid data|validation"):
        publish_rows(first, "ratings_quarantine", [_rows(D1, "gate", 9)], SCHEMA, where([D2], "gate"))
    assert DeltaTable(path).version() == table.version()


def test_parse_errors_are_counted_from_the_files_statistics(tmp_path):
    path = str(tmp_path / "bronze")
    schema = pa.schema(
        [
            ("line_number", pa.int64()),
            ("parse_error", pa.string()),
            ("drop_date", pa.date32()),
            ("drop_month", pa.date32()),
        ]
    )
    d3, d4 = dt.date(2024, 1, 3), dt.date(2024, 2, 1)

    def write(drops: dict[dt.date, list[str | None]]) -> None:
        rows = pa.Table.from_pylist(
            [
                {"line_number": i, "parse_error": e, "drop_date": drop, "drop_month": drop.replace(day=1)}
                for drop, errors in drops.items()
                for i, e in enumerate(errors)
            ],
            schema=schema,
        )
        dates = ", ".join(f"DATE'{d}'" for d in drops)
        replace_where(path, rows, f"drop_date IN ({dates})", "run", ["drop_month"])

    write({D1: [None, "empty_line", None, "wrong_field_count"]})
    write({D2: [None, None]})
    write({d4: ["empty_line"]})
    assert parse_errors(path, [D1]) == 2
    assert parse_errors(path, [D2]) == 0
    assert parse_errors(path, [D1, D2]) == 2
    assert parse_errors(path, [d4]) == 1
    assert parse_errors(str(tmp_path / "absent"), [D1]) == 0
    # A file holding several drops of the month counts all of its errors: never fewer than a drop
    # holds, and 0 only when it holds none.
    write({D2: [None], d3: ["non_integer_user_id"]})
    assert parse_errors(path, [D2]) == 1
    assert parse_errors(path, [d3]) == 1
    assert parse_errors(path, [d4]) == 1


def test_a_table_partitioned_otherwise_is_refused_with_what_to_do(tmp_path):
    path = str(tmp_path / "ratings_bronze")
    rows = pa.Table.from_pylist(
        [{"drop_date": D1, "n": 1}], schema=pa.schema([("drop_date", pa.date32()), ("n", pa.int64())])
    )
    replace_where(path, rows, f"drop_date = DATE'{D1}'", "run", ["drop_date"])  # an earlier release's layout
    require_partitioning(path, "ratings_bronze", ["drop_date"])
    require_partitioning(str(tmp_path / "absent"), "ratings_bronze", ["drop_month"])
    with pytest.raises(ValueError, match=r"partitioned by \['drop_date'\].*\['drop_month'\].*rebuild"):
        require_partitioning(path, "ratings_bronze", ["drop_month"])

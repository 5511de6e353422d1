"""delta-rs reads through recsys.delta: the rows of a table, and a process that exits cleanly after them."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from recsys.delta import arrow_dataset, read_arrow

DAY_1, DAY_2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)


@pytest.fixture
def table_path(tmp_path):
    path = str(tmp_path / "ledger")
    for day, users in ((DAY_1, [1, 2, 2]), (DAY_2, [3])):
        rows = pa.table({"user_id": pa.array(users, pa.int64()), "valid_from": pa.array([day] * len(users))})
        write_deltalake(path, rows, mode="append", partition_by=["valid_from"])
    return path


def test_read_arrow_prunes_and_filters_like_delta_rs(table_path):
    table = DeltaTable(table_path)
    everything = read_arrow(table).sort_by("user_id")
    assert everything["user_id"].to_pylist() == [1, 2, 2, 3]
    assert everything["valid_from"].to_pylist() == [DAY_1, DAY_1, DAY_1, DAY_2]
    one_day = read_arrow(table, ["user_id"], [("valid_from", "in", [DAY_2])])
    assert one_day.column_names == ["user_id"] and one_day["user_id"].to_pylist() == [3]
    assert arrow_dataset(table, [("valid_from", "=", DAY_1)]).count_rows() == 3


def test_a_process_that_reads_a_small_table_exits_cleanly(tmp_path):
    """A table of 20 small files, like the ingest ledger after 20 commits.

    Read by delta-rs's own dataset (``to_pyarrow_table()``), a process that did only that aborted
    at exit (status 134) in 2 to 4 of every 8 runs here, so ten clean exits in a row are the test.
    """
    path = str(tmp_path / "ledger")
    for i in range(20):
        rows = pa.table({"user_id": pa.array([i, i + 1], pa.int64()), "file": pa.array([f"file-{i}"] * 2)})
        write_deltalake(path, rows, mode="append")
    child = (
        "import sys\n"
        "from deltalake import DeltaTable\n"
        "from recsys.delta import read_arrow\n"
        "assert read_arrow(DeltaTable(sys.argv[1])).num_rows == 40\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", child, path], capture_output=True, timeout=120)
        for _ in range(10)
    ]
    assert [r.returncode for r in runs] == [0] * 10, [r.stderr.decode()[-300:] for r in runs if r.returncode]

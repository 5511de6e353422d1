"""recsys.gates: a stage refuses a run date whose gate has not run, failed, or did not publish."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from recsys.gates import GateNotPassedError, check_summary, gated_version, summary_uri
from tests.conftest import config_with_lake

DAY = dt.date(2024, 1, 1)


def _write(config, summary) -> Path:
    path = Path(summary_uri(config, DAY, "sequences").removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))
    return path


def test_the_gated_version_is_read_from_a_passing_summary(tmp_path):
    config = config_with_lake(tmp_path / "lake")
    path = _write(config, {"success": True, "failed": [], "table_version": 7})
    assert path == tmp_path / "lake" / "_validation" / "2024-01-01" / "sequences.summary.json"
    assert gated_version(config, DAY, "sequences") == 7


RERUN = "run python -m spark_jobs.sequences --run-date 2024-01-01"


@pytest.mark.parametrize(
    ("summary", "parts"),
    [
        (
            None,
            [
                "the sequences gate has not run for 2024-01-01 (",
                "sequences.summary.json is missing); " + RERUN,
            ],
        ),
        (
            {"success": False, "failed": ["expect_x(a)"]},
            [
                "the sequences gate failed for 2024-01-01 (expect_x(a)); see ",
                "/sequences.json, fix the data and " + RERUN,
            ],
        ),
        (
            {"success": True, "failed": []},
            [
                "records no published table version (",
                "): the job stopped between its gate and its publish; " + RERUN,
            ],
        ),
    ],
    ids=["not-run", "failed", "not-published"],
)
def test_a_night_without_a_published_pass_is_refused_with_what_to_rerun(tmp_path, summary, parts):
    config = config_with_lake(tmp_path / "lake")
    if summary is not None:
        _write(config, summary)
    with pytest.raises(GateNotPassedError) as refused:
        gated_version(config, DAY, "sequences")
    message = str(refused.value)
    assert all(part in message for part in parts), message


def test_check_summary_accepts_a_pass_without_a_version():
    check_summary({"success": True}, "ratings", DAY, "x")  # the ratings gate publishes no table
    with pytest.raises(GateNotPassedError, match=r"run python -m spark_jobs\.validate --suite ratings"):
        check_summary({"success": False}, "ratings", DAY, "x")

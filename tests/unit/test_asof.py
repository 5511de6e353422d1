"""recsys.asof.as_of_arrow: each key's latest version as of a date, against a pandas reference."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys.asof import as_of_arrow, latest_rows

DAYS = [dt.date(2024, 3, d) for d in (1, 2, 3, 5, 8)]


def _versions(seed: int) -> pd.DataFrame:
    """A big first version of 300 (user, item) keys, then a few keys re-versioned or new each day."""
    rng = np.random.default_rng(seed)
    frames = [pd.DataFrame({"user_id": np.repeat(np.arange(30), 10), "item_id": np.tile(np.arange(10), 30)})]
    frames[0]["valid_from"] = DAYS[0]
    for day in DAYS[1:]:
        keys = pd.DataFrame({"user_id": rng.integers(0, 40, 25), "item_id": rng.integers(0, 12, 25)})
        frames.append(keys.drop_duplicates().assign(valid_from=day))
    versions = pd.concat(frames, ignore_index=True)
    versions["rating"] = rng.integers(1, 6, len(versions)).astype(float)
    return versions


def _reference(versions: pd.DataFrame, as_of: dt.date, keys: list[str]) -> pd.DataFrame:
    known = versions[versions["valid_from"] <= as_of]
    latest = known.groupby(keys)["valid_from"].transform("max")
    return known[known["valid_from"] == latest]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    columns = ["user_id", "item_id", "valid_from", "rating"]
    return frame[columns].sort_values(columns).reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_as_of_arrow_keeps_each_keys_latest_version_on_every_date(tmp_path, seed):
    from deltalake import write_deltalake

    versions = _versions(seed)
    path = str(tmp_path / "silver")
    for day in DAYS:  # one commit a night, as the pipeline writes them
        night = versions[versions["valid_from"] == day]
        write_deltalake(
            path,
            pa.Table.from_pandas(night, preserve_index=False),
            partition_by=["valid_from"],
            mode="append",
        )
    for as_of in [*DAYS, dt.date(2024, 3, 4), dt.date(2024, 3, 31)]:
        table, version = as_of_arrow(path, as_of, ("user_id", "item_id"))
        assert version == len(DAYS) - 1
        expected = _reference(versions, as_of, ["user_id", "item_id"])
        assert len(expected) < len(versions[versions["valid_from"] <= as_of]) or as_of == DAYS[0]
        pd.testing.assert_frame_equal(_sorted(table.to_pandas()), _sorted(expected), check_dtype=False)
    # a filter applies before the latest version is taken: the latest version among the matching
    table, _ = as_of_arrow(path, DAYS[-1], ("user_id", "item_id"), filters=[("rating", ">=", 3.0)])
    expected = _reference(versions[versions["rating"] >= 3.0], DAYS[-1], ["user_id", "item_id"])
    pd.testing.assert_frame_equal(_sorted(table.to_pandas()), _sorted(expected), check_dtype=False)


def test_latest_rows_keeps_the_original_order_and_one_key_column():
    rows = pa.table(
        {
            "user_id": [3, 1, 2, 1, 3, 4],
            "valid_from": pa.array([dt.date(2024, 1, d) for d in (1, 1, 1, 3, 2, 2)], pa.date32()),
            "row": [0, 1, 2, 3, 4, 5],
        }
    )
    assert latest_rows(rows, ["user_id"]).column("row").to_pylist() == [2, 3, 4, 5]

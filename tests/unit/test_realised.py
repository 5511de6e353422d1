"""Realised quality: the previous night's recommendations judged on tonight's new keys."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from model.realised import judge, realised_quality
from recsys.config import load_config

D1, D2A, D2B, D2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3), dt.date(2024, 3, 3)
# user 1: items 10, 11, 12 at ranks 1..3; user 2: 20, 21; user 3: 30
RECOMMENDED = pd.DataFrame(
    {"user_id": [1, 1, 1, 2, 2, 3], "item_id": [10, 11, 12, 20, 21, 30], "rank": [1, 2, 3, 1, 2, 1]}
)


def test_judge_by_hand() -> None:
    # user 1 gets items 11 (rank 2) and 99 (not recommended); user 2 gets 20 (rank 1);
    # user 4 has no recommendations; user 3 gets nothing new and is not judged
    arrivals = pd.DataFrame({"user_id": [1, 1, 2, 4], "item_id": [11, 99, 20, 40]})
    metrics = judge(RECOMMENDED, arrivals, [1, 2])
    user1_ndcg2 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))  # one hit at 2, two relevant items
    assert metrics == pytest.approx(
        {
            "users": 2,
            "no_recommendation": 1,
            "hr@1": 0.5,
            "hr@2": 1.0,
            "ndcg@1": 0.5,  # user 1: no hit at 1; user 2: a hit at 1
            "ndcg@2": (user1_ndcg2 + 1.0) / 2,
        }
    )


def test_judge_with_no_judged_user() -> None:
    arrivals = pd.DataFrame({"user_id": [4], "item_id": [40]})
    assert judge(RECOMMENDED, arrivals, [1]) == {
        "users": 0.0,
        "no_recommendation": 1.0,
        "hr@1": 0.0,
        "ndcg@1": 0.0,
    }


def _write(path: Path, frame: pd.DataFrame, schema: pa.Schema, partition: str) -> None:
    write_deltalake(
        str(path), pa.Table.from_pandas(frame, schema=schema, preserve_index=False), partition_by=[partition]
    )


def test_realised_quality_reads_tonight_drops_new_keys_and_the_previous_nights_table(tmp_path: Path) -> None:
    config = load_config(
        profile="local", env={}, overrides=(f"lake.root={tmp_path}", "scoring.eval_ks=[1,2]")
    )
    stats = pa.schema([("run_date", pa.date32()), ("drops", pa.list_(pa.string()))])
    _write(
        tmp_path / "ratings_run_stats",
        pd.DataFrame({"run_date": [D1, D2], "drops": [[D1.isoformat()], [D2A.isoformat(), D2B.isoformat()]]}),
        stats,
        "run_date",
    )
    recommendations = pa.schema(
        [("run_date", pa.date32()), ("user_id", pa.int64()), ("item_id", pa.int64()), ("rank", pa.int32())]
    )
    _write(tmp_path / "recommendations", RECOMMENDED.assign(run_date=D1), recommendations, "run_date")
    silver = pa.schema(
        [
            ("valid_from", pa.date32()),
            ("user_id", pa.int64()),
            ("item_id", pa.int64()),
            ("previous_copies", pa.int32()),
        ]
    )
    versions = pd.DataFrame(
        [
            (D1, 2, 21, 0),  # last night's drop: known when night D1 published
            (D2A, 1, 11, 0),  # new tonight: rank 2 for user 1
            (D2B, 1, 11, 1),  # the same key again in tonight's second drop: not new twice
            (D2A, 1, 10, 2),  # a re-rating of an item user 1 had: not new
            (D2B, 2, 20, 0),  # new tonight: rank 1 for user 2
            (D2B, 5, 50, 0),  # a user with no recommendations on D1
        ],
        columns=["valid_from", "user_id", "item_id", "previous_copies"],
    )
    _write(tmp_path / "ratings_silver", versions, silver, "valid_from")

    metrics = realised_quality(config, D2)
    assert metrics == pytest.approx(
        {
            "users": 2,
            "no_recommendation": 1,
            "hr@1": 0.5,
            "hr@2": 1.0,
            "ndcg@1": 0.5,
            "ndcg@2": (1 / np.log2(3) + 1) / 2,
        }
    )
    assert realised_quality(config, D1) is None  # the first night has nothing to judge
    assert realised_quality(config, D2 + dt.timedelta(days=1)) is None  # no run stats for the date

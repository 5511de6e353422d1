"""Our pipeline's leave-one-out split of ML-100K is RecBole's (exact time, ties in file order).

415 ML-100K users rated their last two movies in the same second, so the tie rule decides
their validation and test items: the sequences table must order equal timestamps as RecBole
does (a stable sort by time over the file), or the results table would compare models on
different targets.
"""

from __future__ import annotations

import datetime as dt

import pytest

from model.data import SequenceData, read_sequences
from model.recbole_peer import recbole_split
from recsys.datasets import raw_source
from spark_jobs.common import RunContext
from spark_jobs.pipeline import run_pipeline
from spark_jobs.sequences import TEST, VALID
from tests.conftest import config_with_lake

pytestmark = pytest.mark.spark


def test_pipeline_split_of_ml100k_equals_recbole_exact_time_split(spark, tmp_path):
    config = config_with_lake(tmp_path / "lake", "data.dataset=ml-100k", "pipeline.max_seq_len=1000")
    ctx = RunContext.for_date(config, dt.date(2024, 1, 1))
    source = raw_source(config)
    run_pipeline(spark, ctx, [str(source.path)], source.format_name)
    ours: dict[int, dict[int, int]] = {VALID: {}, TEST: {}}
    frame = spark.read.format("delta").load(ctx.table("sequences"))
    ties = 0
    for row in frame.select("user_id", "item_ids", "timestamps", "split").collect():
        for item, marker in zip(row["item_ids"], row["split"], strict=True):
            if marker in ours:
                ours[marker][row["user_id"]] = item
        ties += row["timestamps"][-1] == row["timestamps"][-2]

    split = recbole_split()
    recbole = {
        marker: {int(user): int(item) for user, item in split[name].items()}
        for marker, name in ((VALID, "valid"), (TEST, "test"))
    }
    assert ties == 415  # the users whose targets depend on the tie rule
    assert len(ours[TEST]) == 943
    assert ours[TEST] == recbole[TEST]
    assert ours[VALID] == recbole[VALID]

    # The production protocol's cut (the night before the test item's day) as the RecBole peer
    # scores it equals our evaluator's night view: the same events known, the same cold users.
    data = SequenceData.from_arrow(read_sequences(ctx.table("sequences"), ctx.run_date))
    night = data.night_view("test")
    known = dict.fromkeys(map(int, data.user_vocab.decode(data.view("test").users)), 0)
    known.update(
        zip(map(int, data.user_vocab.decode(night.view.users)), map(int, night.view.lengths), strict=True)
    )
    peer_known = {int(user): k for user, k in split["test_night_known"].items()}
    assert night.cold == sum(k == 0 for k in peer_known.values()) > 0
    assert peer_known == known

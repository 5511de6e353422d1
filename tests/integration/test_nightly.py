"""orchestration/nightly.py: a whole night on the embedded ML-100K replayed as daily drops, and its rerun."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from orchestration.nightly import run_night, sample
from recsys.datasets.embedded import ml100k_path
from recsys.datasets.replay import replay
from tests.conftest import config_with_lake

pytestmark = [pytest.mark.spark, pytest.mark.slow]

DAY = dt.date(1998, 4, 22)  # ML-100K's last day: make run's default night


def _content_hash(spark, path: str, drop: tuple[str, ...] = ()) -> str:
    frame = spark.read.format("delta").load(path).drop(*drop)
    rows = sorted(str(tuple(row)) for row in frame.select(*sorted(frame.columns)).collect())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def test_a_night_publishes_recommendations_and_its_rerun_reuses_the_model(spark, tmp_path):
    config = config_with_lake(
        tmp_path / "lake",
        f"train.models_dir={tmp_path / 'models'}",
        "model.hidden_size=16",
        "model.n_layers=1",
        "train.epochs=1",
        "train.batch_size=256",
    )
    replay(
        ml100k_path(),
        "recbole-inter",
        tmp_path / "lake" / "landing" / "ratings",
        start=DAY - dt.timedelta(days=6),
    )
    night = run_night(config, DAY)
    assert night.pipeline_stats.total_rows_read == 100_000 and len(night.pipeline_stats.drops) == 8
    assert night.trained
    assert (night.scoring["users"], night.scoring["rows"]) == (943, 943 * 100)
    recommendations = spark.read.format("delta").load(config.table_path("recommendations"))
    assert recommendations.where("run_date = DATE'1998-04-22'").select("user_id").distinct().count() == 943
    (run,) = spark.read.format("delta").load(config.table_path("model_runs")).collect()
    assert run.model_version == night.model_version and run.scored and run.trained_tonight
    assert run.input_versions["sequences"] >= 0 and "test.production.ndcg@10" in run.metrics

    user, top10, coverage = sample(config, DAY)
    assert len(top10) == 10 and top10["user_id"].eq(user).all() and top10["title"].notna().all()
    assert top10["rank"].tolist() == list(range(1, 11))
    assert 0 < coverage["coverage_at_10"].iloc[0] <= 1

    # The rerun rewrites the pipeline's tables, so scoring reads newer Delta versions of the same
    # content: model_runs records them, and everything else is identical.
    def contents() -> dict[str, str]:
        return {
            "recommendations": _content_hash(spark, config.table_path("recommendations")),
            "model_runs": _content_hash(spark, config.table_path("model_runs"), drop=("input_versions",)),
        }

    before = contents()
    again = run_night(config, DAY)
    assert (again.model_version, again.trained) == (night.model_version, False)
    assert contents() == before
    (rerun,) = spark.read.format("delta").load(config.table_path("model_runs")).collect()
    assert rerun.input_versions["sequences"] > run.input_versions["sequences"]

"""orchestration/model_tasks.py: the champion/challenger step records who scores, per date."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from model.checkpoint import METRICS_FILE, WEIGHTS_FILE
from model.registry import ModelRegistry
from orchestration.model_tasks import decide, night_path, write_step
from tests.conftest import config_with_lake

NIGHT_1, NIGHT_2 = dt.date(1998, 4, 21), dt.date(1998, 4, 22)


@pytest.fixture
def config(tmp_path: Path):
    config = config_with_lake(tmp_path / "lake", f"train.models_dir={tmp_path / 'models'}")
    for version in ("ss4rec-old", "ss4rec-new"):
        directory = ModelRegistry.from_config(config).path(version)
        directory.mkdir(parents=True)
        (directory / WEIGHTS_FILE).write_bytes(b"")
        (directory / METRICS_FILE).write_text("{}")
    ModelRegistry.from_config(config).record_champion(
        NIGHT_1,
        {
            "version": "ss4rec-old",
            "config_hash": "cfg",
            "sequences_fingerprint": "seq-1",
            "full_retrain_on": "1998-04-15",
            "promoted_on": "1998-04-21",
            "metric": 0.1,
        },
    )
    return config


def plan_night(config, champion_ndcg: float, challenger_ndcg: float) -> None:
    write_step(
        config,
        NIGHT_2,
        "train",
        {
            "plan": {"mode": "warm", "reason": "warm start from ss4rec-old"},
            "champion": "ss4rec-old",
            "challenger": "ss4rec-new",
            "config_hash": "cfg",
            "sequences_fingerprint": "seq-2",
            "full_retrain_on": "1998-04-15",
            "trained_tonight": True,
        },
    )
    write_step(
        config,
        NIGHT_2,
        "evaluate",
        {
            "models": {
                role: {"version": version, "metrics": {"valid": {"production": {"ndcg@10": ndcg}}}}
                for role, version, ndcg in (
                    ("champion", "ss4rec-old", champion_ndcg),
                    ("challenger", "ss4rec-new", challenger_ndcg),
                )
            }
        },
    )


def champion_after(config, day: dt.date) -> dict:
    return json.loads(ModelRegistry.from_config(config).champion_path(day).read_text())


def test_a_worse_challenger_leaves_the_champion_in_place_for_tonight_and_tomorrow(config):
    plan_night(config, champion_ndcg=0.10, challenger_ndcg=0.05)
    decided = decide(config, NIGHT_2)
    assert (decided["champion"], decided["promoted"]) == ("ss4rec-old", False)
    assert champion_after(config, NIGHT_2)["version"] == "ss4rec-old"
    assert ModelRegistry.from_config(config).champion_before(NIGHT_2 + dt.timedelta(days=1))["version"] == (
        "ss4rec-old"
    )
    assert json.loads(night_path(config, NIGHT_2, "decide").read_text()) == decided


def test_a_better_challenger_is_recorded_as_the_champion_after_tonight_only(config):
    plan_night(config, champion_ndcg=0.10, challenger_ndcg=0.12)
    decided = decide(config, NIGHT_2)
    assert (decided["champion"], decided["promoted"]) == ("ss4rec-new", True)
    after = champion_after(config, NIGHT_2)
    assert (after["version"], after["promoted_on"], after["sequences_fingerprint"]) == (
        "ss4rec-new",
        "1998-04-22",
        "seq-2",
    )
    # A rerun of tonight still starts from last night's champion.
    assert ModelRegistry.from_config(config).champion_before(NIGHT_2)["version"] == "ss4rec-old"


def test_a_champion_record_must_name_a_model_in_the_registry(config):
    with pytest.raises(FileNotFoundError, match="ss4rec-missing"):
        ModelRegistry.from_config(config).record_champion(NIGHT_2, {"version": "ss4rec-missing"})

"""orchestration/model_tasks.py: the champion/challenger step records who scores per date; the aliases."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from model.registry import ModelRegistry
from model.tracking import CHALLENGER, CHAMPION, alias_version, client, log_model_version
from orchestration.model_tasks import decide, night_path, write_step
from tests.scoring_fixtures import ITEMS, save_model, scoring_config

NIGHT_1, NIGHT_2 = dt.date(1998, 4, 21), dt.date(1998, 4, 22)


@pytest.fixture
def config(tmp_path: Path):
    config = scoring_config(tmp_path)
    for seed, version in enumerate(("ss4rec-old", "ss4rec-new")):
        save_model(config, ITEMS, version, seed=seed)
        log_model_version(
            config, version, ModelRegistry.from_config(config).path(version), NIGHT_1, {}, "full"
        )
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


def aliases(config) -> dict[str, str | None]:
    """Our model version behind each alias of the MLflow registered model."""
    mlflow_client = client(config)
    out = {}
    for alias in (CHAMPION, CHALLENGER):
        found = alias_version(mlflow_client, config, alias)
        out[alias] = found.tags["recsys.model_version"] if found else None
    return out


def test_a_promotion_moves_the_champion_alias_and_a_rollback_moves_it_back(config):
    plan_night(config, champion_ndcg=0.10, challenger_ndcg=0.12)
    promoted = decide(config, NIGHT_2)
    assert aliases(config) == {CHAMPION: "ss4rec-new", CHALLENGER: None}
    assert promoted["aliases_moved"] and promoted["registered"] == {"ss4rec-old": "1", "ss4rec-new": "2"}
    assert promoted["aliases"] == {CHAMPION: "2", CHALLENGER: None}

    # The same night again, rolled back by hand: the promotion is undone whatever the metrics say.
    rolled = decide(config, NIGHT_2, rollback=True)
    assert (rolled["champion"], rolled["promoted"], rolled["rollback"]) == ("ss4rec-old", False, True)
    assert "rollback by hand: ss4rec-new replaced by ss4rec-old" in rolled["reason"]
    assert aliases(config) == {CHAMPION: "ss4rec-old", CHALLENGER: "ss4rec-new"}
    assert champion_after(config, NIGHT_2)["version"] == "ss4rec-old"


def test_a_rollback_on_a_night_without_promotion_returns_to_the_champion_before_the_last_promotion(config):
    registry = ModelRegistry.from_config(config)
    # ss4rec-new was promoted on NIGHT_2; the night after trains nothing new.
    registry.record_champion(
        NIGHT_2,
        {**champion_after(config, NIGHT_1), "version": "ss4rec-new", "promoted_on": NIGHT_2.isoformat()},
    )
    night_3 = NIGHT_2 + dt.timedelta(days=1)
    write_step(
        config, night_3, "train", {"plan": {"mode": "skip"}, "champion": "ss4rec-new", "challenger": None}
    )
    write_step(config, night_3, "evaluate", {"models": {}})
    rolled = decide(config, night_3, rollback=True)
    assert rolled["champion"] == "ss4rec-old"
    after = champion_after(config, night_3)
    assert (after["version"], after["promoted_on"], after["rolled_back_on"]) == (
        "ss4rec-old",
        "1998-04-21",
        night_3.isoformat(),
    )
    assert aliases(config) == {CHAMPION: "ss4rec-old", CHALLENGER: "ss4rec-new"}


def test_a_backfill_records_its_champion_but_leaves_the_aliases_to_the_newest_night(config):
    registry = ModelRegistry.from_config(config)
    later = NIGHT_2 + dt.timedelta(days=5)
    registry.record_champion(later, champion_after(config, NIGHT_1))
    plan_night(config, champion_ndcg=0.10, challenger_ndcg=0.12)
    decided = decide(config, NIGHT_2)
    assert decided["champion"] == "ss4rec-new" and champion_after(config, NIGHT_2)["version"] == "ss4rec-new"
    # What the night gave each alias is recorded (a backfill reproduces it); the registry is untouched.
    assert (decided["aliases_moved"], decided["aliases"]) == (False, {CHAMPION: "2", CHALLENGER: None})
    assert aliases(config) == {CHAMPION: None, CHALLENGER: None}


def test_a_champion_trained_before_the_registry_existed_is_registered_when_the_aliases_move(tmp_path):
    config = scoring_config(tmp_path)
    save_model(config, ITEMS, "ss4rec-legacy")  # on disk only, as an older release left it
    ModelRegistry.from_config(config).record_champion(
        NIGHT_1,
        {
            "version": "ss4rec-legacy",
            "config_hash": "cfg",
            "sequences_fingerprint": "seq-1",
            "full_retrain_on": "1998-04-15",
            "promoted_on": "1998-04-21",
            "metric": 0.1,
        },
    )
    write_step(
        config, NIGHT_2, "train", {"plan": {"mode": "skip"}, "champion": "ss4rec-legacy", "challenger": None}
    )
    write_step(config, NIGHT_2, "evaluate", {"models": {}})
    decided = decide(config, NIGHT_2)
    assert decided["registered"] == {"ss4rec-legacy": "1"} and decided["aliases"][CHAMPION] == "1"
    assert aliases(config) == {CHAMPION: "ss4rec-legacy", CHALLENGER: None}
    found = alias_version(client(config), config, CHAMPION)
    assert client(config).get_run(found.run_id).data.tags["recsys.training_mode"] == "imported"

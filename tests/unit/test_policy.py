"""orchestration/policy.py: the refresh policy and the champion/challenger rule."""

from __future__ import annotations

import datetime as dt

import pytest

from orchestration.policy import Champion, choose_champion, plan_training, promotion_metric

DAY = dt.date(1998, 4, 22)
CHAMPION = Champion("ss4rec-aaa", "config-1", "fingerprint-1", full_retrain_on=dt.date(1998, 4, 20))


def plan(champion=CHAMPION, config_hash="config-1", fingerprint="fingerprint-2", every=7, **flags):
    return plan_training(DAY, champion, config_hash, fingerprint, every, **flags)


def test_new_events_with_a_recent_full_retrain_warm_start_from_the_champion():
    result = plan()
    assert (result.mode, result.reason) == ("warm", "warm start from ss4rec-aaa")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"champion": None}, "no champion yet"),
        ({"config_hash": "config-2"}, "model configuration changed since ss4rec-aaa"),
        ({"full_retrain": True}, "full retrain requested (full_retrain param)"),
        ({"drift_breach": True}, "drift check breached: full retrain"),
        ({"every": 2}, "last full retrain 1998-04-20 is 2 days old (every 2)"),
        ({"can_warm_start": False}, "the model trains in one pass: retrained, not refreshed"),
    ],
)
def test_full_retrain_rules(kwargs, reason):
    result = plan(**kwargs)
    assert (result.mode, result.reason) == ("full", reason)


def test_no_new_events_and_the_same_configuration_skip_training():
    assert plan(fingerprint="fingerprint-1").mode == "skip"
    # ...but a demanded or drift-driven retrain still happens, and so does one after a config change.
    assert plan(fingerprint="fingerprint-1", full_retrain=True).mode == "full"
    assert plan(fingerprint="fingerprint-1", drift_breach=True).mode == "full"
    assert plan(fingerprint="fingerprint-1", config_hash="config-2").mode == "full"


def test_a_schedule_of_zero_days_never_forces_a_full_retrain():
    assert plan(every=0).mode == "warm"


def metrics(ndcg: float) -> dict:
    return {"valid": {"production": {"ndcg@10": ndcg}, "paper": {"ndcg@10": 1.0}}}


def test_the_champion_is_kept_when_the_challenger_is_worse_beyond_the_tolerance():
    decision = choose_champion("old", metrics(0.100), "new", metrics(0.097), tolerance=0.002)
    assert (decision.champion, decision.promoted) == ("old", False)
    assert (decision.champion_metric, decision.challenger_metric) == (0.100, 0.097)
    assert "the champion stays" in decision.reason


def test_the_challenger_is_promoted_within_the_tolerance_and_when_better():
    within = choose_champion("old", metrics(0.100), "new", metrics(0.0985), tolerance=0.002)
    better = choose_champion("old", metrics(0.100), "new", metrics(0.120), tolerance=0.0)
    assert (within.champion, within.promoted) == ("new", True)
    assert (better.champion, better.promoted) == ("new", True)


def test_the_production_variant_decides_not_the_paper_variant():
    challenger = {"valid": {"production": {"ndcg@10": 0.05}, "paper": {"ndcg@10": 0.9}}}
    assert not choose_champion("old", metrics(0.1), "new", challenger, tolerance=0.0).promoted


def test_first_night_and_skipped_night():
    first = choose_champion(None, None, "new", metrics(0.05), tolerance=0.0)
    assert (first.champion, first.promoted) == ("new", True)
    skipped = choose_champion("old", metrics(0.1), None, None, tolerance=0.0)
    assert (skipped.champion, skipped.promoted) == ("old", False)
    with pytest.raises(ValueError, match="nothing can score"):
        choose_champion(None, None, None, None, tolerance=0.0)


def test_missing_metric_is_named():
    with pytest.raises(KeyError, match=r"valid\.production\.ndcg@10"):
        promotion_metric({"test": {}})

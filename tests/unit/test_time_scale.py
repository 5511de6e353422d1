"""model.time_scale: every setting trained and scored on validation, resumable, the best as an overlay."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml

from model import time_scale
from model.data import SequenceData
from recsys.config import load_config
from tests.sequence_fixtures import build_sequences_table, cycle_ratings

RUN_DATE = dt.date(2024, 1, 1)
SETTINGS = (
    time_scale.Setting("released"),
    time_scale.Setting("log1p, 1 h", time_unit_seconds=3600.0, gap_transform="log1p"),
)


@pytest.fixture
def data():
    table = build_sequences_table(cycle_ratings(n_users=30, n_items=25, length=10), valid_from=RUN_DATE)
    return SequenceData.from_arrow(table)


def _config(tmp_path, *extra):
    return load_config(
        profile="local",
        overrides=(
            f"lake.root={tmp_path / 'lake'}",
            "model.name=ss4rec_s5_only",
            "model.hidden_size=16",
            "train.epochs=2",
            "train.patience=1",
            "train.batch_size=8",
            "device=cpu",
            *extra,
        ),
    )


def test_the_study_runs_each_setting_once_and_writes_report_chart_and_overlay(tmp_path, data, monkeypatch):
    out = tmp_path / "study" / "report.md"
    results = time_scale.run_study(_config(tmp_path), data, RUN_DATE, out, SETTINGS, command="cmd")
    assert set(results) == {"released", "log1p, 1 h"}
    for record in results.values():
        for variant in ("paper", "production"):
            assert 0.0 <= record["valid"][variant]["ndcg@10"] <= record["valid"][variant]["hr@10"] <= 1.0
        assert 1 <= record["epochs_run"] <= 2
    assert results["log1p, 1 h"]["keys"]["model"] == {
        "time_unit_seconds": 3600.0,
        "gap_transform": "log1p",
        "dt_min": 0.001,
        "dt_max": 0.1,
    }
    stored = json.loads(out.with_suffix(".json").read_text())
    assert stored["results"] == results and stored["command"] == "cmd"
    report = out.read_text()
    best = time_scale.best_setting(results)
    assert f"**{best}**" in report and report.count("\n| ") == 3  # header + one row per setting
    assert out.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    overlay = yaml.safe_load(out.with_suffix(".best.yaml").read_text())
    assert overlay == results[best]["keys"]
    assert (
        load_config(profile="local", overlays=[out.with_suffix(".best.yaml")]).model.gap_transform
        == (overlay["model"]["gap_transform"])
    )

    # resumed: nothing is trained again for the same configuration, a changed one is
    trained = []
    real = time_scale.fit_on_validation

    def counted(config, *args, **kwargs):
        trained.append(config)
        return real(config, *args, **kwargs)

    monkeypatch.setattr(time_scale, "fit_on_validation", counted)
    time_scale.run_study(_config(tmp_path), data, RUN_DATE, out, SETTINGS)
    assert trained == []
    time_scale.run_study(_config(tmp_path, "train.lr=0.002"), data, RUN_DATE, out, SETTINGS[:1])
    assert len(trained) == 1 and trained[0].train.lr == 0.002


def test_the_best_setting_is_chosen_by_production_ndcg():
    results = {
        "a": {"valid": {"paper": {"ndcg@10": 0.9}, "production": {"ndcg@10": 0.1}}},
        "b": {"valid": {"paper": {"ndcg@10": 0.1}, "production": {"ndcg@10": 0.2}}},
    }
    assert time_scale.best_setting(results) == "b"


def test_per_second_range_is_the_dt_range_over_the_unit():
    assert time_scale.Setting("x", time_unit_seconds=60.0, dt_min=0.006, dt_max=0.6).per_second() == (
        pytest.approx(1e-4),
        pytest.approx(1e-2),
    )

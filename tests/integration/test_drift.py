"""Drift (spark_jobs/drift.py): the PSI/KS math on constructed distributions, the input report of
real nights (a steady night, a drifted one), the output report, and the retrain hook."""

from __future__ import annotations

import calendar
import datetime as dt
import math
import random
from pathlib import Path

import numpy as np
import pytest

from orchestration.model_tasks import night_plan, summarise_drift
from orchestration.policy import Champion
from recsys.datasets.replay import replay
from spark_jobs import drift
from spark_jobs.common import RunContext, read_small_table
from spark_jobs.pipeline import run_pipeline
from tests.conftest import config_with_lake

pytestmark = [pytest.mark.spark, pytest.mark.slow]

HISTORY = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(60)]  # 01-01 .. 02-29
STEADY, DRIFTED = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
OVERRIDES = (
    "data.dataset=synthetic",
    "pipeline.volume_min_trailing_drops=2",
    "drift.min_rows=30",
)
PER_DAY = 200


@pytest.fixture()
def bands(base_config):
    """The configured bands and bins, judged from 100 values on."""
    return base_config.drift.model_copy(update={"min_rows": 100})


def _frame(spark, values, column="value"):
    return spark.createDataFrame([(float(v),) for v in values], [column])


def _numpy_psi_ks(reference: np.ndarray, current: np.ndarray, edges: list[float]) -> tuple[float, float]:
    inner = np.array(edges[1:-1])
    bins = len(edges) - 1
    r = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=bins) / reference.size
    c = np.bincount(np.searchsorted(inner, current, side="right"), minlength=bins) / current.size
    fr, fc = np.maximum(r, drift.SHARE_FLOOR), np.maximum(c, drift.SHARE_FLOOR)
    return float(np.sum((fc - fr) * np.log(fc / fr))), float(np.max(np.abs(np.cumsum(r) - np.cumsum(c))))


def test_psi_and_ks_match_their_formulas_and_judge_a_shift_but_not_a_resample(spark, bands):
    rng = np.random.default_rng(7)
    reference, resample, shifted = rng.normal(0, 1, 20_000), rng.normal(0, 1, 5_000), rng.normal(1, 1, 5_000)
    ref = _frame(spark, reference)
    edges = drift.quantile_edges(ref, "value", 10, bands.relative_error)
    assert len(edges) == 11 and edges[0] == -math.inf and edges[-1] == math.inf
    for current in (resample, shifted):
        psi, ks, n_ref, n_cur = drift.compare(
            drift.bucketize(ref, "value", edges), drift.bucketize(_frame(spark, current), "value", edges)
        )
        assert (n_ref, n_cur) == (20_000, 5_000)
        expected_psi, expected_ks = _numpy_psi_ks(reference, current, edges)
        assert psi == pytest.approx(expected_psi, rel=1e-9, abs=1e-12)
        assert ks == pytest.approx(expected_ks, rel=1e-9, abs=1e-12)
    steady = drift.distribution("x", ref, _frame(spark, resample), "value", bands)
    moved = drift.distribution("x", ref, _frame(spark, shifted), "value", bands)
    assert [(f.statistic, f.status) for f in steady] == [("psi", "ok"), ("ks", "ok")]
    assert all(f.value < 0.05 for f in steady), steady
    assert [(f.statistic, f.status) for f in moved] == [("psi", "breach"), ("ks", "breach")]
    assert moved[0].value > 0.25 and moved[1].value > 0.2
    assert moved[0].detail["edges"] == edges[1:-1]


def test_an_empty_bin_keeps_psi_finite_and_too_few_values_are_not_judged(spark, bands):
    reference = _frame(spark, [1, 2, 3, 4, 5] * 100)
    one_value = drift.distribution("r", reference, _frame(spark, [5] * 300), "value", bands, False)
    psi, ks = one_value
    # Four of five bins are empty tonight: each contributes (1e-4 - 0.2) * ln(1e-4 / 0.2).
    expected = 4 * (drift.SHARE_FLOOR - 0.2) * math.log(drift.SHARE_FLOOR / 0.2) + 0.8 * math.log(5)
    assert psi.value == pytest.approx(expected, rel=1e-9) and psi.status == "breach"
    assert ks.value == pytest.approx(0.8, rel=1e-9)
    few = drift.distribution("r", reference, _frame(spark, [5] * 10), "value", bands, False)
    assert [f.status for f in few] == ["not_judged", "not_judged"] and few[0].value is None


@pytest.mark.parametrize(
    ("value", "warn", "breach", "below", "status"),
    [
        (0.05, 0.1, 0.25, False, "ok"),
        (0.1, 0.1, 0.25, False, "ok"),
        (0.2, 0.1, 0.25, False, "warn"),
        (0.3, 0.1, 0.25, False, "breach"),
        (0.4, 0.5, None, True, "warn"),
        (0.6, 0.5, None, True, "ok"),
        (0.9, None, None, False, "reported"),
        (None, 0.1, 0.25, False, "not_judged"),
    ],
)
def test_judge_bands(value, warn, breach, below, status):
    assert drift.judge(value, warn, breach, below) == status


# ------------------------------------------------------------------------ real nights


def _seconds(day: dt.date, second: int) -> int:
    return calendar.timegm(day.timetuple()) + second


def _source(path: Path) -> Path:
    """PER_DAY ratings a day by 3,000 users of 400 Zipf-popular items; 03-02's ratings are all 5.

    Users are many enough that no popular item runs out of users who have not rated it yet
    (which would shift the popularity over the month)."""
    rng = random.Random(11)
    items = list(range(1, 401))
    weights = [1 / rank**0.8 for rank in items]
    seen: set[tuple[int, int]] = set()
    lines = ["userId,movieId,rating,timestamp"]
    for day in [*HISTORY, STEADY, DRIFTED]:
        made = 0
        while made < PER_DAY:
            user, item = rng.randint(1, 3_000), rng.choices(items, weights)[0]
            if (user, item) in seen:
                continue
            seen.add((user, item))
            rating = 5.0 if day == DRIFTED else float(rng.choice([1, 2, 3, 3, 4, 4, 4, 5, 5]))
            lines.append(f"{user},{item},{rating},{_seconds(day, rng.randint(0, 86_399))}")
            made += 1
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def nights(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    config = config_with_lake(root / "lake", *OVERRIDES)
    landing = root / "lake" / "landing" / "ratings"
    replay(_source(root / "ratings.csv"), "ratings.csv", landing, start=STEADY, until=DRIFTED)
    reports = {}
    for day in (HISTORY[-1], STEADY, DRIFTED):
        ctx = RunContext.for_date(config, day, run_id=f"night-{day}")
        run_pipeline(spark, ctx)
        reports[day] = drift.run(spark, ctx, drift.INPUT)
    return config, reports


def _by_measure(findings) -> dict[tuple[str, str], object]:
    return {(f.measure, f.statistic): f for f in findings}


def test_the_first_night_has_no_reference_and_is_not_judged(nights):
    config, reports = nights
    first = _by_measure(reports[HISTORY[-1]])
    for key in [
        ("rating", "psi"),
        ("user_activity", "ks"),
        ("inter_event_gap", "psi"),
        ("item_popularity", "psi"),
    ]:
        assert first[key].status == "not_judged" and first[key].reference_rows == 0, key
    assert first[("new_users", "share")].value == 1.0 and first[("new_users", "share")].status == "reported"
    assert drift.input_breaches(config, HISTORY[-1]) == []


def test_a_steady_night_passes_and_a_drifted_one_breaches_on_the_ratings(nights):
    config, reports = nights
    steady, drifted = _by_measure(reports[STEADY]), _by_measure(reports[DRIFTED])
    for key in [("rating", "psi"), ("rating", "ks"), ("user_activity", "psi"), ("item_popularity", "psi")]:
        assert steady[key].status == "ok", (key, steady[key])
    assert steady[("rating", "psi")].current_rows == PER_DAY
    assert steady[("inter_event_gap", "psi")].status == "ok"
    # 28 days of PER_DAY ratings before the night's drop form the reference.
    assert steady[("rating", "psi")].reference_rows == 28 * PER_DAY
    assert drifted[("rating", "psi")].status == "breach" and drifted[("rating", "psi")].value > 1
    assert drifted[("rating", "ks")].status == "breach"
    # The items and users the drifted night rates are drawn as before: no drift there.
    assert drifted[("item_popularity", "psi")].status == "ok"
    assert drift.input_breaches(config, DRIFTED) == ["rating ks", "rating psi"]
    assert drift.input_breaches(config, STEADY) == []
    new_users = steady[("new_users", "share")]
    assert 0 <= new_users.value < 0.2 and new_users.detail["new_rows"] == round(new_users.value * PER_DAY)


def test_a_rerun_after_later_nights_gives_the_same_report(spark, nights):
    config, reports = nights
    rerun = drift.run(spark, RunContext.for_date(config, STEADY, run_id="rerun"), drift.INPUT)
    assert [(f.measure, f.statistic, f.value, f.status) for f in rerun] == [
        (f.measure, f.statistic, f.value, f.status) for f in reports[STEADY]
    ]
    rows = [r for r in read_small_table(config.table_path("drift_reports")) if r["run_date"] == STEADY]
    assert {r["run_id"] for r in rows} == {"rerun"} and len(rows) == len(rerun)
    assert {r["reference_from"] for r in rows} == {STEADY - dt.timedelta(days=28)}


def test_an_input_breach_makes_tonight_a_full_retrain(nights):
    config, _ = nights
    # A champion that tonight would warm-start from: same configuration, recent full retrain.
    champion = Champion("ss4rec-a", "cfg", "old-sequences", STEADY)
    steady, _ = night_plan(config, STEADY, champion, "cfg", "new-sequences")
    assert steady.mode == "warm"
    plan, breached = night_plan(config, DRIFTED, champion, "cfg", "new-sequences")
    assert (plan.mode, breached) == ("full", ["rating ks", "rating psi"])
    assert "drift" in plan.reason
    off = config.model_copy(update={"drift": config.drift.model_copy(update={"retrain_on_breach": False})})
    assert night_plan(off, DRIFTED, champion, "cfg", "new-sequences")[0].mode == "warm"


def _lists(spark, config, day: dt.date, rows: list[tuple[int, int, int, float]]) -> None:
    frame = spark.createDataFrame(
        [(day, user, rank, item, score) for user, rank, item, score in rows],
        "run_date date, user_id long, rank int, item_id long, score double",
    )
    (
        frame.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"run_date = DATE'{day}'")
        .partitionBy("run_date")
        .save(config.table_path("recommendations"))
    )


def test_output_drift_overlap_coverage_and_scores_against_the_previous_run(spark, nights):
    config, _ = nights
    rng = np.random.default_rng(3)
    before, tonight = [], []
    for user in range(1, 41):
        # users 1-20 keep their list, users 21-40 keep half of it; user 41 is new tonight
        old = list(range(user, user + 10))
        new = old if user <= 20 else old[:5] + list(range(500, 505))
        for rank, (a, b) in enumerate(zip(old, new, strict=True), start=1):
            score = float(rng.uniform(0, 1))
            before.append((user, rank, a, score))
            tonight.append((user, rank, b, score + 3.0))
    tonight += [(41, rank, rank, 1.0) for rank in range(1, 11)]
    _lists(spark, config, STEADY, before)
    _lists(spark, config, DRIFTED, tonight)
    first = _by_measure(drift.run(spark, RunContext.for_date(config, STEADY), drift.OUTPUT))
    assert first[("overlap", "mean_at_10")].status == "not_judged"
    found = _by_measure(drift.run(spark, RunContext.for_date(config, DRIFTED), drift.OUTPUT))
    overlap = found[("overlap", "mean_at_10")]
    assert overlap.value == pytest.approx(0.75, abs=1e-12) and overlap.current_rows == 40
    assert overlap.status == "ok"
    coverage = found[("catalogue_coverage", "share_top10")]
    catalogue = {
        r["item_id"] for r in read_small_table(config.table_path("items")) if r["run_date"] == DRIFTED
    }
    recommended = {item for _, _, item, _ in tonight} & catalogue
    assert coverage.detail["catalogue_items"] == len(catalogue) and coverage.detail["items_at_10"] == len(
        recommended
    )
    assert coverage.value == pytest.approx(len(recommended) / len(catalogue), abs=1e-12)
    # Every score moved up by 3: the score distribution breaches, but output never retrains.
    # (Binned, KS stays below 1: tonight's scores all fall in the reference's top bin.)
    assert found[("score", "psi")].status == "breach" and found[("score", "ks")].value > 0.85
    assert drift.input_breaches(config, DRIFTED) == ["rating ks", "rating psi"]
    summary = summarise_drift(config, DRIFTED)
    assert "output score psi" in summary["breached"] and "input rating psi" in summary["breached"]

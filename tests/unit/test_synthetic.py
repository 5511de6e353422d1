"""The synthetic ML-25M-shaped generator: exact counts, invariants, shape, reproducibility, atomicity.

Invariants are checked on a small file read back with pandas (scale 0.005: 813 users, 125,000
ratings). The item Gini is checked at scale 0.4 (10M rows, ~10 s): with counts scaled
proportionally the mean ratings per item stays ~423 while no item can exceed one rating per
user, so the head flattens at small scales (Gini ~0.57 at 0.005, ~0.77 at 0.05) and ML-25M's
~0.94 is only approached from ~0.3 upwards. That test trusts the streamed summary, which the
small-scale test proves equal to statistics recomputed from the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.datasets import synthetic
from recsys.datasets.synthetic import (
    CSV_HEADER,
    ML25M_MAX_ITEM_ID,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    SyntheticSummary,
    generate_synthetic,
    gini_coefficient,
    target_counts,
)

SMALL_SCALE = 0.005
HALF_STARS = {0.5 * k for k in range(1, 11)}
ROW_PATTERN = re.compile(rb"\d+,\d+,(?:[0-4]\.[05]|5\.0),\d+")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticSummary, pd.DataFrame]:
    out = tmp_path_factory.mktemp("synthetic") / "ratings.csv"
    summary = generate_synthetic(out, scale=SMALL_SCALE, users_per_batch=1500)
    return summary, pd.read_csv(out)


def test_target_counts_full_scale_is_ml25m() -> None:
    assert target_counts(1.0) == (162_541, 59_047, 25_000_095)


def test_target_counts_proportional_with_a_catalogue_floor() -> None:
    assert target_counts(0.1) == (16_254, 5_905, 2_500_010)
    # Below ~0.0105 a proportional catalogue (295 items here) could not hold histories of mean ~154.
    assert target_counts(SMALL_SCALE) == (813, 616, 125_000)
    for scale in (0.001, 0.002, 0.005, 0.01, 0.0105, 0.05, 0.3, 1.0, 2.5, 4.0):
        users, items, ratings = target_counts(scale)
        assert users * 20 <= ratings, scale
        assert items <= ratings, scale
        assert 4 * ratings / users <= items, scale


@pytest.mark.parametrize("scale", [0.0, 0.0009, -1.0, float("nan")])
def test_target_counts_rejects_scales_too_small(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        target_counts(scale)


def test_gini_coefficient() -> None:
    assert gini_coefficient(np.full(10, 7)) == pytest.approx(0.0)
    assert gini_coefficient(np.array([0, 0, 0, 1])) == pytest.approx(0.75)
    assert gini_coefficient(np.array([1, 2, 3, 4])) == pytest.approx(0.25)


def test_file_layout_and_exact_counts(small: tuple[SyntheticSummary, pd.DataFrame]) -> None:
    summary, df = small
    n_users, n_items, n_ratings = target_counts(SMALL_SCALE)
    lines = summary.path.read_bytes().splitlines()
    assert lines[0] == CSV_HEADER.encode()
    assert all(ROW_PATTERN.fullmatch(line) for line in lines[1:])  # rating always with one decimal
    assert list(df.columns) == CSV_HEADER.split(",")
    assert len(df) == n_ratings
    assert df["userId"].is_monotonic_increasing  # grouped by user, ascending
    assert np.array_equal(df["userId"].unique(), np.arange(1, n_users + 1))
    assert df["movieId"].nunique() == n_items
    assert not list(summary.path.parent.glob("*.tmp"))


def test_item_ids_are_a_gappy_sample_of_ml25m_range(small: tuple[SyntheticSummary, pd.DataFrame]) -> None:
    _, df = small
    ids = np.unique(df["movieId"].to_numpy())
    assert ids.min() >= 1 and ids.max() <= ML25M_MAX_ITEM_ID
    assert ids.max() - ids.min() + 1 > 2 * ids.size  # not contiguous


def test_users_and_pairs(small: tuple[SyntheticSummary, pd.DataFrame]) -> None:
    _, df = small
    per_user = df.groupby("userId").size()
    assert per_user.min() >= 20
    assert per_user.max() > 2 * per_user.mean()  # heavy-tailed
    assert not df.duplicated(["userId", "movieId"]).any()


def test_timestamps_strictly_increasing_within_range(small: tuple[SyntheticSummary, pd.DataFrame]) -> None:
    _, df = small
    assert df["timestamp"].between(TIMESTAMP_MIN, TIMESTAMP_MAX).all()
    same_user = df["userId"].diff() == 0
    assert (df["timestamp"].diff()[same_user] > 0).all()


def test_ratings_half_stars_with_ml_like_mean(small: tuple[SyntheticSummary, pd.DataFrame]) -> None:
    _, df = small
    assert set(df["rating"].unique()) == HALF_STARS
    assert 3.3 <= df["rating"].mean() <= 3.7
    shares = df["rating"].value_counts(normalize=True)
    assert shares[4.0] == shares.max()  # ML's mode
    assert shares[0.5] < 0.05


def test_summary_matches_the_file(small: tuple[SyntheticSummary, pd.DataFrame]) -> None:
    summary, df = small
    per_user = df.groupby("userId").size()
    assert summary.n_users == df["userId"].nunique()
    assert summary.n_items == df["movieId"].nunique()
    assert summary.n_ratings == len(df)
    assert summary.rating_mean == pytest.approx(df["rating"].mean(), abs=1e-12)
    assert summary.item_gini == pytest.approx(gini_coefficient(df["movieId"].value_counts().to_numpy()))
    assert summary.max_user_ratings == per_user.max()
    assert summary.min_user_ratings == per_user.min()


def test_same_seed_same_bytes_whatever_the_batch_size(tmp_path: Path) -> None:
    first = generate_synthetic(tmp_path / "a.csv", scale=0.002, seed=7, users_per_batch=4096)
    second = generate_synthetic(tmp_path / "b.csv", scale=0.002, seed=7, users_per_batch=100)
    other = generate_synthetic(tmp_path / "c.csv", scale=0.002, seed=8)
    assert _sha256(first.path) == _sha256(second.path)
    assert first == dataclasses.replace(second, path=first.path)
    assert _sha256(first.path) != _sha256(other.path)


def test_failed_run_leaves_previous_file_and_no_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ratings.csv"
    out.write_text("previous\n")
    calls = 0
    real_block = synthetic._generate_block

    def failing_block(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk on fire")
        return real_block(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_generate_block", failing_block)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_synthetic(out, scale=0.01, users_per_batch=1)
    assert calls == 2
    assert out.read_text() == "previous\n"
    assert not (tmp_path / "ratings.csv.tmp").exists()


def test_light_and_gumbel_paths_sample_the_same_distribution() -> None:
    """Successive draws (light path) and Gumbel-top-k (heavy path) agree on inclusion frequencies."""
    catalogue = synthetic._Catalogue.build(40, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    dealt = np.array([3])
    trials, k = 4000, 6
    light = np.zeros(40)
    heavy = np.zeros(40)
    for _ in range(trials):
        light[catalogue._successive(rng, k, dealt)] += 1
        heavy[catalogue._gumbel_top_k(rng, k - 1, dealt)] += 1
    assert light[3] == heavy[3] == trials  # the dealt item is always in
    assert light.sum() == heavy.sum() == trials * k  # k distinct items each time
    assert (np.abs(light - heavy) <= 5 * np.sqrt(light + heavy) + 1).all()
    popular, rare = np.argmax(catalogue.log_p), np.argmin(catalogue.log_p)
    assert light[popular] > 10 * (light[rare] + 1)  # popularity matters


@pytest.mark.slow
def test_item_gini_ml_like_where_meaningful(tmp_path: Path) -> None:
    summary = generate_synthetic(tmp_path / "ratings.csv", scale=0.4, users_per_batch=8192)
    assert (summary.n_users, summary.n_items, summary.n_ratings) == target_counts(0.4)
    assert 0.90 <= summary.item_gini <= 0.97
    assert summary.min_user_ratings == 20
    assert summary.max_user_ratings > 50 * summary.n_ratings / summary.n_users
    assert 3.45 <= summary.rating_mean <= 3.6

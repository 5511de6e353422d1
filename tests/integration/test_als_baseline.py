"""model/baselines_als.py: Spark MLlib ALS factors -> full score matrices for the common evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.baselines_als import ALSScorer, ALSSettings, fit_als, implicit_interactions

pytestmark = pytest.mark.spark

SMALL = ALSSettings(rank=4, max_iter=10, reg_param=0.05, alpha=10.0, seed=7, num_blocks=2)


def _blocks_dataset(spark):
    """Two taste groups: users 1-6 consume items 1, 2, 3; users 7-12 consume items 4, 5, 6.

    User 13 has consumed items 1 and 2 only: item 3 is the obvious next item. Item 7 is
    consumed once by user 12 only; item 8 never appears (a catalogue item with no events).
    """
    rows = [(u, i, 4.0) for u in range(1, 7) for i in (1, 2, 3)]
    rows += [(u, i, 4.0) for u in range(7, 13) for i in (4, 5, 6)]
    rows += [(13, 1, 5.0), (13, 2, 5.0), (12, 7, 3.0), (12, 7, 3.0)]  # a repeated event: confidence 2
    return spark.createDataFrame(rows, "user_id long, item_id long, rating double")


@pytest.fixture(scope="module")
def factors(spark):
    return fit_als(_blocks_dataset(spark), SMALL)


def test_implicit_input_counts_events_per_pair(spark):
    pairs = {(r.user, r.item): r.rating for r in implicit_interactions(_blocks_dataset(spark)).collect()}
    assert pairs[(12, 7)] == 2.0 and pairs[(13, 1)] == 1.0
    assert len(pairs) == 6 * 3 + 6 * 3 + 2 + 1


def test_ranks_the_co_consumed_item_first(factors):
    scores = factors.full_scores([13], n_items=8)[0]
    unseen = {item: float(scores[item]) for item in (3, 4, 5, 6, 7)}
    assert max(unseen, key=unseen.get) == 3
    assert all(unseen[3] > unseen[other] + 1e-3 for other in (4, 5, 6, 7))
    # Users of the other group prefer that group's items.
    other = factors.full_scores([8], n_items=8)[0]
    assert float(other[[4, 5, 6]].min()) > float(other[[1, 2, 3]].max())


def test_shapes_padding_unknown_items_and_cold_users(factors):
    scores = factors.full_scores(torch.tensor([1, 13, 99]), n_items=10)
    assert scores.shape == (3, 11) and scores.dtype == torch.float32
    assert torch.isneginf(scores[:, 0]).all()  # padding column
    assert torch.isneginf(scores[:, 8:]).all()  # items 8..10 never seen by ALS
    assert torch.isfinite(scores[:2, 1:8]).all()
    assert torch.isneginf(scores[2]).all()  # user 99: cold, unrankable
    assert factors.user_factors.shape == (13, SMALL.rank)
    assert factors.item_factors.shape == (7, SMALL.rank)
    np.testing.assert_array_equal(factors.item_ids, np.arange(1, 8))
    # Scores are the factor products.
    expected = factors.user_factors[0] @ factors.item_factors.T
    np.testing.assert_allclose(scores[0, 1:8].numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="n_items"):
        factors.full_scores([1], n_items=5)


def test_same_seed_same_factors_and_independent_of_input_partitioning(spark, factors):
    again = fit_als(_blocks_dataset(spark).repartition(5), SMALL)
    np.testing.assert_allclose(again.user_factors, factors.user_factors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.item_factors, factors.item_factors, rtol=1e-5, atol=1e-6)
    different = fit_als(_blocks_dataset(spark), ALSSettings(**{**SMALL.__dict__, "seed": 8}))
    assert not np.allclose(different.user_factors, factors.user_factors)


def test_scorer_plugs_into_the_common_evaluator(factors):
    from model.evaluate import metrics_from_ranks, target_ranks

    scorer = ALSScorer(factors, n_items=8)
    users = torch.tensor([13, 1])
    scores = scorer.full_sort_predict(users=users, items=torch.zeros(2, 3, dtype=torch.long))
    ranks = target_ranks(scores, torch.tensor([3, 3]))
    # User 13 has seen items 1 and 2 (paper variant: not masked), so item 3 ranks at most 3rd.
    assert int(ranks[0]) <= 3 and int(ranks[1]) <= 3
    metrics = metrics_from_ranks(ranks, (3,))
    assert metrics["hr@3"] == 1.0

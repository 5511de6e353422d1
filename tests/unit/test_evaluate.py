"""Evaluator: agreement with RecBole's metrics, masking, ties, the production night, query times, batching."""

from __future__ import annotations

import datetime as dt

import pytest
import torch
from torch import nn

from model.data import SECONDS_PER_DAY, SequenceData
from model.evaluate import evaluate, evaluate_view, metrics_from_ranks, run_timestamp, target_ranks
from tests.sequence_fixtures import build_sequences_table, ratings_frame

KS = [5, 10, 20]
DAY = SECONDS_PER_DAY


class FixedScores(nn.Module):
    """Scores from a fixed [n_users, n_items + 1] matrix, row = user index; records query times."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores
        self.query_times: list[torch.Tensor] = []

    def full_sort_predict(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_time: torch.Tensor,
        users: torch.Tensor,
    ) -> torch.Tensor:
        self.query_times.append(query_time)
        return self.scores[users]


def recbole_metrics(scores: torch.Tensor, targets: torch.Tensor, ks: list[int]) -> dict[str, float]:
    """RecBole's own path (its collector's topk pos_index, then metrics.Hit / NDCG / MRR), run in
    the RecBole peer's environment."""
    from model.recbole_peer import recbole_metrics as peer_metrics

    return peer_metrics(scores.numpy(), targets.numpy(), tuple(ks))


def random_problem(n_users: int = 300, n_items: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_users, n_items + 1, generator=generator)
    scores[:, 0] = float("-inf")
    targets = torch.randint(1, n_items + 1, (n_users,), generator=generator)
    # make some targets land in the top 20 so every metric is far from 0
    boost = torch.rand(n_users, generator=generator) < 0.4
    scores[boost, targets[boost]] += 2.0
    return scores, targets


def test_metrics_equal_recbole_on_a_random_score_matrix() -> None:
    scores, targets = random_problem()
    ours = metrics_from_ranks(target_ranks(scores, targets), KS)
    reference = recbole_metrics(scores, targets, KS)
    assert set(ours) == set(reference)
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, abs=1e-10), name
    assert 0.1 < ours["hr@10"] < 0.9


def recbole_positions(scores: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """[B] 1-based position of each target in ``torch.topk(scores, k)`` (RecBole's collector).

    k + 1 where the target is not in the top k.
    """
    _, topk_index = torch.topk(scores, k, dim=-1)
    found = topk_index == targets[:, None]
    return torch.where(found.any(dim=1), found.int().argmax(dim=1) + 1, torch.full_like(targets, k + 1))


def tied_problem(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``random_problem`` rounded to integers (scaled first): most targets tie with other items."""
    scores, targets = random_problem(n_users=400, n_items=60, seed=seed)
    return torch.round(scores * 2.0), targets


def test_ranks_are_a_lower_bound_on_recbole_with_ties_and_equal_it_without() -> None:
    k = max(KS)
    scores, targets = tied_problem()
    ours = target_ranks(scores, targets)
    theirs = recbole_positions(scores, targets, k)
    tied = ((scores[:, 1:] == scores.gather(1, targets[:, None])).sum(dim=1) > 1) & (ours <= k)
    assert tied.sum() > 50  # the problem does exercise ties inside the cut-off
    # conservative: never better than where topk puts the target, whatever its order among equals
    assert bool((ours >= theirs).all())
    assert bool((ours[theirs > k] > k).all())  # a RecBole miss is a miss here too
    assert bool((ours > theirs).any())  # and ties do cost something
    ours_metrics = metrics_from_ranks(ours, KS)
    reference = recbole_metrics(scores, targets, KS)
    for name, value in reference.items():
        assert ours_metrics[name] <= value + 1e-12, name
    assert ours_metrics["hr@10"] < reference["hr@10"]

    # tie-free (the same problem, unrounded): rank by rank, and metric by metric, equal
    scores, targets = random_problem(n_users=400, n_items=60, seed=1)
    ours = target_ranks(scores, targets)
    theirs = recbole_positions(scores, targets, k)
    assert torch.equal(torch.where(ours <= k, ours, k + 1), theirs)
    reference = recbole_metrics(scores, targets, KS)
    for name, value in metrics_from_ranks(ours, KS).items():
        assert value == pytest.approx(reference[name], abs=1e-10), name


def test_constant_scores_against_recbole() -> None:
    # every item tied: topk's order decides RecBole's hits; the conservative rank is N for all
    scores = torch.zeros(50, 41)
    scores[:, 0] = float("-inf")
    targets = torch.arange(50) % 40 + 1
    ours = metrics_from_ranks(target_ranks(scores, targets), KS)
    reference = recbole_metrics(scores, targets, KS)
    assert all(value == 0.0 for value in ours.values())
    # wherever topk puts equals, 20 of the 40 items are in each row's top 20: some targets hit
    assert reference["hr@20"] > 0.0
    assert all(ours[name] <= value for name, value in reference.items())


def one_event_per_user(n_users: int, n_items: int) -> SequenceData:
    """Users 0..n-1 with history [item a, item b] (train, valid) then test item c, a day apart."""
    events = {
        user: [
            ((user % n_items) + 1, DAY + 10),
            (((user + 1) % n_items) + 1, 2 * DAY + 20),
            (((user + 2) % n_items) + 1, 3 * DAY + 30),
        ]
        for user in range(n_users)
    }
    return SequenceData.from_arrow(build_sequences_table(ratings_frame(events)))


def test_evaluate_view_equals_recbole_through_the_whole_path() -> None:
    data = one_event_per_user(n_users=120, n_items=40)
    view = data.view("test")
    scores, _ = random_problem(n_users=data.n_users, n_items=data.n_items, seed=3)
    model = FixedScores(scores)
    ours = evaluate_view(model, view, KS, variant="paper", batch_size=17)
    reference = recbole_metrics(scores[view.users], torch.from_numpy(view.targets), KS)
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, abs=1e-10), name


def test_ranks_count_ties_ahead_of_the_target_and_skip_padding() -> None:
    scores = torch.tensor(
        [
            [float("-inf"), 1.0, 1.0, 1.0, 1.0],  # all tied: the target is last among equals
            [float("-inf"), 3.0, 2.0, 2.0, 2.0],  # one strictly higher, two tied with it
            [99.0, 0.0, 5.0, 1.0, 2.0],  # column 0 (padding) never counts, even when scored
            [float("-inf"), 1.0, float("-inf"), 0.0, 0.0],  # a masked target never hits
        ]
    )
    targets = torch.tensor([3, 2, 2, 2])
    assert target_ranks(scores, targets).tolist() == [4, 4, 1, 5]
    metrics = metrics_from_ranks(torch.tensor([1, 2, 11]), [10])
    assert metrics["hr@10"] == pytest.approx(2 / 3)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / torch.log2(torch.tensor(3.0)).item()) / 3)
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 2) / 3)


def test_constant_scores_rank_every_target_last_and_never_hit() -> None:
    # The old rule (1 + strictly higher) put every target first: HR@10 = 1.0.
    n_items = 30
    scores = torch.full((4, n_items + 1), 0.5)
    targets = torch.tensor([1, 7, 15, 30])
    assert target_ranks(scores, targets).tolist() == [n_items] * 4
    metrics = metrics_from_ranks(target_ranks(scores, targets), KS)
    assert all(value == 0.0 for value in metrics.values())


def test_constant_model_gets_zero_through_the_whole_path() -> None:
    data = one_event_per_user(n_users=60, n_items=40)
    assert data.n_items == 40
    model = FixedScores(torch.zeros(data.n_users, data.n_items + 1))
    results = evaluate(model, data, "test", KS)
    assert results["production"].pop("no_history") == 0.0
    for variant in ("paper", "production"):  # production masks 2 seen items: rank 38 > 20
        assert all(value == 0.0 for value in results[variant].values()), variant


def test_partial_ties_hand_computed_ranks() -> None:
    scores = torch.tensor(
        [
            # items:      1    2    3    4    5    6
            [float("-inf"), 4.0, 3.0, 3.0, 2.0, 3.0, 1.0],  # target 3: 1 higher + 2 tied -> 4
            [float("-inf"), 4.0, 3.0, 3.0, 2.0, 3.0, 1.0],  # target 5: same block -> 4
            [float("-inf"), 4.0, 3.0, 3.0, 2.0, 3.0, 1.0],  # target 4: 4 higher, no tie -> 5
            [float("-inf"), 4.0, 3.0, 3.0, 2.0, 3.0, 1.0],  # target 1: unique best -> 1
            [float("-inf"), 2.0, 2.0, 5.0, 5.0, 5.0, 2.0],  # target 6: 3 higher + 2 tied -> 6
        ]
    )
    targets = torch.tensor([3, 5, 4, 1, 6])
    # old rule (strictly higher only): [2, 2, 5, 1, 4]
    assert target_ranks(scores, targets).tolist() == [4, 4, 5, 1, 6]


def test_the_target_is_not_tied_with_itself() -> None:
    scores = torch.tensor(
        [
            [float("-inf"), 7.0, 1.0, 2.0],  # target 1 alone on top: rank 1, not 2
            [float("-inf"), 2.0, 5.0, 2.0],  # target 3 tied with item 1 only: 1 + 1 + 1 = 3
            [float("-inf"), 0.0, 9.0, 1.0],  # target 1 below two items, no tie: 3 by any rule
        ]
    )
    targets = torch.tensor([1, 3, 1])
    # old rule: [1, 2, 3]; counting the target's own column as a tie would give [2, 4, 4]
    assert target_ranks(scores, targets).tolist() == [1, 3, 3]


def test_masked_and_nan_items_never_count_ahead() -> None:
    inf, nan = float("inf"), float("nan")
    scores = torch.tensor(
        [
            [-inf, -inf, 1.0, 1.0, -inf],  # masked items behind a target tied with item 2 -> 2
            [-inf, nan, 1.0, nan, 0.5],  # NaN items never count ahead: rank 1
            [-inf, nan, 1.0, 1.0, 2.0],  # NaN ignored, 1 higher + 1 tied -> 3
            [-inf, -inf, -inf, -inf, 0.0],  # a masked target among masked items never hits
            [-inf, 1.0, nan, 1.0, 1.0],  # a NaN target never hits
            [-inf, 1.0, 1.0, 1.0, 1.0],  # column 0 as target (padding) never hits
            [-inf, inf, 1.0, inf, 0.0],  # +inf target tied with another +inf -> 2
        ]
    )
    targets = torch.tensor([3, 2, 2, 2, 2, 0, 1])
    # old rule: [1, 1, 2, 5, 5, 5, 1]
    assert target_ranks(scores, targets).tolist() == [2, 1, 3, 5, 5, 5, 2]


def test_production_masks_seen_items_and_paper_does_not() -> None:
    # user 0: train item 1, valid item 2, test item 3 on three days; the model prefers seen items 1 and 2
    data = SequenceData.from_arrow(
        build_sequences_table(ratings_frame({0: [(1, DAY), (2, 2 * DAY), (3, 3 * DAY)]}))
    )
    scores = torch.tensor([[float("-inf"), 9.0, 8.0, 7.0]])
    model = FixedScores(scores)
    results = evaluate(model, data, "test", [1, 5])
    assert results["paper"]["hr@1"] == 0.0 and results["paper"]["mrr@5"] == pytest.approx(1 / 3)
    assert results["production"]["hr@1"] == 1.0
    # on the valid split only the train item (1) is masked: valid target 2 ranks first
    valid = evaluate(model, data, "valid", [1])
    assert valid["production"]["hr@1"] == 1.0 and valid["paper"]["hr@1"] == 0.0


def test_a_seen_target_is_a_miss_in_production() -> None:
    data = SequenceData.from_arrow(
        build_sequences_table(ratings_frame({0: [(1, DAY), (2, 2 * DAY), (1, 3 * DAY)]}))
    )
    model = FixedScores(torch.tensor([[float("-inf"), 9.0, 1.0]]))
    results = evaluate(model, data, "test", [1, 2])
    assert results["paper"]["hr@1"] == 1.0
    assert results["production"]["hr@2"] == 0.0


def test_query_time_is_the_targets_in_paper_and_the_night_before_its_day_in_production() -> None:
    data = SequenceData.from_arrow(
        build_sequences_table(
            ratings_frame(
                {
                    0: [(1, DAY + 10), (2, 2 * DAY + 20), (3, 5 * DAY + 30)],
                    1: [(1, DAY + 10), (2, 4 * DAY + 500), (3, 4 * DAY + 900)],
                }
            )
        )
    )
    model = FixedScores(torch.zeros(2, 4))
    evaluate_view(model, data.view("test"), [1], variant="paper")
    assert model.query_times[-1].tolist() == [5 * DAY + 30, 4 * DAY + 900]
    night = data.night_view("test")
    evaluate_view(model, night.view, [1], variant="production", seen=night.seen)
    # The end of the night before each target's day; user 1's event of that day (item 2) is
    # unknown to that night, so the input ends at item 1.
    assert model.query_times[-1].tolist() == [5 * DAY, 4 * DAY]
    assert night.view.lengths.tolist() == [2, 1]


def test_production_inputs_and_mask_hold_only_what_the_night_before_knew() -> None:
    # user 0 rates items 1, 2 on day 1; items 3, 4 and then the test target 5 on day 3
    events = {0: [(1, DAY + 1), (2, DAY + 2), (3, 3 * DAY + 1), (4, 3 * DAY + 2), (5, 3 * DAY + 3)]}
    data = SequenceData.from_arrow(build_sequences_table(ratings_frame(events)))
    night = data.night_view("test")
    batch = night.view.collate([0])
    assert batch.items.tolist() == [[data.item_vocab.encode([1])[0], data.item_vocab.encode([2])[0]]]
    known = set(night.seen[0].indices.tolist())
    assert known == set(data.item_vocab.encode([1, 2]).tolist())  # items 3 and 4 came after that night
    # the window cut comes after the night's cut: the most recent known event; the mask still
    # holds every item known by then, not only the window's
    windowed = data.night_view("test", max_len=1)
    assert windowed.view.collate([0]).items.tolist() == [[data.item_vocab.encode([2])[0]]]
    assert set(windowed.seen[0].indices.tolist()) == known
    # item 4 (rated the same day, before the target) is not masked: the night did not know it
    scores = torch.zeros(1, data.n_items + 1)
    scores[0, data.item_vocab.encode([4])[0]] = 2.0
    scores[0, data.item_vocab.encode([5])[0]] = 1.0
    result = evaluate(FixedScores(scores), data, "test", [1, 2])["production"]
    assert result["hr@1"] == 0.0 and result["hr@2"] == 1.0


def test_users_with_nothing_before_the_night_are_misses() -> None:
    # user 0: every event on the target's day (cold, a miss); user 1: a day apart (scored, a hit)
    events = {0: [(1, DAY + 1), (2, DAY + 2), (3, DAY + 3)], 1: [(1, DAY), (2, 2 * DAY), (3, 3 * DAY)]}
    data = SequenceData.from_arrow(build_sequences_table(ratings_frame(events)))
    night = data.night_view("test")
    assert night.cold == 1 and night.view.users.tolist() == [1]
    scores = torch.zeros(2, data.n_items + 1)
    scores[:, data.item_vocab.encode([3])[0]] = 1.0  # both targets ranked first when scored
    results = evaluate(FixedScores(scores), data, "test", [1])
    assert results["paper"]["hr@1"] == 1.0
    expected = {"hr@1": 0.5, "ndcg@1": 0.5, "mrr@1": 0.5, "no_history": 0.5}
    assert results["production"] == pytest.approx(expected)
    # every user cold: zeros, not a division by zero
    alone = SequenceData.from_arrow(build_sequences_table(ratings_frame({0: events[0]})))
    assert evaluate(FixedScores(scores[:1]), alone, "test", [1])["production"] == {
        "hr@1": 0.0,
        "ndcg@1": 0.0,
        "mrr@1": 0.0,
        "no_history": 1.0,
    }


def test_production_needs_seen_and_a_split_with_targets() -> None:
    data = one_event_per_user(n_users=3, n_items=5)
    model = FixedScores(torch.zeros(3, 6))
    with pytest.raises(ValueError, match="seen"):
        evaluate_view(model, data.night_view("test").view, KS, variant="production")
    same_day = SequenceData.from_arrow(build_sequences_table(ratings_frame({0: [(1, 1), (2, 2), (3, 3)]})))
    with pytest.raises(ValueError, match="night view"):  # the test view's inputs reach the target's day
        evaluate_view(model, same_day.view("test"), KS, variant="production", seen=same_day.seen("test"))
    with pytest.raises(ValueError, match="valid or test"):
        data.night_view("full")


def test_batch_size_does_not_change_results() -> None:
    data = one_event_per_user(n_users=50, n_items=30)
    model = FixedScores(random_problem(n_users=50, n_items=30, seed=5)[0])
    small = evaluate(model, data, "test", KS, batch_size=3)
    large = evaluate(model, data, "test", KS, batch_size=1000)
    for variant in small:
        assert small[variant] == pytest.approx(large[variant], abs=1e-12)


def test_run_timestamp_is_the_end_of_the_run_date() -> None:
    assert run_timestamp(dt.date(1970, 1, 1)) == 86_400

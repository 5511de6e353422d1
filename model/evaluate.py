"""Leave-one-out full-ranking evaluation: HR, NDCG and MRR at K against every item.

Each evaluated user has one target (the valid or the test item, see :mod:`model.data`) and
the model scores all items (``full_sort_predict``). Two variants, both reported:

- ``paper``: the protocol of SS4Rec's paper and RecBole's sequential benchmarks as the
  paper ran them: seen items are not masked and the query time is the target's own
  timestamp (which production cannot know);
- ``production``: the target as the nightly job meets it. The user is scored by the night
  before the target's day (its run date ends at the UTC midnight that starts that day), from
  the events dated before that midnight only, and at that midnight as the query time; the
  items the user had by then are masked (score -inf). A target the user had already seen
  counts as a miss (production never recommends a seen item), and so does a user with no
  event before that night: the nightly table holds no row for them. The share of such users
  is reported as ``no_history`` (:meth:`model.data.SequenceData.night_view`). Events of the
  target's own day before it are unknown to that night, as they are to the product. (Models
  with per-user weights, NCF and ALS, were fitted on the split's whole input, the target's day
  included: the cut is on what they are fed, not on what they learned.)

Ranks are conservative: every other item (1..N; column 0, padding, never counts) scored
at least as high as the target is ranked ahead of it,
``rank = 1 + #(other items scored > t) + #(other items scored == t)`` with ``t`` the target's
score, so the target comes last among the items tied with it. Counting only strictly higher
items (the target first among equals) rewards ties: a model that scores every item the same
would put every target first and get HR@k = 1.0, and Pop's integer counts, tied in large
blocks, would be flattered. Under this rule a constant model ranks every target N-th
(HR@k = 0 for k < N; breaking ties at random would give about k/N). RecBole's collector
takes ``torch.topk`` of the score matrix and reads where the target lands, which among
equals depends on topk's internal order; this rule never ranks a target better than that
position (a lower bound on RecBole's metrics) and equals it whenever the target's score is
not tied with another item's. Items scored -inf (masked) or NaN never count ahead of a
finite target; a target scored -inf (masked) or NaN never hits (rank N + 1).

Per user, with ``r`` the rank and ``k`` a cut-off:
HR@k = [r <= k], NDCG@k = [r <= k] / log2(r + 1) (one relevant item, so IDCG = 1),
MRR@k = [r <= k] / r; each is averaged over users, as RecBole's Hit, NDCG and MRR do.

Memory stays bounded: users are scored ``batch_size`` at a time and ranks come from one
comparison with the target's score, never from sorting every item.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from model.data import SequenceBatch, SequenceData, SplitView, ViewName, model_arguments, night_start

log = logging.getLogger(__name__)

Variant = Literal["paper", "production"]
VARIANTS: tuple[Variant, ...] = ("paper", "production")
METRICS = ("hr", "ndcg", "mrr")


# How a model is evaluated: part of the cache key of every stored result (the results table's runs,
# the time-scale study's settings), so a change of protocol never reuses a result of the old one.
# 2: ties are ranked ahead of the target (target_ranks).
# 3: production at the night before the target's day (SequenceData.night_view).
EVALUATION_PROTOCOL = 3


def run_timestamp(run_date: dt.date) -> int:
    """The production query time of a run: midnight UTC at the end of ``run_date`` (seconds).

    A run's partition holds events up to the end of its logical date.
    """
    end = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return int(end.timestamp())


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B] 1-based conservative rank of each target among items 1..N of ``scores`` [B, N + 1].

    ``rank = 1 + number of other items scored >= the target``: ties are ranked ahead of the
    target. Items scored -inf or NaN never count ahead of a finite target; a target scored
    -inf or NaN (or the padding column 0) gets rank N + 1, beyond every cut-off.
    """
    target_score = scores.gather(1, targets[:, None])
    # One comparison over items 1..N. A finite (or +inf) target is >= itself, so the count is
    # 1 + the other items scored >= it: the rank. NaN compares False on either side, so a NaN
    # item never counts; a -inf item counts only for a -inf target, which never hits anyway.
    ranks = (scores[:, 1:] >= target_score).sum(dim=1)
    never = torch.isneginf(target_score[:, 0]) | torch.isnan(target_score[:, 0]) | (targets == 0)
    return torch.where(never, torch.full_like(ranks, scores.shape[1]), ranks)


def metric_sums(ranks: torch.Tensor, ks: Iterable[int]) -> dict[str, float]:
    """Per-metric sums over the users of ``ranks`` (divide by the user count for the mean)."""
    ranks = ranks.to(torch.float64)
    sums = {}
    for k in ks:
        hit = (ranks <= k).to(torch.float64)
        sums[f"hr@{k}"] = float(hit.sum())
        sums[f"ndcg@{k}"] = float((hit / torch.log2(ranks + 1)).sum())
        sums[f"mrr@{k}"] = float((hit / ranks).sum())
    return sums


def metrics_from_ranks(ranks: torch.Tensor, ks: Iterable[int]) -> dict[str, float]:
    """Mean HR/NDCG/MRR at each k (keys ``hr@10``, ``ndcg@10``, ``mrr@10``, ...)."""
    return {name: value / max(len(ranks), 1) for name, value in metric_sums(ranks, ks).items()}


def mask_seen(scores: torch.Tensor, seen: sp.csr_matrix, users: torch.Tensor) -> torch.Tensor:
    """``scores`` with each row's seen items (rows of ``seen`` for ``users``) set to -inf (out of place)."""
    rows_of = seen[users.cpu().numpy()]
    rows = np.repeat(np.arange(rows_of.shape[0]), np.diff(rows_of.indptr))
    index = (
        torch.from_numpy(rows).to(scores.device),
        torch.from_numpy(rows_of.indices.astype(np.int64)).to(scores.device),
    )
    return scores.index_put(index, torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device))


def query_times(batch: SequenceBatch, variant: Variant) -> torch.Tensor:
    """[B] the query time fed to the model: the target's timestamp (paper), or the end of the
    night before the target's day (production), never before the user's last input event."""
    if variant == "paper":
        return batch.target_time
    last_input = batch.timestamps.gather(1, (batch.lengths - 1)[:, None]).squeeze(1)
    return torch.maximum(last_input, night_start(batch.target_time))


@torch.no_grad()
def evaluate_view(
    model: nn.Module,
    view: SplitView,
    ks: Sequence[int],
    variant: Variant = "paper",
    seen: sp.csr_matrix | None = None,
    misses: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Mean metrics of ``model`` over the users of ``view`` and ``misses`` more users who never hit
    (the cold users of a night view). Production needs ``seen`` and a night view
    (``data.night_view(name)``: its ``view``, ``seen`` and ``cold``)."""
    if variant == "production":
        if seen is None:
            raise ValueError("the production variant masks seen items: pass a night view's seen")
        last_input = view.flat_timestamps[view.starts + view.lengths - 1]
        if len(view) and not (last_input < night_start(view.target_time)).all():
            raise ValueError(
                "the production variant needs a night view (data.night_view), inputs before the target's day"
            )
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    try:
        for batch in view.loader(batch_size):
            batch = batch.to(device)
            query_time = query_times(batch, variant)
            scores = model.full_sort_predict(**model_arguments(model.full_sort_predict, batch, query_time))
            scores = scores.float()
            if variant == "production":
                scores = mask_seen(scores, seen, batch.users)
            for name, value in metric_sums(target_ranks(scores, batch.targets), ks).items():
                totals[name] = totals.get(name, 0.0) + value
    finally:
        model.train(was_training)
    if not totals:  # no user scored: every metric is 0 (cold users are misses)
        totals = metric_sums(torch.zeros(0, dtype=torch.long), ks)
    return {name: value / max(len(view) + misses, 1) for name, value in totals.items()}


def evaluate(
    model: nn.Module,
    data: SequenceData,
    split: ViewName,
    ks: Sequence[int],
    variants: Sequence[Variant] = VARIANTS,
    max_len: int | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """``{variant: metrics}`` of ``model`` on the ``valid`` or ``test`` users of ``data``; the
    production metrics also hold ``no_history``, the share of users counted as misses for
    having no event before the night that scores them."""
    if split not in ("valid", "test"):
        raise ValueError(f"evaluation needs a split with targets (valid or test), got {split!r}")
    results = {}
    for variant in variants:
        if variant == "production":
            night = data.night_view(split, max_len=max_len)
            view, seen, misses = night.view, night.seen, night.cold
        else:
            view, seen, misses = data.view(split, max_len=max_len), None, 0
        metrics = evaluate_view(
            model, view, ks, variant=variant, seen=seen, misses=misses, batch_size=batch_size, device=device
        )
        if variant == "production":
            metrics["no_history"] = misses / max(len(view) + misses, 1)
        results[variant] = metrics
        log.info("%s %s: %d users evaluated (%d without history, misses)", split, variant, len(view), misses)
    return results

"""Spark MLlib ALS: the distributed peer baseline.

Fits ``pyspark.ml.recommendation.ALS`` on the training interactions (a Spark DataFrame) and
collects the two factor tables to the driver; full score matrices are then
``user_factors @ item_factors.T`` computed in torch, batch by batch, so ALS is ranked
against *all* items by the same evaluator as every other model (``model.evaluate``: both the
paper and the production variant). Factors are small: ML-25M at rank 64 is 162,541 x 64 and
59,047 x 64 float32, about 57 MB in all. ``ALS.recommendForUserSubset`` is not used: it
returns a top-k list, not a score for every item, and cannot rank a target outside it.

Ids. The user and item columns must hold integer ids that fit in a Java int (Spark ALS's
requirement); use the model's item index (1..N, 0 = padding) and user index, e.g. from
``model.data``, so the score matrix columns line up with the other models'.
Column ``j`` of :meth:`ALSFactors.full_scores` is the score of item id ``j``; column 0
(padding) and items ALS never saw in training are ``-inf``. A user ALS never saw gets a row
of ``-inf`` (every target a miss) rather than a row of equal scores that a rank-by-count
evaluator would call a hit: cold users are honestly unrankable by ALS (the equivalent of
``coldStartStrategy="drop"``, which is also set on the Spark model for ``transform``).

Implicit feedback (:data:`DEFAULT_SETTINGS`, ``implicitPrefs=True``): every (user, item) pair
with at least one event gets preference 1 and confidence ``1 + alpha * r`` where ``r`` is the
number of events of that pair (1 for MovieLens, which has one rating per pair; ratings
themselves are not used: the task is next-item ranking, not rating prediction). With
``rating_col`` given and ``implicit_prefs=False`` it is explicit ALS on that column instead.

Default setting (small, documented; chosen on validation, never on test): rank 64 (SS4Rec's
hidden size), ``maxIter`` 15, ``regParam`` 0.1 and ``alpha`` 1.0 (Spark's defaults), ``seed``
2020. A three-point alpha sweep on ML-100K (leave-one-out by exact time, rank 64, reg 0.1,
15 iterations; production variant, validation NDCG@10 / HR@10): alpha 1 -> 0.088 / 0.171,
alpha 10 -> 0.075 / 0.147, alpha 40 -> 0.068 / 0.143. (ALS is not sequential and scores the
items a user already rated highest, so its paper-variant numbers, seen items unmasked, are
near zero: NDCG@10 0.007 at alpha 1; compare it on the production variant.)
Spark ALS is deterministic
for a fixed seed, input and partitioning: the input is repartitioned by a fixed hash to a
fixed number of partitions before fitting so that results do not depend on the upstream
plan's partitioning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class ALSSettings:
    rank: int = 64
    max_iter: int = 15
    reg_param: float = 0.1
    alpha: float = 1.0
    implicit_prefs: bool = True
    nonnegative: bool = False
    seed: int = 2020
    # Spark's ALS blocks (and the input partitions) are fixed so results are reproducible.
    num_blocks: int = 4
    checkpoint_interval: int = 10


DEFAULT_SETTINGS = ALSSettings()


@dataclass
class ALSFactors:
    """The fitted factor tables, on the driver (ids sorted ascending)."""

    user_ids: np.ndarray  # [U] int64
    user_factors: np.ndarray  # [U, rank] float32
    item_ids: np.ndarray  # [I] int64
    item_factors: np.ndarray  # [I, rank] float32
    settings: ALSSettings

    @property
    def n_items(self) -> int:
        """Largest item id seen in training (the default width of a score row is this + 1)."""
        return int(self.item_ids.max()) if len(self.item_ids) else 0

    def full_scores(
        self,
        users: Sequence[int] | np.ndarray | torch.Tensor,
        n_items: int | None = None,
        batch_size: int = 4096,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """[len(users), n_items + 1] float32 scores of every item id 0..n_items for ``users``.

        Column 0 and items without factors are -inf; users without factors get all -inf.
        """
        n_items = self.n_items if n_items is None else int(n_items)
        if len(self.item_ids) and self.item_ids.max() > n_items:
            raise ValueError(f"n_items={n_items} is smaller than the largest trained item id {self.n_items}")
        users_np = (
            users.detach().cpu().numpy() if isinstance(users, torch.Tensor) else np.asarray(users)
        ).astype(np.int64)
        user_table = torch.from_numpy(self.user_factors).to(device)
        item_table = torch.from_numpy(self.item_factors).to(device)
        item_cols = torch.from_numpy(self.item_ids).to(device)
        position = np.searchsorted(self.user_ids, users_np)
        position = np.minimum(position, max(len(self.user_ids) - 1, 0))
        known = (
            self.user_ids[position] == users_np if len(self.user_ids) else np.zeros(len(users_np), dtype=bool)
        )
        out = torch.full((len(users_np), n_items + 1), float("-inf"), dtype=torch.float32, device=device)
        for start in range(0, len(users_np), batch_size):
            rows = slice(start, start + batch_size)
            known_rows = np.nonzero(known[rows])[0]
            if len(known_rows) == 0:
                continue
            factors = user_table[torch.from_numpy(position[rows][known_rows]).to(device)]
            block = factors @ item_table.T  # [b, I]
            target_rows = torch.from_numpy(known_rows + start).to(device)
            out[target_rows[:, None], item_cols[None, :]] = block
        return out


class ALSScorer(nn.Module):
    """ALS factors behind the ``full_sort_predict`` interface ``model.evaluate`` calls.

    ``users`` are the same user ids ALS was trained on (``model.data`` user index); the
    sequence arguments are accepted and ignored: ALS is not sequential.
    """

    def __init__(self, factors: ALSFactors, n_items: int) -> None:
        super().__init__()
        self.factors = factors
        self.n_items = n_items

    def full_sort_predict(
        self,
        users: torch.Tensor,
        items: torch.Tensor | None = None,
        timestamps: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        query_time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.factors.full_scores(users, self.n_items, device=users.device)


def implicit_interactions(
    interactions: DataFrame, user_col: str = "user_id", item_col: str = "item_id"
) -> DataFrame:
    """(user, item, rating = number of events of the pair) as ints/float: ALS's implicit input."""
    from pyspark.sql import functions as F

    return interactions.groupBy(
        F.col(user_col).cast("int").alias("user"), F.col(item_col).cast("int").alias("item")
    ).agg(F.count(F.lit(1)).cast("float").alias("rating"))


def _check_id_range(frame: DataFrame, column: str) -> None:
    from pyspark.sql import functions as F

    row = frame.agg(F.min(column).alias("lo"), F.max(column).alias("hi")).first()
    if row is None or row["lo"] is None:
        raise ValueError("ALS needs at least one training interaction")
    if row["lo"] < 0 or row["hi"] > INT_MAX:
        raise ValueError(f"ALS ids must be non-negative Java ints; {column} spans [{row['lo']}, {row['hi']}]")


def _factor_table(frame: DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Spark ``(id, features)`` factor table -> (ids [n] int64, factors [n, rank] float32), sorted by id."""
    rows = frame.orderBy("id").collect()
    ids = np.fromiter((row["id"] for row in rows), dtype=np.int64, count=len(rows))
    if not rows:
        return ids, np.zeros((0, 0), dtype=np.float32)
    factors = np.asarray([row["features"] for row in rows], dtype=np.float32)
    return ids, factors


def fit_als(
    interactions: DataFrame,
    settings: ALSSettings = DEFAULT_SETTINGS,
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str | None = None,
) -> ALSFactors:
    """Fit Spark ALS on ``interactions`` and collect its factors (see the module docstring).

    ``rating_col`` is only used for explicit ALS (``settings.implicit_prefs=False``).
    """
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    if settings.implicit_prefs:
        train = implicit_interactions(interactions, user_col, item_col)
    else:
        if rating_col is None:
            raise ValueError("explicit ALS (implicit_prefs=False) needs rating_col")
        train = interactions.select(
            F.col(user_col).cast("int").alias("user"),
            F.col(item_col).cast("int").alias("item"),
            F.col(rating_col).cast("float").alias("rating"),
        )
    for column in (user_col, item_col):
        _check_id_range(interactions, column)
    train = train.repartition(settings.num_blocks, "user", "item").sortWithinPartitions("user", "item")
    als = ALS(
        rank=settings.rank,
        maxIter=settings.max_iter,
        regParam=settings.reg_param,
        alpha=settings.alpha,
        implicitPrefs=settings.implicit_prefs,
        nonnegative=settings.nonnegative,
        seed=settings.seed,
        numUserBlocks=settings.num_blocks,
        numItemBlocks=settings.num_blocks,
        checkpointInterval=settings.checkpoint_interval,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        coldStartStrategy="drop",
    )
    model = als.fit(train)
    user_ids, user_factors = _factor_table(model.userFactors)
    item_ids, item_factors = _factor_table(model.itemFactors)
    log.info(
        "ALS fitted: %d users, %d items, rank %d (%s)",
        len(user_ids),
        len(item_ids),
        settings.rank,
        asdict(settings),
    )
    return ALSFactors(user_ids, user_factors, item_ids, item_factors, settings)


def settings_dict(settings: ALSSettings = DEFAULT_SETTINGS) -> dict[str, Any]:
    """The settings as a plain dict (for run records)."""
    return asdict(settings)

"""NCF: NeuMF (He et al., WWW 2017) for ranking, plus a rating head for the seeds' RMSE.

Ranking model: GMF (user * item embeddings) and an MLP over the concatenated user and item
embeddings (64 + 64 -> 128 -> 64, ReLU, dropout 0.1, RecBole's NeuMF defaults), joined by a
linear layer into one logit. It trains on implicit feedback: every training position of a
user is a positive, each with ``n_negatives`` (4, the paper's setting) items drawn uniformly
from all items (not excluding the user's positives), binary cross-entropy. It takes the same
batches as the sequential models plus the batch's ``users``; order and time are ignored.

Rating RMSE (the seeds' metric): the ranking network is frozen and a small head predicts
the explicit rating, ``global mean + user bias + item bias + w . NeuMF features``, fitted
by ridge regression on the ratings of training positions (:func:`fit_rating_head`); RMSE is
reported on the ratings of test positions (:func:`rating_rmse`). Fitting it leaves ranking
untouched.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import lsqr
from torch import nn

from model.data import SPLIT_TEST, SPLIT_TRAIN, SequenceData
from recsys.config import ModelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NCFConfig:
    n_users: int
    n_items: int
    embedding_size: int = 64
    mlp_hidden_sizes: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    n_negatives: int = 4

    @classmethod
    def from_model_config(cls, model_config: ModelConfig, n_users: int, n_items: int) -> NCFConfig:
        """Embedding size from ``model.hidden_size``; the rest are RecBole's NeuMF defaults."""
        size = model_config.hidden_size
        return cls(n_users=n_users, n_items=n_items, embedding_size=size, mlp_hidden_sizes=(2 * size, size))


class NCF(nn.Module):
    def __init__(self, config: NCFConfig) -> None:
        super().__init__()
        self.config = config
        self.n_items = config.n_items
        size = config.embedding_size
        self.gmf_user = nn.Embedding(config.n_users, size)
        self.gmf_item = nn.Embedding(config.n_items + 1, size, padding_idx=0)
        self.mlp_user = nn.Embedding(config.n_users, size)
        self.mlp_item = nn.Embedding(config.n_items + 1, size, padding_idx=0)
        layers: list[nn.Module] = []
        width = 2 * size
        for hidden in config.mlp_hidden_sizes:
            layers += [nn.Dropout(config.dropout), nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.mlp = nn.Sequential(*layers)
        self.feature_size = size + width
        self.predict_layer = nn.Linear(self.feature_size, 1)
        self.rating_user_bias = nn.Embedding(config.n_users, 1)
        self.rating_item_bias = nn.Embedding(config.n_items + 1, 1)
        self.rating_weights = nn.Linear(self.feature_size, 1, bias=False)
        self.register_buffer("rating_mean", torch.zeros(()))
        for embedding in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(embedding.weight, std=0.01)
        for module in (self.rating_user_bias, self.rating_item_bias, self.rating_weights):
            nn.init.zeros_(module.weight)

    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[..., feature_size] NeuMF features of (user, item) pairs of the same shape."""
        gmf = self.gmf_user(users) * self.gmf_item(items)
        mlp = self.mlp(torch.cat([self.mlp_user(users), self.mlp_item(items)], dim=-1))
        return torch.cat([gmf, mlp], dim=-1)

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.predict_layer(self.features(users, items)).squeeze(-1)

    def calculate_loss(
        self, items: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor, users: torch.Tensor
    ) -> torch.Tensor:
        inside = torch.arange(items.shape[1], device=items.device)[None, :] < lengths[:, None]
        pair_users = users[:, None].expand_as(items)[inside]
        positives = items[inside]
        negatives = torch.randint(
            1, self.n_items + 1, (positives.shape[0], self.config.n_negatives), device=items.device
        )
        positive_logits = self.logits(pair_users, positives)
        negative_logits = self.logits(pair_users[:, None].expand_as(negatives), negatives)
        logits = torch.cat([positive_logits, negative_logits.flatten()]).float()
        labels = torch.cat(
            [torch.ones_like(positive_logits), torch.zeros_like(negative_logits.flatten())]
        ).float()
        return nn.functional.binary_cross_entropy_with_logits(logits, labels)

    def full_sort_predict(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_time: torch.Tensor,
        users: torch.Tensor,
    ) -> torch.Tensor:
        all_items = torch.arange(1, self.n_items + 1, device=users.device)
        grid_users = users[:, None].expand(-1, self.n_items)
        scores = self.logits(grid_users, all_items[None, :].expand_as(grid_users))
        padding = torch.full_like(scores[:, :1], float("-inf"))
        return torch.cat([padding, scores], dim=1)

    @torch.no_grad()
    def predict_rating(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Explicit rating estimate of (user, item) pairs (see :func:`fit_rating_head`)."""
        features = self.features(users, items)
        return (
            self.rating_mean
            + self.rating_user_bias(users).squeeze(-1)
            + self.rating_item_bias(items).squeeze(-1)
            + self.rating_weights(features).squeeze(-1)
        )


@torch.no_grad()
def fit_rating_head(
    model: NCF, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor, l2: float = 1.0
) -> float:
    """Fit the rating head to (user, item, rating) triples with the NeuMF network frozen.

    With the features fixed the head is linear (one-hot user, one-hot item, features), so it
    is solved exactly as ridge regression (``scipy.sparse.linalg.lsqr``, penalty ``l2`` on
    every coefficient) around the global mean: no learning rate, no epochs, deterministic.
    Returns the training RMSE.
    """
    was_training = model.training
    model.eval()
    features = model.features(users, items).float().cpu().numpy()
    n_users, n_items = model.rating_user_bias.num_embeddings, model.rating_item_bias.num_embeddings
    rows = np.arange(len(ratings))
    design = sp.hstack(
        [
            sp.csr_matrix((np.ones(len(rows)), (rows, users.cpu().numpy())), shape=(len(rows), n_users)),
            sp.csr_matrix((np.ones(len(rows)), (rows, items.cpu().numpy())), shape=(len(rows), n_items)),
            sp.csr_matrix(features),
        ]
    ).tocsr()
    mean = float(ratings.mean())
    residual = ratings.cpu().numpy().astype(np.float64) - mean
    solution = lsqr(design, residual, damp=l2**0.5, atol=1e-10, btol=1e-10)[0]
    as_param = functools.partial(torch.as_tensor, dtype=torch.float32, device=model.rating_mean.device)
    model.rating_mean.fill_(mean)
    model.rating_user_bias.weight.copy_(as_param(solution[:n_users, None]))
    model.rating_item_bias.weight.copy_(as_param(solution[n_users : n_users + n_items, None]))
    model.rating_weights.weight.copy_(as_param(solution[None, n_users + n_items :]))
    model.train(was_training)
    return rating_rmse(model, users, items, ratings)


@torch.no_grad()
def rating_rmse(model: NCF, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    error = model.predict_rating(users, items) - ratings
    model.train(was_training)
    return float(error.pow(2).mean().sqrt())


def attach_ratings(interactions: pd.DataFrame, ratings: pd.DataFrame) -> pd.DataFrame:
    """``interactions`` (user_id, item_id, timestamp) with the ``rating`` of the same event.

    Events without a rating are dropped (with a warning); a repeated event keeps its first rating.
    """
    keys = ["user_id", "item_id", "timestamp"]
    rated = ratings[[*keys, "rating"]].drop_duplicates(keys)
    joined = interactions.merge(rated, on=keys, how="inner")
    if len(joined) < len(interactions):
        log.warning(
            "%d of %d events have no rating; left out", len(interactions) - len(joined), len(interactions)
        )
    return joined


def rating_report(model: NCF, data: SequenceData, ratings: pd.DataFrame) -> dict[str, float]:
    """Fit the rating head on training positions' ratings; RMSE on test positions' ratings.

    ``ratings`` has columns user_id, item_id, rating, timestamp (the silver table). The RMSE of
    always predicting the training mean is reported beside it for scale.
    """
    pairs = {}
    for name, split in (("train", SPLIT_TRAIN), ("test", SPLIT_TEST)):
        rated = attach_ratings(data.interactions(split), ratings)
        if rated.empty:
            raise ValueError(f"no {name} event has a rating: are the ratings from the same run?")
        pairs[name] = (
            torch.from_numpy(data.user_vocab.encode(rated["user_id"].to_numpy())),
            torch.from_numpy(data.item_vocab.encode(rated["item_id"].to_numpy())),
            torch.as_tensor(rated["rating"].to_numpy(), dtype=torch.float32),
        )
    train_rmse = fit_rating_head(model, *pairs["train"])
    test_ratings = pairs["test"][2]
    train_mean = float(pairs["train"][2].mean())
    return {
        "rating_rmse": rating_rmse(model, *pairs["test"]),
        "rating_rmse_train": train_rmse,
        "rating_rmse_global_mean": float((test_ratings - train_mean).pow(2).mean().sqrt()),
        "rated_test_events": len(test_ratings),
    }

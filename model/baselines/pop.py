"""Popularity: every user gets the items ranked by how often they are a training target."""

from __future__ import annotations

import torch
from torch import nn


class Pop(nn.Module):
    """Scores = how often each item is a next-item target in the training rows the trainer feeds it.

    Like RecBole's Pop, it counts the targets (every position of a row but its first, so
    windows that overlap by one event count each event once) inside ``calculate_loss``
    during one pass over the training data (``single_pass`` tells the trainer to run one
    epoch), and returns a zero loss on a dummy parameter so a gradient optimizer can run
    unchanged.
    """

    single_pass = True

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.n_items = n_items
        self.register_buffer("item_counts", torch.zeros(n_items + 1, dtype=torch.float64))
        self.unused = nn.Parameter(torch.zeros(1))

    def calculate_loss(
        self, items: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        positions = torch.arange(items.shape[1], device=items.device)
        inside = (positions[None, :] >= 1) & (positions[None, :] < lengths[:, None])
        self.item_counts += torch.bincount(items[inside], minlength=self.n_items + 1).to(self.item_counts)
        return self.unused.sum() * 0.0

    def full_sort_predict(
        self, items: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor, query_time: torch.Tensor
    ) -> torch.Tensor:
        scores = self.item_counts.float().clone()
        scores[0] = float("-inf")
        return scores.expand(items.shape[0], -1)

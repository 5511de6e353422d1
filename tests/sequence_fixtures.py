"""Test support: the ``sequences`` table built in pandas/Arrow, plus a tiny SS4Rec stand-in.

``build_sequences_table`` follows the contract of the Spark pipeline's ``sequences`` Delta
table (one row per user; arrays in chronological order; leave-one-out split markers computed
on the full history, then truncated to the most recent ``max_seq_len`` events) so the model
code can be tested without a JVM. It is not the pipeline, but follows its rules: ties in time
keep the order of the rows in the ratings frame (the pipeline's file order), ``time_gaps`` is
the gap to the previous event (0 for the first), a session starts after an inactivity gap
greater than ``session_gap_seconds``, and ``n_events`` is the full history length.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import nn

from recsys.schema import ITEM_COL, TIMESTAMP_COL, USER_COL

SEQUENCES_SCHEMA = pa.schema(
    [
        ("valid_from", pa.date32()),
        ("user_id", pa.int64()),
        ("item_ids", pa.list_(pa.int64())),
        ("timestamps", pa.list_(pa.int64())),
        ("time_gaps", pa.list_(pa.int64())),
        ("session_ids", pa.list_(pa.int32())),
        ("split", pa.list_(pa.int8())),
        ("n_events", pa.int32()),
    ]
)


def leave_one_out_split(n_events: int) -> list[int]:
    """Split markers of a full history: 0 train, 1 valid (second-to-last), 2 test (last)."""
    if n_events >= 3:
        return [0] * (n_events - 2) + [1, 2]
    if n_events == 2:
        return [0, 2]
    return [0] * n_events


def build_sequences_table(
    ratings: pd.DataFrame,
    valid_from: dt.date = dt.date(2024, 1, 1),
    max_seq_len: int = 200,
    session_gap_seconds: int = 1800,
) -> pa.Table:
    """The ``sequences`` table of ``ratings`` (columns user_id, item_id, rating, timestamp): one
    version per user, valid from ``valid_from``."""
    ordered = ratings.sort_values([USER_COL, TIMESTAMP_COL], kind="stable")
    rows: dict[str, list] = {name: [] for name in SEQUENCES_SCHEMA.names}
    for user_id, events in ordered.groupby(USER_COL, sort=True):
        items = events[ITEM_COL].to_numpy(np.int64)
        times = events[TIMESTAMP_COL].to_numpy(np.int64)
        gaps = np.diff(times, prepend=times[0])
        sessions = np.cumsum(gaps > session_gap_seconds).astype(np.int32)
        split = np.asarray(leave_one_out_split(len(items)), dtype=np.int8)
        keep = slice(max(0, len(items) - max_seq_len), None)
        rows["valid_from"].append(valid_from)
        rows["user_id"].append(int(user_id))
        rows["item_ids"].append(items[keep].tolist())
        rows["timestamps"].append(times[keep].tolist())
        rows["time_gaps"].append(gaps[keep].tolist())
        rows["session_ids"].append(sessions[keep].tolist())
        rows["split"].append(split[keep].tolist())
        rows["n_events"].append(len(items))
    return pa.Table.from_pydict(rows, schema=SEQUENCES_SCHEMA)


def ratings_frame(events: dict[int, list[tuple[int, int]]], rating: float = 4.0) -> pd.DataFrame:
    """Ratings from ``{user_id: [(item_id, timestamp), ...]}``."""
    records = [
        (user, item, rating, timestamp) for user, history in events.items() for item, timestamp in history
    ]
    return pd.DataFrame(records, columns=[USER_COL, ITEM_COL, "rating", TIMESTAMP_COL])


def cycle_ratings(n_users: int = 40, n_items: int = 12, length: int = 14, seed: int = 0) -> pd.DataFrame:
    """Each user walks the item cycle 1 -> 2 -> ... -> n_items -> 1 from a random start, an event
    every 1 to 36 hours (so the production variant's night before a target knows most of the walk).

    The next item is a deterministic function of the current one, so a sequential model
    that learns anything reaches HR@5 close to 1.
    """
    rng = np.random.default_rng(seed)
    events = {}
    for user in range(1, n_users + 1):
        start = int(rng.integers(n_items))
        times = np.cumsum(rng.integers(3_600, 36 * 3_600, size=length)) + 1_000_000
        events[user] = [((start + step) % n_items + 1, int(times[step])) for step in range(length)]
    return ratings_frame(events)


def write_sequences_delta(table: pa.Table, path: Path) -> None:
    """Append ``table`` (versions) to the Delta table at ``path``, partitioned by valid_from."""
    from deltalake import write_deltalake

    write_deltalake(str(path), table, mode="append", partition_by=["valid_from"])


class TinySequentialModel(nn.Module):
    """A small model with SS4Rec's contract: GRU over items, plus a learned query-time term.

    The last hidden state is shifted by ``time_weight * log1p(query_time - last timestamp)``
    so tests can tell whether the paper or the production query time reached the model.
    """

    def __init__(self, n_items: int, hidden_size: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.n_items = n_items
        self.item_embedding = nn.Embedding(n_items + 1, hidden_size, padding_idx=0)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.time_weight = nn.Parameter(torch.zeros(hidden_size))

    def forward(
        self, items: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor, query_time: torch.Tensor
    ) -> torch.Tensor:
        hidden, _ = self.gru(self.dropout(self.item_embedding(items)))
        next_times = torch.cat([timestamps[:, 1:], query_time[:, None]], dim=1)
        positions = torch.arange(items.shape[1], device=items.device)
        next_times = torch.where(
            positions[None, :] == (lengths - 1)[:, None], query_time[:, None], next_times
        )
        gap = torch.log1p((next_times - timestamps).clamp(min=0).float())
        return hidden + gap[..., None] * self.time_weight

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = hidden @ self.item_embedding.weight.T
        logits[..., 0] = float("-inf")
        return logits

    def last_hidden(
        self, items: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor, query_time: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.forward(items, timestamps, lengths, query_time)
        return hidden[torch.arange(items.shape[0], device=items.device), lengths - 1]

    def calculate_loss(
        self, items: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        last_time = timestamps.gather(1, (lengths - 1)[:, None]).squeeze(1)
        hidden = self.forward(items, timestamps, lengths, last_time)[:, :-1]
        targets = items[:, 1:]
        return nn.functional.cross_entropy(self._logits(hidden)[targets > 0], targets[targets > 0])

    def full_sort_predict(
        self, items: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor, query_time: torch.Tensor
    ) -> torch.Tensor:
        return self._logits(self.last_hidden(items, timestamps, lengths, query_time))

"""Test support for scoring and publishing: a tiny lake (sequences, silver) and a saved model."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from model.checkpoint import save_artifacts
from model.data import IdVocab
from model.evaluate import run_timestamp
from model.registry import ModelRegistry
from model.train import build_model
from tests.conftest import config_with_lake
from tests.sequence_fixtures import build_sequences_table, ratings_frame, write_sequences_delta

DAY = dt.date(2024, 1, 1)
CUTOFF = run_timestamp(DAY)
T0 = CUTOFF - 40 * 86_400  # events 40 days before the cut-off

SMALL_MODEL = (
    "model.hidden_size=8",
    "model.n_layers=1",
    "model.s5_state=4",
    "model.mamba_d_state=4",
    "model.dropout=0.0",
)


def scoring_config(tmp_path: Path, *overrides: str):
    return config_with_lake(
        tmp_path / "lake", f"train.models_dir={tmp_path / 'models'}", *SMALL_MODEL, *overrides
    )


def write_lake(config, events: dict[int, list[tuple[int, int]]], max_seq_len: int) -> None:
    """Sequences (tail of max_seq_len) and silver (every event) as Delta tables, valid from this date."""
    from deltalake import write_deltalake

    ratings = ratings_frame(events)
    write_sequences_delta(
        build_sequences_table(ratings, valid_from=DAY, max_seq_len=max_seq_len),
        Path(config.table_path("sequences")),
    )
    silver = pa.Table.from_pandas(ratings, preserve_index=False).append_column(
        "valid_from", pa.array([DAY] * len(ratings), pa.date32())
    )
    write_deltalake(config.table_path("ratings_silver"), silver, partition_by=["valid_from"])


def save_model(config, item_ids: list[int], version: str = "ss4rec-test", seed: int = 0) -> str:
    torch.manual_seed(seed)
    items = IdVocab(np.asarray(sorted(item_ids)), first_index=1)
    model = build_model(config, n_items=len(items), n_users=1)
    metrics = {
        "valid": {"paper": {"ndcg@10": 0.25}, "production": {"ndcg@10": 0.5}},
        "test": {"paper": {"ndcg@10": 0.125}, "production": {"ndcg@10": 0.375}},
        "training_seconds": 1.5,
        "trained_on": DAY.isoformat(),
    }
    saved = {"config": config.model_dump(mode="json"), "n_items": len(items), "n_users": 1}
    vocab = {"items": items.to_dict(), "users": IdVocab([1], 0).to_dict()}
    save_artifacts(ModelRegistry.from_config(config).path(version), model, vocab, saved, metrics)
    return version


# Raw ids far from 0..N: user ids 77 and 501, item ids in the thousands.
ITEMS = [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000]
EVENTS = {
    77: [(1000, T0), (2000, T0 + 60), (3000, T0 + 120), (4000, T0 + 180), (5000, T0 + 240)],
    501: [(6000, T0 + 10), (7000, T0 + 70), (1000, T0 + 130)],
}

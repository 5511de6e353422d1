"""Warm-start refresh of a trained model, and a saved model's metrics on tonight's split.

The nightly DAG refreshes the champion instead of training from scratch (:func:`warm_start`):
its vocabularies grow by tonight's new items and users (:meth:`model.data.IdVocab.grow`: an
id keeps its index forever, new ids are appended in ascending order), a fresh model of the
grown size is built, every champion tensor is copied into it (:func:`grow_state`: the rows of
vocabulary-sized tables at the same indices, the new rows keep their fresh initialisation),
and the result is fine-tuned for ``train.refresh_epochs`` epochs with the trainer's early
stopping, then evaluated exactly as a training from scratch is
(:func:`model.train.fit_and_evaluate`).

The champion/challenger step compares the challenger's metrics with the champion's on the
same night (:func:`evaluate_saved`): the same users, the same targets, the same input window.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from model.data import IdVocab, SequenceBatch, SequenceData, SequenceDataError, model_arguments
from model.train import (
    TrainedModel,
    build_model,
    evaluate_splits,
    fit_and_evaluate,
    load_trained_model,
    seed_everything,
)
from recsys.config import Config

log = logging.getLogger(__name__)

VOCABULARIES = ("items", "users")


def grow_vocabularies(vocab: dict[str, IdVocab], sequences: pa.Table) -> dict[str, IdVocab]:
    """``{"items", "users"}`` vocabularies of ``vocab`` grown by the ids of a ``sequences`` table."""
    missing = [name for name in ("user_id", "item_ids") if name not in sequences.column_names]
    if missing:
        raise SequenceDataError(f"sequences table lacks column(s) {missing}; it has {sequences.column_names}")
    tonight = {
        "items": pc.drop_null(pc.list_flatten(sequences.column("item_ids"))).to_numpy(),
        "users": pc.drop_null(sequences.column("user_id")).to_numpy(),
    }
    grown = {name: vocab[name].grow(tonight[name]) for name in VOCABULARIES}
    log.info(
        "vocabularies grown: items %d -> %d, users %d -> %d",
        len(vocab["items"]),
        len(grown["items"]),
        len(vocab["users"]),
        len(grown["users"]),
    )
    return grown


def grow_state(
    old_model: nn.Module,
    new_model: nn.Module,
    old_vocab: dict[str, IdVocab],
    new_vocab: dict[str, IdVocab],
) -> list[str]:
    """Copy every parameter and buffer of ``old_model`` into ``new_model``; returns the names grown.

    ``new_vocab`` must extend ``old_vocab`` (``{"items", "users"}``, every old id at its old
    index). A tensor of the same shape in both models is copied whole. A tensor whose first
    dimension goes from an old vocabulary's size plus its first index (the padding row of
    items) to the new one's, the other dimensions equal, is a vocabulary-indexed table: its
    old rows are copied to the same indices and its new rows keep ``new_model``'s
    initialisation. Any other difference (a missing or extra tensor, another shape) raises
    :class:`ValueError` naming the tensor.
    """
    for name in VOCABULARIES:
        if not new_vocab[name].extends(old_vocab[name]):
            raise ValueError(f"the new {name} vocabulary does not keep every old id at its old index")
    growth = {
        (
            len(old_vocab[name]) + old_vocab[name].first_index,
            len(new_vocab[name]) + new_vocab[name].first_index,
        )
        for name in VOCABULARIES
    }
    old_state, new_state = old_model.state_dict(), new_model.state_dict()
    for names, side in ((set(old_state) - set(new_state), "old"), (set(new_state) - set(old_state), "new")):
        if names:
            raise ValueError(f"tensor(s) {sorted(names)} only in the {side} model: not the same architecture")
    merged, grown = {}, []
    for name, fresh in new_state.items():
        old = old_state[name]
        if old.shape == fresh.shape:
            merged[name] = old.detach().clone()
        elif old.dim() >= 1 and old.shape[1:] == fresh.shape[1:] and (old.shape[0], fresh.shape[0]) in growth:
            merged[name] = fresh.detach().clone()
            merged[name][: old.shape[0]] = old
            grown.append(name)
        else:
            raise ValueError(
                f"{name}: shape {tuple(old.shape)} in the old model, {tuple(fresh.shape)} in the new one, "
                f"not a vocabulary growth ({sorted(growth)} rows)"
            )
    new_model.load_state_dict(merged, strict=True)
    log.info("warm start: %d tensors copied, %d grown: %s", len(merged), len(grown), grown)
    return grown


def warm_start(
    config: Config,
    champion_dir: str | Path,
    sequences: pa.Table,
    work_dir: str | Path,
    run_date: dt.date,
    device: torch.device | str = "cpu",
    ratings_path: str | None = None,
) -> TrainedModel:
    """Refresh the champion in ``champion_dir`` on tonight's ``sequences`` (see the module docstring).

    ``config.model`` must be the champion's (a warm start keeps its architecture; train from
    scratch to change it) and not a one-pass model (Pop counts its training data: refreshing
    it would count the champion's history twice). Checkpoints go to ``work_dir`` and a killed
    refresh resumes there, as :class:`model.train.Trainer` does. The metrics are those of
    :func:`model.train.fit_and_evaluate` plus ``warm_start_from`` (the champion directory's
    name) and ``refresh_epochs``; ``data`` carries the grown vocabularies, which
    :func:`model.train.save_trained` saves.
    """
    champion_dir = Path(champion_dir)
    champion, vocab, champion_config = load_trained_model(champion_dir)
    if champion_config.model != config.model:
        old, new = champion_config.model.model_dump(), config.model.model_dump()
        changed = {key: (old[key], new[key]) for key in old if old[key] != new[key]}
        raise ValueError(
            f"{champion_dir}: a warm start keeps the champion's model settings; changed "
            f"(champion, tonight): {changed}; train from scratch instead"
        )
    if getattr(champion, "single_pass", False):
        raise ValueError(f"model.name={config.model.name} trains in one pass: train it from scratch")
    grown = grow_vocabularies(vocab, sequences)
    data = SequenceData.from_arrow(sequences, item_vocab=grown["items"], user_vocab=grown["users"])
    seed_everything(config.train.seed)
    model = build_model(config, data.n_items, data.n_users)
    grow_state(champion, model, vocab, grown)
    refresh = config.train.model_copy(update={"epochs": config.train.refresh_epochs})
    log.info("warm start from %s: up to %d epochs", champion_dir, refresh.epochs)
    trained = fit_and_evaluate(
        config, model, data, work_dir, run_date, device, ratings_path, train_config=refresh
    )
    trained.metrics.update(warm_start_from=champion_dir.name, refresh_epochs=refresh.epochs)
    return trained


def evaluate_saved(
    config: Config,
    model_dir: str | Path,
    sequences: pa.Table,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """``{"valid": {variant: metrics}, "test": {...}}`` of the saved model in ``model_dir`` on
    tonight's ``sequences``.

    The model sees what nightly scoring gives it: input positions of items new since it was
    trained are dropped (as ``unknown_items="skip"`` does), then its most recent
    ``model.max_seq_len`` (its saved configuration's) are kept. The users and targets are
    those a model trained tonight is evaluated on, so champion and challenger compare on the
    same ones: a target the model does not know is not dropped but counts as a miss, and so
    does every target of a user left with no known input (nightly scoring would give that user
    the popularity fallback) or, for a model with user embeddings (NCF), of a user new
    tonight. ``config`` gives the cut-offs (``scoring.eval_ks``).
    """
    model, vocab, saved_config = load_trained_model(model_dir, device)
    grown = grow_vocabularies(vocab, sequences)
    data = SequenceData.from_arrow(sequences, item_vocab=grown["items"], user_vocab=grown["users"])
    known = KnownInputs(model, vocab, grown, max_len=saved_config.model.max_seq_len)
    unknown = int((data.items > len(vocab["items"])).sum())
    log.info("%s: %d positions of items it does not know are left out of its inputs", model_dir, unknown)
    return evaluate_splits(known, data, config.scoring.eval_ks, max_len=None, device=device)


class KnownInputs(nn.Module):
    """A trained model scored on grown vocabularies, seeing only the items and users it knows.

    ``full_sort_predict`` drops the input positions of items beyond the model's vocabulary
    (left-aligning the rest, order kept), keeps the most recent ``max_len`` of them, and
    returns scores over the grown items: -inf for the items the model does not know, and
    -inf everywhere for a row left with no input or, when the model takes users, of a user
    beyond its vocabulary. Evaluation ranks a -inf target past every cut-off (a miss).
    """

    def __init__(
        self, model: nn.Module, vocab: dict[str, IdVocab], grown: dict[str, IdVocab], max_len: int | None
    ) -> None:
        super().__init__()
        for name in VOCABULARIES:
            if not grown[name].extends(vocab[name]):
                raise ValueError(
                    f"the grown {name} vocabulary does not keep the model's ids at their indices"
                )
        self.model = model
        probe = torch.zeros(1, dtype=torch.int64)
        self.takes_users = "users" in model_arguments(
            model.full_sort_predict, _batch(probe, probe, probe, probe)
        )
        self.known_items, self.known_users = len(vocab["items"]), len(vocab["users"])
        self.n_items = len(grown["items"])
        self.max_len = max_len

    def full_sort_predict(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_time: torch.Tensor,
        users: torch.Tensor,
    ) -> torch.Tensor:
        positions = torch.arange(items.shape[1], device=items.device)
        keep = (positions[None, :] < lengths[:, None]) & (items <= self.known_items)
        if self.max_len is not None:
            later_kept = keep.sum(dim=1, keepdim=True) - keep.cumsum(dim=1)
            keep &= later_kept < self.max_len
        kept = keep.sum(dim=1)
        scored = kept > 0
        if self.takes_users:
            scored &= users < self.known_users
        scores = torch.full((items.shape[0], self.n_items + 1), float("-inf"), device=items.device)
        rows = scored.nonzero().squeeze(1)
        if rows.numel() == 0:
            return scores
        width = int(kept[rows].max())
        order = torch.sort((~keep[rows]).to(torch.int8), dim=1, stable=True).indices[:, :width]
        valid = positions[None, :width] < kept[rows][:, None]
        batch = _batch(
            users[rows],
            torch.where(valid, items[rows].gather(1, order), 0),
            torch.where(valid, timestamps[rows].gather(1, order), 0),
            kept[rows],
        )
        inner = self.model.full_sort_predict
        scores[rows, : self.known_items + 1] = inner(
            **model_arguments(inner, batch, query_time[rows])
        ).float()
        return scores


def _batch(
    users: torch.Tensor, items: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor
) -> SequenceBatch:
    zeros = torch.zeros_like(lengths)
    return SequenceBatch(users, items, timestamps, lengths, targets=zeros, target_time=zeros)

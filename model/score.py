"""Nightly batch scoring: the top-K unseen items of every user, staged as Parquet for the gate.

    python -m model.score --run-date 2026-11-24 --model-version ss4rec-0123456789ab

No JVM: the run date's ``sequences`` and ``ratings_silver`` partitions are read with delta-rs
into Arrow, and the output is Parquet in a staging directory that the Spark publish job
(:mod:`spark_jobs.publish_recommendations`) validates and publishes into Delta.

For every user of the sequences snapshot:

- the input is their most recent ``model.max_seq_len`` events, encoded with the model's
  saved item vocabulary; items the model has never seen (new since training) are skipped
  and counted, never an error;
- the query time is the run's cut-off, midnight UTC at the end of the run date
  (:func:`model.evaluate.run_timestamp`), clamped to be no earlier than the last event;
- every item the user has ever rated is masked, from the full history in silver (not only the
  tail kept in ``sequences``), and the ``scoring.top_k`` best remaining items are kept (fewer
  only when the catalogue minus the seen items is smaller than K, and then all of them);
- a user with no usable history (every event an unknown item) gets a popularity fallback:
  the catalogue ordered by ratings in the ``scoring.fallback_window_days`` before the
  cut-off, then by all-time ratings, then by item id, seen items masked, ``is_fallback``
  true and the recent rating count as score.

Users are processed ``scoring.batch_size`` at a time in order of history length (so a batch
pads little), under ``torch.inference_mode``, on the GPU when one is configured; memory is
bounded by one batch's [batch, items] score matrix whatever the user count, and each batch is
written as one Parquet row group. Output ids are the dataset's own ids.

Staged for the run date (``<lake>/<scoring.staging_dir>/recommendations/<run_date>/``):
``recommendations.parquet`` (run_date, model_version, user_id, rank, item_id, score,
is_fallback, generated_at = the cut-off, so a rerun is identical), ``catalogue.parquet``
(the item ids the model scores) and ``manifest.json`` (counts, input table versions, phase
seconds and the ``model_runs`` row). The directory is written beside its final place and
renamed into it, so the publish job sees a whole staging or none.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
from torch import nn
from tqdm import tqdm

from model import user_state
from model.checkpoint import METRICS_FILE, load_json, save_json
from model.data import (
    SECONDS_PER_DAY,
    IdVocab,
    SequenceBatch,
    SequenceData,
    SplitView,
    model_arguments,
    read_as_of,
)
from model.evaluate import run_timestamp
from model.registry import ModelRegistry, training_hash
from model.ss4rec import SS4Rec
from recsys.cli import add_run_date_argument, configure_logging
from recsys.config import Config, add_config_arguments, config_from_args
from recsys.staging import CATALOGUE_FILE, MANIFEST_FILE, RECOMMENDATIONS_FILE, staging_dir

log = logging.getLogger(__name__)

RECOMMENDATIONS_SCHEMA = pa.schema(
    [
        ("run_date", pa.date32()),
        ("model_version", pa.string()),
        ("user_id", pa.int64()),
        ("rank", pa.int32()),
        ("item_id", pa.int64()),
        ("score", pa.float32()),
        ("is_fallback", pa.bool_()),
        ("generated_at", pa.timestamp("us", tz="UTC")),
    ]
)


# ------------------------------------------------------------------------------ inputs


@dataclass
class History:
    """What silver says of each scored user, over the catalogue: seen items and popularity."""

    seen: sp.csr_matrix  # [users, n_items + 1] bool: every item the user ever rated (catalogue only)
    recent_counts: np.ndarray  # [n_items + 1] ratings in the fallback window
    total_counts: np.ndarray  # [n_items + 1] ratings ever

    @property
    def fallback_order(self) -> np.ndarray:
        """Item indices 1..N by recent count, then all-time count (both descending), then index."""
        items = np.arange(1, self.recent_counts.size)
        return items[np.lexsort((items, -self.total_counts[1:], -self.recent_counts[1:]))]


def history_from_silver(
    silver: pa.Table, users: IdVocab, items: IdVocab, cutoff: int, window_days: int
) -> History:
    """Seen matrix and item popularity from silver's (user_id, item_id, timestamp) rows.

    Rows of users outside ``users`` or items outside ``items`` (unknown to the model) are not
    counted: an unknown item can be neither recommended nor masked.
    """
    user_ids = silver.column("user_id").to_numpy().astype(np.int64)
    item_ids = silver.column("item_id").to_numpy().astype(np.int64)
    timestamps = silver.column("timestamp").to_numpy().astype(np.int64)
    item_index = items.positions(item_ids) + items.first_index  # first_index - 1 = not in the catalogue
    in_catalogue = item_index >= items.first_index
    user_index = users.positions(user_ids)
    width = len(items) + items.first_index
    recent = in_catalogue & (timestamps > cutoff - window_days * SECONDS_PER_DAY) & (timestamps <= cutoff)
    keep = in_catalogue & (user_index >= 0)
    seen = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=bool), (user_index[keep], item_index[keep])),
        shape=(len(users), width),
    )
    seen.sum_duplicates()
    return History(
        seen=seen,
        recent_counts=np.bincount(item_index[recent], minlength=width),
        total_counts=np.bincount(item_index[in_catalogue], minlength=width),
    )


# ----------------------------------------------------------------------------- scoring


@dataclass
class ScoredBatch:
    """Top-K of a batch of users: ``items``/``scores`` [B, K] (item indices; -1 / nan past ``counts``)."""

    users: np.ndarray  # [B] user index
    items: np.ndarray  # [B, K] int64
    scores: np.ndarray  # [B, K] float32
    counts: np.ndarray  # [B] valid entries per row
    fallback: bool


@dataclass
class PhaseSeconds:
    read: float = 0.0
    state_read: float = 0.0  # user_states as of the night before (SS4Rec)
    encode: float = 0.0  # forward passes, or state steps and the final step
    score: float = 0.0  # score + mask + top-k
    write: float = 0.0
    state_write: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 3) for name, value in self.__dict__.items()}


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timer reads the work's end (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def item_weights(model: nn.Module) -> torch.Tensor | None:
    """[n_items, H] output embedding of a dot-product model (score = last hidden . item), or None."""
    if hasattr(model, "last_hidden") and isinstance(getattr(model, "item_embedding", None), nn.Embedding):
        return model.item_embedding.weight[1:]
    return None


def mask_and_top_k(
    scores: torch.Tensor, seen_rows: sp.csr_matrix, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each row's seen items (``seen_rows`` [B, N + 1], column 0 padding) and keep the top ``k``.

    ``scores`` [B, N] covers items 1..N and is modified in place. Returns (values, item indices
    1..N) [B, min(k, N)]; a masked entry that still lands in the top k has value -inf.
    """
    rows = np.repeat(np.arange(seen_rows.shape[0]), np.diff(seen_rows.indptr))
    columns = seen_rows.indices.astype(np.int64) - 1
    index = (torch.from_numpy(rows).to(scores.device), torch.from_numpy(columns).to(scores.device))
    scores.index_put_(index, torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device))
    values, positions = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    return values, positions + 1


def score_model_users(
    model: nn.Module,
    data: SequenceData,
    users: np.ndarray,
    seen: sp.csr_matrix,
    query_time: int,
    top_k: int,
    batch_size: int,
    encode_batch_size: int,
    max_len: int,
    device: torch.device,
    seconds: PhaseSeconds,
) -> Iterator[ScoredBatch]:
    """Top-K of the model's scores for ``users`` (indices with >= 1 usable event), batch by batch.

    Users are taken in order of history length; a batch of ``batch_size`` is encoded in
    sub-batches of ``encode_batch_size`` (each padded to its own longest history: on a CPU a
    small batch keeps the scans' per-step state in cache) and scored at once.
    """
    model = model.to(device).eval()
    view = data.view("full", max_len=max_len)
    order = users[np.argsort(view.lengths[users], kind="stable")]
    weights = item_weights(model)
    candidates = data.n_items - np.diff(seen.indptr)
    for start in tqdm(range(0, order.size, batch_size), desc="scoring", unit="batch", disable=None):
        rows = order[start : start + batch_size]
        began = time.perf_counter()
        with torch.inference_mode():
            if weights is not None:
                vectors = torch.cat(
                    [
                        _encode(model, view, rows[at : at + encode_batch_size], query_time, device)
                        for at in range(0, rows.size, encode_batch_size)
                    ]
                )
                synchronize(device)
                encoded = time.perf_counter()
                scores = vectors @ weights.float().T
            else:
                encoded = began
                batch = view.collate(rows).to(device)
                scores = model.full_sort_predict(
                    **model_arguments(model.full_sort_predict, batch, _query(batch, query_time))
                )
                scores = scores.float()[:, 1:].contiguous()
            values, items = mask_and_top_k(scores, seen[rows], top_k)
            values, items = values.cpu().numpy(), items.cpu().numpy()
        done = time.perf_counter()
        seconds.encode += encoded - began
        seconds.score += done - encoded
        yield ScoredBatch(rows, items, values, np.minimum(candidates[rows], items.shape[1]), fallback=False)


def score_vectors(
    vectors: torch.Tensor,
    model: nn.Module,
    data: SequenceData,
    users: np.ndarray,
    seen: sp.csr_matrix,
    top_k: int,
    batch_size: int,
    seconds: PhaseSeconds,
) -> Iterator[ScoredBatch]:
    """Top-K of users' hidden ``vectors`` ([n_users, H], by user index) against the item embedding."""
    weights = item_weights(model).float()
    candidates = data.n_items - np.diff(seen.indptr)
    for start in tqdm(range(0, users.size, batch_size), desc="scoring", unit="batch", disable=None):
        rows = users[start : start + batch_size]
        began = time.perf_counter()
        with torch.inference_mode():
            scores = vectors[torch.from_numpy(rows).to(vectors.device)] @ weights.T
            values, items = mask_and_top_k(scores, seen[rows], top_k)
            values, items = values.cpu().numpy(), items.cpu().numpy()
        seconds.score += time.perf_counter() - began
        yield ScoredBatch(rows, items, values, np.minimum(candidates[rows], items.shape[1]), fallback=False)


def _query(batch: SequenceBatch, query_time: int) -> torch.Tensor:
    """[B] the run's cut-off, never earlier than the user's last event."""
    last_input = batch.timestamps.gather(1, (batch.lengths - 1)[:, None]).squeeze(1)
    return torch.clamp(last_input, min=query_time)


def _encode(
    model: nn.Module, view: SplitView, rows: np.ndarray, query_time: int, device: torch.device
) -> torch.Tensor:
    """[len(rows), H] last hidden states of the view's ``rows``."""
    batch = view.collate(rows).to(device)
    return model.last_hidden(**model_arguments(model.last_hidden, batch, _query(batch, query_time))).float()


def fallback_users(history: History, users: np.ndarray, top_k: int) -> ScoredBatch:
    """Popularity top-K (seen masked) for ``users`` with no usable history."""
    order = history.fallback_order
    k = min(top_k, order.size)
    items = np.full((users.size, k), -1, dtype=np.int64)
    scores = np.full((users.size, k), np.nan, dtype=np.float32)
    counts = np.zeros(users.size, dtype=np.int64)
    for row, user in enumerate(users):
        seen = np.zeros(history.recent_counts.size, dtype=bool)
        seen[history.seen.indices[history.seen.indptr[user] : history.seen.indptr[user + 1]]] = True
        chosen = order[~seen[order]][:k]
        items[row, : chosen.size] = chosen
        scores[row, : chosen.size] = history.recent_counts[chosen]
        counts[row] = chosen.size
    return ScoredBatch(users, items, scores, counts, fallback=True)


def batch_table(
    scored: ScoredBatch, data: SequenceData, run_date: dt.date, model_version: str, generated_at: dt.datetime
) -> pa.Table:
    """The staged rows of one scored batch, raw ids, ranks 1..count per user."""
    k = scored.items.shape[1]
    valid = np.arange(k)[None, :] < scored.counts[:, None]
    rows, columns = np.nonzero(valid)
    n = rows.size
    return pa.table(
        {
            "run_date": pa.array(np.full(n, run_date), pa.date32()),
            "model_version": pa.array([model_version] * n, pa.string()),
            "user_id": pa.array(data.user_vocab.decode(scored.users[rows]), pa.int64()),
            "rank": pa.array((columns + 1).astype(np.int32), pa.int32()),
            "item_id": pa.array(data.item_vocab.decode(scored.items[rows, columns]), pa.int64()),
            "score": pa.array(scored.scores[rows, columns].astype(np.float32), pa.float32()),
            "is_fallback": pa.array(np.full(n, scored.fallback), pa.bool_()),
            "generated_at": pa.array([generated_at] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=RECOMMENDATIONS_SCHEMA,
    )


# -------------------------------------------------------------------------------- the job


@dataclass
class ScoringResult:
    staging: str
    manifest: dict[str, Any]
    seconds: PhaseSeconds = field(default_factory=PhaseSeconds)


def load_model(
    config: Config, model_version: str, device: torch.device, directory: str | Path | None = None
) -> tuple[nn.Module, IdVocab, dict]:
    """(model in eval mode, item vocabulary, metrics) of the model version.

    From its artifact ``directory`` (the registered model's, downloaded by
    :func:`model.tracking.download_model`), by default from the local registry.
    """
    from model.train import load_trained_model

    if directory is None:
        registry = ModelRegistry.from_config(config)
        metrics, directory = registry.metrics(model_version), registry.path(model_version)
    else:
        metrics = load_json(Path(directory) / METRICS_FILE)
    model, vocab, _ = load_trained_model(directory, device)
    return model, vocab["items"], metrics


def model_run_row(
    config: Config,
    run_date: dt.date,
    model_version: str,
    metrics: dict[str, Any],
    input_versions: dict[str, int],
    fingerprint: str,
    role: str = "champion",
    scored: bool = True,
    training_mode: str | None = None,
    promoted: bool = False,
    decision: str | None = None,
    registry_version: str | None = None,
    alias: str | None = None,
    realised: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A ``model_runs`` row: a model of tonight (the champion, or the challenger) and its metrics.

    ``metrics`` are the model's on tonight's split; ``decision`` is the champion/challenger
    step's reason, ``training_mode`` how the night made the model (full, warm; skip on the
    champion row of a night without training), ``registry_version`` its version number in the
    MLflow registered model and ``alias`` the alias the night's step gave it (champion,
    challenger; None on a backfill, which moves no alias). ``realised`` (the scored row's): the
    previous night's published recommendations judged on tonight's arrivals
    (:mod:`model.realised`), as ``realised.<name>`` metrics.
    """
    flat = {
        f"{split}.{variant}.{name}": float(value)
        for split in ("valid", "test")
        for variant, values in metrics.get(split, {}).items()
        for name, value in values.items()
    }
    flat.update({f"realised.{name}": float(value) for name, value in (realised or {}).items()})
    return {
        "run_date": run_date.isoformat(),
        "model_version": model_version,
        "model_name": config.model.name,
        "config_hash": training_hash(config),
        "sequences_fingerprint": fingerprint,
        "input_versions": input_versions,
        "metrics": flat,
        "training_seconds": float(metrics.get("training_seconds", 0.0)),
        "trained_tonight": metrics.get("trained_on") == run_date.isoformat(),
        "scored": scored,
        "role": role,
        "training_mode": training_mode,
        "promoted": promoted,
        "decision": decision,
        "registry_version": registry_version,
        "alias": alias,
    }


def score_run(
    config: Config,
    run_date: dt.date,
    model_version: str,
    device: torch.device | str = "cpu",
    run_id: str | None = None,
    model_runs: Callable[[dict[str, int], str], list[dict[str, Any]]] | None = None,
    model_dir: str | Path | None = None,
    sequences_version: int | None = None,
) -> ScoringResult:
    """Score every user of the run date's sequences with ``model_version``; stage the result.

    ``model_runs(input_versions, fingerprint)`` gives the night's ``model_runs`` rows (the nightly
    DAG's champion and challenger); by default the one row of the scoring model. ``model_dir``:
    the version's artifacts (see :func:`load_model`). ``sequences_version``: the sequences table
    version to read (the nightly DAG's: the one its gate passed and training read); default the
    latest.
    """
    device = torch.device(device)
    seconds = PhaseSeconds()
    began = time.perf_counter()
    model, item_vocab, metrics = load_model(config, model_version, device, model_dir)
    sequences_path, silver_path = config.table_path("sequences"), config.table_path("ratings_silver")
    sequences, sequences_version = read_as_of(
        sequences_path, "sequences", run_date, version=sequences_version
    )
    silver, silver_version = read_as_of(
        silver_path, "ratings_silver", run_date, ["user_id", "item_id", "timestamp"]
    )
    data = SequenceData.from_arrow(sequences, item_vocab=item_vocab, unknown_items="skip")
    # The fingerprint is of the snapshot as read: recomputed only when unknown items were dropped.
    fingerprint = (SequenceData.from_arrow(sequences) if data.skipped.positions else data).fingerprint()
    recurrent = isinstance(model, SS4Rec)
    if recurrent:
        history_events, whole_history = user_state.window_facts(
            sequences, data.user_vocab.positions, np.diff(data.offsets), config.model.max_seq_len
        )
    del sequences
    cutoff = run_timestamp(run_date)
    history = history_from_silver(
        silver, data.user_vocab, item_vocab, cutoff, config.scoring.fallback_window_days
    )
    del silver
    seconds.read = time.perf_counter() - began
    lengths = np.diff(data.offsets)
    usable, no_history = np.flatnonzero(lengths > 0), np.flatnonzero(lengths == 0)
    log.info(
        "scoring %d users (%d without usable history) over %d items with %s; %d positions of %d unknown "
        "items skipped",
        data.n_users,
        no_history.size,
        data.n_items,
        model_version,
        data.skipped.positions,
        data.skipped.items,
    )
    generated_at = dt.datetime.fromtimestamp(cutoff, tz=dt.UTC)
    final = staging_dir(config, run_date)
    partial = f"{final}.partial-{uuid.uuid4().hex[:8]}"
    Path(partial).mkdir(parents=True)
    rows = 0
    states: dict[str, Any] | None = None
    try:
        if recurrent:
            encoded, states = _encode_with_states(
                config,
                model,
                model_version,
                data,
                history_events,
                whole_history,
                run_date,
                cutoff,
                device,
                seconds,
            )
            batches = score_vectors(
                encoded.vectors,
                model,
                data,
                usable,
                history.seen,
                config.scoring.top_k,
                config.scoring.batch_size,
                seconds,
            )
        else:
            batches = score_model_users(
                model,
                data,
                usable,
                history.seen,
                cutoff,
                config.scoring.top_k,
                config.scoring.batch_size,
                config.scoring.encode_batch_size,
                config.model.max_seq_len,
                device,
                seconds,
            )
        with pq.ParquetWriter(f"{partial}/{RECOMMENDATIONS_FILE}", RECOMMENDATIONS_SCHEMA) as writer:
            for scored in _with_fallback(batches, history, no_history, config.scoring.top_k):
                started = time.perf_counter()
                table = batch_table(scored, data, run_date, model_version, generated_at)
                writer.write_table(table)
                rows += table.num_rows
                seconds.write += time.perf_counter() - started
        pq.write_table(
            pa.table({"item_id": pa.array(item_vocab.raw_ids, pa.int64())}), f"{partial}/{CATALOGUE_FILE}"
        )
        input_versions = {"sequences": sequences_version, "ratings_silver": silver_version}
        manifest = {
            "run_date": run_date.isoformat(),
            "run_id": run_id,
            "model_version": model_version,
            "top_k": config.scoring.top_k,
            "query_time": cutoff,
            "users": data.n_users,
            "fallback_users": int(no_history.size),
            "catalogue_items": data.n_items,
            "rows": rows,
            "skipped_positions": data.skipped.positions,
            "skipped_items": data.skipped.items,
            "input_versions": input_versions,
            "states": states,
            "device": str(device),
            "seconds": seconds.as_dict(),
            "model_runs": (
                model_runs(input_versions, fingerprint)
                if model_runs
                else [model_run_row(config, run_date, model_version, metrics, input_versions, fingerprint)]
            ),
        }
        if recurrent:
            started = time.perf_counter()
            rows_written = user_state.state_rows(
                encoded,
                data.view("full", max_len=config.model.max_seq_len),
                data.user_vocab.raw_ids,
                data.item_vocab.decode,
                history_events,
                whole_history,
                model_version,
                config.scoring.state_dtype,
                run_date,
            )
            user_state.write_states(
                config.table_path("user_states"), rows_written, run_date, run_id or f"score-{run_date}"
            )
            seconds.state_write = time.perf_counter() - started
            states["rows_written"] = rows_written.num_rows
            manifest["seconds"] = seconds.as_dict()
        save_json(manifest, f"{partial}/{MANIFEST_FILE}")
        _swap_into_place(partial, final)
    finally:
        if Path(partial).exists():
            shutil.rmtree(partial)
    log.info(
        "staged %d recommendations for %d users in %s (%s)", rows, data.n_users, final, seconds.as_dict()
    )
    return ScoringResult(final, manifest, seconds)


def _encode_with_states(
    config: Config,
    model: SS4Rec,
    model_version: str,
    data: SequenceData,
    history_events: np.ndarray,
    whole_history: np.ndarray,
    run_date: dt.date,
    cutoff: int,
    device: torch.device,
    seconds: PhaseSeconds,
) -> tuple[user_state.Encoded, dict[str, Any]]:
    """Every user's hidden vector from the stored states (:mod:`model.user_state`): reused,
    advanced or re-encoded per user (every user with ``scoring.state_mode: full``)."""
    began = time.perf_counter()
    view = data.view("full", max_len=config.model.max_seq_len)
    stored = None
    if config.scoring.state_mode == "incremental":
        stored = user_state.read_stored(
            config.table_path("user_states"),
            run_date,
            model_version,
            config.scoring.state_dtype,
            data.user_vocab.positions,
        )
    kinds, stored_row = user_state.plan(view, history_events, whole_history, stored)
    kinds[view.lengths == 0] = -1  # no usable history: the popularity fallback
    seconds.state_read = time.perf_counter() - began
    encoded = user_state.encode_users(
        model,
        view,
        kinds,
        stored,
        stored_row,
        cutoff,
        config.scoring.encode_batch_size,
        config.scoring.batch_size,
        config.scoring.state_dtype,
        device,
    )
    synchronize(device)
    seconds.encode = encoded.seconds.encode + encoded.seconds.final_step
    summary = {
        "mode": config.scoring.state_mode,
        "dtype": config.scoring.state_dtype,
        "bytes_per_user": user_state.StateLayout.of(model).bytes_per_user(config.scoring.state_dtype),
        "stored_read": 0 if stored is None else int(stored.users.size),
        **user_state.kind_counts(kinds),
        "events_stepped": encoded.seconds.events_stepped,
        "events_encoded": encoded.seconds.events_encoded,
    }
    log.info("user states %s: %s", run_date, summary)
    return encoded, summary


def _with_fallback(
    batches: Iterator[ScoredBatch], history: History, no_history: np.ndarray, top_k: int
) -> Iterator[ScoredBatch]:
    yield from batches
    if no_history.size:
        yield fallback_users(history, no_history, top_k)


def _swap_into_place(partial: str, final: str) -> None:
    """Replace ``final`` with the finished ``partial`` directory (two renames; never a half-written one)."""
    old = f"{final}.old-{uuid.uuid4().hex[:8]}"
    if Path(final).exists():
        Path(final).rename(old)
    Path(partial).rename(final)
    if Path(old).exists():
        shutil.rmtree(old)


def main(argv: list[str] | None = None) -> int:
    from model.train import resolve_device

    parser = argparse.ArgumentParser(prog="python -m model.score", description=__doc__.splitlines()[0])
    add_run_date_argument(parser)
    add_config_arguments(parser)
    parser.add_argument("--model-version", required=True, help="model version in train.models_dir")
    args = parser.parse_args(argv)
    configure_logging()
    config = config_from_args(args)
    result = score_run(config, args.run_date, args.model_version, resolve_device(config.device))
    print(f"staged {result.manifest['rows']:,} rows for {result.manifest['users']:,} users: {result.staging}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

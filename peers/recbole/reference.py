"""RecBole's own SASRec as the reference peer, on the paper protocol.

Protocol (SS4Rec paper / RecBole sequential defaults, settings in :data:`PAPER_CONFIG`):

* data: ML-100K from the recbole package (``dataset_example/ml-100k``, no download); only
  ``user_id, item_id, timestamp`` loaded; no k-core or interaction filtering;
* split: leave-one-out by time (``eval_args.split = {"LS": "valid_and_test"}``, order ``TO``):
  last interaction of each user is test, second-to-last validation; every earlier prefix is
  a training sample (RecBole's prefix augmentation);
* ranking against all items (``mode: full``), Hit / NDCG / MRR at 5, 10, 20; early stopping
  on validation NDCG@10 with ``stopping_step`` 10; RecBole evaluates sequential models
  *without* masking seen items (its full-sort loader has no history index for them), so
  its reported numbers are the paper variant;
* SASRec: RecBole's defaults (hidden 64, 2 layers, 2 heads, inner 256, dropout 0.5/0.5, gelu)
  with ``MAX_ITEM_LIST_LENGTH`` 200, cross-entropy over all items
  (``train_neg_sample_args: None``, ``loss_type: CE``), Adam lr 1e-3.
* ``train_batch_size`` 1024 (RecBole's default is 2048): chosen to match SS4Rec's setting
  (``configs/base.yaml`` train.batch_size, from the released ML-1M config), so both models
  take the same number of optimizer steps per epoch over the same augmented samples.

Timestamps are kept exact (``exact_timestamps=True``, default). As shipped, RecBole
min-max normalises ML-100K's float fields (``normalize_all: True`` in its ml-100k.yaml) and
stores float fields as float32, so event times are resolved to about a second (and to 64 s
for raw Unix seconds, e.g. datasets without that yaml); its time sort then falls back to file
order among the rounded values. On ML-100K that reorders 83 users' histories and changes the
test item of 4 users and the validation item of 5 (raw float32 seconds: 908 / 149 / 254), so
it would not evaluate on exactly the split our pipeline uses. With ``exact_timestamps`` the
dataset is :class:`peers.recbole.dataset.ExactTimeSequentialDataset` (time field kept in
float64 seconds) and ``normalize_all`` is off (only user, item and timestamp are loaded, so
nothing else would be normalised); events with equal timestamps keep file order (stable
sort), as in RecBole. ``--recbole-float32-time`` runs RecBole as shipped.

The best epoch's weights are kept in memory (:class:`TimedTrainer`), not in a pickled
checkpoint file, so nothing is loaded back with pickle.

Besides RecBole's own test metrics, :func:`run_reference` returns two test score matrices of
the best epoch (column 0 = padding = ``-inf`` like RecBole's evaluator): ``scores`` from
RecBole's test interactions (``full_sort_predict``, every event before the target) with the
seen-item mask (all of a user's interactions before the test one), and ``night_scores`` from the
production protocol's inputs (:func:`export_test_scores`), with the raw user id and raw target
item id of every row and the raw item id of every column. The product's evaluator
(``model.evaluate``, through :mod:`model.recbole_peer`) ranks the first as the paper variant and
the second as the production one. The CLI is :mod:`peers.recbole.__main__`.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from peers.recbole.runtime import config as recbole_config
from peers.recbole.runtime import numpy_aliases, recbole_data_path, sequential_models

log = logging.getLogger(__name__)

KS = (5, 10, 20)
METRICS = ("Hit", "NDCG", "MRR")

#: RecBole settings of the paper protocol, shared by every model run here (seed, paths and
#: device are added per run).
PROTOCOL_CONFIG: dict[str, Any] = {
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "TIME_FIELD": "timestamp",
    "MAX_ITEM_LIST_LENGTH": 200,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "metrics": list(METRICS),
    "topk": list(KS),
    "valid_metric": "NDCG@10",
    "metric_decimal_place": 6,
    "train_neg_sample_args": None,
    "loss_type": "CE",
    "learning_rate": 1e-3,
    "learner": "adam",
    "weight_decay": 0.0,
    "train_batch_size": 1024,
    "eval_batch_size": 4096,
    "epochs": 200,
    "stopping_step": 10,
    "eval_step": 1,
    "reproducibility": True,
    "show_progress": False,
}

#: RecBole's SASRec defaults (properties/model/SASRec.yaml), spelled out so a RecBole
#: upgrade cannot change the reference silently.
SASREC_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "inner_size": 256,
    "n_layers": 2,
    "n_heads": 2,
    "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "initializer_range": 0.02,
}

PAPER_CONFIG: dict[str, Any] = {**PROTOCOL_CONFIG, **SASREC_CONFIG}

#: Added when timestamps are kept exact: RecBole's ml-100k.yaml min-max normalises float fields.
EXACT_TIME_CONFIG: dict[str, Any] = {"normalize_all": False, "normalize_field": None}

#: Settings that make RecBole read pickled files (a saved dataset, saved loaders, a checkpoint
#: directory of earlier runs), refused in overrides: each run gets a fresh temporary checkpoint_dir.
REFUSED_SETTINGS = frozenset(
    {"checkpoint_dir", "save_dataset", "save_dataloaders", "dataset_save_path", "dataloaders_save_path"}
)

#: Config keys echoed into a result's summary (those present in the run's config).
SUMMARY_KEYS = (
    "MAX_ITEM_LIST_LENGTH",
    "train_batch_size",
    "learning_rate",
    "epochs",
    "stopping_step",
    "valid_metric",
    "loss_type",
    "hidden_size",
    "n_layers",
    "inner_size",
    "n_heads",
    "hidden_dropout_prob",
    "attn_dropout_prob",
    "s5_state",
    "dt_min",
    "dt_max",
    "mamba_d_state",
    "mamba_d_conv",
    "mamba_expand",
    "dropout",
    "ss4rec_variant",
    "ss4rec_query_time",
    "user_inter_num_interval",
)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def build_config(
    seed: int = 2020,
    dataset: str = "ml-100k",
    data_path: str | None = None,
    checkpoint_dir: str | None = None,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    model: Any = "SASRec",
) -> Any:
    """A RecBole ``Config`` for ``model`` (name or class) on the paper protocol, ``overrides`` on top.

    SASRec gets :data:`PAPER_CONFIG`; any other model :data:`PROTOCOL_CONFIG` (its own
    hyper-parameters come from ``overrides`` or its defaults).
    """
    import torch

    refused = sorted(set(overrides or {}) & REFUSED_SETTINGS)
    if refused:
        raise ValueError(
            f"RecBole settings {refused} are not accepted: they make RecBole load pickled datasets, "
            "loaders or checkpoints from disk; every run here starts from the atomic files"
        )
    device = _resolve_device(device)
    config_dict = copy.deepcopy(PAPER_CONFIG if model == "SASRec" else PROTOCOL_CONFIG)
    config_dict.update(
        {
            "seed": seed,
            "data_path": data_path or recbole_data_path(),
            "checkpoint_dir": checkpoint_dir or tempfile.mkdtemp(prefix="recbole-ckpt-"),
            "use_gpu": device.startswith("cuda"),
            # RecBole sets CUDA_VISIBLE_DEVICES to gpu_id: keep the GPUs the caller gave this process.
            "gpu_id": os.environ.get("CUDA_VISIBLE_DEVICES") or "0" if device.startswith("cuda") else "",
        }
    )
    config_dict.update(copy.deepcopy(overrides or {}))
    config = recbole_config(model, dataset, config_dict)
    config["device"] = torch.device(device)
    return config


@dataclass
class ReferenceResult:
    """What one reference run yields (``scores`` etc. are for the test interactions)."""

    seed: int
    config: dict[str, Any]
    best_valid_score: float
    valid_metrics: dict[str, float]
    test_metrics: dict[str, float]
    epoch_seconds: list[float]
    train_samples_per_epoch: int
    epochs_run: int
    best_epoch: int
    # [n_users, n_items + 1] float32; column 0 is padding (-inf), column j is item_raw_ids[j].
    scores: np.ndarray = field(repr=False)
    user_raw_ids: np.ndarray = field(repr=False)
    target_raw_ids: np.ndarray = field(repr=False)
    target_index: np.ndarray = field(repr=False)
    item_raw_ids: np.ndarray = field(repr=False)
    # [n_users, n_items + 1] bool: items the user interacted with before the test interaction.
    seen_mask: np.ndarray = field(repr=False)
    # The production protocol's inputs (export_test_scores): scores, seen items, cold users.
    night_scores: np.ndarray = field(repr=False)
    night_seen_mask: np.ndarray = field(repr=False)
    night_cold: np.ndarray = field(repr=False)

    @property
    def mean_epoch_seconds(self) -> float:
        return float(np.mean(self.epoch_seconds)) if self.epoch_seconds else float("nan")

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable figures (no matrices)."""
        return {
            "model": f"RecBole {self.config.get('model', 'SASRec')}",
            "seed": self.seed,
            "config": self.config,
            "best_valid_score": self.best_valid_score,
            "valid_metrics": self.valid_metrics,
            "test_metrics_recbole": self.test_metrics,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "epoch_seconds": self.epoch_seconds,
            "mean_epoch_seconds": self.mean_epoch_seconds,
            "train_samples_per_epoch": self.train_samples_per_epoch,
            "train_sequences_per_second": (
                self.train_samples_per_epoch / self.mean_epoch_seconds if self.epoch_seconds else None
            ),
            "n_test_users": len(self.user_raw_ids),
            "night_cold_users": int(self.night_cold.sum()),
            "n_items": len(self.item_raw_ids) - 1,
        }

    def save_scores(self, path: str | os.PathLike[str]) -> None:
        np.savez_compressed(
            path,
            scores=self.scores,
            user_raw_ids=self.user_raw_ids,
            target_raw_ids=self.target_raw_ids,
            target_index=self.target_index,
            item_raw_ids=self.item_raw_ids,
            seen_mask=self.seen_mask,
            night_scores=self.night_scores,
            night_seen_mask=self.night_seen_mask,
            night_cold=self.night_cold,
        )


def _timed_trainer_class() -> type:
    from recbole.trainer import Trainer

    class TimedTrainer(Trainer):
        """RecBole's Trainer, recording the wall time of every training epoch and keeping the
        best epoch's weights in memory: where RecBole would pickle a checkpoint (model, optimizer
        and its Config), a copy of the model's state dict is kept, and :meth:`restore_best` loads
        it back. Nothing goes through a file, so nothing is unpickled."""

        def __init__(self, config: Any, model: Any) -> None:
            super().__init__(config, model)
            self.epoch_seconds: list[float] = []
            self.best_epoch = -1
            self.best_state: dict[str, Any] | None = None

        def _train_epoch(self, train_data: Any, epoch_idx: int, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
            self.epoch_seconds.append(time.perf_counter() - start)
            return out

        def _save_checkpoint(self, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best_epoch = epoch

        def restore_best(self) -> None:
            if self.best_state is None:
                raise RuntimeError("no epoch was kept: fit(saved=True) must run first")
            self.model.load_state_dict(self.best_state)

    return TimedTrainer


def _prepare(config: Any, exact_timestamps: bool = True) -> tuple[Any, Any, Any, Any]:
    """Dataset and RecBole's train/valid/test loaders (``exact_timestamps``: see module docs)."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    init_seed(config["seed"], config["reproducibility"])
    if exact_timestamps:
        from peers.recbole.dataset import ExactTimeSequentialDataset

        dataset = ExactTimeSequentialDataset(config)
    else:
        dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return dataset, train_data, valid_data, test_data


def _metric_keys(metrics: dict[str, Any] | None) -> dict[str, float]:
    """RecBole's ``hit@10``/``ndcg@10``/``mrr@10`` keys as the project's ``hr@10``/... ."""
    out = {}
    for key, value in (metrics or {}).items():
        name = str(key).lower()
        out["hr" + name[3:] if name.startswith("hit@") else name] = float(value)
    return out


SECONDS_PER_DAY = 86_400


def _histories(
    dataset: Any, user_idx: np.ndarray, target_idx: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per test row, the user's interactions before the test one: (items, times), chronological.

    ``inter_feat`` holds RecBole's augmented samples (one per prefix, in time order after
    ``build``; a stable sort by user keeps each user's in time order): a user with n events has
    n - 1 rows whose targets are events 2..n; event 1 is the first row's history.
    """
    inter = dataset.inter_feat
    suffix = dataset.config["LIST_SUFFIX"]
    uid, iid, time = dataset.uid_field, dataset.iid_field, dataset.time_field
    all_users = inter[uid].numpy()
    order = np.argsort(all_users, kind="stable")
    all_users = all_users[order]
    all_items = inter[iid].numpy()[order]
    all_times = inter[time].numpy().astype(np.float64)[order]
    first_items = inter[iid + suffix][:, 0].numpy()[order]
    first_times = inter[time + suffix][:, 0].numpy().astype(np.float64)[order]
    lows = np.searchsorted(all_users, user_idx, side="left")
    highs = np.searchsorted(all_users, user_idx, side="right")
    out = []
    for row, (lo, hi) in enumerate(zip(lows, highs, strict=True)):
        if hi <= lo or all_items[hi - 1] != target_idx[row]:
            raise ValueError(f"test target of user row {row} is not the user's last interaction")
        items = np.concatenate([first_items[lo : lo + 1], all_items[lo : hi - 1]])
        times = np.concatenate([first_times[lo : lo + 1], all_times[lo : hi - 1]])
        out.append((items, times))
    return out


def night_inputs(
    histories: list[tuple[np.ndarray, np.ndarray]], target_times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The production protocol's cut (``model.evaluate``): per test row, how many of the user's
    earlier events are dated before the UTC midnight that starts the target's day (the events
    the night before that day knew: a prefix, the history being chronological), and that
    midnight (the night's end, the query time)."""
    night = np.asarray(target_times, dtype=np.float64)
    night = night - night % SECONDS_PER_DAY
    known = np.array(
        [
            int(np.searchsorted(times, cut, side="left"))
            for (_, times), cut in zip(histories, night, strict=True)
        ]
    )
    return known, night


def _night_interaction(dataset: Any, rows: np.ndarray, user_idx: np.ndarray, histories, known, night) -> Any:
    """A RecBole interaction of ``rows``: each user's last ``MAX_ITEM_LIST_LENGTH`` events before
    the night, left-aligned and padded with 0; query time = the night's end (never before the
    last input event)."""
    import torch
    from recbole.data.interaction import Interaction

    config = dataset.config
    suffix, max_len = config["LIST_SUFFIX"], config["MAX_ITEM_LIST_LENGTH"]
    iid, time = dataset.iid_field, dataset.time_field
    items = np.zeros((len(rows), max_len), dtype=np.int64)
    times = np.zeros((len(rows), max_len), dtype=np.float64)
    lengths = np.zeros(len(rows), dtype=np.int64)
    query = np.zeros(len(rows), dtype=np.float64)
    for i, row in enumerate(rows):
        row_items, row_times = histories[row]
        start = max(int(known[row]) - max_len, 0)
        n = int(known[row]) - start
        items[i, :n] = row_items[start : known[row]]
        times[i, :n] = row_times[start : known[row]]
        lengths[i] = n
        query[i] = max(night[row], row_times[known[row] - 1])
    return Interaction(
        {
            dataset.uid_field: torch.from_numpy(user_idx[rows]),
            iid + suffix: torch.from_numpy(items),
            time + suffix: torch.from_numpy(times),
            config["ITEM_LIST_LENGTH_FIELD"]: torch.from_numpy(lengths),
            time: torch.from_numpy(query),
        }
    )


def export_test_scores(
    model: Any, dataset: Any, test_data: Any, device: Any, batch_size: int = 1024, night: bool = True
) -> dict[str, np.ndarray]:
    """Score every test interaction of ``test_data`` against all items with ``model``, twice.

    ``scores``: RecBole's own test inputs, mirroring ``Trainer._full_sort_batch_eval``
    (``full_sort_predict``, padding column set to ``-inf``; no history masking for sequential
    models), with ``seen_mask`` every interaction before the test one. ``night_scores``: the
    production protocol's inputs (:func:`night_inputs`): each user as the night before the
    target's day saw them, with ``night_seen_mask`` the items they had by then and
    ``night_cold`` the users with no event before that night (their rows are not scored; the
    evaluator counts them as misses); without ``night`` (timestamps not exact: RecBole's float32
    or normalised times cannot place a midnight) those three are empty. Plus the ids that line the
    rows up with another evaluator.
    """
    import torch

    uid_field = dataset.uid_field
    iid_field = dataset.iid_field
    n_cols = dataset.item_num
    model.eval()
    score_rows, users, targets, target_times = [], [], [], []
    with torch.no_grad():
        for interaction, history_index, positive_u, positive_i in test_data:
            if history_index is not None:
                raise ValueError("expected a sequential full-sort loader (no history index)")
            scores = model.full_sort_predict(interaction.to(device)).view(-1, n_cols).float()
            scores[:, 0] = -torch.inf
            if not torch.equal(positive_u.cpu(), torch.arange(len(scores))):
                raise ValueError("expected exactly one test target per row")
            score_rows.append(scores.cpu().numpy())
            users.append(interaction[uid_field].cpu().numpy())
            targets.append(positive_i.cpu().numpy())
            target_times.append(interaction[dataset.time_field].cpu().numpy().astype(np.float64))
    scores_np = np.concatenate(score_rows).astype(np.float32)
    user_idx = np.concatenate(users)
    target_idx = np.concatenate(targets).astype(np.int64)
    histories = _histories(dataset, user_idx, target_idx)
    seen = np.zeros(scores_np.shape, dtype=bool)
    for row, (items, _) in enumerate(histories):
        seen[row, items] = True

    ids = {
        "scores": scores_np,
        "user_raw_ids": np.asarray(dataset.id2token(uid_field, user_idx)),
        "target_raw_ids": np.asarray(dataset.id2token(iid_field, target_idx)),
        "target_index": target_idx,
        "item_raw_ids": np.asarray(dataset.id2token(iid_field, np.arange(n_cols))),
        "seen_mask": seen,
    }
    if not night:
        empty = np.zeros((0, n_cols))
        return {
            **ids,
            "night_scores": empty.astype(np.float32),
            "night_seen_mask": empty.astype(bool),
            "night_cold": np.zeros(0, dtype=bool),
        }
    known, night_end = night_inputs(histories, np.concatenate(target_times))
    cold = known == 0
    night_scores = np.full(scores_np.shape, -np.inf, dtype=np.float32)
    night_seen = np.zeros(scores_np.shape, dtype=bool)
    warm = np.flatnonzero(~cold)
    with torch.no_grad():
        for start in range(0, len(warm), batch_size):
            rows = warm[start : start + batch_size]
            batch = _night_interaction(dataset, rows, user_idx, histories, known, night_end).to(device)
            scores = model.full_sort_predict(batch).view(-1, n_cols).float()
            scores[:, 0] = -torch.inf
            night_scores[rows] = scores.cpu().numpy()
    for row in warm:
        night_seen[row, histories[row][0][: known[row]]] = True
    return {
        **ids,
        "night_scores": night_scores,
        "night_seen_mask": night_seen,
        "night_cold": cold,
    }


def run_recbole_model(
    model_class: Any,
    seed: int = 2020,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    dataset: str = "ml-100k",
    data_path: str | None = None,
    exact_timestamps: bool = True,
) -> ReferenceResult:
    """Train ``model_class`` (a RecBole SequentialRecommender) with RecBole's Trainer on the
    paper protocol, test its best-validation epoch and export its test score matrix."""
    import torch

    name = model_class.__name__
    overrides = {**(EXACT_TIME_CONFIG if exact_timestamps else {}), **(overrides or {})}
    with tempfile.TemporaryDirectory(prefix="recbole-ckpt-") as ckpt:
        config = build_config(seed, dataset, data_path, ckpt, device, overrides, model=model_class)
        ds, train_data, valid_data, test_data = _prepare(config, exact_timestamps)
        torch.manual_seed(seed)
        model = model_class(config, train_data._dataset).to(config["device"])
        trainer = _timed_trainer_class()(config, model)
        best_valid_score, best_valid = trainer.fit(
            train_data, valid_data, saved=True, show_progress=config["show_progress"]
        )
        trainer.restore_best()
        test_metrics = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        exported = export_test_scores(trainer.model, ds, test_data, config["device"], night=exact_timestamps)

    settings = {key: config[key] for key in SUMMARY_KEYS if config[key] is not None}
    settings.update(
        model=name, device=str(config["device"]), dataset=dataset, exact_timestamps=exact_timestamps
    )
    return ReferenceResult(
        seed=seed,
        config=settings,
        best_valid_score=float(best_valid_score),
        valid_metrics=_metric_keys(best_valid),
        test_metrics=_metric_keys(test_metrics),
        epoch_seconds=list(trainer.epoch_seconds),
        train_samples_per_epoch=len(train_data.dataset),
        epochs_run=len(trainer.epoch_seconds),
        best_epoch=int(trainer.best_epoch),
        **exported,
    )


def run_reference(
    seed: int = 2020,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    dataset: str = "ml-100k",
    data_path: str | None = None,
    exact_timestamps: bool = True,
) -> ReferenceResult:
    """Train and evaluate RecBole's SASRec on the paper protocol; see the module docstring."""
    return run_recbole_model(
        sequential_models().SASRec, seed, overrides, device, dataset, data_path, exact_timestamps
    )


def measure_training_throughput(
    n_batches: int = 5,
    warmup_batches: int = 1,
    batch_size: int | None = None,
    max_len: int | None = None,
    seed: int = 2020,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    dataset: str = "ml-100k",
    data_path: str | None = None,
) -> dict[str, Any]:
    """RecBole SASRec training throughput in sequences (training interactions) per second.

    Runs RecBole's own training step (``calculate_loss`` -> backward -> Adam step, what
    ``Trainer._train_epoch`` does, without its logging) on real batches of the paper
    configuration's augmented training set. One sequence = one training sample = one
    training interaction (a prefix and its next item).
    """
    import torch

    overrides = {**EXACT_TIME_CONFIG, **(overrides or {})}
    if batch_size is not None:
        overrides["train_batch_size"] = batch_size
    if max_len is not None:
        overrides["MAX_ITEM_LIST_LENGTH"] = max_len
    sasrec = sequential_models().SASRec

    with tempfile.TemporaryDirectory(prefix="recbole-ckpt-") as ckpt:
        config = build_config(seed, dataset, data_path, ckpt, device, overrides)
        _, train_data, _, _ = _prepare(config)
    dev = config["device"]
    model = sasrec(config, train_data._dataset).to(dev)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    batches = iter(train_data)
    n_sequences = 0
    start = None
    for step in range(warmup_batches + n_batches):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(train_data)
            batch = next(batches)
        if step == warmup_batches:
            sync()
            start = time.perf_counter()
        batch = batch.to(dev)
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        if step >= warmup_batches:
            n_sequences += len(batch)
    sync()
    seconds = time.perf_counter() - start if start is not None else float("nan")
    return {
        "model": "RecBole SASRec",
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "batch_size": config["train_batch_size"],
        "max_len": config["MAX_ITEM_LIST_LENGTH"],
        "hidden_size": config["hidden_size"],
        "n_layers": config["n_layers"],
        "n_batches": n_batches,
        "sequences": n_sequences,
        "seconds": seconds,
        "sequences_per_second": n_sequences / seconds if seconds > 0 else float("nan"),
        "train_samples_per_epoch": len(train_data.dataset),
    }


def split_targets(
    exact_timestamps: bool = True, dataset: str = "ml-100k", data_path: str | None = None
) -> dict[str, dict[str, Any]]:
    """RecBole's leave-one-out split of ``dataset`` on the paper protocol (exact timestamps unless
    told otherwise), by raw user id: ``valid`` and ``test``, each user's target item; and
    ``test_night_known`` (exact timestamps only), how many of the user's events before the test
    one the night before the test item's day knew (:func:`night_inputs`; 0 = a cold user)."""
    overrides = EXACT_TIME_CONFIG if exact_timestamps else {}
    with tempfile.TemporaryDirectory(prefix="recbole-ckpt-") as ckpt:
        config = build_config(
            dataset=dataset, data_path=data_path, checkpoint_dir=ckpt, device="cpu", overrides=overrides
        )
        full, _, valid_data, test_data = _prepare(config, exact_timestamps)

    def raw(field: str, values: Any) -> list[str]:
        return [str(v) for v in full.id2token(field, np.asarray(values))]

    out: dict[str, dict[str, Any]] = {}
    for name, data in (("valid", valid_data), ("test", test_data)):
        inter = data.dataset.inter_feat
        users, items = inter[full.uid_field].numpy(), inter[full.iid_field].numpy()
        out[name] = dict(zip(raw(full.uid_field, users), raw(full.iid_field, items), strict=True))
        if name == "test" and exact_timestamps:
            histories = _histories(full, users, items)
            known, _ = night_inputs(histories, inter[full.time_field].numpy())
            out["test_night_known"] = dict(zip(raw(full.uid_field, users), map(int, known), strict=True))
    return out


def recbole_metrics(scores: np.ndarray, targets: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """RecBole's own evaluation of one target per row: its collector's top-k positions
    (``torch.topk``, which orders exact ties arbitrarily), then ``Hit``/``NDCG``/``MRR``
    (keys ``hr@10`` ...)."""
    import torch
    from recbole.evaluator.collector import DataStruct
    from recbole.evaluator.metrics import MRR, NDCG, Hit

    numpy_aliases()
    scores_t = torch.from_numpy(np.asarray(scores))
    targets_t = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    _, topk_index = torch.topk(scores_t, max(ks), dim=-1)
    positives = torch.zeros_like(scores_t, dtype=torch.int)
    positives[torch.arange(len(targets_t)), targets_t] = 1
    rec_topk = torch.cat([positives.gather(1, topk_index), positives.sum(dim=1, keepdim=True)], dim=1)
    data_struct = DataStruct()
    data_struct.set("rec.topk", rec_topk)
    settings = {"topk": list(ks), "metric_decimal_place": 12}
    results: dict[str, float] = {}
    for metric in (Hit(settings), NDCG(settings), MRR(settings)):
        results.update(metric.calculate_metric(data_struct))
    return _metric_keys(results)

"""Run our SS4Rec (``model.ss4rec.SS4Rec``) under RecBole's data pipeline, trainer and evaluator.

:class:`SS4RecAdapter` satisfies RecBole's ``SequentialRecommender`` contract
(``__init__(config, dataset)``, ``calculate_loss``, ``predict``, ``full_sort_predict``) and
holds an unmodified :class:`~model.ss4rec.SS4Rec` as ``self.net`` (so its ``state_dict`` is
``net.``-prefixed SS4Rec weights). RecBole interaction fields used:

* ``item_id_list`` [B, L] / ``item_length`` [B]: the history, left-aligned, padded with 0
  (RecBole's layout is SS4Rec's: internal item ids 1..N, 0 = padding);
* ``timestamp_list`` [B, L]: the history's timestamps; RecBole builds a ``<field>_list``
  for every loaded inter field, so ``load_col: {inter: [user_id, item_id, timestamp]}``
  and ``TIME_FIELD: timestamp`` are all it takes;
* ``item_id`` / ``timestamp``: the target item and its timestamp. The timestamp is the
  query time (paper protocol: gap at the last position = t(target) - t(last)), or, with
  ``ss4rec_query_time: last``, the last event's own time (gap 0, nothing leaks).

Training: RecBole's sequential dataset already enumerates prefixes (every prefix of every
user, truncated to ``MAX_ITEM_LIST_LENGTH``, is one sample), so ``calculate_loss`` scores
the last valid position only, with cross-entropy over the N real items (padding excluded,
as in ``SS4Rec.calculate_loss``). This is the same objective as SS4Rec's all-positions loss
over whole sequences, sample for sample (tested), at L times the cost; it exists to run
SS4Rec inside RecBole for comparison, not as our training path.

Exact timestamps: SS4Rec needs raw Unix seconds. RecBole stores float fields as float32
(Unix seconds around 1e9 are then exact only to 64 s) and its ml-100k.yaml min-max normalises
them (``normalize_all: True``), which would turn every gap into a fraction of the data's time
span. :class:`~peers.recbole.dataset.ExactTimeSequentialDataset` keeps the time field in
float64 (exact for integer seconds below 2^53) and :func:`adapter_config` switches
normalisation off; the adapter refuses a config that normalises the time field and float32
timestamp lists above 2^24. The dataset class is registered as
``recbole.data.dataset.SS4RecAdapterDataset``, the name ``recbole.data.create_dataset`` looks
up for a model class named ``SS4RecAdapter`` (RecBole's hook for model-specific datasets), so
``create_dataset`` builds it for this model and nothing else changes.
:func:`peers.recbole.reference.run_reference` uses it for SASRec too (``exact_timestamps``), so
both run on the exact-time split.

Hyper-parameters come from the RecBole config (keys of :data:`ADAPTER_DEFAULTS`, defaults =
the released ML-1M config as in ``configs/base.yaml``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import Tensor

from peers.recbole import dataset as _exact_time  # noqa: F401  (registers SS4RecAdapterDataset)
from peers.recbole.reference import run_recbole_model

__all__ = [
    "ADAPTER_DEFAULTS",
    "SS4RecAdapter",
    "adapter_config",
    "run_ss4rec_under_recbole",
]

#: RecBole config keys read by the adapter, with their defaults.
ADAPTER_DEFAULTS: dict[str, Any] = {
    "hidden_size": 64,
    "n_layers": 2,
    "s5_state": 32,
    "dt_min": 0.001,
    "dt_max": 0.1,
    "mamba_d_state": 32,
    "mamba_d_conv": 4,
    "mamba_expand": 2,
    "dropout": 0.2,
    "ss4rec_variant": "ss4rec",
    "time_unit_seconds": 1.0,
    "gap_transform": "linear",
    # "target": the target's timestamp (paper protocol); "last": the last input event's.
    "ss4rec_query_time": "target",
    # RecBole settings the adapter depends on: raw seconds, cross-entropy over all items.
    "normalize_all": False,
    "normalize_field": None,
    "loss_type": "CE",
    "train_neg_sample_args": None,
}

FLOAT32_EXACT_LIMIT = 2**24


def adapter_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """RecBole config-dict entries for :class:`SS4RecAdapter`: defaults + ``overrides``."""
    return {**ADAPTER_DEFAULTS, **(overrides or {})}


def _seconds(times: Tensor) -> Tensor:
    """RecBole time values (float64 seconds) -> int64 seconds, refusing lossy float32 input."""
    if times.dtype == torch.float32 and times.numel() and float(times.abs().max()) > FLOAT32_EXACT_LIMIT:
        raise ValueError(
            "timestamps reached SS4RecAdapter as float32 (RecBole's default for float fields), which "
            "rounds Unix seconds to 64 s; build the dataset with ExactTimeSequentialDataset "
            "(recbole.data.create_dataset does for model SS4RecAdapter)"
        )
    if times.is_floating_point():
        return torch.round(times).to(torch.int64)
    return times.to(torch.int64)


class SS4RecAdapter(SequentialRecommender):
    """SS4Rec as a RecBole sequential model (see the module docstring)."""

    input_type = InputType.POINTWISE

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        from model.ss4rec import SS4Rec, SS4RecConfig

        def get(key: str) -> Any:  # adapter keys absent from the RecBole config get their defaults
            value = config[key]
            return ADAPTER_DEFAULTS[key] if value is None else value

        if config["loss_type"] not in (None, "CE"):
            raise ValueError(
                f"SS4RecAdapter trains with cross-entropy only, got loss_type={config['loss_type']}"
            )
        if config["train_neg_sample_args"] and config["train_neg_sample_args"].get("distribution") != "none":
            raise ValueError("SS4RecAdapter needs train_neg_sample_args: None (cross-entropy over all items)")
        self.TIME = config["TIME_FIELD"]
        if not self.TIME:
            raise ValueError("SS4RecAdapter needs TIME_FIELD (and the time field in load_col)")
        if config["normalize_all"] or self.TIME in (config["normalize_field"] or []):
            raise ValueError(
                "SS4RecAdapter needs raw Unix-second timestamps: set normalize_all: False and keep "
                f"{self.TIME!r} out of normalize_field (see adapter_config)"
            )
        self.TIME_SEQ = self.TIME + config["LIST_SUFFIX"]
        self.query_time_mode = get("ss4rec_query_time")
        if self.query_time_mode not in ("target", "last"):
            raise ValueError(f"ss4rec_query_time must be 'target' or 'last', got {self.query_time_mode!r}")
        self.ss4rec_config = SS4RecConfig(
            n_items=self.n_items - 1,  # RecBole's n_items counts the padding id 0
            hidden_size=get("hidden_size"),
            n_layers=get("n_layers"),
            s5_state=get("s5_state"),
            dt_min=get("dt_min"),
            dt_max=get("dt_max"),
            mamba_d_state=get("mamba_d_state"),
            mamba_d_conv=get("mamba_d_conv"),
            mamba_expand=get("mamba_expand"),
            dropout=get("dropout"),
            variant=get("ss4rec_variant"),
            time_unit_seconds=float(get("time_unit_seconds")),
            gap_transform=get("gap_transform"),
        )
        self.net = SS4Rec(self.ss4rec_config)

    # -- RecBole interaction -> SS4Rec arguments ------------------------------------------

    def _inputs(self, interaction: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        items = interaction[self.ITEM_SEQ]
        lengths = interaction[self.ITEM_SEQ_LEN]
        timestamps = _seconds(interaction[self.TIME_SEQ])
        if self.query_time_mode == "target":
            query_time = _seconds(interaction[self.TIME])
        else:
            query_time = timestamps.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        return items, timestamps, lengths, query_time

    def last_hidden(self, interaction: Any) -> Tensor:
        return self.net.last_hidden(*self._inputs(interaction))

    # -- SequentialRecommender contract ---------------------------------------------------

    def forward(
        self, item_seq: Tensor, item_seq_len: Tensor, timestamps: Tensor, query_time: Tensor
    ) -> Tensor:
        """RecBole-style forward: hidden state at the last valid position [B, H]."""
        return self.net.last_hidden(item_seq, timestamps, item_seq_len, query_time)

    def calculate_loss(self, interaction: Any) -> Tensor:
        """Cross-entropy of each sample's target over the N real items, at its last position."""
        hidden = self.last_hidden(interaction)
        logits = hidden @ self.net.item_embedding.weight[1:].T  # [B, N]: padding excluded
        return F.cross_entropy(logits, interaction[self.POS_ITEM_ID] - 1)

    def predict(self, interaction: Any) -> Tensor:
        hidden = self.last_hidden(interaction)
        return (hidden * self.net.item_embedding(interaction[self.ITEM_ID])).sum(dim=-1)

    def full_sort_predict(self, interaction: Any) -> Tensor:
        """[B, N + 1] scores of every item; column 0 (padding) is -inf."""
        return self.net.full_sort_predict(*self._inputs(interaction))


def run_ss4rec_under_recbole(
    seed: int = 2020,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    dataset: str = "ml-100k",
    data_path: str | None = None,
) -> Any:
    """Train and evaluate SS4Rec with RecBole's trainer on the paper protocol.

    Same protocol, outputs and options as :func:`peers.recbole.reference.run_reference`
    (a :class:`~peers.recbole.reference.ReferenceResult`); ``overrides`` may carry the
    adapter's keys (:data:`ADAPTER_DEFAULTS`) and any RecBole setting. SS4Rec's own
    defaults (batch 1024, lr 1e-3, early stopping on NDCG@10, patience 10) match
    :data:`peers.recbole.reference.PAPER_CONFIG`.
    """
    return run_recbole_model(
        SS4RecAdapter,
        seed=seed,
        overrides=adapter_config(overrides),
        device=device,
        dataset=dataset,
        data_path=data_path,
        exact_timestamps=True,
    )

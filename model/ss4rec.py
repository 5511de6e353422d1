"""SS4Rec (Xiao et al., arXiv 2502.08132): continuous-time sequential recommendation with two SSMs.

    items [B, L] --item_embedding--> [B, L, H]            (padding id 0; no positions, dropout or norm)
    n_layers x block:
        h = LayerNorm(h + Dropout(S5(h, time gaps)))      time-aware: step = gap * exp(log_step)
        h = LayerNorm(h + Dropout(Mamba(h)))              relation-aware: input-dependent step
                                                           (one LayerNorm per block, used twice; no FFN)
    score(next item) = h[last valid] . item_embedding     (tied), cross-entropy over all items

Faithful to the released code, without its known bugs: full_sort_predict and predict read the
right positions, and the ``variant`` switch really builds the ablations ("s5_only": S5 half-blocks,
"mamba_only": Mamba half-blocks, which ignore time).

Time. The gap at position i is t[i+1] - t[i]; at the last valid position it is
``query_time - t[last]``; at padding it is 0, and a zero step leaves the S5 state unchanged. Gaps
are computed exactly in int64 seconds, converted to float64, divided by ``time_unit_seconds`` and
only then cast to float32 (with ``gap_transform: log1p``, S5 sees ``log1p(gap / unit)`` instead: a
compressed gap, so that an hour and a year differ by a factor of about 2 rather than 9,000). The
default unit, 1 second, and the linear gap are the released code's (it feeds raw Unix seconds to
S5, so dt_min/dt_max = 0.001/0.1 mean per-second steps); the released code computes them from
float32 timestamps, which at today's epoch values are only exact to about a minute. With a linear
gap the unit only rescales S5's step multipliers: unit u with steps [a, b] is the model with unit 1
and steps [a/u, b/u] (the same outputs for the same weights, log_step shifted by log u; plain Adam
trains both alike), so the time scale is one axis, studied in docs/time_scale.md.

Training. Both SSMs are causal, so one pass over a whole sequence yields every prefix's prediction;
``calculate_loss`` trains on all positions, equivalent to RecBole's prefix augmentation.

Initialisation (as released): nn.Linear and nn.Embedding weights N(0, 0.02), Linear biases 0,
LayerNorm (1, 0). Kept from mamba_ssm instead: Mamba's dt_proj bias (the inverse-softplus step
init, marked ``_no_reinit`` as mamba_ssm does; the released code zeroed it), A_log and D. The
embedding's padding row is zeroed, and padding is excluded from the softmax and from scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from model.ssm import S5, Mamba

if TYPE_CHECKING:
    from recsys.config import ModelConfig

VARIANTS = ("ss4rec", "s5_only", "mamba_only")
GAP_TRANSFORMS = ("linear", "log1p")
MODEL_NAME_TO_VARIANT = {"ss4rec": "ss4rec", "ss4rec_s5_only": "s5_only", "ss4rec_mamba_only": "mamba_only"}
LAYER_NORM_EPS = 1e-12  # released value
INIT_STD = 0.02
# Most logits (rows x items) calculate_loss holds at once: 2**26 floats = 256 MiB, plus as much for
# their gradient; more rows are split into chunks whose logits are recomputed in the backward pass.
LOSS_CHUNK_ELEMENTS = 2**26


@dataclass
class SS4RecConfig:
    n_items: int  # real items; the embedding has n_items + 1 rows (0 = padding)
    hidden_size: int = 64
    n_layers: int = 2
    s5_state: int = 32
    dt_min: float = 0.001
    dt_max: float = 0.1
    mamba_d_state: int = 32
    mamba_d_conv: int = 4
    mamba_expand: int = 2
    dropout: float = 0.2
    variant: str = "ss4rec"  # "ss4rec" | "s5_only" | "mamba_only"
    time_unit_seconds: float = 1.0  # S5 sees gap_seconds / time_unit_seconds
    gap_transform: str = "linear"  # "linear" | "log1p": S5 sees log1p(gap_seconds / time_unit_seconds)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"SS4RecConfig.variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.n_items < 1:
            raise ValueError(f"SS4RecConfig.n_items must be >= 1, got {self.n_items}")
        if self.time_unit_seconds <= 0:
            raise ValueError(f"SS4RecConfig.time_unit_seconds must be > 0, got {self.time_unit_seconds}")
        if self.gap_transform not in GAP_TRANSFORMS:
            raise ValueError(
                f"SS4RecConfig.gap_transform must be one of {GAP_TRANSFORMS}, got {self.gap_transform!r}"
            )

    @classmethod
    def from_model_config(cls, model_config: ModelConfig, n_items: int) -> SS4RecConfig:
        """From the ``model`` section of the run config; its name picks the variant."""
        if model_config.name not in MODEL_NAME_TO_VARIANT:
            raise ValueError(
                f"model.name {model_config.name!r} is not an SS4Rec model; expected one of "
                f"{sorted(MODEL_NAME_TO_VARIANT)}"
            )
        return cls(
            n_items=n_items,
            hidden_size=model_config.hidden_size,
            n_layers=model_config.n_layers,
            s5_state=model_config.s5_state,
            dt_min=model_config.dt_min,
            dt_max=model_config.dt_max,
            mamba_d_state=model_config.mamba_d_state,
            mamba_d_conv=model_config.mamba_d_conv,
            mamba_expand=model_config.mamba_expand,
            dropout=model_config.dropout,
            variant=MODEL_NAME_TO_VARIANT[model_config.name],
            time_unit_seconds=model_config.time_unit_seconds,
            gap_transform=model_config.gap_transform,
        )


class BlockState(NamedTuple):
    """Recurrent state of one block; None for a half the variant does not have."""

    s5: Tensor | None  # complex [B, s5_state]
    conv: Tensor | None  # [B, d_inner, d_conv]
    ssm: Tensor | None  # [B, d_inner, mamba_d_state]


class SS4RecBlock(nn.Module):
    def __init__(self, config: SS4RecConfig) -> None:
        super().__init__()
        hidden_size = config.hidden_size
        self.s5 = (
            S5(hidden_size, config.s5_state, dt_min=config.dt_min, dt_max=config.dt_max)
            if config.variant != "mamba_only"
            else None
        )
        self.mamba = (
            Mamba(
                hidden_size,
                d_state=config.mamba_d_state,
                d_conv=config.mamba_d_conv,
                expand=config.mamba_expand,
            )
            if config.variant != "s5_only"
            else None
        )
        self.dropout = nn.Dropout(config.dropout)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)

    def forward(self, hidden: Tensor, steps: Tensor) -> Tensor:
        """hidden: [B, L, H]; steps: [B, L] float32 gaps in model units -> [B, L, H]."""
        if self.s5 is not None:
            hidden = self.layer_norm(hidden + self.dropout(self.s5(hidden, steps)))
        if self.mamba is not None:
            hidden = self.layer_norm(hidden + self.dropout(self.mamba(hidden)))
        return hidden

    def forward_with_state(
        self, hidden: Tensor, steps: Tensor, positions: Tensor
    ) -> tuple[Tensor, BlockState]:
        """:meth:`forward` (exact up to each row's ``positions`` [B]) and the block's state after
        that position, as :meth:`step` would hold it."""
        s5_state = conv_state = ssm_state = None
        if self.s5 is not None:
            out, s5_state = self.s5.forward_with_state(hidden, steps, positions)
            hidden = self.layer_norm(hidden + self.dropout(out))
        if self.mamba is not None:
            out, conv_state, ssm_state = self.mamba.forward_with_state(hidden, positions)
            hidden = self.layer_norm(hidden + self.dropout(out))
        return hidden, BlockState(s5_state, conv_state, ssm_state)

    def initial_state(self, batch_size: int, device: torch.device) -> BlockState:
        s5 = self.s5.initial_state(batch_size, device) if self.s5 is not None else None
        conv, ssm = self.mamba.initial_state(batch_size, device) if self.mamba is not None else (None, None)
        return BlockState(s5, conv, ssm)

    def step(self, hidden: Tensor, steps: Tensor, state: BlockState) -> tuple[Tensor, BlockState]:
        """One position. hidden: [B, H]; steps: [B] -> ([B, H], new state)."""
        s5_state, conv_state, ssm_state = state
        if self.s5 is not None:
            out, s5_state = self.s5.step(hidden, steps, s5_state)
            hidden = self.layer_norm(hidden + self.dropout(out))
        if self.mamba is not None:
            out, conv_state, ssm_state = self.mamba.step(hidden, conv_state, ssm_state)
            hidden = self.layer_norm(hidden + self.dropout(out))
        return hidden, BlockState(s5_state, conv_state, ssm_state)


class SS4Rec(nn.Module):
    """Sequences are left-aligned, right-padded with item 0 and timestamp 0; timestamps in int64 seconds."""

    def __init__(self, config: SS4RecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.n_items + 1, config.hidden_size, padding_idx=0)
        self.blocks = nn.ModuleList(SS4RecBlock(config) for _ in range(config.n_layers))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        keeps_bias = getattr(getattr(module, "bias", None), "_no_reinit", False)  # Mamba's dt_proj
        if isinstance(module, nn.Linear) and module.bias is not None and not keeps_bias:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def time_gaps(self, timestamps: Tensor, lengths: Tensor, query_time: Tensor) -> Tensor:
        """Gaps in seconds, float64 [B, L]: t[i+1] - t[i]; at i = len-1: query_time - t[i]; padding: 0.

        Computed exactly in the timestamps' integer dtype. Negative gaps (out-of-order input, or a
        query time before the last event) are clamped to 0 rather than letting S5 run backwards.
        """
        positions = torch.arange(timestamps.shape[1], device=timestamps.device)
        next_time = F.pad(timestamps[:, 1:], (0, 1))
        last = positions == (lengths[:, None] - 1)
        gaps = torch.where(last, query_time[:, None] - timestamps, next_time - timestamps)
        gaps = torch.where(positions < lengths[:, None], gaps, torch.zeros_like(gaps))
        return gaps.clamp(min=0).to(torch.float64)

    def _steps(self, gaps_seconds: Tensor) -> Tensor:
        """Gaps in seconds -> S5's float32 steps: ``gap / unit``, or ``log1p(gap / unit)``."""
        steps = gaps_seconds.to(torch.float64) / self.config.time_unit_seconds
        if self.config.gap_transform == "log1p":
            steps = torch.log1p(steps)
        return steps.to(torch.float32)

    def forward(self, items: Tensor, timestamps: Tensor, lengths: Tensor, query_time: Tensor) -> Tensor:
        """items, timestamps: [B, L]; lengths, query_time: [B] -> hidden state at every position [B, L, H].

        The output at position i depends on items[:i+1], timestamps[:i+2] and (at the last valid
        position) query_time only; outputs at padding positions are meaningless.
        """
        steps = self._steps(self.time_gaps(timestamps, lengths, query_time))
        hidden = self.item_embedding(items)
        for block in self.blocks:
            hidden = block(hidden, steps)
        return hidden

    def last_hidden(self, items: Tensor, timestamps: Tensor, lengths: Tensor, query_time: Tensor) -> Tensor:
        """Hidden state at each sequence's last valid position: [B, H]."""
        hidden = self(items, timestamps, lengths, query_time)
        index = (lengths - 1).clamp(min=0)[:, None, None].expand(-1, 1, hidden.shape[-1])
        return hidden.gather(1, index).squeeze(1)

    def full_sort_predict(
        self, items: Tensor, timestamps: Tensor, lengths: Tensor, query_time: Tensor
    ) -> Tensor:
        """Scores of every item as the next one after the last valid position: [B, n_items + 1].

        Column 0 (padding) is -inf.
        """
        scores = self.last_hidden(items, timestamps, lengths, query_time) @ self.item_embedding.weight.T
        scores[:, 0] = float("-inf")
        return scores

    def calculate_loss(self, items: Tensor, timestamps: Tensor, lengths: Tensor) -> Tensor:
        """Mean next-item cross-entropy over every prefix of every sequence.

        ``items``/``timestamps`` [B, L] hold whole training sequences of ``lengths`` >= 1 events.
        Position i < len-1 sees items[:i+1] and predicts items[i+1], with the target's own timestamp
        t[i+1] as query time (the paper's protocol), i.e. the gap at i is t[i+1] - t[i]. That is
        ``forward(items, timestamps, lengths - 1, query_time=t[len-1])``; the final event is only a
        target. The mean is over all (sequence, position) targets, as with one sample per prefix.
        Softmax is over the n_items real items (padding excluded).
        """
        input_lengths = lengths - 1
        query_time = timestamps.gather(1, input_lengths.clamp(min=0)[:, None]).squeeze(1)
        hidden = self(items, timestamps, input_lengths, query_time)[:, :-1]  # [B, L-1, H]
        positions = torch.arange(hidden.shape[1], device=items.device)
        valid = positions < input_lengths[:, None]
        return self._cross_entropy(hidden[valid], items[:, 1:][valid])

    def _cross_entropy(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Mean CE of hidden [N, H] against target ids [N] (1..n_items), logits materialised in chunks."""
        weight = self.item_embedding.weight[1:]  # [n_items, H]
        if hidden.shape[0] == 0:
            return hidden.sum() * 0.0 + weight.sum() * 0.0
        rows = max(1, LOSS_CHUNK_ELEMENTS // weight.shape[0])
        if hidden.shape[0] <= rows:
            return _cross_entropy_sum(hidden, weight, targets - 1) / hidden.shape[0]
        total = sum(
            checkpoint(_cross_entropy_sum, h, weight, t - 1, use_reentrant=False)
            for h, t in zip(hidden.split(rows), targets.split(rows), strict=True)
        )
        return total / hidden.shape[0]

    def initial_state(self, batch_size: int) -> list[BlockState]:
        """Recurrent state before any event, one entry per block."""
        device = self.item_embedding.weight.device
        return [block.initial_state(batch_size, device) for block in self.blocks]

    @torch.no_grad()
    def prefix_state(
        self, items: Tensor, timestamps: Tensor, lengths: Tensor, query_time: Tensor
    ) -> list[BlockState]:
        """The recurrent state after each row's ``lengths`` events (>= 1), the last one's gap being
        ``query_time - t[last]``: what :meth:`step` holds after stepping them, from one parallel
        pass (the scans of :meth:`forward`) instead of ``lengths`` steps. Inference only.

        A user's scoring state is ``prefix_state`` of all but their last event with that event's
        time as query time; stepping the last event with the run's query time then gives
        :meth:`last_hidden` (``model/user_state.py``).
        """
        steps = self._steps(self.time_gaps(timestamps, lengths, query_time))
        positions = (lengths - 1).clamp(min=0)
        hidden = self.item_embedding(items)
        states = []
        for block in self.blocks:
            hidden, block_state = block.forward_with_state(hidden, steps, positions)
            states.append(block_state)
        return states

    def step(
        self, items: Tensor, gaps_seconds: Tensor, state: list[BlockState]
    ) -> tuple[Tensor, list[BlockState]]:
        """Advance by one event per sequence: items [B], gaps_seconds [B] = time to the next event.

        Returns (hidden [B, H], new state). Stepping positions 0..L-1 with ``time_gaps`` reproduces
        ``forward`` (in eval mode). To score a user whose state covers events 0..n-2, step event n-1
        with gap = query_time - t[n-1] and keep the *old* state: the real gap is known only once the
        next event arrives. Inputs are not modified.
        """
        hidden = self.item_embedding(items)
        steps = self._steps(gaps_seconds)
        new_state = []
        for block, block_state in zip(self.blocks, state, strict=True):
            hidden, block_state = block.step(hidden, steps, block_state)
            new_state.append(block_state)
        return hidden, new_state


def _cross_entropy_sum(hidden: Tensor, weight: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(hidden @ weight.T, targets, reduction="sum")

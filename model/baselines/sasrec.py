"""SASRec (Kang & McAuley, ICDM 2018), as RecBole 1.2.1 implements it, on plain torch.nn.

Architecture and defaults follow ``recbole/model/sequential_recommender/sasrec.py`` and its
``TransformerEncoder``: item embedding + learned absolute position embedding, LayerNorm,
dropout, then ``n_layers`` post-LN blocks (multi-head self-attention -> dropout -> residual
+ LayerNorm; Linear -> GELU -> Linear -> dropout -> residual + LayerNorm), a causal mask and
a padding mask, weights drawn from N(0, 0.02), scores = hidden . item embedding (tied),
cross-entropy over all items. RecBole's defaults: 2 heads, inner size 256 (4 x hidden),
hidden and attention dropout 0.5, GELU, LayerNorm eps 1e-12.

Two deliberate differences, both neutral for the comparison:
- training uses every position of a sequence at once (the causal mask makes this equal to
  RecBole's prefix augmentation for prefixes within ``max_seq_len``);
- the padding column 0 is left out of the softmax (RecBole includes it; it is never a target).

Sequences are left-aligned and right-padded, so position ``i`` embeds the i-th event.
It follows the contract every sequential model here has (``forward``, ``calculate_loss``,
``full_sort_predict``, ``last_hidden``); time inputs are accepted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys.config import ModelConfig


@dataclass(frozen=True)
class SASRecConfig:
    n_items: int
    max_seq_len: int = 200
    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    hidden_dropout_prob: float = 0.5
    attn_dropout_prob: float = 0.5
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    @classmethod
    def from_model_config(cls, model_config: ModelConfig, n_items: int, max_seq_len: int) -> SASRecConfig:
        """Hidden size and depth from the shared model config; the rest are RecBole's SASRec defaults.

        ``model.dropout`` is SS4Rec's (0.2) and is not used: RecBole's SASRec default is 0.5.
        """
        return cls(
            n_items=n_items,
            max_seq_len=max_seq_len,
            hidden_size=model_config.hidden_size,
            n_layers=model_config.n_layers,
            inner_size=4 * model_config.hidden_size,
        )


class SelfAttentionBlock(nn.Module):
    """One post-LN transformer block, as RecBole's ``TransformerLayer``."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.attention = nn.MultiheadAttention(
            hidden, config.n_heads, dropout=config.attn_dropout_prob, batch_first=True
        )
        self.attention_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden, config.inner_size),
            nn.GELU(),
            nn.Linear(config.inner_size, hidden),
            nn.Dropout(config.hidden_dropout_prob),
        )
        self.feed_forward_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, causal_mask: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(
            x, x, x, attn_mask=causal_mask, key_padding_mask=padding_mask, need_weights=False
        )
        x = self.attention_norm(x + self.attention_dropout(attended))
        return self.feed_forward_norm(x + self.feed_forward(x))


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.n_items = config.n_items
        self.item_embedding = nn.Embedding(config.n_items + 1, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_seq_len, config.hidden_size)
        self.embedding_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.blocks = nn.ModuleList(SelfAttentionBlock(config) for _ in range(config.n_layers))
        self.apply(self._init_weights)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.MultiheadAttention):
            nn.init.normal_(module.in_proj_weight, mean=0.0, std=std)
            nn.init.zeros_(module.in_proj_bias)

    def forward(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, L, H] hidden state after each position (causal: position i sees items 0..i)."""
        width = items.shape[1]
        if width > self.config.max_seq_len:
            raise ValueError(f"sequence width {width} exceeds max_seq_len {self.config.max_seq_len}")
        positions = torch.arange(width, device=items.device)
        x = self.item_embedding(items) + self.position_embedding(positions)[None]
        x = self.embedding_dropout(self.embedding_norm(x))
        causal_mask = torch.ones(width, width, dtype=torch.bool, device=items.device).triu(1)
        padding_mask = positions[None, :] >= lengths[:, None]
        for block in self.blocks:
            x = block(x, causal_mask, padding_mask)
        return x

    def last_hidden(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self(items, timestamps, lengths)
        return hidden[torch.arange(items.shape[0], device=items.device), lengths - 1]

    def calculate_loss(
        self, items: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy of predicting item i + 1 from positions 0..i, over every position."""
        hidden = self(items, timestamps, lengths)[:, :-1]
        targets = items[:, 1:]
        has_target = targets > 0
        logits = hidden[has_target] @ self.item_embedding.weight[1:].T
        return nn.functional.cross_entropy(logits.float(), targets[has_target] - 1)

    def full_sort_predict(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        query_time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, n_items + 1] scores of every item after the last position; column 0 is -inf."""
        scores = self.last_hidden(items, timestamps, lengths) @ self.item_embedding.weight[1:].T
        padding = torch.full_like(scores[:, :1], float("-inf"))
        return torch.cat([padding, scores], dim=1)

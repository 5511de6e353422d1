"""Mamba (Gu & Dao, 2023): the input-dependent ("selective") SSM block used by SS4Rec.

Two execution paths over one set of parameters, named and shaped exactly like
``mamba_ssm.Mamba`` (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), so a state dict
loads into either:

- CUDA tensors with mamba-ssm installed: its fused selective-scan kernel (and causal-conv1d's
  kernel when present). mamba_ssm is imported lazily, only inside ``_cuda_kernels`` and only
  after ``torch.cuda.is_available()``; CPU code never imports it.
- otherwise: pure PyTorch. A depthwise causal convolution as ``d_conv`` shifted multiply-adds,
  and a selective scan with a hand-written backward that keeps only one state per chunk of
  ``SCAN_CHUNK`` steps (recomputing the rest), so memory stays at
  O(batch * chunk * d_inner * d_state) instead of O(batch * length * d_inner * d_state).

Both compute, per channel d and state n (h_{-1} = 0):
    delta_t = softplus(dt_proj(x_proj(x_t)[:dt_rank]))
    h_t     = exp(delta_t[d] * A[d, n]) * h_{t-1} + delta_t[d] * x_t[d] * B_t[n]
    y_t[d]  = (sum_n C_t[n] * h_t[d, n] + D[d] * x_t[d]) * silu(z_t[d])
"""

# ruff: noqa: N803, N806  -- A, B, C, D, G, T follow the Mamba paper's notation

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

logger = logging.getLogger(__name__)

# Steps per chunk of the pure-PyTorch scan: the unit of recomputation in its backward pass.
SCAN_CHUNK = 16


@functools.cache
def _cuda_kernels() -> tuple[Callable[..., Tensor], Callable[..., Tensor] | None] | None:
    """(selective_scan_fn, causal_conv1d_fn or None) from mamba-ssm, or None when unusable here."""
    if not torch.cuda.is_available():
        return None
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except (ImportError, OSError) as error:
        logger.info("mamba-ssm kernels unavailable (%s); using the pure-PyTorch Mamba path", error)
        return None
    try:
        from causal_conv1d import causal_conv1d_fn
    except (ImportError, OSError):
        causal_conv1d_fn = None
    logger.info("Mamba: mamba-ssm CUDA kernels (causal-conv1d kernel: %s)", causal_conv1d_fn is not None)
    return selective_scan_fn, causal_conv1d_fn


def mamba_cuda_available() -> bool:
    """Whether CUDA is usable and mamba-ssm's kernels import."""
    return _cuda_kernels() is not None


def causal_depthwise_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """out[:, t, d] = bias[d] + sum_k weight[d, 0, k] * x[:, t - (K-1) + k, d], zeros before t = 0.

    x: [batch, length, channels]; weight: [channels, 1, K] (nn.Conv1d's depthwise layout).
    Equal to nn.Conv1d(groups=channels, padding=K-1) truncated to the first ``length`` outputs.
    """
    kernel = weight.shape[-1]
    length = x.shape[1]
    padded = F.pad(x, (0, 0, kernel - 1, 0))  # [batch, K-1 + length, channels]
    out = padded[:, kernel - 1 :] * weight[:, 0, kernel - 1]
    for k in range(kernel - 1):
        out = out + padded[:, k : k + length] * weight[:, 0, k]
    return out if bias is None else out + bias


def _chunk_states(
    h0: Tensor, x: Tensor, delta: Tensor, A: Tensor, B: Tensor, decay: Tensor, states: Tensor
) -> None:
    """Fill decay = exp(delta * A) and states (h at each step) of one chunk, time-major, in place.

    x, delta: [T, batch, D]; B: [T, batch, N]; h0: [batch, D, N]; decay, states: [T, batch, D, N] buffers
    (reused across chunks: fresh multi-MB allocations cost page faults on every chunk).
    """
    torch.mul(delta[..., None], A, out=decay).exp_()
    torch.mul((delta * x)[..., None], B[:, :, None, :], out=states)
    states[0].addcmul_(decay[0], h0)
    for t in range(1, states.shape[0]):
        states[t].addcmul_(decay[t], states[t - 1])


def _batched_matvec(matrices: Tensor, vectors: Tensor) -> Tensor:
    """[T, batch, D, N] @ [T, batch, N] -> [T, batch, D] as one bmm (no per-matrix copies)."""
    T, batch, d, n = matrices.shape
    return torch.bmm(matrices.view(T * batch, d, n), vectors.reshape(T * batch, n, 1)).view(T, batch, d)


def _batched_vecmat(vectors: Tensor, matrices: Tensor) -> Tensor:
    """[T, batch, D] @ [T, batch, D, N] -> [T, batch, N] as one bmm."""
    T, batch, d, n = matrices.shape
    return torch.bmm(vectors.reshape(T * batch, 1, d), matrices.view(T * batch, d, n)).view(T, batch, n)


def _chunks(length: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, length)) for s in range(0, length, chunk)]


def _scan_forward(
    x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(y [batch, length, D], the state before each chunk [chunks, batch, D, N], the last state
    [batch, D, N]) of the selective scan (no autograd)."""
    batch, length, d_inner = x.shape
    # time-major copies: each step's [batch, D, N] slice of a chunk buffer is contiguous
    x_t, delta_t, B_t, C_t = (v.transpose(0, 1).contiguous() for v in (x, delta, B, C))
    y = x.new_empty(length, batch, d_inner)
    decay = x.new_empty(min(chunk, length), batch, *A.shape)
    states = torch.empty_like(decay)
    chunk_starts = x.new_zeros(len(_chunks(length, chunk)), batch, *A.shape)  # h before each chunk
    last = chunk_starts[0]
    for index, (s, e) in enumerate(_chunks(length, chunk)):
        T = e - s
        _chunk_states(chunk_starts[index], x_t[s:e], delta_t[s:e], A, B_t[s:e], decay[:T], states[:T])
        y[s:e] = _batched_matvec(states[:T], C_t[s:e])
        last = states[T - 1]
        if index + 1 < len(chunk_starts):
            chunk_starts[index + 1] = last
    return y.transpose(0, 1), chunk_starts, last.clone()


class _SelectiveScan(torch.autograd.Function):
    """y_t[d] = sum_n C_t[n] h_t[d, n] with h_t = exp(delta_t A) h_{t-1} + delta_t x_t B_t (no D, no gate)."""

    @staticmethod
    def forward(ctx, x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int) -> Tensor:
        y, chunk_starts, _ = _scan_forward(x, delta, A, B, C, chunk)
        ctx.chunk = chunk
        ctx.save_for_backward(x, delta, A, B, C, chunk_starts)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, None]:
        x, delta, A, B, C, chunk_starts = ctx.saved_tensors
        length = x.shape[1]
        x_t, delta_t, B_t, C_t, gy_t = (v.transpose(0, 1).contiguous() for v in (x, delta, B, C, grad_y))
        grad_x, grad_delta = torch.empty_like(x_t), torch.empty_like(delta_t)
        grad_B, grad_C = torch.empty_like(B_t), torch.empty_like(C_t)
        grad_A = torch.zeros_like(A)
        decay = x.new_empty(min(ctx.chunk, length), x.shape[0], *A.shape)
        states, G, weighted = torch.empty_like(decay), torch.empty_like(decay), torch.empty_like(decay)
        carry = None  # decay_{e} * G_{e}: gradient reaching the chunk's last state from the next chunk
        for index, (s, e) in reversed(list(enumerate(_chunks(length, ctx.chunk)))):
            T = e - s
            h0 = chunk_starts[index]
            _chunk_states(h0, x_t[s:e], delta_t[s:e], A, B_t[s:e], decay[:T], states[:T])
            gy = gy_t[s:e]  # [T, batch, D]
            # G_t = dL/dh_t = gy_t C_t + decay_{t+1} G_{t+1}
            torch.mul(gy[..., None], C_t[s:e, :, None, :], out=G[:T])
            if carry is not None:
                G[T - 1].add_(carry)
            for t in range(T - 2, -1, -1):
                G[t].addcmul_(decay[t + 1], G[t + 1])
            carry = decay[0] * G[0]
            grad_C[s:e] = _batched_vecmat(gy, states[:T])
            # input term delta * x * B
            G_B = _batched_matvec(G[:T], B_t[s:e])  # sum_n G B: [T, batch, D]
            grad_B[s:e] = _batched_vecmat(delta_t[s:e] * x_t[s:e], G[:T])
            grad_x[s:e] = G_B * delta_t[s:e]
            grad_delta[s:e] = G_B * x_t[s:e]
            # decay term exp(delta * A), which multiplies h_{t-1}: weighted = dL/d(delta A)
            torch.mul(h0, decay[0], out=weighted[0])
            torch.mul(states[: T - 1], decay[1:T], out=weighted[1:T])
            weighted[:T].mul_(G[:T])
            # sum over (t, batch) of weighted * delta: one batched matmul per channel d, on views
            rows = weighted[:T].view(-1, *A.shape).transpose(0, 1)  # [D, T * batch, N]
            grad_A += (delta_t[s:e].reshape(-1, A.shape[0]).T[:, None, :] @ rows).squeeze(1)
            grad_delta[s:e] += weighted[:T].mul_(A).sum(-1)
        return (
            grad_x.transpose(0, 1),
            grad_delta.transpose(0, 1),
            grad_A,
            grad_B.transpose(0, 1),
            grad_C.transpose(0, 1),
            None,
        )


# Eager inside a compiled model: tracing would unroll the per-step loop into a huge graph.
@torch.compiler.disable
def selective_scan(
    x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int = SCAN_CHUNK
) -> Tensor:
    """Selective scan without the D skip and the gate.

    x, delta: [batch, length, D]; A: [D, N]; B, C: [batch, length, N] -> y: [batch, length, D].
    """
    return _SelectiveScan.apply(x, delta, A, B, C, chunk)


class Mamba(nn.Module):
    """One Mamba mixer; parameter names, shapes and initialisation follow ``mamba_ssm.Mamba``."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        use_kernels: bool = True,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.use_kernels = use_kernels  # False forces the pure-PyTorch path even on CUDA

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)  # [d_inner, d_state]
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        # Step sizes softplus(dt_proj.bias) start log-uniform in [dt_min, dt_max].
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        # mamba_ssm's convention: a model-wide init that zeroes Linear biases must skip this one.
        self.dt_proj.bias._no_reinit = True
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: [batch, length, d_model] -> [batch, length, d_model]."""
        if self.use_kernels and hidden.is_cuda and mamba_cuda_available():
            return self._forward_kernels(hidden)
        return self._forward_torch(hidden)

    @torch.no_grad()
    def forward_with_state(self, hidden: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(output, conv_state, ssm_state): the states after each row's element ``positions``
        [batch], as :meth:`step` would hold them after stepping elements 0..positions.

        The output equals :meth:`forward`'s up to each row's position (the layer is causal) and
        is meaningless after it: the scan's step is set to 0 there, which leaves the state as it
        was, so the scan's last state is the state at the position. Inference only (no autograd).
        """
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # [batch, length, d_inner]
        conv_state = self._conv_window(x, positions)
        x = F.silu(causal_depthwise_conv1d(x, self.conv1d.weight, self.conv1d.bias))
        dt, B, C = self._ssm_inputs(x)
        delta = F.softplus(dt + self.dt_proj.bias)
        after = torch.arange(x.shape[1], device=x.device)[None, :] > positions[:, None]
        delta = delta.masked_fill(after[..., None], 0.0)
        A = -torch.exp(self.A_log.float())
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            if self.use_kernels and hidden.is_cuda and mamba_cuda_available():
                selective_scan_fn, _ = _cuda_kernels()
                y, ssm_state = selective_scan_fn(
                    x.float().transpose(1, 2).contiguous(),
                    delta.float().transpose(1, 2).contiguous(),
                    A,
                    B.float().transpose(1, 2).contiguous(),
                    C.float().transpose(1, 2).contiguous(),
                    return_last_state=True,
                )
                y = y.transpose(1, 2)
            else:
                y, _, ssm_state = _scan_forward(x.float(), delta.float(), A, B.float(), C.float(), SCAN_CHUNK)
        y = (y + x * self.D) * F.silu(z)
        return self.out_proj(y.to(hidden.dtype)), conv_state, ssm_state

    def _conv_window(self, x: Tensor, positions: Tensor) -> Tensor:
        """[batch, d_inner, d_conv]: the conv inputs at positions - d_conv + 1 .. positions (oldest
        first, zeros before the sequence), the conv_state of :meth:`step`."""
        offsets = torch.arange(self.d_conv - 1, -1, -1, device=x.device)
        index = positions[:, None] - offsets[None, :]  # [batch, d_conv]
        window = x.gather(1, index.clamp(min=0)[..., None].expand(-1, -1, x.shape[-1]))
        window = window.masked_fill((index < 0)[..., None], 0.0)
        return window.transpose(1, 2).contiguous()

    def _ssm_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: [..., d_inner] -> delta before bias and softplus [..., d_inner], B, C [..., d_state]."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def _forward_torch(self, hidden: Tensor) -> Tensor:
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # [batch, length, d_inner] each
        x = F.silu(causal_depthwise_conv1d(x, self.conv1d.weight, self.conv1d.bias))
        dt, B, C = self._ssm_inputs(x)
        delta = F.softplus(dt + self.dt_proj.bias)
        A = -torch.exp(self.A_log.float())  # [d_inner, d_state]
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            y = selective_scan(x.float(), delta.float(), A, B.float(), C.float())
        y = (y + x * self.D) * F.silu(z)
        return self.out_proj(y.to(hidden.dtype))

    @torch.compiler.disable  # mamba-ssm's extension calls are opaque to the compiler
    def _forward_kernels(self, hidden: Tensor) -> Tensor:
        selective_scan_fn, causal_conv1d_fn = _cuda_kernels()
        length = hidden.shape[1]
        xz = self.in_proj(hidden).transpose(1, 2).contiguous()  # [batch, 2 * d_inner, length]
        x, z = xz.chunk(2, dim=1)
        if causal_conv1d_fn is not None:
            weight = self.conv1d.weight.squeeze(1)  # [d_inner, d_conv]
            x = causal_conv1d_fn(x=x, weight=weight, bias=self.conv1d.bias, activation="silu")
        else:
            x = F.silu(self.conv1d(x)[..., :length])
        dt, B, C = self._ssm_inputs(x.transpose(1, 2))  # [batch, length, .]
        y = selective_scan_fn(
            x,
            dt.transpose(1, 2).contiguous(),
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            D=self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )  # [batch, d_inner, length]
        return self.out_proj(y.transpose(1, 2))

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        """Zero (conv_state [batch, d_inner, d_conv], ssm_state [batch, d_inner, d_state]) for ``step``."""
        device = device or self.D.device
        return (
            torch.zeros(batch_size, self.d_inner, self.d_conv, device=device),
            torch.zeros(batch_size, self.d_inner, self.d_state, device=device),
        )

    def step(self, hidden: Tensor, conv_state: Tensor, ssm_state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One time step. hidden: [batch, d_model] -> (out [batch, d_model], new conv_state, new ssm_state).

        conv_state holds the last d_conv conv inputs (oldest first), as in mamba_ssm; inputs are not modified.
        """
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # [batch, d_inner]
        conv_state = torch.cat([conv_state[:, :, 1:], x[:, :, None]], dim=-1)
        x = F.silu((conv_state * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        dt, B, C = self._ssm_inputs(x)
        delta = F.softplus(dt + self.dt_proj.bias)  # [batch, d_inner]
        A = -torch.exp(self.A_log.float())
        ssm_state = torch.exp(delta[..., None] * A) * ssm_state + (delta * x)[..., None] * B[:, None, :]
        y = (ssm_state @ C[..., None]).squeeze(-1) + self.D * x
        return self.out_proj(y * F.silu(z)), conv_state, ssm_state

"""Time-aware S5 (Smith et al., 2023): a diagonal, complex, zero-order-hold SSM with a step per element.

Parameters are those of s5-pytorch's ``S5SSM`` with its default dense B/C (what the released SS4Rec
code builds), with the same names, so its state dict loads here unchanged:

    Lambda    complex [P]      continuous-time eigenvalues, HiPPO-LegS (normal part) at init
    B         real [P, H, 2]   input matrix V^-1 B as (real, imag) pairs
    C         complex [H, P]   output matrix C V
    D         real [H]         feed-through
    log_step  real [P]         log of the per-state step multiplier, U[log dt_min, log dt_max] at init

P + 2PH + PH + H + P elements (a complex element counts once): 6,272 for H = 64, P = 32.

For input u_t [H] and a time gap g_t >= 0 (already in model units), per state p:
    step_t[p]  = g_t * exp(log_step[p])
    lambda     = min(Re Lambda, -LAMBDA_MAX_REAL) + i Im Lambda    (Re < 0 whatever Lambda holds)
    x_t        = exp(lambda step_t) x_{t-1} + (expm1(lambda step_t) / lambda) (B u_t)    (x_{-1} = 0)
    y_t        = Re(C x_t) + D u_t
A zero gap leaves the state unchanged; a huge gap forgets it (|exp(lambda step)| <= 1 always).
The clamp (S5's ``clip_eigs``) rather than a -exp(.) reparameterisation keeps Lambda itself the
eigenvalue, so s5-pytorch / released SS4Rec weights load as they are; a real part trained past the
bound stops getting gradient, but never makes a decay grow.
The scan works on [batch, length, P] tensors only: the step-dependent ZOH factor is a scalar per
(t, p), so B_bar u_t = factor_t * (B u_t) and no [batch, length, P, H] tensor is ever built.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

# Eigenvalues' real parts are clamped to <= -LAMBDA_MAX_REAL, so every discrete decay has modulus <= 1.
LAMBDA_MAX_REAL = 1e-4
# s5-pytorch's truncated-normal scale factor (it multiplies where JAX divides): kept for faithfulness.
_S5_TRUNC_NORMAL_SCALE = 0.87962566103423978


def hippo_legs_diagonal(n: int) -> tuple[Tensor, Tensor]:
    """Eigenvalues [n] and unitary eigenvectors [n, n] (complex128) of HiPPO-LegS' normal part.

    HiPPO-LegS A plus the rank-1 term p p^T (p_k = sqrt(k + 1/2)) is S = -I/2 + K with K skew-symmetric,
    so S = V diag(-1/2 + i w) V^* where (w, V) diagonalise the Hermitian matrix -i K.
    """
    scale = torch.sqrt(1 + 2 * torch.arange(n, dtype=torch.float64))
    outer = scale[:, None] * scale[None, :] / 2
    skew = torch.triu(outer, 1) - torch.tril(outer, -1)  # K_nk = -sqrt((2n+1)(2k+1))/2 for n > k
    omega, eigenvectors = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    return torch.complex(torch.full_like(omega, -0.5), omega), eigenvectors


def _trunc_normal(*shape: int, fan_in: int) -> Tensor:
    std = math.sqrt(1.0 / fan_in) * _S5_TRUNC_NORMAL_SCALE
    return nn.init.trunc_normal_(torch.empty(shape, dtype=torch.float64), std=std, a=-2 * std, b=2 * std)


def _hillis_steele_scan(decay: Tensor, inputs: Tensor) -> Tensor:
    """x_t = decay_t * x_{t-1} + inputs_t along dim 1 (x_{-1} = 0) in ceil(log2 length) rounds.

    It multiplies decays together (moduli <= 1) and never divides by them: stable for any gap.
    """
    length = inputs.shape[1]
    offset = 1
    while offset < length:
        inputs = inputs + decay * F.pad(inputs[:, :-offset], (0, 0, offset, 0))
        if 2 * offset < length:
            decay = decay * torch.cat([torch.ones_like(decay[:, :offset]), decay[:, :-offset]], dim=1)
        offset *= 2
    return inputs


class _DiagonalLinearScan(torch.autograd.Function):
    """The scan with an O(batch * length * P) backward (autograd through the rounds keeps every round)."""

    @staticmethod
    def forward(ctx, decay: Tensor, inputs: Tensor) -> Tensor:
        states = _hillis_steele_scan(decay, inputs)
        ctx.save_for_backward(decay, states)
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_states: Tensor) -> tuple[Tensor, Tensor]:
        decay, states = ctx.saved_tensors
        # G_t = dL/dx_t = g_t + conj(decay_{t+1}) G_{t+1}: the same recurrence, backwards in time
        next_decay = F.pad(decay[:, 1:], (0, 0, 0, 1)).conj()
        grad_inputs = _hillis_steele_scan(next_decay.flip(1), grad_states.flip(1)).flip(1)
        previous_states = F.pad(states[:, :-1], (0, 0, 1, 0))
        return grad_inputs * previous_states.conj(), grad_inputs


def diagonal_linear_scan(decay: Tensor, inputs: Tensor) -> Tensor:
    """x_t = decay_t * x_{t-1} + inputs_t along dim 1 (x_{-1} = 0); [batch, length, P] -> same."""
    return _DiagonalLinearScan.apply(decay, inputs)


class S5(nn.Module):
    """u [batch, length, H] and per-element steps [batch, length] -> y [batch, length, H]."""

    def __init__(self, d_model: int, d_state: int, dt_min: float = 0.001, dt_max: float = 0.1) -> None:
        super().__init__()
        eigenvalues, eigenvectors = hippo_legs_diagonal(d_state)
        input_raw = _trunc_normal(d_state, d_model, fan_in=d_state).to(torch.complex128)
        input_matrix = eigenvectors.conj().T @ input_raw
        output_raw = _trunc_normal(d_model, d_state, 2, fan_in=d_model * d_state)
        output_matrix = torch.complex(output_raw[..., 0], output_raw[..., 1]) @ eigenvectors
        log_steps = torch.empty(d_state).uniform_(math.log(dt_min), math.log(dt_max))

        self.Lambda = nn.Parameter(eigenvalues.to(torch.complex64))  # [P]
        self.B = nn.Parameter(torch.view_as_real(input_matrix).to(torch.float32))  # [P, H, 2]
        self.C = nn.Parameter(output_matrix.to(torch.complex64))  # [H, P]
        self.D = nn.Parameter(torch.rand(d_model))  # [H]
        self.log_step = nn.Parameter(log_steps)  # [P]

    def eigenvalues(self) -> Tensor:
        """The continuous-time eigenvalues in use, real parts <= -LAMBDA_MAX_REAL: complex [P]."""
        if not self.C.is_complex():
            raise TypeError(
                "S5 parameters Lambda and C must stay complex: cast the model with .float()/.double() "
                "or use torch.autocast, not Module.to(<real dtype>), which drops imaginary parts"
            )
        return torch.complex(self.Lambda.real.clamp(max=-LAMBDA_MAX_REAL), self.Lambda.imag)

    def _discretise(self, steps: Tensor) -> tuple[Tensor, Tensor]:
        """steps [...] (gaps in model units) -> decay, ZOH input factor, both complex [..., P]."""
        eigenvalues = self.eigenvalues()
        scaled = eigenvalues * (steps[..., None] * torch.exp(self.log_step))
        return torch.exp(scaled), torch.expm1(scaled) / eigenvalues

    def _project_in(self, u: Tensor) -> Tensor:
        """B u: [..., H] -> complex [..., P]."""
        return torch.complex(u @ self.B[..., 0].T, u @ self.B[..., 1].T)

    def _project_out(self, states: Tensor, u: Tensor) -> Tensor:
        """Re(C x) + D u: [..., P], [..., H] -> [..., H]."""
        return states.real @ self.C.real.T - states.imag @ self.C.imag.T + self.D * u

    # Inductor generates no code for complex ops; this layer stays eager inside a compiled model.
    @torch.compiler.disable
    def forward(self, u: Tensor, steps: Tensor) -> Tensor:
        """u: [batch, length, H]; steps: [batch, length] time gaps in model units (>= 0)."""
        return self.forward_with_state(u, steps)[0]

    @torch.compiler.disable
    def forward_with_state(
        self, u: Tensor, steps: Tensor, positions: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(:meth:`forward`'s output, the state after each row's element ``positions`` [batch],
        complex [batch, P], as :meth:`step` would hold it; None without ``positions``)."""
        dtype = u.dtype
        with torch.autocast(device_type=u.device.type, enabled=False):
            u, steps = u.to(self.D.dtype), steps.to(self.D.dtype)
            decay, factor = self._discretise(steps)  # [batch, length, P]
            states = diagonal_linear_scan(decay, factor * self._project_in(u))
            state = None
            if positions is not None:
                index = positions[:, None, None].expand(-1, 1, states.shape[-1])
                state = states.gather(1, index).squeeze(1)
            return self._project_out(states, u).to(dtype), state

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> Tensor:
        """Zero state, complex [batch, P]."""
        return torch.zeros(batch_size, self.Lambda.shape[0], dtype=self.Lambda.dtype, device=device)

    def step(self, u: Tensor, steps: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One element. u: [batch, H]; steps: [batch]; state: complex [batch, P] -> (y [batch, H], state)."""
        decay, factor = self._discretise(steps.to(self.D.dtype))
        state = decay * state + factor * self._project_in(u)
        return self._project_out(state, u), state

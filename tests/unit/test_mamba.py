"""Pure-PyTorch Mamba: mamba_ssm's parameters, exact scan and conv, causal, recurrent step, bounded memory."""

# ruff: noqa: N803, N806  -- A, B, C follow the Mamba paper's notation

from __future__ import annotations

import importlib.abc
import sys

import pytest
import torch
import torch.nn.functional as F

from model.ssm import Mamba, mamba_cuda_available
from model.ssm import mamba as mamba_module
from model.ssm.mamba import causal_depthwise_conv1d, selective_scan
from tests.unit.test_s5 import LargestTensor

# mamba_ssm.Mamba(d_model=64, d_state=32, d_conv=4, expand=2): dt_rank = ceil(64 / 16) = 4
MAMBA_SSM_SHAPES = {
    "A_log": (128, 32),
    "D": (128,),
    "in_proj.weight": (256, 64),
    "conv1d.weight": (128, 1, 4),
    "conv1d.bias": (128,),
    "x_proj.weight": (68, 128),
    "dt_proj.weight": (128, 4),
    "dt_proj.bias": (128,),
    "out_proj.weight": (64, 128),
}


def naive_selective_scan(x, delta, A, B, C):
    """Step-by-step reference: h_t = exp(delta_t A) h_{t-1} + delta_t x_t B_t, y_t = h_t C_t."""
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * x[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1)


def naive_mamba(layer: Mamba, hidden):
    """mamba_ssm's semantics written out: nn.Conv1d conv, step-by-step scan."""
    x, z = layer.in_proj(hidden).chunk(2, dim=-1)
    x = F.silu(layer.conv1d(x.transpose(1, 2))[..., : hidden.shape[1]].transpose(1, 2))
    dt, B, C = layer.x_proj(x).split([layer.dt_rank, layer.d_state, layer.d_state], dim=-1)
    delta = F.softplus(layer.dt_proj(dt))
    y = naive_selective_scan(x, delta, -torch.exp(layer.A_log), B, C) + x * layer.D
    return layer.out_proj(y * F.silu(z))


def scan_inputs(batch, length, d, n, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, length, d, dtype=dtype, generator=generator),
        torch.rand(batch, length, d, dtype=dtype, generator=generator) * 0.5,
        -torch.rand(d, n, dtype=dtype, generator=generator) * 3,
        torch.randn(batch, length, n, dtype=dtype, generator=generator),
        torch.randn(batch, length, n, dtype=dtype, generator=generator),
    )


def test_parameters_named_and_shaped_like_mamba_ssm():
    layer = Mamba(64, d_state=32, d_conv=4, expand=2)
    assert {name: tuple(p.shape) for name, p in layer.named_parameters()} == MAMBA_SSM_SHAPES
    assert sum(p.numel() for p in layer.parameters()) == 38784


def test_init_follows_mamba_ssm():
    layer = Mamba(64, d_state=32, dt_min=0.001, dt_max=0.1)
    torch.testing.assert_close(layer.A_log, torch.log(torch.arange(1.0, 33.0)).repeat(128, 1))
    assert torch.equal(layer.D, torch.ones(128))
    dt = F.softplus(layer.dt_proj.bias)
    assert dt.min() >= 0.001 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert layer.dt_proj.bias._no_reinit
    assert layer.dt_proj.weight.abs().max() <= 4**-0.5


@pytest.mark.parametrize(("length", "chunk"), [(1, 4), (7, 3), (37, 8), (16, 16)])
def test_selective_scan_equals_step_by_step_loop_with_gradients(length, chunk):
    inputs = [t.requires_grad_() for t in scan_inputs(3, length, 5, 4)]
    expected = naive_selective_scan(*inputs)
    actual = selective_scan(*inputs, chunk=chunk)
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=1e-12)
    grad = torch.randn_like(expected)
    for e, a in zip(
        torch.autograd.grad(expected, inputs, grad), torch.autograd.grad(actual, inputs, grad), strict=True
    ):
        torch.testing.assert_close(a, e, atol=1e-11, rtol=1e-11)


def test_selective_scan_gradcheck():
    inputs = tuple(t.requires_grad_() for t in scan_inputs(2, 6, 3, 2))
    assert torch.autograd.gradcheck(lambda *i: selective_scan(*i, chunk=4), inputs)


def test_causal_conv_equals_conv1d():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, kernel_size=4, groups=6, padding=3).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    expected = conv(x.transpose(1, 2))[..., :9].transpose(1, 2)
    torch.testing.assert_close(causal_depthwise_conv1d(x, conv.weight, conv.bias), expected)
    short = x[:, :2]  # shorter than the kernel
    torch.testing.assert_close(
        causal_depthwise_conv1d(short, conv.weight, conv.bias),
        conv(short.transpose(1, 2))[..., :2].transpose(1, 2),
    )


def test_layer_equals_mamba_ssm_semantics_written_out():
    torch.manual_seed(0)
    layer = Mamba(16, d_state=8, d_conv=4, expand=2).double()
    hidden = torch.randn(3, 21, 16, dtype=torch.float64, requires_grad=True)
    expected = naive_mamba(layer, hidden)
    actual = layer(hidden)
    torch.testing.assert_close(actual, expected)
    grads = torch.autograd.grad(actual.square().sum(), [hidden, *layer.parameters()])
    expected_grads = torch.autograd.grad(expected.square().sum(), [hidden, *layer.parameters()])
    for a, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e)


def test_causal_and_recurrent_step_equals_full_pass():
    torch.manual_seed(0)
    layer = Mamba(16, d_state=8).eval()
    hidden = torch.randn(2, 11, 16)
    full = layer(hidden)
    changed = hidden.clone()
    changed[:, 6:] = torch.randn(2, 5, 16)
    torch.testing.assert_close(layer(changed)[:, :6], full[:, :6])
    conv_state, ssm_state = layer.initial_state(2)
    for t in range(11):
        out, conv_state, ssm_state = layer.step(hidden[:, t], conv_state, ssm_state)
        torch.testing.assert_close(out, full[:, t], atol=1e-5, rtol=1e-5)


def test_scan_memory_is_bounded_by_the_chunk():
    layer = Mamba(32, d_state=16)
    batch, length = 2, 96
    hidden = torch.randn(batch, length, 32, requires_grad=True)
    with LargestTensor() as probe:
        layer(hidden).sum().backward()
    full_states = batch * length * layer.d_inner * layer.d_state
    assert probe.largest <= full_states * mamba_module.SCAN_CHUNK // length


class _ForbidImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mamba_ssm", "causal_conv1d"):
            raise AssertionError(f"CPU code imported {name}")
        return None


def test_cpu_path_never_imports_mamba_ssm(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mamba_module._cuda_kernels.cache_clear()
    finder = _ForbidImport()
    sys.meta_path.insert(0, finder)
    try:
        assert not mamba_cuda_available()
        Mamba(16, d_state=8)(torch.randn(1, 5, 16)).sum().backward()
    finally:
        sys.meta_path.remove(finder)
        mamba_module._cuda_kernels.cache_clear()

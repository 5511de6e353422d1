"""Time-aware S5: equal to s5-pytorch's S5 on the same parameters, stable for any gap, never [B, L, P, H]."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from model.ssm import S5
from model.ssm.s5 import LAMBDA_MAX_REAL, diagonal_linear_scan, hippo_legs_diagonal

H, P = 16, 8


class LargestTensor(TorchDispatchMode):
    """Within the context, ``largest`` is the most elements of any tensor an ATen op returned."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.numel())
        return out


def reference_s5(width: int, state: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # s5-pytorch uses the deprecated torch.jit.script
        import s5

    return s5.S5(width, state_width=state)


def test_parameters_are_s5_pytorch_layout_and_6272_for_ss4rec_sizes():
    layer = S5(64, 32)
    shapes = {name: (tuple(p.shape), p.dtype) for name, p in layer.named_parameters()}
    assert shapes == {
        "Lambda": ((32,), torch.complex64),
        "B": ((32, 64, 2), torch.float32),
        "C": ((64, 32), torch.complex64),
        "D": ((64,), torch.float32),
        "log_step": ((32,), torch.float32),
    }
    assert sum(p.numel() for p in layer.parameters()) == 6272
    reference = reference_s5(64, 32).seq
    assert {n: (tuple(p.shape), p.dtype) for n, p in reference.named_parameters()} == shapes


def test_init_hippo_legs_eigenvalues_and_log_step_range():
    eigenvalues, eigenvectors = hippo_legs_diagonal(P)
    from s5.init import make_DPLR_HiPPO

    expected = torch.from_numpy(make_DPLR_HiPPO(P)[0])
    torch.testing.assert_close(eigenvalues, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(eigenvectors @ eigenvectors.conj().T, torch.eye(P, dtype=torch.complex128))
    layer = S5(H, P, dt_min=0.001, dt_max=0.1)
    assert torch.all(layer.log_step >= torch.log(torch.tensor(0.001)) - 1e-6)
    assert torch.all(layer.log_step <= torch.log(torch.tensor(0.1)) + 1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_s5_pytorch_with_per_element_steps(seed):
    torch.manual_seed(seed)
    reference = reference_s5(H, P)
    layer = S5(H, P)
    layer.load_state_dict(reference.seq.state_dict())
    u = torch.randn(3, 17, H, requires_grad=True)
    steps = torch.rand(3, 17) * 3
    steps[0, 4:7] = 0.0
    steps[1, -1] = 40.0
    expected = reference(u, steps)
    actual = layer(u, steps)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)

    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [u, *reference.seq.parameters()], grad)
    actual_grads = torch.autograd.grad(actual, [u, *layer.parameters()], grad)
    for e, a in zip(expected_grads, actual_grads, strict=True):
        torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4)


def test_equals_s5_pytorch_with_a_constant_step():
    torch.manual_seed(2)
    reference = reference_s5(H, P)
    layer = S5(H, P)
    layer.load_state_dict(reference.seq.state_dict())
    u = torch.randn(2, 9, H)
    torch.testing.assert_close(layer(u, torch.full((2, 9), 0.5)), reference(u, 0.5), atol=1e-5, rtol=1e-5)


def test_zero_step_leaves_the_state_unchanged():
    torch.manual_seed(0)
    layer = S5(H, P)
    u = torch.randn(2, 6, H)
    steps = torch.tensor([[0.3, 0.7, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 2.0, 0.0, 0.0]])
    state_part = layer(u, steps) - layer.D * u  # Re(C x_t)
    torch.testing.assert_close(state_part[0, 2:], state_part[0, 1].expand(4, H), atol=1e-6, rtol=0)
    torch.testing.assert_close(state_part[1, 1:3], state_part[1, 0].expand(2, H), atol=1e-6, rtol=0)

    state = layer.initial_state(2)
    _, state = layer.step(u[:, 0], torch.ones(2), state)
    _, after_zero = layer.step(u[:, 1], torch.zeros(2), state)
    assert torch.equal(after_zero, state)


def test_huge_steps_are_finite_and_forget_the_past():
    torch.manual_seed(0)
    layer = S5(H, P)
    u = torch.randn(2, 5, H, requires_grad=True)
    steps = torch.tensor([[1.0, 1e9, 1.0, 1e12, 1.0], [1e15, 1e15, 1e15, 1e15, 1e15]])
    y = layer(u, steps)
    y.square().sum().backward()
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert torch.isfinite(u.grad).all()
    changed = u.detach().clone()
    changed[:, 0] += 5.0
    torch.testing.assert_close(layer(changed, steps)[:, 1:], y[:, 1:].detach(), atol=1e-6, rtol=0)


def test_eigenvalue_real_parts_stay_negative_even_if_trained_positive():
    layer = S5(H, P)
    with torch.no_grad():
        layer.Lambda.copy_(torch.complex(torch.full((P,), 3.0), layer.Lambda.imag))
    assert torch.all(layer.eigenvalues().real <= -LAMBDA_MAX_REAL)
    y = layer(torch.randn(1, 4, H), torch.full((1, 4), 1e8))
    assert torch.isfinite(y).all()


def test_length_one_sequences_and_recurrent_step_equal_the_full_pass():
    torch.manual_seed(0)
    layer = S5(H, P)
    u = torch.randn(3, 7, H)
    steps = torch.rand(3, 7) * 2
    full = layer(u, steps)
    torch.testing.assert_close(layer(u[:, :1], steps[:, :1]), full[:, :1])
    state = layer.initial_state(3)
    for t in range(7):
        y, state = layer.step(u[:, t], steps[:, t], state)
        torch.testing.assert_close(y, full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length", [1, 2, 5, 8, 13])
def test_parallel_scan_equals_a_loop(length):
    torch.manual_seed(length)
    decay = torch.rand(2, length, 3, dtype=torch.complex128)
    inputs = torch.randn(2, length, 3, dtype=torch.complex128)
    state = torch.zeros(2, 3, dtype=torch.complex128)
    expected = []
    for t in range(length):
        state = decay[:, t] * state + inputs[:, t]
        expected.append(state)
    torch.testing.assert_close(diagonal_linear_scan(decay, inputs), torch.stack(expected, 1))


def test_parallel_scan_gradients():
    decay = (torch.rand(2, 7, 3, dtype=torch.complex128) * 0.9).requires_grad_()
    inputs = torch.randn(2, 7, 3, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(diagonal_linear_scan, (decay, inputs))


def test_never_materialises_batch_length_state_hidden():
    layer = S5(64, 32)
    batch, length = 4, 50
    u = torch.randn(batch, length, 64, requires_grad=True)
    with LargestTensor() as probe:
        layer(u, torch.rand(batch, length)).sum().backward()
    assert probe.largest < batch * length * 32 * 64 // 4

"""On a CUDA GPU: our Mamba (mamba-ssm kernel path and pure-PyTorch path) equals mamba_ssm.Mamba.

Same state dict in both directions; outputs and gradients (input and every parameter) agree to
1e-4 relative to each tensor's scale. Run on the device machine with ``pytest -m gpu``.
"""

from __future__ import annotations

import pytest
import torch

from model.ss4rec import SS4Rec, SS4RecConfig
from model.ssm import Mamba, mamba_cuda_available

pytestmark = pytest.mark.gpu

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def mamba_ssm():
    """mamba_ssm, imported only once CUDA is known to be usable."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    module = pytest.importorskip("mamba_ssm")
    # exact fp32 everywhere: cuDNN convolutions and matmuls may otherwise use TF32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return module


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    scale = max(1.0, expected.abs().max().item())
    error = (actual - expected).abs().max().item()
    assert error <= TOLERANCE * scale, f"{what}: max |diff| {error:.3g} > {TOLERANCE} x {scale:.3g}"


def outputs_and_grads(module: torch.nn.Module, hidden: torch.Tensor, weight: torch.Tensor):
    hidden = hidden.detach().clone().requires_grad_()
    out = module(hidden)
    (out * weight).sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in module.named_parameters()}
    module.zero_grad(set_to_none=True)
    return out.detach(), hidden.grad.detach(), grads


@pytest.mark.parametrize("length", [1, 7, 200])
def test_mamba_paths_equal_mamba_ssm(mamba_ssm, length):
    assert mamba_cuda_available()
    torch.manual_seed(0)
    reference = mamba_ssm.Mamba(d_model=64, d_state=32, d_conv=4, expand=2).cuda()
    ours = Mamba(64, d_state=32, d_conv=4, expand=2).cuda()
    ours.load_state_dict(reference.state_dict())
    reference.load_state_dict(ours.state_dict())
    hidden = torch.randn(16, length, 64, device="cuda")
    weight = torch.randn(16, length, 64, device="cuda")
    expected_out, expected_input_grad, expected_grads = outputs_and_grads(reference, hidden, weight)
    for use_kernels in (True, False):
        ours.use_kernels = use_kernels
        out, input_grad, grads = outputs_and_grads(ours, hidden, weight)
        path = "kernels" if use_kernels else "pure PyTorch"
        assert_close(out, expected_out, f"{path} output")
        assert_close(input_grad, expected_input_grad, f"{path} input gradient")
        assert grads.keys() == expected_grads.keys()
        for name, grad in grads.items():
            assert_close(grad, expected_grads[name], f"{path} gradient of {name}")


def test_mamba_recurrent_step_equals_kernel_forward(mamba_ssm):
    torch.manual_seed(1)
    ours = Mamba(64, d_state=32).cuda().eval()
    hidden = torch.randn(4, 30, 64, device="cuda")
    with torch.no_grad():
        full = ours(hidden)
        conv_state, ssm_state = ours.initial_state(4)
        for t in range(30):
            out, conv_state, ssm_state = ours.step(hidden[:, t], conv_state, ssm_state)
            assert_close(out, full[:, t], f"step {t}")


def test_ss4rec_on_cuda_equals_pure_pytorch_and_cpu(mamba_ssm):
    torch.manual_seed(0)
    config = SS4RecConfig(n_items=500, dropout=0.0)
    model = SS4Rec(config).cuda()
    batch, length = 32, 120
    lengths = torch.randint(1, length + 1, (batch,))
    valid = torch.arange(length) < lengths[:, None]
    items = torch.randint(1, 501, (batch, length)) * valid
    timestamps = (1_700_000_000 + torch.cumsum(torch.randint(0, 50_000, (batch, length)), 1)) * valid
    inputs = [t.cuda() for t in (items, timestamps, lengths)]

    def loss_and_grads(module, device_inputs):
        loss = module.calculate_loss(*device_inputs)
        loss.backward()
        grads = {name: p.grad.detach().cpu().clone() for name, p in module.named_parameters()}
        module.zero_grad(set_to_none=True)
        return loss.detach().cpu(), grads

    kernel_loss, kernel_grads = loss_and_grads(model, inputs)
    for block in model.blocks:
        block.mamba.use_kernels = False
    torch_loss, torch_grads = loss_and_grads(model, inputs)
    cpu_model = SS4Rec(config)
    cpu_model.load_state_dict(model.state_dict())
    cpu_loss, cpu_grads = loss_and_grads(cpu_model, [items, timestamps, lengths])
    for name, (loss, grads) in {
        "pure PyTorch on CUDA": (torch_loss, torch_grads),
        "CPU": (cpu_loss, cpu_grads),
    }.items():
        assert_close(loss, kernel_loss, f"{name} loss")
        for parameter, grad in grads.items():
            assert_close(grad, kernel_grads[parameter], f"{name} gradient of {parameter}")


def test_ss4rec_bf16_autocast_with_kernels_is_finite(mamba_ssm):
    torch.manual_seed(0)
    model = SS4Rec(SS4RecConfig(n_items=300)).cuda()
    lengths = torch.full((8,), 50, device="cuda")
    items = torch.randint(1, 301, (8, 50), device="cuda")
    timestamps = 1_700_000_000 + torch.cumsum(torch.randint(0, 10_000, (8, 50), device="cuda"), 1)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        loss = model.calculate_loss(items, timestamps, lengths)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("length", [1, 9, 200])
def test_forward_with_state_kernel_path_equals_the_torch_path(mamba_ssm, length):
    """The mamba-ssm kernel's last state at each row's position (the step zeroed after it) equals
    the pure-PyTorch scan's: what SS4Rec.prefix_state stores for incremental scoring."""
    torch.manual_seed(1)
    layer = Mamba(64, d_state=32, d_conv=4, expand=2).cuda().eval()
    hidden = torch.randn(8, length, 64, device="cuda")
    positions = torch.randint(0, length, (8,), device="cuda")
    results = {}
    for use_kernels in (True, False):
        layer.use_kernels = use_kernels
        results[use_kernels] = layer.forward_with_state(hidden, positions)
    before = torch.arange(length, device="cuda")[None, :] <= positions[:, None]
    kernel, torch_path = results[True], results[False]
    assert_close(kernel[0][before], torch_path[0][before], "output up to the position")
    assert_close(kernel[1], torch_path[1], "conv window")
    assert_close(kernel[2], torch_path[2], "SSM state")

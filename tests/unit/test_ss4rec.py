"""SS4Rec: parameter checksums, time gaps, causality, padding, all-positions loss, ablations, stepping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import ss4rec as ss4rec_module
from model.ss4rec import SS4Rec, SS4RecConfig
from recsys.config import ModelConfig

EPOCH = 1_700_000_000  # float32 cannot tell EPOCH from EPOCH + 1


def small_config(**overrides) -> SS4RecConfig:
    settings = dict(n_items=50, hidden_size=16, n_layers=2, s5_state=8, mamba_d_state=8, dropout=0.2)
    return SS4RecConfig(**(settings | overrides))


def make_batch(lengths, max_len=None, n_items=50, seed=0):
    """Right-padded items/timestamps with irregular gaps (some zero) around EPOCH."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    max_len = max_len or int(lengths.max())
    items = torch.randint(1, n_items + 1, (len(lengths), max_len), generator=generator)
    gaps = torch.randint(0, 5_000, (len(lengths), max_len), generator=generator)
    gaps[:, ::3] = 0
    timestamps = EPOCH + torch.cumsum(gaps, 1)
    valid = torch.arange(max_len) < lengths[:, None]
    items, timestamps = items * valid, timestamps * valid
    last_time = timestamps.gather(1, (lengths - 1)[:, None]).squeeze(1)
    query_time = last_time + torch.randint(1, 100_000, (len(lengths),), generator=generator)
    return items, timestamps, lengths, query_time


def model_of(variant="ss4rec", seed=0, **overrides) -> SS4Rec:
    torch.manual_seed(seed)
    return SS4Rec(small_config(variant=variant, **overrides)).eval()


@pytest.mark.parametrize(
    ("variant", "total", "block"),
    [
        ("ss4rec", 309_056, {"s5": 6_272, "mamba": 38_784, "layer_norm": 128}),
        ("s5_only", 231_488, {"s5": 6_272, "layer_norm": 128}),
        ("mamba_only", 296_512, {"mamba": 38_784, "layer_norm": 128}),
    ],
)
def test_parameter_count_checksums_for_ml1m(variant, total, block):
    model = SS4Rec(SS4RecConfig(n_items=3416, variant=variant))  # 3,417 ids with padding
    assert sum(p.numel() for p in model.parameters()) == total
    assert model.item_embedding.weight.shape == (3417, 64)
    for layer in model.blocks:
        counts = {name: sum(p.numel() for p in child.parameters()) for name, child in layer.named_children()}
        assert {name: n for name, n in counts.items() if n} == block


def test_from_model_config_maps_names_to_variants():
    fields = dict(
        hidden_size=32, n_layers=3, s5_state=16, dt_min=0.002, dt_max=0.2, mamba_d_state=8,
        mamba_d_conv=3, mamba_expand=4, dropout=0.1, time_unit_seconds=60.0, gap_transform="log1p",
    )  # fmt: skip
    for name, variant in [
        ("ss4rec", "ss4rec"),
        ("ss4rec_s5_only", "s5_only"),
        ("ss4rec_mamba_only", "mamba_only"),
    ]:
        config = SS4RecConfig.from_model_config(ModelConfig(name=name, **fields), n_items=7)
        assert config == SS4RecConfig(n_items=7, variant=variant, **fields)
    with pytest.raises(ValueError, match="sasrec"):
        SS4RecConfig.from_model_config(ModelConfig(name="sasrec", **fields), n_items=7)
    with pytest.raises(ValueError, match="variant"):
        SS4RecConfig(n_items=7, variant="s6")
    with pytest.raises(ValueError, match="gap_transform"):
        SS4RecConfig(n_items=7, gap_transform="sqrt")


def test_init_as_released_keeping_mamba_step_init():
    model = SS4Rec(SS4RecConfig(n_items=3416))
    embedding = model.item_embedding.weight
    assert torch.equal(embedding[0], torch.zeros(64))
    assert abs(embedding[1:].std().item() - 0.02) < 0.001
    mamba = model.blocks[0].mamba
    assert abs(mamba.in_proj.weight.std().item() - 0.02) < 0.002
    dt = F.softplus(mamba.dt_proj.bias)
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
    assert torch.equal(model.blocks[0].layer_norm.weight, torch.ones(64))


def test_time_gaps_exact_int64_with_query_time_and_zero_padding():
    model = model_of()
    timestamps = torch.tensor(
        [[EPOCH, EPOCH + 1, EPOCH + 1, EPOCH + 7], [EPOCH, EPOCH + 3, 0, 0], [EPOCH, 0, 0, 0]]
    )
    lengths = torch.tensor([4, 2, 1])
    query_time = torch.tensor([EPOCH + 10, EPOCH + 4, EPOCH + 86_400 * 365 * 30])
    gaps = model.time_gaps(timestamps, lengths, query_time)
    assert gaps.dtype == torch.float64
    expected = [[1, 0, 6, 3], [3, 1, 0, 0], [86_400 * 365 * 30, 0, 0, 0]]
    assert torch.equal(gaps, torch.tensor(expected, dtype=torch.float64))
    early = model.time_gaps(timestamps[:1], lengths[:1], torch.tensor([EPOCH]))  # query before last event
    assert early[0, -1] == 0


def test_causal_in_items_and_timestamps():
    model = model_of()
    items, timestamps, lengths, query_time = make_batch([12, 12])
    full = model(items, timestamps, lengths, query_time)
    changed_items = items.clone()
    changed_items[:, 7:] = (changed_items[:, 7:] % 50) + 1
    torch.testing.assert_close(model(changed_items, timestamps, lengths, query_time)[:, :7], full[:, :7])
    # t[8] enters the gap at position 7 (t[8] - t[7]), so positions < 7 are unaffected
    changed_times = timestamps.clone()
    changed_times[:, 8:] += 10_000
    torch.testing.assert_close(model(items, changed_times, lengths, query_time)[:, :7], full[:, :7])


@pytest.mark.parametrize("variant", ["ss4rec", "s5_only", "mamba_only"])
def test_right_padding_does_not_change_valid_outputs(variant):
    model = model_of(variant)
    items, timestamps, lengths, query_time = make_batch([9, 4, 1], max_len=9)
    out = model(items, timestamps, lengths, query_time)
    padded_items = F.pad(items, (0, 6))
    padded_times = F.pad(timestamps, (0, 6))
    garbage_items, garbage_times = padded_items.clone(), padded_times.clone()
    for row, length in enumerate(lengths.tolist()):  # whatever sits after the end must not matter
        garbage_items[row, length:] = 3
        garbage_times[row, length:] = EPOCH + 10**7
    for batch_items, batch_times in [(padded_items, padded_times), (garbage_items, garbage_times)]:
        padded_out = model(batch_items, batch_times, lengths, query_time)
        for row, length in enumerate(lengths.tolist()):
            torch.testing.assert_close(padded_out[row, :length], out[row, :length])
    torch.testing.assert_close(
        model.last_hidden(garbage_items, garbage_times, lengths, query_time),
        model.last_hidden(items, timestamps, lengths, query_time),
    )


def test_query_time_moves_the_prediction_and_mamba_only_ignores_time():
    items, timestamps, lengths, query_time = make_batch([6, 3])
    for variant in ["ss4rec", "s5_only"]:
        model = model_of(variant)
        near = model.last_hidden(items, timestamps, lengths, query_time)
        far = model.last_hidden(items, timestamps, lengths, query_time + 10**6)
        assert not torch.allclose(near, far)
    model = model_of("mamba_only")
    torch.testing.assert_close(
        model(items, timestamps, lengths, query_time), model(items, timestamps * 0, lengths, query_time * 0)
    )


def test_huge_gaps_and_length_one_sequences_are_finite():
    model = model_of()
    model.train()
    items = torch.tensor([[5, 6, 7], [8, 0, 0], [9, 10, 0]])
    timestamps = torch.tensor([[0, 10**9, 2 * 10**9], [EPOCH, 0, 0], [EPOCH, EPOCH, 0]])
    lengths = torch.tensor([3, 1, 2])
    query_time = torch.tensor([4 * 10**9, EPOCH + 10**9, EPOCH])
    out = model(items, timestamps, lengths, query_time)
    loss = model.calculate_loss(items, timestamps, lengths)
    loss.backward()
    assert torch.isfinite(out).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    scores = model.full_sort_predict(items, timestamps, lengths, query_time)
    assert scores.shape == (3, 51) and torch.isfinite(scores[:, 1:]).all()


def test_all_length_one_batch_has_zero_loss_and_gradient():
    model = model_of()
    items, timestamps, lengths, _ = make_batch([1, 1])
    loss = model.calculate_loss(items, timestamps, lengths)
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and torch.all(p.grad == 0) for p in model.parameters())


def test_full_sort_predict_scores_last_valid_position_against_tied_embedding():
    model = model_of()
    items, timestamps, lengths, query_time = make_batch([7, 2, 1], max_len=8)
    scores = model.full_sort_predict(items, timestamps, lengths, query_time)
    hidden = model(items, timestamps, lengths, query_time)[torch.arange(3), lengths - 1]
    assert scores.shape == (3, 51)
    assert torch.all(scores[:, 0] == float("-inf"))
    torch.testing.assert_close(scores[:, 1:], hidden @ model.item_embedding.weight[1:].T)


def test_all_positions_loss_equals_mean_over_every_prefix():
    model = model_of()
    items, timestamps, lengths, _ = make_batch([8, 5, 2, 1])
    losses = []
    for row, length in enumerate(lengths.tolist()):
        for end in range(1, length):  # prefix items[:end] predicts items[end] at time t[end]
            prefix = (items[row : row + 1, :end], timestamps[row : row + 1, :end], torch.tensor([end]))
            scores = model.full_sort_predict(*prefix, timestamps[row : row + 1, end])
            losses.append(F.cross_entropy(scores[:, 1:], items[row : row + 1, end] - 1))
    expected = torch.stack(losses).mean()
    torch.testing.assert_close(model.calculate_loss(items, timestamps, lengths), expected)


def test_chunked_loss_equals_unchunked(monkeypatch):
    model = model_of(dropout=0.0)
    items, timestamps, lengths, _ = make_batch([10, 7, 4])
    whole = model.calculate_loss(items, timestamps, lengths)
    whole_grads = torch.autograd.grad(whole, list(model.parameters()))
    monkeypatch.setattr(ss4rec_module, "LOSS_CHUNK_ELEMENTS", 50 * 3)  # 3 rows per chunk
    chunked = model.calculate_loss(items, timestamps, lengths)
    torch.testing.assert_close(chunked, whole)
    for a, e in zip(torch.autograd.grad(chunked, list(model.parameters())), whole_grads, strict=True):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("variant", ["ss4rec", "s5_only", "mamba_only"])
def test_every_parameter_gets_gradient(variant):
    model = model_of(variant)
    model.train()
    items, timestamps, lengths, _ = make_batch([10, 6, 3])
    model.calculate_loss(items, timestamps, lengths).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("variant", "gap_transform"),
    [("ss4rec", "linear"), ("s5_only", "linear"), ("mamba_only", "linear"), ("ss4rec", "log1p")],
)
def test_recurrent_step_equals_full_pass(variant, gap_transform):
    model = model_of(variant, gap_transform=gap_transform)
    items, timestamps, lengths, query_time = make_batch([9, 9, 9])
    full = model(items, timestamps, lengths, query_time)
    gaps = model.time_gaps(timestamps, lengths, query_time)
    state = model.initial_state(3)
    for t in range(9):
        hidden, state = model.step(items[:, t], gaps[:, t], state)
        torch.testing.assert_close(hidden, full[:, t], atol=1e-5, rtol=1e-5)


def test_time_unit_scales_the_s5_steps():
    seconds = model_of()
    hours = model_of(time_unit_seconds=3600.0)
    items, timestamps, lengths, _ = make_batch([5])
    whole_hours = (timestamps - EPOCH) // 3600 * 3600  # seconds since EPOCH, whole hours
    query = whole_hours[:, -1] + 7200
    counted_in_hours = seconds(items, whole_hours // 3600, lengths, query // 3600)
    torch.testing.assert_close(hours(items, whole_hours, lengths, query), counted_in_hours)


def test_time_unit_is_a_shift_of_the_step_multipliers():
    """Linear gaps: unit u and log_step is unit 1 and log_step - log u (docs/time_scale.md)."""
    minutes = model_of(time_unit_seconds=60.0)
    seconds = model_of()
    seconds.load_state_dict(minutes.state_dict())
    with torch.no_grad():
        for block in seconds.blocks:
            block.s5.log_step -= torch.log(torch.tensor(60.0))
    batch = make_batch([7, 4, 1])
    torch.testing.assert_close(seconds(*batch), minutes(*batch), atol=1e-5, rtol=1e-4)
    fresh = model_of()
    assert not torch.allclose(fresh(*batch), minutes(*batch), atol=1e-3)


def test_log1p_gap_transform_compresses_the_s5_steps():
    model = model_of(gap_transform="log1p", time_unit_seconds=60.0)
    gaps = torch.tensor([[0.0, 60.0, 3600.0, 3.0e7, 8.0e8]], dtype=torch.float64)
    expected = torch.log1p(gaps / 60.0).to(torch.float32)
    torch.testing.assert_close(model._steps(gaps), expected)
    assert model._steps(gaps)[0, 0] == 0  # a zero gap still leaves the state unchanged
    linear = model_of(time_unit_seconds=60.0)
    torch.testing.assert_close(linear._steps(gaps), (gaps / 60.0).to(torch.float32))
    batch = make_batch([6, 3])
    assert not torch.allclose(model(*batch), linear(*batch), atol=1e-3)

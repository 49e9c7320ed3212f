"""Multi-scale deformable attention: grid_sample path == naive reference, gradcheck, module shapes."""

from __future__ import annotations

import math

import pytest
import torch

from balvit.models.deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_naive


def level_meta(sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = torch.tensor(sizes, dtype=torch.long)
    area = shapes[:, 0] * shapes[:, 1]
    return shapes, torch.cat([area.new_zeros(1), area.cumsum(0)[:-1]])


def random_inputs(sizes, b=2, q=5, heads=3, dh=4, points=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes, starts = level_meta(sizes)
    s = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = torch.randn(b, s, heads, dh, generator=g, dtype=dtype)
    # locations in [-0.3, 1.3]: many points fall partly or fully outside the maps
    locations = torch.rand(b, q, heads, len(sizes), points, 2, generator=g, dtype=dtype) * 1.6 - 0.3
    weights = torch.randn(b, q, heads, len(sizes) * points, generator=g, dtype=dtype).softmax(-1)
    return value, shapes, starts, locations, weights.view(b, q, heads, len(sizes), points)


def test_fast_equals_naive_float64():
    value, shapes, starts, loc, w = random_inputs([(6, 9), (3, 5), (1, 2), (2, 1)], q=40, points=4)
    assert ((loc < 0) | (loc > 1)).any()
    fast = ms_deform_attn(value, shapes, starts, loc, w)
    naive = ms_deform_attn_naive(value, shapes, starts, loc, w)
    assert fast.shape == (2, 40, 3 * 4)
    assert (fast - naive).abs().max() < 1e-10
    assert fast.abs().max() > 1e-2  # not trivially zero


def test_points_far_outside_give_zero():
    value, shapes, starts, loc, w = random_inputs([(4, 4), (2, 3)])
    loc = loc + 5.0  # every point several map widths away
    assert ms_deform_attn(value, shapes, starts, loc, w).abs().max() == 0
    assert ms_deform_attn_naive(value, shapes, starts, loc, w).abs().max() == 0


def test_point_on_pixel_centre_returns_that_pixel():
    h, w, dh = 3, 4, 2
    shapes, starts = level_meta([(h, w)])
    value = torch.arange(h * w * dh, dtype=torch.float64).view(1, h * w, 1, dh)
    row, col = 1, 2
    loc = torch.tensor([(col + 0.5) / w, (row + 0.5) / h], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    weights = torch.ones(1, 1, 1, 1, 1, dtype=torch.float64)
    expected = value[0, row * w + col, 0]  # = [12, 13]
    for fn in (ms_deform_attn, ms_deform_attn_naive):
        torch.testing.assert_close(fn(value, shapes, starts, loc, weights)[0, 0], expected, rtol=0, atol=1e-12)
    # half way between (1, 2) and (1, 3), weight 0.5 each; at the left edge of col 0 only half a pixel
    loc_mid = torch.tensor([(col + 1.0) / w, (row + 0.5) / h], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    mid = 0.5 * (value[0, row * w + col, 0] + value[0, row * w + col + 1, 0])
    loc_edge = torch.tensor([0.0, (row + 0.5) / h], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    edge = 0.5 * value[0, row * w, 0]
    for fn in (ms_deform_attn, ms_deform_attn_naive):
        torch.testing.assert_close(fn(value, shapes, starts, loc_mid, weights)[0, 0], mid, rtol=0, atol=1e-12)
        torch.testing.assert_close(fn(value, shapes, starts, loc_edge, weights)[0, 0], edge, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fn", [ms_deform_attn, ms_deform_attn_naive])
def test_gradcheck(fn):
    value, shapes, starts, loc, w = random_inputs([(3, 4), (2, 2)], b=1, q=3, heads=2, dh=2, points=2, seed=1)
    value.requires_grad_(True)
    loc.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v, lo, a: fn(v, shapes, starts, lo, a), (value, loc, w), eps=1e-6, atol=1e-5
    )


def test_shape_errors():
    value, shapes, starts, loc, w = random_inputs([(3, 4)])
    with pytest.raises(ValueError, match="sum"):
        ms_deform_attn(value[:, :-1], shapes, starts, loc, w)
    with pytest.raises(ValueError, match="levels"):
        ms_deform_attn(value, shapes, starts, torch.cat([loc, loc], dim=3), torch.cat([w, w], dim=3))


@pytest.mark.parametrize("per_level", [False, True])
def test_module_forward_backward(per_level):
    torch.manual_seed(0)
    sizes = [(8, 10), (4, 5), (2, 3)]
    shapes, starts = level_meta(sizes)
    s = sum(h * w for h, w in sizes)
    attn = MSDeformAttn(dim=24, levels=3, heads=4, points=2, value_dim=16, ratio=0.5)
    query = torch.randn(2, 7, 24, requires_grad=True)
    ref = torch.rand(2, 7, 3, 2) if per_level else torch.rand(2, 7, 2)
    value = torch.randn(2, s, 16, requires_grad=True)
    mask = torch.zeros(2, s, dtype=torch.bool)
    mask[1, -6:] = True
    out = attn(query, ref, value, shapes, starts, value_mask=mask)
    assert out.shape == (2, 7, 24)
    out.square().sum().backward()
    assert value.grad.abs().sum() > 0 and query.grad is not None
    assert value.grad[1, -6:].abs().max() == 0  # masked values do not contribute
    for name, p in attn.named_parameters():
        assert p.grad is not None, name
    assert attn.sampling_offsets.weight.grad.abs().sum() > 0


def test_initialisation_rings_and_uniform_weights():
    attn = MSDeformAttn(dim=16, levels=2, heads=4, points=3)
    bias = attn.sampling_offsets.bias.view(4, 2, 3, 2)
    # head 0 points along +x, head 1 along +y (angle pi/2), points at 1, 2, 3 pixels, same per level
    torch.testing.assert_close(bias[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[1, 1, :, 1], torch.tensor([1.0, 2.0, 3.0]))
    assert abs(bias[1, 0, 0, 0]) < 1e-6 and torch.equal(bias[:, 0], bias[:, 1])
    assert attn.sampling_offsets.weight.abs().max() == 0 and attn.attention_weights.weight.abs().max() == 0
    # uniform attention at init: output = mean over the L*P sampled points
    shapes, starts = level_meta([(4, 4), (2, 2)])
    q = torch.randn(1, 3, 16)
    v = torch.randn(1, 20, 16)
    ref = torch.rand(1, 3, 2)
    out = attn(q, ref, v, shapes, starts)
    assert out.shape == (1, 3, 16) and torch.isfinite(out).all()
    assert math.isclose(attn.attention_weights(q).view(1, 3, 4, 6).softmax(-1)[0, 0, 0, 0].item(), 1 / 6, rel_tol=1e-6)

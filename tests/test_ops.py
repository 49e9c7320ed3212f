"""models/ops.py: scatter / gather against loops."""

import torch

from balvit.models.ops import gather_grid, inverse_counts, scatter_count, scatter_max, scatter_mean, to_grid


def test_scatter_max_and_mean_equal_loops():
    torch.manual_seed(0)
    src = torch.randn(200, 5)
    idx = torch.randint(0, 30, (200,))
    mx = scatter_max(src, idx, 40)
    mean, count = scatter_mean(src, idx, 40), scatter_count(idx, 40)
    for cell in range(40):
        members = src[idx == cell]
        if len(members):
            assert torch.equal(mx[cell], members.max(0).values)
            torch.testing.assert_close(mean[cell], members.mean(0))
            assert count[cell] == len(members)
        else:
            assert (mx[cell] == 0).all() and (mean[cell] == 0).all() and count[cell] == 0


def test_scatter_mean_with_shared_inverse_counts_equals_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(60, 5, generator=g, dtype=torch.float64)
    cells = torch.randint(0, 23, (60,), generator=g)  # some of the 23 cells stay empty
    expected = torch.zeros(23, 5, dtype=torch.float64)
    for c in range(23):
        members = [tokens[i] for i in range(60) if cells[i] == c]
        if members:
            expected[c] = sum(members) / len(members)
    assert (cells.bincount(minlength=23) == 0).any()
    torch.testing.assert_close(scatter_mean(tokens, cells, 23), expected)
    torch.testing.assert_close(scatter_mean(tokens, cells, 23, inverse_counts(cells, 23)), expected)
    # gradients of both paths agree too
    a = tokens.clone().requires_grad_()
    b = tokens.clone().requires_grad_()
    w = torch.randn(23, 5, generator=g, dtype=torch.float64)
    (scatter_mean(a, cells, 23) * w).sum().backward()
    (scatter_mean(b, cells, 23, inverse_counts(cells, 23)) * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_gather_grid_reads_the_right_cells():
    feat = torch.randn(2, 3, 4, 5)
    batch = torch.tensor([0, 1, 1, 0])
    row = torch.tensor([0, 3, 2, 1])
    col = torch.tensor([4, 0, 2, 3])
    out = gather_grid(feat, batch, row, col)
    for k in range(4):
        assert torch.equal(out[k], feat[batch[k], :, row[k], col[k]])


def test_to_grid_layout():
    vals = torch.arange(2 * 3 * 4 * 2, dtype=torch.float32).view(2 * 3 * 4, 2)
    g = to_grid(vals, 2, 3, 4)
    assert g.shape == (2, 2, 3, 4)
    assert torch.equal(g[1, :, 2, 3], vals[(1 * 3 + 2) * 4 + 3])

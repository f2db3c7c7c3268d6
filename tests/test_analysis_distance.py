"""Mean attention distance against closed forms, and the streaming version against one big batch."""
import itertools
import math

import pytest
import torch
from conftest import perturb_

import vitlens
from vitlens.analysis import attention_distance, mean_attention_distance
from vitlens.images import prepare


def grid_coords(g):
    return [(r, c) for r in range(g) for c in range(g)]


def with_cls(patch_attention, cls_mass=0.0):
    """Prepend a class token; each patch row sends ``cls_mass`` to it, the class row is uniform."""
    B, H, n, _ = patch_attention.shape
    a = torch.zeros(B, H, n + 1, n + 1, dtype=torch.float64)
    a[..., 1:, 1:] = patch_attention * (1 - cls_mass)
    a[..., 1:, 0] = cls_mass
    a[..., 0, :] = 1.0 / (n + 1)
    return a


def lay(g, P, prefix=("cls",)):
    """The layout of a g x g grid of P-pixel patches after ``prefix`` tokens."""
    return vitlens.TokenLayout(prefix, (g, g), (P, P), "token" if prefix else "avg")


def uniform_mean_pairwise_distance(g):
    """E||u - v|| for u, v independent and uniform on a g x g grid: offsets (dx, dy) occur (g-|dx|)(g-|dy|) times."""
    r = range(-(g - 1), g)
    return sum((g - abs(dx)) * (g - abs(dy)) * math.hypot(dx, dy) for dx in r for dy in r) / g ** 4


def test_self_attention_gives_zero():
    g = 4
    a = with_cls(torch.eye(g * g, dtype=torch.float64).expand(2, 3, -1, -1))
    assert torch.all(mean_attention_distance([a, a], lay(g, 16)) == 0)


def test_fixed_neighbour_gives_patch_size():
    g, P = 5, 16
    target = torch.zeros(g * g, g * g, dtype=torch.float64)
    for i, (r, c) in enumerate(grid_coords(g)):  # the right neighbour, the left one in the last column
        target[i, r * g + (c + 1 if c + 1 < g else c - 1)] = 1
    d = mean_attention_distance([with_cls(target.expand(1, 2, -1, -1))], lay(g, P))
    torch.testing.assert_close(d, torch.full((1, 1, 2), float(P), dtype=torch.float64))


@pytest.mark.parametrize("g", [2, 3, 7])
def test_uniform_attention_gives_mean_pairwise_distance(g):
    P = 14
    a = with_cls(torch.full((1, 1, g * g, g * g), 1.0 / (g * g), dtype=torch.float64))
    want = uniform_mean_pairwise_distance(g) * P
    if g == 2:  # by hand: 4 pairs at 0, 8 at 1, 4 at sqrt(2) among 16 ordered pairs
        assert want == pytest.approx((0.5 + math.sqrt(2) / 4) * P)
    assert mean_attention_distance([a], lay(g, P)).item() == pytest.approx(want, rel=1e-12)


def test_class_token_options():
    g, P = 3, 10
    target = torch.zeros(g * g, g * g, dtype=torch.float64)
    for i, (r, c) in enumerate(grid_coords(g)):
        target[i, r * g + (c + 1 if c + 1 < g else c - 1)] = 1
    a = [with_cls(target.expand(1, 1, -1, -1), cls_mass=0.5)]
    kw = dict(layout=lay(g, P))
    assert mean_attention_distance(a, **kw).item() == pytest.approx(P)  # renormalised over the patches
    assert mean_attention_distance(a, **kw, renormalize=False).item() == pytest.approx(P / 2)
    # class token as a query (row adds 0) and a key at distance 0: mean over 1 + g*g queries
    assert mean_attention_distance(a, **kw, include_prefix=True).item() == pytest.approx(g * g * P / 2 / (g * g + 1))
    no_prefix = mean_attention_distance([a[0][..., 1:, 1:]], lay(g, P, prefix=()), renormalize=False)
    assert no_prefix.item() == pytest.approx(P / 2)


def test_streaming_equals_one_batch_and_any_batch_size():
    model = perturb_(vitlens.create_model("vit_ti16", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                                          mlp_dim=64, num_classes=3), std=0.3).eval()
    images = torch.rand(10, 3, 32, 32)
    with torch.no_grad(), vitlens.capture(model) as rec:
        model(prepare(images, model.data_config))
    per_image = mean_attention_distance(rec.attentions, vitlens.token_layout(model))
    for bs in (3, 10):
        got = attention_distance(model, images, batch_size=bs, progress=False)
        assert got["count"] == 10
        torch.testing.assert_close(got["mean"], per_image.mean(0))
        torch.testing.assert_close(got["std"], per_image.std(0, unbiased=False))
    loader = [(x, torch.zeros(len(x))) for x in images.split(4)]
    torch.testing.assert_close(attention_distance(model, loader, progress=False)["mean"], per_image.mean(0))


def brute_force_distance(attention, grid, patch_size):
    """The paper's definition with loops, one head: mean over patch queries i of sum_j A_ij * ||g_i - g_j|| in
    pixels, A's class column dropped and each row re-normalised; patch (r, c) is token 1 + r * gw + c."""
    (gh, gw), (ph, pw) = grid, patch_size
    a = attention[1:, 1:] / attention[1:, 1:].sum(axis=1, keepdims=True)
    total = 0.0
    for i in range(gh * gw):
        for j in range(gh * gw):
            (ri, ci), (rj, cj) = divmod(i, gw), divmod(j, gw)
            total += a[i, j] * math.hypot((ri - rj) * ph, (ci - cj) * pw)
    return total / (gh * gw)


@pytest.mark.parametrize("grid,patch", [((2, 3), (3, 5)), ((12, 8), (8, 8))])
def test_random_attention_on_a_non_square_grid_equals_the_brute_force_loop(grid, patch):
    """Asymmetric random attention, non-square grids and (2 x 3) non-square patches: swapping x and y, rows and
    columns, or the patch's height and width changes the answer."""
    n = 1 + grid[0] * grid[1]
    a = torch.softmax(torch.randn(2, 2, n, n, dtype=torch.float64) * 3, dim=-1)
    got = mean_attention_distance([a], vitlens.TokenLayout(("cls",), grid, patch, "token"))
    for b in range(2):
        for h in range(2):
            assert got[b, 0, h].item() == pytest.approx(brute_force_distance(a[b, h].numpy(), grid, patch), rel=1e-10)


def test_distance_of_a_model_moved_to_a_non_square_size_equals_the_brute_force_loop():
    model = perturb_(vitlens.create_model("vit_ti16", img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                          mlp_dim=64, num_classes=3), std=0.3).eval()
    model.set_img_size((96, 64))
    images = torch.rand(1, 3, 96, 64)
    with torch.no_grad(), vitlens.capture(model) as rec:
        model(prepare(images, model.data_config))
    got = attention_distance(model, images, progress=False)["mean"]
    for layer, a in enumerate(rec.attentions):
        for h in range(2):
            want = brute_force_distance(a[0, h].double().numpy(), (12, 8), (8, 8))
            assert got[layer, h].item() == pytest.approx(want, rel=1e-6)

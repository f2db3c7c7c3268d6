"""Rollout, gradient rollout and head maps against loops written from the papers' definitions."""
import numpy as np
import pytest
import torch
from conftest import perturb_

import vitlens
from vitlens.analysis import attention_rollout, cls_map, gradient_rollout, head_maps, patch_maps


def lay(grid, prefix=("cls",)):
    """The layout of a grid of patches after ``prefix`` tokens."""
    return vitlens.TokenLayout(prefix, tuple(grid), (1, 1), "token" if prefix else "avg")


def random_attention(L=3, B=2, H=4, N=10):
    return [torch.softmax(torch.randn(B, H, N, N) * 2, dim=-1) for _ in range(L)]


def paper_rollout(attentions, b, fuse=np.mean):
    """Abnar & Zuidema for one image: A_hat = (fuse_h A + I) / rowsum; J_l = A_hat_l J_{l-1}."""
    n = attentions[0].shape[-1]
    joint = np.eye(n)
    for a in attentions:
        a = fuse(a[b].double().numpy(), axis=0) + np.eye(n)
        a = a / a.sum(axis=1)[:, None]
        joint = a @ joint
    return joint


@pytest.mark.parametrize("fusion,fuse", [("mean", np.mean), ("max", np.max), ("min", np.min)])
def test_rollout_equals_per_sample_loop(fusion, fuse):
    attn = random_attention()
    got = attention_rollout(attn, head_fusion=fusion).double()
    for b in range(2):
        np.testing.assert_allclose(got[b].numpy(), paper_rollout(attn, b, fuse), atol=1e-6)
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 10, dtype=got.dtype), atol=1e-6, rtol=0)
    for layer in attn:  # each re-normalised layer on its own is row-stochastic too
        torch.testing.assert_close(attention_rollout([layer], head_fusion=fusion).sum(-1), torch.ones(2, 10))


def test_start_layer_skips_layers():
    attn = random_attention()
    got = attention_rollout(attn, start_layer=1).double()
    np.testing.assert_allclose(got[0].numpy(), paper_rollout(attn[1:], 0), atol=1e-6)


def test_identity_attention_gives_identity_and_uniform_maps():
    n, grid = 1 + 9, (3, 3)
    identity = [torch.eye(n).expand(1, 2, n, n)]
    joint = attention_rollout(identity)
    torch.testing.assert_close(joint[0], torch.eye(n))
    m = cls_map(joint, lay(grid))
    assert torch.all(m == m.flatten()[0])
    uniform = [torch.full((1, 2, n, n), 1.0 / n)]  # (1/n + I) / 2: every patch gets 1/(2n) from the class row
    torch.testing.assert_close(cls_map(attention_rollout(uniform), lay(grid)), torch.full((1, 3, 3), 0.5 / n))


def test_discard_ratio_keeps_class_entries_and_stays_row_stochastic():
    attn = random_attention(L=1, B=1, N=10)
    got = attention_rollout(attn, discard_ratio=0.5)
    fused = attn[0].mean(1)[0]
    patch = fused[1:, 1:]
    kept = patch > patch.flatten().kthvalue(int(0.5 * 81)).values  # 40 lowest patch-patch entries dropped
    want = torch.zeros_like(fused)
    want[0], want[:, 0] = fused[0], fused[:, 0]
    want[1:, 1:] = patch * kept
    want = want + torch.eye(10)
    torch.testing.assert_close(got[0], want / want.sum(1, keepdim=True))


def test_cls_map_gap_is_mean_over_rows():
    x = torch.rand(2, 4, 4)
    torch.testing.assert_close(cls_map(x, lay((2, 2), prefix=())), x.mean(1).reshape(2, 2, 2))


def test_gradient_rollout_equals_chefer_loop():
    model = perturb_(vitlens.create_model("vit_ti16", img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4,
                                          mlp_dim=64, num_classes=5), std=0.2).eval()
    x = torch.randn(2, 3, 32, 32)
    got = gradient_rollout(model, x, target=[1, 3])
    for b, t in enumerate([1, 3]):  # one image, one backward, the generic rule written out
        with vitlens.capture(model, grad=True) as rec:
            model(x[b:b + 1])[0, t].backward()
        r = torch.eye(17)
        for a, g in zip(rec.attentions, rec.attention_grads):
            r = r + (g[0] * a[0].detach()).clamp(min=0).mean(0) @ r
        torch.testing.assert_close(got[b], r, atol=1e-6, rtol=1e-4)
    assert cls_map(got, vitlens.token_layout(model)).shape == (2, 4, 4)
    model.zero_grad()
    default = gradient_rollout(model, x)  # the predicted class
    torch.testing.assert_close(default, gradient_rollout(model, x, target=model(x).argmax(-1)))


def test_head_maps_and_threshold():
    attn = random_attention(L=2, B=2, H=3, N=17)
    maps = head_maps(attn, lay((4, 4)))
    torch.testing.assert_close(maps, attn[-1][:, :, 0, 1:].reshape(2, 3, 4, 4))
    kept = head_maps(attn, lay((4, 4)), layer=0, threshold=0.6)
    full = attn[0][:, :, 0, 1:]
    for b in range(2):
        for h in range(3):
            k = kept[b, h].flatten()
            total = full[b, h].sum()
            assert k.sum() >= 0.6 * total  # holds the fraction
            smallest_kept = k[k > 0].min()
            assert k.sum() - smallest_kept < 0.6 * total  # and is the smallest such set
            assert k[k > 0].min() >= full[b, h][k == 0].max()  # made of the largest entries


@pytest.mark.parametrize("fusion,fuse", [("mean", np.mean), ("max", np.max)])
def test_patch_maps_read_the_query_row_on_a_non_square_grid(fusion, fuse):
    """What patch (r, c) of a 2 x 3 grid attends to: its own row of each layer (never its column), laid out on the
    grid row-major, written out with loops."""
    attn = random_attention(L=2, B=2, H=3, N=1 + 6)
    got = patch_maps(attn, (1, 0), lay((2, 3)), head_fusion=fusion)
    assert got.shape == (2, 2, 2, 3)
    query = 1 + 1 * 3 + 0  # the class token first, then row-major patches
    for b in range(2):
        for layer in range(2):
            fused = fuse(attn[layer][b].double().numpy(), axis=0)
            for r in range(2):
                for c in range(3):
                    assert got[b, layer, r, c].item() == pytest.approx(fused[query, 1 + r * 3 + c], abs=1e-6)
    torch.testing.assert_close(patch_maps(attn, 3, lay((2, 3)), head_fusion=fusion), got)  # by index
    with pytest.raises(ValueError, match="outside the 2 x 3 grid"):
        patch_maps(attn, 6, lay((2, 3)))


@pytest.mark.parametrize("grid", [(2, 3), (12, 8)])
def test_cls_map_and_head_maps_read_the_class_row_on_non_square_grids(grid):
    """Asymmetric attention (A != A^T) on non-square grids: the class token's row (never its column) of the
    joint attention and of each head's last-layer attention, laid out row-major on gh x gw, written out with loops."""
    gh, gw = grid
    attn = random_attention(L=3, B=2, H=3, N=1 + gh * gw)
    assert not torch.allclose(attn[0], attn[0].transpose(-1, -2), atol=1e-2)
    maps = cls_map(attention_rollout(attn), lay(grid))
    heads = head_maps(attn, lay(grid))
    assert maps.shape == (2, gh, gw) and heads.shape == (2, 3, gh, gw)
    for b in range(2):
        joint = paper_rollout(attn, b)
        last = attn[-1][b].double().numpy()
        for r in range(gh):
            for c in range(gw):
                key = 1 + r * gw + c
                assert maps[b, r, c].item() == pytest.approx(joint[0, key], abs=1e-6)
                for h in range(3):
                    assert heads[b, h, r, c].item() == pytest.approx(last[h, 0, key], abs=1e-7)


def test_rollout_and_head_maps_of_a_model_moved_to_a_non_square_size():
    """A vitlens ViT after set_img_size((96, 64)): 12 x 8 patches; its captured maps laid out as the loops say."""
    model = perturb_(vitlens.create_model("vit_ti16", img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                          mlp_dim=64, num_classes=3), std=0.3).eval()
    model.set_img_size((96, 64))
    layout = vitlens.token_layout(model)
    assert layout.grid == (12, 8)
    with torch.no_grad(), vitlens.capture(model) as rec:
        model(torch.randn(1, 3, 96, 64))
    maps, heads = cls_map(attention_rollout(rec.attentions), layout), head_maps(rec.attentions, layout)
    joint, last = paper_rollout(rec.attentions, 0), rec.attentions[-1][0].double().numpy()
    want_maps = np.array([[joint[0, 1 + r * 8 + c] for c in range(8)] for r in range(12)])
    want_heads = np.array([[[last[h, 0, 1 + r * 8 + c] for c in range(8)] for r in range(12)] for h in range(2)])
    np.testing.assert_allclose(maps[0].numpy(), want_maps, atol=1e-6)
    np.testing.assert_allclose(heads[0].numpy(), want_heads, atol=1e-7)

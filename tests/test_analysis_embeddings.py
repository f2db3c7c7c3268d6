"""Position-embedding similarity and patch-embedding principal components."""
import numpy as np
import pytest
import torch
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed

import vitlens
from vitlens.analysis import patch_embedding_components, position_embedding_similarity


def tiny(**kw):
    cfg = dict(img_size=64, patch_size=8, embed_dim=64, depth=1, num_heads=2, mlp_dim=64, num_classes=0)
    return vitlens.create_model("vit_ti16", **{**cfg, **kw})


@pytest.mark.parametrize("pool", ["token", "gap"])
def test_similarity_has_unit_diagonal_and_follows_resolution(pool):
    model = tiny(pool=pool)
    sim = position_embedding_similarity(model)
    assert sim.shape == (8, 8, 8, 8)
    torch.testing.assert_close(torch.einsum("ijij->ij", sim), torch.ones(8, 8))
    assert sim.min() >= -1 - 1e-6 and sim.max() <= 1 + 1e-6
    model.set_img_size((96, 64))
    sim = position_embedding_similarity(model)
    assert sim.shape == (12, 8, 12, 8)
    torch.testing.assert_close(torch.einsum("ijij->ij", sim), torch.ones(12, 8))


@pytest.mark.parametrize("pool,slots", [("token", 1), ("gap", 0)])
def test_similarity_of_a_random_table_on_a_non_square_grid_equals_a_cosine_loop(pool, slots):
    """A random E_pos with a common offset (so centred cosine differs) after set_img_size((96, 64)): tile [r, c]
    holds patch (r, c)'s similarity to every patch, each entry F.cosine_similarity of two rows, prefix slots out."""
    model = tiny(pool=pool)
    model.set_img_size((96, 64))
    with torch.no_grad():
        model.pos_embed.copy_(torch.randn_like(model.pos_embed) + 0.5)
    table = model.pos_embed[0, slots:].detach()
    sim = position_embedding_similarity(model)
    assert sim.shape == (12, 8, 12, 8)
    for r in range(12):
        for c in range(8):
            query = table[r * 8 + c]
            want = torch.stack([torch.nn.functional.cosine_similarity(query, table[r2 * 8 + c2], dim=0)
                                for r2 in range(12) for c2 in range(8)]).reshape(12, 8)
            torch.testing.assert_close(sim[r, c], want, atol=1e-6, rtol=0)


def test_sincos_table_nearest_neighbours_rank_highest():
    model = tiny()
    g = 8
    with torch.no_grad():
        model.pos_embed[0, 1:] = build_sincos2d_pos_embed([g, g], dim=64)
    sim = position_embedding_similarity(model).reshape(g * g, g * g)
    for i in range(g * g):
        r, c = divmod(i, g)
        neighbours = {(r + dr) * g + c + dc for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))
                      if 0 <= r + dr < g and 0 <= c + dc < g}
        others = sim[i].clone()
        others[i] = -2
        top = set(others.topk(len(neighbours)).indices.tolist())
        assert top == neighbours, (r, c)


def test_patch_embedding_components_match_svd():
    model = tiny(in_chans=3)
    with torch.no_grad():  # filters = a dominant pattern with random strength, plus noise: PC1 is the pattern
        pattern = torch.randn(3 * 8 * 8)
        w = torch.randn(64, 1) * 5 * pattern + torch.randn(64, 3 * 8 * 8) * 0.1
        model.patch_embed.proj.weight.copy_(w.reshape(64, 3, 8, 8))
    comps, ratio = patch_embedding_components(model, k=28)
    assert comps.shape == (28, 3, 8, 8) and ratio.shape == (28,)
    centred = w.double() - w.double().mean(0)
    _, s, vt = np.linalg.svd(centred.numpy(), full_matrices=False)
    np.testing.assert_allclose(ratio.numpy(), (s ** 2 / (s ** 2).sum())[:28], rtol=1e-4)
    flat = comps.flatten(1).double().numpy()
    np.testing.assert_allclose(np.abs((flat * vt[:28]).sum(1)), np.ones(28), atol=1e-4)  # equal up to sign
    assert abs(torch.nn.functional.cosine_similarity(comps[0].flatten(), pattern, dim=0)) > 0.99


def test_components_refuse_hybrid_and_bad_k():
    with pytest.raises(ValueError, match="hybrid"):
        patch_embedding_components(vitlens.create_model("r50_vit_b16", img_size=32, backbone_layers=(1,), depth=1,
                                                        embed_dim=32, num_heads=2, mlp_dim=32))
    with pytest.raises(ValueError, match="k must be"):
        patch_embedding_components(tiny(), k=65)

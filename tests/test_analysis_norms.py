"""High-norm tokens (Darcet et al. 2024) on a model built to grow one at a known patch and layer."""
import math

import pytest
import torch

import vitlens
from vitlens.analysis import high_norm_tokens, split_threshold, token_norms

GRID, MARKED, LAYER = (3, 4), (2, 1), 2  # a 3 x 4 grid (rows differ from columns); patch (2, 1); from block 2 on


def planted_model() -> vitlens.VisionTransformer:
    """A ViT whose blocks are identities except block LAYER's MLP, which writes a huge vector into the one token that
    carries a marker in its position embedding: that token is an outlier from LAYER on, and nowhere before.

    Zero query/key weights make every attention uniform, so each token draws exactly 1/N of the class token's."""
    torch.manual_seed(0)
    model = vitlens.create_model("vit_ti16", img_size=(12, 16), patch_size=4, in_chans=1, embed_dim=16, depth=4,
                                 num_heads=2, mlp_dim=8, num_classes=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for blk in model.blocks:
            blk.norm1.weight.fill_(1), blk.norm2.weight.fill_(1)
        model.norm.weight.fill_(1)
        model.patch_embed.proj.weight.normal_(std=0.1)
        model.pos_embed.normal_()  # every token's norm about 4
        model.pos_embed[..., 0] = 0
        model.pos_embed[0, 1 + MARKED[0] * GRID[1] + MARKED[1], 0] = 4.0  # the marker: a norm of about 5.6, no outlier
        mlp = model.blocks[LAYER].mlp
        mlp.fc1.weight[0, 0], mlp.fc1.bias[0] = 10.0, -20.0  # on only where LN(x)[0] > 2: the marked token
        mlp.fc2.weight[:, 0] = 100.0
    return model


def test_the_planted_token_is_found_where_and_when_it_was_planted():
    model = planted_model()
    result = token_norms(model, torch.rand(6, 1, 12, 16), batch_size=4, progress=False)
    assert result["norms"].shape == (6, 4, 1 + 12) and result["layout"].grid == GRID
    found = high_norm_tokens(result)
    assert found["thresholds"][:LAYER] == [math.inf] * LAYER  # unimodal before the plant: no split
    assert found["count"] == [0.0] * LAYER + [1.0] * (4 - LAYER)
    want = torch.zeros(GRID)
    want[MARKED] = 1.0
    for layer in range(LAYER, 4):
        torch.testing.assert_close(found["positions"][layer], want)
        assert found["attention_share"][layer] == pytest.approx(1 / 13, abs=1e-6)  # uniform attention, 13 tokens
    assert found["images_with"] == [0.0] * LAYER + [1.0] * (4 - LAYER)
    fixed = high_norm_tokens(result, threshold=1e9)  # a fixed cut above every norm
    assert fixed["count"] == [0.0] * 4


def test_split_threshold_finds_a_bimodal_gap_and_refuses_a_unimodal_set():
    g = torch.Generator().manual_seed(0)
    low = 10 * torch.exp(0.1 * torch.randn(500, generator=g))
    high = 120 * torch.exp(0.1 * torch.randn(20, generator=g))
    cut = split_threshold(torch.cat([low, high]))
    assert low.max() < cut < high.min()
    assert split_threshold(low) == math.inf
    assert split_threshold(torch.cat([low, 1.5 * low[:20]])) == math.inf  # two modes, too close to count


def test_the_norm_maps_mark_the_planted_token_and_the_finding_names_its_layers():
    from vitlens.analysis.figures import norm_maps_figure
    from vitlens.analysis.findings import norms_finding

    model = planted_model()
    result = token_norms(model, torch.rand(6, 1, 12, 16), batch_size=6, progress=False)
    found = high_norm_tokens(result)
    layout, image = result["layout"], torch.rand(1, 12, 16)
    norms = layout.to_grid(layout.patches(result["norms"][0]))
    fig = norm_maps_figure(image, norms, found["outliers"][0].view(4, *GRID), result["layers"], "planted")
    marks = [t for t in fig.data if t.name == "high-norm token"]
    # a 12 x 16 image on a 3 x 4 grid: patch (2, 1) covers rows 8-11 and columns 4-7, centre (9.5, 5.5)
    assert [(list(t.x), list(t.y)) for t in marks] == [([], [])] * LAYER + [([5.5], [9.5])] * (4 - LAYER)
    heat = [t for t in fig.data if t.type == "heatmap"][LAYER]
    assert heat.z[MARKED[0]][MARKED[1]] == pytest.approx(math.log10(float(norms[LAYER][MARKED])))
    text = norms_finding(found, result["layers"])["text"]
    assert f"high-norm tokens in layers {LAYER + 1}, {LAYER + 2}" in text and f"{1 / 13:.0%} of the class" in text
    unimodal = high_norm_tokens(result, threshold=1e9)
    assert "no high-norm tokens in any layer" in norms_finding(unimodal, result["layers"])["text"]

"""Every analysis on every timm ViT family (random weights, offline): right shapes, finite numbers, the layout's
prefix tokens kept out of the grid, and a clear error where an analysis has nothing to show."""
import pytest
import torch
from test_capture_families import FAMILIES, make

import vitlens
from vitlens.analysis import (attention_distance, attention_rollout, cls_map, gradient_rollout, head_maps,
                              high_norm_tokens, position_embedding_similarity, prefix_shares, token_norms)
from vitlens.bias import erf_probe, occlusion_probe, translation_probe
from vitlens.images import prepare
from vitlens.models.timm_convert import data_config_of

NO_ABSOLUTE_TABLE = {"vit_base_patch16_rope_reg1_gap_256": "RoPE", "beit_base_patch16_224": "relative position bias"}


@pytest.mark.parametrize("name,overrides,prefix,pool", FAMILIES, ids=[f[0].split(".")[0] for f in FAMILIES])
def test_every_analysis_runs_on_the_family(name, overrides, prefix, pool):
    model = make(name, overrides)
    size = tuple(model.patch_embed.img_size)
    layout = vitlens.token_layout(model)
    images = torch.rand(2, 3, *size)
    x = prepare(images, data_config_of(model))
    with torch.no_grad(), vitlens.capture(model) as rec:
        model(x)
    joint = attention_rollout(rec.attentions, num_prefix_tokens=layout.num_prefix_tokens)
    rollout = cls_map(joint, layout)
    assert rollout.shape == (2, *layout.grid) and torch.isfinite(rollout).all() and (rollout >= 0).all()
    assert list(prefix_shares(joint, layout)) == list(prefix)
    relevance = cls_map(gradient_rollout(model, x), layout)
    assert relevance.shape == (2, *layout.grid) and torch.isfinite(relevance).all()
    heads = head_maps(rec.attentions, layout)
    assert heads.shape == (2, rec.attentions[-1].shape[1], *layout.grid) and torch.isfinite(heads).all()
    mad = attention_distance(model, images, progress=False)["mean"]
    assert mad.shape == (2, rec.attentions[0].shape[1]) and torch.isfinite(mad).all() and (mad > 0).all()
    found = high_norm_tokens(token_norms(model, images, progress=False))
    assert found["positions"].shape == (2, *layout.grid)
    if name in NO_ABSOLUTE_TABLE:
        with pytest.raises(ValueError, match=NO_ABSOLUTE_TABLE[name]):
            position_embedding_similarity(model)
    else:
        sim = position_embedding_similarity(model)
        assert sim.shape == (*layout.grid, *layout.grid) and torch.isfinite(sim).all()
        torch.testing.assert_close(sim.reshape(layout.num_patches, -1).diagonal(), torch.ones(layout.num_patches))
    P = layout.square_patch
    shifted = translation_probe(model, x, shifts=[0, P], batch_size=2)
    assert shifted["stride"] == P and shifted["whole_patch"] == [True, True]
    assert all(torch.isfinite(torch.tensor(v)).all() for v in shifted["equivariance"].values())
    drop = occlusion_probe(model, x, torch.zeros(2, dtype=torch.long), drop_fractions=(0.0, 0.5), shuffle_grids=(1,))
    assert drop["patch_size"] == P
    erf = erf_probe(model, x[:1], layers=["block 2"])
    assert erf["layers"] == ["block 2"] and erf["erf"]["block 2"].shape == size

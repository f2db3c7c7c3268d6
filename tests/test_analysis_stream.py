"""Analyses reduced layer by layer (no N x N map kept) against the keep-everything path, and capture's options to
keep less (some heads, a lower precision)."""
import pytest
import torch
from test_capture_families import make

import vitlens
from vitlens.analysis import attention_rollout, cls_map, head_maps, mean_attention_distance, streamed_maps


@pytest.mark.parametrize("name,overrides", [("vit_small_patch14_reg4_dinov2", dict(img_size=(42, 70))),
                                            ("vit_base_patch16_siglip_224", dict(embed_dim=96, num_heads=3))])
@pytest.mark.parametrize("options", [{}, dict(head_fusion="max", discard_ratio=0.3, start_layer=1,
                                              include_prefix=True, renormalize=False)])
def test_streamed_equals_keep_everything(name, overrides, options):
    model = make(name, overrides)
    x = torch.randn(2, 3, *model.patch_embed.img_size)
    layout = vitlens.token_layout(model, x.shape[-2:])
    with torch.no_grad(), vitlens.capture(model) as rec:
        logits = model(x)
    rollout_kw = {k: v for k, v in options.items() if k in ("head_fusion", "discard_ratio", "start_layer")}
    distance_kw = {k: v for k, v in options.items() if k in ("include_prefix", "renormalize")}
    got = streamed_maps(model, x, **options)
    torch.testing.assert_close(got["logits"], logits)
    want = cls_map(attention_rollout(rec.attentions, num_prefix_tokens=layout.num_prefix_tokens, **rollout_kw),
                   layout)
    torch.testing.assert_close(got["rollout"], want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["distance"], mean_attention_distance(rec.attentions, layout, **distance_kw),
                               atol=1e-5, rtol=1e-5)
    for layer in range(len(model.blocks)):
        torch.testing.assert_close(got["head_maps"][:, layer], head_maps(rec.attentions, layout, layer=layer))


def test_capture_keeps_chosen_heads_in_a_lower_precision_and_refuses_them_with_gradients():
    model = make("deit_tiny_distilled_patch16_224", {})
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        with vitlens.capture(model) as full:
            model(x)
        with vitlens.capture(model, heads=[2, 0], dtype=torch.float16) as small:
            model(x)
    assert small.attentions[0].dtype == torch.float16 and small.attentions[0].shape[1] == 2
    torch.testing.assert_close(small.attentions[1].float(), full.attentions[1][:, [2, 0]], atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="grad=True"):
        with vitlens.capture(model, grad=True, heads=[0]):
            pass

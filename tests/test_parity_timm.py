"""Logit parity with timm's VisionTransformer, random weights, both directions (timm -> vitlens -> timm)."""
import pytest
import timm
import torch

import vitlens
from conftest import perturb_

# timm name -> (vitlens name, overrides), the same architecture
CASES = {
    "vit_tiny_patch16_224": ("vit_ti16", {}),
    "vit_small_patch32_224": ("vit_s32", {}),
    "vit_base_patch16_384": ("vit_b16", {"img_size": 384}),
    "vit_base_patch16_gap_224": ("vit_b16", {"pool": "gap", "num_heads": 16}),
    "vit_base_r50_s16_224": ("r50_vit_b16", {}),
}


@pytest.mark.parametrize("timm_name", list(CASES))
def test_logits_match_timm_both_directions(timm_name):
    name, overrides = CASES[timm_name]
    size = overrides.get("img_size", 224)
    x = torch.randn(2, 3, size, size)
    ref = perturb_(timm.create_model(timm_name, num_classes=10)).eval()
    ours = vitlens.create_model(name, num_classes=10, **overrides).eval()

    ours.load_state_dict(ref.state_dict())  # timm -> vitlens, plain load_state_dict
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=0)

    perturb_(ours)
    ref.load_state_dict(ours.state_dict())  # vitlens -> timm
    with torch.no_grad():
        y_ours, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y_ours, y_ref, atol=1e-4, rtol=0)
    assert y_ours.abs().max() > 1e-2  # the comparison is not between two zero heads


def test_from_timm_keeps_weights_and_data_config():
    ref = perturb_(timm.create_model("vit_tiny_patch16_224", num_classes=7)).eval()
    ours = vitlens.from_timm(ref)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=0)
    expected = timm.data.resolve_model_data_config(ref)
    assert ours.data_config["mean"] == tuple(expected["mean"])
    assert ours.data_config["input_size"] == tuple(expected["input_size"])
    assert ours.data_config["crop_pct"] == expected["crop_pct"]


def test_from_timm_refuses_variants_beyond_the_paper():
    model = timm.create_model("vit_small_patch16_224", reg_tokens=4, no_embed_class=True, init_values=1e-5)
    with pytest.raises(vitlens.UnsupportedModelError, match="register tokens.*layer scale"):
        vitlens.from_timm(model)


def test_state_dict_keys_and_shapes_equal_timm():
    ours = vitlens.create_model("vit_s16", representation_size=None).state_dict()
    ref = timm.create_model("vit_small_patch16_224").state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}

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


def _stream_dtypes(blocks) -> list:
    """The dtype of the tokens each encoder layer hands to the next, filled in as the model runs."""
    seen = []
    for block in blocks:
        block.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    return seen


def test_low_precision_residual_is_timms_fast_norm_with_a_bf16_stream():
    """``low_precision_residual``: without autocast the very same model as timm's; under bf16 autocast the tokens
    between layers stay bf16 (float32 by default), and the logits equal those of timm's model run with timm's own
    low-precision LayerNorm (``set_fast_norm``) and its tokens cast to bf16 after the position embeddings."""
    from timm.layers import is_fast_norm, set_fast_norm

    ref = perturb_(timm.create_model("vit_tiny_patch16_224", num_classes=10, depth=3)).eval()
    ours = vitlens.from_timm(ref, low_precision_residual=True)
    assert ours.config["low_precision_residual"] and ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=0)

        seen, default_seen = _stream_dtypes(ours.blocks), _stream_dtypes(ref.blocks)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_ours, y_default = ours(x), ref(x)
        assert seen == [torch.bfloat16] * 3 and default_seen == [torch.float32] * 3

        was_fast = is_fast_norm()
        set_fast_norm(True)
        try:
            fast = timm.create_model("vit_tiny_patch16_224", num_classes=10, depth=3).eval()
        finally:
            set_fast_norm(was_fast)
        fast.load_state_dict(ref.state_dict())
        fast.pos_drop.register_forward_hook(lambda m, a, out: out.to(torch.bfloat16))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_fast = fast(x)
    torch.testing.assert_close(y_ours, y_fast, atol=1e-5, rtol=0)  # the same ATen operations: equal here
    # bf16 rounding of the stream moves the logits by about as much as autocast itself does, not more.
    y32 = ref(x).detach()
    assert (y_ours.float() - y32).norm() < 2 * (y_default.float() - y32).norm()

"""vitlens.capture and token_layout on every timm ViT family, with random weights (offline): captured maps against
attention recomputed by hand from each block's input, logits unchanged, layouts, threads and clean exits."""
import threading

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import perturb_
from timm.layers import apply_rot_embed_cat

import vitlens

# name, constructor overrides (small and fast), expected prefix, pool
FAMILIES = [
    ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", {}, ("cls",), "token"),  # the paper's architecture
    ("deit_tiny_distilled_patch16_224", {}, ("cls", "dist"), "token"),
    ("deit3_small_patch16_224", {}, ("cls",), "token"),  # layer scale
    ("vit_small_patch16_224.dino", {}, ("cls",), "token"),
    ("vit_small_patch14_dinov2", dict(img_size=70), ("cls",), "token"),
    ("vit_small_patch14_reg4_dinov2", dict(img_size=70), ("cls", "reg0", "reg1", "reg2", "reg3"), "token"),
    ("vit_base_patch16_clip_224", dict(embed_dim=192, num_heads=3), ("cls",), "token"),  # pre-norm, quick GELU
    ("vit_base_patch16_siglip_224", dict(embed_dim=192, num_heads=3), (), "map"),  # attention-pool head
    ("vit_base_patch16_224.mae", dict(embed_dim=192, num_heads=3), ("cls",), "token"),
    ("eva02_tiny_patch14_224", {}, ("cls",), "avg"),  # RoPE, SwiGLU
    ("vit_base_patch16_rope_reg1_gap_256", dict(embed_dim=192, num_heads=3), ("reg0",), "avg"),
    ("beit_base_patch16_224", dict(embed_dim=192, num_heads=3), ("cls",), "avg"),  # relative position bias
]


def make(name: str, overrides: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(timm.create_model(name, pretrained=False, depth=2, **overrides), std=0.05).eval()


def hand_attention(model: torch.nn.Module, blk: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) from the block's input z, with the module's own projections, written out:
    q/k norms where the family has them, RoPE on the patch tokens (EVA), the relative position bias (BEiT)."""
    a = blk.attn
    h = blk.norm1(z)
    B, N, _ = h.shape
    if getattr(a, "qkv", None) is not None:
        bias = a.qkv.bias
        if getattr(a, "q_bias", None) is not None:  # BEiT/EVA keep q and v biases apart, k has none
            bias = torch.cat([a.q_bias, torch.zeros_like(a.q_bias), a.v_bias])
        q, k, _ = (h @ a.qkv.weight.T + (0 if bias is None else bias)).reshape(B, N, 3, a.num_heads, -1).unbind(2)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
    else:
        q, k = (proj(h).reshape(B, N, a.num_heads, -1).transpose(1, 2) for proj in (a.q_proj, a.k_proj))
    if hasattr(a, "q_norm"):  # BEiT has none
        q, k = a.q_norm(q), a.k_norm(k)
    if getattr(model, "rope", None) is not None:  # rotary embedding of the patch tokens only
        rope, npt = model.rope.get_embed(), model.num_prefix_tokens
        q, k = (torch.cat([t[:, :, :npt], apply_rot_embed_cat(t[:, :, npt:], rope)], dim=2) for t in (q, k))
    logits = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if getattr(a, "relative_position_bias_table", None) is not None:
        logits = logits + a._get_rel_pos_bias()
    return logits.softmax(dim=-1)


@pytest.mark.parametrize("name,overrides,prefix,pool", FAMILIES, ids=[f[0].split(".")[0] for f in FAMILIES])
def test_capture_equals_hand_attention_and_keeps_the_logits(name, overrides, prefix, pool):
    model = make(name, overrides)
    layout = vitlens.token_layout(model)
    assert layout.prefix == prefix and layout.pool == pool and layout.num_prefix_tokens == model.num_prefix_tokens
    x = torch.randn(2, 3, *model.patch_embed.img_size)
    inputs = []
    pre = [blk.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for blk in model.blocks]
    with torch.no_grad():
        plain = model(x)
        inputs.clear()
        with vitlens.capture(model, tokens=True) as rec:
            captured = model(x)
    for h in pre:
        h.remove()
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-5)
    for l, blk in enumerate(model.blocks):
        with torch.no_grad():
            want = hand_attention(model, blk, inputs[l])
        assert rec.attentions[l].shape == (2, blk.attn.num_heads, layout.num_tokens, layout.num_tokens)
        torch.testing.assert_close(rec.attentions[l], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rec.tokens[l], inputs[l + 1] if l + 1 < len(inputs) else rec.tokens[l])
    assert all("forward" not in vars(blk.attn) and blk.attn.fused_attn for blk in model.blocks)


def test_layout_follows_the_input_size_on_dynamic_and_non_square_grids():
    model = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, depth=1, img_size=70,
                              dynamic_img_size=True).eval()
    layout = vitlens.token_layout(model, img_size=(42, 98))
    assert layout.grid == (3, 7) and layout.patch_size == (14, 14) and layout.num_tokens == 5 + 21
    with torch.no_grad(), vitlens.capture(model) as rec:
        model(torch.randn(1, 3, 42, 98))
    assert rec.attentions[0].shape[-1] == layout.num_tokens
    vit = vitlens.create_model("vit_ti16", img_size=(32, 48), patch_size=8, depth=1, pool="gap")
    assert vitlens.token_layout(vit) == vitlens.TokenLayout((), (4, 6), (8, 8), "avg")
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        vitlens.token_layout(vit, img_size=(30, 48))


def test_unsupported_models_are_named():
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, depths=(1, 1, 1, 1))
    with pytest.raises(TypeError, match="SwinTransformer.*supported: vitlens VisionTransformer.*Swin"):
        with vitlens.capture(swin):
            pass
    with pytest.raises(TypeError, match="ResNet"):
        vitlens.token_layout(vitlens.create_cnn("resnet18"))


def test_two_threads_capture_one_shared_timm_model_and_leave_it_as_it_was():
    model = make("vit_small_patch14_reg4_dinov2", dict(img_size=70))
    barrier = threading.Barrier(2)
    results, errors = {}, []

    def run(layer: int, seed: int) -> None:
        try:
            x = torch.randn(1, 3, 70, 70, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad(), vitlens.capture(model, layers=[layer]) as rec:
                barrier.wait()
                model(x)
                barrier.wait()
            with torch.no_grad(), vitlens.capture(model, layers=[layer]) as ref:  # alone
                model(x)
            results[layer] = (rec, ref)
        except Exception as e:  # surfaced below: an assertion in a thread would be lost
            errors.append(e)

    threads = [threading.Thread(target=run, args=(layer, 10 + layer)) for layer in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for layer, (rec, ref) in results.items():
        assert rec.layers == [layer]
        torch.testing.assert_close(rec.attentions[0], ref.attentions[0])
    assert all("forward" not in vars(blk.attn) and blk.attn.fused_attn for blk in model.blocks)


def test_an_exception_inside_the_block_leaves_no_wrapper_and_fused_attention_after(monkeypatch):
    model = make("deit_tiny_distilled_patch16_224", {})
    with pytest.raises(RuntimeError, match="boom"):
        with vitlens.capture(model):
            raise RuntimeError("boom")
    assert all("forward" not in vars(blk.attn) for blk in model.blocks)
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
        assert len(calls) == 2  # both blocks fused
        with vitlens.capture(model, layers=[0]):
            model(torch.randn(1, 3, 224, 224))
        assert len(calls) == 3  # only the uncaptured block fused


def test_load_model_gives_every_family_with_its_preprocessing(monkeypatch):
    """`load_model("timm:<name>")` through timm's hub loading (replaced here by the same architectures' random
    weights: this machine is offline): the paper's ViT converts to vitlens's, every other family stays timm's, each
    with its data config, and capture and the layout work on what comes back."""
    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: create(name, pretrained=False,
                                                                                           depth=1, **kw))
    converted = set()
    for name, _, prefix, _ in FAMILIES:
        model = vitlens.load_model(f"timm:{name}")
        if isinstance(model, vitlens.VisionTransformer):
            converted.add(name)
        assert vitlens.token_layout(model).prefix == prefix
        c, h, w = model.data_config["input_size"]
        with torch.no_grad(), vitlens.capture(model) as rec:
            model(torch.randn(1, c, h, w))
        assert rec.attentions[0].shape[-1] == vitlens.token_layout(model).num_tokens
    # the paper's architecture (DINO and MAE trained it differently) becomes vitlens's model; the others stay timm's
    assert converted == {"vit_tiny_patch16_224.augreg_in21k_ft_in1k", "vit_small_patch16_224.dino",
                         "vit_base_patch16_224.mae"}

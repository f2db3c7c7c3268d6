"""vitlens.capture against attention recomputed by hand from each layer's own weights."""
import threading

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import perturb_

import vitlens
from vitlens.models import attention as attention_module


def tiny_vit(**kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_dim=64, num_classes=5)
    return perturb_(vitlens.create_model("vit_ti16", **{**cfg, **kw})).eval()


def hand_attention(qkv_weight, qkv_bias, ln_weight, ln_bias, z, num_heads):
    """softmax(q k^T / sqrt(d)) of LN(z), written out from the paper's MSA definition."""
    B, N, D = z.shape
    h = F.layer_norm(z, (D,), ln_weight, ln_bias, eps=1e-6)
    q, k, v = (h @ qkv_weight.T + qkv_bias).split(D, dim=-1)
    d = D // num_heads
    q, k = (t.reshape(B, N, num_heads, d).transpose(1, 2) for t in (q, k))
    return torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1)


def hand_embed(model, x):
    """z0 = [x_class; x_p E] + E_pos with E applied to unfolded P x P patches (no conv)."""
    P = model.patch_size
    patches = F.unfold(x, kernel_size=P, stride=P).transpose(1, 2)  # B x N x (C P P), row-major like the conv
    w = model.patch_embed.proj.weight.flatten(1)
    tokens = patches @ w.T + model.patch_embed.proj.bias
    if model.cls_token is not None:
        tokens = torch.cat([model.cls_token.expand(len(x), -1, -1), tokens], dim=1)
    return tokens + model.pos_embed


@pytest.mark.parametrize("pool", ["token", "gap"])
def test_captured_attention_equals_hand_computation(pool):
    model = tiny_vit(pool=pool)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), vitlens.capture(model, tokens=True) as rec:
        model(x)
    z = hand_embed(model, x).detach()
    for l, blk in enumerate(model.blocks):
        a = blk.attn
        want = hand_attention(a.qkv.weight, a.qkv.bias, blk.norm1.weight, blk.norm1.bias, z, a.num_heads)
        assert rec.attentions[l].shape == (2, 4, model.num_prefix_tokens + 16, model.num_prefix_tokens + 16)
        torch.testing.assert_close(rec.attentions[l], want.detach(), atol=1e-6, rtol=1e-5)
        z = rec.tokens[l]
    assert rec.layers == [0, 1, 2]


def test_capture_on_timm_converted_model_matches_timm_unfused_attention():
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    tm = perturb_(TimmViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5)).eval()
    seen = []
    for blk in tm.blocks:  # timm's own eager path: softmax, then attn_drop(attn)
        blk.attn.fused_attn = False
        blk.attn.attn_drop.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    model = vitlens.from_timm(tm).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want_logits = tm(x)
        with vitlens.capture(model) as rec:
            logits = model(x)
    for l, blk in enumerate(tm.blocks):
        torch.testing.assert_close(rec.attentions[l], seen[l], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(logits, want_logits, atol=1e-5, rtol=1e-5)


def test_capture_on_hybrid():
    model = perturb_(vitlens.create_model("r50_vit_b16", img_size=32, backbone_layers=(1,), embed_dim=32, depth=2,
                                          num_heads=4, mlp_dim=64, num_classes=5)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), vitlens.capture(model, layers=[0]) as rec:
        model(x)
        z = torch.cat([model.cls_token.expand(2, -1, -1), model.patch_embed(x)], dim=1) + model.pos_embed
    blk = model.blocks[0]
    want = hand_attention(blk.attn.qkv.weight, blk.attn.qkv.bias, blk.norm1.weight, blk.norm1.bias, z, 4)
    torch.testing.assert_close(rec.attentions[0], want, atol=1e-6, rtol=1e-5)
    assert rec.attentions[0].shape[-1] == 1 + model.grid_size[0] * model.grid_size[1]


def test_fused_and_captured_logits_equal():
    model = tiny_vit()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        fused = model(x)
        with vitlens.capture(model, tokens=True):
            captured = model(x)
    torch.testing.assert_close(captured, fused, atol=1e-5, rtol=1e-5)


def test_only_requested_layers_materialise(monkeypatch):
    model = tiny_vit()
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        with vitlens.capture(model, layers=[-1]) as rec:
            model(x)
        assert rec.layers == [2] and len(rec.attentions) == 1 and len(calls) == 2
        calls.clear()
        model(x)  # outside the context every layer is fused again
        assert len(calls) == 3


def test_two_threads_do_not_mix():
    model = tiny_vit()
    barrier = threading.Barrier(2, timeout=60)  # one thread failing fails the test, not hangs it
    results = {}

    def run(layer, seed):
        x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad(), vitlens.capture(model, layers=[layer]) as rec:
            barrier.wait()
            model(x)
            barrier.wait()
        with torch.no_grad(), vitlens.capture(model, layers=[layer]) as ref:
            model(x)
        results[layer] = (rec, ref)

    threads = [threading.Thread(target=run, args=(layer, layer)) for layer in (0, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for layer, (rec, ref) in results.items():
        assert rec.layers == [layer]
        torch.testing.assert_close(rec.attentions[0], ref.attentions[0])


def test_grad_capture_gives_attention_gradients():
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    with vitlens.capture(model, grad=True) as rec:
        logits = model(x)
    logits[:, 1].sum().backward()
    grads = rec.attention_grads
    assert len(grads) == 3 and all(g is not None and g.shape == a.shape for g, a in zip(grads, rec.attentions))
    want = torch.autograd.grad(model(x)[:, 1].sum(), model.blocks[0].attn.qkv.weight)[0]
    assert model.blocks[0].attn.qkv.weight.grad is not None
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight.grad, want, atol=1e-6, rtol=1e-5)

"""Google's official .npz format, written by the test from random weights, read by timm and by vitlens."""
import numpy as np
import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT
from timm.models.vision_transformer import _load_weights

import vitlens

rng = np.random.default_rng(0)


def _r(*shape):
    return rng.normal(0, 0.05, shape).astype(np.float32)


def official_vit_arrays(D=64, H=4, M=128, depth=2, P=16, C=3, K=5, grid=4, cls=True, backbone_out=None,
                        big_vision=False):
    """Key names and layouts of google-research/vision_transformer (Flax: HWIO convs, (in, out) dense),
    or of big_vision (pos_embedding at the root, MultiHeadDotProductAttention_0, MlpBlock_0, LayerNorm_1)."""
    mha, mlp, ln2 = ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1") if big_vision else (
        "MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2")
    w = {"embedding/kernel": _r(1, 1, backbone_out, D) if backbone_out else _r(P, P, C, D),
         "embedding/bias": _r(D),
         "pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding": _r(1, grid * grid + cls, D),
         "Transformer/encoder_norm/scale": 1 + _r(D), "Transformer/encoder_norm/bias": _r(D),
         "head/kernel": _r(D, K), "head/bias": _r(K)}
    if cls:
        w["cls"] = _r(1, 1, D)
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", ln2):
            w[f"{b}{ln}/scale"], w[f"{b}{ln}/bias"] = 1 + _r(D), _r(D)
        for n in ("query", "key", "value"):
            w[f"{b}{mha}/{n}/kernel"] = _r(D, H, D // H)
            w[f"{b}{mha}/{n}/bias"] = _r(H, D // H)
        w[f"{b}{mha}/out/kernel"] = _r(H, D // H, D)
        w[f"{b}{mha}/out/bias"] = _r(D)
        w[f"{b}{mlp}/Dense_0/kernel"], w[f"{b}{mlp}/Dense_0/bias"] = _r(D, M), _r(M)
        w[f"{b}{mlp}/Dense_1/kernel"], w[f"{b}{mlp}/Dense_1/bias"] = _r(M, D), _r(D)
    return w


def official_bit_arrays(backbone):
    """BiT ResNet keys (conv_root, gn_root, block{s}/unit{u}/conv{r}, gn{r}, conv_proj, gn_proj)."""
    def conv(m):
        return _r(*m.weight.shape[2:], m.weight.shape[1], m.weight.shape[0])  # OIHW -> HWIO

    def gn(prefix, m):
        return {f"{prefix}/scale": 1 + _r(m.num_channels), f"{prefix}/bias": _r(m.num_channels)}

    w = {"conv_root/kernel": conv(backbone.stem.conv), **gn("gn_root", backbone.stem.norm)}
    for s, stage in enumerate(backbone.stages):
        for u, block in enumerate(stage.blocks):
            p = f"block{s + 1}/unit{u + 1}/"
            for r in (1, 2, 3):
                w[f"{p}conv{r}/kernel"] = conv(getattr(block, f"conv{r}"))
                w.update(gn(f"{p}gn{r}", getattr(block, f"norm{r}")))
            if block.downsample is not None:
                w[f"{p}conv_proj/kernel"] = conv(block.downsample.conv)
                w.update(gn(f"{p}gn_proj", block.downsample.norm))
    return w


@pytest.mark.parametrize("prefix", ["", "opt/target/", "params/"])
def test_npz_vit_matches_timm_loader(tmp_path, prefix):
    path = tmp_path / "ViT-tiny.npz"
    arrays = official_vit_arrays(big_vision=prefix == "params/")
    np.savez(path, **{prefix + k: v for k, v in arrays.items()})
    ref = TimmViT(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2, num_classes=5).eval()
    _load_weights(ref, str(path))
    ours = vitlens.load_model(path)
    assert ours.config["num_heads"] == 4 and ours.img_size == (64, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=0)


def test_npz_gap_model_has_no_class_token(tmp_path):
    path = tmp_path / "gap.npz"
    np.savez(path, **official_vit_arrays(cls=False))
    ref = TimmViT(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2, num_classes=5,
                  class_token=False, global_pool="avg", fc_norm=False).eval()
    _load_weights(ref, str(path))
    ours = vitlens.load_model(path)
    assert ours.pool == "gap" and ours.cls_token is None
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=0)


def test_npz_r50_hybrid_matches_timm_loader(tmp_path):
    ref = timm.create_model("vit_base_r50_s16_224", embed_dim=64, depth=2, num_heads=4, mlp_ratio=2,
                            num_classes=5).eval()
    arrays = {**official_vit_arrays(grid=14, backbone_out=1024), **official_bit_arrays(ref.patch_embed.backbone)}
    path = tmp_path / "R50+ViT.npz"
    np.savez(path, **arrays)
    _load_weights(ref, str(path))
    ours = vitlens.load_model(path)
    assert ours.is_hybrid and ours.config["backbone_layers"] == (3, 4, 9)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=0)


def test_npz_with_img_size_resizes_and_num_classes_resets(tmp_path, caplog):
    path = tmp_path / "ViT.npz"
    np.savez(path, **official_vit_arrays())
    with caplog.at_level("INFO", logger="vitlens"):
        model = vitlens.load_model(path, img_size=96, num_classes=3)
    assert model.grid_size == (6, 6) and model.num_classes == 3
    assert torch.count_nonzero(model.head.weight) == 0
    assert "resized" in caplog.text and "zero-initialised" in caplog.text

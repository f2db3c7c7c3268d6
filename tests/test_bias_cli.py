"""``vitlens analyze bias probes`` end to end on two tiny saved models (a ViT and a CNN), HTML and JSON only; the
ViT's numbers against timm's ViT loaded with the saved weights."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import perturb_, timm_vit

import vitlens
from vitlens.data import read_idx
from vitlens.data.fashion_mnist import locate
from vitlens.cli import main
from vitlens.models.cnn import create_cnn
from vitlens.models.loading import save_model


def test_bias_probes_command_writes_figures_and_numbers(tmp_path):
    vit = vitlens.VisionTransformer(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=2,
                                    num_heads=2, mlp_dim=32)
    cnn = create_cnn("resnet18", in_chans=1, num_classes=10, img_size=28, small_input=True, channels=[4, 4, 4, 4])
    save_model(perturb_(vit, std=0.3), tmp_path / "vit.safetensors")  # a trained-looking head and peaked attention
    save_model(cnn, tmp_path / "cnn.safetensors")
    out = tmp_path / "out"
    assert main(["analyze", "bias", "probes", "--model", str(tmp_path / "vit.safetensors"), "--model",
                 str(tmp_path / "cnn.safetensors"), "--data", "fashion_mnist:test:8", "--shifts", "0", "2", "4",
                 "--translation-images", "4", "--erf-images", "2", "--out", str(out), "--no-png"]) == 0
    assert {p.name for p in out.glob("*.html")} == {"translation.html", "occlusion.html", "erf.html", "erf_maps.html"}
    numbers = json.loads((out / "translation.json").read_text())
    assert set(numbers["translation"]) == {"vit", "cnn"}
    assert numbers["occlusion"]["vit"]["patch_size"] == numbers["occlusion"]["cnn"]["patch_size"] == 4
    assert numbers["translation"]["vit"]["whole_patch"] == [True, False, True]
    assert len(numbers["attention_distance"]["vit"]) == 2 and "cnn" not in numbers["attention_distance"]
    assert len(numbers["erf"]["cnn"]["radius"]["0.9"]) == len(numbers["erf"]["cnn"]["layers"])
    check_vit_numbers_against_timm(numbers, tmp_path / "vit.safetensors")


def check_vit_numbers_against_timm(numbers, weights):
    """Clean accuracy (no patch dropped, one shuffle piece) and the mean attention distance over the 2 ERF images,
    per layer averaged over heads: timm's ViT with the same weights on the raw IDX pixels, and a math.hypot loop."""
    model, maps = timm_vit(weights, img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=2,
                           num_heads=2, mlp_ratio=2.0)
    x = (torch.from_numpy(np.array(read_idx(locate("test")[0])[:8])).float()[:, None] / 255 - 0.5) / 0.5
    labels = torch.from_numpy(read_idx(locate("test")[1])[:8].astype(np.int64))
    with torch.no_grad():
        clean = (model(x).argmax(-1) == labels).double().mean().item()
    occlusion = numbers["occlusion"]["vit"]
    assert occlusion["drop"]["accuracy"][occlusion["drop"]["fraction"].index(0.0)] == clean
    assert occlusion["shuffle"]["accuracy"][occlusion["shuffle"]["grid"].index(1)] == clean
    for layer, a in enumerate(maps):
        p = a[:2, :, 1:, 1:] / a[:2, :, 1:, 1:].sum(-1, keepdim=True)
        want = sum(p[b, h, i, j].item() * 4 * math.hypot(i // 7 - j // 7, i % 7 - j % 7)
                   for b in range(2) for h in range(2) for i in range(49) for j in range(49)) / (2 * 2 * 49)
        assert numbers["attention_distance"]["vit"][layer] == pytest.approx(want, rel=1e-5)


def test_bias_probes_on_the_papers_checkpoints_as_documented(tmp_path, monkeypatch):
    """The README's command for the paper's ViT-B/16 and BiT ResNet-50x1, through timm's hub loading, with timm's
    download replaced by the same architectures' random weights (this machine is offline)."""
    import timm

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: create(name, pretrained=False, **kw))
    out = tmp_path / "out"
    assert main(["analyze", "bias", "probes", "--model", "timm:vit_base_patch16_224.orig_in21k_ft_in1k",
                 "--model", "timm:resnetv2_50x1_bit.goog_in21k_ft_in1k", "--data", "fashion_mnist:test:1",
                 "--shifts", "0", "16", "--translation-images", "1", "--erf-images", "1", "--batch-size", "1",
                 "--out", str(out), "--no-png"]) == 0
    numbers = json.loads((out / "translation.json").read_text())
    vit, bit = "vit_base_patch16_224.orig_in21k_ft_in1k", "resnetv2_50x1_bit.goog_in21k_ft_in1k"
    assert numbers["translation"][vit]["stride"] == 16 and numbers["translation"][bit]["stride"] == 32
    assert numbers["occlusion"][bit]["patch_size"] == 16  # PatchDrop squares of the ViT's patch size for both
    assert len(numbers["erf"][vit]["layers"]) == 12
    assert numbers["erf"][bit]["layers"] == ["stem.conv"] + [f"stages.{i}" for i in range(4)]
    assert len(numbers["attention_distance"][vit]) == 12

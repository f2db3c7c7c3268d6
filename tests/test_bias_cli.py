"""``vitlens analyze bias probes`` end to end on two tiny saved models (a ViT and a CNN), HTML and JSON only."""
import json

import vitlens
from vitlens.cli import main
from vitlens.models.cnn import create_cnn
from vitlens.models.loading import save_model


def test_bias_probes_command_writes_figures_and_numbers(tmp_path):
    vit = vitlens.VisionTransformer(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=2,
                                    num_heads=2, mlp_dim=32)
    cnn = create_cnn("resnet18", in_chans=1, num_classes=10, img_size=28, small_input=True, channels=[4, 4, 4, 4])
    save_model(vit, tmp_path / "vit.safetensors")
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


def test_bias_probes_on_the_papers_checkpoints_as_documented(tmp_path, monkeypatch):
    """The README's command for the paper's ViT-B/16 and BiT ResNet-50x1, through timm's hub loading, with timm's
    download replaced by the same architectures' random weights (this machine is offline)."""
    import timm

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: create(name, pretrained=False, **kw))
    out = tmp_path / "out"
    assert main(["analyze", "bias", "probes", "--model", "timm:vit_base_patch16_224.orig_in21k_ft_in1k",
                 "--model", "timm:resnetv2_50x1_bit.goog_in21k_ft_in1k", "--data", "fashion_mnist:test:2",
                 "--shifts", "0", "16", "--translation-images", "1", "--erf-images", "1", "--batch-size", "2",
                 "--out", str(out), "--no-png"]) == 0
    numbers = json.loads((out / "translation.json").read_text())
    vit, bit = "vit_base_patch16_224.orig_in21k_ft_in1k", "resnetv2_50x1_bit.goog_in21k_ft_in1k"
    assert numbers["translation"][vit]["stride"] == 16 and numbers["translation"][bit]["stride"] == 32
    assert numbers["occlusion"][bit]["patch_size"] == 16  # PatchDrop squares of the ViT's patch size for both
    assert len(numbers["erf"][vit]["layers"]) == 12
    assert numbers["erf"][bit]["layers"] == ["stem.conv"] + [f"stages.{i}" for i in range(4)]
    assert len(numbers["attention_distance"][vit]) == 12

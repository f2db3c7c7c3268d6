"""load_model on every source kind, checked against timm models holding the same random weights."""
import timm
import torch
from safetensors.torch import save_file

import vitlens
from conftest import perturb_


def _timm_tiny(**kw):
    return perturb_(timm.create_model("vit_tiny_patch16_224", depth=2, **kw)).eval()


def _same_logits(a, b, size=224):
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=1e-4, rtol=0)


def test_bare_timm_state_dicts_in_every_format(tmp_path):
    ref = _timm_tiny(num_classes=10)
    sd = ref.state_dict()
    save_file(sd, tmp_path / "w.safetensors")
    torch.save(sd, tmp_path / "w.pth")
    torch.save(sd, tmp_path / "pytorch_model.bin")
    # a training checkpoint, saved from a DDP-wrapped model
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, tmp_path / "ckpt.pt")
    for name in ("w.safetensors", "w.pth", "pytorch_model.bin", "ckpt.pt"):
        model = vitlens.load_model(tmp_path / name)
        assert model.config["num_heads"] == 3 and model.config["depth"] == 2, name
        _same_logits(model, ref)


def test_save_model_round_trip_keeps_architecture_and_data_config(tmp_path):
    model = perturb_(vitlens.create_model("vit_ti16", depth=2, img_size=96, num_heads=4, embed_dim=128,
                                          mlp_dim=256, in_chans=1, num_classes=10, pool="gap")).eval()
    model.data_config["mean"] = (0.2860,)
    path = vitlens.save_model(model, tmp_path / "m.safetensors")
    loaded = vitlens.load_model(path)
    assert loaded.config == model.config and loaded.data_config == model.data_config
    x = torch.randn(2, 1, 96, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_run_directory_prefers_final_weights_then_newest_checkpoint(tmp_path):
    a = perturb_(vitlens.create_model("vit_ti16", depth=1, img_size=32, num_classes=2))
    b = perturb_(vitlens.create_model("vit_ti16", depth=1, img_size=32, num_classes=2))
    vitlens.save_model(a, tmp_path / "checkpoints" / "step_00000010" / "model.safetensors")
    vitlens.save_model(b, tmp_path / "checkpoints" / "step_00000020" / "model.safetensors")
    assert torch.equal(vitlens.load_model(tmp_path).pos_embed, b.pos_embed)
    vitlens.save_model(a, tmp_path / "model.safetensors")
    assert torch.equal(vitlens.load_model(tmp_path).pos_embed, a.pos_embed)


def test_cnn_round_trip(tmp_path):
    cnn = perturb_(vitlens.create_cnn("resnet18", in_chans=1, num_classes=10, img_size=28, small_input=True,
                                      channels=(8, 16, 32, 64))).eval()
    loaded = vitlens.load_model(vitlens.save_model(cnn, tmp_path / "cnn.safetensors"))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), cnn(x))
    assert loaded.data_config["input_size"] == (1, 28, 28)


def test_timm_source_converts_through_timm_hub_loading(monkeypatch):
    """The online path, with timm's own create_model(pretrained=True) replaced by random weights."""
    ref = _timm_tiny(num_classes=1000)
    calls = []

    def fake_create_model(name, pretrained=False, **kw):
        calls.append((name, pretrained))
        return ref

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    model = vitlens.load_model("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    assert calls == [("vit_tiny_patch16_224.augreg_in21k_ft_in1k", True)]
    _same_logits(model, ref)
    assert model.data_config == {k: tuple(v) if isinstance(v, list) else v
                                 for k, v in timm.data.resolve_model_data_config(ref).items()}


def test_timm_cnn_source_stays_a_timm_model(monkeypatch):
    ref = timm.create_model("resnet18", num_classes=10)
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: ref)
    model = vitlens.load_model("timm:resnet18.a1_in1k")
    assert model is ref and model.data_config["input_size"] == (3, 224, 224)

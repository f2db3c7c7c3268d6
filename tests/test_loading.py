"""load_model on every source kind, checked against timm models holding the same random weights."""
import pytest
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


def test_timm_source_takes_runtime_overrides(monkeypatch):
    """`finetune model.source=timm:... model.dropout=0.1` reaches the model (it used to be dropped silently)."""
    ref = _timm_tiny(num_classes=1000)
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: ref)
    model = vitlens.load_model("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k", dropout=0.1, drop_path=0.2,
                               low_precision_residual=True)
    assert model.config["dropout"] == 0.1 and model.blocks[0].mlp.drop1.p == 0.1
    assert model.config["drop_path"] == 0.2 and model.low_precision_residual
    _same_logits(model, ref)  # eval mode: dropout and stochastic depth off, float32: the same logits
    # An architecture field would load (the shapes fit) into a different, wrong model: refused.
    with pytest.raises(ValueError, match=r"\['num_heads'\] cannot be set.*Settable: dropout"):
        vitlens.load_model("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k", num_heads=4)


def test_timm_cnn_source_stays_a_timm_model(monkeypatch):
    ref = timm.create_model("resnet18", num_classes=10)
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: ref)
    model = vitlens.load_model("timm:resnet18.a1_in1k")
    assert model is ref and model.data_config["input_size"] == (3, 224, 224)
    with pytest.raises(ValueError, match=r"stays a timm model.*\['dropout'\].*drop them"):
        vitlens.load_model("timm:resnet18.a1_in1k", dropout=0.1)


@pytest.mark.parametrize("has_safetensors", [True, False])
def test_fetch_timm_weights_reports_bytes_and_picks_timms_file(monkeypatch, tmp_path, has_safetensors):
    """The app's download progress: the file timm's pretrained=True reads, bytes through the caller's tqdm class."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError
    from tqdm import tqdm

    asked = []

    def fake_download(repo_id, filename, revision=None, tqdm_class=None):
        asked.append((repo_id, filename))
        if filename == "model.safetensors" and not has_safetensors:
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        with tqdm_class(total=3 * 2**20, unit="B") as bar:
            for _ in range(3):
                bar.update(2**20)
        (tmp_path / filename).write_bytes(b"weights")
        return str(tmp_path / filename)

    seen = []

    class Recording(tqdm):
        def update(self, n=1):
            super().update(n)
            seen.append(self.n)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    path = vitlens.fetch_timm_weights("vit_base_patch16_224.orig_in21k_ft_in1k", tqdm_class=Recording)
    repo = timm.models.get_pretrained_cfg("vit_base_patch16_224.orig_in21k_ft_in1k").hf_hub_id
    want = ["model.safetensors"] + ([] if has_safetensors else ["pytorch_model.bin"])
    assert asked == [(repo, f) for f in want]
    assert path == tmp_path / want[-1] and seen == [2**20, 2 * 2**20, 3 * 2**20]


def test_fetch_timm_weights_offline_and_unknown_names():
    with pytest.raises(ValueError, match="timm has no model 'vit_no_such_model'"):
        vitlens.fetch_timm_weights("vit_no_such_model")
    with pytest.raises(ConnectionError, match="could not download the timm weights.*Offline sources"):
        vitlens.fetch_timm_weights("vit_tiny_patch16_224.augreg_in21k_ft_in1k")

"""Every bad input of the foundation issue gets a message naming what was wrong and what to do."""
import os
import pickle

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import vitlens


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'vit_b17'.*vit_b16.*r50_vit_b16"):
        vitlens.create_model("vit_b17")
    with pytest.raises(ValueError, match="unknown model field.*'hidden_size'"):
        vitlens.create_model("vit_b16", hidden_size=10)


def test_mismatching_checkpoint_names_keys_and_both_shapes(tmp_path):
    sd = vitlens.create_model("vit_ti16", depth=2, num_classes=10).state_dict()
    model = vitlens.create_model("vit_ti16", depth=2, num_classes=5)
    with pytest.raises(vitlens.CheckpointError, match=r"head.weight \(checkpoint \(10, 192\), model \(5, 192\)\)"):
        vitlens.load_weights(model, sd, "ckpt.pth")
    del sd["norm.bias"]
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(vitlens.CheckpointError, match="missing in checkpoint: norm.bias.*not in model: extra.weight"):
        vitlens.load_weights(model, sd, "ckpt.pth")
    # num_heads cannot be read off shapes; a wrong override shows as a clear error, not a silent wrong model
    save_file(vitlens.create_model("vit_ti16", depth=1).state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="not divisible by num_heads 5"):
        vitlens.load_model(tmp_path / "w.safetensors", num_heads=5)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_needs_code_execution_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"model": {"w": torch.zeros(1)}, "hook": _Payload()}, f)
    with pytest.raises(vitlens.CheckpointError, match=r"refused to load .*evil.pth.*code execution.*weights_only"):
        vitlens.load_model(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".npz"])
def test_truncated_files_are_named(tmp_path, suffix):
    sd = vitlens.create_model("vit_ti16", depth=1).state_dict()
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(sd, path)
    elif suffix == ".pth":
        torch.save(sd, path)
    else:
        np.savez(path, **{"embedding/kernel": np.zeros((16, 16, 3, 8), np.float32)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(vitlens.CheckpointError, match=f"model{suffix}.*(truncated or corrupt)"):
        vitlens.load_model(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth does not exist"):
        vitlens.load_model(tmp_path / "nope.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(vitlens.CheckpointError, match="unknown checkpoint type '.onnx'"):
        vitlens.load_model(tmp_path / "w.onnx")
    with pytest.raises(ValueError, match="unknown demo model 'nope'"):
        vitlens.load_model("demo:nope")


def test_image_size_not_a_multiple_of_the_patch_size():
    with pytest.raises(ValueError, match=r"image size \(100, 100\) is not a multiple of the patch size 16.*\(96, 96\)"):
        vitlens.create_model("vit_ti16", img_size=100)
    model = vitlens.create_model("vit_ti16", depth=1, dynamic_img_size=True)
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        model(torch.randn(1, 3, 100, 100))
    with pytest.raises(ValueError, match="differs from the model's.*set_img_size"):
        vitlens.create_model("vit_ti16", depth=1)(torch.randn(1, 3, 192, 192))


def test_wrong_channel_count():
    model = vitlens.create_model("vit_ti16", depth=1)
    with pytest.raises(ValueError, match=r"expected images of shape B x 3 x H x W, got \(2, 1, 224, 224\)"):
        model(torch.randn(2, 1, 224, 224))


def test_timm_offline_message_names_the_offline_sources(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def offline(name, pretrained=False, **kw):  # what timm's hub download raises with no network
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ConnectionError, match="offline.*Offline sources: the bundled models.*npz.*run directory"):
        vitlens.load_model("timm:vit_base_patch16_224.orig_in21k_ft_in1k")


def test_timm_really_offline_fails_with_the_message():
    """No monkeypatching: timm's own hub loading on this offline machine, answered at once."""
    with pytest.raises(ConnectionError, match="could not download the timm weights for 'vit_tiny_patch16_224'"):
        vitlens.load_model("timm:vit_tiny_patch16_224")


def test_unknown_timm_name():
    with pytest.raises(ValueError, match="timm has no model 'vit_nonexistent'"):
        vitlens.load_model("timm:vit_nonexistent")

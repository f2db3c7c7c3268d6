"""README claims that no other test covered: `vitlens info`, the Table-1 configurations, `set_img_size(...,
mode="jax")` through the model, and the flags `vitlens app` hands to Streamlit."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import timm
import torch
from safetensors import safe_open

import vitlens
from vitlens.cli import main
from vitlens.models.loading import WEIGHTS_DIR


def test_info_prints_the_architecture_and_preprocessing_of_a_model():
    out = subprocess.run([sys.executable, "-m", "vitlens.cli", "info", "demo:vit-fashion"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with safe_open(str(WEIGHTS_DIR / "vit-fashion.safetensors"), "pt") as f:  # counted from the file itself
        params = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    lines = out.stdout.splitlines()
    assert lines[0] == f"demo:vit-fashion: VisionTransformer, {params / 1e6:.2f} M parameters"
    for field in ("patch_size: 4", "embed_dim: 96", "depth: 6", "num_heads: 3", "img_size: (28, 28)"):
        assert f"  {field}" in lines, field
    assert any(line.startswith("  data_config: ") and "'input_size': (1, 28, 28)" in line for line in lines)


@pytest.mark.parametrize("ours,theirs", [("vit_b32", "vit_base_patch32_224"), ("vit_l16", "vit_large_patch16_224"),
                                         ("vit_l32", "vit_large_patch32_224"), ("vit_h14", "vit_huge_patch14_224")])
def test_table1_configs_have_timms_parameter_names_and_shapes(ours, theirs):
    """Built on the meta device (no memory): every parameter and buffer name and shape equals timm's model of the
    same name, so its checkpoints load."""
    with torch.device("meta"):
        model, ref = vitlens.create_model(ours), timm.create_model(theirs, pretrained=False, num_classes=1000)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items()}


def test_set_img_size_jax_mode_moves_the_model_as_the_official_code():
    """A 4 x 5 grid moved to 6 x 8 (48 x 64 px) with mode="jax": the model runs at the new size, and E_pos is the
    old grid zoomed by scipy.ndimage.zoom(order=1), the class slot unchanged (vit_jax/checkpoint.py)."""
    model = vitlens.create_model("vit_ti16", img_size=(32, 40), patch_size=8, embed_dim=16, depth=1, num_heads=2,
                                 mlp_dim=32, num_classes=3).eval()
    with torch.no_grad():
        model.pos_embed.normal_()
    old = model.pos_embed.detach().double().numpy()[0]
    model.set_img_size((48, 64), mode="jax")
    assert model(torch.randn(2, 3, 48, 64)).shape == (2, 3)
    zoomed = scipy.ndimage.zoom(old[1:].reshape(4, 5, 16), (6 / 4, 8 / 5, 1), order=1).reshape(48, 16)
    np.testing.assert_allclose(model.pos_embed.detach()[0].numpy(), np.concatenate([old[:1], zoomed]), atol=1e-5)
    with pytest.raises(ValueError, match="differs from the model's"):
        model(torch.randn(1, 3, 32, 40))


def test_app_flags_reach_streamlit(tmp_path, monkeypatch):
    """`vitlens app --model --runs-dir --max-upload-mb ...` becomes `streamlit run app/main.py` with those options,
    each one Streamlit knows, and the variables the app reads; a variable left in the environment never opens local
    paths."""
    from streamlit import config as streamlit_config

    from vitlens.cli import app as app_cli

    calls = []
    monkeypatch.setattr(app_cli.os, "execve", lambda exe, cmd, env: calls.append((exe, cmd, env)))
    monkeypatch.setenv("VITLENS_APP_ALLOW_LOCAL_PATHS", "1")
    monkeypatch.chdir(tmp_path)
    main(["app", "--model", "demo:vit-fashion-ft", "--runs-dir", "runs", "--max-upload-mb", "7", "--port", "8612",
          "--headless"])
    ((exe, cmd, env),) = calls
    assert exe == sys.executable and cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(cmd[4]) == Path(vitlens.__file__).resolve().parents[1] / "app" / "main.py"
    options = dict(zip(cmd[5::2], cmd[6::2]))
    assert options["--server.maxUploadSize"] == "7" and options["--server.port"] == "8612"
    assert options["--server.address"] == "127.0.0.1" and options["--server.headless"] == "true"
    known = streamlit_config.get_config_options()  # Streamlit's own table: a misspelt option would be refused there
    assert all(name.removeprefix("--") in known for name in options)
    assert env["VITLENS_APP_MODEL"] == "demo:vit-fashion-ft" and env["VITLENS_APP_MAX_UPLOAD_MB"] == "7"
    assert env["VITLENS_APP_RUNS_DIR"] == str(tmp_path.resolve() / "runs")
    assert "VITLENS_APP_ALLOW_LOCAL_PATHS" not in env

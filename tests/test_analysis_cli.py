"""`vitlens analyze ...` end to end on a tiny saved model: files written, numbers equal an independent computation
(timm's ViT with the saved weights, its attention recorded by a hook, and numpy / math loops from the definitions)."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import perturb_, timm_vit
from PIL import Image
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed

import vitlens
import vitlens.images
from vitlens.cli import main
from vitlens.cli.common import parse_spec
from vitlens.data import read_idx
from vitlens.data.fashion_mnist import locate


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    vit = perturb_(vitlens.create_model("vit_ti16", img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=2,
                                        num_heads=2, mlp_dim=32, num_classes=10), std=0.3)  # peaked, asymmetric maps
    vitlens.save_model(vit, d / "vit.safetensors")
    cnn = vitlens.create_cnn("resnet18", in_chans=1, num_classes=10, img_size=28, small_input=True)
    vitlens.save_model(cnn, d / "cnn.safetensors")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):  # an ImageFolder dataset: 2 classes x 6 RGB images of odd sizes
        for c in ("a", "b"):
            (d / "imgs" / split / c).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(d / "imgs" / split / c / f"{i}.png")
    return d


def run(*argv):
    assert main([str(a) for a in argv]) == 0


def timm_attentions(weights, x):
    """Every block's attention in timm's ViT with the saved weights: L arrays of B x H x N x N."""
    model, maps = timm_vit(weights, img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=2,
                           num_heads=2, mlp_ratio=1.0)
    with torch.no_grad():
        model(x)
    return [m.numpy() for m in maps]


def test_rollout_cli_writes_html_png_json_and_matches_an_independent_rollout(saved, tmp_path):
    photo = saved / "imgs" / "test" / "a" / "0.png"
    run("analyze", "rollout", "--model", saved / "vit.safetensors", "--image", photo, "--out", tmp_path)
    for suffix in ("html", "png", "json"):
        assert (tmp_path / f"rollout.{suffix}").stat().st_size > 0
    numbers = json.loads((tmp_path / "rollout.json").read_text())
    model = vitlens.load_model(saved / "vit.safetensors")
    # the app's preprocessing: the CLI must explain the same pixels the app does
    x = vitlens.images.preprocess(vitlens.images.open_image(photo), model.data_config)
    joint = np.eye(17)
    for a in timm_attentions(saved / "vit.safetensors", x):  # Abnar & Zuidema: (mean_h A + I), rows to 1, J = A J
        fused = a[0].mean(axis=0) + np.eye(17)
        joint = fused / fused.sum(axis=1, keepdims=True) @ joint
    want = joint[0, 1:].reshape(4, 4)  # the class token's row, patches row-major
    np.testing.assert_allclose(numbers["maps"]["rollout"][0], want, rtol=1e-4, atol=1e-7)
    assert want.max() / want.min() > 1.05  # a map with structure, not a uniform one
    assert numbers["model"].endswith("vit.safetensors")


def test_distance_cli_equals_a_math_hypot_loop_over_timms_attention(saved, tmp_path):
    """Six Fashion-MNIST test images, normalised here from the raw IDX bytes; per layer and head the mean over
    images and patch queries of sum_j A_ij * 7 px * hypot(dr, dc), class column dropped, rows renormalised."""
    run("analyze", "distance", "--model", saved / "vit.safetensors", "--data", "fashion_mnist:test:6",
        "--batch-size", "4", "--out", tmp_path, "--no-png")
    numbers = json.loads((tmp_path / "attention_distance.json").read_text())
    images = np.array(read_idx(locate("test")[0])[:6])
    x = (torch.from_numpy(images).float()[:, None] / 255 - 0.5) / 0.5  # the saved model's mean and std
    want = np.zeros((2, 2))
    for layer, a in enumerate(timm_attentions(saved / "vit.safetensors", x)):
        p = a[:, :, 1:, 1:] / a[:, :, 1:, 1:].sum(-1, keepdims=True)
        for b in range(6):
            for h in range(2):
                want[layer, h] += sum(p[b, h, i, j] * 7 * math.hypot(i // 4 - j // 4, i % 4 - j % 4)
                                      for i in range(16) for j in range(16)) / 16 / 6
    np.testing.assert_allclose(numbers["mean"], want, rtol=1e-5)
    assert numbers["count"] == 6


def cosine_tiles(table, g):
    """Tile [r, c] of the paper's grid of grids: patch (r, c)'s cosine similarity with every patch."""
    return np.array([[[[torch.nn.functional.cosine_similarity(table[r * g + c], table[r2 * g + c2], dim=0).item()
                        for c2 in range(g)] for r2 in range(g)] for c in range(g)] for r in range(g)])


def test_posembed_cli_equals_a_cosine_loop_over_the_saved_table(saved, tmp_path):
    """The table read from the file, its class slot dropped; at 56 px resized by timm's resample_abs_pos_embed."""
    run("analyze", "posembed", "--model", saved / "vit.safetensors", "--img-size", "56", "--out", tmp_path,
        "--no-png")
    numbers = json.loads((tmp_path / "posembed.json").read_text())
    table = load_file(str(saved / "vit.safetensors"))["pos_embed"]
    np.testing.assert_allclose(numbers["posembed"], cosine_tiles(table[0, 1:], 4), atol=1e-6)
    resized = resample_abs_pos_embed(table, [8, 8], [4, 4], num_prefix_tokens=1)
    np.testing.assert_allclose(numbers["posembed_56"], cosine_tiles(resized[0, 1:], 8), atol=1e-5)


@pytest.mark.parametrize("argv,name", [
    (["heads", "--image", "astronaut", "--threshold", "0.6"], "heads_astronaut"),
    (["distance", "--data", "folder:test", "--batch-size", "5"], "attention_distance"),
    (["norms", "--data", "folder:test", "--batch-size", "5"], "norms"),
    (["filters"], "filters"),
    (["cka", "--data", "folder:test", "--against", "{cnn}", "--batch-size", "6"], "cka"),
    (["probe", "--data", "folder", "--shots", "1", "5", "--seeds", "2"], "probe"),
])
def test_each_analysis_runs(saved, tmp_path, argv, name):
    argv = [a.replace("{cnn}", str(saved / "cnn.safetensors")) for a in argv]
    extra = ["--data-dir", saved / "imgs"] if "--data" in argv else []
    run("analyze", *argv, "--model", saved / "vit.safetensors", "--out", tmp_path, "--no-png", *extra)
    assert (tmp_path / f"{name}.html").exists()
    numbers = json.loads((tmp_path / f"{name}.json").read_text())
    if name == "cka":
        assert np.array(numbers["cka"]).shape == (2, 5) and numbers["count"] == 12
    if name == "probe":
        assert set(numbers["fewshot"]["pre_logits"]) == {"1", "5"} and 0 <= numbers["logistic"]["block 2"] <= 1


def test_data_spec():
    assert parse_spec("fashion_mnist:test:100", "train") == ("fashion_mnist", "test", 100)
    assert parse_spec("fashion-mnist", "train") == ("fashion_mnist", "train", None)
    assert parse_spec("timm:hfds/foo:val", "test") == ("timm:hfds/foo", "val", None)


def test_rollout_refuses_a_cnn(saved, tmp_path, capsys):
    assert main(["analyze", "rollout", "--model", str(saved / "cnn.safetensors"), "--out", str(tmp_path)]) == 2
    assert "not a ViT" in capsys.readouterr().err

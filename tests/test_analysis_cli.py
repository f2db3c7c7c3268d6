"""`vitlens analyze ...` end to end on a tiny saved model: files written, numbers equal the library's."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import vitlens
import vitlens.images
from vitlens.analysis import attention_rollout, cls_map, position_embedding_similarity
from vitlens.cli.common import parse_spec
from vitlens.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    vit = vitlens.create_model("vit_ti16", img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=2, num_heads=2,
                               mlp_dim=32, num_classes=10)
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


def test_rollout_cli_writes_html_png_json_and_matches_library(saved, tmp_path):
    photo = saved / "imgs" / "test" / "a" / "0.png"
    run("analyze", "rollout", "--model", saved / "vit.safetensors", "--image", photo, "--out", tmp_path)
    for suffix in ("html", "png", "json"):
        assert (tmp_path / f"rollout.{suffix}").stat().st_size > 0
    numbers = json.loads((tmp_path / "rollout.json").read_text())
    model = vitlens.load_model(saved / "vit.safetensors")
    # the app's preprocessing: the CLI must explain the same pixels the app does
    x = vitlens.images.preprocess(vitlens.images.open_image(photo), model.data_config)
    with torch.no_grad(), vitlens.capture(model) as rec:
        model(x)
    want = cls_map(attention_rollout(rec.attentions), vitlens.token_layout(model))
    np.testing.assert_allclose(numbers["maps"]["rollout"], want.numpy(), rtol=1e-5)
    assert numbers["model"].endswith("vit.safetensors")


@pytest.mark.parametrize("argv,name", [
    (["heads", "--image", "astronaut", "--threshold", "0.6"], "heads_astronaut"),
    (["distance", "--data", "folder:test", "--batch-size", "5"], "attention_distance"),
    (["norms", "--data", "folder:test", "--batch-size", "5"], "norms"),
    (["posembed", "--img-size", "56"], "posembed"),
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
    if name == "posembed":
        model = vitlens.load_model(saved / "vit.safetensors")
        np.testing.assert_allclose(numbers["posembed"], position_embedding_similarity(model).numpy(), rtol=1e-5)
        assert np.array(numbers["posembed_56"]).shape == (8, 8, 8, 8)
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

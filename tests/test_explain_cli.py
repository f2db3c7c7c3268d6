"""`vitlens analyze explain` as users run it (a subprocess, its exit code and stderr) on the bundled models and
Fashion-MNIST test images: the files, the numbers against the library and against their own per-image values, and
bad input refused in one line."""
import json
import subprocess
import sys

import numpy as np
import pytest

import vitlens
from vitlens.analysis import explain, faithfulness
from vitlens.data import load_tensors
from vitlens.images import prepare


def vitlens_cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vitlens.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=600)


def test_explain_on_the_bundled_vit_writes_the_table_curves_and_maps(tmp_path):
    run = vitlens_cli("analyze", "explain", "--model", "demo:vit-fashion", "--data", "fashion_mnist:test:5",
                      "--target", "label", "--steps", "4", "--ig-steps", "4", "--num-maps", "2", "--out", tmp_path,
                      "--no-png")
    assert run.returncode == 0, run.stderr
    for name in ("explain", "curves_mean", "curves_blur", "curves_token", "maps"):
        assert (tmp_path / f"{name}.html").stat().st_size > 0
    numbers = json.loads((tmp_path / "explain.json").read_text())
    assert numbers["methods"] == ["attention", "rollout", "gradient_rollout", "gradcam", "integrated_gradients",
                                  "input_x_gradient", "random"]
    assert numbers["baselines"] == ["mean", "blur", "token"] and numbers["images"] == 5
    images, labels = load_tensors("test", limit=5)
    assert numbers["labels"] == numbers["targets"] == labels.tolist()
    rows = {(r["method"], r["baseline"]): r for r in numbers["table"]}
    assert len(rows) == 21 and "vs random" not in rows["random", "mean"]
    for (method, baseline), row in rows.items():
        per_image = numbers["per_image"][method][baseline]
        for metric in ("deletion MoRF", "deletion LeRF"):
            assert row[metric]["low"] <= row[metric]["mean"] <= row[metric]["high"]
            assert row[metric]["mean"] == pytest.approx(np.mean(per_image[metric]), abs=1e-5)
        srg = np.subtract(per_image["deletion LeRF"], per_image["deletion MoRF"])
        assert row["SRG"]["mean"] == pytest.approx(srg.mean(), abs=1e-5)
    # the command's curves are the library's on the same images
    model = vitlens.load_model("demo:vit-fashion")
    x = prepare(images, model.data_config)
    want = faithfulness(model, x, explain(model, x, "gradcam", labels), baseline="token", steps=4)
    np.testing.assert_allclose(numbers["mean_curves"]["gradcam"]["token"]["deletion"]["morf"],
                               want.curves["deletion"]["morf"].mean(0), rtol=1e-5)
    assert numbers["maps"]["gradcam"]["resize"] == "bilinear from 7 x 7"
    assert np.array(numbers["maps"]["gradcam"]["raw"]).shape == (2, 7, 7)


def test_explain_on_the_bundled_cnn_runs_the_methods_that_apply(tmp_path):
    run = vitlens_cli("analyze", "explain", "--model", "demo:cnn-fashion", "--data", "fashion_mnist:test:3",
                      "--steps", "2", "--ig-steps", "2", "--out", tmp_path, "--no-png")
    assert run.returncode == 0, run.stderr
    numbers = json.loads((tmp_path / "explain.json").read_text())
    assert numbers["methods"] == ["gradcam", "integrated_gradients", "input_x_gradient", "random"]
    assert numbers["baselines"] == ["mean", "blur"] and numbers["target"] == "top"


@pytest.mark.parametrize("argv,message", [
    (["--model", "demo:cnn-fashion", "--methods", "rollout"], "rollout cannot run here: attention, rollout and "
                                                              "gradient rollout read attention"),
    (["--model", "demo:cnn-fashion", "--baselines", "token"], "token cannot run here: the token baseline drops "
                                                              "patch tokens: it needs a ViT"),
    (["--model", "demo:vit-fashion", "--methods", "lime"], "unknown methods lime; choose all or from attention"),
])
def test_bad_input_is_refused_in_one_line(tmp_path, argv, message):
    run = vitlens_cli("analyze", "explain", "--data", "fashion_mnist:test:2", "--out", tmp_path, *argv)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("vitlens: error: "), run.stderr
    assert message in lines[0] and not (tmp_path / "explain.json").exists()

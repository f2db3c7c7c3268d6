"""The analyses/ scripts and `vitlens analyze bias sweep` run end to end on tiny inputs, into a temporary folder
(the committed results are never touched)."""
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import perturb_

import vitlens
from vitlens.cli import main

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Fashion-MNIST-shaped ViT and CNN, saved: the scripts' own models without their cost."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)  # made before the per-test seed: weights that do not depend on which tests ran first
    vit = vitlens.create_model("vit_ti16", img_size=28, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2,
                               mlp_dim=16, num_classes=10)
    vitlens.save_model(perturb_(vit, std=0.2), d / "vit.safetensors")
    vitlens.save_model(vitlens.create_cnn("resnet18", in_chans=1, num_classes=10, img_size=28, small_input=True,
                                          channels=(4, 4, 4, 4)), d / "cnn.safetensors")
    return d


def run_script(name, monkeypatch, *argv):
    monkeypatch.syspath_prepend(str(ANALYSES))
    monkeypatch.setattr(sys, "argv", [name, *map(str, argv)])
    runpy.run_path(str(ANALYSES / name), run_name="__main__")


@pytest.mark.parametrize("script,argv,written", [
    ("figure6_rollout.py", ["--model", "{vit}"], ["figure6/vit/photos/rollout.json", "figure6/vit/fashion_mnist/rollout.json"]),
    ("figure7_embeddings_distance.py", ["--model", "{vit}", "--data", "fashion_mnist:test:4"],
     ["figure7/vit/filters.json", "figure7/vit/posembed.json", "figure7/vit/attention_distance.json"]),
    ("fewshot.py", ["--vit", "{vit}", "--cnn", "{cnn}", "--train-limit", "300", "--test-limit", "40", "--cka-limit",
                    "16"], ["fewshot/vit/probe.json", "fewshot/cnn/probe.json", "cka/vit_vs_cnn/cka.json"]),
    ("explain.py", ["--model", "{vit}", "--data", "fashion_mnist:test:2", "--steps", "2", "--ig-steps", "2"],
     ["explain/vit/explain.json"]),
])
def test_analysis_script_runs_on_tiny_inputs(tmp_path, monkeypatch, tiny, script, argv, written):
    argv = [a.format(vit=tiny / "vit.safetensors", cnn=tiny / "cnn.safetensors") for a in argv]
    run_script(script, monkeypatch, *argv, "--out", tmp_path, "--no-png")
    for path in written:
        assert json.loads((tmp_path / path).read_text())["model"].endswith(".safetensors")
    assert not list(tmp_path.rglob("*.png"))


def test_bias_probes_script_runs_on_tiny_inputs(tmp_path, monkeypatch, tiny):
    with pytest.raises(SystemExit) as done:
        run_script("bias_probes.py", monkeypatch, "--model", tiny / "vit.safetensors", "--model",
                   tiny / "cnn.safetensors", "--data", "fashion_mnist:test:4", "--translation-images", "2",
                   "--erf-images", "1", "--shifts", "0", "4", "--out", tmp_path, "--no-png")
    assert done.value.code == 0
    numbers = json.loads((tmp_path / "bias" / "translation.json").read_text())
    assert numbers["images"] == 4 and set(numbers["occlusion"]) == {"vit", "cnn"}


def test_bias_sweep_script_and_command_run_on_tiny_inputs(tmp_path):
    """The script (a process per seed) and the command, each 2 steps on 32 images per architecture."""
    tiny = ["--sizes", "32", "--seeds", "0", "--steps", "2", "--batch-size", "16", "--no-png"]
    out = subprocess.run([sys.executable, str(ANALYSES / "bias_sweep.py"), *tiny, "--eval-images", "32",
                          "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "script")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert main(["analyze", "bias", "sweep", *tiny, "--eval-subset", "32", "--runs-dir", str(tmp_path / "runs2"),
                 "--out", str(tmp_path / "command")]) == 0
    for result in (tmp_path / "script" / "bias" / "sweep.json", tmp_path / "command" / "sweep.json"):
        records = json.loads(result.read_text())["records"]
        assert sorted(r["arch"] for r in records) == ["cnn", "vit"]
        assert all(r["size"] == 32 and r["steps"] == 2 and r["test_count"] == 32 and 0 <= r["test_acc"] <= 1
                   for r in records)

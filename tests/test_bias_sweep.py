"""The data-size sweep's smallest configuration, end to end on a tiny Fashion-MNIST subset."""
import json

import pytest

from vitlens.bias.sweep import crossover, summarise
from vitlens.train.sweep import run_sweep, sweep_config


def test_smallest_sweep_runs_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "sweep.json"
    kw = dict(sizes=(16,), seeds=(0,), archs=("vit", "cnn"), steps=2, batch_size=8, eval_subset=24,
              runs_dir=tmp_path / "runs")
    result = run_sweep(out, **kw)
    records = result["records"]
    assert [(r["arch"], r["size"]) for r in records] == [("vit", 16), ("cnn", 16)]
    for r in records:
        assert 0.0 <= r["test_acc"] <= 1.0 and r["test_count"] == 24 and r["params"] > 0
        assert r["epochs"] == 2 * 8 / 16
    assert json.loads(out.read_text())["summary"]["cnn"] == dict(size=[16], mean=[records[1]["test_acc"]], std=[0.0],
                                                                n=[1])
    # A second call finds every point done and trains nothing.
    assert run_sweep(out, **kw)["records"] == records


def test_both_architectures_get_the_same_budget():
    vit, cnn = (sweep_config(a, 1000, 3, steps=500, batch_size=64) for a in ("vit", "cnn"))
    for cfg in (vit, cnn):
        assert (cfg.train.steps, cfg.train.batch_size, cfg.train.seed) == (500, 64, 3)
        assert cfg.data.subset == 1000 and cfg.schedule.warmup_steps == 50
    assert vit.optim.name == cnn.optim.name == "adamw"  # each keeps its recipe's peak lr
    assert vit.model["arch"] == "vit" and cnn.model["arch"] == "resnet18"
    with pytest.raises(ValueError, match="unknown sweep architecture"):
        sweep_config("mlp", 1000, 0, steps=1, batch_size=1)


def test_summary_mean_std_and_crossover():
    records = [dict(arch=a, size=n, seed=s, test_acc=acc) for a, n, s, acc in [
        ("vit", 1000, 0, 0.5), ("vit", 1000, 1, 0.7), ("vit", 8000, 0, 0.9),
        ("cnn", 1000, 0, 0.8), ("cnn", 1000, 1, 0.8), ("cnn", 8000, 0, 0.85)]]
    summary = summarise(records)
    assert summary["vit"]["mean"] == pytest.approx([0.6, 0.9])
    assert summary["vit"]["std"] == pytest.approx([0.1414213562, 0.0])
    assert summary["cnn"]["n"] == [2, 1]
    assert crossover(summary) == 8000 and crossover(summary, "cnn", "vit") == 1000


def test_the_bias_package_imports_neither_training_nor_dataset_loading():
    """vitlens.bias summarises and draws the sweep; training it is vitlens.train.sweep's."""
    import subprocess
    import sys

    code = ("import sys, vitlens.bias, vitlens.bias.sweep, vitlens.bias.figures; "
            "print(sorted(m for m in sys.modules if m.startswith(('vitlens.train', 'vitlens.data'))))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"

"""The hostile-input corpus, training: what a user can get wrong with `vitlens pretrain`, `finetune` and `eval`, and
what the machine can do to a run (a full disk, a kill). Each case runs the real command in a subprocess and checks
its exit code, the one line it prints on stderr (no traceback), and what it left on disk."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import vitlens
from hostile import TINY, error_line, vitlens_cmd
from vitlens.train import load_config

# Larger than a run's config.yaml, metrics and the run folder's first write, smaller than the model's weights.
FILE_SIZE_LIMIT = 20_000


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory) -> Path:
    """A complete config file for the tiny run (the packaged recipe with TINY applied)."""
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(load_config("fashion_vit", TINY).to_dict()))
    return path


@pytest.fixture(scope="module")
def uninterrupted(tiny_yaml: Path, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of the tiny run trained in one go: what a run stopped and continued must end with."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    proc = vitlens_cmd("pretrain", "--config", str(tiny_yaml), "--out", "run", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return load_file(folder / "run" / "model.safetensors")


def assert_same_weights(run: Path, reference: dict[str, torch.Tensor]) -> None:
    weights = load_file(run / "model.safetensors")
    assert weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in reference)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- configs: refused in one line before anything is built or written ------------------------------------------
GOOD = dict(model=dict(arch="vit"), data=dict(dataset="synthetic"), optim=dict(lr=0.1),
            train=dict(batch_size=8, steps=1))
CONFIG_FILES = {
    "syntax error": ("model: [1\n", r"syntax error\.yaml: not valid YAML: .* at line 2, column 1"),
    "a list": ("- model\n- data\n", r"a list\.yaml: a config is a mapping of sections .*got a list"),
    "empty": ("", r"empty\.yaml: empty; a config is a mapping of sections"),
    "no optim section": (yaml.safe_dump({k: v for k, v in GOOD.items() if k != "optim"}),
                         r"no optim section\.yaml: missing section optim: a config needs model, data, optim, train"),
    "unknown key": (yaml.safe_dump(dict(GOOD, train=dict(batch_size=8, steps=1, ema_decy=0.9))),
                    r"unknown key\.yaml: unknown key train\.ema_decy; did you mean train\.ema_decay"),
    "epochs 0 in the file": (yaml.safe_dump(dict(GOOD, train=dict(batch_size=8, epochs=0))),
                             r"train\.epochs must be a positive integer or null, got 0"),
}


@pytest.mark.parametrize("case", CONFIG_FILES)
def test_a_config_file_that_cannot_be_a_run_is_refused_in_one_line(tmp_path, case):
    text, expected = CONFIG_FILES[case]
    (tmp_path / f"{case}.yaml").write_text(text)
    proc = vitlens_cmd("pretrain", "--config", f"{case}.yaml", "--out", "run", cwd=tmp_path)
    assert re.search(expected, error_line(proc, 2))
    assert not (tmp_path / "run").exists()


OVERRIDES = {  # command-line values: the key, what it must be, and the value given
    ("model.depth=abc",): "model.depth must be an integer, got 'abc'",  # the model section too, before anything
    ("model.dept=3",): "unknown key model.dept; did you mean model.depth?",
    ("optim.lr=abc",): "optim.lr must be a finite number, got 'abc'",
    ("optim.lr=" + "abc" * 5000,): "optim.lr must be a finite number, got 'abcabc",
    ("train.epochs=abc",): "train.epochs must be an integer or null, got 'abc'",
    ("train.epochs=0",): "train.epochs must be a positive integer or null, got 0",
    ("train.epochs=-1",): "train.epochs must be a positive integer or null, got -1",
    ("--epochs", "0"): "train.epochs must be a positive integer or null, got 0",
    ("train.steps=-5",): "train.steps must be a positive integer or null, got -5",
    ("train.batch_size=0",): "train.batch_size must be a positive integer, got 0",
}


@pytest.mark.parametrize("args", [("pretrain", *args) for args in OVERRIDES] + [("finetune", "train.epochs=0")],
                         ids=lambda args: " ".join(args)[:40])
def test_a_bad_value_is_refused_naming_its_key(tmp_path, args):
    command, *values = args
    line = error_line(vitlens_cmd(command, "--out", "run", *values, cwd=tmp_path), 2)
    assert line.startswith("vitlens: error: ") and OVERRIDES[tuple(values)] in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, expected", [
    ("optim.lr=nan", "optim.lr must be a finite number, got 'nan'"),
    ("optim.lr=0", "optim.lr must be a positive number, got 0.0"),
    ("optim.betas=[0.9]", r"optim.betas must be two numbers in \[0, 1\), got \[0.9\]"),
    ("optim.momentum=1", r"optim.momentum must be a number in \[0, 1\), got 1.0"),
    ("train.steps=0", "train.steps must be a positive integer or null, got 0"),
    ("train.accum_steps=0", "train.accum_steps must be a positive integer, got 0"),
    ("train.accum_steps=3", r"train.batch_size must be a multiple of train.accum_steps \(3\), got 16"),
    ("train.ckpt_every=0", "train.ckpt_every must be a positive integer, got 0"),
    ("train.log_every=-1", "train.log_every must be a positive integer, got -1"),
    ("train.keep_last=-1", r"train.keep_last must be an integer >= 0 \(0: keep all\), got -1"),
    ("train.ema_decay=1", r"train.ema_decay must be null or a number in \[0, 1\), got 1.0"),
    ("data.subset=0", "data.subset must be a positive integer or null, got 0"),
    ("data.workers=-1", "data.workers must be 'auto' or an integer >= 0, got -1"),
    ("augment.random_erasing=2", "augment.random_erasing must be a probability between 0 and 1, got 2.0"),
    ("augment.label_smoothing=1", r"augment.label_smoothing must be a number in \[0, 1\), got 1.0"),
    ("schedule.warmup_steps=-1", "schedule.warmup_steps must be an integer >= 0, got -1"),
])
def test_every_range_is_checked_when_the_config_is_built(override, expected):
    """The ranges the commands above rely on, for every key, checked in-process (the same RunConfig the commands
    build): a config that loads is one the loop can run."""
    with pytest.raises(ValueError, match=expected):
        load_config("fashion_vit", TINY + [override])


# ---- data and output folders: checked before the data or the model is built -----------------------------------
# A model section that fails only when the model is built (well typed, but 96 is not divisible by 5 heads): a case
# that names the folder instead was checked before it.
TRIPWIRE = "model.num_heads=5"


@pytest.mark.parametrize("dataset, folder, expected", ids=["fashion-missing", "fashion-empty", "folder-missing",
                                                      "folder-empty", "cifar10-missing"], argvalues=[
    ("fashion_mnist", "nonexistent", r"nonexistent \(--data-dir\) does not exist"),
    ("fashion_mnist", "empty", r"empty \(--data-dir\) holds no Fashion-MNIST train files"),
    ("folder", "nonexistent", r"data folder \S*nonexistent \(--data-dir\) does not exist"),
    ("folder", "empty", r"data folder \S*empty has no train/ folder"),
    ("cifar10", "nonexistent", r"data folder \S*nonexistent \(--data-dir\) does not exist"),
])
def test_a_data_dir_that_does_not_exist_or_is_empty_is_refused_not_replaced(tmp_path, dataset, folder, expected):
    """A mistyped --data-dir must not train on another copy (the Debian package's Fashion-MNIST)."""
    (tmp_path / "empty").mkdir()
    proc = vitlens_cmd("pretrain", "--dataset", dataset, "--data-dir", str(tmp_path / folder), "--out", "run",
                       TRIPWIRE, cwd=tmp_path)
    assert re.search(expected, error_line(proc, 2))
    assert not (tmp_path / "run").exists() and not (tmp_path / "nonexistent").exists()
    assert not any((tmp_path / "empty").iterdir())


def test_an_empty_vitlens_data_folder_is_refused_too(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vitlens.cli", "eval", "demo:vit-fashion", "--subset", "8"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, VITLENS_DATA=str(tmp_path)))
    assert re.search(r"\(\$VITLENS_DATA\) holds no Fashion-MNIST test files.*unset VITLENS_DATA", error_line(proc, 2))
    assert proc.stdout == ""


@pytest.mark.parametrize("out, expected", ids=["a file", "under a file", "deeper under a file"], argvalues=[
    ("a_file", "run folder a_file (--out) cannot be written: it is a file, not a folder; choose another --out"),
    ("a_file/run", "run folder a_file/run (--out) cannot be written: a_file is a file; choose another --out"),
    ("a_file/deeper/run", "run folder a_file/deeper/run (--out) cannot be written: a_file is a file; choose"),
])
def test_an_output_folder_that_cannot_be_written_is_refused_before_anything_is_built(tmp_path, tiny_yaml, out,
                                                                                      expected):
    """A file, or a path under one, stops root as well as any user (a read-only folder would not stop root)."""
    (tmp_path / "a_file").write_text("keep me")
    proc = vitlens_cmd("pretrain", "--config", str(tiny_yaml), "--out", out, TRIPWIRE, cwd=tmp_path)
    assert error_line(proc, 2).startswith(f"vitlens: error: {expected}")
    assert (tmp_path / "a_file").read_text() == "keep me"


def test_a_full_disk_is_found_before_anything_is_built(tmp_path, tiny_yaml):
    """The run folder takes a first write before the data and the model are built (a mkdir alone succeeds on a
    full disk); here no file may grow past 1,000 bytes."""
    proc = vitlens_cmd("pretrain", "--config", str(tiny_yaml), "--out", "run", TRIPWIRE, cwd=tmp_path,
                       file_size_limit=1000)
    assert error_line(proc, 4) == "vitlens: I/O error: run folder run (--out) cannot be written: File too large"
    assert not (tmp_path / "run").exists()


# ---- during a run: a failed write, a kill, leftovers, --resume -------------------------------------------------
def test_a_full_disk_mid_run_stops_in_one_line_and_the_last_checkpoint_stays_intact(tmp_path, tiny_yaml,
                                                                                     uninterrupted):
    """The run stops at step 2 (train.stop_at), is resumed under a file-size limit that its step-4 checkpoint
    exceeds, stops there naming the file and the intact step-2 checkpoint, then finishes once there is room, with
    the weights of a run that was never interrupted."""
    assert vitlens_cmd("pretrain", "--config", str(tiny_yaml), "--out", "run", "train.stop_at=2",
                       cwd=tmp_path).returncode == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000002"
    before = files_under(checkpoint)
    assert set(before) == {"model.safetensors", "state.pt"} and len(before["model.safetensors"]) > FILE_SIZE_LIMIT

    proc = vitlens_cmd("pretrain", "--resume", "run", "train.stop_at=null", cwd=tmp_path,
                       file_size_limit=FILE_SIZE_LIMIT)
    line = error_line(proc, 4)
    assert re.fullmatch(r"vitlens: I/O error: File too large: run/\.step_00000004\.partial/model\.safetensors "
                        r"\(at step 4\); the last checkpoint, run/checkpoints/step_00000002, is intact: .*"
                        r"continue with --resume run", line), line
    assert files_under(checkpoint) == before  # untouched
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints", "config.yaml", "metrics.jsonl",
                                                                    "tensorboard"]  # nothing half-written left
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000002"]

    assert vitlens_cmd("pretrain", "--resume", "run", "train.stop_at=null", cwd=tmp_path).returncode == 0
    assert_same_weights(tmp_path / "run", uninterrupted)


def test_a_full_disk_before_the_first_checkpoint_says_so(tmp_path, tiny_yaml):
    proc = vitlens_cmd("pretrain", "--config", str(tiny_yaml), "--out", "run", cwd=tmp_path,
                       file_size_limit=FILE_SIZE_LIMIT)
    assert re.fullmatch(r"vitlens: I/O error: File too large: run/\.step_00000002\.partial/model\.safetensors "
                        r"\(at step 2\); no checkpoint was written yet: .*--resume run starts it again",
                        error_line(proc, 4))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_of_a_folder_without_a_run_says_how_to_start_one(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = vitlens_cmd("finetune", "--resume", "empty", cwd=tmp_path)
    assert error_line(proc, 2) == ("vitlens: error: --resume empty: it holds no run to continue (no config.yaml); "
                                   "start one there with `vitlens finetune --out empty`")
    assert not any((tmp_path / "empty").iterdir())
    assert error_line(vitlens_cmd("pretrain", "--resume", "missing", cwd=tmp_path), 2) == (
        "vitlens: error: --resume missing: no such run folder")


def kill_before_the_first_checkpoint(tiny_yaml: Path, run: Path) -> None:
    """Start a long run that checkpoints every 1,000 steps and SIGKILL it once it has logged a step."""
    proc = subprocess.Popen([sys.executable, "-m", "vitlens.cli", "pretrain", "--config", str(tiny_yaml), "--out",
                             str(run), "train.steps=100000", "train.ckpt_every=1000"],
                            env=dict(os.environ, OMP_NUM_THREADS="1"), stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text()):
            assert proc.poll() is None and time.time() < deadline, "the run ended before it logged a step"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()


def test_a_run_killed_before_its_first_checkpoint_restarts_cleanly_with_resume(tmp_path, tiny_yaml,
                                                                               uninterrupted):
    """Killed before its first checkpoint, with the leftovers of interrupted writes planted as a kill leaves them: a
    new run there is refused (it would mix two runs), --resume starts it again from step 0, removes the leftovers,
    and gives the weights and the metrics of a run that was never killed."""
    run = tmp_path / "run"
    kill_before_the_first_checkpoint(tiny_yaml, run)
    assert not (run / "checkpoints").exists()
    leftovers = [run / ".step_00000002.partial" / "model.safetensors", run / ".model.safetensors.k1ll3d.tmp",
                 run / ".config.yaml.x7b2q9.tmp", run / "checkpoints" / "step_00000003" / "model.safetensors"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # a record the kill cut short

    assert "already holds a run; continue it with --resume run" in error_line(
        vitlens_cmd("pretrain", "--config", str(tiny_yaml), "--out", "run", cwd=tmp_path), 2)
    proc = vitlens_cmd("pretrain", "--resume", "run", "train.steps=4", "train.ckpt_every=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "run has no complete checkpoint (its run stopped before the first): starting it again from step 0" in (
        proc.stdout)
    assert not any(p.exists() for p in leftovers) and not (run / ".step_00000002.partial").exists()
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step_00000002", "step_00000004"]
    assert_same_weights(run, uninterrupted)
    steps = [yaml.safe_load(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "metrics.jsonl",
                                                     "model.safetensors", "tensorboard"]


# ---- evaluation --------------------------------------------------------------------------------------------------
def test_eval_of_a_model_whose_outputs_are_not_finite_exits_3(tmp_path):
    """Finite weights so large that the logits overflow (+inf and -inf summed: NaN): the loss is NaN, so the
    accuracy beside it means nothing; exit 3 and one line, no accuracy printed."""
    model = vitlens.VisionTransformer(img_size=32, patch_size=8, in_chans=3, num_classes=10, embed_dim=16, depth=1,
                                      num_heads=2, mlp_dim=32)
    with torch.no_grad():
        model.head.weight.fill_(3e38)
        model.head.bias.fill_(3e38)
    vitlens.save_model(model, tmp_path / "huge.safetensors")
    proc = vitlens_cmd("eval", "huge.safetensors", "--dataset", "synthetic", "--subset", "16", cwd=tmp_path)
    assert error_line(proc, 3) == ("vitlens: evaluation failed: the loss of huge.safetensors on synthetic test is nan "
                                   "(16 images): its outputs are not finite (overflowing or broken weights)")
    assert proc.stdout == ""

"""Checkpoints: ``checkpoints/step_XXXXXXXX/{model.safetensors,state.pt}``, written atomically, last K kept.

A checkpoint is first written to a hidden sibling folder and then renamed into ``checkpoints/``, so a crash at
any moment leaves either the complete new checkpoint or none of it; the previous ones are untouched.
``state.pt`` holds only tensors and plain Python types so it loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..io import atomic_write
from ..models.loading import save_model
from ..models.state_dict import CheckpointError, read_torch_file

CKPT_DIR = "checkpoints"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"  # zero-padded: sorted names are chronological (load_model takes the last)


def rng_state() -> dict[str, Any]:
    """Every random generator a training step draws from, as tensors and plain types."""
    _, mt_keys, mt_pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return dict(torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                numpy=[torch.from_numpy(mt_keys.astype(np.int64)), int(mt_pos), int(has_gauss), float(gauss)],
                python=[version, torch.tensor(py_state, dtype=torch.int64), py_gauss])


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    mt_keys, mt_pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", mt_keys.numpy().astype(np.uint32), mt_pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state.tolist()), py_gauss))


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, state: dict[str, Any], keep_last: int) -> Path:
    """Write ``checkpoints/step_<step>`` (weights + training state) atomically and prune to ``keep_last``.

    A write that fails (a full disk) removes what it had staged, so it holds no space, and leaves every earlier
    checkpoint as it was."""
    final = run_dir / CKPT_DIR / step_dir_name(step)
    staging = run_dir / f".{step_dir_name(step)}.partial"  # outside checkpoints/: never mistaken for one
    shutil.rmtree(staging, ignore_errors=True)
    try:
        save_model(model, staging / "model.safetensors", extra=dict(step=step))
        atomic_write(staging / "state.pt", lambda tmp: _torch_save(state, tmp))
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old)
    return final


def _torch_save(obj: Any, path: str) -> None:
    # Through a Python file object: a failed write then carries the OSError (a full disk) that torch's own file
    # writer would replace by "unexpected pos" (see vitlens.io.io_error).
    with open(path, "wb") as f:
        torch.save(obj, f)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    return sorted(p.parent for p in (Path(run_dir) / CKPT_DIR).glob("step_*/state.pt"))


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The training state of a checkpoint folder (``weights_only=True``: no code runs).

    Raises:
        CheckpointError: ``state.pt`` is no PyTorch file, is broken, needs code execution to load, or lacks the
            entries a resumed run needs; the one-line message says which.
    """
    path = Path(checkpoint) / "state.pt"
    state = read_torch_file(path)
    needed = ("optimizer", "scheduler", "step", "rng")  # what restore() reads; "ema" only when the run has one
    if not isinstance(state, Mapping) or (missing := [k for k in needed if k not in state]):
        what = f"lacks {', '.join(missing)}" if isinstance(state, Mapping) else f"holds a {type(state).__name__}"
        raise CheckpointError(f"{path} is not a vitlens training state (it {what}); resume from another checkpoint "
                              f"or start the run again")
    return dict(state)

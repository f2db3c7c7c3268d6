"""What the hostile-input corpus shares: the real command in a subprocess, and its one error line."""
from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

# A model and data small enough that a run of a few steps takes a second: 16 tokens of width 32, one block, on the
# synthetic dataset (64 images of 32 x 32, 10 classes).
TINY = ["model.img_size=32", "model.patch_size=8", "model.in_chans=3", "model.embed_dim=32", "model.depth=1",
        "model.num_heads=2", "model.mlp_dim=64", "data.dataset=synthetic", "data.subset=64", "train.batch_size=16",
        "train.steps=4", "train.ckpt_every=2", "train.log_every=1", "train.eval=false", "train.threads=1",
        "schedule.warmup_steps=1"]
# tqdm's progress bar, which shares stderr with the error line: "run:  50%|█████     | 2/4 [00:00<...]"
BAR = re.compile(r"\d+%\|.*\|")


def vitlens_cmd(*args: str, cwd: Path, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """``vitlens ARGS`` as a user runs it, from ``cwd``; with ``file_size_limit``, every file it writes stops
    growing at that many bytes (RLIMIT_FSIZE: a write past it fails with EFBIG, as on a full disk; Python ignores
    SIGXFSZ)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run([sys.executable, "-m", "vitlens.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300,
                          preexec_fn=limit if file_size_limit else None)


def error_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """The command's exit code is ``code`` (2: bad input) and stderr, the progress bar aside, is exactly one short
    line: return it."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line.rsplit("\r", 1)[-1] for line in proc.stderr.splitlines()]
    lines = [line for line in lines if line.strip() and not BAR.search(line)]
    assert proc.returncode == code and len(lines) == 1, (proc.returncode, proc.stderr)
    assert len(lines[0]) < 400, lines[0]  # one readable line, not a value repeated thousands of times
    return lines[0]

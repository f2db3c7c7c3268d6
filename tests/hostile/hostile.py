"""What the hostile-input corpus shares: the real command in a subprocess, and its one error line."""
from __future__ import annotations

import multiprocessing
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# A model and data small enough that a run of a few steps takes a second: 16 tokens of width 32, one block, on the
# synthetic dataset (64 images of 32 x 32, 10 classes).
TINY = ["model.img_size=32", "model.patch_size=8", "model.in_chans=3", "model.embed_dim=32", "model.depth=1",
        "model.num_heads=2", "model.mlp_dim=64", "data.dataset=synthetic", "data.subset=64", "train.batch_size=16",
        "train.steps=4", "train.ckpt_every=2", "train.log_every=1", "train.eval=false", "train.threads=1",
        "schedule.warmup_steps=1"]
# tqdm's progress bar, which shares stderr with the error line: "run:  50%|█████     | 2/4 [00:00<...]"
BAR = re.compile(r"\d+%\|.*\|")


def _cli_child(args: tuple[str, ...], cwd: str, env: dict[str, str], out: str, err: str,
               file_size_limit: int | None) -> None:
    """In the forked child: the process state a fresh ``python -m vitlens.cli ARGS`` would have, then its main."""
    import traceback

    import torch

    import vitlens.cli

    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    torch.set_num_threads(1)
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
    if file_size_limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    try:
        code = vitlens.cli.main(list(args))
    except SystemExit as e:  # argparse's usage errors
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(code)


_FORKSERVER: multiprocessing.context.ForkServerContext | None = None


def vitlens_cmd(*args: str, cwd: Path, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """``vitlens ARGS`` as a user runs it, from ``cwd``: its exit code, stdout and stderr; with ``file_size_limit``,
    every file it writes stops growing at that many bytes (RLIMIT_FSIZE: a write past it fails with EFBIG, as on a
    full disk; Python ignores SIGXFSZ).

    Each case is its own process, forked from a server that imported ``vitlens.cli`` once (multiprocessing's
    forkserver, which has run no thread pool, so forking it is safe): the command's ``main`` behind a real process
    boundary, without paying torch's and timm's 4 s of imports some eighty times. The console script itself is run
    by the CLI tests and by :mod:`test_hostile_app`."""
    global _FORKSERVER
    if _FORKSERVER is None:
        _FORKSERVER = multiprocessing.get_context("forkserver")
        _FORKSERVER.set_forkserver_preload(["torch", "vitlens.cli", "hostile"])
    with tempfile.TemporaryDirectory() as tmp:
        out, err = f"{tmp}/stdout", f"{tmp}/stderr"
        Path(out).touch(), Path(err).touch()  # read back even if the child dies before opening them
        env = dict(os.environ, OMP_NUM_THREADS="1")
        child = _FORKSERVER.Process(target=_cli_child, args=(args, str(cwd), env, out, err, file_size_limit))
        child.start()
        child.join(300)
        if child.exitcode is None:
            child.kill()
            raise subprocess.TimeoutExpired(["vitlens", *args], 300)
        return subprocess.CompletedProcess(["vitlens", *args], child.exitcode, Path(out).read_text(),
                                           Path(err).read_text())


def error_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """The command's exit code is ``code`` (2: bad input) and stderr, the progress bar aside, is exactly one short
    line: return it."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line.rsplit("\r", 1)[-1] for line in proc.stderr.splitlines()]
    lines = [line for line in lines if line.strip() and not BAR.search(line)]
    assert proc.returncode == code and len(lines) == 1, (proc.returncode, proc.stderr)
    assert len(lines[0]) < 400, lines[0]  # one readable line, not a value repeated thousands of times
    return lines[0]

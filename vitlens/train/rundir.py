"""A run folder's housekeeping: proving it can be written before anything is built, removing what interrupted
writes left in it, choosing the checkpoint a resumed run starts from, and the line a failed write ends a run with."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .checkpoint import CKPT_DIR, list_checkpoints

log = logging.getLogger("vitlens")

# Written and fsynced once into a new run folder: a full disk refuses it at once, not after the data and the model
# have been built (a plain mkdir succeeds on a full disk).
PROBE_BYTES = 4096
# The folder, not the machine, is at fault: the user picks another --out (exit 2). Other errors (a full disk, a
# quota, a file-size limit, a failing device) are I/O errors (exit 4).
_BAD_FOLDER = {errno.EEXIST, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS}


class RunWriteError(OSError):
    """A write of the run failed (a full disk, a folder that stopped being writable); the message names the path
    and the last checkpoint, which is intact."""


def prepare_run_dir(run_dir: Path) -> list[Path]:
    """Create ``run_dir`` and prove it takes a write, before any data or model is built.

    Returns:
        The folders this created, deepest first, for :func:`remove_created` should the run fail to start.
    """
    created = [p for p in (run_dir, *run_dir.parents) if not os.path.lexists(p)]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir) as f:
            f.write(bytes(PROBE_BYTES))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        remove_created(created)
        blocker = next((p for p in (run_dir, *run_dir.parents) if p.exists() and not p.is_dir()), None)
        reason = ("it is a file, not a folder" if blocker == run_dir else
                  f"{blocker} is a file" if blocker is not None else e.strerror)
        message = f"run folder {run_dir} (--out) cannot be written: {reason}"
        if e.errno in _BAD_FOLDER or blocker is not None:
            raise ValueError(f"{message}; choose another --out") from None
        raise OSError(message) from None
    return created


def remove_created(created: list[Path]) -> None:
    """Remove the folders :func:`prepare_run_dir` created, if they are still empty: a run that failed to start
    leaves nothing behind."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Remove what writes interrupted by a kill leave in a run folder, and return it: staged checkpoints
    (``.step_*.partial``), atomic writes' temporary files (``.<name>.*.tmp``), and checkpoint folders without their
    ``state.pt`` (a pruning cut short). Complete checkpoints and finished files are never touched."""
    found = [*run_dir.glob(".step_*.partial"), *run_dir.glob(".*.tmp"),
             *(p for p in (run_dir / CKPT_DIR).glob("step_*") if not (p / "state.pt").is_file())]
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if found:
        log.info("removed the leftovers of an interrupted write: %s", ", ".join(p.name for p in found))
    return found


def checkpoint_to_resume(run_dir: Path, resume: bool) -> Path | None:
    """The newest complete checkpoint when resuming (None: a run stopped before its first starts again from step
    0); a fresh run may not write into another run's folder."""
    if resume:
        checkpoints = list_checkpoints(run_dir)
        return checkpoints[-1] if checkpoints else None
    if (run_dir / "metrics.jsonl").exists() or list_checkpoints(run_dir):
        raise ValueError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, or choose another "
                         f"--out (a second run there would mix its metrics and checkpoints with the first's)")
    return None


def write_failed(e: OSError, run_dir: Path, step: int, last_checkpoint: Path | None) -> RunWriteError:
    """The one line a run stops with when a write (or a read) fails: the path, the step, and what is intact."""
    what = f"{e.strerror}: {e.filename}" if e.filename and e.strerror else str(e)
    if last_checkpoint is not None and last_checkpoint != run_dir:
        kept = (f"the last checkpoint, {last_checkpoint}, is intact: make room (or fix the folder), then continue "
                f"with --resume {run_dir}")
    else:
        kept = f"no checkpoint was written yet: make room (or fix the folder), then --resume {run_dir} starts it again"
    return RunWriteError(f"{what} (at step {step}); {kept}")

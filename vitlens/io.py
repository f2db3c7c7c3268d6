"""Atomic file writes: a crash mid-write never destroys the previous file."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    """The process umask, read without changing it (os.umask sets it too, which races with other threads)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        return 0o022


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, fsync, then rename over ``path`` (atomic on POSIX).

    The file gets the permissions a plain ``open(path, "w")`` would give (mkstemp's temporary file is private). A
    write that fails for an I/O reason (a full disk, a file-size limit) raises OSError naming ``path``, whatever
    library wrote it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = io_error(e)
        if cause is None:
            raise
        raise OSError(cause.errno, cause.strerror, str(path)) from e
    return path


def io_error(e: BaseException) -> OSError | None:
    """The operating system's error behind ``e``, if any: ``e`` itself, one it was raised from or during (torch.save
    raises "unexpected pos" from the OSError of a full disk), or the errno in safetensors's message ("I/O error:
    File too large (os error 27)"), so that a failed write is reported as one, naming its file."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    if match := re.search(r"\(os error (\d+)\)", str(e)):
        code = int(match.group(1))
        return OSError(code, os.strerror(code))
    return None

"""A run's ``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars when tensorboard is installed."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io import atomic_write


class MetricsLog:
    """Appends records to ``run_dir/metrics.jsonl`` and, when tensorboard is installed, ``run_dir/tensorboard``.

    Args:
        run_dir: the run folder.
        resume_step: the step a resumed run continues from: what the interrupted run logged after it is dropped.
    """

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            keep = [line for line in self.path.read_text().splitlines() if _step(line) <= resume_step]
            atomic_write(self.path, lambda tmp: Path(tmp).write_text("".join(k + "\n" for k in keep)))
        self.file = open(self.path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops the events an interrupted run wrote after its checkpoint, as above for the JSON
            self.tb = SummaryWriter(str(run_dir / "tensorboard"),
                                    purge_step=resume_step + 1 if resume_step is not None else None)
        except ImportError:
            self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:  # a write to an open file names no file
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _step(line: str) -> float:
    """A record's step; infinite for a line a kill cut short (or an empty one), so a resumed run drops it."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return float("inf")

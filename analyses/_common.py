"""Shared by the analyses/ scripts: run one `vitlens analyze` command into analyses/results/."""
from __future__ import annotations

from pathlib import Path

from vitlens.cli import main

RESULTS = Path(__file__).resolve().parent / "results"


def slug(model: str) -> str:
    """A folder name for a model source: demo:vit-fashion -> vit-fashion, timm:a.b -> a.b, paths -> their stem."""
    return model.split(":", 1)[1] if ":" in model else Path(model).stem


def analyze(command: str, model: str, out: Path, *extra: str) -> None:
    """``vitlens analyze COMMAND --model MODEL --out OUT ...``; committed HTML links plotly.js (small files)
    and the PNG beside it is the offline copy."""
    code = main(["analyze", command, "--model", model, "--out", str(out), "--plotlyjs", "cdn", *extra])
    if code:
        raise SystemExit(f"vitlens analyze {command} --model {model} failed with exit code {code}")

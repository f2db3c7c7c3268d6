"""Shared by the analyses/ scripts: their common options, and running one `vitlens analyze` command into the results
folder."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from vitlens.cli import main

RESULTS = Path(__file__).resolve().parent / "results"


def slug(model: str) -> str:
    """A folder name for a model source: demo:vit-fashion -> vit-fashion, timm:a.b -> a.b, paths -> their stem."""
    return model.split(":", 1)[1] if ":" in model else Path(model).stem


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every script has: where to write, and whether to draw PNGs."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: analyses/results, committed)")
    p.add_argument("--no-png", action="store_true", help="HTML and JSON only (a quick run)")
    return p


def analyzer(args: argparse.Namespace) -> Callable[..., None]:
    """``analyze(command, model, out, *extra)``: ``vitlens analyze COMMAND --model MODEL --out OUT ...`` with the
    script's ``--no-png``; committed HTML links plotly.js (small files) and the PNG beside it is the offline copy."""
    png = ["--no-png"] if args.no_png else []

    def analyze(command: str, model: str, out: Path, *extra: str) -> None:
        code = main(["analyze", command, "--model", model, "--out", str(out), "--plotlyjs", "cdn", *png, *extra])
        if code:
            raise SystemExit(f"vitlens analyze {command} --model {model} failed with exit code {code}")

    return analyze

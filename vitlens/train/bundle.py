"""Bundle a finished run as an offline demo model: ``vitlens/weights/<name>.safetensors`` plus its model card.

    python -m vitlens.train.bundle runs/demo-vit-fashion vit-fashion --seconds 2160 \
        --command "vitlens pretrain --config fashion_vit"
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ..data.fashion_mnist import locate
from ..io import atomic_write
from ..models.loading import WEIGHTS_DIR, load_model, model_metadata, save_model
from .config import DataConfig, load_config
from .data import build_eval_loader
from .loop import evaluate


def machine(threads: int | None) -> str:
    """CPU model, cores, the threads the run used, and the GPU (if any) of this machine."""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    used = f"{threads} thread(s)" if threads else "torch's default threads"
    return f"{cpu} CPU, {os.cpu_count()} cores ({used}), {gpu}, torch {torch.__version__}"


def data_card(data: DataConfig, test_images: int) -> dict[str, Any]:
    """What the run trained and was scored on, read from its config and the files it found."""
    card = dict(dataset=data.dataset,
                train=f"the first {data.subset:,} training images" if data.subset else "all training images",
                test=(f"the {test_images:,} test images; the per-epoch test evaluations in metrics.jsonl were "
                      f"monitoring only: the final weights are used, no model selection"))
    if data.dataset == "fashion_mnist":
        card["files"] = f"IDX files in {locate('train', data.data_dir)[0].parent}"
    return card


def bundle_demo(run_dir: str | Path, name: str, command: str, seconds: float, parent: str | None = None,
                note: str = "") -> dict[str, Any]:
    """Copy a run's final weights to ``demo:<name>``, measure them on the full test split, write the card."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    model = load_model(run_dir)
    result = evaluate(model, build_eval_loader(model, dataclasses.replace(cfg.data, eval_subset=None)))
    path = save_model(model, WEIGHTS_DIR / f"{name}.safetensors")
    card = dict(
        name=f"demo:{name}", test_accuracy=round(result["acc"], 4), test_loss=round(result["loss"], 4),
        test_images=result["count"], parent=parent, command=command, training_time_s=round(seconds),
        machine=machine(cfg.train.threads), date=time.strftime("%Y-%m-%d"),
        data=data_card(cfg.data, result["count"]),
        model=model_metadata(model), config=cfg.to_dict(), size_bytes=path.stat().st_size, note=note)
    atomic_write(WEIGHTS_DIR / f"{name}.json", lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2) + "\n"))
    print(f"demo:{name}: test accuracy {100 * result['acc']:.2f}% ({result['count']} images), {path}")
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name", help="the demo name (demo:<name>)")
    parser.add_argument("--command", required=True, help="the command that trained the run")
    parser.add_argument("--seconds", type=float, required=True, help="wall-clock training time")
    parser.add_argument("--parent", default=None, help="the demo it was fine-tuned from")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    bundle_demo(args.run_dir, args.name, args.command, args.seconds, args.parent, args.note)


if __name__ == "__main__":
    main()

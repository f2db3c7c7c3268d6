"""Training the data-size sweep that ``vitlens.bias.sweep`` defines and summarises: ViT and CNN on the first N
Fashion-MNIST training images, the same optimizer steps and batch for every run, scored on the test split."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from ..bias.sweep import ARCHS, AUGMENT, MODELS, SEEDS, SIZES, sweep_models, sweep_results
from ..io import atomic_write
from ..models.loading import load_model
from .config import RunConfig, load_config
from .data import build_eval_loader
from .loop import evaluate, train


def sweep_config(arch: str, size: int, seed: int, *, steps: int, batch_size: int, threads: int | None = None,
                 eval_subset: int | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """The training config of one sweep point: the packaged recipe with the sweep's model, data and budget.

    Args:
        arch: ``vit`` or ``cnn`` (see :data:`vitlens.bias.sweep.MODELS`).
        size: training images (the first ``size`` of the training split).
        seed: initialisation, data order and augmentation seed.
        steps: optimizer steps (the compute rule: the same for every size and both architectures).
        batch_size: images per step.
        threads: CPU threads (torch default when None).
        eval_subset: test images used (all when None).
        overrides: further ``section.key=value`` config overrides.
    """
    if arch not in MODELS:
        raise ValueError(f"unknown sweep architecture {arch!r}; choose from {', '.join(MODELS)}")
    base, model = MODELS[arch]
    budget = [f"data.subset={size}", f"data.eval_subset={json.dumps(eval_subset)}", f"train.steps={steps}",
              f"train.batch_size={batch_size}", f"train.seed={seed}", f"train.threads={json.dumps(threads)}",
              # the warm-up is a fixed share of the budget, so short budgets still spend most steps at the peak
              f"schedule.warmup_steps={max(1, steps // 10)}",
              "train.eval=false",  # the test set is scored once, at the end, by run_point
              f"train.ckpt_every={steps}", "train.keep_last=1", "train.log_every=50"]
    pinned = [f"model.{k}={json.dumps(v)}" for k, v in model.items()]
    pinned += [f"augment.{k}={json.dumps(v)}" for k, v in AUGMENT[arch].items()]
    cfg = load_config(base, pinned + budget + list(overrides))
    return dataclasses.replace(cfg, name=f"bias-sweep-{arch}-n{size}-s{seed}")


def run_point(cfg: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train one config into ``run_dir`` and score it on the test split.

    Returns:
        ``test_acc``, ``test_loss``, ``test_count``, ``train_seconds`` and ``params``.
    """
    if Path(run_dir).exists():  # the sweep's own folder from an interrupted or older point: its JSON keeps results
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    run_dir = train(cfg, run_dir)
    seconds = time.perf_counter() - start
    model = load_model(run_dir)
    result = evaluate(model, build_eval_loader(model, cfg.data))
    return dict(test_acc=result["acc"], test_loss=result["loss"], test_count=result["count"],
                train_seconds=seconds, params=sum(p.numel() for p in model.parameters()))


def _key(record: dict[str, Any]) -> tuple:
    return record["arch"], record["size"], record["seed"], record["steps"], record["batch_size"]


def run_sweep(out: str | Path, *, sizes: Sequence[int] = SIZES, seeds: Sequence[int] = SEEDS,
              archs: Sequence[str] = ARCHS, steps: int = 1000, batch_size: int = 128, threads: int | None = None,
              eval_subset: int | None = None, runs_dir: str | Path = "runs/bias-sweep",
              overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train every (seed, size, architecture), writing ``out`` (JSON) after each point.

    Seed by seed, so a sweep cut short still holds whole curves.

    Points already in ``out`` with the same budget and models are kept, so an interrupted sweep continues where it
    stopped; a file made with another budget or other models is replaced.

    Args:
        out: results JSON (see :func:`vitlens.bias.sweep.sweep_results`).
        sizes: training-set sizes (first N images of the training split).
        seeds: seeds per point.
        archs: ``vit`` and/or ``cnn``.
        steps: optimizer steps per run, the same for every point (the compute rule).
        batch_size: images per step.
        threads: CPU threads per run.
        eval_subset: test images used (all 10,000 when None).
        runs_dir: where each run's directory goes.
        overrides: extra config overrides for every run.
    """
    out = Path(out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    # points of another budget or other models are not comparable: start over rather than mix them in one curve
    same = (previous.get("steps"), previous.get("batch_size"), previous.get("models")) == (
        steps, batch_size, sweep_models())
    records: list[dict[str, Any]] = previous["records"] if same else []
    done = {_key(r) for r in records}
    for seed in seeds:
        for size in sorted(sizes):
            for arch in archs:
                point = dict(arch=arch, size=size, seed=seed, steps=steps, batch_size=batch_size)
                if _key(point) in done:
                    continue
                cfg = sweep_config(arch, size, seed, steps=steps, batch_size=batch_size, threads=threads,
                                   eval_subset=eval_subset, overrides=overrides)
                point.update(run_point(cfg, Path(runs_dir) / cfg.name))
                point["epochs"] = steps * batch_size / size
                records.append(point)
                print(f"{arch} n={size} seed={seed}: test accuracy {point['test_acc']:.4f} "
                      f"({point['train_seconds']:.0f} s)", flush=True)
                _write(out, records, steps, batch_size)
    return _write(out, records, steps, batch_size)


def _write(out: Path, records: list[dict[str, Any]], steps: int, batch_size: int) -> dict[str, Any]:
    result = sweep_results(records, steps, batch_size)
    text = json.dumps(result, indent=1, allow_nan=False)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    return result

"""The training loop shared by ``vitlens pretrain`` and ``vitlens finetune`` (one process, or DDP via torchrun):
setup, restore, one optimizer step, evaluation, checkpoints."""
from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
import yaml
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3, random_seed
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import check_data_dir
from ..io import atomic_write
from ..models.loading import load_model, save_model
from ..models.vit import VisionTransformer
from .checkpoint import load_state, rng_state, save_checkpoint, set_rng_state
from .config import AugmentConfig, OptimConfig, RunConfig
from .data import TrainData, build_eval_loader, build_train_data, count_classes, preprocessing
from .distributed import Dist, setup_distributed
from .metrics import MetricsLog
from .model import build_model, compile_model
from .rundir import checkpoint_to_resume, prepare_run_dir, remove_created, remove_leftovers, write_failed
from .schedule import build_scheduler

log = logging.getLogger("vitlens")


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or infinite; nothing was written after the last good checkpoint."""


def _autocast(device: torch.device, amp: Any):
    """bf16 autocast: on by default on CUDA, opt-in on CPU (``train.amp=true``)."""
    enabled = device.type == "cuda" if amp == "auto" else bool(amp)
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, d: Dist = Dist(), amp: Any = "auto") -> dict[str, float]:
    """Top-1 accuracy (``acc``), mean cross-entropy (``loss``) and image ``count`` over the loader, summed over
    ranks."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=d.device)  # correct, loss sum, count
    for x, y in loader:
        x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
        with _autocast(d.device, amp):
            logits = model(x).float()
        totals += torch.stack([(logits.argmax(-1) == y).sum().double(),
                               nn.functional.cross_entropy(logits, y, reduction="sum").double(),
                               torch.tensor(len(y), dtype=torch.float64, device=d.device)])
    if d.world > 1:
        dist.all_reduce(totals)
    model.train(was_training)
    correct, loss, count = totals.tolist()
    return dict(acc=correct / max(count, 1), loss=loss / max(count, 1), count=int(count))


# ---- setup ------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A training run: its config, what it trains with, and how far it has come."""
    cfg: RunConfig
    dir: Path
    dist: Dist
    model: nn.Module  # the weights that are stepped and saved
    net: nn.Module  # what the forward pass goes through: ``model``, in DDP and/or compiled
    data: TrainData
    eval_loader: DataLoader | None
    optimizer: Optimizer
    scheduler: LRScheduler
    ema: ModelEmaV3 | None
    mixup: Mixup | None
    criterion: nn.Module
    total: int  # optimizer steps of the whole run
    step: int  # optimizer steps taken
    last_checkpoint: Path | None = None
    metrics: MetricsLog | None = None  # on the main process only
    clock: tuple[float, int] = (0.0, 0)  # time and step of the last log record, for images/s


def _run_dir(name: str, run_dir: str | Path | None, d: Dist) -> Path:
    """``run_dir``, or ``runs/<name>-<time>`` (rank 0's time on every rank)."""
    if run_dir is None:
        stamp = [f"runs/{name}-{datetime.now():%Y%m%d-%H%M%S}"]
        if d.world > 1:
            dist.broadcast_object_list(stamp)
        run_dir = stamp[0]
    return Path(run_dir)


def _initial_model(cfg: RunConfig, num_classes: int, checkpoint: Path | None, device: torch.device) -> nn.Module:
    """The checkpoint's weights when resuming, else a model built from the config, on ``device``."""
    if checkpoint is not None:
        model = load_model(checkpoint / "model.safetensors").train()
    else:
        model = build_model(cfg.model, num_classes)
        model.data_config = preprocessing(model, cfg.data, fresh="source" not in cfg.model)
    model.to(device)
    if device.type == "cuda" and not isinstance(model, VisionTransformer):
        model.to(memory_format=torch.channels_last)
    return model


def _optimizer(model: nn.Module, optim: OptimConfig, device: torch.device) -> Optimizer:
    """AdamW (pre-training) or SGD momentum (fine-tuning) through timm, no decay on biases and norms."""
    extra: dict[str, Any] = dict(betas=tuple(optim.betas)) if "adam" in optim.name else {}
    if optim.name in ("adam", "adamw") and device.type == "cuda":  # torch's fused kernels; timm's variants have none
        extra["fused"] = True
    return create_optimizer_v2(model, opt=optim.name, lr=optim.lr, weight_decay=optim.weight_decay,
                               momentum=optim.momentum, **extra)


def _loss(augment: AugmentConfig, num_classes: int) -> tuple[Mixup | None, nn.Module]:
    """Mixup / CutMix (with soft targets) when asked for, and the criterion with label smoothing."""
    if not (augment.mixup or augment.cutmix):
        return None, nn.CrossEntropyLoss(label_smoothing=augment.label_smoothing)
    mixup = Mixup(mixup_alpha=augment.mixup, cutmix_alpha=augment.cutmix, label_smoothing=augment.label_smoothing,
                  num_classes=num_classes)
    return mixup, SoftTargetCrossEntropy()


def setup(cfg: RunConfig, d: Dist, run_dir: Path, checkpoint: Path | None) -> Run:
    """Model, data, optimizer, schedule, EMA and loss of a run, restored from ``checkpoint`` when given.

    Every rank builds identical initial weights (one seed), then draws its own augmentation and dropout.
    """
    torch.manual_seed(cfg.train.seed)
    num_classes = count_classes(cfg.data)
    model = _initial_model(cfg, num_classes, checkpoint, d.device)
    data = build_train_data(model, cfg.data, cfg.augment, cfg.train.batch_size, cfg.train.accum_steps,
                            cfg.train.seed, d)
    total = cfg.train.steps or cfg.train.epochs * data.steps_per_epoch
    eval_loader = build_eval_loader(model, cfg.data, d) if cfg.train.eval else None
    optimizer = _optimizer(model, cfg.optim, d.device)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.optim.lr, total)
    # Polyak averaging; timm's warm-up lets the average forget the initial weights on short runs.
    ema = ModelEmaV3(model, decay=cfg.train.ema_decay, use_warmup=True) if cfg.train.ema_decay else None
    mixup, criterion = _loss(cfg.augment, num_classes)
    if checkpoint is not None:
        step = restore(checkpoint, optimizer, scheduler, ema, d, cfg.train.seed)
    else:
        step = 0
        random_seed(cfg.train.seed, d.rank)  # torch, numpy (mixup) and python (RandAugment) generators, per rank
    net = compile_model(DistributedDataParallel(model) if d.world > 1 else model, cfg.train.compile)
    return Run(cfg=cfg, dir=run_dir, dist=d, model=model, net=net, data=data, eval_loader=eval_loader,
               optimizer=optimizer, scheduler=scheduler, ema=ema, mixup=mixup, criterion=criterion, total=total,
               step=step, last_checkpoint=checkpoint)


def restore(checkpoint: Path, optimizer: Optimizer, scheduler: LRScheduler, ema: ModelEmaV3 | None, d: Dist,
            seed: int) -> int:
    """Load the training state of ``checkpoint`` (its weights are already in the model) and return its step.

    Every random generator continues where this rank's left off; a run resumed with another number of processes
    is re-seeded instead.
    """
    state = load_state(checkpoint)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.module.load_state_dict(state["ema"])
    step = int(state["step"])
    if len(state["rng"]) != d.world:
        log.warning("resuming %d-process run with %d processes: augmentation randomness is re-seeded",
                    len(state["rng"]), d.world)
        random_seed(seed + step, d.rank)
    else:
        set_rng_state(state["rng"][d.rank])
    return step


# ---- one step, evaluation, checkpoints --------------------------------------------------------------
def _accumulate_gradients(run: Run, batches: Iterator) -> torch.Tensor:
    """Forward and backward over ``accum_steps`` micro-batches; their summed loss (this rank's)."""
    d, accum = run.dist, run.cfg.train.accum_steps
    loss_sum = torch.zeros((), device=d.device)
    for i in range(accum):
        x, y = next(batches)
        x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
        if run.mixup is not None:
            x, y = run.mixup(x, y)
        sync = i == accum - 1 or d.world == 1  # DDP all-reduces the gradients on the last micro-batch only
        with (nullcontext() if sync else run.net.no_sync()), _autocast(d.device, run.cfg.train.amp):
            logits = run.net(x)
        # The loss on float32 logits, outside autocast: CUDA's autocast (torch 2.11, an H200) computed
        # cross-entropy in bf16, which rounds log(10) to 2.297 and the late, small changes of the loss away.
        loss = run.criterion(logits.float(), y) / accum
        loss.backward()
        loss_sum += loss.detach()
    return loss_sum


def train_step(run: Run, batches: Iterator) -> tuple[float, float]:
    """One optimizer step: gradients, clipping, update, schedule, EMA. Returns the loss (mean over ranks) and the
    gradient norm before clipping; raises :class:`TrainingDiverged` before updating if either is not finite."""
    loss_sum = _accumulate_gradients(run, batches)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.optim.clip_grad or math.inf)
    if run.dist.world > 1:
        dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
    loss, norm = loss_sum.item(), grad_norm.item()
    if not (math.isfinite(loss) and math.isfinite(norm)):
        raise TrainingDiverged(
            f"loss is {loss} (gradient norm {norm}) at step {run.step + 1}; stopped before updating the weights. "
            f"Last good checkpoint: {run.last_checkpoint or 'none written yet'}. Lower optim.lr, keep "
            f"optim.clip_grad, or turn train.amp off, then run again (with --resume to start from it).")
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update(run.model, step=run.step)
    run.step += 1
    return loss, norm


def _log_step(run: Run, bar: tqdm, epoch: int, loss: float, norm: float) -> None:
    """The progress bar's numbers and a ``metrics.jsonl`` record; images/s since the last record."""
    now, (then, then_step) = time.perf_counter(), run.clock
    img_s = (run.step - then_step) * run.cfg.train.batch_size / (now - then)
    run.clock = now, run.step
    lr = run.optimizer.param_groups[0]["lr"]
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{img_s:.0f}")
    if run.dist.main:
        run.metrics.write(dict(step=run.step, epoch=epoch, loss=loss, lr=lr, grad_norm=norm, img_s=img_s))


def _evaluate_epoch(run: Run, bar: tqdm, epoch: int) -> None:
    """Score the weights (the EMA's when on) on the evaluation split: monitoring only, no model selection."""
    result = evaluate(run.ema.module if run.ema is not None else run.model, run.eval_loader, run.dist,
                      run.cfg.train.amp)
    if run.dist.main:
        run.metrics.write(dict(step=run.step, epoch=epoch, eval_acc=result["acc"], eval_loss=result["loss"]))
        bar.write(f"epoch {epoch}: eval accuracy {result['acc']:.4f}, loss {result['loss']:.4f} "
                  f"({result['count']} images)")


def save_run_checkpoint(run: Run) -> Path:
    """Write ``checkpoints/step_<step>`` (weights, optimizer, schedule, EMA, step, every rank's RNG state) from the
    main process, and return its path (the run folder on other ranks)."""
    rngs = [None] * run.dist.world
    if run.dist.world > 1:
        dist.all_gather_object(rngs, rng_state())
    else:
        rngs = [rng_state()]
    path = None
    if run.dist.main:
        state = dict(optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(), step=run.step,
                     rng=rngs, ema=run.ema.module.state_dict() if run.ema is not None else None)
        path = save_checkpoint(run.dir, run.step, run.model, state, run.cfg.train.keep_last)
    if run.dist.world > 1:
        dist.barrier()
    return path or run.dir


# ---- the run ----------------------------------------------------------------------------------------
def run_loop(run: Run) -> bool:
    """Train from ``run.step`` to the end, epoch by epoch; False if it stopped early at ``train.stop_at``."""
    t, per_epoch = run.cfg.train, run.data.steps_per_epoch
    with tqdm(total=run.total, initial=run.step, disable=not run.dist.main, dynamic_ncols=True,
              desc=run.dir.name) as bar:
        run.clock = time.perf_counter(), run.step
        while run.step < run.total:
            epoch, batches = run.step // per_epoch, run.data.batches(run.step)
            for _ in range(per_epoch - run.step % per_epoch):
                loss, norm = train_step(run, batches)
                bar.update(1)
                if run.step % t.log_every == 0 or run.step == run.total:
                    _log_step(run, bar, epoch, loss, norm)
                if run.step % t.ckpt_every == 0 or run.step in (run.total, t.stop_at):
                    run.last_checkpoint = save_run_checkpoint(run)
                if run.step in (run.total, t.stop_at):
                    break
            if run.eval_loader is not None and (run.step % per_epoch == 0 or run.step == run.total):
                _evaluate_epoch(run, bar, epoch)
            if run.step == t.stop_at and run.step < run.total:
                return False
    return True


def train(cfg: RunConfig | Mapping[str, Any], run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Train as the config says and return the run directory (``load_model`` accepts it).

    Before building data or a model it checks the data folder and proves the run folder can be written; leftovers
    of writes a kill interrupted are removed. A write that fails mid-run (a full disk) stops it with
    :class:`RunWriteError`, an OSError naming the path and the last checkpoint, which is intact.

    Args:
        cfg: a :class:`RunConfig` (see :func:`load_config`), or its YAML shape (checked the same way).
        run_dir: where config, metrics and checkpoints go; default ``runs/<name>-<time>``.
        resume: continue from the newest complete checkpoint in ``run_dir`` (model, optimizer, scheduler, EMA,
            step, data position and every RNG), so the run ends exactly as an uninterrupted one would (for
            map-style datasets; a streamed one continues at the same step in its own order). A folder whose run
            stopped before its first checkpoint starts again from step 0.
    """
    cfg = cfg if isinstance(cfg, RunConfig) else RunConfig.from_dict(cfg)
    d = setup_distributed(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    check_data_dir(cfg.data.dataset, cfg.data.data_dir, ("train", "test") if cfg.train.eval else ("train",))
    run_dir = _run_dir(cfg.name, run_dir, d)
    created = prepare_run_dir(run_dir) if d.main else []
    checkpoint = checkpoint_to_resume(run_dir, resume)
    if d.main:
        remove_leftovers(run_dir)
        if resume and checkpoint is None:
            print(f"{run_dir} has no complete checkpoint (its run stopped before the first): starting it again from "
                  f"step 0 with its config")
    try:
        run = setup(cfg, d, run_dir, checkpoint)
    except BaseException:
        remove_created(created)
        raise
    try:
        finished = _write_and_train(run, resume)
    except OSError as e:
        raise write_failed(e, run_dir, run.step, run.last_checkpoint) from e
    finally:
        if run.metrics is not None:
            run.metrics.close()
    if d.main:
        print(f"done: {run_dir}/model.safetensors (load with vitlens.load_model({str(run_dir)!r}))" if finished else
              f"stopped at step {run.step} as asked (train.stop_at); continue with --resume {run_dir}")
    return run_dir


def _write_and_train(run: Run, resume: bool) -> bool:
    """Write the run's config.yaml and open its metrics, train, and save the final weights; False if it stopped at
    ``train.stop_at``."""
    if run.dist.main:
        config_text = yaml.safe_dump(run.cfg.to_dict(), sort_keys=False)
        atomic_write(run.dir / "config.yaml", lambda tmp: Path(tmp).write_text(config_text))
        run.metrics = MetricsLog(run.dir, run.step if resume else None)  # a restart from step 0 drops every record
        if run.last_checkpoint is not None:
            print(f"resuming {run.dir} from step {run.step} of {run.total}")
    finished = run_loop(run)
    if run.dist.main and finished:
        save_model(run.ema.module if run.ema is not None else run.model, run.dir / "model.safetensors",
                   extra=dict(step=run.step))
    return finished

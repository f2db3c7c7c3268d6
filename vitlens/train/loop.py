"""The training loop shared by ``vitlens pretrain`` and ``vitlens finetune`` (one process, or DDP via torchrun)."""
from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import yaml
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3, random_seed
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Subset
from tqdm import tqdm

from ..data import DATASET_STATS, SMALL_DATASETS, build_dataset, build_transform, num_classes_of
from ..io import atomic_write
from ..models.cnn import create_cnn
from ..models.configs import MODEL_CONFIGS, create_model
from ..models.loading import load_model, save_model
from ..models.vit import VisionTransformer
from .checkpoint import list_checkpoints, load_state, rng_state, save_checkpoint, set_rng_state
from .config import compiles

log = logging.getLogger("vitlens")


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or infinite; nothing was written after the last good checkpoint."""


# ---- processes --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK."""
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> Dist:
    """Join the torchrun job if there is one (nccl on CUDA, gloo on CPU) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank() if world > 1 else 0, world, device)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffle by seed + epoch, rank-strided) that can start part-way into an epoch,
    so a resumed run sees exactly the batches the uninterrupted run would have seen."""

    start = 0  # samples of this rank's share to skip in the current epoch

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


# ---- model and data ---------------------------------------------------------------------------------
def build_model(model_cfg: dict[str, Any], num_classes: int) -> nn.Module:
    """A fresh model (``arch``) or a fine-tuning start (``source``) from the ``model`` section.

    ``arch``: ``vit`` (the VisionTransformer fields given), a :func:`vitlens.create_model` name, or a timm CNN
    for :func:`vitlens.create_cnn`. ``source``: anything :func:`vitlens.load_model` accepts; as in the paper
    (section 3.2) the whole pre-training head is replaced by one zero-initialised linear layer, and the position
    embeddings are 2-D interpolated when ``img_size`` differs.
    """
    cfg = dict(model_cfg)
    if source := cfg.pop("source", None):
        img_size = cfg.pop("img_size", None)
        model = load_model(source, img_size=img_size, **cfg)
        if isinstance(model, VisionTransformer):
            model.reset_head(num_classes)
        else:  # a timm CNN: new classifier, zeroed like the ViT's
            model.reset_classifier(num_classes)
            nn.init.zeros_(model.get_classifier().weight)
            nn.init.zeros_(model.get_classifier().bias)
            side = img_size or model.data_config["input_size"][-1]
            model.vitlens_spec.update(num_classes=num_classes, img_size=side)
            model.data_config["input_size"] = (model.data_config["input_size"][0], side, side)
        return model.train()
    arch = cfg.pop("arch", "vit")
    cfg.setdefault("num_classes", num_classes)
    if arch == "vit":
        return VisionTransformer(**cfg)
    if arch in MODEL_CONFIGS:
        return create_model(arch, **cfg)
    return create_cnn(arch, **cfg)


def _data_config(model: nn.Module, data_cfg: dict[str, Any], fresh: bool) -> dict[str, Any]:
    """The model's preprocessing; a fresh model takes the dataset's mean/std unless the config names them."""
    config = dict(model.data_config)
    mean, std = DATASET_STATS.get(data_cfg["dataset"], ((0.5,), (0.5,)))
    chans = config["input_size"][0]
    if data_cfg.get("mean") or fresh:
        config["mean"] = tuple(data_cfg.get("mean") or mean * (chans // len(mean)))
    if data_cfg.get("std") or fresh:
        config["std"] = tuple(data_cfg.get("std") or std * (chans // len(std)))
    return config


def _workers(setting: Any, dataset: str, device: torch.device, world: int) -> int:
    """``auto``: in-memory small datasets load in-process on CPU (workers would steal the compute cores);
    otherwise up to 8 workers per process."""
    if setting != "auto":
        return int(setting)
    if device.type == "cpu" and dataset in SMALL_DATASETS:
        return 0
    return min(8, max(1, (os.cpu_count() or 2) // world - 1))


def build_eval_loader(model: nn.Module, data_cfg: dict[str, Any], d: Dist, batch_size: int = 256,
                      split: str = "test") -> DataLoader:
    """This rank's share (every world-th item, no padding) of the evaluation split, preprocessed for ``model``."""
    transform = build_transform(model.data_config, data_cfg["dataset"], train=False)
    ds: Dataset = build_dataset(data_cfg["dataset"], split, transform, data_cfg.get("data_dir"),
                                data_cfg.get("eval_subset"))
    if d.world > 1 and not isinstance(ds, IterableDataset):  # streams split themselves over ranks
        ds = Subset(ds, range(d.rank, len(ds), d.world))
    workers = _workers(data_cfg.get("workers", "auto"), data_cfg["dataset"], d.device, d.world)
    # Its own generator: starting an iterator draws a seed, which from the global RNG would make a run that
    # evaluates after a checkpoint differ from one resumed from that checkpoint.
    return DataLoader(ds, batch_size=batch_size, num_workers=workers, pin_memory=d.device.type == "cuda",
                      generator=torch.Generator())


def compile_model(model: nn.Module, setting: Any) -> nn.Module:
    """``train.compile``: false; true (torch.compile's default); ``tuned``, the default plus Inductor's
    coordinate-descent tuning of the kernels it generates (ViT-B/16 on an H200: +2 to 3 % training throughput for
    about a minute more compile time); or a torch.compile mode such as ``max-autotune``."""
    if not compiles(setting):
        return model
    if setting is True or setting in ("true", "default"):
        return torch.compile(model)
    if setting == "tuned":
        return torch.compile(model, options={"coordinate_descent_tuning": True})
    modes = torch._inductor.list_mode_options()
    if setting not in modes:
        raise ValueError(f"train.compile={setting!r}: use true, false, tuned or a torch.compile mode "
                         f"({', '.join(modes)})")
    return torch.compile(model, mode=setting)


def _autocast(device: torch.device, amp: Any):
    """bf16 autocast: on by default on CUDA, opt-in on CPU (``train.amp=true``)."""
    enabled = device.type == "cuda" if amp == "auto" else bool(amp)
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, d: Dist = Dist(), amp: Any = "auto") -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy over the loader (summed over ranks)."""
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


DECAYS = ("cosine", "linear")


def _check_decay(decay: str) -> None:
    if decay not in DECAYS:
        raise ValueError(f"schedule.decay must be one of {DECAYS}, got {decay!r}")


def lr_factor(step: int, total: int, warmup: int, decay: str, min_ratio: float) -> float:
    """Linear warm-up to the peak over ``warmup`` steps, then linear or cosine decay to ``min_ratio`` (paper App. B)."""
    _check_decay(decay)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if decay == "cosine":
        shape = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        shape = 1 - progress
    return min_ratio + (1 - min_ratio) * shape


# ---- the run --------------------------------------------------------------------------------------
class MetricsLog:
    """``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars when tensorboard is installed."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():  # drop what the interrupted run logged after its checkpoint
            keep = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line).get("step", 0) <= resume_step]
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
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def train(cfg: dict[str, Any], run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Train as the config says and return the run directory (``load_model`` accepts it).

    Args:
        cfg: sections ``model``, ``data``, ``augment``, ``optim``, ``schedule``, ``train`` (see
            ``vitlens/configs/*.yaml``).
        run_dir: where config, metrics and checkpoints go; default ``runs/<name>-<time>``.
        resume: continue from the newest complete checkpoint in ``run_dir`` (model, optimizer, scheduler, EMA,
            step, data position and every RNG), so the run ends exactly as an uninterrupted one would (for
            map-style datasets; a streamed one continues at the same step in its own order).
    """
    tcfg, data_cfg, optim_cfg, sched_cfg = cfg["train"], cfg["data"], cfg["optim"], cfg["schedule"]
    augment = cfg.get("augment", {})
    _check_decay(sched_cfg.get("decay", "cosine"))  # before any step, not after the warm-up
    d = setup_distributed(tcfg.get("device"))
    if tcfg.get("threads"):
        torch.set_num_threads(int(tcfg["threads"]))
    if run_dir is None:
        stamp = [f"runs/{cfg.get('name', 'run')}-{datetime.now():%Y%m%d-%H%M%S}"]
        if d.world > 1:
            dist.broadcast_object_list(stamp)  # every rank writes to rank 0's folder name
        run_dir = stamp[0]
    run_dir = Path(run_dir)
    checkpoints = list_checkpoints(run_dir) if resume else []
    if resume and not checkpoints:
        raise FileNotFoundError(f"--resume: {run_dir} has no complete checkpoint (checkpoints/step_*/state.pt)")
    if not resume and ((run_dir / "metrics.jsonl").exists() or list_checkpoints(run_dir)):
        raise ValueError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, or choose another "
                         f"--out (a second run there would mix its metrics and checkpoints with the first's)")

    # Model: identical initial weights on every rank, then per-rank randomness for augmentation and dropout.
    seed = int(tcfg.get("seed", 0))
    torch.manual_seed(seed)
    num_classes = data_cfg.get("num_classes") or num_classes_of(build_dataset(
        data_cfg["dataset"], "train", None, data_cfg.get("data_dir"), data_cfg.get("subset")))
    if checkpoints:
        model = load_model(checkpoints[-1] / "model.safetensors").train()
    else:
        model = build_model(cfg["model"], num_classes)
        model.data_config = _data_config(model, data_cfg, fresh="source" not in cfg["model"])
    model.to(d.device)
    if d.device.type == "cuda" and not isinstance(model, VisionTransformer):
        model.to(memory_format=torch.channels_last)

    # Data: the global batch is split over ranks and accumulation steps.
    accum = int(tcfg.get("accum_steps", 1))
    batch = int(tcfg["batch_size"])
    if batch % (d.world * accum):
        raise ValueError(f"train.batch_size {batch} is not divisible by processes x accum_steps = {d.world * accum}")
    micro = batch // (d.world * accum)
    train_tf = build_transform(model.data_config, data_cfg["dataset"], train=True, augment=augment)
    train_ds = build_dataset(data_cfg["dataset"], "train", train_tf, data_cfg.get("data_dir"), data_cfg.get("subset"))
    workers = _workers(data_cfg.get("workers", "auto"), data_cfg["dataset"], d.device, d.world)
    # Streamed datasets (timm's wds/, tfds/, hfids/ readers) shard, shuffle and size themselves per rank and worker;
    # map-style ones go through the resumable DistributedSampler.
    streamed = isinstance(train_ds, IterableDataset)
    sampler = None if streamed else ResumableSampler(train_ds, num_replicas=d.world, rank=d.rank, shuffle=True,
                                                     seed=seed, drop_last=True)
    if streamed and hasattr(train_ds, "set_loader_cfg"):
        train_ds.set_loader_cfg(num_workers=workers)
    loader_gen = torch.Generator()  # the loader's own generator, so creating an iterator never touches the global RNG
    loader = DataLoader(train_ds, batch_size=micro, sampler=sampler, drop_last=True, generator=loader_gen,
                        num_workers=workers, pin_memory=d.device.type == "cuda")
    steps_per_epoch = (len(train_ds) if streamed else sampler.num_samples) // (micro * accum)
    if steps_per_epoch == 0:
        raise ValueError(f"the training set ({len(train_ds)} items) is smaller than one global batch ({batch})")
    total = int(tcfg.get("steps") or tcfg["epochs"] * steps_per_epoch)
    eval_loader = build_eval_loader(model, data_cfg, d) if tcfg.get("eval", True) else None

    # Optimisation: AdamW (pre-training) or SGD momentum (fine-tuning) through timm, no decay on biases and norms.
    opt_name = optim_cfg.get("name", "adamw")
    extra = dict(betas=tuple(optim_cfg.get("betas", (0.9, 0.999)))) if "adam" in opt_name else {}
    if opt_name in ("adam", "adamw") and d.device.type == "cuda":  # torch's fused kernels; timm's variants have none
        extra["fused"] = True
    optimizer = create_optimizer_v2(model, opt=opt_name, lr=float(optim_cfg["lr"]),
                                    weight_decay=float(optim_cfg.get("weight_decay", 0.0)),
                                    momentum=float(optim_cfg.get("momentum", 0.9)), **extra)
    min_ratio = float(sched_cfg.get("min_lr", 0.0)) / float(optim_cfg["lr"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
        s, total, int(sched_cfg.get("warmup_steps", 0)), sched_cfg.get("decay", "cosine"), min_ratio))
    # Polyak averaging; timm's warm-up lets the average forget the initial weights on short runs.
    ema = ModelEmaV3(model, decay=float(tcfg["ema_decay"]), use_warmup=True) if tcfg.get("ema_decay") else None
    mixup = None
    if augment.get("mixup") or augment.get("cutmix"):
        mixup = Mixup(mixup_alpha=float(augment.get("mixup", 0)), cutmix_alpha=float(augment.get("cutmix", 0)),
                      label_smoothing=float(augment.get("label_smoothing", 0)), num_classes=num_classes)
        criterion: nn.Module = SoftTargetCrossEntropy()
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=float(augment.get("label_smoothing", 0)))

    step = 0
    if checkpoints:
        state = load_state(checkpoints[-1])
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
    else:
        random_seed(seed, d.rank)  # torch, numpy (mixup) and python (RandAugment) generators, per rank

    net = compile_model(DistributedDataParallel(model) if d.world > 1 else model, tcfg.get("compile"))

    if d.main:
        atomic_write(run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(yaml.safe_dump(cfg, sort_keys=False)))
        metrics = MetricsLog(run_dir, step if checkpoints else None)
        if checkpoints:
            print(f"resuming {run_dir} from step {step} of {total}")
    clip = float(optim_cfg.get("clip_grad") or math.inf)
    keep_last, ckpt_every = int(tcfg.get("keep_last", 3)), int(tcfg.get("ckpt_every", 1000))
    log_every, stop_at = int(tcfg.get("log_every", 20)), tcfg.get("stop_at")
    last_ckpt = checkpoints[-1] if checkpoints else None

    def checkpoint() -> Path:
        rngs = [None] * d.world
        if d.world > 1:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        path = None
        if d.main:
            state = dict(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), step=step, rng=rngs,
                         ema=ema.module.state_dict() if ema is not None else None)
            path = save_checkpoint(run_dir, step, model, state, keep_last)
        if d.world > 1:
            dist.barrier()
        return path or run_dir

    bar = tqdm(total=total, initial=step, disable=not d.main, dynamic_ncols=True, desc=run_dir.name)
    t_last, n_last = time.perf_counter(), step
    while step < total:
        epoch = step // steps_per_epoch
        loader_gen.manual_seed(seed + epoch + 1_000_003 * d.rank)  # loader workers' seeds: per rank and epoch
        if streamed:
            if hasattr(train_ds, "set_epoch"):
                train_ds.set_epoch(epoch)
            batches = iter(loader)
            # A stream cannot seek: a resumed run reads past the batches this epoch already used. The shuffle
            # buffer starts afresh, so the order is the stream's, not bitwise the interrupted run's.
            for _ in range((step % steps_per_epoch) * accum):
                next(batches)
        else:
            sampler.set_epoch(epoch)
            sampler.start = (step % steps_per_epoch) * micro * accum
            batches = iter(loader)
        for _ in range(steps_per_epoch - step % steps_per_epoch):
            loss_sum = torch.zeros((), device=d.device)
            for i in range(accum):
                x, y = next(batches)
                x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
                if mixup is not None:
                    x, y = mixup(x, y)
                sync = i == accum - 1 or d.world == 1
                with (nullcontext() if sync else net.no_sync()), _autocast(d.device, tcfg.get("amp", "auto")):
                    logits = net(x)
                # The loss on float32 logits, outside autocast: CUDA's autocast (torch 2.11, an H200) computed
                # cross-entropy in bf16, which rounds log(10) to 2.297 and the late, small changes of the loss away.
                loss = criterion(logits.float(), y) / accum
                loss.backward()
                loss_sum += loss.detach()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            if d.world > 1:
                dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
            loss_value, norm_value = loss_sum.item(), grad_norm.item()
            if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                bar.close()
                if d.main:
                    metrics.close()
                raise TrainingDiverged(
                    f"loss is {loss_value} (gradient norm {norm_value}) at step {step + 1}; stopped before updating "
                    f"the weights. Last good checkpoint: {last_ckpt or 'none written yet'}. Lower optim.lr, keep "
                    f"optim.clip_grad, or turn train.amp off, then run again (with --resume to start from it).")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update(model, step=step)
            step += 1
            bar.update(1)
            if step % log_every == 0 or step == total:
                now = time.perf_counter()
                img_s = (step - n_last) * batch / (now - t_last)
                t_last, n_last = now, step
                lr = optimizer.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", img_s=f"{img_s:.0f}")
                if d.main:
                    metrics.write(dict(step=step, epoch=epoch, loss=loss_value, lr=lr, grad_norm=norm_value,
                                       img_s=img_s))
            if step % ckpt_every == 0 or step == total or step == stop_at:
                last_ckpt = checkpoint()
            if step == stop_at or step == total:
                break
        if eval_loader is not None and (step % steps_per_epoch == 0 or step == total):
            result = evaluate(ema.module if ema is not None else model, eval_loader, d, tcfg.get("amp", "auto"))
            if d.main:
                metrics.write(dict(step=step, epoch=epoch, eval_acc=result["acc"], eval_loss=result["loss"]))
                bar.write(f"epoch {epoch}: eval accuracy {result['acc']:.4f}, loss {result['loss']:.4f} "
                          f"({result['count']} images)")
        if step == stop_at and step < total:
            bar.close()
            if d.main:
                print(f"stopped at step {step} as asked (train.stop_at); continue with --resume {run_dir}")
                metrics.close()
            return run_dir
    bar.close()
    if d.main:
        final = ema.module if ema is not None else model
        save_model(final, run_dir / "model.safetensors", extra=dict(step=step))
        metrics.close()
        print(f"done: {run_dir}/model.safetensors (load with vitlens.load_model({str(run_dir)!r}))")
    return run_dir

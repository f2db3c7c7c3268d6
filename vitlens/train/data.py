"""The training and evaluation data of a run: datasets, preprocessing for the model, and this rank's loaders."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Subset

from ..data import DATASET_STATS, SMALL_DATASETS, build_dataset, build_transform, num_classes_of
from .config import AugmentConfig, DataConfig
from .distributed import Dist


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffle by seed + epoch, rank-strided) that can start part-way into an epoch,
    so a resumed run sees exactly the batches the uninterrupted run would have seen."""

    start = 0  # samples of this rank's share to skip in the current epoch

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


def count_classes(data: DataConfig) -> int:
    """``data.num_classes``, else the classes of the training split."""
    return data.num_classes or num_classes_of(build_dataset(data.dataset, "train", None, data.data_dir, data.subset))


def preprocessing(model: nn.Module, data: DataConfig, fresh: bool) -> dict[str, Any]:
    """The model's ``data_config``; a fresh model takes the dataset's mean/std unless the config names them (a
    fine-tuning start keeps its source's)."""
    config = dict(model.data_config)
    mean, std = DATASET_STATS.get(data.dataset, ((0.5,), (0.5,)))
    chans = config["input_size"][0]
    if data.mean or fresh:
        config["mean"] = tuple(data.mean or mean * (chans // len(mean)))
    if data.std or fresh:
        config["std"] = tuple(data.std or std * (chans // len(std)))
    return config


def _workers(data: DataConfig, d: Dist) -> int:
    """``auto``: in-memory small datasets load in-process on CPU (workers would steal the compute cores);
    otherwise up to 8 workers per process."""
    if data.workers != "auto":
        return data.workers
    if d.device.type == "cpu" and data.dataset in SMALL_DATASETS:
        return 0
    return min(8, max(1, (os.cpu_count() or 2) // d.world - 1))


def build_eval_loader(model: nn.Module, data: DataConfig, d: Dist = Dist(), batch_size: int = 256,
                      split: str = "test") -> DataLoader:
    """This rank's share (every world-th item, no padding) of an evaluation split, preprocessed for ``model``.

    Args:
        model: its ``data_config`` gives the preprocessing.
        data: ``dataset``, ``data_dir``, ``eval_subset`` (the first N items) and ``workers``.
        d: this process (:func:`setup_distributed`).
        batch_size: images per batch on this rank.
        split: ``test``, ``train``, or ``val`` for folders and timm datasets.
    """
    transform = build_transform(model.data_config, data.dataset, train=False)
    ds: Dataset = build_dataset(data.dataset, split, transform, data.data_dir, data.eval_subset)
    if d.world > 1 and not isinstance(ds, IterableDataset):  # streams split themselves over ranks
        ds = Subset(ds, range(d.rank, len(ds), d.world))
    # Its own generator: starting an iterator draws a seed, which from the global RNG would make a run that
    # evaluates after a checkpoint differ from one resumed from that checkpoint.
    return DataLoader(ds, batch_size=batch_size, num_workers=_workers(data, d), pin_memory=d.device.type == "cuda",
                      generator=torch.Generator())


@dataclass
class TrainData:
    """This rank's view of the training split: the global batch split over ranks and accumulation steps.

    Map-style datasets go through the resumable DistributedSampler; streamed ones (timm's wds/, tfds/, hfids/
    readers) shard, shuffle and size themselves per rank and worker (``sampler`` is None).
    """
    dataset: Dataset
    loader: DataLoader
    sampler: ResumableSampler | None
    generator: torch.Generator  # the loader's own, so creating an iterator never touches the global RNG
    micro_batch: int
    accum_steps: int
    steps_per_epoch: int
    seed: int
    rank: int

    def batches(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The micro-batches of the epoch that ``step`` falls in, from ``step`` on."""
        epoch, done = divmod(step, self.steps_per_epoch)
        self.generator.manual_seed(self.seed + epoch + 1_000_003 * self.rank)  # loader workers' seeds
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
            self.sampler.start = done * self.micro_batch * self.accum_steps
            return iter(self.loader)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        batches = iter(self.loader)
        # A stream cannot seek: a resumed run reads past the batches this epoch already used. The shuffle buffer
        # starts afresh, so the order is the stream's, not bitwise the interrupted run's.
        for _ in range(done * self.accum_steps):
            next(batches)
        return batches


def build_train_data(model: nn.Module, data: DataConfig, augment: AugmentConfig, batch_size: int, accum_steps: int,
                     seed: int, d: Dist) -> TrainData:
    """The training split with augmentation, preprocessed for ``model``, as this rank reads it.

    Args:
        model: its ``data_config`` gives the preprocessing.
        data: the dataset and its loading.
        augment: the training augmentation.
        batch_size: the global batch (all ranks, all accumulation steps).
        accum_steps: micro-batches per optimizer step.
        seed: the data order's seed.
        d: this process.
    """
    if batch_size % (d.world * accum_steps):
        raise ValueError(f"train.batch_size {batch_size} is not divisible by processes x accum_steps = "
                         f"{d.world * accum_steps}")
    micro = batch_size // (d.world * accum_steps)
    transform = build_transform(model.data_config, data.dataset, train=True, augment=augment.transform_options())
    ds = build_dataset(data.dataset, "train", transform, data.data_dir, data.subset)
    workers = _workers(data, d)
    streamed = isinstance(ds, IterableDataset)
    sampler = None if streamed else ResumableSampler(ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=seed,
                                                     drop_last=True)
    if streamed and hasattr(ds, "set_loader_cfg"):
        ds.set_loader_cfg(num_workers=workers)
    generator = torch.Generator()
    loader = DataLoader(ds, batch_size=micro, sampler=sampler, drop_last=True, generator=generator,
                        num_workers=workers, pin_memory=d.device.type == "cuda")
    steps_per_epoch = (len(ds) if streamed else sampler.num_samples) // (micro * accum_steps)
    if steps_per_epoch == 0:
        raise ValueError(f"the training set ({len(ds)} items) is smaller than one global batch ({batch_size})")
    return TrainData(dataset=ds, loader=loader, sampler=sampler, generator=generator, micro_batch=micro,
                     accum_steps=accum_steps, steps_per_epoch=steps_per_epoch, seed=seed, rank=d.rank)

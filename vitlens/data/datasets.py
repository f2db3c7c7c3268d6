"""Datasets by name and their transforms: Fashion-MNIST, CIFAR, image folders, timm's readers, synthetic."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform, rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torch.utils.data import Dataset
from torchvision import transforms as T

from .fashion_mnist import MEAN as FASHION_MEAN, STD as FASHION_STD, FashionMNIST, locate

# Native size and channels of the small-image datasets; anything else is treated as natural images.
SMALL_DATASETS = {"fashion_mnist": (28, 1), "cifar10": (32, 3), "cifar100": (32, 3), "synthetic": (32, 3)}
DATASET_STATS = {"fashion_mnist": (FASHION_MEAN, FASHION_STD),
                 "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                 "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}


class SyntheticDataset(Dataset):
    """A learnable toy task for tests: each class is a fixed random image, each sample that image plus noise.

    Args:
        num_samples: dataset length.
        num_classes: number of classes (templates).
        img_size: side of the square images.
        in_chans: 1 (mode "L") or 3 (mode "RGB").
        noise: standard deviation of the per-sample noise, in pixel units of 0..255.
        seed: fixes templates, labels and noise, so every process sees the same data.
        transform: applied to each PIL image.
    """

    def __init__(self, num_samples: int = 512, num_classes: int = 10, img_size: int = 32, in_chans: int = 3,
                 noise: float = 40.0, seed: int = 0, transform: Callable | None = None) -> None:
        rng = np.random.default_rng(seed)
        shape = (img_size, img_size) if in_chans == 1 else (img_size, img_size, in_chans)
        templates = rng.uniform(0, 255, (num_classes, *shape))
        self.targets = rng.integers(0, num_classes, num_samples)
        self.images = np.clip(templates[self.targets] + rng.normal(0, noise, (num_samples, *shape)), 0, 255)
        self.images = self.images.astype(np.uint8)
        self.classes = tuple(str(c) for c in range(num_classes))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index])
        return (self.transform(img) if self.transform else img), int(self.targets[index])


def build_transform(data_config: Mapping[str, Any], dataset: str, train: bool,
                    augment: Mapping[str, Any] | None = None) -> Callable:
    """Preprocessing from a model's ``data_config`` (input size, mean, std, interpolation, crop_pct).

    Small-image datasets keep the whole image, resized to the model's input if it differs, and train with the
    usual small-image augmentation (pad-and-crop, flip, optional RandAugment and random erasing). Natural-image
    datasets use timm's ``create_transform`` (random-resized crop, flip, RandAugment... / resize + centre crop).

    Args:
        data_config: ``input_size`` (C, H, W), ``mean``, ``std``, ``interpolation``, ``crop_pct``.
        dataset: the dataset name (see :func:`build_dataset`), which picks the pipeline.
        train: training augmentation or evaluation preprocessing.
        augment: ``crop_padding`` (pixels, at the native size), ``hflip`` (bool), ``rand_augment`` (a timm
            string such as ``"rand-m9-mstd0.5"``), ``random_erasing`` (probability).
    """
    augment = dict(augment or {})
    chans, height, width = data_config["input_size"]
    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    interpolation = data_config.get("interpolation", "bicubic")
    if dataset.split(":")[0] not in SMALL_DATASETS:
        return create_transform((chans, height, width), is_training=train, mean=mean, std=std,
                                interpolation=interpolation, crop_pct=data_config.get("crop_pct"),
                                hflip=0.5 if augment.get("hflip", True) else 0.0,
                                auto_augment=augment.get("rand_augment"),
                                re_prob=augment.get("random_erasing", 0.0))
    native, native_chans = SMALL_DATASETS[dataset]
    if chans != native_chans:  # Normalize would broadcast a 1-channel mean silently; the conv would fail later
        raise ValueError(f"{dataset} images have {native_chans} channel(s) but the model takes {chans}: train with "
                         f"model.in_chans={native_chans} (and model.img_size={native}, its native size), or evaluate "
                         f"on a dataset of {chans}-channel images (vitlens eval --dataset)")
    steps: list[Callable] = []
    if train and augment.get("crop_padding"):
        steps.append(T.RandomCrop(native, padding=augment["crop_padding"]))
    if train and augment.get("hflip", False):
        steps.append(T.RandomHorizontalFlip())
    if train and augment.get("rand_augment"):
        fill = tuple(round(255 * m) for m in mean)  # RandAugment fills uncovered pixels with the data mean
        steps.append(rand_augment_transform(augment["rand_augment"], dict(img_mean=fill[0] if chans == 1 else fill)))
    if (height, width) != (native, native):
        steps.append(T.Resize((height, width), interpolation=T.InterpolationMode(interpolation), antialias=True))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if train and augment.get("random_erasing"):
        steps.append(RandomErasing(augment["random_erasing"], mode="pixel", device="cpu"))
    return T.Compose(steps)


def build_dataset(name: str, split: str, transform: Callable | None = None, data_dir: str | Path | None = None,
                  subset: int | None = None, download: bool = True) -> Dataset:
    """A dataset by name.

    Args:
        name: ``fashion_mnist``; ``cifar10`` / ``cifar100`` (torchvision, read from ``data_dir``);
            ``folder`` (an ImageFolder tree ``data_dir/<split>/<class>/*.jpg``); ``synthetic`` (tests);
            ``timm:<name>`` for timm's readers (``timm:wds/...``, ``timm:hfds/...``, tar files...) for data
            that does not fit a folder tree.
        split: ``train``, or ``test`` (``val`` is accepted for folders and timm datasets).
        transform: per-image transform (see :func:`build_transform`).
        data_dir: where the files are.
        subset: keep the first ``subset`` items (map-style datasets only).
        download: allow downloading Fashion-MNIST / CIFAR when not found locally.
    """
    train = split == "train"
    check_data_dir(name, data_dir, (split,))
    if name == "fashion_mnist":
        return FashionMNIST(split, data_dir, transform, subset=subset, download=download)
    if name == "synthetic":
        return SyntheticDataset(num_samples=subset or 512, seed=0 if train else 1, transform=transform)
    if name in ("cifar10", "cifar100"):
        from torchvision import datasets

        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        root = Path(data_dir or Path.home() / ".cache" / "vitlens" / "data").expanduser()
        try:
            ds = cls(str(root), train=train, transform=transform, download=download)
        except Exception as e:  # torchvision raises URLError / RuntimeError when offline
            raise FileNotFoundError(f"{name} not found under {root} and could not be downloaded (offline?): {e}. "
                                    f"Put the python-version archive folder there or pass --data-dir.") from e
    elif name == "folder":
        from torchvision.datasets import ImageFolder

        ds = ImageFolder(str(Path(data_dir).expanduser() / split), transform=transform)
    elif name.startswith("timm:"):
        from timm.data import create_dataset

        try:
            ds = create_dataset(name[5:], root=str(data_dir) if data_dir else None, split=split, is_training=train,
                                download=download, transform=transform)
        except RuntimeError as e:  # timm's readers say "Found 0 images in ..." this way
            raise FileNotFoundError(f"{name} ({split}): {e}") from e
        if subset and isinstance(ds, torch.utils.data.IterableDataset):
            raise ValueError(f"{name} streams its items, so data.subset / --subset ({subset}) cannot pick the first "
                             f"N; drop it (a streamed dataset is read whole)")
    else:
        raise ValueError(f"unknown dataset {name!r}; use fashion_mnist, cifar10, cifar100, folder, synthetic "
                         f"or timm:<name>")
    return torch.utils.data.Subset(ds, range(min(subset, len(ds)))) if subset else ds


def check_data_dir(name: str, data_dir: str | Path | None, splits: Sequence[str]) -> None:
    """Refuse a data folder that does not exist or lacks what ``name`` reads from it, before anything is loaded.

    A named folder is never replaced by another copy of the data: a mistyped ``--data-dir`` must not train on
    whatever is found elsewhere. CIFAR may download into an existing empty folder (torchvision's convention).

    Args:
        name: the dataset (see :func:`build_dataset`).
        data_dir: the folder given, or None.
        splits: the splits that will be read.
    """
    if name == "fashion_mnist":
        for split in splits:
            if data_dir is not None or os.environ.get("VITLENS_DATA"):  # else the Debian copy or a download
                locate(split, data_dir, download=False)
        return
    if data_dir is None:
        if name == "folder":
            raise ValueError("dataset 'folder' needs --data-dir with <split>/<class>/<image> sub-folders")
        return
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data folder {root} (--data-dir) does not exist")
    for split in splits if name == "folder" else ():
        if not (root / split).is_dir():
            raise FileNotFoundError(f"data folder {root} has no {split}/ folder: dataset 'folder' reads "
                                    f"{root}/{split}/<class>/<image>")


def num_classes_of(dataset: Dataset) -> int:
    """Class count of a dataset (through ``Subset`` wrappers)."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    if classes is None:
        raise ValueError(f"{type(dataset).__name__} does not list its classes; set data.num_classes")
    return len(classes)

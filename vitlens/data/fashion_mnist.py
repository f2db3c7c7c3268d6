"""Fashion-MNIST (Xiao et al. 2017) read straight from its IDX files, with no network unless asked."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MEAN, STD = (0.2860,), (0.3530,)  # over the 60k training images, pixels scaled to [0, 1]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # apt install dataset-fashion-mnist
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vitlens" / "data"
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (gzipped or not): a 4-byte magic (0, 0, dtype code, ndim), ndim big-endian uint32 sizes, data."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, _IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, file holds {data.size} values")
    return data.reshape(shape)


def _find_in(directory: Path, split: str) -> tuple[Path, Path] | None:
    """The two IDX files of ``split`` in ``directory`` or its usual sub-folders, gzipped or not."""
    for sub in ("", "fashion-mnist", "FashionMNIST/raw"):
        found = []
        for stem in _FILES[split]:
            candidates = [directory / sub / f"{stem}{ext}" for ext in (".gz", "")]
            found.append(next((p for p in candidates if p.exists()), None))
        if all(found):
            return found[0], found[1]
    return None


def locate(split: str, data_dir: str | Path | None = None, download: bool = True) -> tuple[Path, Path]:
    """Find the IDX files of ``split``.

    A folder named by ``data_dir`` (else ``$VITLENS_DATA``) is the only place looked in: when it lacks the files,
    reading another copy (the Debian package's) instead would train on data the user did not choose. With neither,
    the Debian package, then the download cache, then a torchvision download (when ``download`` and online).
    """
    named = [(Path(d).expanduser(), how, instead) for d, how, instead in (
        (data_dir, "--data-dir", "leave --data-dir out"), (os.environ.get("VITLENS_DATA"), "$VITLENS_DATA",
                                                           "unset VITLENS_DATA")) if d]
    if named:
        folder, how, instead = named[0]
        if found := _find_in(folder, split):
            return found
        state = ("does not exist" if not folder.exists() else "is not a folder" if not folder.is_dir() else
                 f"holds no Fashion-MNIST {split} files ({', '.join(_FILES[split])}, .gz or not)")
        raise FileNotFoundError(f"{folder} ({how}) {state}; put the IDX files there, or {instead} to read the "
                                f"Debian package's copy ({DEBIAN_DIR}) or a download")
    for directory in (DEBIAN_DIR, CACHE_DIR):
        if found := _find_in(directory, split):
            return found
    hint = (f"Fashion-MNIST {split} files not found in {DEBIAN_DIR} or {CACHE_DIR}. Install them with "
            f"`sudo apt install dataset-fashion-mnist`, or put {', '.join(_FILES[split])} (.gz or not) in a "
            f"folder and pass --data-dir or set VITLENS_DATA.")
    if not download:
        raise FileNotFoundError(hint)
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(CACHE_DIR), train=split == "train", download=True)
    except Exception as e:  # torchvision raises URLError / RuntimeError when offline
        raise FileNotFoundError(f"{hint} Downloading through torchvision failed (offline?): {e}") from e
    found = _find_in(CACHE_DIR, split)
    assert found is not None, f"torchvision downloaded Fashion-MNIST but {CACHE_DIR} lacks the IDX files"
    return found


class FashionMNIST(Dataset):
    """Fashion-MNIST as 28 x 28 grayscale PIL images and integer labels, held in memory (47 MB).

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        data_dir: folder with the IDX files (see :func:`locate` for the search order).
        transform: applied to each PIL image.
        subset: keep only the first ``subset`` images (quick runs and tests).
        download: allow a torchvision download when the files are not found.
    """

    classes = CLASSES

    def __init__(self, split: str = "train", data_dir: str | Path | None = None, transform=None,
                 subset: int | None = None, download: bool = True) -> None:
        if split not in _FILES:
            raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
        images, labels = locate(split, data_dir, download)
        self.images, self.targets = read_idx(images)[:subset], read_idx(labels)[:subset].astype(np.int64)
        if len(self.images) != len(self.targets):
            raise ValueError(f"{images} and {labels} hold different numbers of items")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index])  # uint8 H x W: mode "L"
        return (self.transform(img) if self.transform else img), int(self.targets[index])


def load_tensors(split: str = "test", limit: int | None = None, data_dir: str | Path | None = None,
                 download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` images of a split as an N x 1 x 28 x 28 float tensor in [0, 1], and their labels.

    Args:
        split: ``"train"`` or ``"test"``.
        limit: how many (all when None).
        data_dir: folder with the IDX files (see :func:`locate`).
        download: allow a torchvision download when the files are not found.
    """
    data = FashionMNIST(split, data_dir, subset=limit, download=download)
    return torch.from_numpy(np.array(data.images)).float().div(255).unsqueeze(1), torch.from_numpy(data.targets)

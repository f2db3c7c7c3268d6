"""Images into a model's input space: channels, size and normalisation from its ``data_config``."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from PIL import Image

# The real photos the paper-style figures use when no image is given (scikit-image's bundled samples).
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as a 3 x H x W float tensor in [0, 1].

    Decoding is :func:`vitlens.images.open_image` (the app's too): EXIF orientation, palette/CMYK/16-bit/alpha
    conversion, and a clear ``ImageError`` for empty, truncated or oversized files. Grayscale comes back as three
    equal channels, which :func:`prepare` turns back into the same single channel.

    Args:
        path: any format PIL reads.
    """
    from ..images import open_image

    arr = np.asarray(open_image(path), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def sample_image(name: str) -> Image.Image:
    """One of scikit-image's sample photos (``astronaut``, ``chelsea``, ``coffee``, ``rocket``) as an RGB image."""
    import skimage.data
    from PIL import Image

    if name not in SAMPLE_PHOTOS:
        raise ValueError(f"unknown sample photo {name!r}; choose from {', '.join(SAMPLE_PHOTOS)}")
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def sample_photo(name: str) -> torch.Tensor:
    """One of scikit-image's sample photos as 3 x H x W in [0, 1] (see :func:`sample_image`)."""
    arr = np.asarray(sample_image(name), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def photo(name: str | Path, data_config: Mapping[str, Any]) -> torch.Tensor:
    """A sample photo (by name) or an image file, cut as the model's eval transform cuts it, 3 x H x W in [0, 1].

    The geometry is :func:`vitlens.images.preprocess`'s, the app's (timm's resize and centre crop by ``crop_pct``),
    so the CLI and the app explain the same pixels; :func:`prepare` then only converts channels and normalises.

    Args:
        name: one of :data:`SAMPLE_PHOTOS`, or a path (a file of that name wins).
        data_config: ``model.data_config``.
    """
    from ..images import model_view, open_image

    img = sample_image(str(name)) if str(name) in SAMPLE_PHOTOS and not Path(name).exists() else open_image(name)
    if data_config["input_size"][0] == 1:  # the app's 8-bit PIL grayscale, as three equal channels
        img = img.convert("L").convert("RGB")
    return torch.from_numpy(model_view(img, data_config)).permute(2, 0, 1).contiguous()


def prepare(images: torch.Tensor, data_config: Mapping[str, Any]) -> torch.Tensor:
    """Images in [0, 1] (B x C x H x W or C x H x W) to a model's input: its channels, size, mean and std.

    Grayscale goes to RGB by repetition and RGB to grayscale by the ITU-R 601 luma weights, so the bundled
    Fashion-MNIST models (1 x 28 x 28) accept photos and timm models (3 x 224 x 224) accept Fashion-MNIST.
    The image is resized whole (no crop), bilinear with antialiasing.

    Args:
        images: float tensor in [0, 1].
        data_config: ``model.data_config`` (``input_size``, ``mean``, ``std``).
    """
    x = images[None] if images.ndim == 3 else images
    channels, height, width = data_config["input_size"]
    if x.shape[1] != channels:
        if channels == 1 and x.shape[1] == 3:
            x = (x * torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        else:
            raise ValueError(f"cannot convert {x.shape[1]}-channel images to the model's {channels} channels")
    if tuple(x.shape[-2:]) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(data_config["mean"], dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(data_config["std"], dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def batches(data: torch.Tensor | Iterable, batch_size: int) -> Iterator[torch.Tensor]:
    """Image batches from a tensor (split along dim 0) or from a loader yielding tensors or (images, labels).

    Args:
        data: N x C x H x W tensor, or an iterable of batches.
        batch_size: batch size when ``data`` is a tensor.
    """
    if isinstance(data, torch.Tensor):
        yield from data.split(batch_size)
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item

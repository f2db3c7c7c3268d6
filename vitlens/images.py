"""Images, from file to model and back to the screen: reading and validating user images (files, uploads, zips,
the sample photos), preparing them for a model with its own preprocessing, and the view drawn under maps.

Two routes into a model, with the same geometry: :func:`preprocess` for a decoded image (timm's eval transform:
resize, centre crop, normalise), what the app and ``vitlens analyze`` use for photos; and :func:`prepare` for
tensors already in [0, 1] (dataset batches), which only converts channels, resizes and normalises.
"""
from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # ~ a 6300 x 6300 photo; larger is refused before decoding (decompression bombs)
MAX_BYTES = 50 * 1024 * 1024
MAX_ZIP_MEMBERS = 512
# The real photos the paper-style figures use when no image is given (scikit-image's bundled samples).
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
# ITU-R BT.601 luma, as PIL's convert("L") (the app's route for photos); torchvision's rgb_to_grayscale uses
# 0.2989 for red, which would make the two routes differ in the fourth digit.
LUMA = (0.299, 0.587, 0.114)


class ImageError(ValueError):
    """An input that is not a usable image; the message says what was wrong and what to do."""


def open_image(source: str | Path | bytes | BinaryIO, *, name: str | None = None,
               max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> Image.Image:
    """Decode a PNG/JPEG/WebP/BMP/GIF (first frame)/TIFF into an 8-bit RGB image.

    EXIF orientation is applied; CMYK, 16-bit, palette, RGBA (over white) and grayscale become RGB.

    Args:
        source: a path, the file's bytes, or a binary file object (e.g. a Streamlit upload).
        name: what to call the input in messages (defaults to the path).
        max_pixels: refuse larger images before decoding them.
        max_bytes: refuse larger files (the app passes its upload cap).
    """
    if isinstance(source, (str, Path)):
        name = name or str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise ImageError(f"cannot read {name}: {e}") from e
    else:
        data = source if isinstance(source, bytes) else source.read()
        name = name or getattr(source, "name", "the upload")
    if not data:
        raise ImageError(f"{name} is empty (0 bytes); choose an image file")
    if len(data) > max_bytes:
        raise ImageError(f"{name} is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:g} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"{name} is {w} x {h} = {w * h / 1e6:.0f} megapixels; the limit is "
                                 f"{max_pixels / 1e6:.0f} (a decompression bomb, or resize it first)")
            img.seek(0)  # animated GIF/WebP: the first frame
            img.load()
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise _decode_error(name, e) from e
    return _to_rgb(ImageOps.exif_transpose(img))


def _decode_error(name: str, e: Exception) -> ImageError:
    """What PIL's error while opening or decoding ``name`` means, in words."""
    from PIL import PngImagePlugin

    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageError(f"{name} is refused as a decompression bomb: {e}")
    # PIL's PngImagePlugin raises this ValueError when a compressed text (zTXt, iTXt) or colour-profile (iCCP)
    # chunk inflates past MAX_TEXT_CHUNK; the image itself may be small and intact.
    if isinstance(e, ValueError) and "decompressed data too large" in str(e).lower():
        return ImageError(f"{name} is refused as a decompression bomb in a PNG metadata chunk: a compressed text or "
                          f"colour-profile chunk (zTXt, iTXt or iCCP) inflates past "
                          f"{PngImagePlugin.MAX_TEXT_CHUNK / 2**20:g} MB; save the image again without its metadata")
    if isinstance(e, UnidentifiedImageError):  # PIL's text names its own buffer object, not the file
        return ImageError(f"{name} is not an image vitlens can read: its bytes are none of PNG, JPEG, WebP, BMP, "
                          f"GIF or TIFF")
    return ImageError(f"{name} is truncated or corrupt: {e}")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode != "F" and arr.max() > 255 else max(1.0, float(arr.max()))
        img = Image.fromarray(np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB")  # CMYK, YCbCr, L, 1 ...


def preprocess(img: Image.Image, data_config: Mapping[str, Any]) -> torch.Tensor:
    """The model's eval transform (timm's resize, centre crop, normalise) as a 1 x C x H x W tensor."""
    from timm.data import create_transform

    c, h, w = data_config["input_size"]
    keys = ("interpolation", "mean", "std", "crop_pct", "crop_mode")
    transform = create_transform(input_size=(c, h, w), is_training=False,
                                 **{k: data_config[k] for k in keys if k in data_config})
    return transform(img.convert("L" if c == 1 else "RGB")).unsqueeze(0)


def model_view(img: Image.Image, data_config: Mapping[str, Any], scale: int = 1) -> np.ndarray:
    """The region of ``img`` the model sees after :func:`preprocess` (same resize and centre crop), in colour,
    at ``scale`` times the input resolution: the background on which maps over the input are drawn.

    Args:
        img: an RGB image (e.g. from :func:`open_image`).
        data_config: the model's ``data_config``.
        scale: display magnification (the crop geometry is scale-invariant).

    Returns:
        H*scale x W*scale x 3 float array in [0, 1].
    """
    _, h, w = data_config["input_size"]
    # identity normalisation, 3 channels: only the geometry of the model's transform is kept
    view = {**data_config, "input_size": (3, h * scale, w * scale), "mean": (0.0,) * 3, "std": (1.0,) * 3}
    return preprocess(img.convert("RGB"), view)[0].permute(1, 2, 0).clamp(0, 1).numpy()


def read_zip(data: bytes, size: int) -> tuple[torch.Tensor, list[str]]:
    """Every readable image in a zip (the first :data:`MAX_ZIP_MEMBERS` entries) as size x size RGB in [0, 1], and
    a message for each unreadable one.

    Args:
        data: the zip file's bytes.
        size: side of the square each image is resized to.

    Raises:
        zipfile.BadZipFile: ``data`` is not a zip.
    """
    images, skipped = [], []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist()[:MAX_ZIP_MEMBERS]:
            if info.is_dir():
                continue
            if info.file_size > MAX_BYTES:  # checked before decompressing: a zip bomb never reaches memory
                skipped.append(f"{info.filename} is {info.file_size / 2**20:.0f} MB uncompressed")
                continue
            try:
                img = open_image(zf.read(info), name=info.filename).resize((size, size))
            except ImageError as e:
                skipped.append(str(e))
                continue
            images.append(to_tensor(img))
    return (torch.stack(images) if images else torch.empty(0, 3, size, size)), skipped


def to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB image as a 3 x H x W float tensor in [0, 1]."""
    return TF.pil_to_tensor(img.convert("RGB")).float() / 255.0  # division, as numpy's (to_dtype multiplies)


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as a 3 x H x W float tensor in [0, 1] (decoded and checked by :func:`open_image`).

    Grayscale comes back as three equal channels, which :func:`prepare` turns back into the same single channel.
    """
    return to_tensor(open_image(path))


def sample_image(name: str) -> Image.Image:
    """One of scikit-image's sample photos (:data:`SAMPLE_PHOTOS`) as an RGB image."""
    import skimage.data

    if name not in SAMPLE_PHOTOS:
        raise ValueError(f"unknown sample photo {name!r}; choose from {', '.join(SAMPLE_PHOTOS)}")
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def sample_photo(name: str) -> torch.Tensor:
    """One of scikit-image's sample photos as 3 x H x W in [0, 1] (see :func:`sample_image`)."""
    return to_tensor(sample_image(name))


def photo(name: str | Path, data_config: Mapping[str, Any]) -> torch.Tensor:
    """A sample photo (by name) or an image file, cut as :func:`preprocess` cuts it, 3 x H x W in [0, 1].

    The geometry is :func:`preprocess`'s (timm's resize and centre crop by ``crop_pct``), so the command line and
    the app explain the same pixels; :func:`prepare` then only converts channels and normalises.

    Args:
        name: one of :data:`SAMPLE_PHOTOS`, or a path (a file of that name wins).
        data_config: ``model.data_config``.
    """
    img = sample_image(str(name)) if str(name) in SAMPLE_PHOTOS and not Path(name).exists() else open_image(name)
    if data_config["input_size"][0] == 1:  # the app's 8-bit PIL grayscale, as three equal channels
        img = img.convert("L").convert("RGB")
    return torch.from_numpy(model_view(img, data_config)).permute(2, 0, 1).contiguous()


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """B x C x H x W to ``channels``: grayscale to RGB by repetition, RGB to grayscale by :data:`LUMA`."""
    if images.shape[1] == channels:
        return images
    if channels == 1 and images.shape[1] == 3:
        return (images * torch.tensor(LUMA, dtype=images.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if channels == 3 and images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    raise ValueError(f"cannot convert {images.shape[1]}-channel images to the model's {channels} channels")


def prepare(images: torch.Tensor, data_config: Mapping[str, Any]) -> torch.Tensor:
    """Images in [0, 1] (B x C x H x W or C x H x W) to a model's input: its channels, size, mean and std.

    Grayscale goes to RGB by repetition and RGB to grayscale by :data:`LUMA`, so the bundled Fashion-MNIST models
    (1 x 28 x 28) accept photos and timm models (3 x 224 x 224) accept Fashion-MNIST. The image is resized whole
    (no crop), bilinear with antialiasing.

    Args:
        images: float tensor in [0, 1].
        data_config: ``model.data_config`` (``input_size``, ``mean``, ``std``).
    """
    x = images[None] if images.ndim == 3 else images
    channels, height, width = data_config["input_size"]
    x = to_channels(x, channels)
    if tuple(x.shape[-2:]) != (height, width):
        x = TF.resize(x, [height, width], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.normalize(x, list(data_config["mean"]), list(data_config["std"]))


def unnormalize(x: torch.Tensor, data_config: Mapping[str, Any]) -> torch.Tensor:
    """A model input (..., C, H, W, normalised with the config's mean and std) back in [0, 1]."""
    mean = torch.tensor(data_config["mean"], dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(data_config["std"], dtype=x.dtype).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)


def display_view(image: torch.Tensor, data_config: Mapping[str, Any], side: int = 224) -> torch.Tensor:
    """What the model sees, for drawing maps over: the image at the model's input size and channels (grayscale for a
    1-channel model), magnified by a whole factor to about ``side`` pixels with no smoothing, so each of the
    model's pixels is a flat square (a 28 x 28 input shown at 224 px is 8 x 8 blocks, not a blurred photo).

    Args:
        image: C x H x W in [0, 1]: a model input passed through :func:`unnormalize`, or an image cut to the
            model's geometry (e.g. by :func:`photo`), resized as :func:`prepare` resizes when its size differs.
        data_config: ``model.data_config``.
        side: about how many pixels the longer side is shown at (at least the input size).
    """
    channels, h, w = data_config["input_size"]
    x = to_channels(image[None], channels)
    if tuple(x.shape[-2:]) != (h, w):
        x = TF.resize(x, [h, w], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    scale = max(1, side // max(h, w))
    x = x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return x[0].clamp(0, 1)


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

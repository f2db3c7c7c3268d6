"""Reading user images safely and turning them into model input with the model's own preprocessing."""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # ~ a 6300 x 6300 photo; larger is refused before decoding (decompression bombs)
MAX_BYTES = 50 * 1024 * 1024


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
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name} is not an image vitlens can read (PNG, JPEG, WebP, BMP, GIF, TIFF): {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name} is truncated or corrupt: {e}") from e
    return _to_rgb(ImageOps.exif_transpose(img))


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

"""The image a page explains: a sample photo, a Fashion-MNIST test image or an upload, prepared with the model's
own preprocessing (``vitlens.images``), and a note when the model was never trained on such images."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import streamlit as st
import torch
from PIL import Image
from torch import nn

from vitlens.data import knows_only_fashion_mnist, load_tensors
from vitlens.data.fashion_mnist import CLASSES as FASHION_CLASSES
from vitlens.images import SAMPLE_PHOTOS, ImageError, display_view, open_image, preprocess, sample_image, unnormalize

from .models import PAPER_CHECKPOINT, load, max_upload_mb
from .show import literal

UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]
DISPLAY_SIDE = 336  # pixels: small inputs (28 px) are magnified by whole factors up to about this size


@dataclass(frozen=True)
class InputImage:
    """An RGB image, a digest naming it in caches, whether it is a Fashion-MNIST test image and, if so, its true
    class."""

    image: Image.Image
    digest: str
    label: str
    fashion: bool
    true_class: int | None = None


@st.cache_data(show_spinner=False, max_entries=4)
def fashion_test(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` Fashion-MNIST test images (N x 1 x 28 x 28 in [0, 1]) and labels, from the local files."""
    return load_tensors("test", n)


def fashion_batches(split: str, n: int, batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(images in [0, 1], labels) batches of the first ``n`` images of a Fashion-MNIST split."""
    x, y = load_tensors(split, n)
    return list(zip(x.split(batch_size), y.split(batch_size)))


def _upload(key: str) -> InputImage | None:
    up = st.file_uploader(f"An image (PNG, JPEG, WebP, BMP, GIF first frame, TIFF; at most {max_upload_mb()} MB)",
                          type=UPLOAD_TYPES, key=f"{key}_upload", max_upload_size=max_upload_mb())
    if up is None:
        st.info("Upload an image, or choose a sample.")
        return None
    data = up.getvalue()
    try:
        img = open_image(data, name=up.name, max_bytes=max_upload_mb() * 2**20)
    except ImageError as e:
        st.error(f"Cannot use this file: {literal(e)}")
        return None
    return InputImage(img, hashlib.sha256(data).hexdigest(), up.name, False)


def image_input(key: str) -> InputImage:
    """Upload, sample photo or Fashion-MNIST test image; the page stops here (after an info or an st.error) until
    there is a usable one."""
    inp = _chosen_image(key)
    if inp is None:
        st.stop()
    return inp


def _chosen_image(key: str) -> InputImage | None:
    choice = st.radio("Image", ["Sample photo", "Fashion-MNIST test image", "Upload"], key=f"{key}_kind",
                      horizontal=True)
    if choice == "Upload":
        return _upload(key)
    if choice == "Sample photo":
        name = st.selectbox("Photo (scikit-image samples)", SAMPLE_PHOTOS, key=f"{key}_photo")
        return InputImage(sample_image(name), f"sample:{name}", name, False)
    try:
        images, labels = fashion_test(100)
    except FileNotFoundError as e:
        st.error(str(e))
        return None
    i = int(st.number_input("Test image index (0-99)", 0, len(images) - 1, 0, key=f"{key}_fashion"))
    pixels = (images[i, 0] * 255).round().byte().numpy()
    return InputImage(Image.fromarray(pixels).convert("RGB"), f"fashion:{i}",
                      f"Fashion-MNIST test #{i} ({FASHION_CLASSES[labels[i]]})", True, int(labels[i]))


def domain_note(model: nn.Module, inp: InputImage) -> None:
    """Say so when a Fashion-MNIST model is shown a photo: its answers are then out of domain."""
    if knows_only_fashion_mnist(model) and not inp.fashion:
        st.warning(f"This model learned only Fashion-MNIST (28 x 28 grayscale clothing, 10 classes): "
                   f"{literal(inp.label)} is outside its domain, so its prediction and maps say how a clothing "
                   f"classifier reacts to it, not what it shows. For photos, pick `timm:{PAPER_CHECKPOINT}` (the "
                   f"paper's ImageNet-21k + 1k weights) in the sidebar when online.")


def model_input(source: str, inp: InputImage) -> torch.Tensor:
    """1 x C x H x W with the model's own eval transform."""
    return _prepared(source, inp.digest, inp.image)[0]


def view(source: str, inp: InputImage) -> torch.Tensor:
    """C x H x W in [0, 1]: the model's own input (its size, its channels), magnified by whole pixels for drawing
    maps over it."""
    return _prepared(source, inp.digest, inp.image)[1]


@st.cache_resource(show_spinner=False, max_entries=32)
def _prepared(source: str, digest: str, _image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    config = load(source).data_config
    x = preprocess(_image, config)
    return x, display_view(unnormalize(x[0], config), config, DISPLAY_SIDE)

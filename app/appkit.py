"""What every page shares: settings, the model picker, cached model loading and per-image results, the image
input, and download buttons. No analysis lives here: it calls vitlens.analysis and draws with its figures."""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

import vitlens
from vitlens.analysis.figures import jsonable
from vitlens.analysis.inputs import SAMPLE_PHOTOS, sample_image
from vitlens.data.fashion_mnist import CLASSES as FASHION_CLASSES
from vitlens.images import ImageError, model_view, open_image, preprocess

PAPER_CHECKPOINT = "vit_base_patch16_224.orig_in21k_ft_in1k"
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]
DISPLAY_SIDE = 336  # pixels: small inputs (28 px) are magnified by whole factors up to about this size


# ---- settings (set by `vitlens app` through the environment, so `streamlit run` and AppTest see them too) ---
def setting(name: str) -> str | None:
    """``VITLENS_APP_<NAME>``: MODEL (first model), CNN (the comparison CNN), RUNS_DIR, MAX_UPLOAD_MB."""
    return os.environ.get(f"VITLENS_APP_{name}") or None


def max_upload_mb() -> int:
    return int(setting("MAX_UPLOAD_MB") or 20)


def runs_dir() -> Path:
    return Path(setting("RUNS_DIR") or "runs").expanduser()


def default_vit() -> str:
    return setting("MODEL") or "demo:vit-fashion"


def default_cnn() -> str:
    return setting("CNN") or "demo:cnn-fashion"


# ---- models: one copy per process, shared by every browser session ------------------------------------
@st.cache_resource(show_spinner=False, max_entries=8)
def load(source: str) -> nn.Module:
    """``vitlens.load_model`` once per process; gradients are taken through inputs only, never stored."""
    return vitlens.load_model(source).eval()


@st.cache_resource(show_spinner=False, max_entries=8)
def load_resized(source: str, img_size: int, mode: str) -> nn.Module:
    """A copy of the model moved to another resolution (the shared one is left as it is)."""
    model = copy.deepcopy(load(source))
    model.set_img_size(img_size, mode=mode)
    return model


@st.cache_resource(show_spinner=False)
def hook_lock(source: str) -> threading.Lock:
    """Grad-CAM and feature probes hook a model's modules: one session at a time on a shared model."""
    return threading.Lock()


@st.cache_resource(show_spinner=False)
def _fetched() -> set[str]:
    """timm names whose weights this process has already put in the hub cache."""
    return set()


def download(name: str) -> None:
    """timm's weights for ``name`` into the hub cache, with a progress bar in MB (once per process)."""
    if name in _fetched():
        return
    bar = st.progress(0.0, text=f"Downloading {name} from the Hugging Face hub...")

    class StreamlitBar(tqdm):  # huggingface_hub reports bytes through any tqdm class
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.total:
                bar.progress(min(self.n / self.total, 1.0),
                             text=f"Downloading {name}: {self.n / 2**20:.0f} of {self.total / 2**20:.0f} MB")
            return shown

    try:
        vitlens.fetch_timm_weights(name, tqdm_class=StreamlitBar)
    finally:
        bar.empty()
    _fetched().add(name)


def try_load(source: str) -> nn.Module | None:
    """The model, or an st.error saying why it cannot be loaded (offline, unknown name, bad file)."""
    try:
        if source.startswith("timm:"):
            download(source.removeprefix("timm:"))
        with st.spinner(f"Loading {source}..."):
            return load(source)
    except (ValueError, FileNotFoundError, ConnectionError, TypeError, OSError) as e:
        st.error(f"Cannot load {source}: {e}")
        return None


def is_vit(model: nn.Module) -> bool:
    return isinstance(model, vitlens.VisionTransformer)


def in_chans(model: nn.Module) -> int:
    return model.data_config["input_size"][0]


def class_names(model: nn.Module) -> list[str]:
    """Fashion-MNIST names for 10-class grayscale models (the bundled ones), ImageNet names for 1000 classes."""
    n = model.num_classes
    if n == 10 and in_chans(model) == 1:
        return list(FASHION_CLASSES)
    if n == 1000:
        return imagenet_names()
    return [f"class {i}" for i in range(n)]


@functools.cache
def imagenet_names() -> list[str]:
    from timm.data import ImageNetInfo  # timm ships the names: no download

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


def knows_only_fashion(model: nn.Module) -> bool:
    return class_names(model) == list(FASHION_CLASSES)


def describe(model: nn.Module) -> dict[str, Any]:
    """Architecture, parameter count, resolution and preprocessing, for the model overview."""
    config = getattr(model, "config", None) or getattr(model, "vitlens_spec", None) or {"timm": type(model).__name__}
    return dict(kind="ViT" if is_vit(model) else "CNN", parameters=sum(p.numel() for p in model.parameters()),
                classes=model.num_classes, architecture=config, preprocessing=model.data_config)


# ---- the sidebar model picker --------------------------------------------------------------------------
def run_sources(folder: Path) -> list[str]:
    """Run directories and checkpoint files directly under the runs folder."""
    if not folder.is_dir():
        return []
    runs = [p for p in sorted(folder.iterdir()) if p.is_dir() and
            ((p / "model.safetensors").exists() or (p / "checkpoints").is_dir())]
    files = [p for p in sorted(folder.iterdir()) if p.suffix in (".safetensors", ".pth", ".pt", ".bin", ".npz")]
    return [str(p) for p in runs + files]


def model_picker() -> str:
    """Sidebar: where the model comes from; returns the chosen source (also in ``st.session_state.source``)."""
    bundled = [f"demo:{d}" for d in vitlens.list_demo_models()]
    first = default_vit()
    options = bundled if first in bundled else [first, *bundled]
    st.sidebar.header("Model")
    kind = st.sidebar.radio("Source", ["Bundled", "timm (online)", "Runs folder"], key="source_kind",
                            horizontal=True)
    if kind == "Bundled":
        source = st.sidebar.selectbox("Bundled model (offline, Fashion-MNIST)", options, index=options.index(first),
                                      key="bundled")
    elif kind == "timm (online)":
        name = st.sidebar.text_input("timm model name", PAPER_CHECKPOINT, key="timm_name",
                                     help="The paper's original weights need the full tag, e.g. "
                                          f"{PAPER_CHECKPOINT}; downloaded once from the Hugging Face hub.")
        source = f"timm:{name.strip()}"
    else:
        found = run_sources(runs_dir())
        if not found:
            st.sidebar.info(f"No runs or checkpoints in {runs_dir().resolve()} (train one with `vitlens pretrain`, "
                            f"or start the app with --runs-dir). Using {first}.")
            source = first
        else:
            source = st.sidebar.selectbox(f"Run or checkpoint in {runs_dir()}", found, key="run_source")
    st.session_state.source = source
    return source


def current_model(require_vit: bool = True) -> tuple[str, nn.Module]:
    """The sidebar's model; stops the page (the sidebar stays usable) if it cannot be used here."""
    source = st.session_state.get("source") or default_vit()
    model = try_load(source)
    if model is None:
        st.stop()
    if require_vit and not is_vit(model):
        st.warning(f"{source} is a CNN; this page shows a ViT's attention. Pick a ViT in the sidebar "
                   f"(the CNN is compared on the ViT vs CNN page).")
        st.stop()
    return source, model


def cnn_picker(key: str) -> tuple[str, nn.Module]:
    """The CNN a page compares the ViT with (a text input under ``key``); stops the page if it cannot be used."""
    source = st.text_input("CNN to compare (any load_model source)", default_cnn(), key=key)
    model = try_load(source)
    if model is None:
        st.stop()
    if is_vit(model):
        st.error(f"{source} is a ViT; name a CNN (e.g. demo:cnn-fashion, or online timm:resnet50.a1_in1k or the "
                 f"paper's BiT, timm:resnetv2_50x1_bit.goog_in21k_ft_in1k).")
        st.stop()
    return source, model


# ---- images ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputImage:
    """An RGB image, a digest naming it in caches, and whether it is a Fashion-MNIST test image."""

    image: Image.Image
    digest: str
    label: str
    fashion: bool


@st.cache_data(show_spinner=False, max_entries=4)
def fashion_test(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` Fashion-MNIST test images (uint8, N x 28 x 28) and labels, from the local IDX files."""
    from vitlens.data import FashionMNIST

    data = FashionMNIST("test", subset=n, download=False)
    return data.images, data.targets


def image_input(key: str) -> InputImage | None:
    """Upload, sample photo or Fashion-MNIST test image; None (after an st.error) when the upload is unusable."""
    choice = st.radio("Image", ["Sample photo", "Fashion-MNIST test image", "Upload"], key=f"{key}_kind",
                      horizontal=True)
    if choice == "Upload":
        up = st.file_uploader(f"An image (PNG, JPEG, WebP, BMP, GIF first frame, TIFF; at most {max_upload_mb()} MB)",
                              type=UPLOAD_TYPES, key=f"{key}_upload", max_upload_size=max_upload_mb())
        if up is None:
            st.info("Upload an image, or choose a sample.")
            return None
        data = up.getvalue()
        try:
            img = open_image(data, name=up.name, max_bytes=max_upload_mb() * 2**20)
        except ImageError as e:
            st.error(f"Cannot use this file: {e}")
            return None
        return InputImage(img, hashlib.sha256(data).hexdigest(), up.name, False)
    if choice == "Sample photo":
        name = st.selectbox("Photo (scikit-image samples)", SAMPLE_PHOTOS, key=f"{key}_photo")
        return InputImage(sample_image(name), f"sample:{name}", name, False)
    try:
        images, labels = fashion_test(100)
    except FileNotFoundError as e:
        st.error(str(e))
        return None
    i = int(st.number_input("Test image index (0-99)", 0, len(images) - 1, 0, key=f"{key}_fashion"))
    return InputImage(Image.fromarray(images[i]).convert("RGB"), f"fashion:{i}", f"Fashion-MNIST test #{i} "
                      f"({FASHION_CLASSES[labels[i]]})", True)


def domain_note(model: nn.Module, inp: InputImage) -> None:
    """Say so when a Fashion-MNIST model is shown a photo: its answers are then out of domain."""
    if knows_only_fashion(model) and not inp.fashion:
        st.warning(f"This model learned only Fashion-MNIST (28 x 28 grayscale clothing, 10 classes): "
                   f"'{inp.label}' is outside its domain, so its prediction and maps say how a clothing classifier "
                   f"reacts to it, not what it shows. For photos, pick `timm:{PAPER_CHECKPOINT}` (the paper's "
                   f"ImageNet-21k + 1k weights) in the sidebar when online.")


def model_input(source: str, inp: InputImage) -> torch.Tensor:
    """1 x C x H x W with the model's own eval transform."""
    return _prepared(source, inp.digest, inp.image)[0]


def view(source: str, inp: InputImage) -> torch.Tensor:
    """3 x H x W in [0, 1]: what the model sees (same crop), magnified for drawing maps over it."""
    return _prepared(source, inp.digest, inp.image)[1]


@st.cache_resource(show_spinner=False, max_entries=32)
def _prepared(source: str, digest: str, _image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    config = load(source).data_config
    scale = max(1, DISPLAY_SIDE // config["input_size"][1])
    return preprocess(_image, config), torch.from_numpy(model_view(_image, config, scale)).permute(2, 0, 1)


def top_k(logits: torch.Tensor, names: list[str], k: int = 5) -> pd.DataFrame:
    probs = logits.softmax(-1)[0]
    p, i = probs.topk(min(k, len(names)))
    return pd.DataFrame({"class": [names[j] for j in i.tolist()], "index": i.tolist(),
                         "probability": p.tolist()})


# ---- progress over datasets ---------------------------------------------------------------------------
def with_progress(batches: Iterable, total: int, label: str) -> Iterator:
    """Yield ``batches`` while an st.progress bar counts them."""
    bar = st.progress(0.0, text=label)
    for i, b in enumerate(batches, start=1):
        yield b
        bar.progress(min(i / total, 1.0), text=f"{label}: {i}/{total}")
    bar.empty()


def fashion_batches(split: str, n: int, batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(images in [0, 1], labels) batches of the first ``n`` images of a Fashion-MNIST split."""
    from vitlens.data import FashionMNIST

    data = FashionMNIST(split, subset=n, download=False)
    x = torch.from_numpy(np.array(data.images)).float().div(255).unsqueeze(1)
    y = torch.from_numpy(data.targets)
    return list(zip(x.split(batch_size), y.split(batch_size)))


# ---- downloads -------------------------------------------------------------------------------------------
def downloads(fig: go.Figure, name: str, numbers: Mapping[str, Any] | pd.DataFrame, key: str) -> None:
    """PNG of the figure (rendered by kaleido only when clicked) and its numbers as CSV or JSON."""
    left, right = st.columns(2)
    left.download_button("PNG", lambda: fig.to_image(format="png", scale=2), file_name=f"{name}.png",
                         mime="image/png", key=f"{key}_png", icon=":material/download:", on_click="ignore")
    if isinstance(numbers, pd.DataFrame):
        right.download_button("CSV", numbers.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
                              key=f"{key}_csv", icon=":material/download:", on_click="ignore")
    else:
        right.download_button("JSON", json.dumps(jsonable(numbers), indent=1), file_name=f"{name}.json",
                              mime="application/json", key=f"{key}_json", icon=":material/download:",
                              on_click="ignore")


def show(fig: go.Figure, name: str, numbers: Mapping[str, Any] | pd.DataFrame, key: str,
         on_select: Callable | str = "ignore", **kwargs: Any) -> Any:
    """A figure (its layout size kept, PNG from the toolbar too) followed by its download buttons."""
    # theme=None: the figure as vitlens.analysis.figures draws it (and as its PNG export looks)
    event = st.plotly_chart(fig, width="content", key=key, on_select=on_select, theme=None,
                            config={"toImageButtonOptions": {"filename": name, "scale": 2}}, **kwargs)
    downloads(fig, name, numbers, key)
    return event



# ---- per-image results: keyed by model source and image digest, shared by sessions showing the same image -----
@st.cache_resource(show_spinner=False, max_entries=16)
def vit_forward(source: str, digest: str, _x: torch.Tensor) -> dict[str, Any]:
    """Logits and every layer's attention (B x H x N x N) of one image."""
    model = load(source)
    with torch.no_grad(), vitlens.capture(model) as rec:
        logits = model(_x)
    return dict(logits=logits, attentions=rec.attentions)


@st.cache_resource(show_spinner=False, max_entries=16)
def cnn_forward(source: str, digest: str, _x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return load(source)(_x)

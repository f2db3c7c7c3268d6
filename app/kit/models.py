"""Settings, the sidebar's model picker, and models loaded once per process and shared by every browser session,
with their per-image forward passes."""
from __future__ import annotations

import copy
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import streamlit as st
import torch
from torch import nn
from tqdm import tqdm

import vitlens
from vitlens.models.layout import is_vit as layout_is_vit

from .show import literal

PAPER_CHECKPOINT = "vit_base_patch16_224.orig_in21k_ft_in1k"


# ---- settings (set by `vitlens app` through the environment, so `streamlit run` and AppTest see them too) ---
def setting(name: str) -> str | None:
    """``VITLENS_APP_<NAME>``: MODEL (first model), CNN (the comparison CNN), RUNS_DIR, MAX_UPLOAD_MB,
    ALLOW_LOCAL_PATHS."""
    return os.environ.get(f"VITLENS_APP_{name}") or None


def max_upload_mb() -> int:
    return int(setting("MAX_UPLOAD_MB") or 20)


def runs_dir() -> Path:
    return Path(setting("RUNS_DIR") or "runs").expanduser()


def default_vit() -> str:
    return setting("MODEL") or "demo:vit-fashion"


def default_cnn() -> str:
    return setting("CNN") or "demo:cnn-fashion"


def allow_local_paths() -> bool:
    """Whether visitors may load any file the server can read (``vitlens app --allow-local-paths``)."""
    return setting("ALLOW_LOCAL_PATHS") == "1"


# ---- what a visitor may load: the app may be served to people who must not read the server's files ----------
TIMM_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # timm's names and tags; no "hf-hub:" or "local-dir:" prefixes


def refusal(source: str) -> str | None:
    """None when a visitor may load ``source``, else why not, in Markdown.

    Allowed: the operator's own first model and CNN, the bundled models, ``timm:<name>``, and the runs and
    checkpoints the picker offers (:func:`run_sources`); any other path only under ``--allow-local-paths``. Every
    refused source gets the same message, which never depends on whether such a file exists, so the app tells a
    visitor nothing about the server's files: a typed path is compared with what the picker lists, never opened.
    """
    kind, _, name = source.partition(":")
    if source in (default_vit(), default_cnn()):
        allowed = True
    elif kind == "demo":
        allowed = name in vitlens.list_demo_models()
    elif kind == "timm":
        allowed = TIMM_NAME.fullmatch(name) is not None
    else:
        allowed = allow_local_paths() or os.path.abspath(Path(source).expanduser()) in map(
            os.path.abspath, run_sources(runs_dir()))
    if allowed:
        return None
    bundled = ", ".join(literal(f"demo:{d}") for d in vitlens.list_demo_models())
    return (f"Cannot load {literal(source)}: model sources here are the bundled models ({bundled}), "
            f"{literal('timm:<name>')}, or the runs and checkpoints listed under {literal(runs_dir())} (the sidebar's "
            f"Runs folder). Start the app with {literal('--allow-local-paths')} to load other files.")


# ---- models: one copy per process, shared by every browser session ------------------------------------
@st.cache_resource(show_spinner=False, max_entries=8)
def load(source: str) -> nn.Module:
    """``vitlens.load_model`` once per process; gradients are taken through inputs only, never stored."""
    return vitlens.load_model(source).eval()


@st.cache_resource(show_spinner=False, max_entries=8)
def load_resized(source: str, img_size: int, mode: str) -> nn.Module:
    """A copy of the model moved to another resolution (the shared one is left as it is): vitlens's with the chosen
    interpolation, timm's own ViTs as timm resizes them (bicubic)."""
    model = copy.deepcopy(load(source))
    if isinstance(model, vitlens.VisionTransformer):
        model.set_img_size(img_size, mode=mode)
    else:
        model.set_input_size(img_size=img_size)
    return model


@st.cache_resource(show_spinner=False)  # not bounded: an evicted lock could be held while its successor is handed out
def hook_lock(source: str) -> threading.Lock:
    """Grad-CAM and feature probes hook a model's modules: one session at a time on a shared model (only sources
    that loaded get here, so few locks)."""
    return threading.Lock()


@st.cache_resource(show_spinner=False)
def _fetched() -> set[str]:
    """timm names whose weights this process has already put in the hub cache."""
    return set()


def download(name: str) -> None:
    """timm's weights for ``name`` into the hub cache, with a progress bar in MB (once per process)."""
    if name in _fetched():
        return
    bar = st.progress(0.0, text=f"Downloading {literal(name)} from the Hugging Face hub...")

    class StreamlitBar(tqdm):  # huggingface_hub reports bytes through any tqdm class
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.total:
                bar.progress(min(self.n / self.total, 1.0),
                             text=f"Downloading {literal(name)}: {self.n / 2**20:.0f} of "
                                  f"{self.total / 2**20:.0f} MB")
            return shown

    try:
        vitlens.fetch_timm_weights(name, tqdm_class=StreamlitBar)
    finally:
        bar.empty()
    _fetched().add(name)


def try_load(source: str) -> nn.Module | None:
    """The model, or an st.error saying why it cannot be loaded (refused here, offline, unknown name, bad file)."""
    refused = refusal(source)
    if refused:
        st.error(refused)
        return None
    try:
        if source.startswith("timm:"):
            download(source.removeprefix("timm:"))
        with st.spinner(f"Loading {literal(source)}..."):
            return load(source)
    except Exception as e:
        # vitlens names what is wrong (ValueError, ConnectionError, TypeError, OSError), but a file that is no
        # checkpoint can fail anywhere in the reader that tries it (torch.load raises IndexError on text): either way
        # a visitor sees one line, not a traceback
        known = isinstance(e, (ValueError, ConnectionError, TypeError, OSError))
        if not known:  # the operator's terminal gets the traceback
            logging.getLogger("vitlens").warning("cannot load %s", source, exc_info=True)
        st.error(f"Cannot load {literal(source)}: "
                 + literal(e if known else f"not a checkpoint vitlens can read ({type(e).__name__}: {e})"))
    return None


def is_vit(model: nn.Module) -> bool:
    """A ViT the analyses read (vitlens's, or one of timm's families): not a CNN."""
    return layout_is_vit(model)


def describe(model: nn.Module) -> dict[str, Any]:
    """Architecture, parameter count, resolution and preprocessing, for the model overview."""
    config = getattr(model, "config", None) or getattr(model, "vitlens_spec", None) or {"timm": type(model).__name__}
    return dict(kind="ViT" if is_vit(model) else "CNN", parameters=sum(p.numel() for p in model.parameters()),
                classes=model.num_classes, architecture=config, preprocessing=model.data_config)


# ---- the sidebar model picker --------------------------------------------------------------------------
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".npz")


def run_sources(folder: Path) -> list[str]:
    """Run directories and checkpoint files directly under the runs folder, where every weight file vitlens could
    read from them lies inside the folder once symlinks are resolved (a link out of it is not offered)."""
    if not folder.is_dir():
        return []
    root = folder.resolve()
    runs, files = [], []
    for p in sorted(folder.iterdir()):
        if p.is_dir():  # load_model reads model.safetensors, else the newest checkpoint: all must stay inside
            weights = [w for w in [p / "model.safetensors", *(p / "checkpoints").glob("*/model.safetensors")]
                       if w.is_file()]
            if weights and all(w.resolve().is_relative_to(root) for w in weights):
                runs.append(p)
        elif p.suffix in CHECKPOINT_SUFFIXES and p.is_file() and p.resolve().is_relative_to(root):
            files.append(p)
    return [str(p) for p in runs + files]


# The families people study today, with the tag of weights worth looking at (timm names; downloaded when online).
CURATED = {
    "The paper's ViT-B/16 (ImageNet-21k + 1k)": PAPER_CHECKPOINT,
    "The paper's ViT-L/32 at 384 px": "vit_large_patch32_384.orig_in21k_ft_in1k",
    "The paper's hybrid R50+ViT-B/16 at 384 px": "vit_base_r50_s16_384.orig_in21k_ft_in1k",
    "DeiT-B/16": "deit_base_patch16_224.fb_in1k",
    "DeiT-B/16 distilled (a distillation token)": "deit_base_distilled_patch16_224.fb_in1k",
    "DINO ViT-B/16 (self-supervised)": "vit_base_patch16_224.dino",
    "DINOv2 ViT-S/14": "vit_small_patch14_dinov2.lvd142m",
    "DINOv2 ViT-S/14 with 4 registers": "vit_small_patch14_reg4_dinov2.lvd142m",
    "CLIP ViT-B/16 (OpenAI)": "vit_base_patch16_clip_224.openai",
    "SigLIP ViT-B/16 (no class token)": "vit_base_patch16_siglip_224.webli",
    "MAE ViT-B/16 (masked autoencoder)": "vit_base_patch16_224.mae",
    "EVA-02 B/14 (RoPE)": "eva02_base_patch14_224.mim_in22k",
    "BEiT-B/16 (relative position bias)": "beit_base_patch16_224.in22k_ft_in22k_in1k",
}


def _curated_chosen(slot: str) -> None:
    """The curated list's choice becomes the name in the text box below it (which the user may still edit)."""
    st.session_state[f"timm_name{slot}"] = CURATED[st.session_state[f"timm_family{slot}"]]


def model_picker(slot: str = "") -> str:
    """Sidebar: where a model comes from; returns the chosen source (also in ``st.session_state["source" + slot]``).

    Args:
        slot: ``""`` for the page's model, ``"2"`` for the second one shown beside it.
    """
    bundled = [f"demo:{d}" for d in vitlens.list_demo_models()]
    first = default_vit()
    options = bundled if first in bundled else [first, *bundled]
    kind = st.sidebar.radio("Source", ["Bundled", "timm (online)", "Runs folder"], key=f"source_kind{slot}",
                            horizontal=True)
    if kind == "Bundled":
        default = "demo:vit-fashion-ft" if slot and "demo:vit-fashion-ft" in options else first
        source = st.sidebar.selectbox("Bundled model (offline, Fashion-MNIST)", options, index=options.index(default),
                                      key=f"bundled{slot}")
    elif kind == "timm (online)":
        st.sidebar.selectbox("ViT family", list(CURATED), key=f"timm_family{slot}", on_change=_curated_chosen,
                             args=(slot,), help="Fills the name below; every family's token layout is on the Model "
                                                "page.")
        name = st.sidebar.text_input("timm model name", PAPER_CHECKPOINT, key=f"timm_name{slot}",
                                     help="Any timm ViT (or, on the CNN pages, CNN), with its weights' tag; the "
                                          "paper's original weights need the full tag. Downloaded once.")
        source = f"timm:{name.strip()}"
    else:
        found = run_sources(runs_dir())
        if not found:
            st.sidebar.info(f"No runs or checkpoints in {literal(runs_dir().resolve())} (train one with `vitlens "
                            f"pretrain`, or start the app with --runs-dir). Using {literal(first)}.")
            source = first
        else:
            source = st.sidebar.selectbox(f"Run or checkpoint in {literal(runs_dir())}", found,
                                          key=f"run_source{slot}")
    st.session_state[f"source{slot}"] = source
    return source


def pickers() -> None:
    """The sidebar: the page's model, and optionally a second one that the attention, position-embedding and
    attention-distance pages show beside it with the same image and settings."""
    st.sidebar.header("Model")
    model_picker()
    if st.sidebar.toggle("Side by side with a second model", key="side_by_side",
                         help="Attention, Position embeddings and Attention distance show both, same image and "
                              "settings, shared colour scales where the quantities compare."):
        st.sidebar.subheader("Second model")
        model_picker("2")
    else:
        st.session_state.pop("source2", None)


def second_model(needs_vit: str) -> tuple[str, nn.Module] | None:
    """The second model of a side-by-side view, or None when side by side is off (or it cannot be used here)."""
    source = st.session_state.get("source2")
    if not source:
        return None
    if source == st.session_state.get("source"):
        st.info("The second model is the first one: pick another to see two side by side.")
        return None
    model = try_load(source)
    if model is not None and not is_vit(model):
        st.warning(f"The second model, {literal(source)}, is a CNN, and this page {needs_vit}.")
        return None
    return (source, model) if model is not None else None


def current_model(needs_vit: str | None = None) -> tuple[str, nn.Module]:
    """The sidebar's model; stops the page (the sidebar stays usable) if it cannot be used here.

    Args:
        needs_vit: what this page reads of a ViT, said when the sidebar holds a CNN (e.g. "reads attention maps");
            None when any model will do.
    """
    source = st.session_state.get("source") or default_vit()
    model = try_load(source)
    if model is None:
        st.stop()
    if needs_vit and not is_vit(model):
        st.warning(f"{literal(source)} is a CNN, and this page {needs_vit}: pick a ViT in the sidebar.")
        st.stop()
    return source, model


CNN_HELP = ("A bundled model (demo:cnn-fashion), a timm name as timm:NAME when online (e.g. the paper's BiT, "
            "timm:resnetv2_50x1_bit.goog_in21k_ft_in1k), or a run the sidebar's Runs folder lists.")


def cnn_picker(key: str) -> tuple[str, nn.Module]:
    """The CNN a page compares the ViT with (a text input under ``key``); stops the page if it cannot be used."""
    source = st.text_input("CNN to compare", default_cnn(), key=key, help=CNN_HELP)
    model = try_load(source)
    if model is None:
        st.stop()
    if is_vit(model):
        st.error(f"{literal(source)} is a ViT; name a CNN (e.g. demo:cnn-fashion, or online timm:resnet50.a1_in1k or "
                 f"the paper's BiT, timm:resnetv2_50x1_bit.goog_in21k_ft_in1k).")
        st.stop()
    return source, model


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

"""``load_model``: timm's hub, Google ``.npz``, safetensors / PyTorch files, run directories, bundled demos."""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..io import atomic_write
from .cnn import create_cnn
from .configs import CONFIG_FIELDS
from .npz import npz_to_state_dict
from .timm_convert import UnsupportedModelError, from_timm, timm_data_config
from .vit import VisionTransformer

log = logging.getLogger("vitlens")

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
METADATA_KEY = "vitlens"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says which and why."""


def list_demo_models() -> list[str]:
    """The bundled offline models, usable as ``demo:<name>``."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def _offline_sources() -> str:
    demos = ", ".join(f"demo:{n}" for n in list_demo_models()) or "none bundled"
    return (f"Offline sources: the bundled models ({demos}), a local .safetensors/.pth/.pt/.bin/.npz file, "
            f"or a vitlens run directory")


# ---- weights into a model, with messages that say what does not fit -----------------------------------
def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strict ``load_state_dict`` whose error names the first mismatching keys with both shapes."""
    own = model.state_dict()
    shapes = [f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
              for k, v in own.items() if k in state_dict and state_dict[k].shape != v.shape]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if shapes or missing or unexpected:
        parts = []
        for label, items in (("shape mismatch", shapes), ("missing in checkpoint", missing),
                             ("not in model", unexpected)):
            if items:
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state_dict)


def _unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """A bare state dict, or the model weights inside a training checkpoint."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict", "model_ema", "module"):
            if key in obj and isinstance(obj[key], Mapping):
                return _unwrap(obj[key], source)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in tensors.items()}
    raise CheckpointError(f"{source} holds no state dict (expected a mapping of tensor names to tensors, "
                          f"or a training checkpoint with a 'model' or 'state_dict' entry)")


def infer_vit_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """VisionTransformer fields from a timm-layout state dict. Heads are not visible in shapes: assume 64-wide
    heads (Table 1 and DeiT; 16 heads for ViT-H) unless the caller passes ``num_heads``."""
    if "pos_embed" not in sd or "patch_embed.proj.weight" not in sd:
        raise CheckpointError("no 'pos_embed' / 'patch_embed.proj.weight': not a ViT state dict in timm's layout")
    embed_dim = sd["pos_embed"].shape[-1]
    hybrid = any(k.startswith("patch_embed.backbone.") for k in sd)
    backbone_layers = None
    if hybrid:
        stages: dict[int, int] = {}
        for k in sd:
            if m := re.match(r"patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.", k):
                stages[int(m.group(1))] = max(stages.get(int(m.group(1)), 0), int(m.group(2)) + 1)
        backbone_layers = tuple(stages[s] for s in sorted(stages))
    in_chans = (sd["patch_embed.backbone.stem.conv.weight"] if hybrid else sd["patch_embed.proj.weight"]).shape[1]
    patch_size = sd["patch_embed.proj.weight"].shape[-1]
    pool = "token" if "cls_token" in sd else "gap"
    grid = sd["pos_embed"].shape[1] - (pool == "token")
    side = math.isqrt(grid)
    return dict(
        img_size=side * patch_size * (16 if hybrid else 1), patch_size=patch_size, in_chans=in_chans,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0, embed_dim=embed_dim,
        depth=1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))),
        num_heads=16 if embed_dim == 1280 else max(1, embed_dim // 64),
        mlp_dim=sd["blocks.0.mlp.fc1.weight"].shape[0],
        representation_size=sd["pre_logits.fc.weight"].shape[0] if "pre_logits.fc.weight" in sd else None,
        pool=pool, backbone_layers=backbone_layers)


# ---- saving -------------------------------------------------------------------------------------------
def model_metadata(model: nn.Module) -> dict[str, Any]:
    """What ``load_model`` needs to rebuild ``model``: its kind, constructor fields and data config."""
    if isinstance(model, VisionTransformer):
        return dict(kind="vit", config=model.config, data_config=model.data_config)
    if hasattr(model, "vitlens_spec"):
        return dict(kind="cnn", config=model.vitlens_spec, data_config=model.data_config)
    raise TypeError(f"cannot save a {type(model).__name__}: use a vitlens ViT or a model from create_cnn")


def save_model(model: nn.Module, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write weights as safetensors with the rebuild metadata, atomically (temp file, fsync, rename)."""
    from safetensors.torch import save_file

    meta = {METADATA_KEY: json.dumps({**model_metadata(model), **(extra or {})})}
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=meta))


# ---- reading files ------------------------------------------------------------------------------------
def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error type for truncated or corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e
    return sd, json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else None


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused to load {path}: it contains pickled Python objects that need code execution to load, and "
            f"vitlens reads PyTorch files with weights_only=True so that a checkpoint cannot run code. If you "
            f"trust it, load it yourself without that guard and save only its state dict (or .safetensors). "
            f"Details: {str(e).splitlines()[0]}") from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch file (truncated or corrupt?): {e}") from e
    meta = obj.get(METADATA_KEY) if isinstance(obj, Mapping) else None
    if isinstance(meta, str):
        meta = json.loads(meta)
    return _unwrap(obj, str(path)), meta


def _read_npz(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is not a readable .npz file (truncated or corrupt?): {e}") from e
    try:
        sd, config = npz_to_state_dict(arrays)
    except KeyError as e:
        raise CheckpointError(f"{path} is not a Google ViT checkpoint: missing key {e}") from e
    grid = math.isqrt(sd["pos_embed"].shape[1] - (config["pool"] == "token"))
    config["img_size"] = grid * config["patch_size"] * (16 if config["backbone_layers"] else 1)
    return sd, dict(kind="vit", config=config)


def _run_dir_weights(path: Path) -> Path:
    """A vitlens run directory: its final ``model.safetensors``, else the newest checkpoint."""
    if (path / "model.safetensors").exists():
        return path / "model.safetensors"
    ckpts = sorted((path / "checkpoints").glob("*/model.safetensors"))
    if not ckpts:
        raise CheckpointError(f"{path} is a directory but not a vitlens run (no model.safetensors, no "
                              f"checkpoints/*/model.safetensors)")
    return ckpts[-1]


def _build(meta: Mapping[str, Any], sd: Mapping[str, torch.Tensor], source: str,
           overrides: Mapping[str, Any]) -> nn.Module:
    if meta.get("kind") == "cnn":
        model = create_cnn(**meta["config"])
    else:
        config = {k: v for k, v in meta["config"].items() if k in CONFIG_FIELDS}
        model = VisionTransformer(**{**config, **overrides})
    load_weights(model, sd, source)
    if meta.get("data_config"):
        model.data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["data_config"].items()}
    return model


def _hub_unreachable() -> bool:
    """A 3-second probe, so an offline user gets the message at once instead of after the hub client's ~45 s
    of retries. Skipped behind a proxy, where a direct connection says nothing."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return False
    except OSError:
        return True


@contextmanager
def _hub_offline_if_unreachable():
    """Put huggingface_hub in offline mode while unreachable: weights already in the cache still load."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or _hub_unreachable()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _check_timm_name(name: str) -> None:
    import timm

    base = name.split(".")[0]
    if not timm.list_models(base) and not timm.is_model(base):
        raise ValueError(f"timm has no model {base!r}; see timm.list_models('vit_*'). The paper's original "
                         f"weights: vit_base_patch16_224.orig_in21k_ft_in1k, vit_large_patch32_384.orig_in21k_ft_in1k")


def _download_error(name: str, e: Exception) -> Exception:
    if isinstance(e, (RuntimeError, ValueError)) and "nknown" in str(e):
        return ValueError(f"timm does not know {name!r}: {e}")
    return ConnectionError(
        f"could not download the timm weights for {name!r}; you appear to be offline or the Hugging Face hub "
        f"is unreachable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
        f"{_offline_sources()}.")


def fetch_timm_weights(name: str, tqdm_class: type | None = None) -> Path | None:
    """Download timm's pretrained weights for ``name`` into the Hugging Face cache (or find them there), reporting
    bytes through ``tqdm_class``, so that a later ``load_model("timm:<name>")`` reads them from the cache.

    timm's own ``pretrained=True`` shows no progress a caller can display (the app's progress bar needs one).
    The file is the one timm reads: ``model.safetensors`` where the hub has it, else ``pytorch_model.bin``.

    Args:
        name: timm model name with optional tag (``vit_base_patch16_224.orig_in21k_ft_in1k``).
        tqdm_class: a ``tqdm`` subclass for the download's progress bar (huggingface_hub's ``tqdm_class``).

    Returns:
        The cached file, or None when timm gets these weights from a plain URL instead of the hub.

    Raises:
        ValueError: timm does not know the name. ConnectionError: offline or the hub unreachable.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError
    from timm.models import get_pretrained_cfg

    _check_timm_name(name)
    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    wanted = cfg.hf_hub_filename or "pytorch_model.bin"

    def download(filename: str) -> Path:
        return Path(hf_hub_download(repo_id, filename, revision=revision or None, tqdm_class=tqdm_class))

    try:
        with _hub_offline_if_unreachable():
            if wanted != "pytorch_model.bin":
                return download(wanted)
            try:  # timm prefers the safetensors copy of a pytorch_model.bin
                return download("model.safetensors")
            except EntryNotFoundError:
                return download(wanted)
    except Exception as e:
        raise _download_error(name, e) from e


def _load_timm(name: str, num_classes: int | None, overrides: Mapping[str, Any]) -> nn.Module:
    import timm

    _check_timm_name(name)
    try:
        with _hub_offline_if_unreachable():
            model = timm.create_model(name, pretrained=True)
    except Exception as e:
        raise _download_error(name, e) from e
    try:
        return from_timm(model, **overrides)
    except UnsupportedModelError:  # not a ViT: keep the timm model (CNN baselines) with its preprocessing
        if overrides:
            raise ValueError(f"timm:{name} stays a timm model (not a ViT vitlens converts), so the model fields "
                             f"{sorted(overrides)} do not apply to it: drop them") from None
        model.data_config = timm_data_config(model)
        if num_classes is not None and num_classes != model.num_classes:
            log.info("%s: new %d-class head (timm's reset_classifier)", name, num_classes)
            model.reset_classifier(num_classes)
        chans, _, side = model.data_config["input_size"]
        # create_cnn rebuilds the same architecture, so a fine-tuned copy saves and loads like the bundled CNN
        model.vitlens_spec = dict(name=model.pretrained_cfg.get("architecture") or name.split(".")[0],
                                  in_chans=chans, num_classes=model.num_classes, img_size=side)
        return model


def load_model(source: str | Path, *, num_classes: int | None = None, img_size: int | tuple[int, int] | None = None,
               **overrides: Any) -> nn.Module:
    """Load a model from timm's hub, a file, a run directory or the bundled demos.

    Args:
        source: ``"timm:<name>[.<tag>]"`` (e.g. ``timm:vit_base_patch16_224.orig_in21k_ft_in1k``), a path to
            ``.safetensors``, ``.pth``/``.pt``/``.bin`` (read with ``weights_only=True``) or a Google ``.npz``,
            a vitlens run directory, or ``"demo:<name>"`` (see :func:`list_demo_models`).
        num_classes: if it differs from the checkpoint, the head is replaced by a zero-initialised linear layer.
        img_size: if it differs, the position embeddings are interpolated (bicubic) to the new grid.
        **overrides: architecture fields the file cannot tell (``num_heads`` for a bare state dict) or runtime
            options (``dropout``, ``drop_path``, ``dynamic_img_size``...).

    Returns:
        A :class:`VisionTransformer` (eval mode), or for CNN sources the timm model, each with ``data_config``.
    """
    src = str(source)
    if src.startswith("timm:"):
        model = _load_timm(src[5:], num_classes, overrides)
    else:
        if src.startswith("demo:"):
            name = src[5:]
            path = WEIGHTS_DIR / f"{name}.safetensors"
            if not path.exists():
                raise ValueError(f"unknown demo model {name!r}; bundled: {', '.join(list_demo_models()) or 'none'}")
        else:
            path = Path(src).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist. Sources: 'timm:<name>', 'demo:<name>', a "
                                        f"checkpoint file or a run directory")
            if path.is_dir():
                path = _run_dir_weights(path)
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            sd, meta = _read_safetensors(path)
        elif suffix in TORCH_SUFFIXES:
            sd, meta = _read_torch(path)
        elif suffix == ".npz":
            sd, meta = _read_npz(path)
        else:
            raise CheckpointError(f"{path}: unknown checkpoint type {suffix!r}; use .safetensors, "
                                  f".pth/.pt/.bin or a Google .npz")
        if meta is None:
            config = infer_vit_config(sd)
            log.info("%s: no vitlens metadata; architecture read off the shapes: %s", path, config)
            meta = dict(kind="vit", config=config)
        model = _build(meta, sd, str(path), overrides)

    if isinstance(model, VisionTransformer):
        if img_size is not None and tuple(model._checked_img_size(img_size)) != model.img_size:
            log.info("%s: position embeddings resized from %s to %s (bicubic)", src, model.img_size, img_size)
            model.set_img_size(img_size)
        if num_classes is not None and num_classes != model.num_classes:
            log.info("%s: head replaced by a zero-initialised %d-class linear layer", src, num_classes)
            model.reset_head(num_classes)
    return model.eval()

"""State dicts: reading weight files (safetensors, PyTorch, Google .npz) without running code, fitting them into a
model with messages that say what does not fit, and reading a ViT's architecture off a state dict's shapes."""
from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .npz import npz_to_state_dict

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
METADATA_KEY = "vitlens"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says which and why."""


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strict ``load_state_dict`` whose error names the first mismatching keys with both shapes."""
    # Checked here before torch's strict load, whose error lists every mismatching key over many lines and, for a
    # shape mismatch, cannot be told apart from other RuntimeErrors without parsing its text.
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


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The tensors of a weight file and the vitlens metadata it carries (None when it has none).

    Args:
        path: ``.safetensors``, ``.pth``/``.pt``/``.bin`` (read with ``weights_only=True``) or a Google ``.npz``.
    """
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path)
    if suffix == ".npz":
        return _read_npz(path)
    raise CheckpointError(f"{path}: unknown checkpoint type {suffix!r}; use .safetensors, .pth/.pt/.bin or a "
                          f"Google .npz")

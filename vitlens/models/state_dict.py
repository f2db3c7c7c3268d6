"""State dicts: reading weight files (safetensors, PyTorch, Google .npz) without running code, fitting them into a
model with messages that say what does not fit, and reading a ViT's architecture off a state dict's shapes."""
from __future__ import annotations

import io
import json
import math
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .npz import NpzLayoutError, npz_to_state_dict

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
METADATA_KEY = "vitlens"
# torch.save's format since torch 1.6 is a zip; torch.serialization._is_zipfile checks these bytes too, but is private.
ZIP_MAGIC = b"PK\x03\x04"
SCAN_BYTES = 64 * 2**20  # how much of a legacy (non-zip) file is read to find the globals its pickles import


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says which and why."""


def check_finite(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or inf, naming the first such tensor and how many of its values are bad.

    Such weights load without complaint and turn every output into NaN (an evaluation "at chance", NaN maps), so
    they are refused where they are read. ``torch.isfinite(t).all()`` per tensor: one pass, no copy kept.
    """
    bad = [k for k, t in state_dict.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        t = state_dict[bad[0]]
        more = f"; {len(bad) - 1} more tensor{'s' * (len(bad) > 2)} too" if len(bad) > 1 else ""
        raise CheckpointError(
            f"{source}: tensor {bad[0]!r} holds {int(torch.isnan(t).sum())} NaN and {int(torch.isinf(t).sum())} "
            f"infinite values (of {t.numel()}){more}: these weights are broken (a diverged run?). To load them "
            f"anyway: vitlens.load_model(..., allow_nonfinite=True)")


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint", *,
                 allow_nonfinite: bool = False) -> None:
    """Strict ``load_state_dict`` whose error names the first mismatching keys with both shapes.

    Args:
        model: the model to fill.
        state_dict: its weights, in the model's names.
        source: what to call the weights in messages.
        allow_nonfinite: load tensors holding NaN or inf instead of refusing them (see :func:`check_finite`).
    """
    if not allow_nonfinite:
        check_finite(state_dict, source)
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


def infer_vit_config(sd: Mapping[str, torch.Tensor], source: str = "the state dict") -> dict[str, Any]:
    """VisionTransformer fields from a timm-layout state dict. Heads are not visible in shapes: assume 64-wide
    heads (Table 1 and DeiT; 16 heads for ViT-H) unless the caller passes ``num_heads``.

    Args:
        sd: the tensors, in timm's names.
        source: what to call them in messages.
    """
    needed = dict(pos_embed=3, **{"patch_embed.proj.weight": 4, "blocks.0.mlp.fc1.weight": 2})  # name: rank
    if missing := [k for k, rank in needed.items() if k not in sd or sd[k].ndim != rank]:
        raise CheckpointError(f"{source} has no vitlens metadata and is not a ViT state dict in timm's layout: no "
                              f"{', '.join(map(repr, missing))} of the right rank")
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
    return sd, _metadata(meta.get(METADATA_KEY), path)


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes)")
    return head


def _imports_of_one_pickle(stream: io.BytesIO) -> set[str]:
    """The globals one pickle imports; STACK_GLOBAL (protocol 4+) takes its names from the two values pushed before
    it, literal strings or memo lookups, which is how the pickle module writes them."""
    found: set[str] = set()
    last: list[Any] = [None, None]
    memo: dict[int, Any] = {}
    for op, arg, _ in pickletools.genops(stream):
        if op.name in ("GLOBAL", "INST"):
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.add(".".join(last) if all(isinstance(v, str) for v in last) else "a name computed while loading")
        elif op.name.startswith("EXT"):
            found.add(f"copyreg extension {arg}")
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            memo[len(memo) if op.name == "MEMOIZE" else arg] = last[-1]
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            last = [last[-1], memo.get(arg)]
        elif op.name not in ("FRAME", "PROTO", "MARK"):
            last = [last[-1], arg if op.name.endswith(("UNICODE", "UNICODE8", "STRING")) else None]
    return found


def _unsafe_imports(data: bytes) -> list[str] | None:
    """The globals the pickles at the start of ``data`` import that torch's weights-only loader refuses (importing
    them is running code); None when ``data`` does not start with a complete pickle.

    Read with the standard library's disassembler, which imports and runs nothing. torch's own
    ``get_unsafe_globals_in_checkpoint`` makes the same diff, but reads only zip files holding protocol-2 pickles:
    a file from ``pickle.dump`` (protocol 4) or torch's legacy format needs this reading.
    """
    from torch import _weights_only_unpickler as wo  # its allowlist has no public accessor

    stream, found, complete = io.BytesIO(data), set(), 0
    while stream.tell() < len(data):  # the legacy format: several pickles in a row, then raw tensor bytes
        try:
            found |= _imports_of_one_pickle(stream)
        except ValueError:  # pickletools' error where the bytes stop being a pickle
            break
        complete += 1
    if not complete:
        return None
    allowed = {*getattr(wo, "_get_allowed_globals", dict)(), *getattr(wo, "_get_user_allowed_globals", dict)()}
    return sorted(found - allowed)


def _pickle_bytes(path: Path, zipped: bool) -> bytes:
    """The pickle of a torch.save zip (``<archive>/data.pkl``), or the start of any other file."""
    if zipped:
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            return zf.read(name) if name else b""
    with open(path, "rb") as f:
        return f.read(SCAN_BYTES)


def _refused(path: Path, unsafe: list[str]) -> CheckpointError:
    more = f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else ""
    return CheckpointError(
        f"refused to load {path}: it is a pickle that imports {', '.join(unsafe[:3])}{more}, so loading it needs code "
        f"execution, and vitlens reads PyTorch files with weights_only=True so that a checkpoint cannot run code. If "
        f"you trust it, load it yourself without that guard and save only its state dict (or .safetensors)")


def _unreadable(path: Path, zipped: bool, error: Exception) -> CheckpointError:
    """Why torch.load refused a file: a pickle that needs code, or a file that is broken or not torch's."""
    try:
        unsafe = _unsafe_imports(_pickle_bytes(path, zipped))
    except (OSError, zipfile.BadZipFile, RuntimeError, EOFError):  # the zip itself is broken (truncated)
        unsafe = None
    if unsafe:
        return _refused(path, unsafe)
    # torch wraps the weights-only unpickler's own error in a long text that suggests weights_only=False
    inner = error.__context__ if isinstance(error, pickle.UnpicklingError) and error.__context__ else error
    detail = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return CheckpointError(f"{path} is not a readable PyTorch file: truncated or corrupt, or not written by "
                           f"torch.save ({detail})")


def read_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, whose errors, in one line, tell a file that is no PyTorch
    file (it names the bytes it starts with), a broken one, and a pickle that needs code execution apart.

    Args:
        path: a file written by ``torch.save`` (a zip, or the legacy format: pickles, starting with byte 0x80).

    Raises:
        CheckpointError: the file cannot be read safely; the message says why.
    """
    head = _head(path)
    zipped = head.startswith(ZIP_MAGIC)
    if not zipped and not (head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL):
        if unsafe := _unsafe_imports(_pickle_bytes(path, zipped=False)):  # a protocol-0 pickle is text
            raise _refused(path, unsafe)
        raise CheckpointError(f"{path} is not a PyTorch file (it starts with {head[:8]!r}; torch.save writes a zip, "
                              f"which starts with {ZIP_MAGIC!r}): a text file, or another format under a PyTorch name?")
    try:
        with warnings.catch_warnings():  # torch warns on stderr about every pickle protocol but its own 2
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a hostile file raises anything from torch.load (UnpicklingError, KeyError, struct.error)
        raise _unreadable(path, zipped, e) from e


def _is_safetensors(path: Path, head: bytes) -> bool:
    """safetensors' layout: an 8-byte little-endian header length, then the JSON header."""
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") + 8 <= path.stat().st_size


def _metadata(raw: Any, path: Path) -> dict[str, Any] | None:
    """A file's vitlens metadata entry (JSON text, or a dict in a PyTorch file), parsed; its fields are checked
    where the model is built."""
    if raw is None:
        return None
    try:
        meta = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    except ValueError as e:
        raise CheckpointError(f"{path}: its vitlens metadata is not valid JSON ({e}); re-save the model with "
                              f"vitlens.save_model") from e
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{path}: its vitlens metadata is a JSON {type(meta).__name__}, not an object with "
                              f"'kind', 'config' and 'data_config'; re-save the model with vitlens.save_model")
    return dict(meta)


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    if _is_safetensors(path, _head(path)):  # a safetensors file under a PyTorch name reads as what it is
        return _read_safetensors(path)
    obj = read_torch_file(path)
    meta = obj.get(METADATA_KEY) if isinstance(obj, Mapping) else None
    return _unwrap(obj, str(path)), _metadata(meta, path)


def _read_npz(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is not a readable .npz file (truncated or corrupt?): {e}") from e
    try:
        sd, config = npz_to_state_dict(arrays)
        grid = math.isqrt(sd["pos_embed"].shape[1] - (config["pool"] == "token"))
    except NpzLayoutError as e:
        raise CheckpointError(f"{path} is not a complete Google ViT checkpoint: {e}") from e
    except (ValueError, IndexError, RuntimeError) as e:  # reshapes and transposes of arrays of unexpected rank
        raise CheckpointError(f"{path}: its arrays do not have the shapes of a Google ViT checkpoint "
                              f"({type(e).__name__}: {e})") from e
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

"""``load_model``: timm's hub, Google ``.npz``, safetensors / PyTorch files, run directories, bundled demos."""
from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, get_type_hints

import torch
from torch import nn

from ..fields import accept, describe, short
from ..io import atomic_write
from .cnn import create_cnn
from .configs import CONFIG_FIELDS
from .state_dict import (METADATA_KEY, CheckpointError, check_finite, infer_vit_config, load_weights,
                         read_state_dict)
from .timm_convert import UnsupportedModelError, from_timm, timm_data_config
from .vit import VisionTransformer

log = logging.getLogger("vitlens")

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
__all__ = ["CheckpointError", "WEIGHTS_DIR", "fetch_timm_weights", "list_demo_models", "load_model", "load_weights",
           "model_card", "model_metadata", "save_model"]


def model_card(source: str) -> dict[str, Any] | None:
    """The model card of a bundled ``demo:<name>`` model (what trained it, its test accuracy), or None for any other
    source."""
    name = str(source).removeprefix("demo:")
    if not str(source).startswith("demo:") or name not in list_demo_models():
        return None
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())


def list_demo_models() -> list[str]:
    """The bundled offline models, usable as ``demo:<name>``."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def _offline_sources() -> str:
    demos = ", ".join(f"demo:{n}" for n in list_demo_models()) or "none bundled"
    return (f"Offline sources: the bundled models ({demos}), a local .safetensors/.pth/.pt/.bin/.npz file, "
            f"or a vitlens run directory")


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


def _run_dir_weights(path: Path) -> Path:
    """A vitlens run directory: its final ``model.safetensors``, else the newest checkpoint."""
    if (path / "model.safetensors").exists():
        return path / "model.safetensors"
    ckpts = sorted((path / "checkpoints").glob("*/model.safetensors"))
    if not ckpts:
        raise CheckpointError(f"{path} is a directory but not a vitlens run (no model.safetensors, no "
                              f"checkpoints/*/model.safetensors)")
    return ckpts[-1]


# What preprocess() reads of a data config, as the types a saved one must have.
DATA_CONFIG_HINTS = dict(input_size=Sequence[int], mean=Sequence[float], std=Sequence[float], interpolation=str,
                         crop_pct=float, crop_mode=str)


@cache
def _constructor_hints(build: Callable) -> dict[str, Any]:
    return get_type_hints(build.__init__ if isinstance(build, type) else build)


def _metadata_problem(meta: Mapping[str, Any]) -> str | None:
    """What is wrong with a file's vitlens metadata, or None. A field of the wrong type would otherwise fail deep
    inside the model: a width saved as a string gives "not all arguments converted during string formatting" from
    ``embed_dim % num_heads``."""
    kind, config, data_config = meta.get("kind", "vit"), meta.get("config"), meta.get("data_config") or {}
    if kind not in ("vit", "cnn"):
        return f"has kind {kind!r}, not 'vit' or 'cnn'"
    for name, value in (("config", config), ("data_config", data_config)):
        if not isinstance(value, Mapping):
            kind_of = f"a JSON {type(value).__name__}"
            return f"has no {name!r} object" if value is None else f"has a {name!r} that is {kind_of}"
    hints = _constructor_hints(create_cnn if kind == "cnn" else VisionTransformer)
    for name, fields, field_hints in (("config", config, hints), ("data_config", data_config, DATA_CONFIG_HINTS)):
        for key, value in fields.items():
            if key in field_hints and not accept(value, field_hints[key])[0]:
                return f"has {name}.{key} = {short(value)}, which is not {describe(field_hints[key])}"
    return None


def _build(meta: Mapping[str, Any], sd: Mapping[str, torch.Tensor], source: str,
           overrides: Mapping[str, Any]) -> nn.Module:
    """The model ``meta`` describes, filled with ``sd`` (already checked for non-finite values by the caller)."""
    if problem := _metadata_problem(meta):
        raise CheckpointError(f"{source}: its vitlens metadata {problem}; re-save the model with vitlens.save_model")
    try:
        if meta.get("kind") == "cnn":
            model = create_cnn(**meta["config"])
        else:
            config = {k: v for k, v in meta["config"].items() if k in CONFIG_FIELDS}
            model = VisionTransformer(**{**config, **overrides})
    except (TypeError, ValueError, RuntimeError) as e:  # values of the right type that still make no model
        raise CheckpointError(f"cannot build the model of {source}: {e}") from e
    load_weights(model, sd, source, allow_nonfinite=True)
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


def _load_timm(name: str, num_classes: int | None, overrides: Mapping[str, Any], allow_nonfinite: bool) -> nn.Module:
    import timm

    _check_timm_name(name)
    try:
        with _hub_offline_if_unreachable():
            model = timm.create_model(name, pretrained=True)
    except Exception as e:
        raise _download_error(name, e) from e
    if not allow_nonfinite:
        check_finite(model.state_dict(), f"timm:{name}")
    try:
        return from_timm(model, allow_nonfinite=allow_nonfinite, **overrides)
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


def _weights_path(src: str) -> Path:
    """The weight file of ``demo:<name>``, of a file path, or of a run directory."""
    if src.startswith("demo:"):
        if src[5:] not in list_demo_models():  # a name, never a path (demo:../x would reach any file)
            raise ValueError(f"unknown demo model {src[5:]!r}; bundled: {', '.join(list_demo_models()) or 'none'}")
        return WEIGHTS_DIR / f"{src[5:]}.safetensors"
    path = Path(src).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist. Sources: 'timm:<name>', 'demo:<name>', a checkpoint file "
                                f"or a run directory")
    return _run_dir_weights(path) if path.is_dir() else path


def _load_file(src: str, overrides: Mapping[str, Any], allow_nonfinite: bool) -> nn.Module:
    path = _weights_path(src)
    sd, meta = read_state_dict(path)
    if not allow_nonfinite:  # once, before building: a broken file is refused before a big model is made for it
        check_finite(sd, str(path))
    if meta is None:
        config = infer_vit_config(sd, str(path))
        log.info("%s: no vitlens metadata; architecture read off the shapes: %s", path, config)
        meta = dict(kind="vit", config=config)
    return _build(meta, sd, str(path), overrides)


def load_model(source: str | Path, *, num_classes: int | None = None, img_size: int | tuple[int, int] | None = None,
               allow_nonfinite: bool = False, **overrides: Any) -> nn.Module:
    """Load a model from timm's hub, a file, a run directory or the bundled demos.

    Args:
        source: ``"timm:<name>[.<tag>]"`` (e.g. ``timm:vit_base_patch16_224.orig_in21k_ft_in1k``), a path to
            ``.safetensors``, ``.pth``/``.pt``/``.bin`` (read with ``weights_only=True``) or a Google ``.npz``,
            a vitlens run directory, or ``"demo:<name>"`` (see :func:`list_demo_models`).
        num_classes: if it differs from the checkpoint, the head is replaced by a zero-initialised linear layer.
        img_size: if it differs, the position embeddings are interpolated (bicubic) to the new grid.
        allow_nonfinite: load weights holding NaN or inf; by default they are refused, naming the first such
            tensor (they would make every output NaN).
        **overrides: architecture fields the file cannot tell (``num_heads`` for a bare state dict) or runtime
            options (``dropout``, ``drop_path``, ``dynamic_img_size``...).

    Returns:
        A :class:`VisionTransformer` (eval mode), or for CNN sources the timm model, each with ``data_config``.
    """
    src = str(source)
    if src.startswith("timm:"):
        model = _load_timm(src[5:], num_classes, overrides, allow_nonfinite)
    else:
        model = _load_file(src, overrides, allow_nonfinite)
    if isinstance(model, VisionTransformer):
        if img_size is not None and tuple(model._checked_img_size(img_size)) != model.img_size:
            log.info("%s: position embeddings resized from %s to %s (bicubic)", src, model.img_size, img_size)
            model.set_img_size(img_size)
        if num_classes is not None and num_classes != model.num_classes:
            log.info("%s: head replaced by a zero-initialised %d-class linear layer", src, num_classes)
            model.reset_head(num_classes)
    return model.eval()

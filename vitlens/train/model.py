"""The model a run trains: a fresh one from the ``model`` section, or a fine-tuning start, and how it is compiled."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..models.cnn import create_cnn
from ..models.configs import MODEL_CONFIGS, create_model
from ..models.loading import load_model
from ..models.vit import VisionTransformer
from .config import compiles


def build_model(model_cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """A fresh model (``arch``) or a fine-tuning start (``source``) from the ``model`` section.

    ``arch``: ``vit`` (the VisionTransformer fields given), a :func:`vitlens.create_model` name, or a timm CNN
    for :func:`vitlens.create_cnn`. ``source``: anything :func:`vitlens.load_model` accepts; as in the paper
    (section 3.2) the whole pre-training head is replaced by one zero-initialised linear layer, and the position
    embeddings are 2-D interpolated when ``img_size`` differs.
    """
    cfg = dict(model_cfg)
    if source := cfg.pop("source", None):
        return _finetuning_start(source, num_classes, cfg.pop("img_size", None), cfg)
    arch = cfg.pop("arch", "vit")
    cfg.setdefault("num_classes", num_classes)
    if arch == "vit":
        return VisionTransformer(**cfg)
    if arch in MODEL_CONFIGS:
        return create_model(arch, **cfg)
    return create_cnn(arch, **cfg)


def _finetuning_start(source: str, num_classes: int, img_size: int | None, fields: dict[str, Any]) -> nn.Module:
    """``source`` with a new zero-initialised head for ``num_classes``, at ``img_size`` when given."""
    model = load_model(source, img_size=img_size, **fields)
    if isinstance(model, VisionTransformer):
        model.reset_head(num_classes)
    else:  # a timm CNN: new classifier, zeroed like the ViT's
        model.reset_classifier(num_classes)
        nn.init.zeros_(model.get_classifier().weight)
        nn.init.zeros_(model.get_classifier().bias)
        side = img_size or model.data_config["input_size"][-1]
        model.vitlens_spec.update(num_classes=num_classes, img_size=side)
        model.data_config["input_size"] = (model.data_config["input_size"][0], side, side)
    return model.train()


def compile_model(model: nn.Module, setting: Any) -> nn.Module:
    """``train.compile``: false; true (torch.compile's default); ``tuned``, the default plus Inductor's
    coordinate-descent tuning of the kernels it generates (ViT-B/16 on an H200: +2 to 3 % training throughput for
    about a minute more compile time); or a torch.compile mode such as ``max-autotune``."""
    if not compiles(setting):
        return model
    if setting is True or setting in ("true", "default"):
        return torch.compile(model)
    if setting == "tuned":
        return torch.compile(model, options={"coordinate_descent_tuning": True})
    modes = torch._inductor.list_mode_options()
    if setting not in modes:
        raise ValueError(f"train.compile={setting!r}: use true, false, tuned or a torch.compile mode "
                         f"({', '.join(modes)})")
    return torch.compile(model, mode=setting)

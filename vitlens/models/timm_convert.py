"""Instantiated timm models to vitlens: architecture fields, weights and preprocessing."""
from __future__ import annotations

from typing import Any

from torch import nn

from .state_dict import load_weights
from .vit import VisionTransformer


class UnsupportedModelError(ValueError):
    """A timm model that is not the paper's ViT (layer scale, register tokens, ...)."""


def timm_vit_config(model: nn.Module) -> dict[str, Any]:
    """The VisionTransformer fields of a timm ``VisionTransformer``; raises for variants beyond the paper."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    name = getattr(model, "default_cfg", {}).get("architecture", type(model).__name__)
    if not isinstance(model, TimmViT):
        raise UnsupportedModelError(f"{name} is a {type(model).__name__}, not a timm VisionTransformer")
    blk = model.blocks[0]
    problems = []
    if getattr(model, "reg_token", None) is not None:
        problems.append("register tokens")
    if getattr(model, "dist_token", None) is not None:
        problems.append("a distillation token")
    if getattr(model, "no_embed_class", False):
        problems.append("position embeddings without a class slot (no_embed_class)")
    if not isinstance(getattr(blk, "ls1", nn.Identity()), nn.Identity):
        problems.append("layer scale")
    if not isinstance(getattr(blk.attn, "q_norm", nn.Identity()), nn.Identity):
        problems.append("qk-norm")
    if not isinstance(getattr(model, "norm_pre", nn.Identity()), nn.Identity):
        problems.append("a pre-encoder LayerNorm")
    if not isinstance(getattr(model, "fc_norm", nn.Identity()), nn.Identity):
        problems.append("a LayerNorm after pooling (fc_norm)")
    if getattr(model, "attn_pool", None) is not None:
        problems.append("attention pooling")
    if model.global_pool not in ("token", "avg") or (model.global_pool == "avg") != (model.cls_token is None):
        problems.append(f"global_pool={model.global_pool!r} with class_token={model.cls_token is not None}")
    if blk.attn.qkv.bias is None:
        problems.append("qkv without bias")
    if not isinstance(blk.mlp.act, nn.GELU) or getattr(blk.mlp.act, "approximate", "none") != "none":
        problems.append(f"activation {blk.mlp.act}")
    if problems:
        raise UnsupportedModelError(
            f"{name} is not the paper's ViT: it uses {', '.join(problems)}. vitlens implements the original "
            f"architecture (e.g. vit_base_patch16_224.orig_in21k_ft_in1k, vit_base_r50_s16_384.orig_in21k_ft_in1k)")

    pe = model.patch_embed
    hybrid = hasattr(pe, "backbone")
    return dict(
        img_size=tuple(pe.img_size), patch_size=pe.proj.kernel_size[0],
        in_chans=(pe.backbone.stem.conv.weight.shape[1] if hybrid else pe.proj.weight.shape[1]),
        num_classes=model.num_classes, embed_dim=model.embed_dim, depth=len(model.blocks),
        num_heads=blk.attn.num_heads, mlp_dim=blk.mlp.fc1.out_features, representation_size=None,
        pool="token" if model.global_pool == "token" else "gap", dropout=model.pos_drop.p,
        attn_dropout=blk.attn.attn_drop.p, dynamic_img_size=bool(getattr(model, "dynamic_img_size", False)),
        backbone_layers=tuple(len(s.blocks) for s in pe.backbone.stages) if hybrid else None)


def timm_data_config(model: nn.Module) -> dict[str, Any]:
    """timm's own preprocessing for this model (its pretrained config)."""
    from timm.data import resolve_model_data_config

    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in resolve_model_data_config(model).items()}
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if size is not None:  # a ViT made at another size than its pretrained config's (timm keeps the config's)
        cfg["input_size"] = (cfg["input_size"][0], *(size if isinstance(size, (tuple, list)) else (size, size)))
    return cfg


def data_config_of(model: nn.Module) -> dict[str, Any]:
    """A model's preprocessing: the ``data_config`` vitlens attaches (load_model, create_model, create_cnn), else
    timm's own for a model made with ``timm.create_model``."""
    return getattr(model, "data_config", None) or timm_data_config(model)


# What from_timm lets a caller choose: options that leave the weights' meaning alone. The architecture is the model's.
RUNTIME_FIELDS = ("dropout", "attn_dropout", "drop_path", "dynamic_img_size", "low_precision_residual")


def from_timm(model: nn.Module, *, allow_nonfinite: bool = False, **overrides: Any) -> VisionTransformer:
    """Convert an instantiated timm ViT (plain or R50 hybrid), weights and data config included.

    Args:
        model: the timm VisionTransformer.
        allow_nonfinite: accept weights holding NaN or inf (refused by default: a diverged model).
        **overrides: runtime options of :class:`VisionTransformer` (:data:`RUNTIME_FIELDS`: ``dropout``,
            ``attn_dropout``, ``drop_path``, ``dynamic_img_size``, ``low_precision_residual``); the architecture
            comes from ``model``.

    Example:
        >>> vit = from_timm(timm.create_model("vit_base_patch16_224.orig_in21k_ft_in1k", pretrained=True))
    """
    if unknown := sorted(set(overrides) - set(RUNTIME_FIELDS)):
        raise ValueError(f"{unknown} cannot be set on a converted timm ViT: its architecture is the timm model's. "
                         f"Settable: {', '.join(RUNTIME_FIELDS)}")
    vit = VisionTransformer(**{**timm_vit_config(model), **overrides})
    load_weights(vit, model.state_dict(), source=getattr(model, "default_cfg", {}).get("architecture", "timm model"),
                 allow_nonfinite=allow_nonfinite)
    vit.data_config = timm_data_config(model)
    vit.train(model.training)
    return vit

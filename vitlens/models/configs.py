"""Named architectures (paper Table 1, plus DeiT's Tiny and Small) and ``create_model``."""
from __future__ import annotations

import inspect
from typing import Any

from .vit import VisionTransformer

_TI = dict(embed_dim=192, mlp_dim=768, num_heads=3, depth=12)
_S = dict(embed_dim=384, mlp_dim=1536, num_heads=6, depth=12)
_B = dict(embed_dim=768, mlp_dim=3072, num_heads=12, depth=12)
_L = dict(embed_dim=1024, mlp_dim=4096, num_heads=16, depth=24)
_H = dict(embed_dim=1280, mlp_dim=5120, num_heads=16, depth=32)

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "vit_ti16": dict(_TI, patch_size=16),
    "vit_s16": dict(_S, patch_size=16),
    "vit_s32": dict(_S, patch_size=32),
    "vit_b16": dict(_B, patch_size=16),
    "vit_b32": dict(_B, patch_size=32),
    "vit_l16": dict(_L, patch_size=16),
    "vit_l32": dict(_L, patch_size=32),
    "vit_h14": dict(_H, patch_size=14),
    # R50+ViT-B/16: ResNet stages (3, 4, 9) reach stride 16; patch size 1 on that feature map.
    "r50_vit_b16": dict(_B, patch_size=1, backbone_layers=(3, 4, 9)),
}

CONFIG_FIELDS = tuple(p for p in inspect.signature(VisionTransformer).parameters)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return list(MODEL_CONFIGS)


def create_model(name: str, **overrides: Any) -> VisionTransformer:
    """Build a named ViT with random weights; any constructor field can be overridden.

    Args:
        name: one of :func:`list_models`.
        **overrides: img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_dim,
            representation_size, pool, dropout, attn_dropout, drop_path, dynamic_img_size, backbone_layers,
            low_precision_residual.

    Example:
        >>> model = create_model("vit_b16", img_size=384, num_classes=10)
    """
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_CONFIGS)}")
    unknown = sorted(set(overrides) - set(CONFIG_FIELDS))
    if unknown:
        raise ValueError(f"unknown model field(s) {unknown}; valid fields: {', '.join(CONFIG_FIELDS)}")
    return VisionTransformer(**{**MODEL_CONFIGS[name], **overrides})

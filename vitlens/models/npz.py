"""Google's official ``.npz`` ViT and R50+ViT checkpoints to timm's state-dict layout.

Written here rather than calling timm's ``_load_weights`` because that is private, copies into an
already-built model (so the architecture must be known in advance) and drops the pre-logits layer;
reading the keys directly also lets us infer the architecture from the file.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np
import torch

PREFIXES = ("opt/target/", "params/", "")


def _t(a: np.ndarray) -> torch.Tensor:
    """Flax layouts to PyTorch: HWIO conv to OIHW, (in, out) dense to (out, in)."""
    if a.ndim == 4 and a.shape[:3] == (1, 1, 1):  # BiT stores GroupNorm params as 1x1x1xC
        a = a.reshape(-1)
    if a.ndim == 4:
        a = a.transpose(3, 2, 0, 1)
    elif a.ndim == 2:
        a = a.T
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def npz_to_state_dict(arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Convert an official checkpoint (any of the prefixes ``opt/target/``, ``params/``).

    Returns:
        (state_dict, config): timm-layout tensors, and the VisionTransformer fields read off the shapes.
    """
    prefix = next((p for p in PREFIXES if f"{p}embedding/kernel" in arrays), None)
    if prefix is None:
        raise KeyError("no 'embedding/kernel' (nor with an 'opt/target/' or 'params/' prefix): "
                       "not a Google ViT checkpoint")
    w = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    # Two layouts: vision_transformer (posembed_input, MHA_1, MlpBlock_3, LayerNorm_2) and big_vision
    # ('params/', pos_embedding at the root, MHA_0, MlpBlock_0, LayerNorm_1, blocks optionally stacked).
    scanned = "Transformer/encoderblock/LayerNorm_0/scale" in w
    big_vision = prefix == "params/" or "pos_embedding" in w or scanned
    mha, mlp, ln2 = ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1") if big_vision else (
        "MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2")
    if scanned:
        depth = w["Transformer/encoderblock/LayerNorm_0/scale"].shape[0]
    else:
        depth = 1 + max(int(m.group(1)) for k in w if (m := re.match(r"Transformer/encoderblock_(\d+)/", k)))

    def blk(i: int, name: str) -> np.ndarray:
        return w[f"Transformer/encoderblock/{name}"][i] if scanned else w[f"Transformer/encoderblock_{i}/{name}"]

    sd: dict[str, torch.Tensor] = {}

    def copy(dst: str, src: str) -> None:
        sd[dst] = _t(w[src])

    copy("patch_embed.proj.weight", "embedding/kernel")
    copy("patch_embed.proj.bias", "embedding/bias")
    if "cls" in w:
        sd["cls_token"] = torch.from_numpy(np.asarray(w["cls"], dtype=np.float32))
    pos = w["pos_embedding" if "pos_embedding" in w else "Transformer/posembed_input/pos_embedding"]
    sd["pos_embed"] = torch.from_numpy(np.asarray(pos, dtype=np.float32))

    for i in range(depth):
        dst = f"blocks.{i}."
        for n_src, n_dst in (("LayerNorm_0", "norm1"), (ln2, "norm2")):
            sd[f"{dst}{n_dst}.weight"] = _t(blk(i, f"{n_src}/scale"))
            sd[f"{dst}{n_dst}.bias"] = _t(blk(i, f"{n_src}/bias"))
        # query/key/value kernels are D x heads x head_dim; timm fuses them into one (3D) x D matrix.
        qkv = [blk(i, f"{mha}/{n}/kernel") for n in ("query", "key", "value")]
        sd[f"{dst}attn.qkv.weight"] = torch.cat([_t(k.reshape(k.shape[0], -1)) for k in qkv])
        sd[f"{dst}attn.qkv.bias"] = torch.cat([_t(blk(i, f"{mha}/{n}/bias").reshape(-1))
                                                for n in ("query", "key", "value")])
        out = blk(i, f"{mha}/out/kernel")  # heads x head_dim x D
        sd[f"{dst}attn.proj.weight"] = _t(out.reshape(-1, out.shape[-1]))
        sd[f"{dst}attn.proj.bias"] = _t(blk(i, f"{mha}/out/bias"))
        for j in (0, 1):
            sd[f"{dst}mlp.fc{j + 1}.weight"] = _t(blk(i, f"{mlp}/Dense_{j}/kernel"))
            sd[f"{dst}mlp.fc{j + 1}.bias"] = _t(blk(i, f"{mlp}/Dense_{j}/bias"))
    copy("norm.weight", "Transformer/encoder_norm/scale")
    copy("norm.bias", "Transformer/encoder_norm/bias")
    if "pre_logits/kernel" in w:
        copy("pre_logits.fc.weight", "pre_logits/kernel")
        copy("pre_logits.fc.bias", "pre_logits/bias")
    if "head/kernel" in w and w["head/kernel"].size:
        copy("head.weight", "head/kernel")
        copy("head.bias", "head/bias")

    backbone_layers = None
    if "conv_root/kernel" in w:  # R50 hybrid: BiT ResNetV2 stem and stages
        bb = "patch_embed.backbone."
        copy(bb + "stem.conv.weight", "conv_root/kernel")
        copy(bb + "stem.norm.weight", "gn_root/scale")
        copy(bb + "stem.norm.bias", "gn_root/bias")
        units: dict[int, int] = {}
        for k in w:
            if m := re.match(r"block(\d+)/unit(\d+)/", k):
                units[int(m.group(1))] = max(units.get(int(m.group(1)), 0), int(m.group(2)))
        backbone_layers = tuple(units[s] for s in sorted(units))
        for s, n_units in enumerate(backbone_layers):
            for u in range(n_units):
                src, dst = f"block{s + 1}/unit{u + 1}/", f"{bb}stages.{s}.blocks.{u}."
                for r in (1, 2, 3):
                    copy(f"{dst}conv{r}.weight", f"{src}conv{r}/kernel")
                    copy(f"{dst}norm{r}.weight", f"{src}gn{r}/scale")
                    copy(f"{dst}norm{r}.bias", f"{src}gn{r}/bias")
                if f"{src}conv_proj/kernel" in w:
                    copy(f"{dst}downsample.conv.weight", f"{src}conv_proj/kernel")
                    copy(f"{dst}downsample.norm.weight", f"{src}gn_proj/scale")
                    copy(f"{dst}downsample.norm.bias", f"{src}gn_proj/bias")

    kernel = w["embedding/kernel"]  # P x P x C x D
    q = blk(0, f"{mha}/query/kernel")
    config = dict(
        patch_size=int(kernel.shape[0]), in_chans=int(w["conv_root/kernel"].shape[2] if backbone_layers else kernel.shape[2]),
        embed_dim=int(kernel.shape[-1]), depth=depth, num_heads=int(q.shape[1]),
        mlp_dim=int(blk(0, f"{mlp}/Dense_0/kernel").shape[1]),
        num_classes=int(sd["head.bias"].shape[0]) if "head.bias" in sd else 0,
        representation_size=int(sd["pre_logits.fc.bias"].shape[0]) if "pre_logits.fc.bias" in sd else None,
        pool="token" if "cls" in w else "gap", backbone_layers=backbone_layers)
    return sd, config

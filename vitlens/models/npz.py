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


class NpzLayoutError(KeyError):
    """An array the conversion needs is missing; ``str()`` names it and the layout the file was read as."""

    def __str__(self) -> str:  # KeyError's own str() quotes the whole message
        return str(self.args[0])


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
        names = sorted(arrays)
        raise NpzLayoutError(f"no 'embedding/kernel' array (nor with an 'opt/target/' or 'params/' prefix), so not a "
                             f"Google ViT checkpoint; it holds {len(names)} arrays{': ' if names else ''}"
                             f"{', '.join(names[:4])}{' ...' if len(names) > 4 else ''}")
    w = _Arrays({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}, prefix)
    sd = {"patch_embed.proj.weight": _t(w["embedding/kernel"]), "patch_embed.proj.bias": _t(w["embedding/bias"]),
          "pos_embed": torch.from_numpy(np.asarray(w[w.pos_embed], dtype=np.float32))}
    if "cls" in w:
        sd["cls_token"] = torch.from_numpy(np.asarray(w["cls"], dtype=np.float32))
    for i in range(w.depth):
        sd.update(_encoder_block(w, i))
    sd["norm.weight"], sd["norm.bias"] = _t(w["Transformer/encoder_norm/scale"]), _t(w["Transformer/encoder_norm/bias"])
    for dst, src in (("pre_logits.fc", "pre_logits"), ("head", "head")):
        if f"{src}/kernel" in w and w[f"{src}/kernel"].size:  # an empty head: the checkpoint has no classifier
            sd[f"{dst}.weight"], sd[f"{dst}.bias"] = _t(w[f"{src}/kernel"]), _t(w[f"{src}/bias"])
    backbone_layers = _backbone(w, sd) if "conv_root/kernel" in w else None
    return sd, _config(w, sd, backbone_layers)


class _Arrays(dict):
    """The checkpoint's arrays without prefix, and which of the two layouts they are in: vision_transformer
    (posembed_input, MHA_1, MlpBlock_3, LayerNorm_2) or big_vision ('params/', pos_embedding at the root, MHA_0,
    MlpBlock_0, LayerNorm_1, blocks optionally stacked along a first axis: "scanned"). A missing array raises
    :class:`NpzLayoutError` naming it and the layout."""

    def __init__(self, arrays: Mapping[str, np.ndarray], prefix: str) -> None:
        super().__init__(arrays)
        self.prefix = prefix
        self.scanned = "Transformer/encoderblock/LayerNorm_0/scale" in self
        self.big_vision = prefix == "params/" or "pos_embedding" in self or self.scanned
        names = (("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1") if self.big_vision else
                 ("MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2"))
        self.mha, self.mlp, self.ln2 = names
        vit_pos = "Transformer/posembed_input/pos_embedding"  # big_vision's is at the root, also when missing
        root = "pos_embedding" in self or self.big_vision and vit_pos not in self
        self.pos_embed = "pos_embedding" if root else vit_pos
        if self.scanned:
            self.depth = self["Transformer/encoderblock/LayerNorm_0/scale"].shape[0]
        else:  # no block at all: depth 1, so that block 0's first array is named as missing
            blocks = (re.match(r"Transformer/encoderblock_(\d+)/", k) for k in self)
            self.depth = 1 + max((int(m.group(1)) for m in blocks if m), default=0)

    def __missing__(self, key: str) -> np.ndarray:
        layout = f"big_vision{' (scanned)' if self.scanned else ''}" if self.big_vision else "vision_transformer"
        blocks = f"Transformer/encoderblock{'' if self.scanned else '_<i>'}/{{LayerNorm_0, {self.mha}, {self.ln2}, " \
                 f"{self.mlp}}}"
        prefix = f" under the prefix {self.prefix!r}" if self.prefix else ""
        raise NpzLayoutError(f"no array '{self.prefix}{key}', which Google's {layout} layout{prefix} has "
                             f"(embedding, {self.pos_embed}, {blocks}, Transformer/encoder_norm)")

    def block(self, i: int, name: str) -> np.ndarray:
        """Array ``name`` of encoder block ``i``."""
        if self.scanned:
            return self[f"Transformer/encoderblock/{name}"][i]
        return self[f"Transformer/encoderblock_{i}/{name}"]


def _encoder_block(w: _Arrays, i: int) -> dict[str, torch.Tensor]:
    dst, sd = f"blocks.{i}.", {}
    for n_src, n_dst in (("LayerNorm_0", "norm1"), (w.ln2, "norm2")):
        sd[f"{dst}{n_dst}.weight"] = _t(w.block(i, f"{n_src}/scale"))
        sd[f"{dst}{n_dst}.bias"] = _t(w.block(i, f"{n_src}/bias"))
    # query/key/value kernels are D x heads x head_dim; timm fuses them into one (3D) x D matrix.
    qkv = [w.block(i, f"{w.mha}/{n}/kernel") for n in ("query", "key", "value")]
    sd[f"{dst}attn.qkv.weight"] = torch.cat([_t(k.reshape(k.shape[0], -1)) for k in qkv])
    sd[f"{dst}attn.qkv.bias"] = torch.cat([_t(w.block(i, f"{w.mha}/{n}/bias").reshape(-1))
                                            for n in ("query", "key", "value")])
    out = w.block(i, f"{w.mha}/out/kernel")  # heads x head_dim x D
    sd[f"{dst}attn.proj.weight"] = _t(out.reshape(-1, out.shape[-1]))
    sd[f"{dst}attn.proj.bias"] = _t(w.block(i, f"{w.mha}/out/bias"))
    for j in (0, 1):
        sd[f"{dst}mlp.fc{j + 1}.weight"] = _t(w.block(i, f"{w.mlp}/Dense_{j}/kernel"))
        sd[f"{dst}mlp.fc{j + 1}.bias"] = _t(w.block(i, f"{w.mlp}/Dense_{j}/bias"))
    return sd


def _backbone(w: _Arrays, sd: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The R50 hybrid's BiT ResNetV2 stem and stages into ``sd``; returns the blocks per stage."""
    bb = "patch_embed.backbone."
    for dst, src in (("stem.conv.weight", "conv_root/kernel"), ("stem.norm.weight", "gn_root/scale"),
                     ("stem.norm.bias", "gn_root/bias")):
        sd[bb + dst] = _t(w[src])
    units: dict[int, int] = {}
    for k in w:
        if m := re.match(r"block(\d+)/unit(\d+)/", k):
            units[int(m.group(1))] = max(units.get(int(m.group(1)), 0), int(m.group(2)))
    layers = tuple(units[s] for s in sorted(units))
    for s, n_units in enumerate(layers):
        for u in range(n_units):
            src, dst = f"block{s + 1}/unit{u + 1}/", f"{bb}stages.{s}.blocks.{u}."
            pairs = [(f"conv{r}.weight", f"conv{r}/kernel") for r in (1, 2, 3)]
            pairs += [(f"norm{r}.weight", f"gn{r}/scale") for r in (1, 2, 3)]
            pairs += [(f"norm{r}.bias", f"gn{r}/bias") for r in (1, 2, 3)]
            if f"{src}conv_proj/kernel" in w:  # the first unit of a stage projects its shortcut
                pairs += [("downsample.conv.weight", "conv_proj/kernel"), ("downsample.norm.weight", "gn_proj/scale"),
                          ("downsample.norm.bias", "gn_proj/bias")]
            sd.update({dst + name: _t(w[src + key]) for name, key in pairs})
    return layers


def _config(w: _Arrays, sd: Mapping[str, torch.Tensor], backbone_layers: tuple[int, ...] | None) -> dict[str, Any]:
    kernel = w["embedding/kernel"]  # P x P x C x D
    return dict(
        patch_size=int(kernel.shape[0]),
        in_chans=int(w["conv_root/kernel"].shape[2] if backbone_layers else kernel.shape[2]),
        embed_dim=int(kernel.shape[-1]), depth=w.depth, num_heads=int(w.block(0, f"{w.mha}/query/kernel").shape[1]),
        mlp_dim=int(w.block(0, f"{w.mlp}/Dense_0/kernel").shape[1]),
        num_classes=int(sd["head.bias"].shape[0]) if "head.bias" in sd else 0,
        representation_size=int(sd["pre_logits.fc.bias"].shape[0]) if "pre_logits.fc.bias" in sd else None,
        pool="token" if "cls" in w else "gap", backbone_layers=backbone_layers)

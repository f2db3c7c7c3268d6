import os

import pytest
import torch

# Two cores: keep intra-op threads at the machine's size and make runs repeatable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def perturb_(model: torch.nn.Module, std: float = 0.02) -> torch.nn.Module:
    """Move every parameter off its initial value (zero heads, unit LayerNorms) so parity is not trivial."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


def timm_vit(weights, **config) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """timm's VisionTransformer built with ``config`` and loaded with a saved file's weights (an independent
    implementation of the same model), and the list each forward pass fills with every block's post-softmax
    attention, B x H x N x N (timm's explicit path, recorded where it enters attn_drop)."""
    from safetensors.torch import load_file
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(**config).eval()
    model.load_state_dict(load_file(str(weights)))
    maps: list[torch.Tensor] = []
    for block in model.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda m, inp, out: maps.append(inp[0].double()))
    return model, maps

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

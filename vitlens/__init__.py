"""vitlens: a paper-faithful Vision Transformer and the tools to see what it learned."""
from .capture import Recorder, capture
from .models import VisionTransformer, create_model, list_models, resize_pos_embed
from .models.cnn import create_cnn
from .models.loading import (CheckpointError, fetch_timm_weights, list_demo_models, load_model, load_weights,
                             save_model)
from .models.timm_convert import UnsupportedModelError, from_timm

__version__ = "0.1.0"
__all__ = ["CheckpointError", "Recorder", "UnsupportedModelError", "VisionTransformer", "capture", "create_cnn",
           "create_model", "fetch_timm_weights", "from_timm", "list_demo_models", "list_models", "load_model", "load_weights",
           "resize_pos_embed", "save_model"]


def __getattr__(name: str):
    # vitlens.analysis on first use: it imports scikit-learn and captum, which `import vitlens` should not pay for.
    if name == "analysis":
        import importlib

        return importlib.import_module(".analysis", __name__)
    raise AttributeError(f"module 'vitlens' has no attribute {name!r}")

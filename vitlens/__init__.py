"""vitlens: a paper-faithful Vision Transformer and the tools to see what it learned."""
import lazy_loader

from .capture import Recorder, capture
from .models import VisionTransformer, create_model, list_models, resize_pos_embed
from .models.cnn import create_cnn
from .models.layout import TokenLayout, token_layout
from .models.loading import fetch_timm_weights, list_demo_models, load_model, save_model
from .models.state_dict import CheckpointError, load_weights
from .models.timm_convert import UnsupportedModelError, from_timm

__version__ = "0.1.0"
# The subpackages on first use (lazy_loader): vitlens.analysis imports scikit-learn and captum, vitlens.train the
# data pipeline; `import vitlens` should pay only for the model. vitlens.explore (the attention explorer for Jupyter)
# likewise.
__getattr__, __dir__, _ = lazy_loader.attach(__name__, submodules=["analysis", "bias", "cli", "data", "images",
                                                                   "train"],
                                             submod_attrs={"analysis.explore": ["explore"]})
__all__ = ["CheckpointError", "Recorder", "TokenLayout", "UnsupportedModelError", "VisionTransformer", "capture",
           "create_cnn", "create_model", "explore", "fetch_timm_weights", "from_timm", "list_demo_models",
           "list_models", "load_model", "load_weights", "resize_pos_embed", "save_model", "token_layout"]

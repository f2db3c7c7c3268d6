"""The ViT of the paper, the hybrid, CNN baselines and checkpoint loading."""
from .attention import Attention
from .block import Block
from .configs import MODEL_CONFIGS, create_model, list_models
from .patch_embed import HybridEmbed, PatchEmbed
from .pos_embed import resize_pos_embed
from .vit import VisionTransformer

__all__ = ["Attention", "Block", "HybridEmbed", "MODEL_CONFIGS", "PatchEmbed", "VisionTransformer",
           "create_model", "list_models", "resize_pos_embed"]

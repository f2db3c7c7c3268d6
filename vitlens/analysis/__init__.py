"""The analyses of the ViT paper and of the papers that followed it, as pure functions on tensors.

Per-image functions take images already in the model's input space; dataset-wide functions
(``attention_distance``, ``layer_similarity``, ``linear_probe``) take images in [0, 1] and prepare them with
each model's ``data_config``.
"""
from .attribution import grad_cam, integrated_gradients
from .cka import layer_similarity, linear_cka, minibatch_cka, unbiased_hsic
from .distance import attention_distance, mean_attention_distance, patch_distances
from .faithfulness import perturbation_curve
from .features import dataset_features, layer_features, layer_names
from .filters import patch_embedding_components
from .heads import head_maps
from .inputs import SAMPLE_PHOTOS, load_image, photo, prepare, sample_image, sample_photo
from .posembed import position_embedding_similarity
from .probe import PAPER_SHOTS, evaluate_features, fewshot_eval, fewshot_ridge, linear_probe, logistic_probe
from .rollout import attention_rollout, cls_map, fuse_heads, gradient_rollout

__all__ = ["PAPER_SHOTS", "SAMPLE_PHOTOS", "attention_distance", "attention_rollout", "cls_map", "dataset_features",
           "evaluate_features", "fewshot_eval", "fewshot_ridge", "fuse_heads", "gradient_rollout", "head_maps", "layer_features",
           "layer_names", "layer_similarity", "linear_cka", "linear_probe", "load_image", "logistic_probe", "photo",
           "mean_attention_distance", "minibatch_cka", "patch_distances", "patch_embedding_components",
           "position_embedding_similarity", "prepare", "sample_image", "sample_photo", "unbiased_hsic"]
__all__ += ["grad_cam", "integrated_gradients", "perturbation_curve"]  # attribution and faithfulness (app issue)

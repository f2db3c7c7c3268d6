"""The analyses of the ViT paper and of the papers that followed it, as pure functions on tensors.

Per-image functions take images already in the model's input space; dataset-wide functions
(``attention_distance``, ``layer_similarity``, ``linear_probe``) take images in [0, 1] and prepare them with
each model's ``data_config``.
"""
import importlib

# Each public name and the module it lives in, imported on first use: `vitlens pretrain` builds its parser beside
# `vitlens analyze` and should neither wait for nor need captum, scikit-learn and plotly.
_HOME = {
    "grad_cam": "attribution", "integrated_gradients": "attribution",
    "layer_similarity": "cka", "linear_cka": "cka", "minibatch_cka": "cka", "unbiased_hsic": "cka",
    "attention_distance": "distance", "mean_attention_distance": "distance", "patch_distances": "distance",
    "perturbation_curve": "faithfulness",
    "dataset_features": "features", "layer_features": "features", "layer_names": "features",
    "patch_embedding_components": "filters",
    "head_maps": "heads",
    "SAMPLE_PHOTOS": "inputs", "load_image": "inputs", "photo": "inputs", "prepare": "inputs", "sample_image": "inputs",
    "sample_photo": "inputs",
    "position_embedding_similarity": "posembed",
    "PAPER_SHOTS": "probe", "evaluate_features": "probe", "fewshot_eval": "probe", "fewshot_ridge": "probe",
    "linear_probe": "probe", "logistic_probe": "probe",
    "attention_rollout": "rollout", "cls_map": "rollout", "fuse_heads": "rollout", "gradient_rollout": "rollout",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})

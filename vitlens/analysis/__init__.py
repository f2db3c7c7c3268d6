"""The analyses of the ViT paper and of the papers that followed it, as pure functions on tensors.

Per-image functions take images already in the model's input space; dataset-wide functions
(``attention_distance``, ``layer_similarity``, ``linear_probe``) take images in [0, 1] and prepare them with
each model's ``data_config`` (:func:`vitlens.images.prepare`).
"""
import lazy_loader

# Each module's public names, imported on first use (lazy_loader, as scikit-image does): `vitlens pretrain` builds
# its parser beside `vitlens analyze` and should neither wait for nor need captum, scikit-learn and plotly.
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "attribution": ["grad_cam", "integrated_gradients"],
    "cka": ["layer_similarity", "linear_cka", "minibatch_cka", "unbiased_hsic"],
    "distance": ["attention_distance", "mean_attention_distance", "patch_distances"],
    "explain": ["METHODS", "Explanation", "explain", "methods_for", "resolve_targets"],
    "explore": ["Explorer", "ExplorerMaps", "explorer_data", "explorer_html", "explorer_maps"],
    "faithfulness": ["Faithfulness", "baselines_for", "blurred", "curve_counts", "faithfulness", "faithfulness_table",
                     "mean_interval", "perturbation_curve", "ranks"],
    "features": ["dataset_features", "layer_features", "layer_names", "layer_outputs"],
    "filters": ["patch_embedding_components"],
    "findings": ["distance_finding", "norms_finding", "posembed_finding", "probe_finding"],
    "heads": ["head_maps", "patch_maps"],
    "norms": ["high_norm_tokens", "split_threshold", "token_norms"],
    "posembed": ["position_embedding_similarity"],
    "probe": ["PAPER_SHOTS", "evaluate_features", "feasible_shots", "fewshot_eval", "fewshot_ridge", "linear_probe",
              "logistic_probe"],
    "rollout": ["attention_rollout", "cls_map", "fuse_heads", "gradient_rollout", "prefix_shares", "rollout_step"],
    "saliency": ["auc_table", "deletion_insertion", "saliency_maps"],
    "stream": ["streamed_maps"],
})

"""Inductive-bias probes, ViT against CNN: translation (Zhang 2019), occlusion and shuffling (Naseer et al. 2021),
effective receptive fields (Luo et al. 2016), and the paper's data-size claim in miniature (``vitlens.bias.sweep``).

Every probe takes images already in the model's input space and returns plain numbers (dicts, lists, tensors).
"""
from .compare import PROBES, compare_models, comparison_figures, comparison_numbers
from .erf import effective_receptive_field, erf_probe, mass_radius, unit_centre
from .maps import layer_maps, tokens_to_map
from .occlusion import DROP_FRACTIONS, SHUFFLE_GRIDS, drop_patches, occlusion_probe, shuffle_patches
from .translation import equivariance_error, feature_distance, shift_images, translation_probe

__all__ = ["DROP_FRACTIONS", "PROBES", "SHUFFLE_GRIDS", "compare_models", "comparison_figures", "comparison_numbers",
           "drop_patches", "effective_receptive_field", "equivariance_error", "erf_probe", "feature_distance",
           "layer_maps", "mass_radius", "occlusion_probe", "shift_images", "shuffle_patches",
           "tokens_to_map", "translation_probe", "unit_centre"]
